//! Hostile inputs: corrupt files and deep SQL that used to crash a worker.
//!
//! A Parquet file that cannot be read, or whose columns do not fit
//! `[source.schema]`, is one dead letter naming it and its cause, and the
//! batch's other files commit. An attempt that dies without recording why
//! (a panic, a kill, running out of memory) still counts: a batch whose
//! attempts keep dying ends failed after `[workers] max_attempts`, and a
//! `sluice worker` settles its task whatever the batch did.

use std::fs;
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use sluice_workers::tasks::{TaskQueue, dead_queue};

use super::common::{self, PipelineFile, Workspace, parquet_rows, printed, run, sluice, visible_files};

/// Parquet files from `inbox/` to `out/`, dead letters in `dead/`, with
/// `id` and `name` declared (or, when not `declared`, inferred from the files).
fn pipeline(declared: bool) -> PipelineFile {
    let file = PipelineFile::files("poison", "*.parquet");
    let file = if declared { file.schema(&[("id", "int64"), ("name", "string")]) } else { file };
    file.text("trigger", "poll_interval", "100ms").text("dead_letter", "url", "dead").text(
        "workers",
        "lease_timeout",
        "1s",
    )
}

/// `[source.schema]` declared: `id` int64, `name` string.
const DECLARED: bool = true;

/// Writes a Parquet file of `columns` to `inbox/<name>`.
fn write_parquet(ws: &Workspace, name: &str, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = fs::File::create(ws.path(&format!("inbox/{name}"))).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

fn write_good(ws: &Workspace) {
    write_parquet(
        ws,
        "good.parquet",
        vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["ann", "bob"])) as ArrayRef),
        ],
    );
}

/// A file that claims a footer of a megabyte at the end of a few bytes.
fn footer_past_the_file() -> Vec<u8> {
    let mut bytes = b"PAR1somebytes".to_vec();
    bytes.extend_from_slice(&1_000_000u32.to_le_bytes());
    bytes.extend_from_slice(b"PAR1");
    bytes
}

/// The dead letters below `dead/`, as JSON objects.
fn dead_letters(ws: &Workspace) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for path in visible_files(&ws.path("dead")) {
        let text = fs::read_to_string(&path).expect("dead letters");
        found.extend(text.lines().map(|line| serde_json::from_str::<serde_json::Value>(line).expect("NDJSON")));
    }
    found
}

fn assert_no_panic(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.code() != Some(101) && !stderr.contains("panicked"), "{}", printed(output));
}

/// Runs a corrupt file beside a good one: the good rows commit, the bad
/// file is one dead letter naming it, and `explain` names it too.
fn corrupt_beside_good(bad: &[u8], declared: bool) {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(declared).toml());
    write_good(&ws);
    fs::write(ws.path("inbox/bad.parquet"), bad).expect("write");

    let explained = run(&["explain", &path]);
    assert_no_panic(&explained);
    assert!(!explained.status.success(), "{}", printed(&explained));
    assert!(String::from_utf8_lossy(&explained.stderr).contains("bad.parquet"), "{}", printed(&explained));

    let output = run(&["run", &path, "--until-caught-up"]);
    assert_no_panic(&output);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["1|ann", "2|bob"]));
    let dead = dead_letters(&ws);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source"], "bad.parquet", "{dead:?}");
    let error = dead[0]["error"].as_str().expect("error");
    assert!(error.to_lowercase().contains("parquet"), "the cause is named: {error}");
}

#[test]
fn a_parquet_file_of_garbage_is_a_dead_letter_and_its_neighbour_commits() {
    corrupt_beside_good(b"PAR1garbagePAR1", DECLARED);
}

#[test]
fn a_parquet_footer_longer_than_its_file_is_a_dead_letter_and_its_neighbour_commits() {
    corrupt_beside_good(&footer_past_the_file(), DECLARED);
}

#[test]
fn a_corrupt_parquet_file_does_not_stop_schema_inference_from_the_others() {
    corrupt_beside_good(b"PAR1garbagePAR1", false);
    corrupt_beside_good(&footer_past_the_file(), false);
}

#[test]
fn a_parquet_file_whose_columns_do_not_fit_the_schema_is_a_dead_letter() {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(DECLARED).toml());
    write_good(&ws);
    write_parquet(
        &ws,
        "wrong.parquet",
        vec![
            ("id", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["cy", "di"])) as ArrayRef),
        ],
    );
    let output = run(&["run", &path, "--until-caught-up"]);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["1|ann", "2|bob"]));
    let dead = dead_letters(&ws);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source"], "wrong.parquet", "{dead:?}");
    let error = dead[0]["error"].as_str().expect("error");
    assert!(error.contains("id"), "the column is named: {error}");
}

/// `sluice status --json` of the pipeline at `path`.
fn status(path: &str) -> serde_json::Value {
    let output = run(&["status", path, "--json"]);
    serde_json::from_slice(&output.stdout).expect("json")
}

#[test]
fn a_batch_whose_attempts_keep_dying_ends_failed_after_max_attempts() {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(DECLARED).set("workers", "max_attempts", "2").toml());
    write_good(&ws);
    // Each run dies right after leasing the batch, as a kill -9 or the
    // out-of-memory killer would; the next run takes the batch over.
    for _ in 0..2 {
        let output = sluice()
            .args(["run", &path, "--until-caught-up"])
            .env("SLUICE_FAILPOINT", "after_lease")
            .output()
            .expect("sluice runs");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("failpoint after_lease reached"),
            "{}",
            printed(&output)
        );
    }
    let output = sluice()
        .args(["run", &path, "--until-caught-up"])
        .env("SLUICE_FAILPOINT", "after_lease")
        .output()
        .expect("sluice runs");
    assert_eq!(output.status.code(), Some(1), "the batch is failed, not tried a third time:\n{}", printed(&output));
    let status = status(&path);
    assert_eq!(status["failed_batches"], 1, "{status}");
    let error = status["failed"][0]["error"].as_str().expect("error");
    assert!(error.contains("attempt 2 ended without recording why"), "{status}");
    assert!(visible_files(&ws.path("out")).is_empty());
}

#[test]
fn a_panic_in_a_batch_is_a_failed_attempt_and_the_batch_ends_failed() {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(DECLARED).set("workers", "max_attempts", "2").toml());
    write_good(&ws);
    let output = sluice()
        .args(["run", &path, "--until-caught-up", "--json"])
        .env("SLUICE_FAILPOINT", "during_sink_write:*")
        .env("SLUICE_FAILPOINT_ACTION", "panic")
        .output()
        .expect("sluice runs");
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert_eq!(common::Ran::of(&output).failed_batches, 1, "{}", printed(&output));
    let status = status(&path);
    assert_eq!(status["failed_batches"], 1, "{status}");
    assert_eq!(status["failed"][0]["attempts"], 2, "{status}");
    let error = status["failed"][0]["error"].as_str().expect("error");
    assert!(error.contains("panicked") && error.contains("during_sink_write"), "{status}");

    // A panic once is one failed attempt; the next one commits.
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(DECLARED).toml());
    write_good(&ws);
    let output = sluice()
        .args(["run", &path, "--until-caught-up"])
        .env("SLUICE_FAILPOINT", "during_sink_write")
        .env("SLUICE_FAILPOINT_ACTION", "panic")
        .output()
        .expect("sluice runs");
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["1|ann", "2|bob"]));
}

fn broker() -> String {
    std::env::var("SLUICE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

/// Waits for `child` at most `limit`; its exit code and output.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            let output = child.wait_with_output().expect("output");
            return (output.status.code(), printed(&output));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}:\n{}", printed(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A dispatched pipeline, run by its controller and by one worker armed
/// with `failpoint`: what the worker printed.
fn dispatch_with_failing_worker(ws: &Workspace, test: &str, max_attempts: &str) -> (Option<i32>, String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let queue = format!("sluice.test.{test}.{}.{nanos}", std::process::id());
    if let Err(error) = block_on(TaskQueue::connect(&broker(), &queue)) {
        panic!("this test needs RabbitMQ at {}: {error}\nstart it with scripts/start-rabbitmq.sh", broker());
    }
    let file = pipeline(DECLARED).dispatch_to(&broker(), &queue);
    let path = ws.pipeline(&file.set("workers", "max_attempts", max_attempts).toml());
    let controller = common::tasks::controller(&path).spawn().expect("controller");
    let worker = common::tasks::worker(&queue, "3s", ws.dir.path())
        .env("SLUICE_FAILPOINT", "during_sink_write:*")
        .env("SLUICE_FAILPOINT_ACTION", "panic")
        .env("SLUICE_LOG", "warn")
        .spawn()
        .expect("worker");
    let (code, by_worker) = finish(worker, Duration::from_secs(120));
    let (_, by_controller) = finish(controller, Duration::from_secs(120));
    let left = block_on(async {
        let queue_of = TaskQueue::connect(&broker(), &queue).await.expect("connect");
        drop(queue_of);
        let connection = lapin::Connection::connect(&broker(), lapin::ConnectionProperties::default()).await;
        let channel = connection.expect("connect").create_channel().await.expect("channel");
        let mut left = String::new();
        for name in [queue.clone(), dead_queue(&queue)] {
            let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            if let Ok(declared) = channel.queue_declare(name.as_str().into(), options, Default::default()).await {
                left.push_str(&format!("{name}: {} ready\n", declared.message_count()));
            }
            let _ = channel.queue_delete(name.as_str().into(), Default::default()).await;
        }
        left
    });
    (code, format!("{by_worker}\ncontroller:\n{by_controller}"), left)
}

#[test]
fn a_worker_whose_batch_panics_every_time_settles_its_task_as_failed() {
    let ws = Workspace::new();
    write_good(&ws);
    let (code, printed, left) = dispatch_with_failing_worker(&ws, "poison", "2");
    assert_eq!(code, Some(1), "a failed batch waits for `sluice retry`: exit 1\n{printed}");
    let summary = printed.lines().find(|l| l.starts_with("sluice worker: ")).expect("summary");
    assert!(summary.contains("1 failed"), "{printed}");
    assert!(!left.contains(" 1 ready"), "the task is settled, not handed on:\n{left}\n{printed}");
    let status = status(ws.path("pipeline.toml").to_str().expect("utf-8"));
    assert_eq!(status["failed_batches"], 1, "{status}");
}
