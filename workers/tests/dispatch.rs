//! Batches handed out over RabbitMQ to `sluice worker` processes, and a
//! local controller that sleeps until its folder changes.
//!
//! These tests talk to the real broker at 127.0.0.1:5672 (guest/guest),
//! or at `SLUICE_TEST_AMQP`. `scripts/test.sh` starts it if it is down;
//! by hand: `scripts/start-rabbitmq.sh`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, parquet_rows, printed, sluice};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sluice_engine::log::CheckpointLog;
use sluice_workers::tasks::{Task, TaskQueue, dead_queue};

fn broker() -> String {
    std::env::var("SLUICE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A queue of this test's own, so that tests running at once and earlier
/// runs never share tasks; deleted when dropped.
struct TestQueue(String);

impl TestQueue {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let name = format!("sluice.test.{test}.{}.{nanos}", std::process::id());
        // Fail early, and say how to start the broker.
        runtime().block_on(async {
            if let Err(error) = TaskQueue::connect(&broker(), &name).await {
                panic!("these tests need RabbitMQ at {}: {error}\nstart it with scripts/start-rabbitmq.sh", broker());
            }
        });
        TestQueue(name)
    }

    /// Messages ready in `queue`.
    fn ready(queue: &str) -> u32 {
        runtime().block_on(async {
            let connection = Connection::connect(&broker(), ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.expect("declared");
            declared.message_count()
        })
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        runtime().block_on(async {
            if let Ok(connection) = Connection::connect(&broker(), ConnectionProperties::default()).await
                && let Ok(channel) = connection.create_channel().await
            {
                for queue in [self.0.clone(), dead_queue(&self.0)] {
                    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                }
            }
        });
    }
}

fn pipeline(queue: &str) -> String {
    format!(
        r#"
[pipeline]
name = "dispatched"

[source]
type = "files"
url = "inbox"
pattern = "*.csv"

[source.schema]
id = "int64"
amount = "float64"

[trigger]
poll_interval = "100ms"
max_files_per_batch = 1

[transform]
sql = "SELECT id, amount * 2 AS doubled FROM input"

[sink]
type = "files"
url = "out"

[workers]
lease_timeout = "1s"
dispatch = "{}"
task_queue = "{queue}"
"#,
        broker()
    )
}

/// Writes `files` CSV files of `rows` rows; the rows the output must hold.
fn write_inputs(ws: &Workspace, files: usize, rows: usize) -> Vec<Vec<String>> {
    let mut expected = Vec::new();
    for file in 0..files {
        let mut text = String::from("id,amount\n");
        for row in 0..rows {
            let id = file * 100_000 + row;
            text.push_str(&format!("{id},{}.5\n", id % 89));
            expected.push(vec![id.to_string(), format!("{:.1}", (id % 89) as f64 * 2.0 + 1.0)]);
        }
        ws.write(&format!("inbox/f{file:03}.csv"), &text);
    }
    expected.sort();
    expected
}

/// Waits until `n` tasks are ready in `queue`, so that workers started
/// next do not idle out before the controller has sent them.
fn wait_for_tasks(queue: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TestQueue::ready(queue) < n {
        assert!(Instant::now() < deadline, "the controller did not send {n} tasks to {queue}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker(queue: &str, idle: &str) -> Command {
    let mut command = sluice();
    command.args(["worker", "--tasks", &broker(), "--queue", queue, "--idle-timeout", idle]);
    command.env("SLUICE_LOG", "info");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `limit`; its exit status and output.
fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}:\n{}", printed(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    (status, printed(&output))
}

#[test]
fn three_workers_one_killed_mid_batch_land_every_row_exactly_once() {
    let queue = TestQueue::new("three");
    let ws = Workspace::new();
    let expected = write_inputs(&ws, 30, 300);
    let path = ws.pipeline(&pipeline(&queue.0));

    let controller = sluice()
        .args(["run", &path, "--until-caught-up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("controller");
    wait_for_tasks(&queue.0, 30);
    // The first worker aborts in its second batch, after writing its files
    // and before committing them: as kill -9 would.
    let doomed = worker(&queue.0, "2s").env("SLUICE_FAILPOINT", "after_sink_write:2").spawn().expect("worker");
    let others: Vec<Child> = (0..2).map(|_| worker(&queue.0, "2s").spawn().expect("worker")).collect();

    let (status, printed_by_doomed) = finish(doomed, Duration::from_secs(120));
    assert!(!status.success(), "the doomed worker should have died:\n{printed_by_doomed}");
    assert!(printed_by_doomed.contains("failpoint"), "{printed_by_doomed}");

    let (status, printed_by_controller) = finish(controller, Duration::from_secs(120));
    assert!(status.success(), "{printed_by_controller}");
    assert!(
        printed_by_controller.contains(": 30 batches, 30 files, 9000 rows in, 9000 rows out"),
        "{printed_by_controller}"
    );

    // The survivors exit on their own once idle; between them they
    // committed every batch but the doomed worker's two.
    let mut committed = 0;
    for other in others {
        let (status, printed_by_worker) = finish(other, Duration::from_secs(60));
        assert!(status.success(), "{printed_by_worker}");
        assert!(printed_by_worker.contains("no task for 2s, exiting"), "{printed_by_worker}");
        let summary = printed_by_worker.lines().find(|l| l.starts_with("sluice worker: ")).expect("summary");
        let batches: u64 =
            summary.split(" tasks, ").nth(1).and_then(|s| s.split(' ').next()).expect("n").parse().expect("n");
        committed += batches;
    }
    assert_eq!(committed, 29, "the doomed worker committed one batch before dying");

    let (columns, found) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "doubled"]);
    assert_eq!(found.len(), expected.len());
    assert_eq!(found, expected, "every row exactly once");
    assert_eq!(TestQueue::ready(&queue.0), 0, "no task left behind");
    assert_eq!(TestQueue::ready(&dead_queue(&queue.0)), 0, "no task rejected");
}

#[test]
fn a_task_whose_batch_is_already_committed_is_acked_and_skipped() {
    let queue = TestQueue::new("skip");
    let ws = Workspace::new();
    let expected = write_inputs(&ws, 3, 10);
    let path = ws.pipeline(&pipeline(&queue.0));
    let controller = sluice().args(["run", &path, "--until-caught-up"]).stdout(Stdio::piped()).spawn().expect("run");
    wait_for_tasks(&queue.0, 3);
    let (status, printed_by_worker) = finish(worker(&queue.0, "1s").spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{printed_by_worker}");
    let (status, printed_by_controller) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{printed_by_controller}");

    // The same three tasks again, as a restarted controller would send them.
    runtime().block_on(async {
        let spec = sluice_workers::load_pipeline(std::path::Path::new(&path)).expect("pipeline");
        let log = CheckpointLog::open(&spec.checkpoint, &spec.name).await.expect("log");
        let queue = TaskQueue::connect(&broker(), &queue.0).await.expect("queue");
        for entry in log.state().batches() {
            queue.publish(&Task::new(&spec, entry.batch())).await.expect("publish");
        }
        queue.close().await;
    });
    let (status, printed_by_worker) = finish(worker(&queue.0, "1s").spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{printed_by_worker}");
    assert!(printed_by_worker.contains("3 tasks, 0 batches committed"), "{printed_by_worker}");
    assert!(printed_by_worker.contains("3 skipped (already settled)"), "{printed_by_worker}");
    assert_eq!(parquet_rows(&ws.path("out")).1, expected, "nothing written twice");
    assert_eq!(TestQueue::ready(&queue.0), 0, "the duplicates were acked");
}

#[test]
fn a_task_that_cannot_be_read_or_is_unknown_to_the_log_goes_to_the_dead_queue_and_the_worker_goes_on() {
    let queue = TestQueue::new("dead");
    let ws = Workspace::new();
    let expected = write_inputs(&ws, 2, 5);
    let path = ws.pipeline(&pipeline(&queue.0));
    runtime().block_on(async {
        let connection = Connection::connect(&broker(), ConnectionProperties::default()).await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let properties = BasicProperties::default().with_message_id("not-a-task".into());
        channel
            .basic_publish(
                "".into(),
                queue.0.as_str().into(),
                BasicPublishOptions::default(),
                b"{\"hello\":1}",
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        // A task of a batch this pipeline's log does not know, as from a
        // worker that sees other storage than the controller.
        let unknown = serde_json::json!({
            "format": Task::FORMAT, "pipeline": "dispatched", "file": path,
            "spec": std::fs::read_to_string(&path).expect("pipeline"),
            "batch": {"id": "0123456789abcdef", "inputs": []},
        });
        let unknown = Task::from_json(unknown.to_string().as_bytes()).expect("a task");
        let queue = TaskQueue::connect(&broker(), &queue.0).await.expect("queue");
        queue.publish(&unknown).await.expect("publish");
        queue.close().await;
    });
    let controller = sluice().args(["run", &path, "--until-caught-up"]).stdout(Stdio::piped()).spawn().expect("run");
    wait_for_tasks(&queue.0, 4);
    let (status, printed_by_worker) = finish(worker(&queue.0, "1s").spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{printed_by_worker}");
    assert!(printed_by_worker.contains("2 rejected"), "{printed_by_worker}");
    assert!(printed_by_worker.contains("not-a-task"), "the log names the message: {printed_by_worker}");
    assert!(printed_by_worker.contains("is not in the checkpoint log"), "{printed_by_worker}");
    let (status, printed_by_controller) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{printed_by_controller}");
    assert_eq!(parquet_rows(&ws.path("out")).1, expected);
    assert_eq!(TestQueue::ready(&dead_queue(&queue.0)), 2, "the bad tasks wait in the dead queue");
}

/// The CPU time `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses: utime is
    // the 14th field of the line, stime the 15th.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The child processes of `pid`.
fn children(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let mut read = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        // A thread may end between the listing and the read.
        if let Ok(listed) = std::fs::read_to_string(task.path().join("children")) {
            read += 1;
            found.extend(listed.split_whitespace().map(str::to_string));
        }
    }
    assert!(read > 0, "cannot read /proc/{pid}/task/*/children");
    found
}

#[test]
fn an_idle_controller_wakes_on_a_new_file_and_otherwise_holds_nothing() {
    let ws = Workspace::new();
    // Listings an hour apart: only the folder's notifications can wake it.
    let path = ws.pipeline(
        r#"
[pipeline]
name = "watched"
[source]
type = "files"
url = "inbox"
pattern = "*.csv"
[source.schema]
id = "int64"
[trigger]
poll_interval = "1h"
reconcile_interval = "1h"
[sink]
type = "files"
url = "out"
"#,
    );
    let mut controller = sluice()
        .args(["run", &path, "--log-format", "json"])
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("controller");
    let lines = BufReader::new(controller.stderr.take().expect("stderr")).lines();
    let (tx, committed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("batch committed") {
                let _ = tx.send(line);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    for (n, name) in ["a", "b"].iter().enumerate() {
        ws.write(&format!("inbox/{name}.tmp"), &format!("id\n{n}\n"));
        std::fs::rename(ws.path(&format!("inbox/{name}.tmp")), ws.path(&format!("inbox/{name}.csv"))).expect("rename");
        committed.recv_timeout(Duration::from_secs(30)).expect("the new file was committed without a listing");
    }
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["0", "1"]));

    // Idle: no worker process and no measurable CPU.
    let pid = controller.id();
    assert!(children(pid).is_empty(), "an idle controller has children: {:?}", children(pid));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    assert!(used <= 5, "an idle controller used {used} clock ticks of CPU in 3 s");

    Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    let (status, printed_by_controller) = finish(controller, Duration::from_secs(30));
    assert!(status.success(), "{printed_by_controller}");
}
