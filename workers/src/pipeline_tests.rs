//! `sluice test FILE...`: a pipeline's transform run over fixtures and
//! compared with what is expected, without its source, sink or log.
//!
//! Tests are `[[test]]` tables of the pipeline file, or of a sibling
//! `NAME.test.toml` (`orders.toml` → `orders.test.toml`):
//!
//! ```toml
//! [[test]]
//! name = "cancelled orders are dropped"
//! input = """
//! id,status,amount
//! 1,shipped,10.50
//! """                  # in the source's format; or input_file = "fixtures/in.csv"
//! expected = """
//! id,amount
//! 1,10.50
//! """                  # CSV with a header; or expected_file
//! order = "any"        # any (default) | exact
//! dead_letters = 0     # optional: how many input records must be rejected
//! ```
//!
//! The input is decoded as the pipeline's source decodes its files (or,
//! for a Kafka or AMQP source, each line is one message), with its schema
//! and its dead letters, and the SQL runs over it as `input`. Expected
//! values are read as the output column's type, so `10.50` and `10.5`
//! match a decimal or float column; an empty field is a null. Inline
//! texts lose the indentation all their lines share.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use serde::Deserialize;
use sluice_connectors::Registry;
use sluice_connectors::files::FilesSource;
use sluice_engine::batch::InputObject;
use sluice_engine::sink::Sink;
use sluice_engine::source::{Input, SourceConnector};
use sluice_engine::spec::{Component, ConnectorRegistry, Diagnostic, Diagnostics, PipelineSpec, SpecFile};
use sluice_engine::sql;
use sluice_engine::storage::StorageLocation;
use sluice_engine::stream::{Message, Origin};
use toml::Spanned;

use crate::expected::{SHOWN, compare};

/// One `[[test]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestTable {
    name: Spanned<String>,
    input: Option<Spanned<String>>,
    input_file: Option<Spanned<String>>,
    expected: Option<Spanned<String>>,
    expected_file: Option<Spanned<String>>,
    order: Option<Spanned<String>>,
    dead_letters: Option<Spanned<u64>>,
}

/// The `test` array of a file; the rest of a pipeline file is its own.
#[derive(Debug, Deserialize)]
struct TestsOf {
    #[serde(default)]
    test: Vec<Spanned<TestTable>>,
}

/// A test, checked: its input's bytes and file name, and the expected CSV.
#[derive(Debug)]
pub struct TestCase {
    /// Its `name`.
    pub name: String,
    /// `FILE:LINE:COL` of its table, for the report.
    pub place: String,
    /// The same, for a diagnostic.
    at: (PathBuf, usize, usize),
    input: Vec<u8>,
    /// The name the input is read under (its extension says whether it is
    /// compressed).
    input_name: String,
    expected: String,
    exact_order: bool,
    dead_letters: Option<u64>,
}

/// The tests of the pipeline at `path`: its `[[test]]` tables and those of
/// `NAME.test.toml` beside it. Problems in either are reported with their
/// place.
pub fn load_tests(path: &Path) -> Result<Vec<TestCase>, Diagnostics> {
    let mut cases = Vec::new();
    let mut problems = Diagnostics::default();
    let text = std::fs::read_to_string(path).map_err(|e| one_problem(path, format!("cannot read it: {e}")))?;
    let mut files = vec![(SpecFile::new(path, text), true)];
    let sibling = sibling_of(path);
    if sibling.is_file() {
        let text =
            std::fs::read_to_string(&sibling).map_err(|e| one_problem(&sibling, format!("cannot read it: {e}")))?;
        files.push((SpecFile::new(&sibling, text), false));
    }
    for (file, is_pipeline) in &files {
        match parse_tests(file, *is_pipeline) {
            Ok(found) => cases.extend(found),
            Err(found) => problems.extend(found),
        }
    }
    let mut seen = BTreeMap::new();
    for case in &cases {
        if let Some(first) = seen.insert(case.name.clone(), case.place.clone()) {
            problems.0.push(Diagnostic {
                file: case.at.0.clone(),
                line: case.at.1,
                column: case.at.2,
                key_path: "test.name".into(),
                message: format!("\"{}\" names another test too, at {first}; give each test its own name", case.name),
                hint: None,
            });
        }
    }
    match problems.is_empty() {
        true => Ok(cases),
        false => Err(problems),
    }
}

/// `NAME.test.toml` beside `NAME.toml`.
fn sibling_of(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.test.toml"))
}

fn one_problem(path: &Path, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        key_path: "test".into(),
        message,
        hint: None,
    }])
}

/// The tests of one file. A sibling test file holds only `[[test]]`
/// tables; in a pipeline file the other tables are the pipeline's.
fn parse_tests(file: &SpecFile, is_pipeline: bool) -> Result<Vec<TestCase>, Diagnostics> {
    let error_at = |span: Option<Range<usize>>, key: &str, message: String| {
        Diagnostics(vec![file.diagnostic(span.unwrap_or(0..0), key, message, None)])
    };
    let parsed: Result<TestsOf, toml::de::Error> = match is_pipeline {
        true => toml::from_str(file.text()),
        false => toml::from_str::<SiblingFile>(file.text()).map(|sibling| TestsOf { test: sibling.test }),
    };
    let tests = parsed.map_err(|e| error_at(e.span(), "test", e.message().to_string()))?;
    let mut cases = Vec::new();
    let mut problems = Diagnostics::default();
    let base = file.path().parent().map(Path::to_path_buf).unwrap_or_default();
    for table in tests.test {
        let span = table.span();
        let table = table.into_inner();
        let (line, column) = file.locate(span.start);
        let place = format!("{}:{line}:{column}", file.path().display());
        let name = table.name.get_ref().trim().to_string();
        let mut problem = |span: Range<usize>, key: &str, message: &str| {
            problems.0.push(file.diagnostic(span, format!("test.{key}"), message, None));
        };
        if name.is_empty() {
            problem(table.name.span(), "name", "is empty; say what the test checks");
        }
        let input = match (&table.input, &table.input_file) {
            (Some(text), None) => Some((dedent(text.get_ref()).into_bytes(), "input".to_string())),
            (None, Some(relative)) => read_fixture(&base, relative.get_ref())
                .map_err(|message| problem(relative.span(), "input_file", &message))
                .ok(),
            (Some(_), Some(both)) => {
                problem(both.span(), "input_file", "is given with `input`; give one of them");
                None
            }
            (None, None) => {
                problem(span.clone(), "input", "missing: give `input` (text in the source's format) or `input_file`");
                None
            }
        };
        let expected = match (&table.expected, &table.expected_file) {
            (Some(text), None) => Some(dedent(text.get_ref())),
            (None, Some(relative)) => read_fixture(&base, relative.get_ref())
                .and_then(|(bytes, _)| String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string()))
                .map_err(|message| problem(relative.span(), "expected_file", &message))
                .ok(),
            (Some(_), Some(both)) => {
                problem(both.span(), "expected_file", "is given with `expected`; give one of them");
                None
            }
            (None, None) => {
                problem(span.clone(), "expected", "missing: give `expected` (CSV with a header) or `expected_file`");
                None
            }
        };
        let exact_order = match table.order.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("any") => false,
            Some("exact") => true,
            Some(other) => {
                let message = format!("is \"{other}\"; write \"any\" or \"exact\"");
                problem(table.order.as_ref().map(Spanned::span).unwrap_or(span.clone()), "order", &message);
                false
            }
        };
        if let (Some((input, input_name)), Some(expected)) = (input, expected) {
            cases.push(TestCase {
                name,
                place,
                at: (file.path().to_path_buf(), line, column),
                input,
                input_name,
                expected,
                exact_order,
                dead_letters: table.dead_letters.map(Spanned::into_inner),
            });
        }
    }
    match problems.is_empty() {
        true => Ok(cases),
        false => Err(problems),
    }
}

/// `text` without the indentation all its lines share, so that a test
/// may indent its `input` and `expected` under their keys; a text file
/// (`input_file`, `expected_file`) is taken as it is.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(if line.trim().is_empty() { line.trim_start_matches([' ', '\t']) } else { &line[indent..] });
    }
    out
}

/// A `NAME.test.toml`: `[[test]]` tables and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiblingFile {
    #[serde(default)]
    test: Vec<Spanned<TestTable>>,
}

/// The bytes of a fixture file, relative to the test file's folder, and
/// its file name.
fn read_fixture(base: &Path, relative: &str) -> Result<(Vec<u8>, String), String> {
    let path = base.join(relative);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
    Ok((bytes, name))
}

/// What running one test found.
#[derive(Debug)]
pub enum Verdict {
    /// As expected.
    Passed,
    /// Not as expected: what differs, to print.
    Failed(String),
}

/// Runs `case` against the pipeline at `path`.
pub async fn run_test(path: &Path, case: &TestCase) -> anyhow::Result<Verdict> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(&case.input_name), &case.input)?;
    let folder = StorageLocation::resolve(&dir.path().to_string_lossy(), Path::new("/")).map_err(anyhow::Error::msg)?;
    let registry = TestRegistry { folder };
    let spec = sluice_engine::spec::load(path, &registry).map_err(|problems| anyhow::anyhow!("{problems}"))?;
    crate::logging::redact_with(spec.file.clone());
    let ctx = sql::session(spec.concurrency);
    let input = read_input(&spec, &ctx, case).await?;
    let tally = input.tally.clone();
    ctx.register_table("input", input.table)?;
    sluice_engine::lookup::register_all(&spec.tables, &ctx).await?;
    let frame = sql::plan_transform(&ctx, spec.sql.as_deref()).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    let letters = tally.take_rejected();
    tally.finish().await?;
    let rejected = tally.rejected();
    let mut report = String::new();
    if let Some(wanted) = case.dead_letters
        && wanted != rejected
    {
        let _ = writeln!(report, "  dead letters: expected {wanted}, got {rejected}");
        for letter in letters.iter().take(SHOWN) {
            let line = letter.line.map(|n| format!(" line {n}")).unwrap_or_default();
            let _ = writeln!(report, "    {}{line}: {} ({})", letter.source, letter.error, letter.raw.trim_end());
        }
    }
    compare(&schema, &batches, &case.expected, case.exact_order, &mut report)?;
    Ok(match report.is_empty() {
        true => Verdict::Passed,
        false => Verdict::Failed(report),
    })
}

/// The test's input as the pipeline's source decodes it.
async fn read_input(
    spec: &PipelineSpec,
    ctx: &datafusion::prelude::SessionContext,
    case: &TestCase,
) -> anyhow::Result<Input> {
    match &spec.source {
        SourceConnector::Objects(source) => {
            let input = InputObject {
                path: case.input_name.clone(),
                size: case.input.len() as u64,
                last_modified: chrono::Utc::now(),
                ..InputObject::default()
            };
            Ok(source.read(&ctx.state(), &[input]).await?)
        }
        SourceConnector::Stream(source) => {
            let text = String::from_utf8_lossy(&case.input);
            let messages: Vec<Message> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .enumerate()
                .map(|(n, line)| Message {
                    payload: Bytes::from(line.to_string()),
                    origin: Origin::Amqp { queue: "test".into(), message_id: Some(format!("line {}", n + 1)) },
                })
                .collect();
            Ok(source.decode(&messages, ctx.state().config().target_partitions())?)
        }
    }
}

/// The connectors, with a files source reading from the test's folder.
struct TestRegistry {
    folder: StorageLocation,
}

impl ConnectorRegistry for TestRegistry {
    fn source(&self, component: &Component<'_>) -> Result<SourceConnector, Diagnostics> {
        match component.kind() {
            "files" => {
                let source = FilesSource::from_component(component)?
                    .reading_from(self.folder.clone())
                    .map_err(|e| Diagnostics(vec![component.error("url", e.to_string(), None)]))?;
                Ok(SourceConnector::Objects(Arc::new(source)))
            }
            _ => Registry.source(component),
        }
    }

    fn sink(
        &self,
        component: &Component<'_>,
        checkpoint: Option<&StorageLocation>,
    ) -> Result<Arc<dyn Sink>, Diagnostics> {
        Registry.sink(component, checkpoint)
    }

    fn dead_letters(&self, location: &StorageLocation) -> Result<Arc<dyn Sink>, String> {
        Registry.dead_letters(location)
    }

    fn is_stream(&self, kind: &str) -> bool {
        Registry.is_stream(kind)
    }

    fn table(&self, component: &Component<'_>) -> Result<Arc<dyn sluice_engine::source::Source>, Diagnostics> {
        Registry.table(component)
    }
}

/// `sluice test FILE...`: every test of every file; whether all passed.
pub async fn test_command(files: &[PathBuf]) -> anyhow::Result<crate::exit::Exit> {
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    // A test file named by itself (a glob such as pipelines/*.toml takes
    // them too) stands for its pipeline, tested once.
    let mut pipelines: Vec<PathBuf> = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let pipeline = match name.strip_suffix(".test.toml") {
            Some(stem) => path.with_file_name(format!("{stem}.toml")),
            None => path.clone(),
        };
        // `./a.toml` and `a.toml` are one pipeline.
        let same = |known: &PathBuf| match (known.canonicalize(), pipeline.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => *known == pipeline,
        };
        if !pipelines.iter().any(same) {
            pipelines.push(pipeline);
        }
    }
    for path in &pipelines {
        let cases = match crate::load_pipeline(path) {
            Err(problems) => {
                eprintln!("{problems}");
                broken += 1;
                continue;
            }
            Ok(_) => match load_tests(path) {
                Ok(cases) => cases,
                Err(problems) => {
                    eprintln!("{problems}");
                    broken += 1;
                    continue;
                }
            },
        };
        if cases.is_empty() {
            println!("{}: no tests ([[test]] tables in it or in {})", path.display(), sibling_of(path).display());
            continue;
        }
        for case in &cases {
            match run_test(path, case).await {
                Ok(Verdict::Passed) => {
                    passed += 1;
                    println!("ok      {} ({})", case.name, case.place);
                }
                Ok(Verdict::Failed(report)) => {
                    failed += 1;
                    println!("FAILED  {} ({})\n{}", case.name, case.place, report.trim_end());
                }
                Err(error) => {
                    failed += 1;
                    println!("FAILED  {} ({})\n  cannot run it: {error:#}", case.name, case.place);
                }
            }
        }
    }
    let problems = match broken {
        0 => String::new(),
        1 => ", 1 file with problems (above)".into(),
        n => format!(", {n} files with problems (above)"),
    };
    println!("sluice test: {passed} passed, {failed} failed{problems}");
    // A file with problems is the worse news: no test of it could run.
    Ok(match (broken, failed) {
        (0, 0) => crate::exit::Exit::Done,
        (0, _) => crate::exit::Exit::BatchesFailed,
        _ => crate::exit::Exit::Usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_texts_lose_their_common_indentation_only() {
        assert_eq!(dedent("    id,amount\n    1,2\n      3,4\n    "), "id,amount\n1,2\n  3,4\n");
        assert_eq!(dedent("id\n1\n"), "id\n1\n");
        assert_eq!(dedent("\n  a\n\n  b\n"), "\na\n\nb\n");
    }
}
