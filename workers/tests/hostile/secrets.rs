//! Hostile inputs: secrets in URLs and derived values, and settings and files that must be refused.

#[allow(unused_imports)]
use super::common;

use base64::Engine as _;
use common::{Workspace, printed, run};

// --- secrets ---

/// A canary secret with the characters that break a URL's user info.
const CANARY: &str = "Xq7@ng/Pw#Q?Z:9%xK";

/// The canary and every form a plan or a URL parser could show of it.
fn forms_of_canary() -> Vec<String> {
    let mut forms = vec![
        CANARY.to_string(),
        CANARY.to_uppercase(),
        CANARY.chars().rev().collect(),
        base64::engine::general_purpose::STANDARD.encode(CANARY),
        CANARY[2..10].to_string(),
    ];
    forms.extend(CANARY.split(['@', '/', '?', '#', ':']).filter(|piece| piece.len() >= 4).map(String::from));
    forms
}

fn assert_no_canary(what: &str, text: &str) {
    for form in forms_of_canary() {
        assert!(!text.contains(&form), "{what} shows `{form}`, a form of the secret:\n{text}");
    }
}

fn pipeline_with(ws: &Workspace, sql: &str, extra: &str) -> String {
    ws.write("inbox/a.csv", "id,name\n1,a\n2,b\n");
    ws.pipeline(&format!(
        r#"
[pipeline]
name = "canary"

[source]
type = "files"
url = "inbox"
pattern = "*.csv"

[source.schema]
id = "int64"
name = "string"

[transform]
sql = "{sql}"

[sink]
type = "files"
url = "out"
{extra}
"#
    ))
}

#[test]
fn a_password_with_a_raw_at_sign_is_refused_with_its_place_and_never_printed() {
    let ws = Workspace::new();
    let file = pipeline_with(
        &ws,
        "SELECT * FROM input",
        "\n[workers]\ndispatch = \"amqp://user:${env:SLUICE_CANARY}@127.0.0.1:5672/%2f\"\n",
    );
    for command in ["validate", "explain", "run", "status"] {
        let output = common::sluice().args([command, &file]).env("SLUICE_CANARY", CANARY).output().expect("runs");
        let shown = printed(&output);
        assert_eq!(output.status.code(), Some(2), "{command} refuses the URL:\n{shown}");
        assert!(shown.contains("workers.dispatch"), "{command} names the key:\n{shown}");
        assert!(shown.contains("percent-encode"), "{command} says what to do:\n{shown}");
        assert!(shown.contains("pipeline.toml:"), "{command} gives the place:\n{shown}");
        assert_no_canary(command, &shown);
    }
    // Percent-encoded, the same password is taken.
    let encoded = percent_encoding::utf8_percent_encode(CANARY, percent_encoding::NON_ALPHANUMERIC).to_string();
    let output =
        common::sluice().args(["validate", &file]).env("SLUICE_CANARY", &encoded).output().expect("validate runs");
    assert!(output.status.success(), "{}", printed(&output));
    assert_no_canary("validate", &printed(&output));
}

#[test]
fn a_literal_url_with_two_at_signs_is_refused() {
    let ws = Workspace::new();
    let file = pipeline_with(
        &ws,
        "SELECT * FROM input",
        "\n[workers]\ndispatch = \"amqp://user:p@ssword@127.0.0.1:5672/%2f\"\n",
    );
    let output = run(&["validate", &file]);
    let shown = printed(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("workers.dispatch") && shown.contains("%40"), "{shown}");
}

#[test]
fn no_derived_form_of_a_secret_in_the_sql_reaches_explain_or_the_logs() {
    let ws = Workspace::new();
    let sql = "SELECT id, upper('${env:SLUICE_CANARY}') AS u, reverse('${env:SLUICE_CANARY}') AS r, \
               encode('${env:SLUICE_CANARY}', 'base64') AS b, substr('${env:SLUICE_CANARY}', 3, 8) AS s FROM input";
    let file = pipeline_with(&ws, sql, "");
    let explain = common::sluice().args(["explain", &file]).env("SLUICE_CANARY", CANARY).output().expect("explain");
    assert!(explain.status.success(), "{}", printed(&explain));
    let shown = printed(&explain);
    assert!(shown.contains("plans are not shown"), "{shown}");
    assert_no_canary("explain", &shown);

    let output = common::sluice()
        .args(["run", &file, "--until-caught-up"])
        .env("SLUICE_CANARY", CANARY)
        .env("SLUICE_LOG", "trace")
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", printed(&output));
    let shown = printed(&output);
    assert!(shown.len() > 1000, "trace logging wrote lines: {} bytes", shown.len());
    assert_no_canary("run with SLUICE_LOG=trace", &shown);
    let status = common::sluice().args(["status", &file]).env("SLUICE_CANARY", CANARY).output().expect("status");
    assert_no_canary("status", &printed(&status));
}

#[test]
fn run_refuses_sql_that_does_not_plan_before_planning_any_batch() {
    let ws = Workspace::new();
    let file = pipeline_with(&ws, "SELECT no_such_column FROM input", "");
    let output = run(&["run", &file, "--until-caught-up"]);
    let shown = printed(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("pipeline.toml:") && shown.contains("transform.sql"), "{shown}");
    let log = ws.path("out/_sluice");
    let records = std::fs::read_dir(&log).map(|entries| entries.count()).unwrap_or(0);
    assert_eq!(records, 0, "nothing was written to the log at {log:?}");
}

// --- settings and pipeline files ---

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` with its output in files under `dir`, killing it after
/// `limit`: a hang fails the test instead of blocking it. Returns the exit
/// status (`None` when it was killed), stdout and stderr.
fn run_guarded(mut command: Command, dir: &Path, limit: Duration) -> (Option<ExitStatus>, String, String) {
    let out_path = dir.join("guarded.stdout");
    let err_path = dir.join("guarded.stderr");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = command.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("the sluice binary runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    (status, read(&out_path), read(&err_path))
}

/// `sluice validate PATH` exits 1 at once, saying `message` at `PATH:1:1`.
fn assert_refused(path: &Path, message: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut command = common::sluice();
    command.arg("validate").arg(path);
    let (status, stdout, stderr) = run_guarded(command, scratch.path(), Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("validate {} hung", path.display()));
    assert_eq!(status.code(), Some(2), "validate {}:\nstdout:\n{stdout}\nstderr:\n{stderr}", path.display());
    assert!(stderr.starts_with(&format!("{}:1:1: ", path.display())), "no location in:\n{stderr}");
    assert!(stderr.contains(message), "`{message}` missing in:\n{stderr}");
}

#[test]
fn a_device_is_refused_without_being_read() {
    assert_refused(Path::new("/dev/zero"), "a pipeline file must be a regular file");
}

#[test]
fn a_fifo_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipeline.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    assert_refused(&fifo, "a pipeline file must be a regular file");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused(dir.path(), "a pipeline file must be a regular file");
}

#[test]
fn a_file_over_one_mebibyte_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("pipeline.toml");
    let line = "# a comment line that makes the file large\n";
    std::fs::write(&big, line.repeat((2 << 20) / line.len() + 1)).expect("write");
    assert_refused(&big, "at most 1 MiB");
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, b"[pipeline]\nname = \"x\xffy\"\n").expect("write");
    let output = common::sluice().arg("validate").arg(&path).output().expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", common::printed(&output));
    assert!(stderr.starts_with(&format!("{}:2:10: ", path.display())), "{stderr}");
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
}

/// A tiny deterministic generator, so that every run tries the same
/// mutations and a failure can be reproduced.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Bytes a mutation writes: TOML's own punctuation, letters, digits, and
/// bytes that are not UTF-8.
const MUTATION_BYTES: &[u8] = b"[]{}=\"'.,#\n\\ $:0az_\x00\x7f\x80\xc3\xff";

/// Truncations at every line end and at sampled offsets, and random
/// replacements, insertions and deletions of bytes.
fn mutations(text: &[u8], rng: &mut XorShift) -> Vec<Vec<u8>> {
    let mut cases = Vec::new();
    for (i, byte) in text.iter().enumerate() {
        if *byte == b'\n' {
            cases.push(text[..i].to_vec());
            cases.push(text[..=i].to_vec());
        }
    }
    for _ in 0..24 {
        cases.push(text[..rng.below(text.len())].to_vec());
    }
    for _ in 0..120 {
        let mut case = text.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(case.len());
            let byte = if rng.below(2) == 0 {
                MUTATION_BYTES[rng.below(MUTATION_BYTES.len())]
            } else {
                (rng.next() & 0xff) as u8
            };
            match rng.below(3) {
                0 if at < case.len() => case[at] = byte,
                1 => case.insert(at, byte),
                _ if at < case.len() => {
                    case.remove(at);
                }
                _ => case.push(byte),
            }
        }
        cases.push(case);
    }
    cases
}

/// Whether a line of `validate`'s stderr names `FILE:LINE:COL` of one of
/// `files`.
fn is_located(line: &str, files: &[String]) -> bool {
    files.iter().any(|file| {
        let Some(rest) = line.strip_prefix(file.as_str()).and_then(|rest| rest.strip_prefix(':')) else {
            return false;
        };
        let mut parts = rest.splitn(3, ':');
        let numbers = parts.by_ref().take(2).all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        numbers && parts.next().is_some()
    })
}

#[test]
fn every_truncation_and_mutation_of_the_example_pipelines_is_refused_with_a_location() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("pipelines"))
        .expect("pipelines/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "the example pipelines are in place");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = XorShift(0x5eed_1e55_f00d_cafe);
    let mut files = Vec::new();
    for example in &examples {
        let text = std::fs::read(example).expect("readable");
        let stem = example.file_stem().expect("a name").to_string_lossy().into_owned();
        for (i, case) in mutations(&text, &mut rng).into_iter().enumerate() {
            let path = dir.path().join(format!("{stem}-{i:04}.toml"));
            std::fs::write(&path, case).expect("write");
            files.push(path.to_str().expect("utf-8 path").to_string());
        }
    }

    let mut failures = Vec::new();
    for chunk in files.chunks(80) {
        let mut command = common::sluice();
        command.arg("validate").args(chunk);
        let (status, stdout, stderr) = run_guarded(command, dir.path(), Duration::from_secs(120));
        let Some(status) = status else {
            failures.push(format!("validate hung on one of {chunk:?}"));
            continue;
        };
        match status.code() {
            Some(0) | Some(2) => {}
            Some(1) => {
                for line in stderr.lines() {
                    // Indented lines go on the problem above: its hint,
                    // or the rest of a message of several lines.
                    if line.is_empty() || line.starts_with("  ") || is_located(line, chunk) {
                        continue;
                    }
                    failures.push(format!("a problem without FILE:LINE:COL: {line}"));
                }
            }
            other => failures.push(format!("exit {other:?} ({status}) on {chunk:?}:\n{stdout}\n{stderr}")),
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// `sluice validate` on `text`: exit 1 and each of `wanted` (after the
/// file's path) in stderr.
fn assert_validate_refuses(text: &str, wanted: &[&str]) {
    let ws = common::Workspace::new();
    let pipeline = ws.pipeline(text);
    let output = common::run(&["validate", &pipeline]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", common::printed(&output));
    for want in wanted {
        assert!(stderr.contains(&format!("{pipeline}:{want}")), "`{want}` missing in:\n{stderr}");
    }
}

#[test]
fn a_poll_interval_of_a_nanosecond_is_refused() {
    assert_validate_refuses(
        "[pipeline]\nname = \"spin\"\n\n[trigger]\npoll_interval = \"1ns\"\nreconcile_interval = \"1ms\"\n\n\
         [source]\ntype = \"files\"\nurl = \"inbox\"\nformat = \"csv\"\n\n[source.schema]\nid = \"int64\"\n\n\
         [sink]\ntype = \"files\"\nurl = \"out\"\n",
        &[
            "5:1: trigger.poll_interval: must be at least 10ms",
            "6:1: trigger.reconcile_interval: must be at least 100ms",
        ],
    );
}

#[test]
fn a_max_wait_under_a_millisecond_is_refused() {
    assert_validate_refuses(
        "[pipeline]\nname = \"spin\"\n\n[source]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n\
         topic = \"orders\"\nformat = \"json\"\n\n[source.schema]\nid = \"int64\"\n\n\
         [trigger]\nmax_wait = \"1ns\"\n\n[sink]\ntype = \"files\"\nurl = \"out\"\n",
        &["14:1: trigger.max_wait: must be at least 1ms"],
    );
}

#[test]
fn a_secret_file_is_read_for_each_batch_and_never_printed() {
    use std::time::Duration;

    let ws = Workspace::new();
    ws.write("secrets/label", "first-rotating-value\n");
    let path = ws.pipeline(
        r#"
[pipeline]
name = "rotating"
[source]
type = "files"
url = "inbox"
pattern = "*.csv"
[source.schema]
id = "int64"
[transform]
sql = "SELECT id, '${file:secrets/label}' AS label FROM input"
[sink]
type = "files"
url = "out"
"#,
    );
    let (controller, logged) = common::spawn_with_log_lines(
        common::sluice().args(["run", &path, "--log-format", "json"]).env("SLUICE_LOG", "info,sluice=debug"),
    );
    let mut seen = String::new();
    let wait_for_commit = |seen: &mut String| loop {
        let line = logged.recv_timeout(Duration::from_secs(30)).expect("a batch committed");
        seen.push_str(&line);
        if line.contains("batch committed") {
            break;
        }
    };
    ws.write("inbox/a.csv", "id\n1\n");
    wait_for_commit(&mut seen);
    // The credential rotates under the running controller.
    ws.write("secrets/label", "second-rotating-value");
    ws.write("inbox/b.csv", "id\n2\n");
    wait_for_commit(&mut seen);
    std::process::Command::new("kill").args(["-TERM", &controller.id().to_string()]).status().expect("kill");
    let output = controller.wait_with_output().expect("output");
    assert!(output.status.success(), "{}", printed(&output));
    while let Ok(line) = logged.recv_timeout(Duration::from_millis(500)) {
        seen.push_str(&line);
    }
    assert_eq!(
        common::parquet_rows(&ws.path("out")).1,
        common::rows(&["1|first-rotating-value", "2|second-rotating-value"])
    );
    assert!(!seen.contains("rotating-value"), "a secret file's value was logged:\n{seen}");
    assert!(seen.contains("secret file changed"), "{seen}");
    let explained = run(&["explain", &path]);
    let said = printed(&explained);
    assert!(!said.contains("rotating-value"), "{said}");
}
