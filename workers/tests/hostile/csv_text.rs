//! Hostile inputs: CSV text, quoting, line endings and numbers.

use std::path::Path;

use super::common::{self, PipelineFile, Workspace, parquet_rows};

/// A pipeline reading `pattern` from `inbox/`, with `schema` as its
/// `[source.schema]` (inferred when empty), copying the columns `sql`
/// selects to `out/`.
fn pipeline(ws: &Workspace, pattern: &str, schema: &[(&str, &str)], sql: &str) {
    ws.pipeline(&PipelineFile::files("csv-text", pattern).schema(schema).text("transform", "sql", sql).toml());
}

/// The dead letters below `dir`: (line, error, raw) of each, in line order.
fn dead_letters(dir: &Path) -> Vec<(u64, String, String)> {
    let mut found = Vec::new();
    for path in common::visible_files(dir) {
        let text = std::fs::read_to_string(&path).expect("dead letters");
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("NDJSON");
            let text = |key: &str| record[key].as_str().unwrap_or_else(|| panic!("{key} in {record}")).to_string();
            found.push((record["line"].as_u64().expect("a line"), text("error"), text("raw")));
        }
    }
    found.sort();
    found
}

fn out_rows(ws: &Workspace) -> Vec<Vec<String>> {
    parquet_rows(&ws.path("out")).1
}

fn dead(ws: &Workspace) -> Vec<(u64, String, String)> {
    dead_letters(&ws.path("out/_sluice/dead_letters"))
}

#[test]
fn a_csv_over_64_kib_with_quoted_newlines_and_no_schema_is_read_whole() {
    let ws = Workspace::new();
    pipeline(&ws, "*.csv", &[], "SELECT id, note, amount FROM input");
    let mut text = String::from("id,note,amount\n");
    let mut expected = Vec::new();
    for id in 0..3000 {
        let note = if id % 2 == 0 { format!("line\nbreak {id}") } else { format!("plain note {id}") };
        text.push_str(&format!("{id},\"{note}\",{id}.25\n"));
        expected.push(vec![id.to_string(), note, format!("{id}.25")]);
    }
    assert!(text.len() > 64 << 10, "{} bytes", text.len());
    ws.write("inbox/orders.csv", &text);
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (3000, 3000, 0), "{summary:?}");
    expected.sort();
    assert_eq!(out_rows(&ws), expected, "every record, its quoted newline kept");
    let (columns, _) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "note", "amount"]);
}

#[test]
fn an_unterminated_quote_is_a_dead_letter_and_the_records_after_it_are_read() {
    let ws = Workspace::new();
    pipeline(&ws, "*.csv", &[("id", "int64"), ("name", "string")], "SELECT id, name FROM input");
    ws.write("inbox/a.csv", "id,name\n1,\"abc\n2,def\n3,ghi\n4,jkl\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (4, 3, 1), "{summary:?}");
    assert_eq!(out_rows(&ws), common::rows(&["2|def", "3|ghi", "4|jkl"]));
    let dead = dead(&ws);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].2.as_str()), (2, "1,\"abc"));
    assert!(dead[0].1.contains("unterminated quote opened on line 2"), "{}", dead[0].1);
}

#[test]
fn an_unterminated_quote_without_a_schema_does_not_swallow_the_file() {
    let ws = Workspace::new();
    pipeline(&ws, "*.csv", &[], "SELECT id, name FROM input");
    ws.write("inbox/a.csv", "id,name\n1,\"a \"\"quoted\"\"\nword\"\n2,\"abc\n3,ghi\n4,jkl\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (4, 3, 1), "{summary:?}");
    assert_eq!(out_rows(&ws), common::rows(&["1|a \"quoted\"\nword", "3|ghi", "4|jkl"]));
    assert_eq!(dead(&ws).iter().map(|d| d.0).collect::<Vec<_>>(), [4]);
}

#[test]
fn dead_letters_of_a_file_with_cr_line_ends_carry_their_lines() {
    let ws = Workspace::new();
    pipeline(&ws, "*.csv", &[("id", "int64"), ("name", "string")], "SELECT id, name FROM input");
    ws.write("inbox/a.csv", "id,name\r1,a\rx,b\r3,\"two\rlines\"\ry,d\r\r6,f\rz,g");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (6, 3, 3), "{summary:?}");
    assert_eq!(out_rows(&ws), common::rows(&["1|a", "3|two\rlines", "6|f"]));
    let lines: Vec<(u64, String)> = dead(&ws).into_iter().map(|(line, _, raw)| (line, raw)).collect();
    assert_eq!(lines, [(3, "x,b".into()), (6, "y,d".into()), (9, "z,g".into())]);
}

#[test]
fn a_csv_number_too_large_for_float64_is_a_dead_letter_and_inf_and_nan_are_read() {
    let ws = Workspace::new();
    pipeline(&ws, "*.csv", &[("id", "int64"), ("v", "float64")], "SELECT id, v FROM input");
    ws.write("inbox/a.csv", "id,v\n1,1.5\n2,1e309\n3,inf\n4,-inf\n5,NaN\n6,-1e309\n7,Infinity\n8,1e308\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (8, 6, 2), "{summary:?}");
    assert_eq!(out_rows(&ws), common::rows(&["1|1.5", "3|inf", "4|-inf", "5|NaN", "7|inf", "8|1e308"]));
    let dead = dead(&ws);
    assert_eq!(dead.iter().map(|d| (d.0, d.2.as_str())).collect::<Vec<_>>(), [(3, "2,1e309"), (7, "6,-1e309")]);
    assert!(dead[0].1.contains("'1e309'") && dead[0].1.contains("column v"), "{}", dead[0].1);
}

#[test]
fn json_integers_in_strings_are_read_and_floats_too_large_are_dead_letters() {
    let ws = Workspace::new();
    pipeline(&ws, "*.json", &[("id", "int64"), ("v", "float64")], "SELECT id, v FROM input");
    ws.write(
        "inbox/a.json",
        concat!(
            "{\"id\": \"10\", \"v\": 1}\n",
            "{\"id\": 2, \"v\": 1e309}\n",
            "{\"id\": \"10.5\", \"v\": 1}\n",
            "{\"id\": 4, \"v\": \"inf\"}\n",
            "{\"id\": 5, \"v\": \"-1e400\"}\n",
            "{\"id\": \"1e3\", \"v\": 1}\n",
        ),
    );
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.rows(), (6, 2, 4), "{summary:?}");
    assert_eq!(out_rows(&ws), common::rows(&["10|1.0", "4|inf"]));
    assert_eq!(dead(&ws).iter().map(|d| d.0).collect::<Vec<_>>(), [2, 3, 5, 6]);
}
