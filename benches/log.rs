//! `bench-log`: what the checkpoint log costs a batch on a local folder,
//! as `benches/run.py` reports it beside the peers.
//!
//! ```sh
//! cargo run --release -p sluice-benches --bin bench-log -- --batches 2000 --dir /tmp
//! ```
//!
//! It plans `--batches` one-file batches with one `planned_batches` record,
//! as `sluice run` plans a backlog, then leases and commits each batch in
//! turn (two put-if-absent writes of a JSON record, snapshots included),
//! and prints one JSON line: the plan's time, and the median and 90th
//! percentile of a batch's lease and commit.

use std::time::Instant;

use clap::Parser;
use sluice_benches::{batch_records, open_log};
use sluice_engine::log::{Appended, PlannedBatches, Record};

/// Times the checkpoint log's records of many batches.
#[derive(Parser)]
struct Cli {
    /// Batches to plan, lease and commit.
    #[arg(long, default_value_t = 2000)]
    batches: u64,
    /// Where the log's temporary folder goes (the file system matters).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let dir = match &cli.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("a temporary folder");
    let mut log = open_log(dir.path()).await;
    let batches: Vec<[Record; 3]> = (0..cli.batches).map(batch_records).collect();

    let started = Instant::now();
    let plans = batches
        .iter()
        .map(|[planned, ..]| match planned {
            Record::Planned(planned) => planned.clone(),
            _ => unreachable!("batch_records starts with the plan"),
        })
        .collect();
    let appended = log
        .append(Record::PlannedBatches(PlannedBatches { batches: plans, forget_before: None, forget: Vec::new() }))
        .await
        .expect("planned");
    assert!(matches!(appended, Appended::Written(_)), "the plan is admitted: {appended:?}");
    let plan_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut per_batch = Vec::with_capacity(batches.len());
    for [_, leased, committed] in batches {
        let started = Instant::now();
        for record in [leased, committed] {
            let appended = log.append(record).await.expect("appended");
            assert!(matches!(appended, Appended::Written(_)), "the record is admitted: {appended:?}");
        }
        per_batch.push(started.elapsed().as_secs_f64() * 1e6);
    }
    per_batch.sort_by(f64::total_cmp);
    let at = |q: f64| per_batch[((per_batch.len() - 1) as f64 * q) as usize];
    println!(
        "{{\"batches\": {}, \"plan_ms\": {plan_ms:.2}, \"lease_commit_median_us\": {:.0}, \"lease_commit_p90_us\": {:.0}}}",
        cli.batches,
        at(0.5),
        at(0.9)
    );
}
