//! Forged tasks on the task queue, as from someone who may publish to it:
//! each is refused into the dead queue with its reason, nothing of theirs
//! runs, no request goes where they point, no secret of the worker's leaks,
//! and the operator's batches land exactly once.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use sluice_engine::log::CheckpointLog;
use sluice_engine::spec::text_sha256;
use sluice_workers::task_keys::{KEY_ID_HEADER, KeySources, SIGNATURE_HEADER, TaskKey};
use sluice_workers::tasks::Task;

use super::common::tasks::{TASK_KEY, TestQueue, broker, controller, finish, runtime, wait_for_tasks, worker};
use super::common::{PipelineFile, Workspace, parquet_rows, run, sluice};

/// A secret in the worker's environment that must never be seen.
const CANARY: &str = "canary-5e1f-never-print-me";
/// A key the workers have stopped accepting.
const RETIRED_KEY: &str = "a-retired-task-key-that-no-worker-has";

fn key(secret: &str) -> TaskKey {
    KeySources { env: Some(secret.into()), files: vec![] }.load().expect("key").remove(0)
}

fn pipeline(queue: &str) -> String {
    PipelineFile::files("guarded", "*.csv")
        .schema(&[("id", "int64")])
        .set("trigger", "max_files_per_batch", "1")
        .text("workers", "lease_timeout", "1s")
        .dispatch_to(&broker(), queue)
        .toml()
}

/// A server that counts the connections made to it: no task may make a
/// worker talk to an address the task names.
fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut [0; 1024]);
        }
    });
    (address, hits)
}

/// Every file below `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()) {
        text.push_str(&String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default()));
    }
    text
}

#[test]
fn forged_tasks_end_in_the_dead_queue_with_their_reason_and_the_operators_batches_land_once() {
    let queue = TestQueue::new("forged");
    let ws = Workspace::new();
    ws.write("inbox/a.csv", "id\n1\n2\n");
    ws.write("inbox/b.csv", "id\n3\n");
    let path = ws.pipeline(&pipeline(&queue.0));
    let text = std::fs::read_to_string(&path).expect("pipeline");
    let (trap_url, hits) = trap();
    let loot = ws.path("loot");

    // The controller plans and sends the operator's two tasks.
    let controller = controller(&path).spawn().expect("controller");
    wait_for_tasks(&queue.0, 2);
    let (pending, good_batch) = runtime().block_on(async {
        let spec = sluice_workers::load_pipeline(Path::new(&path)).expect("pipeline");
        let log = CheckpointLog::open(&spec.checkpoint, &spec.name).await.expect("log");
        let pending = log.state().pending();
        let batch = pending[0].clone();
        (pending, Task::new(&spec, batch))
    });
    assert_eq!(pending.len(), 2);
    let batch_id = good_batch.batch.id.to_string();

    // The sender's own pipeline: /etc/passwd to a folder of theirs, the
    // operator's log, a secret of the worker's in the SQL, and a store at
    // the sender's address.
    let theirs = format!(
        r#"[pipeline]
name = "guarded"
[source]
type = "files"
url = "/etc"
pattern = "passwd"
format = "csv"
header = false
[transform]
sql = "SELECT '${{env:SLUICE_CANARY}}' AS stolen FROM input"
[sink]
type = "files"
url = "{}"
[checkpoint]
url = "{}"
[storage]
aws_endpoint = "{trap_url}"
"#,
        loot.display(),
        ws.path("out/_sluice").display()
    );
    let with_text = json!({
        "format": "sluice.task.v1", "pipeline": "guarded", "file": path, "spec": theirs,
        "batch": {"id": batch_id, "inputs": []},
    });
    let body = |changes: serde_json::Value| {
        let mut task = serde_json::to_value(&good_batch).expect("json");
        for (k, v) in changes.as_object().expect("object") {
            task[k] = v.clone();
        }
        serde_json::to_vec(&task).expect("json")
    };
    let sha = text_sha256(&text);
    let etc_passwd = json!([{"path": "/etc/passwd", "size": 10, "last_modified": "2026-01-01T00:00:00Z"}]);
    let forged: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("with-text", serde_json::to_vec(&with_text).expect("json"), TASK_KEY, "carries its pipeline's text"),
        ("unknown-pipeline", body(json!({"pipeline": "elsewhere"})), TASK_KEY, "no pipeline named elsewhere"),
        ("wrong-hash", body(json!({"sha256": "0".repeat(64)})), TASK_KEY, "sha256 differs"),
        (
            "other-inputs",
            body(json!({"batch": {"id": batch_id, "inputs": etc_passwd}})),
            TASK_KEY,
            "inputs are not those the log planned",
        ),
        (
            "unknown-batch",
            body(json!({"batch": {"id": "0123456789abcdef0123456789abcdef", "inputs": []}})),
            TASK_KEY,
            "is not in the checkpoint log",
        ),
        (
            "with-settings",
            body(json!({"storage": {"aws_endpoint": trap_url}, "checkpoint": "/tmp"})),
            TASK_KEY,
            "unknown field",
        ),
        ("unsigned", body(json!({"sha256": sha})), "", "is not signed"),
        ("retired-key", body(json!({})), RETIRED_KEY, "does not hold"),
        ("random-bytes", (0..200u32).map(|i| (i * 7919 % 251) as u8).collect(), TASK_KEY, "not a sluice task"),
    ];
    for (id, body, secret, _) in &forged {
        let mut headers = Vec::new();
        let (signature, key_id);
        if !secret.is_empty() {
            let signer = key(secret);
            signature = signer.sign(body);
            key_id = signer.id().to_string();
            headers = vec![(SIGNATURE_HEADER, signature.as_str()), (KEY_ID_HEADER, key_id.as_str())];
        }
        queue.publish(body, &headers, id);
    }

    // The worker holds the current key in a file and the one before it in
    // SLUICE_TASK_KEY, and secrets in its environment.
    let key_file = ws.write("secrets/task-key", &format!("{TASK_KEY}\n"));
    let pipelines = ws.dir.path();
    let mut command = worker(&queue.0, "2s", pipelines);
    command
        .env("SLUICE_TASK_KEY", "the-key-before-the-current-one")
        .arg("--task-key-file")
        .arg(&key_file)
        .env("SLUICE_CANARY", CANARY)
        .env("AWS_SECRET_ACCESS_KEY", CANARY)
        .env("AWS_ACCESS_KEY_ID", "canary-key-id-AKIA")
        .env("SLUICE_LOG", "info,sluice=debug");
    let (status, by_worker) = finish(command.spawn().expect("worker"), Duration::from_secs(90));
    assert!(status.success(), "{by_worker}");
    let (status, by_controller) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{by_controller}");

    let summary = by_worker.lines().find(|l| l.starts_with("sluice worker: ")).expect("summary");
    assert!(summary.contains("2 batches committed"), "{by_worker}");
    assert!(summary.contains(&format!("{} rejected", forged.len())), "{by_worker}");
    let dead = queue.take_dead();
    assert_eq!(dead.len(), forged.len(), "{dead:?}");
    for (id, _, _, because) in &forged {
        let (_, reason, _) = dead.iter().find(|(found, _, _)| found == id).unwrap_or_else(|| panic!("{id} not dead"));
        assert!(reason.contains(because), "{id}: {reason:?} should say {because:?}");
        assert!(by_worker.contains(because), "the worker's log says why {id} was refused:\n{by_worker}");
    }
    assert_eq!(TestQueue::ready(&queue.0), 0, "no task is handed back to the queue");

    // The operator's rows, once each; nothing of the sender's.
    assert_eq!(parquet_rows(&ws.path("out")).1, super::common::rows(&["1", "2", "3"]));
    assert!(!loot.exists(), "the sender's sink was written");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a request went to the address a task named");
    let status = run(&["status", &path, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["committed_batches"], 2, "{status}");
    let workers = status["workers_last_hour"].as_array().expect("workers_last_hour");
    assert_eq!(workers.len(), 1, "one worker process ran both batches: {status}");
    assert_eq!(workers[0]["batches"], 2, "{status}");
    assert_eq!(workers[0]["task_key"], key(TASK_KEY).id(), "{status}");
    assert!(workers[0]["host"].as_str().is_some_and(|host| !host.is_empty()), "{status}");
    let everything = format!("{by_worker}{by_controller}{}{dead:?}", all_text(&ws.path("out")));
    assert!(!everything.contains(CANARY), "the canary secret leaked");
    assert!(!everything.contains("root:x:0:0"), "/etc/passwd was read");
    // Who ran each batch, with the id of the key that signed its task.
    let committed = all_text(&ws.path("out/_sluice"));
    assert!(committed.contains(&format!("\"task_key\":\"{}\"", key(TASK_KEY).id())), "{committed}");
}

#[test]
fn a_worker_without_a_task_key_refuses_to_start_and_unsigned_tasks_run_only_when_allowed() {
    let ws = Workspace::new();
    let output = sluice()
        .args(["worker", "--tasks", &broker(), "--idle-timeout", "1s", "--pipelines"])
        .arg(ws.dir.path())
        .env_remove("SLUICE_TASK_KEY")
        .output()
        .expect("worker");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("no task key") && said.contains("--insecure-unsigned-tasks"), "{said}");

    let queue = TestQueue::new("unsigned");
    ws.write("inbox/a.csv", "id\n7\n");
    let path = ws.pipeline(&pipeline(&queue.0));
    let controller = controller(&path).env_remove("SLUICE_TASK_KEY").spawn().expect("controller");
    wait_for_tasks(&queue.0, 1);
    let mut command = worker(&queue.0, "1s", ws.dir.path());
    command.env_remove("SLUICE_TASK_KEY").arg("--insecure-unsigned-tasks");
    let (status, by_worker) = finish(command.spawn().expect("worker"), Duration::from_secs(60));
    assert!(status.success(), "{by_worker}");
    assert!(by_worker.contains("1 batches committed"), "{by_worker}");
    let (status, by_controller) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{by_controller}");
    assert!(by_controller.contains("tasks go unsigned"), "the controller warns: {by_controller}");
    assert_eq!(parquet_rows(&ws.path("out")).1, super::common::rows(&["7"]));
}
