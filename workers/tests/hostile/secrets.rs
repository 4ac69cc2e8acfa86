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
        assert_eq!(output.status.code(), Some(1), "{command} refuses the URL:\n{shown}");
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
    assert_eq!(output.status.code(), Some(1), "{shown}");
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
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("pipeline.toml:") && shown.contains("transform.sql"), "{shown}");
    let log = ws.path("out/_sluice");
    let records = std::fs::read_dir(&log).map(|entries| entries.count()).unwrap_or(0);
    assert_eq!(records, 0, "nothing was written to the log at {log:?}");
}
