//! Inferring the schema of CSV inputs that declare none, from the same
//! records the reader reads: each object's first bytes are cut into whole
//! records by [`CsvRecords`] (quoted newlines, `\r` line ends and unclosed
//! quotes as the reader takes them), and the types are inferred from those
//! records only. Inference over lines or over arbitrary chunks of the
//! object would split a record with a quoted newline and fail a file that
//! the reader reads well.
//!
//! Memory stays bounded: at most [`SAMPLE_BYTES`] of an object are read
//! (more only while its first record is not whole, which the reader has to
//! hold anyway), and only [`SAMPLE_RECORDS`] records over all the objects.

use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::BytesMut;
use object_store::{ObjectMeta, ObjectStore};
use sluice_engine::Result;

use super::streamed::{Body, read_error};
use crate::formats::records::{CsvRecords, RecordFormat, Span};

/// Records looked at, over all the objects of a batch (DataFusion's
/// default).
const SAMPLE_RECORDS: usize = 1000;
/// Bytes of an object read first; twice as many each time until enough
/// records are whole.
const FIRST_READ: usize = 64 << 10;
/// Bytes of an object read at most, once it holds a whole record.
const SAMPLE_BYTES: usize = 8 << 20;

/// The schema of the CSV `objects`, inferred from their first records in
/// order: the column names from the first header (or `column_1`, ... when
/// `csv` has none), a type for each column that every sampled value fits
/// (`Utf8` when they disagree or when no value was seen, so that a later
/// value is never lost to a `Null` column). Columns are by position, as the
/// reader takes them.
pub(crate) async fn csv_schema(store: &dyn ObjectStore, objects: &[ObjectMeta], csv: CsvRecords) -> Result<Schema> {
    let mut sample = Vec::new();
    let (mut records, mut has_header) = (0, false);
    for object in objects {
        if records >= SAMPLE_RECORDS {
            break;
        }
        let wanted = SAMPLE_RECORDS - records + usize::from(csv.header);
        let (bytes, spans) = first_records(store, object, csv, wanted).await?;
        let mut spans = spans.iter();
        if csv.header {
            // Each object has its header; the first one names the columns.
            let Some(header) = spans.next() else { continue };
            if !has_header {
                push_record(&mut sample, &bytes, header);
                has_header = true;
            }
        }
        for span in spans.take(SAMPLE_RECORDS - records) {
            push_record(&mut sample, &bytes, span);
            records += 1;
        }
    }
    let format = Format::default().with_header(csv.header).with_delimiter(csv.delimiter).with_truncated_rows(true);
    let (schema, _) = format.infer_schema(sample.as_slice(), None)?;
    Ok(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Null => Field::new(field.name(), DataType::Utf8, true),
                _ => field.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Appends a record's bytes, ended by a line end.
fn push_record(sample: &mut Vec<u8>, bytes: &[u8], span: &Span) {
    sample.extend_from_slice(&bytes[span.offset..span.end]);
    if !sample.ends_with(b"\n") && !sample.ends_with(b"\r") {
        sample.push(b'\n');
    }
}

/// The first bytes of `object` (decompressed) and the whole records in
/// them, its header included: `wanted` of them, or as many as
/// [`SAMPLE_BYTES`] hold, but always the first one (and the one after a
/// header) unless the object ends before.
async fn first_records(
    store: &dyn ObjectStore,
    object: &ObjectMeta,
    csv: CsvRecords,
    wanted: usize,
) -> Result<(BytesMut, Vec<Span>)> {
    let name = object.location.as_ref();
    let records = CsvRecords { header: false, ..csv };
    let least = 1 + usize::from(csv.header);
    let mut body = Body::open(store, name, &object.location, 0..object.size).await?;
    let (mut buffer, mut want) = (BytesMut::new(), FIRST_READ);
    loop {
        let ended = body.fill(&mut buffer, want).await.map_err(|e| read_error(name, e))?;
        let spans = if ended {
            records.split_end(&buffer).0
        } else {
            // The last record may go on after these bytes.
            let mut spans = records.split(&buffer);
            spans.pop();
            spans
        };
        if ended || spans.len() >= wanted || (spans.len() >= least && buffer.len() >= SAMPLE_BYTES) {
            return Ok((buffer, spans));
        }
        want = want.max(buffer.len()) * 2;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    async fn infer(objects: &[(&str, Vec<u8>)], header: bool) -> Schema {
        let store = Arc::new(InMemory::new());
        let mut metas = Vec::new();
        for (name, bytes) in objects {
            store.put(&Path::from(*name), PutPayload::from(bytes.clone())).await.expect("put");
            metas.push(store.head(&Path::from(*name)).await.expect("head"));
        }
        csv_schema(store.as_ref(), &metas, CsvRecords { header, delimiter: b',' }).await.expect("inferred")
    }

    fn types(schema: &Schema) -> Vec<(String, DataType)> {
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect()
    }

    /// Orders with a quoted newline in every third one, over `rows` rows.
    fn orders(rows: usize) -> String {
        let mut text = String::from("id,note,amount\n");
        for id in 0..rows {
            let note = if id % 3 == 0 { format!("\"line\nbreak {id}\"") } else { format!("plain {id}") };
            text.push_str(&format!("{id},{note},{id}.5\n"));
        }
        text
    }

    #[tokio::test]
    async fn quoted_newlines_across_read_boundaries_infer_the_reader_s_columns() {
        let text = orders(20_000);
        assert!(text.len() > 4 * FIRST_READ);
        let expected = [
            ("id".to_string(), DataType::Int64),
            ("note".to_string(), DataType::Utf8),
            ("amount".to_string(), DataType::Float64),
        ];
        assert_eq!(types(&infer(&[("a.csv", text.clone().into_bytes())], true).await), expected);

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(text.as_bytes()).expect("gzip");
        let gz = gzip.finish().expect("gzip");
        assert_eq!(types(&infer(&[("a.csv.gz", gz)], true).await), expected, "decompressed on the way");
        let zst = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        assert_eq!(types(&infer(&[("a.csv.zst", zst)], true).await), expected);
    }

    #[tokio::test]
    async fn a_first_record_longer_than_a_read_is_read_whole() {
        let long = "x".repeat(3 * FIRST_READ);
        let text = format!("id,note\r1,\"{long}\r{long}\"\r2,b\r");
        let schema = infer(&[("a.csv", text.into_bytes())], true).await;
        assert_eq!(types(&schema), [("id".to_string(), DataType::Int64), ("note".to_string(), DataType::Utf8)]);
    }

    #[tokio::test]
    async fn later_objects_add_records_not_headers_and_empty_columns_are_text() {
        let schema =
            infer(&[("a.csv", b"id,v,e\n1,2,\n".to_vec()), ("b.csv", b"id,v,e\n2,2.5,\n".to_vec())], true).await;
        let expected = [("id", DataType::Int64), ("v", DataType::Float64), ("e", DataType::Utf8)];
        assert_eq!(types(&schema), expected.map(|(n, t)| (n.to_string(), t)));
        let schema = infer(&[("a.csv", b"1,x\n2,y".to_vec())], false).await;
        assert_eq!(types(&schema), [("column_1".into(), DataType::Int64), ("column_2".into(), DataType::Utf8)]);
    }

    #[tokio::test]
    async fn an_unclosed_quote_does_not_swallow_the_records_inferred_from() {
        let schema = infer(&[("a.csv", b"id,name\n1,\"abc\n2,def\n".to_vec())], true).await;
        assert_eq!(types(&schema), [("id".to_string(), DataType::Int64), ("name".to_string(), DataType::Utf8)]);
    }
}
