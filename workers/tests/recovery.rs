//! Crashes at every step of the commit protocol, kill -9 at random moments,
//! controllers racing: the output always holds every row exactly once.
//!
//! Each test runs the real `sluice` binary. `SLUICE_FAILPOINT=<step>`
//! makes it abort at that step, as `kill -9` would; the next run must
//! repair whatever the crash left.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{PipelineFile, Ran, Workspace, parquet_rows, printed, rows, run, sluice, visible_files};

/// Leases run out after a second, so that a run after a crash takes the
/// dead process's batches over quickly.
fn crashy() -> PipelineFile {
    PipelineFile::orders("crashy")
        .text("trigger", "poll_interval", "100ms")
        .set("trigger", "max_files_per_batch", "2")
        .text("transform", "sql", "SELECT id, country, amount * 2 AS doubled FROM input")
        .set("sink", "partition_by", r#"["country"]"#)
        .set("workers", "concurrency", "2")
        .text("workers", "lease_timeout", "1s")
}

const COUNTRIES: [&str; 4] = ["FR", "DE", "US", "JP"];

/// Writes `files` input files of `rows` rows each; returns the expected
/// output rows (`id|amount*2|country`, as `parquet_rows` shows them).
fn write_inputs(ws: &Workspace, files: usize, rows: usize) -> Vec<Vec<String>> {
    let mut expected = Vec::new();
    for file in 0..files {
        let mut text = String::from("id,country,amount\n");
        for row in 0..rows {
            let id = file * 1000 + row;
            let country = COUNTRIES[id % COUNTRIES.len()];
            text.push_str(&format!("{id},{country},{}.5\n", id % 97));
            expected.push(vec![id.to_string(), format!("{:.1}", (id % 97) as f64 * 2.0 + 1.0), country.to_string()]);
        }
        ws.write(&format!("inbox/f{file:03}.csv"), &text);
    }
    expected.sort();
    expected
}

fn pipeline_path(ws: &Workspace) -> String {
    ws.path("pipeline.toml").to_str().expect("utf-8").to_string()
}

/// Checks the output row by row, and that nothing staged is left once
/// `sluice vacuum` ran.
fn assert_exactly_once(ws: &Workspace, expected: &[Vec<String>]) {
    let (columns, found) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "doubled", "country"]);
    assert_eq!(found.len(), expected.len(), "row count");
    assert_eq!(found, expected, "every row exactly once");

    let status = run(&["status", &pipeline_path(ws), "--json"]);
    assert!(status.status.success(), "{}", printed(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["pending_batches"], 0, "{status}");
    assert_eq!(status["running_batches"], 0, "{status}");
    assert_eq!(status["failed_batches"], 0, "{status}");
    assert_eq!(status["new_files"], 0, "{status}");
    assert_eq!(status["rows_written"], expected.len(), "{status}");

    let vacuum = run(&["vacuum", &pipeline_path(ws)]);
    assert!(vacuum.status.success(), "{}", printed(&vacuum));
    let staged: Vec<_> = walk(&ws.path("out/_sluice/staging"));
    assert!(staged.is_empty(), "vacuum left staged files: {staged:?}");
    assert_eq!(parquet_rows(&ws.path("out")).1, expected, "vacuum removed nothing committed");
}

/// Every file below `dir`, hidden or not.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Runs the pipeline with a failpoint armed: the process must die there.
fn crash_at(ws: &Workspace, failpoint: &str) {
    let output = sluice()
        .args(["run", &pipeline_path(ws), "--until-caught-up"])
        .env("SLUICE_FAILPOINT", failpoint)
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run survived {failpoint}:\n{}", printed(&output));
    let step = failpoint.split(':').next().unwrap_or(failpoint);
    assert!(stderr.contains(&format!("failpoint {step} reached")), "{}", printed(&output));
}

fn crash_then_recover(failpoint: &str) {
    let ws = Workspace::new();
    ws.pipeline(&crashy().toml());
    let expected = write_inputs(&ws, 5, 40);
    crash_at(&ws, failpoint);
    let leftover = visible_files(&ws.path("out"));
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.failed_batches, 0, "{summary:?}");
    assert_exactly_once(&ws, &expected);
    // What was visible after the crash was committed output only.
    let (_, rows_now) = parquet_rows(&ws.path("out"));
    for path in leftover {
        assert!(path.exists(), "{path:?} was visible after the crash and is gone now");
    }
    assert_eq!(rows_now, expected);
}

#[test]
fn crash_before_planning() {
    crash_then_recover("before_plan");
}

#[test]
fn crash_after_planning() {
    crash_then_recover("after_plan");
}

#[test]
fn crash_after_the_lease() {
    crash_then_recover("after_lease");
}

#[test]
fn crash_during_the_sink_write() {
    crash_then_recover("during_sink_write:2");
}

#[test]
fn crash_after_the_sink_write_before_the_commit() {
    crash_then_recover("after_sink_write");
}

#[test]
fn crash_after_the_commit_before_the_publish() {
    crash_then_recover("after_commit:2");
}

#[test]
fn crash_during_the_publish() {
    crash_then_recover("during_publish");
}

/// A tiny deterministic generator: the seed is printed, and
/// `SLUICE_TEST_SEED` replays a run.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
        });
        eprintln!("SLUICE_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn start(ws: &Workspace) -> Child {
    sluice()
        .args(["run", &pipeline_path(ws)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice starts")
}

/// Writes `files` input files with a few malformed rows among them;
/// returns the good rows expected in the sink and the (file, line) of
/// each bad row.
fn write_dirty_inputs(ws: &Workspace, files: usize, rows: usize) -> (Vec<Vec<String>>, BTreeSet<(String, u64)>) {
    let mut expected = Vec::new();
    let mut bad = BTreeSet::new();
    for file in 0..files {
        let name = format!("f{file:03}.csv");
        let mut text = String::from("id,country,amount\n");
        let mut line = 1;
        for row in 0..rows {
            let id = file * 10_000 + row;
            let country = COUNTRIES[id % COUNTRIES.len()];
            line += 1;
            match (file % 10, row) {
                (1, 7) => {
                    text.push_str(&format!("{id},{country},not-a-number\n"));
                    bad.insert((name.clone(), line));
                }
                (6, 12) => {
                    text.push_str(&format!("{id},{country},1.5,extra\n"));
                    bad.insert((name.clone(), line));
                }
                _ => {
                    text.push_str(&format!("{id},{country},{}.5\n", id % 97));
                    expected.push(vec![
                        id.to_string(),
                        format!("{:.1}", (id % 97) as f64 * 2.0 + 1.0),
                        country.to_string(),
                    ]);
                }
            }
        }
        if file == files - 1 {
            // Broken quoting, as the last record of the file.
            text.push_str("99999,\"FR,3.5\n");
            bad.insert((name.clone(), line + 1));
        }
        ws.write(&format!("inbox/{name}"), &text);
    }
    expected.sort();
    (expected, bad)
}

/// The dead letters written below `dir`: (source, line) of each.
fn dead_letters(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for path in visible_files(dir) {
        let text = std::fs::read_to_string(&path).expect("dead letters");
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("NDJSON");
            for key in ["source", "line", "offset", "error", "raw", "batch_id"] {
                assert!(!record[key].is_null(), "{key} missing in {record}");
            }
            found.push((record["source"].as_str().expect("text").to_string(), record["line"].as_u64().expect("line")));
        }
    }
    found.sort();
    found
}

#[test]
fn kill_9_at_random_moments_with_racing_controllers_loses_and_duplicates_nothing() {
    let ws = Workspace::new();
    // One file a batch, so that kills land between many commits. Every
    // killed attempt counts toward max_attempts: allow more than the
    // processes this test kills, so that no batch is failed for it.
    ws.pipeline(&crashy().set("trigger", "max_files_per_batch", "1").set("workers", "max_attempts", "40").toml());
    let (expected, bad) = write_dirty_inputs(&ws, 40, 2000);
    assert_eq!(bad.len(), 9);
    let mut rng = Rng::new();
    let started = Instant::now();
    for round in 0..16 {
        let two = rng.below(2) == 1;
        let mut children = vec![start(&ws)];
        if two {
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            children.push(start(&ws));
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        // Kill one or both, each with SIGKILL.
        let kill_both = !two || rng.below(2) == 1;
        for (i, child) in children.iter_mut().enumerate() {
            if i == 0 || kill_both {
                child.kill().expect("kill -9");
            } else {
                // The survivor stops as an operator would stop it.
                let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            }
            child.wait().expect("reaped");
        }
        eprintln!("round {round}: {} controller(s), both killed: {kill_both}", children.len());
    }
    eprintln!("kill rounds took {:?}", started.elapsed());

    let summary = ws.run_until_caught_up();
    assert_eq!(summary.failed_batches, 0, "after the kills: {summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, expected, "every good row exactly once");
    let dead: Vec<(String, u64)> = dead_letters(&ws.path("out/_sluice/dead_letters"));
    assert_eq!(dead, bad.into_iter().collect::<Vec<_>>(), "every bad row once in the dead letters");
    let status = run(&["status", &pipeline_path(&ws), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["dead_lettered_rows"], dead.len(), "{status}");
    assert_exactly_once(&ws, &expected);
}

#[test]
fn two_controllers_at_once_share_the_batches() {
    let ws = Workspace::new();
    ws.pipeline(&crashy().toml());
    let expected = write_inputs(&ws, 16, 50);
    let pipeline = pipeline_path(&ws);
    let children: Vec<_> = (0..2)
        .map(|_| {
            sluice()
                .args(["run", &pipeline, "--until-caught-up"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starts")
        })
        .collect();
    let mut committed = 0;
    for child in children {
        let output = child.wait_with_output().expect("finishes");
        assert!(output.status.success(), "{}", printed(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let batches: u64 = stdout
            .split(": ")
            .nth(2)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("summary: {stdout}"));
        committed += batches;
    }
    assert_eq!(committed, 8, "16 files in batches of 2, each committed by one controller");
    assert_exactly_once(&ws, &expected);
}

#[test]
fn malformed_records_go_to_the_dead_letters_and_the_rest_goes_on() {
    let ws = Workspace::new();
    ws.pipeline(&crashy().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1.5\n2,DE,oops\n3,US,2\n");
    ws.write("inbox/b.csv", "id,country,amount\n4,JP,1\n5,FR\n6,DE,3\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (6, 4, 2), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, common::rows(&["1|3.0|FR", "3|4.0|US", "4|2.0|JP", "6|6.0|DE"]));

    let files = visible_files(&ws.path("out/_sluice/dead_letters"));
    let mut records: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|path| std::fs::read_to_string(path).expect("read").lines().map(String::from).collect::<Vec<_>>())
        .map(|line| serde_json::from_str(&line).expect("NDJSON"))
        .collect();
    records.sort_by_key(|r| r["source"].as_str().map(String::from));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!((records[0]["source"].as_str(), records[0]["line"].as_u64()), (Some("a.csv"), Some(3)));
    assert_eq!(records[0]["raw"], "2,DE,oops");
    assert!(records[0]["error"].as_str().is_some_and(|e| e.contains("Float64")), "{}", records[0]);
    assert_eq!((records[1]["source"].as_str(), records[1]["line"].as_u64()), (Some("b.csv"), Some(3)));
    assert_eq!(records[1]["raw"], "5,FR");
    assert!(records[1]["error"].as_str().is_some_and(|e| e.contains("fields")), "{}", records[1]);
    assert_eq!(records[0]["pipeline"], "crashy");
}

#[test]
fn a_batch_that_keeps_failing_is_failed_blocks_nothing_and_can_be_retried() {
    let ws = Workspace::new();
    let failing = crashy().set("trigger", "max_files_per_batch", "1").set("workers", "max_attempts", "2").text(
        "transform",
        "sql",
        "SELECT id, country, amount * 2 + id / (id - 7) AS doubled FROM input",
    );
    let pipeline = ws.pipeline(&failing.toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1.5\n");
    ws.write("inbox/b.csv", "id,country,amount\n7,DE,2\n");
    let output = run(&["run", &pipeline, "--until-caught-up", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    let ran = Ran::of(&output);
    assert_eq!((ran.batches, ran.files, ran.failed_batches), (1, 1, 1), "{ran:?}");

    let status = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["failed_batches"], 1, "{status}");
    assert_eq!(status["committed_batches"], 1, "{status}");
    assert_eq!(status["pending_batches"], 0, "{status}");
    let failed = &status["failed"][0];
    assert_eq!(failed["attempts"], 2, "{status}");
    assert_eq!(failed["files"][0], "b.csv", "{status}");
    assert!(failed["error"].as_str().is_some_and(|e| e.to_lowercase().contains("divide by zero")), "{status}");

    // The cause is fixed; the failed batch runs again.
    ws.pipeline(&crashy().set("trigger", "max_files_per_batch", "1").toml());
    let retried = run(&["retry", &pipeline, "--batch", failed["batch_id"].as_str().expect("id")]);
    assert!(retried.status.success(), "{}", printed(&retried));
    let again = run(&["retry", &pipeline, "--failed"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no failed batches"), "{}", printed(&again));
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files), (1, 1), "{summary:?}");
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["1|3.0|FR", "7|4.0|DE"]));

    let wrong = run(&["retry", &pipeline, "--batch", "0123"]);
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("no such batch"));
}

#[test]
fn vacuum_removes_what_a_crashed_attempt_staged_and_keeps_committed_output() {
    let ws = Workspace::new();
    ws.pipeline(&crashy().toml());
    let expected = write_inputs(&ws, 2, 10);
    crash_at(&ws, "after_sink_write");
    assert!(!walk(&ws.path("out/_sluice/staging")).is_empty(), "the crash left staged files");
    assert!(visible_files(&ws.path("out")).is_empty(), "and none of them is visible");
    // The crashed attempt's lease runs out; only then may its files go.
    let early = run(&["vacuum", &pipeline_path(&ws)]);
    assert!(String::from_utf8_lossy(&early.stdout).contains("removed 0"), "{}", printed(&early));
    std::thread::sleep(Duration::from_millis(1100));
    let vacuum = run(&["vacuum", &pipeline_path(&ws)]);
    assert!(String::from_utf8_lossy(&vacuum.stdout).contains("removed 1"), "{}", printed(&vacuum));
    assert!(walk(&ws.path("out/_sluice/staging")).is_empty());
    ws.run_until_caught_up();
    assert_exactly_once(&ws, &expected);
}

#[test]
fn json_lines_that_do_not_parse_or_do_not_fit_are_dead_letters_never_truncated() {
    let ws = Workspace::new();
    ws.pipeline(
        &PipelineFile::files("events", "*.json")
            .schema(&[("id", "int64"), ("amount", "float64")])
            .text("dead_letter", "url", "dead")
            .toml(),
    );
    ws.write(
        "inbox/a.json",
        "{\"id\": 1, \"amount\": 2.5}\n{\"id\": 1.5}\n{broken\n\n{\"id\": \"3\", \"amount\": \"4\"}\n{\"id\": 4, \"amount\": true}\n",
    );
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (5, 2, 3), "{summary:?}");
    assert_eq!(parquet_rows(&ws.path("out")).1, common::rows(&["1|2.5", "3|4.0"]));
    let dead = dead_letters(&ws.path("dead"));
    assert_eq!(dead, [("a.json".to_string(), 2), ("a.json".to_string(), 3), ("a.json".to_string(), 6)]);
    assert!(walk(&ws.path("out/_sluice")).iter().all(|path| !path.to_string_lossy().contains("dead_letters")));
}

#[test]
fn a_worker_that_wakes_after_its_lease_was_taken_over_cannot_commit() {
    let ws = Workspace::new();
    ws.pipeline(&crashy().toml());
    let expected = write_inputs(&ws, 2, 20);
    // The first controller stalls with its batch staged, as a paused
    // machine would: every thread stops, renewals too.
    let stalled = sluice()
        .args(["run", &pipeline_path(&ws), "--until-caught-up", "--json"])
        .env("SLUICE_FAILPOINT", "after_sink_write")
        .env("SLUICE_FAILPOINT_ACTION", "stop")
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while walk(&ws.path("out/_sluice/staging")).is_empty() {
        assert!(Instant::now() < deadline, "the first controller never staged its batch");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    // Its lease runs out; a second controller takes the batch over.
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files), (1, 2), "{summary:?}");

    // The first wakes up and tries to commit: the log refuses, and its
    // staged files go.
    let resumed = std::process::Command::new("kill").args(["-CONT", &stalled.id().to_string()]).status();
    assert!(resumed.is_ok_and(|status| status.success()));
    let output = stalled.wait_with_output().expect("finishes");
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(Ran::of(&output).batches, 0, "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("committed by another run") || stderr.contains("took the batch over"),
        "{}",
        printed(&output)
    );
    assert_exactly_once(&ws, &expected);
}

#[test]
fn a_malformed_value_in_a_column_the_sql_does_not_read_is_still_a_dead_letter() {
    let ws = Workspace::new();
    ws.pipeline(&crashy().text("transform", "sql", "SELECT id, country, 0.0 AS doubled FROM input").toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1.5\n2,DE,yesterday\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (2, 1, 1), "{summary:?}");
    assert_eq!(dead_letters(&ws.path("out/_sluice/dead_letters")), [("a.csv".to_string(), 3)]);
}

/// A kill -9 after a commit and before its files were removed: the next run
/// removes them, and every row is in the output once.
#[test]
fn a_kill_between_a_commit_and_the_removal_of_its_files_loses_and_repeats_nothing() {
    for (failpoint, after_commit) in
        [("after_commit:2", "delete"), ("during_publish:2", "delete"), ("after_commit:2", "move")]
    {
        let ws = Workspace::new();
        let mut file = PipelineFile::orders("tidy").set("trigger", "max_files_per_batch", "1");
        file = file.text("source", "after_commit", after_commit);
        if after_commit == "move" {
            file = file.text("source", "move_to", "done");
        }
        ws.pipeline(&file.toml());
        for id in 1..=3 {
            ws.write(&format!("inbox/{id}.csv"), &format!("id,country,amount\n{id},FR,{id}\n"));
        }
        crash_at(&ws, failpoint);
        assert!(!visible_files(&ws.path("inbox")).is_empty(), "{failpoint}: killed before the files were removed");

        let summary = ws.run_until_caught_up();
        assert_eq!(summary.failed_batches, 0, "{failpoint}: {summary:?}");
        assert!(visible_files(&ws.path("inbox")).is_empty(), "{failpoint}: {after_commit} finished by the next run");
        assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR|1.0", "2|FR|2.0", "3|FR|3.0"]), "{failpoint}");
        if after_commit == "move" {
            assert_eq!(visible_files(&ws.path("done")).len(), 3, "every file moved once");
        }
    }
}
