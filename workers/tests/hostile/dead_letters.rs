//! Hostile inputs: many malformed records, and one bad file among good ones.

use std::io::Write;

use base64::Engine as _;

use super::common::{PipelineFile, Workspace, parquet_rows, printed, rows, run, visible_files};

/// A pipeline over the CSV files of `inbox/` matching `pattern` (`id`,
/// `name`), to `out/`, with its dead letters in `dead/`.
fn pipeline(pattern: &str) -> PipelineFile {
    PipelineFile::files("hostile_dead", pattern)
        .text("source", "format", "csv")
        .schema(&[("id", "int64"), ("name", "string")])
        .text("dead_letter", "url", "dead")
}

/// Every dead letter written below `dead/`, as JSON.
fn dead_letters(ws: &Workspace) -> Vec<serde_json::Value> {
    visible_files(&ws.path("dead"))
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("dead letters are text");
            text.lines().map(|line| serde_json::from_str(line).expect("one JSON object a line")).collect::<Vec<_>>()
        })
        .collect()
}

/// `bad` malformed CSV rows (an id that is not a number) after a header
/// and two good rows.
fn bad_csv(bad: usize) -> String {
    let mut text = String::from("id,name\n1,one\n2,two\n");
    for n in 0..bad {
        text.push_str(&format!("x{n},bad\n"));
    }
    text
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn status(ws: &Workspace) -> serde_json::Value {
    let output = run(&["status", ws.path("pipeline.toml").to_str().expect("utf-8"), "--json"]);
    assert!(output.status.success(), "{}", printed(&output));
    serde_json::from_slice(&output.stdout).expect("status is JSON")
}

#[test]
fn a_batch_of_more_bad_rows_than_the_default_limit_fails_at_once_naming_the_key() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline("*.csv").toml());
    ws.write("inbox/garbage.csv", &bad_csv(120_000));

    let pipeline = ws.path("pipeline.toml");
    let output = run(&["run", pipeline.to_str().expect("utf-8"), "--until-caught-up"]);
    assert!(!output.status.success(), "the batch fails:\n{}", printed(&output));

    let status = status(&ws);
    assert_eq!(status["failed_batches"], 1, "{status}");
    let failed = &status["failed"][0];
    let error = failed["error"].as_str().expect("an error");
    assert!(error.contains("more than 100000 malformed records"), "{error}");
    assert!(error.contains("raise [dead_letter] max_records"), "names the key to raise: {error}");
    assert_eq!(failed["attempts"], 1, "no retry reads the same input differently: {status}");
    assert!(visible_files(&ws.path("dead")).is_empty(), "no dead letters of a failed batch are visible");
    assert!(visible_files(&ws.path("out")).is_empty(), "nor any output");
}

#[test]
fn with_a_raised_limit_every_one_of_many_dead_letters_is_written_once() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline("*.csv").set("dead_letter", "max_records", "1000000").toml());
    ws.write("inbox/garbage.csv", &bad_csv(120_000));

    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (120002, 2, 120000), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|one", "2|two"]));

    let letters = dead_letters(&ws);
    let mut lines: Vec<u64> = letters.iter().map(|letter| letter["line"].as_u64().expect("a line")).collect();
    lines.sort_unstable();
    assert_eq!(lines, (4..120_004).collect::<Vec<u64>>(), "each bad row once");
    let sample = letters.iter().find(|letter| letter["line"] == 4).expect("the first bad row");
    assert_eq!(sample["raw"], "x0,bad");
    assert_eq!(sample["source"], "garbage.csv");
}

#[test]
fn a_gz_that_is_not_gzip_or_is_cut_short_is_a_dead_letter_and_the_good_files_commit() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline("*.csv.gz").toml());
    std::fs::write(ws.path("inbox/good.csv.gz"), gzip(b"id,name\n1,one\n2,two\n")).expect("write");
    std::fs::write(ws.path("inbox/plain.csv.gz"), b"id,name\n3,three\n").expect("write");
    let long: String = (100..20_100).map(|id| format!("{id},name {id}\n")).collect();
    let whole = gzip(format!("id,name\n{long}").as_bytes());
    std::fs::write(ws.path("inbox/cut.csv.gz"), &whole[..whole.len() / 2]).expect("write");

    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files), (1, 3), "one batch of the three: {summary:?}");

    let letters = dead_letters(&ws);
    assert_eq!(letters.len(), 2, "one dead letter a broken file: {letters:?}");
    let of = |file: &str| letters.iter().find(|letter| letter["source"] == file).expect("a dead letter of it");
    let plain = of("plain.csv.gz");
    let error = plain["error"].as_str().expect("an error");
    assert!(error.to_lowercase().contains("invalid gzip header"), "the decoder's cause: {error}");
    assert_eq!((plain["line"].as_u64(), plain["offset"].as_u64()), (Some(1), Some(0)), "where it broke");

    let cut = of("cut.csv.gz");
    let error = cut["error"].as_str().expect("an error");
    assert!(error.contains("breaks off") && error.contains("unexpected end of file"), "{error}");
    let broke_at = cut["line"].as_u64().expect("the line where it broke");
    assert!(broke_at > 1000, "the file was read up to the break: line {broke_at}");

    // Every row of the good file, and of the cut one every row before the
    // line where it broke.
    let (_, found) = parquet_rows(&ws.path("out"));
    let mut expected: Vec<Vec<String>> = vec![vec!["1".into(), "one".into()], vec!["2".into(), "two".into()]];
    expected.extend((100..100 + broke_at - 2).map(|id| vec![id.to_string(), format!("name {id}")]));
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn a_row_whose_partition_folder_name_is_too_long_is_a_dead_letter_and_the_rest_commit() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline("*.csv").set("sink", "partition_by", r#"["name"]"#).toml());
    let long = "n".repeat(300);
    ws.write("inbox/a.csv", &format!("id,name\n1,short\n2,{long}\n3,short\n4,other\n"));

    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (4, 3, 1), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|short", "3|short", "4|other"]));

    let letters = dead_letters(&ws);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let error = letters[0]["error"].as_str().expect("an error");
    assert!(error.contains("column name") && error.contains("at most 255"), "{error}");
    let row: serde_json::Value = serde_json::from_str(letters[0]["raw"].as_str().expect("raw")).expect("the row");
    assert_eq!(row, serde_json::json!({"id": 2, "name": long}));
    assert_eq!(letters[0]["source"], "sink");
}

#[test]
fn the_bytes_of_a_record_that_is_not_utf8_are_kept_in_raw_base64() {
    let ws = Workspace::new();
    ws.pipeline(&pipeline("*.csv").toml());
    let bad: &[u8] = b"2,caf\xe9 \xff\xfe";
    let mut text = b"id,name\n1,ok\n".to_vec();
    text.extend_from_slice(bad);
    text.extend_from_slice(b"\n3,caf\xc3\xa9\n");
    std::fs::write(ws.path("inbox/latin1.csv"), text).expect("write");

    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (3, 2, 1), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|ok", "3|caf\u{e9}"]));

    let letters = dead_letters(&ws);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let encoded = letters[0]["raw_base64"].as_str().expect("raw_base64 is set");
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    assert_eq!(decoded, bad, "the original bytes");
    assert_eq!(letters[0]["raw"], String::from_utf8_lossy(bad).as_ref());
}
