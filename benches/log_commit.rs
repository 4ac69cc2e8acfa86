//! The checkpoint log's cost per batch on a local folder: appending the
//! `planned` and `committed` records (two put-if-absent writes), and
//! opening a log that already holds many batches.
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
    c.bench_function("log/plan+commit one batch (local folder)", |b| {
        b.iter_batched(
            || {
                n += 1;
                batch_records(n)
            },
            |(planned, committed)| {
                runtime.block_on(async {
                    log.append(planned).await.expect("planned");
                    log.append(committed).await.expect("committed");
                })
            },
            BatchSize::SmallInput,
        )
    });

    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let mut log = open_log(dir.path()).await;
        for n in 0..1_000 {
            let (planned, committed) = batch_records(n);
            log.append(planned).await.expect("planned");
            log.append(committed).await.expect("committed");
        }
    });
    let mut group = c.benchmark_group("log/open");
    group.sample_size(10);
    group.bench_function("1,000 committed batches (2,000 records)", |b| {
        b.iter(|| runtime.block_on(open_log(dir.path())))
    });
    group.finish();
}

criterion_group!(benches, log_commit);
criterion_main!(benches);
