//! Floating-point values too large for their type. Arrow's parsers read
//! `1e309` into a `float64` as infinity, silently: a number that was
//! written in digits would come out as a different value. Such a value is a
//! malformed record here (a dead letter), while the spellings that name an
//! infinity on purpose (`inf`, `-inf`, `infinity`, any case) are read as
//! the IEEE values they name, as `NaN` is.
//!
//! A decoded batch is only looked at again when one of its float columns
//! holds an infinity: then the same records are decoded once more with
//! those columns as text, and each infinite value's text decides.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Schema, SchemaRef};
use arrow::error::ArrowError;

/// `decoded`, unless one of its float values is infinite without its text
/// naming an infinity; `decode` decodes the same records with the schema
/// it is given (the float columns as text).
pub(crate) fn reject_overflow(
    schema: &SchemaRef,
    decoded: Option<RecordBatch>,
    decode: impl FnOnce(&SchemaRef) -> Result<Option<RecordBatch>, ArrowError>,
) -> Result<Option<RecordBatch>, ArrowError> {
    let Some(batch) = decoded else { return Ok(None) };
    let infinite: Vec<usize> = (0..batch.num_columns()).filter(|&i| has_infinity(batch.column(i))).collect();
    if infinite.is_empty() {
        return Ok(Some(batch));
    }
    let as_text = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| match infinite.contains(&i) {
                true => Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8)),
                false => field.clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let Some(text) = decode(&as_text)? else { return Ok(Some(batch)) };
    for &column in &infinite {
        let (values, texts) = (batch.column(column), text.column(column).as_string::<i32>());
        for row in 0..values.len().min(texts.len()) {
            if values.is_valid(row) && is_infinite(values, row) && !names_infinity(texts.value(row)) {
                return Err(ArrowError::ParseError(format!(
                    "Error while parsing value '{}' as type '{}' for column {}: the number is out of its range \
                     (write inf or -inf for an infinity)",
                    texts.value(row),
                    values.data_type(),
                    schema.field(column).name()
                )));
            }
        }
    }
    Ok(Some(batch))
}

/// Whether a float column holds an infinity (or a null slot that reads as
/// one: the check of the text looks at valid values only).
fn has_infinity(column: &ArrayRef) -> bool {
    match column.data_type() {
        DataType::Float64 => column.as_primitive::<Float64Type>().values().iter().any(|v| v.is_infinite()),
        DataType::Float32 => column.as_primitive::<Float32Type>().values().iter().any(|v| v.is_infinite()),
        _ => false,
    }
}

fn is_infinite(column: &ArrayRef, row: usize) -> bool {
    match column.data_type() {
        DataType::Float64 => column.as_primitive::<Float64Type>().value(row).is_infinite(),
        DataType::Float32 => column.as_primitive::<Float32Type>().value(row).is_infinite(),
        _ => false,
    }
}

/// Whether `text` spells an infinity, rather than a number too large.
fn names_infinity(text: &str) -> bool {
    let unsigned = text.trim().trim_start_matches(['+', '-']);
    unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_spellings_of_infinity_name_one() {
        for text in ["inf", "-inf", "+INF", "Infinity", "-infinity"] {
            assert!(names_infinity(text), "{text}");
        }
        for text in ["1e309", "-1e400", "179769313486231570000000000000000000000000000000e400", "nan", "in"] {
            assert!(!names_infinity(text), "{text}");
        }
    }
}
