//! Hostile inputs: corrupt files and deep SQL that used to crash a worker.
//!
//! A Parquet file that cannot be read, or whose columns do not fit
//! `[source.schema]`, is one dead letter naming it and its cause, and the
//! batch's other files commit. An attempt that dies without recording why
//! (a panic, a kill, running out of memory) still counts: a batch whose
//! attempts keep dying ends failed after `[workers] max_attempts`, and a
//! `sluice worker` settles its task whatever the batch did.

use std::fs;
use std::process::Output;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;

use super::common::{self, Workspace, parquet_rows, printed, run, visible_files};

/// Parquet files in, with a declared schema (or none, when `schema` is
/// empty: inferred from the files).
fn pipeline(schema: &str, workers: &str) -> String {
    format!(
        r#"
[pipeline]
name = "poison"

[source]
type = "files"
url = "inbox"
pattern = "*.parquet"
{schema}

[trigger]
poll_interval = "100ms"

[sink]
type = "files"
url = "out"

[dead_letter]
url = "dead"

[workers]
lease_timeout = "1s"
{workers}
"#
    )
}

const DECLARED: &str = "[source.schema]\nid = \"int64\"\nname = \"string\"\n";

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
fn corrupt_beside_good(bad: &[u8], schema: &str) {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(schema, ""));
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
    corrupt_beside_good(b"PAR1garbagePAR1", "");
    corrupt_beside_good(&footer_past_the_file(), "");
}

#[test]
fn a_parquet_file_whose_columns_do_not_fit_the_schema_is_a_dead_letter() {
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(DECLARED, ""));
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
