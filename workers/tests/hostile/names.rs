//! Hostile inputs: names and links in the inbox, and what plain readers of the sink see.
//!
//! A last section holds SQL that nests deep: a long flat chain of `OR`.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::common::{PipelineFile, Workspace, parquet_rows, printed, rows, run, sluice};

/// A CSV pipeline into Parquet, one file a batch.
fn names() -> PipelineFile {
    PipelineFile::files("names", "**/*.csv")
        .schema(&[("id", "int64"), ("country", "string")])
        .set("trigger", "max_files_per_batch", "1")
        .text("workers", "lease_timeout", "1s")
}

/// Every file below `dir`, hidden names included.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(all_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A glob as DuckDB, Polars and pyarrow read it: `*` within one folder,
/// `**` across folders, no name skipped for starting with `_` or `.`.
fn reader_glob(glob: &str) -> GlobMatcher {
    GlobBuilder::new(glob).literal_separator(true).build().expect("glob").compile_matcher()
}

/// The files below the workspace that `glob` (relative to it) reads.
fn read_by(ws: &Workspace, glob: &str) -> Vec<String> {
    let matcher = reader_glob(glob);
    let mut matched: Vec<String> = all_files(&ws.path("out"))
        .iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(ws.dir.path()).ok()?.to_str()?.to_string();
            matcher.is_match(&relative).then_some(relative)
        })
        .collect();
    matched.sort();
    matched
}

/// The rows of the Parquet files `files` (relative to the workspace).
fn rows_of(ws: &Workspace, files: &[String]) -> u64 {
    files
        .iter()
        .map(|file| {
            let opened = std::fs::File::open(ws.path(file)).expect("open");
            let reader = parquet::file::reader::SerializedFileReader::new(opened).expect("parquet");
            parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows() as u64
        })
        .sum()
}

const DATA_GLOBS: [&str; 3] = ["out/*.parquet", "out/**/*.parquet", "out/*/*.parquet"];

#[test]
fn a_data_glob_reads_only_committed_files_after_a_crash() {
    for partitioned in [false, true] {
        let ws = Workspace::new();
        let text = match partitioned {
            true => names().set("sink", "partition_by", r#"["country"]"#).toml(),
            false => names().toml(),
        };
        let pipeline = ws.pipeline(&text);
        ws.write("inbox/a.csv", "id,country\n1,FR\n2,DE\n");
        let output =
            sluice().args(["run", &pipeline, "--until-caught-up"]).env("SLUICE_FAILPOINT", "after_sink_write").output();
        let output = output.expect("sluice runs");
        assert!(!output.status.success(), "the failpoint stops the run: {}", printed(&output));

        let staged = all_files(&ws.path("out/_sluice/staging"));
        assert!(!staged.is_empty(), "the crash left its staged files");
        for glob in DATA_GLOBS {
            assert_eq!(
                read_by(&ws, glob),
                Vec::<String>::new(),
                "{glob} reads an uncommitted file (partitioned: {partitioned})"
            );
        }

        ws.run_until_caught_up();
        let globs =
            if partitioned { ["out/**/*.parquet", "out/*/*.parquet"] } else { ["out/**/*.parquet", "out/*.parquet"] };
        for glob in globs {
            let read = read_by(&ws, glob);
            assert_eq!(rows_of(&ws, &read), 2, "{glob} reads each committed row once: {read:?}");
        }
        assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR", "2|DE"]));
    }
}

// Items 7 and 8: names that cannot be read, and links.

/// `sluice status --json` of the pipeline, parsed.
fn status(pipeline: &str) -> serde_json::Value {
    let output = run(&["status", pipeline, "--json"]);
    assert!(output.status.success(), "status fails: {}", printed(&output));
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

#[cfg(unix)]
#[test]
fn a_name_that_cannot_be_read_is_skipped_and_the_rest_goes_on() {
    use std::os::unix::ffi::OsStrExt;

    let ws = Workspace::new();
    let pipeline = ws.pipeline(&names().toml());
    ws.write("inbox/good.csv", "id,country\n1,FR\n");
    ws.write("inbox/sub/deep.csv", "id,country\n2,DE\n");
    for name in [&b"bad\xff.csv"[..], b"tab\there.csv", b"new\nline.csv"] {
        let path = ws.path("inbox").join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(path, "id,country\n9,XX\n").expect("write");
    }
    std::os::unix::fs::symlink("..", ws.path("inbox/sub/loop")).expect("symlink");

    assert_eq!(status(&pipeline)["skipped_names"], 4, "status lists and counts the skipped names");
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert!(output.status.success(), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Escaped in the warning, then again in the JSON log line.
    for shown in ["bad\u{fffd}.csv", "tab\\\\there.csv", "new\\\\nline.csv", "sub/loop"] {
        assert!(stderr.contains(shown), "a warning names {shown}: {stderr}");
    }
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR", "2|DE"]));

    let after = status(&pipeline);
    assert_eq!(after["skipped_names"], 4);
    assert_eq!(after["new_files"], 0);
    assert_eq!(after["committed_batches"], 2);
}

#[cfg(unix)]
#[test]
fn a_link_out_of_the_source_folder_is_not_followed_unless_asked() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&names().toml());
    ws.write("inbox/good.csv", "id,country\n1,FR\n");
    ws.write("elsewhere/secret.csv", "id,country\n666,XX\n");
    ws.write("elsewhere/folder/secret.csv", "id,country\n667,XX\n");
    std::os::unix::fs::symlink(ws.path("elsewhere/secret.csv"), ws.path("inbox/passwd.csv")).expect("symlink");
    std::os::unix::fs::symlink(ws.path("elsewhere/folder"), ws.path("inbox/folder")).expect("symlink");
    std::os::unix::fs::symlink(ws.path("inbox/good.csv"), ws.path("inbox/again.csv")).expect("symlink");

    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert!(output.status.success(), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("passwd.csv") && stderr.contains("leads out of the folder"), "{stderr}");
    // A link within the folder is read.
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR", "1|FR"]));
    assert_eq!(status(&pipeline)["skipped_names"], 2);

    let pipeline = ws.pipeline(&names().set("source", "follow_symlinks", "true").toml());
    ws.run_until_caught_up();
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR", "1|FR", "666|XX", "667|XX"]));
    assert_eq!(status(&pipeline)["skipped_names"], 0);
}

#[test]
fn follow_symlinks_is_refused_where_there_are_no_links() {
    let ws = Workspace::new();
    let text = names().text("source", "url", "s3://bucket/inbox").set("source", "follow_symlinks", "true").toml();
    let pipeline = ws.pipeline(&text);
    let output = run(&["validate", &pipeline]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let located = format!("{pipeline}:8:19: source.follow_symlinks: applies to a local folder only");
    assert!(stderr.contains(&located), "{stderr}");
}

// Item 4: SQL that nests deep. A long flat chain once overflowed the stack
// of every run (and of validate, past 12,000 terms).

/// A pipeline whose SQL keeps the rows `WHERE id = 0 OR ... OR id = n-1`.
fn or_chain_pipeline(ws: &Workspace, terms: usize) -> String {
    let chain: Vec<String> = (0..terms).map(|i| format!("id = {i}")).collect();
    let sql = format!("SELECT id, country FROM input WHERE {}", chain.join(" OR "));
    let text = names().text("transform", "sql", &sql).toml();
    ws.pipeline(&text)
}

#[test]
fn a_long_flat_chain_of_or_validates_and_runs() {
    for terms in [4_000, 12_000] {
        let ws = Workspace::new();
        let pipeline = or_chain_pipeline(&ws, terms);
        let ids: Vec<String> = (0..20_000).step_by(7).map(|id| format!("{id},FR")).collect();
        ws.write("inbox/a.csv", &format!("id,country\n{}\n", ids.join("\n")));

        let output = run(&["validate", &pipeline]);
        assert!(output.status.success(), "{terms} terms: {}", printed(&output));
        ws.run_until_caught_up();
        let expected: Vec<Vec<String>> =
            (0..terms).step_by(7).map(|id| vec![id.to_string(), "FR".to_string()]).collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(parquet_rows(&ws.path("out")).1, expected, "{terms} terms");
    }
}

#[test]
fn an_expression_too_deep_to_plan_is_refused_where_it_is_written() {
    let ws = Workspace::new();
    let sum = vec!["id"; 6_000].join(" + ");
    let text = names().text("transform", "sql", &format!("SELECT {sum} AS s FROM input")).toml();
    let line = 1 + text.lines().position(|l| l.starts_with("sql = ")).expect("the SQL");
    let pipeline = ws.pipeline(&text);
    ws.write("inbox/a.csv", "id,country\n1,FR\n");
    for command in ["validate", "run"] {
        let output = run(&[command, &pipeline]);
        assert_eq!(output.status.code(), Some(2), "{command}: {}", printed(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let located = format!("{pipeline}:{line}:7: transform.sql: an expression nests more than 5000 levels deep");
        assert!(stderr.contains(&located), "{command}: {stderr}");
    }
}
