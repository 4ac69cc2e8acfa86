//! Batches handed out over RabbitMQ to `sluice worker` processes, and a
//! local controller that sleeps until its folder changes.
//!
//! These tests talk to the real broker at 127.0.0.1:5672 (guest/guest),
//! or at `SLUICE_TEST_AMQP`. `scripts/test.sh` starts it if it is down;
//! by hand: `scripts/start-rabbitmq.sh`.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::tasks::{TASK_KEY, TestQueue, broker, controller, finish, runtime, wait_for_tasks, worker, worker_at};
use common::{PipelineFile, Workspace, parquet_rows, sluice};
use sluice_engine::log::CheckpointLog;
use sluice_workers::task_keys::KeySources;
use sluice_workers::tasks::{Task, TaskQueue, dead_queue};

fn pipeline(queue: &str) -> String {
    PipelineFile::files("dispatched", "*.csv")
        .schema(&[("id", "int64"), ("amount", "float64")])
        .text("trigger", "poll_interval", "100ms")
        .set("trigger", "max_files_per_batch", "1")
        .text("transform", "sql", "SELECT id, amount * 2 AS doubled FROM input")
        .text("workers", "lease_timeout", "1s")
        .dispatch_to(&broker(), queue)
        .toml()
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

#[test]
fn three_workers_one_killed_mid_batch_land_every_row_exactly_once() {
    let queue = TestQueue::new("three");
    let ws = Workspace::new();
    let expected = write_inputs(&ws, 30, 300);
    let path = ws.pipeline(&pipeline(&queue.0));

    let controller = controller(&path).spawn().expect("controller");
    wait_for_tasks(&queue.0, 30);
    // The first worker aborts in its second batch, after writing its files
    // and before committing them: as kill -9 would.
    let doomed =
        worker(&queue.0, "2s", ws.dir.path()).env("SLUICE_FAILPOINT", "after_sink_write:2").spawn().expect("worker");
    let others: Vec<Child> = (0..2).map(|_| worker(&queue.0, "2s", ws.dir.path()).spawn().expect("worker")).collect();

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
    let controller = controller(&path).spawn().expect("run");
    wait_for_tasks(&queue.0, 3);
    let (status, printed_by_worker) =
        finish(worker(&queue.0, "1s", ws.dir.path()).spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{printed_by_worker}");
    let (status, printed_by_controller) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{printed_by_controller}");

    // The same three tasks again, as a restarted controller would send them.
    runtime().block_on(async {
        let spec = sluice_workers::load_pipeline(std::path::Path::new(&path)).expect("pipeline");
        let log = CheckpointLog::open(&spec.checkpoint, &spec.name).await.expect("log");
        let queue = TaskQueue::connect(&broker(), &queue.0).await.expect("queue");
        let key = KeySources { env: Some(TASK_KEY.into()), files: vec![] }.load().expect("key").remove(0);
        for entry in log.state().batches() {
            queue.publish(&Task::new(&spec, entry.batch()), Some(&key)).await.expect("publish");
        }
        queue.close().await;
    });
    let (status, printed_by_worker) =
        finish(worker(&queue.0, "1s", ws.dir.path()).spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{printed_by_worker}");
    assert!(printed_by_worker.contains("3 tasks, 0 batches committed"), "{printed_by_worker}");
    assert!(printed_by_worker.contains("3 skipped (already settled)"), "{printed_by_worker}");
    assert_eq!(parquet_rows(&ws.path("out")).1, expected, "nothing written twice");
    assert_eq!(TestQueue::ready(&queue.0), 0, "the duplicates were acked");
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
        &PipelineFile::files("watched", "*.csv")
            .schema(&[("id", "int64")])
            .text("trigger", "poll_interval", "1h")
            .text("trigger", "reconcile_interval", "1h")
            .toml(),
    );
    let (controller, logged) =
        common::spawn_with_log_lines(sluice().args(["run", &path, "--log-format", "json"]).env("SLUICE_LOG", "info"));
    let committed = || loop {
        let line = logged.recv_timeout(Duration::from_secs(30)).expect("the new file was committed without a listing");
        if line.contains("batch committed") {
            break line;
        }
    };
    std::thread::sleep(Duration::from_millis(500));

    for (n, name) in ["a", "b"].iter().enumerate() {
        ws.write(&format!("inbox/{name}.tmp"), &format!("id\n{n}\n"));
        std::fs::rename(ws.path(&format!("inbox/{name}.tmp")), ws.path(&format!("inbox/{name}.csv"))).expect("rename");
        committed();
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

/// The TLS port of the test broker and the CA that signed its certificate,
/// as `scripts/start-rabbitmq-tls.sh` sets them up.
fn tls_broker() -> (String, std::path::PathBuf) {
    let dir = std::env::var("SLUICE_TLS_DIR").unwrap_or_else(|_| "/var/tmp/sluice-rabbitmq-tls".into());
    let ca = std::path::Path::new(&dir).join("ca.pem");
    assert!(
        ca.is_file() && std::net::TcpStream::connect("127.0.0.1:5671").is_ok(),
        "this test needs RabbitMQ's TLS listener on 127.0.0.1:5671 and its CA in {dir}: \
         run scripts/start-rabbitmq-tls.sh"
    );
    ("amqps://guest:guest@localhost:5671/%2f".into(), ca)
}

#[test]
fn tasks_travel_over_amqps_checked_against_the_ca_file() {
    let (url, ca) = tls_broker();
    let queue = TestQueue::new("amqps");
    let ws = Workspace::new();
    let expected = write_inputs(&ws, 2, 5);
    let path = ws.pipeline(&pipeline(&queue.0).replace(&broker(), &url));
    let controller = controller(&path).env("SLUICE_AMQP_CA_FILE", &ca).spawn().expect("controller");
    wait_for_tasks(&queue.0, 2);

    // Without the CA, the broker's certificate is not trusted.
    let mut untrusting = worker_at(&url, &queue.0, "1s", ws.dir.path());
    untrusting.env_remove("SLUICE_AMQP_CA_FILE");
    let (status, said) = finish(untrusting.spawn().expect("worker"), Duration::from_secs(60));
    assert!(!status.success(), "{said}");
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    assert!(!said.contains("guest:guest"), "the password is never shown: {said}");

    let mut trusting = worker_at(&url, &queue.0, "1s", ws.dir.path());
    trusting.env("SLUICE_AMQP_CA_FILE", &ca);
    let (status, said) = finish(trusting.spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{said}");
    assert!(said.contains("2 batches committed"), "{said}");
    let (status, said) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{said}");
    assert_eq!(parquet_rows(&ws.path("out")).1, expected);
}

/// An OTLP/HTTP receiver on a free port of 127.0.0.1: the JSON body of
/// every export request, as a collector gets it.
struct Collector {
    endpoint: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

/// One exported span: its name, trace, id, parent and attributes.
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: std::collections::BTreeMap<String, String>,
}

impl Collector {
    fn start() -> Self {
        Self::start_at("127.0.0.1:0")
    }

    fn start_at(address: &str) -> Self {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|e| panic!("a receiver on {address} (is another collector running there?): {e}"));
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        // The request line and headers, up to the blank line.
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if let Ok(json) = serde_json::from_slice(&body) {
                            kept.lock().expect("lock").push(json);
                        }
                        let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if (&stream).write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Collector { endpoint, bodies }
    }

    /// The variables that point sluice at this receiver.
    fn env(&self) -> [(&'static str, String); 2] {
        [("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into())]
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        let value = |v: &serde_json::Value| match &v["value"] {
            serde_json::Value::Object(map) => map.values().next().map(|x| x.to_string().trim_matches('"').to_string()),
            _ => None,
        };
        let mut spans = Vec::new();
        for body in self.bodies.lock().expect("lock").iter() {
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let attributes = span["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| Some((a["key"].as_str()?.to_string(), value(a)?)))
                            .collect();
                        spans.push(ExportedSpan {
                            name: span["name"].as_str().unwrap_or_default().into(),
                            trace: span["traceId"].as_str().unwrap_or_default().into(),
                            id: span["spanId"].as_str().unwrap_or_default().into(),
                            parent: span["parentSpanId"].as_str().unwrap_or_default().into(),
                            attributes,
                        });
                    }
                }
            }
        }
        spans
    }
}

#[test]
fn a_dispatched_batch_is_one_trace_from_the_controller_to_the_worker() {
    let collector = Collector::start();
    let queue = TestQueue::new("traced");
    let ws = Workspace::new();
    write_inputs(&ws, 1, 10);
    let path = ws.pipeline(&pipeline(&queue.0));
    let controller = controller(&path).envs(collector.env()).spawn().expect("controller");
    wait_for_tasks(&queue.0, 1);
    let (status, said) = finish(
        worker(&queue.0, "1s", ws.dir.path()).envs(collector.env()).spawn().expect("worker"),
        Duration::from_secs(60),
    );
    assert!(status.success(), "{said}");
    let (status, said) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{said}");

    let spans = collector.spans();
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let task = named("task").into_iter().next().unwrap_or_else(|| panic!("the controller's task span: {spans:#?}"));
    let dispatch = named("dispatch").into_iter().find(|s| s.id == task.parent).expect("the task's pass");
    assert!(named("plan").iter().any(|plan| plan.parent == dispatch.id && plan.trace == task.trace), "{spans:#?}");
    // The worker's batch is the task's child, in the controller's trace.
    let batch = named("batch").into_iter().next().expect("the worker's batch span");
    assert_eq!((&batch.trace, &batch.parent), (&task.trace, &task.id), "{spans:#?}");
    assert_eq!(batch.attributes.get("pipeline").map(String::as_str), Some("dispatched"), "{batch:?}");
    assert_eq!(batch.attributes.get("batch_id"), task.attributes.get("batch_id"), "{batch:?}");
    assert_eq!(batch.attributes.get("attempt").map(String::as_str), Some("1"), "{batch:?}");
    for step in ["read", "transform", "write", "commit", "publish"] {
        let child = named(step).into_iter().next().unwrap_or_else(|| panic!("no {step} span: {spans:#?}"));
        assert_eq!((&child.trace, &child.parent), (&batch.trace, &batch.id), "{step} is the batch's: {spans:#?}");
    }
    // Only spans: no log line is exported as an event.
    for body in collector.bodies.lock().expect("lock").iter() {
        assert!(!body.to_string().contains("batch committed"), "a log line was exported: {body}");
    }

    // Without the variable, nothing is sent, not even to the default
    // endpoint an exporter built without one would use.
    let default = Collector::start_at("127.0.0.1:4318");
    let exported = collector.bodies.lock().expect("lock").len();
    let quiet = Workspace::new();
    write_inputs(&quiet, 1, 5);
    let local = quiet
        .pipeline(&pipeline(&queue.0).replace("dispatch = ", "# dispatch = ").replace("task_queue", "# task_queue"));
    let output = common::run(&["run", &local, "--until-caught-up"]);
    assert!(output.status.success(), "{}", common::printed(&output));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(collector.bodies.lock().expect("lock").len(), exported, "nothing exported without an endpoint");
    assert!(default.bodies.lock().expect("lock").is_empty(), "nothing sent to localhost:4318");
}
