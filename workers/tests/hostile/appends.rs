//! Hostile inputs: a committed file that grows or is rewritten.
//!
//! A file read once and then appended to is read again only from where it
//! ended (`[source] on_change = "append"`, the default); one rewritten is a
//! new version read whole, with a warning; `on_change = "ignore"` leaves
//! it unread, and `"new_version"` reads any change whole.

use std::collections::BTreeSet;
use std::io::Write;

use super::common::{self, PipelineFile, Workspace, parquet_rows, printed};

/// A CSV pipeline whose schema is inferred from the files' header.
fn pipeline(on_change: Option<&str>) -> String {
    let file = PipelineFile::files("growing", "*.csv");
    on_change.map_or(file.clone(), |value| file.text("source", "on_change", value)).toml()
}

/// Rows `ids` as `id,name id` lines.
fn lines(ids: std::ops::Range<u32>) -> String {
    ids.map(|id| format!("{id},name {id}\n")).collect()
}

fn append(ws: &Workspace, relative: &str, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(ws.path(relative)).expect("open to append");
    file.write_all(text.as_bytes()).expect("append");
}

/// Runs until caught up; what it logged.
fn run(ws: &Workspace) -> String {
    let pipeline = ws.path("pipeline.toml");
    let output = common::run(&["run", pipeline.to_str().expect("utf-8"), "--until-caught-up"]);
    assert!(output.status.success(), "sluice run failed:\n{}", printed(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status_of(ws: &Workspace) -> serde_json::Value {
    let pipeline = ws.path("pipeline.toml");
    let output = common::run(&["status", pipeline.to_str().expect("utf-8"), "--json"]);
    assert!(output.status.success(), "{}", printed(&output));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// The output's `(id, name)` rows, in any order, and its columns.
fn output(ws: &Workspace) -> (Vec<String>, Vec<(u32, String)>) {
    let (columns, rows) = parquet_rows(&ws.path("out"));
    let rows = rows.into_iter().map(|row| (row[0].parse().expect("an id"), row[1].clone())).collect();
    (columns, rows)
}

#[test]
fn a_file_appended_to_after_it_was_read_is_read_again_only_from_where_it_ended() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline(None));
    ws.write("inbox/growing.csv", &format!("id,name\n{}", lines(0..500)));
    run(&ws);
    append(&ws, "inbox/growing.csv", &lines(500..1000));
    let logged = run(&ws);
    assert!(logged.contains("growing.csv grew from"), "the append is a warning naming the file:\n{logged}");

    let (columns, rows) = output(&ws);
    assert_eq!(columns, ["id", "name"], "the header's names, from the file's start");
    assert_eq!(rows.len(), 1000, "no row read twice");
    let ids: BTreeSet<u32> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..1000).collect());
    for (id, name) in &rows {
        assert_eq!(name, &format!("name {id}"), "the appended rows keep their columns");
    }
    let status = status_of(&ws);
    assert_eq!((status["appended_inputs"].as_u64(), status["rewritten_inputs"].as_u64()), (Some(1), Some(0)));
    assert_eq!((status["committed_batches"].as_u64(), status["new_files"].as_u64()), (Some(2), Some(0)));

    // A third growth is read from the end of the second.
    append(&ws, "inbox/growing.csv", &lines(1000..1010));
    run(&ws);
    assert_eq!(output(&ws).1.len(), 1010);
    assert_eq!(status_of(&ws)["appended_inputs"].as_u64(), Some(2));
}

#[test]
fn a_rewritten_file_is_read_whole_as_a_new_version_with_a_warning() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline(None));
    ws.write("inbox/orders.csv", &format!("id,name\n{}", lines(0..500)));
    run(&ws);
    ws.write("inbox/orders.csv", &format!("id,name\n{}", lines(2000..2600)));
    let logged = run(&ws);
    assert!(logged.contains("orders.csv changed since it was planned"), "{logged}");
    assert!(logged.contains("reading it whole as a new version"), "{logged}");

    let ids: BTreeSet<u32> = output(&ws).1.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..500).chain(2000..2600).collect(), "both versions, each whole");
    let status = status_of(&ws);
    assert_eq!((status["appended_inputs"].as_u64(), status["rewritten_inputs"].as_u64()), (Some(0), Some(1)));
}

#[test]
fn with_on_change_ignore_a_file_once_read_is_never_read_again() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline(Some("ignore")));
    ws.write("inbox/once.csv", &format!("id,name\n{}", lines(0..500)));
    run(&ws);
    append(&ws, "inbox/once.csv", &lines(500..1000));
    let logged = run(&ws);
    assert!(logged.contains("once.csv changed since it was planned"), "{logged}");
    assert!(logged.contains("leaves it unread"), "{logged}");
    assert_eq!(output(&ws).1.len(), 500);
    let status = status_of(&ws);
    assert_eq!((status["ignored_inputs"].as_u64(), status["new_files"].as_u64()), (Some(1), Some(0)));
    assert_eq!(status["lag"].as_u64(), Some(0), "nothing is waiting to be read");
}

#[test]
fn with_on_change_new_version_a_grown_file_is_read_whole_again() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline(Some("new_version")));
    ws.write("inbox/again.csv", &format!("id,name\n{}", lines(0..500)));
    run(&ws);
    append(&ws, "inbox/again.csv", &lines(500..1000));
    let logged = run(&ws);
    assert!(logged.contains("reading it whole as a new version"), "{logged}");
    assert_eq!(output(&ws).1.len(), 1500, "as the setting says: the first 500 twice");
    assert_eq!(status_of(&ws)["rewritten_inputs"].as_u64(), Some(1));
}

#[test]
fn a_file_read_while_its_writer_was_mid_line_loses_and_repeats_nothing_when_it_grows() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline(None));
    // The writer had written half of row 500 when the file was read: that
    // half is read as it stood then.
    ws.write("inbox/live.csv", &format!("id,name\n{}500,na", lines(0..500)));
    run(&ws);
    append(&ws, "inbox/live.csv", &format!("me 500\n{}", lines(501..1000)));
    run(&ws);

    let rows = output(&ws).1;
    let ids: BTreeSet<u32> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!((rows.len(), ids), (1000, (0..1000).collect()), "each id once");
    let status = status_of(&ws);
    assert_eq!(status["dead_lettered_rows"].as_u64(), Some(1), "the rest of row 500 is set aside, not lost");
    assert_eq!(status["appended_inputs"].as_u64(), Some(1));
}
