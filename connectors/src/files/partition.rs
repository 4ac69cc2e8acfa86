//! Hive-style partitioning: rows split by the values of some columns into
//! folders named `column=value/`.
//!
//! A folder name longer than [`MAX_FOLDER_NAME`] bytes cannot be made on
//! common file systems (and is refused by some stores): rows whose value
//! would need one are set apart, for the dead letters, instead of failing
//! the batch.

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use std::collections::HashMap;
use std::sync::Arc;

/// The folder name Hive and Spark use for a NULL partition value.
pub(crate) const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The longest folder name, in bytes, that file systems make (ext4, XFS,
/// APFS, NTFS: 255).
pub(crate) const MAX_FOLDER_NAME: usize = 255;

/// A batch split by partition.
#[derive(Debug, Default)]
pub(crate) struct Split {
    /// `(folder, rows without the partition columns)` for each partition
    /// the batch has rows of, in the order they first appear; the folder
    /// is `""` when not partitioned.
    pub(crate) parts: Vec<(String, RecordBatch)>,
    /// Rows that no folder can hold, whole, with why: one entry a folder.
    pub(crate) unwritable: Vec<(String, RecordBatch)>,
}

/// Splits batches by the values of the partition columns.
#[derive(Debug, Clone)]
pub(crate) struct Partitioner {
    columns: Vec<String>,
}

impl Partitioner {
    pub(crate) fn new(columns: Vec<String>) -> Self {
        Partitioner { columns }
    }

    /// The partition columns, outermost folder first.
    pub(crate) fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether there is any partition column.
    pub(crate) fn is_partitioned(&self) -> bool {
        !self.columns.is_empty()
    }

    /// A message saying what is wrong if `schema` cannot be partitioned.
    pub(crate) fn check(&self, schema: &Schema) -> Result<(), String> {
        for column in &self.columns {
            if schema.field_with_name(column).is_err() {
                let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(format!(
                    "partition column \"{column}\" is not in the transform's output; its columns: {}",
                    known.join(", ")
                ));
            }
        }
        if self.columns.len() >= schema.fields().len() && self.is_partitioned() {
            return Err("every column is a partition column: the files would hold nothing".into());
        }
        Ok(())
    }

    /// The schema of the written files: without the partition columns.
    pub(crate) fn file_schema(&self, schema: &Schema) -> SchemaRef {
        let fields: Vec<_> = schema.fields().iter().filter(|f| !self.columns.contains(f.name())).cloned().collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// The batch's rows by partition folder, and those that no folder can
    /// hold.
    pub(crate) fn split(&self, batch: &RecordBatch) -> Result<Split, ArrowError> {
        if !self.is_partitioned() {
            return Ok(Split { parts: vec![(String::new(), batch.clone())], unwritable: Vec::new() });
        }
        let schema = batch.schema();
        let mut values = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let index = schema.index_of(column)?;
            let as_text = cast(batch.column(index), &DataType::Utf8)?;
            values.push(as_text);
        }
        let texts: Vec<&arrow::array::StringArray> =
            values.iter().map(|array| arrow::array::AsArray::as_string::<i32>(array.as_ref())).collect();

        let mut order: Vec<String> = Vec::new();
        let mut rows: HashMap<String, Vec<u32>> = HashMap::new();
        let mut folder = String::new();
        for row in 0..batch.num_rows() {
            folder.clear();
            for (i, (column, text)) in self.columns.iter().zip(&texts).enumerate() {
                if i > 0 {
                    folder.push('/');
                }
                folder.push_str(&escape(column));
                folder.push('=');
                if text.is_null(row) {
                    folder.push_str(NULL_PARTITION);
                } else {
                    folder.push_str(&escape(text.value(row)));
                }
            }
            match rows.get_mut(folder.as_str()) {
                Some(indices) => indices.push(row as u32),
                None => {
                    order.push(folder.clone());
                    rows.insert(folder.clone(), vec![row as u32]);
                }
            }
        }

        let file_schema = self.file_schema(&schema);
        let keep: Vec<usize> =
            file_schema.fields().iter().map(|f| schema.index_of(f.name())).collect::<Result<_, _>>()?;
        let projected = batch.project(&keep)?;
        let mut split = Split::default();
        for folder in order {
            let indices = UInt32Array::from(rows.remove(&folder).unwrap_or_default());
            match too_long(&folder) {
                None => split.parts.push((folder, take_record_batch(&projected, &indices)?)),
                Some(why) => split.unwritable.push((why, take_record_batch(batch, &indices)?)),
            }
        }
        Ok(split)
    }
}

/// Why no folder can be named `folder` (`a=x/b=y`), if none can.
fn too_long(folder: &str) -> Option<String> {
    let name = folder.split('/').find(|name| name.len() > MAX_FOLDER_NAME)?;
    let (column, _) = name.split_once('=').unwrap_or((name, ""));
    let shown: String = name.chars().take(40).collect();
    Some(format!(
        "the partition folder for column {column} ({shown}...) would be named with {} bytes; a folder name holds at \
         most {MAX_FOLDER_NAME}, so this row cannot be written; shorten the value in [transform] sql (e.g. \
         left({column}, 100)) or partition by another column",
        name.len()
    ))
}

/// Escapes what cannot stand in a folder name, as Hive does.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let needs_escape = c.is_control()
            || matches!(c, '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^');
        if needs_escape {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        return out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn splits_rows_by_value_and_drops_the_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("country", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![Some("FR"), Some("a/b"), Some("FR"), None])),
            ],
        )
        .expect("batch");
        let partitioner = Partitioner::new(vec!["country".into()]);
        let parts = partitioner.split(&batch).expect("splits").parts;
        let folders: Vec<&str> = parts.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(folders, ["country=FR", "country=a%2Fb", "country=__HIVE_DEFAULT_PARTITION__"]);
        let fr = &parts[0].1;
        assert_eq!(fr.num_columns(), 1);
        let ids = fr.column(0).as_any().downcast_ref::<Int64Array>().expect("int64");
        assert_eq!(ids.values(), &[1, 3]);
        assert!(partitioner.check(&schema).is_ok());
        assert!(Partitioner::new(vec!["nope".into()]).check(&schema).is_err());
    }

    #[test]
    fn rows_whose_folder_name_would_be_too_long_are_set_apart_whole() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("tag", DataType::Utf8, true),
        ]));
        let long = "t".repeat(300);
        // 250 slashes escape to 750 bytes.
        let slashes = "/".repeat(250);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![Some("a"), Some(long.as_str()), Some(slashes.as_str()), Some("a")])),
            ],
        )
        .expect("batch");
        let split = Partitioner::new(vec!["tag".into()]).split(&batch).expect("splits");
        assert_eq!(split.parts.len(), 1);
        assert_eq!(split.parts[0].1.num_rows(), 2);
        assert_eq!(split.unwritable.len(), 2);
        let (why, rows) = &split.unwritable[0];
        assert!(why.contains("column tag") && why.contains("304 bytes"), "{why}");
        assert_eq!(rows.num_columns(), 2, "the whole row, partition column included");
    }
}
