//! `sluice test`'s comparison: a test's output against its expected CSV,
//! each expected value read as the output column's type.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Rows of a difference shown, at most, each way.
pub(crate) const SHOWN: usize = 20;

/// Compares the output with the expected CSV, writing what differs into
/// `report`.
pub(crate) fn compare(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    expected: &str,
    exact_order: bool,
    report: &mut String,
) -> anyhow::Result<()> {
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let (header, rows) = read_expected(expected)?;
    if header != columns {
        let _ = writeln!(report, "  columns: expected {}, got {}", header.join(","), columns.join(","));
        return Ok(());
    }
    let actual = rows_of(batches)?;
    let mut expected_rows = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        if row.len() != columns.len() {
            let _ = writeln!(report, "  expected row {} has {} values, not {}", n + 1, row.len(), columns.len());
            return Ok(());
        }
    }
    // Each expected column read as the output column's type, then shown
    // as the output is.
    let mut typed: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
    for (c, field) in schema.fields().iter().enumerate() {
        let strings: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|row| Some(row[c].as_str()).filter(|v| !v.is_empty())).collect::<Vec<_>>(),
        ));
        let cast = match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(strings.clone()),
            other => cast_with_options(&strings, other, &CastOptions { safe: false, ..CastOptions::default() }),
        };
        match cast {
            Ok(array) => typed[c] = shown(&array)?,
            Err(error) => {
                let _ = writeln!(report, "  expected column {} is not {}: {error}", field.name(), field.data_type());
                return Ok(());
            }
        }
    }
    for r in 0..rows.len() {
        expected_rows.push(typed.iter().map(|column| column[r].clone()).collect::<Vec<_>>());
    }
    diff(&columns, expected_rows, actual, exact_order, report);
    Ok(())
}

/// The header and rows of the expected CSV.
fn read_expected(text: &str) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.trim_start().as_bytes());
    let header = reader.headers()?.iter().map(|h| h.trim().to_string()).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        rows.push(record?.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

/// Each value of `array` as the output shows it; a null is empty, as a
/// CSV sink writes it.
fn shown(array: &ArrayRef) -> anyhow::Result<Vec<String>> {
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
    Ok((0..array.len())
        .map(|i| match array.is_null(i) {
            true => String::new(),
            false => formatter.value(i).to_string(),
        })
        .collect())
}

/// The output's rows, each value shown.
fn rows_of(batches: &[RecordBatch]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<Vec<String>> = batch.columns().iter().map(shown).collect::<anyhow::Result<_>>()?;
        for r in 0..batch.num_rows() {
            rows.push(columns.iter().map(|column| column[r].clone()).collect());
        }
    }
    Ok(rows)
}

/// Writes the rows expected and not produced (`-`) and produced and not
/// expected (`+`); with an exact order, the first row out of place.
fn diff(columns: &[String], expected: Vec<Vec<String>>, actual: Vec<Vec<String>>, exact: bool, report: &mut String) {
    let line = |row: &[String]| row.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(",");
    let mut left: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for row in &expected {
        *left.entry(row.clone()).or_default() += 1;
    }
    let mut unexpected = Vec::new();
    for row in &actual {
        match left.get_mut(row) {
            Some(count) if *count > 0 => *count -= 1,
            _ => unexpected.push(row.clone()),
        }
    }
    let missing: Vec<Vec<String>> = left.into_iter().flat_map(|(row, count)| std::iter::repeat_n(row, count)).collect();
    if missing.is_empty() && unexpected.is_empty() {
        if exact && let Some(at) = expected.iter().zip(&actual).position(|(e, a)| e != a) {
            let _ =
                writeln!(report, "  the rows are the expected ones, not in the expected order (order = \"exact\"):");
            let _ = writeln!(report, "    row {}, expected: {}", at + 1, line(&expected[at]));
            let _ = writeln!(report, "    row {}, produced: {}", at + 1, line(&actual[at]));
        }
        return;
    }
    let _ = writeln!(
        report,
        "  {} rows expected, {} produced; {} expected and not produced (-), {} produced and not expected (+):",
        expected.len(),
        actual.len(),
        missing.len(),
        unexpected.len()
    );
    let _ = writeln!(report, "    {}", columns.join(","));
    for row in missing.iter().take(SHOWN) {
        let _ = writeln!(report, "  - {}", line(row));
    }
    for row in unexpected.iter().take(SHOWN) {
        let _ = writeln!(report, "  + {}", line(row));
    }
    if missing.len() > SHOWN || unexpected.len() > SHOWN {
        let _ = writeln!(report, "    (the first {SHOWN} of each shown)");
    }
}

/// A value as a CSV field: quoted when it holds a comma, quote or line end.
fn csv_field(value: &str) -> String {
    match value.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", value.replace('"', "\"\"")),
        false => value.to_string(),
    }
}
