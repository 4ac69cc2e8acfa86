//! Checks each Parquet input before DataFusion reads it: its footer and
//! metadata must decode, and its columns must fit `[source.schema]`. A
//! file that fails is set aside whole, as one dead letter naming the
//! cause, so that the batch's other files commit; the parquet crate's own
//! footer decoding is never handed a footer that points outside the file.

use arrow::datatypes::{DataType, Schema, SchemaRef};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaDataReader;
use sluice_engine::Result;

/// The last bytes of every Parquet file: metadata length and magic.
const FOOTER: u64 = 8;
/// The magic bytes a Parquet file begins and ends with.
const MAGIC: &[u8; 4] = b"PAR1";

/// The Arrow schema of the Parquet file `meta`, or why it cannot be read
/// (`Ok(Err(cause))`). A store error is `Err`: it may pass, so the batch
/// is tried again instead of setting the file aside.
pub(super) async fn parquet_schema(store: &dyn ObjectStore, meta: &ObjectMeta) -> Result<Result<Schema, String>> {
    let size = meta.size;
    if size < MAGIC.len() as u64 + FOOTER {
        return Ok(Err(format!("not a Parquet file: {size} bytes, too short for its header and footer")));
    }
    let tail = store.get_range(&meta.location, size - FOOTER..size).await?;
    if tail.len() as u64 != FOOTER || &tail[4..] != MAGIC {
        return Ok(Err("not a Parquet file: it does not end with the magic bytes PAR1".into()));
    }
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if length + FOOTER + MAGIC.len() as u64 > size {
        return Ok(Err(format!(
            "corrupt Parquet footer: it gives {length} bytes of metadata in a file of {size} bytes"
        )));
    }
    let start = size - FOOTER - length;
    let bytes = store.get_range(&meta.location, start..size - FOOTER).await?;
    // Corrupt metadata is untrusted input to a decoder: whatever it does
    // with it, the worker goes on.
    let decoded = std::panic::catch_unwind(|| ParquetMetaDataReader::decode_metadata(&bytes));
    let metadata = match decoded {
        Ok(Ok(metadata)) => metadata,
        Ok(Err(error)) => return Ok(Err(format!("corrupt Parquet metadata: {error}"))),
        Err(_) => return Ok(Err("corrupt Parquet metadata: it cannot be decoded".into())),
    };
    let file = metadata.file_metadata();
    Ok(parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|error| format!("the Parquet schema has no Arrow equivalent: {error}")))
}

/// Why the columns of `file` do not fit `declared`, if they do not. A
/// declared column the file lacks is read as NULL; one it has must be of
/// the declared type or one that widens to it without loss.
pub(super) fn misfit(file: &Schema, declared: &SchemaRef) -> Option<String> {
    let wrong: Vec<String> = declared
        .fields()
        .iter()
        .filter_map(|want| {
            let (_, found) = file.column_with_name(want.name())?;
            (!widens_to(found.data_type(), want.data_type())).then(|| {
                format!(
                    "column {} is {} in the file, {} in [source.schema]",
                    want.name(),
                    found.data_type(),
                    want.data_type()
                )
            })
        })
        .collect();
    (!wrong.is_empty()).then(|| format!("the Parquet file does not fit [source.schema]: {}", wrong.join("; ")))
}

/// Whether every value of type `from` is a value of type `to`.
fn widens_to(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let int_width = |t: &DataType| match t {
        Int8 | UInt8 => Some(8),
        Int16 | UInt16 => Some(16),
        Int32 | UInt32 => Some(32),
        Int64 | UInt64 => Some(64),
        _ => None,
    };
    let string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    match (from, to) {
        _ if from == to => true,
        (Dictionary(_, value), _) => widens_to(value, to),
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        _ if string(from) && string(to) => true,
        _ if binary(from) && binary(to) => true,
        _ => match (int_width(from), int_width(to)) {
            (Some(a), Some(b)) if from.is_signed_integer() == to.is_signed_integer() => a <= b,
            (Some(a), Some(b)) => from.is_unsigned_integer() && a < b,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn only_lossless_types_fit() {
        assert!(widens_to(&DataType::Int32, &DataType::Int64));
        assert!(widens_to(&DataType::UInt32, &DataType::Int64));
        assert!(widens_to(&DataType::Utf8View, &DataType::Utf8));
        assert!(!widens_to(&DataType::Utf8, &DataType::Int64));
        assert!(!widens_to(&DataType::Int64, &DataType::Int32));
        let declared = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let file = Schema::new(vec![Field::new("id", DataType::Utf8, true)]);
        assert!(misfit(&file, &declared).is_some_and(|why| why.contains("column id is Utf8")));
        assert_eq!(misfit(&Schema::empty(), &declared), None, "a missing column is NULL");
    }
}
