//! The checkpoint log's cost per batch on a local folder: appending the
//! `planned`, `leased` and `committed` records (three put-if-absent
//! writes), and opening a log that already holds many batches: start-up
//! reads the newest snapshot and at most a snapshot interval of records.
//!
//! Run with: cargo bench -p sluice-benches --bench log_commit

// criterion_group! and criterion_main! define undocumented items.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sluice_benches::{batch_records, open_log};

fn log_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = runtime.block_on(open_log(dir.path()));
    let mut n = 0u64;
    c.bench_function("log/plan+lease+commit one batch (local folder)", |b| {
        b.iter_batched(
            || {
                n += 1;
                batch_records(n)
            },
            |records| {
                runtime.block_on(async {
                    for record in records {
                        log.append(record).await.expect("appended");
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });

    let mut group = c.benchmark_group("log/open");
    group.sample_size(10);
    for batches in [1_000u64, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        runtime.block_on(async {
            let mut log = open_log(dir.path()).await;
            for n in 0..batches {
                for record in batch_records(n) {
                    log.append(record).await.expect("appended");
                }
            }
        });
        let opened = runtime.block_on(open_log(dir.path()));
        eprintln!(
            "log/open: {batches} committed batches ({} records): start-up reads {} records after the snapshot",
            batches * 3,
            opened.records_read()
        );
        group.bench_function(format!("{batches} committed batches ({} records)", batches * 3), |b| {
            b.iter(|| runtime.block_on(open_log(dir.path())))
        });
    }
    group.finish();
}

criterion_group!(benches, log_commit);
criterion_main!(benches);
