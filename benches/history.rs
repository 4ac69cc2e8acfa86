//! `bench-history`: a checkpoint log with a long history, made without
//! running a million batches, and what planning new files against it
//! costs. `benches/history.py` drives it.
//!
//! ```sh
//! bench-history generate --dir WS/out/_sluice --batches 1000000          # 1M committed one-file batches
//! bench-history generate --dir WS/out/_sluice --batches 100000 --files 100   # 10M inputs
//! bench-history plan --dir WS/out/_sluice --files 10000 [--among]
//! bench-history commits --url /tmp/log --committers 8 --batches 2000     # or an s3:// URL
//! ```
//!
//! `generate` writes the log that pipeline `bench` has after committing
//! that many batches and sealing them, once `sluice vacuum` has removed
//! the records: its snapshot and its segments. It builds them with the
//! log's own code on an in-memory store, a thousand batches at a time
//! (one plan record, their leases and commits, one seal), and copies
//! what a reader needs into the folder. Inputs are named
//! `history/<batch>-<file>.csv`.
//!
//! `plan` opens that log cold and plans `--files` new files against it,
//! as a planning pass does (the log's history of the listed files, then
//! which are new): named `new/...` (after every name in the history, as
//! names with a date in them are) or, with `--among`, inside the
//! history's names (every segment's range is read). It prints one JSON
//! line of timings.
//!
//! `commits` plans `--batches` one-file batches in a new log at `--url`,
//! then `--committers` tasks, each with its own handle on the log as a
//! worker process has, lease and commit their share at once; it prints
//! the commits per second and how many records of the others each
//! committer had to read before its own landed (every lost race for a
//! number is one more).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_benches::{commit, lease, pipeline, plan};
use sluice_engine::batch::{BatchId, InputObject};
use sluice_engine::log::{Appended, CheckpointLog, Planned, PlannedBatches, Record};
use sluice_engine::storage::StorageLocation;

/// A long history for the checkpoint log, and planning against it.
#[derive(Parser)]
enum Cli {
    /// Write a log of `--batches` committed, sealed batches.
    Generate {
        /// The log's folder (a pipeline's `[checkpoint] url`, by default
        /// `<sink>/_sluice`).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Committed batches.
        #[arg(long)]
        batches: u64,
        /// Input files in each batch.
        #[arg(long, default_value_t = 1)]
        files: u64,
    },
    /// Open the log cold and plan new files against it.
    Plan {
        /// The log's folder.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// New files listed.
        #[arg(long, default_value_t = 10_000)]
        files: u64,
        /// Name them inside the history's range of names.
        #[arg(long)]
        among: bool,
    },
    /// Lease and commit batches from several committers at once.
    Commits {
        /// Where the log goes: a folder or a bucket URL (a new log each run).
        #[arg(long)]
        url: String,
        /// Committers at once.
        #[arg(long)]
        committers: u64,
        /// Batches planned and then committed.
        #[arg(long, default_value_t = 2000)]
        batches: u64,
    },
}

/// Batches planned, committed and sealed together.
const CHUNK: u64 = 1000;

fn input(batch: u64, file: u64, at: DateTime<Utc>) -> InputObject {
    InputObject {
        path: format!("history/{batch:09}-{file:04}.csv"),
        size: 119_000,
        etag: Some(format!("{batch:x}-{file:x}-71c3e60")),
        last_modified: at,
        ..InputObject::default()
    }
}

async fn append(log: &mut CheckpointLog, record: Record) {
    let appended = log.append(record).await.expect("appended");
    assert!(matches!(appended, Appended::Written(_)), "the record is admitted: {appended:?}");
}

/// Plans `plans` in one record, as a planning pass does; their ids.
async fn append_plans(log: &mut CheckpointLog, plans: Vec<Planned>) -> Vec<BatchId> {
    let ids = plans.iter().map(|plan| plan.batch_id.clone()).collect();
    append(log, Record::PlannedBatches(PlannedBatches { batches: plans, forget_before: None, forget: vec![] })).await;
    ids
}

async fn generate(dir: &std::path::Path, batches: u64, files: u64) {
    let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let root = Path::from("log");
    let mut log = CheckpointLog::open_in(memory.clone(), root.clone(), &pipeline(), u64::MAX).await.expect("opens");
    let start = Utc::now() - TimeDelta::days(400);
    let started = Instant::now();
    for chunk in 0..batches.div_ceil(CHUNK) {
        let numbers = chunk * CHUNK..((chunk + 1) * CHUNK).min(batches);
        let plans: Vec<Planned> = numbers
            .map(|n| {
                let at = start + TimeDelta::seconds(n as i64);
                plan((0..files).map(|f| input(n, f, at)).collect(), at)
            })
            .collect();
        let at = plans[0].at;
        let ids = append_plans(&mut log, plans).await;
        for id in &ids {
            append(&mut log, lease(id, at)).await;
            append(&mut log, commit(id, 1000, at)).await;
        }
        let sealed = sluice_engine::txn::seal(&mut log, ids, at).await.expect("sealed");
        assert_eq!(sealed as u64, CHUNK.min(batches - chunk * CHUNK), "the chunk is sealed");
        // What vacuum removes: the records every snapshot holds.
        let records: Vec<Path> = memory
            .list(Some(&root.clone().join("log")))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .expect("list");
        for record in records {
            memory.delete(&record).await.expect("delete");
        }
    }
    log.write_snapshot().await.expect("a snapshot");
    let local = object_store::local::LocalFileSystem::new_with_prefix({
        std::fs::create_dir_all(dir).expect("mkdir");
        dir
    })
    .expect("the folder");
    let mut objects = 0;
    let mut bytes = 0;
    let listed: Vec<_> = memory.list(Some(&root)).try_collect().await.expect("list");
    for meta in listed {
        let got = memory.get(&meta.location).await.expect("get").bytes().await.expect("bytes");
        let relative = meta.location.prefix_match(&root).expect("below the root").collect::<Path>();
        bytes += got.len();
        objects += 1;
        local.put(&relative, PutPayload::from(got)).await.expect("put");
    }
    println!(
        "{{\"batches\": {batches}, \"inputs\": {}, \"objects\": {objects}, \"bytes\": {bytes}, \"generate_s\": {:.1}}}",
        batches * files,
        started.elapsed().as_secs_f64()
    );
}

async fn plan_against(dir: &std::path::Path, files: u64, among: bool) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let started = Instant::now();
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("the folder"));
    let mut log = CheckpointLog::open_in(store, Path::from(""), &pipeline(), sluice_engine::log::SNAPSHOT_EVERY)
        .await
        .expect("opens");
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sealed = log.state().sealed().batches;
    let now = Utc::now();
    let spread = sealed.max(1);
    let listed: Vec<InputObject> = (0..files)
        .map(|n| InputObject {
            path: if among {
                format!("history/{:09}-new{n}.csv", n * spread / files)
            } else {
                format!("new/{n:09}.csv")
            },
            size: 1000,
            etag: Some(format!("new-{n}")),
            last_modified: now,
            ..InputObject::default()
        })
        .collect();
    let planning = Instant::now();
    let history = log.history(&listed).await.expect("history");
    let unseen = sluice_engine::planner::unseen(listed, log.state(), &history);
    let plan_ms = planning.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(unseen.new.len() as u64, files, "every listed file is new");
    println!(
        "{{\"sealed_batches\": {sealed}, \"segments\": {}, \"files\": {files}, \"among\": {among}, \"open_ms\": {open_ms:.1}, \"plan_ms\": {plan_ms:.1}}}",
        log.state().segments().len()
    );
}

async fn commits(url: &str, committers: u64, batches: u64) {
    let location = StorageLocation::resolve(url, &std::env::current_dir().expect("a folder")).expect("a location");
    let mut planner = CheckpointLog::open(&location, &pipeline()).await.expect("opens");
    let at = Utc::now();
    let plans: Vec<Planned> = (0..batches).map(|n| plan(vec![input(n, 0, at)], at)).collect();
    let ids = append_plans(&mut planner, plans).await;
    let shares: Vec<Vec<BatchId>> =
        (0..committers as usize).map(|k| ids.iter().skip(k).step_by(committers as usize).cloned().collect()).collect();
    let name = pipeline();
    let logs = futures::future::join_all((0..committers).map(|_| CheckpointLog::open(&location, &name))).await;
    let started = Instant::now();
    let tasks = logs.into_iter().zip(shares).map(|(log, mine)| async move {
        let mut log = log.expect("opens");
        let mut others = 0u64;
        for id in mine {
            let now = Utc::now();
            for record in [lease(&id, now), commit(&id, 1000, now)] {
                loop {
                    let before = log.state().next_seq();
                    match log.append(record.clone()).await {
                        Ok(Appended::Written(seq)) => {
                            others += seq.0 - before.0;
                            break;
                        }
                        Ok(refused) => panic!("the record is admitted: {refused:?}"),
                        // Too many lost races in a row: a worker backs off and tries again.
                        Err(sluice_engine::Error::LogContention { .. }) => others += 64,
                        Err(other) => panic!("the store failed: {other}"),
                    }
                }
            }
        }
        others
    });
    let others: u64 = futures::future::join_all(tasks).await.into_iter().sum();
    let took = started.elapsed().as_secs_f64();
    println!(
        "{{\"committers\": {committers}, \"batches\": {batches}, \"commits_per_s\": {:.1}, \"seconds\": {took:.2}, \"others_read\": {others}}}",
        batches as f64 / took
    );
}

#[tokio::main]
async fn main() {
    match Cli::parse() {
        Cli::Generate { dir, batches, files } => generate(&dir, batches, files).await,
        Cli::Plan { dir, files, among } => plan_against(&dir, files, among).await,
        Cli::Commits { url, committers, batches } => commits(&url, committers, batches).await,
    }
}
