//! A crash between the commit record and the publish: the next run finishes
//! the publish, and the batch is not run again.

mod common;

use chrono::Utc;
use common::{Workspace, parquet_rows, rows, visible_files};
use datafusion::physical_plan::execute_stream;
use sluice_engine::log::{Appended, CheckpointLog, Committed, Planned, Record};
use sluice_engine::planner::plan_new;
use sluice_engine::sink::Attempt;
use sluice_engine::sql::{self, INPUT_TABLE};

#[tokio::test]
async fn a_committed_batch_whose_files_were_not_moved_is_published_by_the_next_run() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        r#"
[pipeline]
name = "recovery"

[source]
type = "files"
url = "inbox"
format = "csv"

[source.schema]
id = "int64"
name = "string"

[sink]
type = "files"
url = "out"
partition_by = ["name"]
"#,
    );
    ws.write("inbox/a.csv", "id,name\n1,ann\n2,bob\n");

    // A worker that dies right after its commit record is written.
    let spec = sluice_workers::load_pipeline(std::path::Path::new(&pipeline)).expect("valid pipeline");
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await.expect("log");
    let discovered = spec.source.discover().await.expect("discover");
    let batch = plan_new(discovered, log.state(), spec.trigger.limits(), &spec.name, spec.version).remove(0);
    let planned = Record::Planned(Planned {
        batch_id: batch.id.clone(),
        pipeline: spec.name.clone(),
        version: spec.version,
        inputs: batch.inputs.clone(),
        at: Utc::now(),
    });
    assert!(matches!(log.append(planned).await.expect("plan"), Appended::Written(_)));
    let ctx = sql::session(1);
    ctx.register_table(INPUT_TABLE, spec.source.table(&ctx.state(), &batch.inputs).await.expect("table"))
        .expect("register");
    let plan = sql::plan_transform(&ctx, None).await.expect("sql").create_physical_plan().await.expect("plan");
    let staged = spec
        .sink
        .stage(&Attempt::new(batch.id.clone()), execute_stream(plan, ctx.task_ctx()).expect("stream"))
        .await
        .expect("stage");
    assert_eq!(staged.outputs.len(), 2);
    let commit = Record::Committed(Committed { batch_id: batch.id.clone(), staged, rows_in: 2, at: Utc::now() });
    assert!(matches!(log.append(commit).await.expect("commit"), Appended::Written(_)));
    assert!(visible_files(&ws.path("out")).is_empty(), "staged files are invisible until published");

    let summary = ws.run_until_caught_up();
    assert!(summary.contains("0 batches, 0 files"), "the committed batch is not run again: {summary}");
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|ann", "2|bob"]));
    assert!(visible_files(&ws.path("out/_sluice/staging")).is_empty(), "nothing is left staged");
}
