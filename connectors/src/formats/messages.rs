//! Stream messages as Arrow: one record a message, as JSON, CSV (one row,
//! no header) or raw bytes. Every message that does not parse or fit the
//! schema comes back as a [`Rejected`] that names its partition and
//! offset, or its message id.

use std::sync::{Arc, Mutex};

use arrow::array::{BinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use serde::Deserialize;
use sluice_engine::source::{Input, ReadTally, Rejected};
use sluice_engine::spec::schema::SchemaSpec;
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::stream::{Message, Origin};
use sluice_engine::{Error, Result};
use toml::Spanned;

use super::records::{CsvRecords, JsonLines, RecordFormat, Span, raw_parts, sort_spans};

/// The column a `raw` message's body is in.
pub(crate) const RAW_COLUMN: &str = "value";

/// `[source] format` of a stream: how each message's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// One JSON object a message.
    #[default]
    Json,
    /// One CSV row a message, without a header: the columns of
    /// `[source.schema]`, in order.
    Csv,
    /// The body as it is, in the binary column `value`.
    Raw,
}

/// Turns messages into the table `input`, with the schema declared or
/// inferred from the first micro-batch (and kept for the rest of the run).
#[derive(Debug)]
pub(crate) struct MessageDecoder {
    format: MessageFormat,
    delimiter: u8,
    declared: Option<SchemaRef>,
    inferred: Mutex<Option<SchemaRef>>,
}

impl MessageDecoder {
    /// Reads `format`, `delimiter` and `schema` of a stream's `[source]`,
    /// adding every problem to `problems`.
    pub(crate) fn from_config(
        component: &Component<'_>,
        format: Option<Spanned<MessageFormat>>,
        delimiter: Option<Spanned<String>>,
        schema: Option<Spanned<SchemaSpec>>,
        problems: &mut Diagnostics,
    ) -> MessageDecoder {
        let format = format.map_or(MessageFormat::Json, |f| *f.get_ref());
        let delimiter = match &delimiter {
            Some(_) if format != MessageFormat::Csv => {
                problems.0.push(component.error("delimiter", "applies to format = \"csv\" only", None));
                b','
            }
            Some(d) if d.get_ref().len() == 1 => d.get_ref().as_bytes()[0],
            Some(d) => {
                problems.0.push(component.error(
                    "delimiter",
                    format!("must be one ASCII character, not \"{}\"", d.get_ref()),
                    Some("for example delimiter = \";\"".into()),
                ));
                b','
            }
            None => b',',
        };
        let declared = match (&schema, format) {
            (Some(_), MessageFormat::Raw) => {
                problems.0.push(component.error(
                    "schema",
                    "raw messages have one column, `value` (their bytes): there is no schema to declare",
                    Some("remove [source.schema], or read the messages as format = \"json\" or \"csv\"".into()),
                ));
                None
            }
            (Some(schema), _) => schema
                .get_ref()
                .to_arrow(component.file(), &format!("{}.schema", component.key()))
                .map_err(|found| problems.extend(found))
                .ok(),
            (None, MessageFormat::Raw) => Some(raw_schema()),
            (None, MessageFormat::Csv) => {
                problems.0.push(component.error(
                    "format",
                    "csv messages have no header: their columns must be declared",
                    Some("add [source.schema] with each column and its type, in order".into()),
                ));
                None
            }
            (None, MessageFormat::Json) => None,
        };
        MessageDecoder { format, delimiter, declared, inferred: Mutex::new(None) }
    }

    /// The declared schema (raw messages: the `value` column).
    pub(crate) fn declared_schema(&self) -> Option<SchemaRef> {
        self.declared.clone()
    }

    /// `(key, value)` lines for `sluice explain`.
    pub(crate) fn describe(&self, lines: &mut Vec<(&'static str, String)>) {
        lines.push(("format", format!("{:?}", self.format).to_lowercase()));
        if self.format == MessageFormat::Csv {
            lines.push(("delimiter", format!("{:?}", self.delimiter as char)));
        }
        let schema = match &self.declared {
            Some(schema) => {
                schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
            }
            None => "inferred from the first micro-batch of each run".into(),
        };
        lines.push(("schema", schema));
    }

    /// The messages as a table, and those that do not fit.
    pub(crate) fn decode(&self, messages: &[Message], threads: usize) -> Result<Input> {
        if self.format == MessageFormat::Raw {
            let values = BinaryArray::from_iter_values(messages.iter().map(|m| m.payload.as_ref()));
            let schema = raw_schema();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)])?;
            return Ok(Input { table: memory_table(schema, vec![batch], threads)?, tally: ReadTally::default() });
        }
        let schema = self.schema_for(messages)?;
        // The bodies end to end, each ended by a newline, each its own span.
        let mut bytes = Vec::with_capacity(messages.iter().map(|m| m.payload.len() + 1).sum());
        let mut spans = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let offset = bytes.len();
            bytes.extend_from_slice(&message.payload);
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            spans.push(Span { offset, end: bytes.len(), line: index as u64 });
        }
        let csv = CsvRecords { header: false, delimiter: self.delimiter };
        let format: &dyn RecordFormat = match self.format {
            MessageFormat::Csv => &csv,
            _ => &JsonLines,
        };
        let (good, bad) = sort_spans(format, &schema, &bytes, &spans, threads);
        let rejected = bad
            .into_iter()
            .map(|(span, error)| {
                let message = &messages[span.line as usize];
                rejected(message, error)
            })
            .collect();
        Ok(Input { table: memory_table(schema, good, threads)?, tally: ReadTally::of(rejected) })
    }

    /// The declared schema, or the one inferred from the first micro-batch
    /// this process decoded.
    fn schema_for(&self, messages: &[Message]) -> Result<SchemaRef> {
        if let Some(schema) = &self.declared {
            return Ok(schema.clone());
        }
        let mut inferred = self.inferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(schema) = inferred.as_ref() {
            return Ok(schema.clone());
        }
        // Messages that are not JSON objects are left out here; decoding
        // sets them aside.
        let values = messages
            .iter()
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .filter(serde_json::Value::is_object)
            .map(Ok);
        let schema = arrow::json::reader::infer_json_schema_from_iterator(values)?;
        if schema.fields().is_empty() {
            return Err(Error::Config(
                "no message of the first micro-batch is a JSON object with fields, so no schema can be inferred; \
                 declare [source.schema]"
                    .into(),
            ));
        }
        tracing::warn!(
            "no [source.schema]: columns inferred from the first micro-batch ({}); declare them, since a later \
             run may infer other types",
            schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
        );
        let schema = Arc::new(schema);
        *inferred = Some(schema.clone());
        Ok(schema)
    }
}

fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(RAW_COLUMN, DataType::Binary, false)]))
}

/// The dead letter of a message: where it came from, why, and its body.
pub(crate) fn rejected(message: &Message, error: String) -> Rejected {
    let (raw, raw_base64) = raw_parts(&message.payload);
    match &message.origin {
        Origin::Kafka { topic, partition, offset } => Rejected {
            source: topic.clone(),
            line: None,
            offset: Some(*offset as u64),
            partition: Some(*partition),
            message_id: None,
            error,
            raw,
            raw_base64,
        },
        Origin::Amqp { queue, message_id } => Rejected {
            source: queue.clone(),
            line: None,
            offset: None,
            partition: None,
            message_id: message_id.clone(),
            error,
            raw,
            raw_base64,
        },
    }
}

/// A table over `batches` with a partition per thread, so that the SQL
/// runs on all of them.
pub(crate) fn memory_table(schema: SchemaRef, batches: Vec<RecordBatch>, threads: usize) -> Result<Arc<MemTable>> {
    let partitions = threads.clamp(1, batches.len().max(1));
    let per_partition = batches.len().div_ceil(partitions).max(1);
    let partitions: Vec<Vec<RecordBatch>> = batches.chunks(per_partition).map(<[RecordBatch]>::to_vec).collect();
    let partitions = if partitions.is_empty() { vec![Vec::new()] } else { partitions };
    Ok(Arc::new(MemTable::try_new(schema, partitions)?))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use bytes::Bytes;

    use super::*;

    fn kafka(offset: i64, body: &str) -> Message {
        Message {
            payload: Bytes::from(body.to_string()),
            origin: Origin::Kafka { topic: "orders".into(), partition: 2, offset },
        }
    }

    fn decoder(format: MessageFormat, declared: Option<SchemaRef>) -> MessageDecoder {
        MessageDecoder { format, delimiter: b',', declared, inferred: Mutex::new(None) }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("country", DataType::Utf8, true),
        ]))
    }

    async fn ids(input: &Input) -> Vec<i64> {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("input", input.table.clone()).expect("registers");
        let batches = ctx.sql("SELECT id FROM input ORDER BY id").await.expect("plans").collect().await.expect("runs");
        batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().expect("int64").clone();
                (0..ids.len()).map(move |i| ids.value(i))
            })
            .collect()
    }

    #[tokio::test]
    async fn json_messages_that_do_not_fit_are_set_aside_with_partition_and_offset() {
        let messages = vec![
            kafka(10, r#"{"id": 1, "country": "FR"}"#),
            kafka(11, "{\n  \"id\": 2,\n  \"country\": \"DE\"\n}"),
            kafka(12, "not json"),
            kafka(13, r#"{"id": 1.5}"#),
            kafka(14, ""),
            kafka(15, r#"{"id": 3}"#),
        ];
        let input = decoder(MessageFormat::Json, Some(schema())).decode(&messages, 2).expect("decodes");
        assert_eq!(ids(&input).await, [1, 2, 3], "a message may span lines");
        let rejected = input.tally.take_rejected();
        let found: Vec<(Option<i32>, Option<u64>, &str)> =
            rejected.iter().map(|r| (r.partition, r.offset, r.raw.as_str())).collect();
        assert_eq!(
            found,
            [(Some(2), Some(12), "not json"), (Some(2), Some(13), r#"{"id": 1.5}"#), (Some(2), Some(14), "")]
        );
        assert!(rejected.iter().all(|r| r.source == "orders" && r.line.is_none()));
    }

    #[tokio::test]
    async fn csv_messages_are_one_row_each() {
        let amqp = |id: Option<&str>, body: &str| Message {
            payload: Bytes::from(body.to_string()),
            origin: Origin::Amqp { queue: "q".into(), message_id: id.map(String::from) },
        };
        let messages = vec![
            amqp(Some("a"), "1,FR"),
            amqp(Some("b"), "2,DE\n3,US"),
            amqp(None, "x,JP"),
            amqp(Some("d"), "4,\"N\nL\""),
        ];
        let input = decoder(MessageFormat::Csv, Some(schema())).decode(&messages, 1).expect("decodes");
        assert_eq!(ids(&input).await, [1, 4]);
        let rejected = input.tally.take_rejected();
        let found: Vec<(Option<&str>, &str)> =
            rejected.iter().map(|r| (r.message_id.as_deref(), r.error.as_str())).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], (Some("b"), "decoded into 2 rows instead of one"));
        assert_eq!(found[1].0, None);
    }

    #[tokio::test]
    async fn the_schema_is_inferred_once_from_the_first_micro_batch() {
        let decoder = decoder(MessageFormat::Json, None);
        let first = decoder.decode(&[kafka(0, r#"{"id": 7, "country": "FR"}"#), kafka(1, "[1]")], 1).expect("decodes");
        assert_eq!(ids(&first).await, [7]);
        assert_eq!(first.tally.take_rejected().len(), 1, "an array is not a record");
        let second = decoder.decode(&[kafka(2, r#"{"id": "eight"}"#)], 1).expect("decodes");
        assert_eq!(second.tally.take_rejected().len(), 1, "the first batch's types hold");
        assert!(decoder.decode(&[kafka(0, "1")], 1).is_ok(), "inferred once, kept");
        let nothing =
            MessageDecoder { format: MessageFormat::Json, delimiter: b',', declared: None, inferred: Mutex::new(None) };
        assert!(matches!(nothing.decode(&[kafka(0, "1")], 1), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn raw_messages_keep_their_bytes() {
        let input = decoder(MessageFormat::Raw, None).decode(&[kafka(0, "\u{0}\u{1}anything")], 1).expect("decodes");
        assert!(input.tally.take_rejected().is_empty());
        assert_eq!(input.table.schema().field(0).name(), RAW_COLUMN);
    }
}
