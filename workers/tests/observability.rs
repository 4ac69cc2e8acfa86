//! What an operator sees of a real run: Prometheus metrics scraped while
//! it runs, JSON log lines, `sluice status`, and the progress bar.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PipelineFile, Workspace, printed, run, sluice};

fn observed() -> PipelineFile {
    PipelineFile::files("observed", "*.csv")
        .schema(&[("id", "int64"), ("amount", "float64")])
        .text("trigger", "poll_interval", "100ms")
        .set("trigger", "max_files_per_batch", "1")
}

/// Five files of 3 to 7 rows, one row of them malformed: 25 rows read, 24
/// written, 1 dead letter. Returns the files' total size.
fn write_five_files(ws: &Workspace) -> u64 {
    let mut bytes = 0;
    for file in 0..5 {
        let mut text = String::from("id,amount\n");
        for row in 0..file + 3 {
            match (file, row) {
                (2, 1) => text.push_str("21,not-a-number\n"),
                _ => text.push_str(&format!("{},{row}.5\n", file * 10 + row)),
            }
        }
        bytes += ws.write(&format!("inbox/f{file}.csv"), &text).metadata().expect("size").len();
    }
    bytes
}

/// A controller that is killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the controller as an operator would, and returns its exit and
/// standard error.
fn stop(mut running: Running) -> (std::process::ExitStatus, String) {
    let _ = Command::new("kill").args(["-TERM", &running.0.id().to_string()]).status();
    let status = running.0.wait().expect("stops");
    let mut stderr = String::new();
    running.0.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr");
    (status, stderr)
}

/// Scrapes until every `(metric, value)` is shown.
fn scrape_until(port: u16, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scraped = scrape(port);
        if let Some(text) = &scraped
            && expected.iter().all(|(name, value)| metric(text, name) == Some(*value))
        {
            return text.clone();
        }
        assert!(Instant::now() < deadline, "the metrics never showed {expected:?}:\n{scraped:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(pipeline: &str, port: u16) -> Running {
    Running(
        sluice()
            .args(["run", pipeline, "--metrics-addr", &format!("127.0.0.1:{port}"), "--log-format", "json"])
            .env("SLUICE_LOG", "info,sluice=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts"),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// The body of `GET /metrics`, once the endpoint answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The value of `name{pipeline="observed"}` in a scrape.
fn metric(scraped: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{pipeline=\"observed\"}} ");
    scraped.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.trim().parse().ok())
}

#[test]
fn metrics_json_logs_and_status_agree_with_the_data() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&observed().toml());
    let bytes = write_five_files(&ws);
    let port = free_port();
    let controller = start(&pipeline, port);

    // Scraped while it runs, until every count is in.
    let scraped = scrape_until(
        port,
        &[
            ("sluice_rows_written_total", 24.0),
            ("sluice_batches_committed_total", 5.0),
            ("sluice_rows_read_total", 25.0),
            ("sluice_rows_dead_lettered_total", 1.0),
            ("sluice_bytes_read_total", bytes as f64),
            ("sluice_batch_duration_seconds_count", 5.0),
            ("sluice_pending_batches", 0.0),
            ("sluice_source_lag", 0.0),
        ],
    );
    let (status, stderr) = stop(controller);
    assert!(status.success(), "{status:?}\n{stderr}");

    assert_eq!(metric(&scraped, "sluice_batches_failed_total"), Some(0.0), "shown before any failure: {scraped}");
    assert_eq!(metric(&scraped, "sluice_attempts_failed_total"), Some(0.0), "{scraped}");
    assert!(scraped.contains("sluice_batch_duration_seconds_bucket{pipeline=\"observed\",le=\"0.1\"}"), "{scraped}");
    assert!(scraped.contains("# HELP sluice_rows_written_total"), "{scraped}");

    // Every line is JSON; every line written inside a batch names it.
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    let committed: Vec<&serde_json::Value> =
        lines.iter().filter(|line| line["fields"]["message"] == "batch committed").collect();
    assert_eq!(committed.len(), 5, "{stderr}");
    for line in &committed {
        let batch = &line["spans"][0];
        assert_eq!(batch["name"], "batch", "the outcome is logged in the batch's span: {line}");
        assert!(batch["batch_id"].as_str().is_some_and(|id| id.len() == 32), "{line}");
        assert_eq!(batch["attempt"], 1, "{line}");
    }
    let mut steps = std::collections::BTreeSet::new();
    for line in lines.iter().filter(|line| line["spans"].is_array()) {
        let spans = line["spans"].as_array().expect("array");
        let names: Vec<&str> = spans.iter().filter_map(|span| span["name"].as_str()).collect();
        if names == ["plan"] {
            continue;
        }
        // Every step span is inside a batch span that names the batch.
        assert_eq!(names.first(), Some(&"batch"), "{line}");
        let batch = &spans[0];
        assert!(batch["batch_id"].as_str().is_some_and(|id| id.len() == 32), "{line}");
        assert_eq!(batch["pipeline"], "observed", "{line}");
        assert!(batch["worker"].is_string(), "{line}");
        steps.extend(names.iter().skip(1).map(|name| name.to_string()));
    }
    assert!(steps.contains("commit"), "debug lines of the commit step: {steps:?}\n{stderr}");
    let dead_letter_warning = lines
        .iter()
        .find(|line| line["fields"]["message"].as_str().is_some_and(|m| m.contains("malformed record")))
        .unwrap_or_else(|| panic!("no warning about the malformed record: {stderr}"));
    assert_eq!(dead_letter_warning["spans"][0]["name"], "batch", "{dead_letter_warning}");

    let output = run(&["status", &pipeline, "--json"]);
    assert!(output.status.success(), "{}", printed(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["committed_batches"], 5, "{status}");
    assert_eq!(status["pending_batches"], 0, "{status}");
    assert_eq!(status["running_batches"], 0, "{status}");
    assert_eq!(status["failed_batches"], 0, "{status}");
    assert_eq!(status["rows_written"], 24, "{status}");
    assert_eq!(status["dead_lettered_rows"], 1, "{status}");
    assert_eq!(status["lag"], 0, "{status}");
    assert!(status["last_commit_at"].is_string(), "{status}");

    let text = run(&["status", &pipeline]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("committed_batches  5") && text.contains("lag                0 files"), "{text}");
}

#[test]
fn a_failed_batch_is_counted_and_the_lag_stays() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        &observed()
            .text("transform", "sql", "SELECT id, amount + 1 / (id - 7) AS amount FROM input")
            .set("workers", "max_attempts", "1")
            .toml(),
    );
    ws.write("inbox/a.csv", "id,amount\n1,1.5\n");
    ws.write("inbox/b.csv", "id,amount\n7,2.5\n");
    let port = free_port();
    let controller = start(&pipeline, port);
    scrape_until(
        port,
        &[
            ("sluice_batches_committed_total", 1.0),
            ("sluice_batches_failed_total", 1.0),
            ("sluice_attempts_failed_total", 1.0),
            ("sluice_pending_batches", 0.0),
            ("sluice_source_lag", 1.0),
        ],
    );
    let (status, stderr) = stop(controller);
    assert_eq!(status.code(), Some(1), "a failed batch waits for a retry: {stderr}");
    let failed = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(failed["fields"]["message"].as_str().is_some_and(|m| m.contains("Divide by zero")), "{failed}");
    assert_eq!(failed["spans"][0]["name"], "batch", "{failed}");
    let output = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!((status["failed_batches"].as_u64(), status["lag"].as_u64()), (Some(1), Some(1)), "{status}");
}

#[test]
fn status_shows_the_lag_before_a_run() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&observed().toml());
    write_five_files(&ws);
    let output = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!((status["new_files"].as_u64(), status["lag"].as_u64()), (Some(5), Some(5)), "{status}");
}

#[test]
fn a_progress_bar_on_a_terminal_and_none_otherwise() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&observed().toml());
    write_five_files(&ws);
    // `script` runs the command on a pseudo-terminal.
    let binary = env!("CARGO_BIN_EXE_sluice");
    let on_terminal = Command::new("script")
        .args(["-qec", &format!("{binary} run {pipeline} --until-caught-up"), "/dev/null"])
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("script(1) runs (util-linux)");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{shown}");
    assert!(shown.contains("/5 batches"), "a bar counting the batches: {shown:?}");
    assert!(shown.contains("sluice: observed: 5 batches"), "and the summary line after it: {shown:?}");

    ws.write("inbox/f9.csv", "id,amount\n99,1.5\n");
    let piped = run(&["run", &pipeline, "--until-caught-up"]);
    let all = format!("{}{}", String::from_utf8_lossy(&piped.stdout), String::from_utf8_lossy(&piped.stderr));
    assert!(!all.contains("batches  ") && !all.contains('\u{1b}') && !all.contains('\r'), "no bar: {all:?}");
    assert!(all.contains("sluice: observed: 1 batches"), "{all}");
}

#[test]
fn json_logs_at_debug_level_never_show_a_secret_even_escaped() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        &observed()
            .text("transform", "sql", "SELECT id, amount FROM input WHERE '${env:SLUICE_TEST_TOKEN}' <> ''")
            .toml(),
    );
    write_five_files(&ws);
    let secret = r#"tok"en\with-quotes"#;
    let output = sluice()
        .args(["run", &pipeline, "--until-caught-up", "--log-format", "json"])
        .env("SLUICE_LOG", "debug")
        .env("SLUICE_TEST_TOKEN", secret)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", printed(&output));
    assert!(stderr.lines().count() > 20, "debug logs were written: {stderr}");
    let escaped = serde_json::to_string(secret).expect("json");
    for shown in [secret, escaped.trim_matches('"'), &format!("{secret:?}")] {
        assert!(!stderr.contains(shown.trim_matches('"')), "the secret leaked as {shown}");
    }
    // DataFusion's debug lines, which printed the SQL and its plans, are
    // never written (a plan folds constants into forms no redaction knows).
    assert!(!stderr.contains("Optimized") && !stderr.contains("SELECT id, amount"), "no plan in the log: {stderr}");
}
