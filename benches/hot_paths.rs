//! The hot parts of a batch, each alone: planning new input against the
//! log, reading a CSV object into Arrow (every record checked), and
//! encoding Arrow batches to zstd Parquet through the files sink.
//!
//! Run with: cargo bench -p sluice-benches --bench hot_paths

// criterion_group! and criterion_main! define undocumented items.
#![allow(missing_docs)]

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use sluice_benches::pipeline;
use sluice_connectors::Registry;
use sluice_engine::batch::{BatchId, InputObject};
use sluice_engine::log::{LogState, Planned, Record, Seq};
use sluice_engine::planner::{BatchLimits, plan_new};
use sluice_engine::sink::Attempt;
use sluice_engine::spec::{PipelineSpec, SpecFile, parse};

/// 10,000 listed files, half of them already planned.
fn planning(c: &mut Criterion) {
    let listed: Vec<InputObject> = (0..10_000)
        .map(|n| InputObject {
            path: format!("inbox/2026/11/orders-{n:06}.csv"),
            size: 120_000 + n,
            etag: Some(format!("{n:x}-5e1f")),
            last_modified: Utc::now(),
            ..InputObject::default()
        })
        .collect();
    let mut state = LogState::default();
    for (n, batch) in
        plan_new(listed[..5_000].to_vec(), &LogState::default(), limits(), &pipeline(), 1).into_iter().enumerate()
    {
        let record = Record::Planned(Planned {
            batch_id: batch.id,
            pipeline: pipeline(),
            version: 1,
            inputs: batch.inputs,
            stream: None,
            at: Utc::now(),
        });
        state.apply(Seq(n as u64 + 1), record);
    }
    c.bench_function("plan/10000 listed files, 5000 new", |b| {
        b.iter(|| plan_new(listed.clone(), &state, limits(), &pipeline(), 1))
    });
}

fn limits() -> BatchLimits {
    BatchLimits { max_files: 16, max_bytes: 256 << 20 }
}

/// A pipeline over a folder holding one CSV file of `rows` orders.
fn csv_pipeline(dir: &std::path::Path, rows: usize) -> (PipelineSpec, Vec<InputObject>) {
    std::fs::create_dir_all(dir.join("inbox")).expect("inbox");
    let mut text = String::from("order_id,customer,country,amount,ordered_at\n");
    for n in 0..rows {
        text.push_str(&format!(
            "{n},\"Dvořák, Zoë\",FR,{}.{:02},2026-11-{:02}T10:00:00\n",
            n % 997,
            n % 100,
            n % 28 + 1
        ));
    }
    std::fs::write(dir.join("inbox/orders.csv"), &text).expect("write");
    let toml = r#"
[pipeline]
name = "bench"
[source]
type = "files"
url = "inbox"
pattern = "*.csv"
format = "csv"
[source.schema]
order_id = "int64"
customer = "string"
country = "string"
amount = "decimal(10,2)"
ordered_at = "timestamp"
[sink]
type = "files"
url = "out"
compression = "zstd"
[workers]
concurrency = 2
"#;
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).expect("pipeline");
    let spec = parse(SpecFile::new(&path, toml), &Registry).expect("the pipeline loads");
    let input = InputObject {
        path: "orders.csv".into(),
        size: text.len() as u64,
        etag: None,
        last_modified: std::fs::metadata(dir.join("inbox/orders.csv"))
            .and_then(|m| m.modified())
            .expect("mtime")
            .into(),
        ..InputObject::default()
    };
    (spec, vec![input])
}

/// 200,000 rows (about 11 MB) of CSV into Arrow, then into Parquet.
fn csv_and_parquet(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, inputs) = csv_pipeline(dir.path(), 200_000);
    let ctx = SessionContext::new();
    let source = spec.source.objects().expect("a files source").clone();
    let mut group = c.benchmark_group("files");
    group.sample_size(20);
    group.bench_function("csv decode/200000 rows, every value checked", |b| {
        b.iter(|| runtime.block_on(source.read(&ctx.state(), &inputs)).expect("read"))
    });
    let input = runtime.block_on(source.read(&ctx.state(), &inputs)).expect("read");
    let batches: Vec<_> = runtime.block_on(async {
        let plan = input.table.scan(&ctx.state(), None, &[], None).await.expect("scan");
        datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.expect("collect")
    });
    let schema = batches[0].schema();
    group.bench_function("parquet encode/200000 rows, zstd, staged", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let stream = MemoryStream::try_new(batches.clone(), schema.clone(), None).expect("stream");
                let attempt = Attempt::new(BatchId::derive(&pipeline(), 1, &inputs));
                let staged = spec.sink.stage(&attempt, Box::pin(stream)).await.expect("staged");
                spec.sink.discard(&staged.token).await.expect("discarded");
                staged
            })
        })
    });
    group.finish();
}

criterion_group!(benches, planning, csv_and_parquet);
criterion_main!(benches);
