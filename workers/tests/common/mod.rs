//! Helpers for the tests that run the real `sluice` binary on real folders.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub(crate) mod pipeline;
pub(crate) mod tasks;

#[allow(unused_imports)] // not every test binary builds a pipeline file
pub(crate) use pipeline::{ORDERS, PipelineFile};

/// The `sluice` binary built for these tests.
pub(crate) fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.env("SLUICE_LOG", "warn");
    command
}

/// Runs `sluice` with `args`, returning what it printed.
pub(crate) fn run(args: &[&str]) -> Output {
    sluice().args(args).output().expect("the sluice binary runs")
}

/// Starts `command` (a long-running `sluice run`) with its standard error
/// read line by line on a thread of its own: the child, and its lines as
/// they come.
pub(crate) fn spawn_with_log_lines(command: &mut Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Text of a command's standard output and error, for assertion messages.
pub(crate) fn printed(output: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A folder with an `inbox/` to drop files in and a pipeline file.
pub(crate) struct Workspace {
    pub(crate) dir: tempfile::TempDir,
}

impl Workspace {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("inbox")).expect("inbox");
        Workspace { dir }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `text` to `relative`, creating folders.
    pub(crate) fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("folders");
        fs::write(&path, text).expect("write");
        path
    }

    /// Writes `text` to `relative` as one step, as a file lands in a
    /// bucket: written beside it first, then renamed, so that a run never
    /// lists it half-written.
    pub(crate) fn land(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let beside = path.with_file_name(format!(".{name}.landing"));
        fs::create_dir_all(path.parent().expect("has a parent")).expect("folders");
        fs::write(&beside, text).expect("write");
        fs::rename(&beside, &path).expect("rename");
        path
    }

    /// Writes the pipeline file and returns its path as a string.
    pub(crate) fn pipeline(&self, text: &str) -> String {
        self.write("pipeline.toml", text).to_str().expect("utf-8 path").to_string()
    }

    /// Runs the pipeline until caught up, checks that it succeeded, and
    /// returns the summary it printed with `--json`.
    pub(crate) fn run_until_caught_up(&self) -> Ran {
        let pipeline = self.path("pipeline.toml");
        let output = run(&["run", pipeline.to_str().expect("utf-8"), "--until-caught-up", "--json"]);
        assert!(output.status.success(), "sluice run failed:\n{}", printed(&output));
        Ran::of(&output)
    }
}

/// The summary `sluice run --json` prints: the fields the tests look at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct Ran {
    pub(crate) batches: u64,
    pub(crate) files: u64,
    pub(crate) messages: u64,
    pub(crate) rows_in: u64,
    pub(crate) rows_out: u64,
    pub(crate) dead_letters: u64,
    pub(crate) failed_batches: u64,
    pub(crate) handed_back: u64,
    pub(crate) abandoned: u64,
    pub(crate) duplicates: u64,
    pub(crate) exit_code: i32,
}

impl Ran {
    /// The summary a `sluice run ... --json` printed on stdout.
    pub(crate) fn of(output: &Output) -> Ran {
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("sluice run --json printed no summary ({error}):\n{}", printed(output)))
    }

    /// Rows in, rows out and dead letters.
    pub(crate) fn rows(&self) -> (u64, u64, u64) {
        (self.rows_in, self.rows_out, self.dead_letters)
    }
}

/// Every file below `dir` that a plain reader sees: none below a name
/// starting with `_` or `.`.
pub(crate) fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return found };
    for entry in entries {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            found.extend(visible_files(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Size and modification time of each visible file: to show that a rerun
/// changed nothing.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    visible_files(dir)
        .into_iter()
        .map(|path| {
            let meta = fs::metadata(&path).expect("metadata");
            (path, (meta.len(), meta.modified().expect("mtime")))
        })
        .collect()
}

/// The column names of the Parquet files below `dir` and every row as
/// text, with hive partition values (`col=value` folders) appended,
/// sorted.
pub(crate) fn parquet_rows(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for path in visible_files(dir) {
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("parquet"), "{path:?} is not parquet");
        let partitions: Vec<(String, String)> = path
            .strip_prefix(dir)
            .expect("below dir")
            .parent()
            .into_iter()
            .flat_map(|parent| parent.components())
            .filter_map(|c| {
                let text = c.as_os_str().to_string_lossy().into_owned();
                text.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let file = fs::File::open(&path).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let mut names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
            names.extend(partitions.iter().map(|(k, _)| k.clone()));
            if columns.is_empty() {
                columns = names.clone();
            }
            assert_eq!(columns, names, "every file has the same columns");
            for row in 0..batch.num_rows() {
                let mut values: Vec<String> = batch
                    .columns()
                    .iter()
                    .map(|column| array_value_to_string(column, row).expect("displayable"))
                    .collect();
                values.extend(partitions.iter().map(|(_, v)| v.clone()));
                rows.push(values);
            }
        }
    }
    rows.sort();
    (columns, rows)
}

/// Rows written as `a|b|c` strings, sorted, for compact expectations.
pub(crate) fn rows(expected: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = expected.iter().map(|row| row.split('|').map(String::from).collect()).collect();
    rows.sort();
    rows
}
