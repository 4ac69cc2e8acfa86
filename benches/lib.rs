//! Shared set-up of sluice's micro-benchmarks: a checkpoint log in a
//! temporary folder and records to append to it.

use chrono::{DateTime, Utc};
use sluice_engine::batch::{BatchId, InputObject, PipelineName};
use sluice_engine::log::{CheckpointLog, Committed, Leased, Planned, RanBy, Record};
use sluice_engine::sink::{OutputObject, Staged};
use sluice_engine::storage::StorageLocation;

/// The pipeline every benchmark log belongs to.
pub fn pipeline() -> PipelineName {
    PipelineName::new("bench").expect("a valid name")
}

/// Opens (and reads) the log in `dir`.
pub async fn open_log(dir: &std::path::Path) -> CheckpointLog {
    let location = StorageLocation::resolve(dir.to_str().expect("utf-8 path"), dir).expect("a local folder");
    CheckpointLog::open(&location, &pipeline()).await.expect("the log opens")
}

/// The `planned`, `leased` and `committed` records of batch number `n`:
/// one input file, one output file, as a file-drop pipeline writes them.
pub fn batch_records(n: u64) -> [Record; 3] {
    let inputs = vec![InputObject {
        path: format!("inbox/orders-{n:08}.csv"),
        size: 119_000_000,
        etag: Some(format!("{n:x}-17f3a-71c3e60")),
        last_modified: Utc::now(),
        ..InputObject::default()
    }];
    let planned = plan(inputs, Utc::now());
    let batch_id = planned.batch_id.clone();
    [Record::Planned(planned), lease(&batch_id, Utc::now()), commit(&batch_id, 1_000_000, Utc::now())]
}

/// The plan of one batch of `inputs`, planned at `at`.
pub fn plan(inputs: Vec<InputObject>, at: DateTime<Utc>) -> Planned {
    Planned {
        batch_id: BatchId::derive(&pipeline(), 1, &inputs),
        pipeline: pipeline(),
        version: 1,
        inputs,
        stream: None,
        at,
    }
}

/// The first attempt's lease of `batch_id`, taken at `at` for 30 s.
pub fn lease(batch_id: &BatchId, at: DateTime<Utc>) -> Record {
    Record::Leased(Leased {
        batch_id: batch_id.clone(),
        attempt: 1,
        owner: "bench-host:4242:0123456789abcdef".into(),
        expires: at + chrono::TimeDelta::seconds(30),
        at,
    })
}

/// The first attempt's commit of `batch_id`: `rows` read and written to
/// one Parquet file of 41 bytes a row.
pub fn commit(batch_id: &BatchId, rows: u64, at: DateTime<Utc>) -> Record {
    Record::Committed(Committed {
        batch_id: batch_id.clone(),
        attempt: 1,
        staged: Staged {
            token: format!("{batch_id}-0123456789abcdef"),
            outputs: vec![OutputObject { path: format!("part-{batch_id}-0.parquet"), rows, bytes: rows * 41 }],
        },
        rows_in: rows,
        dead_letters: None,
        rows_dead_lettered: 0,
        source_positions: vec![],
        ran_by: Some(RanBy {
            worker: "bench-host:4242:0123456789abcdef".into(),
            host: "bench-host".into(),
            task_key: Some("0123456789abcdef".into()),
        }),
        tables: Default::default(),
        at,
    })
}
