//! The outbox of the broker sinks (`amqp`, `kafka`): where a batch's rows
//! wait, below the checkpoint location, between its attempt and the
//! publish that follows its commit.
//!
//! ```text
//! stage:   rows ─► <checkpoint>/outbox/<token>.arrow          (Arrow IPC; nothing sent yet)
//! commit:  log: committed{staged: token}
//! publish: read <token>.arrow ─► one message a row, id <batch id>-<row> ─► broker confirms ─► delete it
//! ```
//!
//! A crash during the publish leaves the file, and the next run publishes
//! it again from the start: a message may arrive twice, always with the
//! same id, so that consumers can drop the second (at least once, with
//! stable ids). A staged file is the same rows whichever attempt reads it,
//! so the ids never change meaning.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_engine::sink::{Attempt, OutputObject, Sink, Staged};
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::storage::StorageLocation;
use sluice_engine::txn::batch_of_token;
use sluice_engine::{Error, Result};

/// Where staged rows of broker sinks go, below the checkpoint location.
const OUTBOX: &str = "outbox";

/// One message to publish: a row as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutMessage {
    /// `<batch id>-<row number>`, the same on every publish of the batch.
    pub(crate) id: String,
    /// The key column's value, as text.
    pub(crate) key: Option<String>,
    /// The row as a JSON object.
    pub(crate) body: Vec<u8>,
}

/// Staged rows of one sink, below `<checkpoint>/outbox/`.
#[derive(Debug)]
pub(crate) struct Outbox {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl Outbox {
    /// The outbox below `checkpoint`.
    pub(crate) fn new(checkpoint: &StorageLocation) -> Result<Self> {
        let (store, prefix) = checkpoint.join(OUTBOX).open()?;
        Ok(Outbox { store, prefix })
    }

    /// The outbox of the `[sink]` in `component`, below `[checkpoint] url`,
    /// which a broker sink cannot do without; the problem is added to
    /// `problems` if there is none.
    pub(crate) fn of_sink(
        component: &Component<'_>,
        checkpoint: Option<&StorageLocation>,
        problems: &mut Diagnostics,
    ) -> Option<Self> {
        let Some(checkpoint) = checkpoint else {
            problems.0.push(component.error(
                "type",
                format!(
                    "a sink of type \"{}\" keeps its checkpoint log and the rows waiting to be sent in \
                     [checkpoint] url",
                    component.kind()
                ),
                Some("add [checkpoint] url = \"<a folder or bucket URL>\"".into()),
            ));
            return None;
        };
        Outbox::new(checkpoint).map_err(|e| problems.0.push(component.error("type", e.to_string(), None))).ok()
    }

    fn path(&self, token: &str) -> Path {
        self.prefix.clone().join(format!("{token}.arrow"))
    }

    /// Writes every row of `data` as the attempt `token`'s staged rows;
    /// `target` names where they will be published.
    pub(crate) async fn stage(&self, token: &str, target: &str, data: SendableRecordBatchStream) -> Result<Staged> {
        let schema = data.schema();
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        let mut bytes = Vec::new();
        let mut writer = FileWriter::try_new(&mut bytes, &schema)?;
        let mut rows = 0;
        for batch in &batches {
            rows += batch.num_rows() as u64;
            writer.write(batch)?;
        }
        writer.finish()?;
        drop(writer);
        let size = bytes.len() as u64;
        self.store.put(&self.path(token), PutPayload::from(bytes)).await?;
        Ok(Staged {
            token: token.to_string(),
            outputs: vec![OutputObject { path: target.to_string(), rows, bytes: size }],
        })
    }

    /// The staged rows of `token` as messages, or `None` once published.
    pub(crate) async fn messages(
        &self,
        token: &str,
        batch_id: &str,
        key: Option<&str>,
    ) -> Result<Option<Vec<OutMessage>>> {
        let bytes = match self.store.get(&self.path(token)).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        let mut messages = Vec::new();
        for batch in reader {
            let batch = batch?;
            let keys = match key {
                Some(column) => Some(key_texts(&batch, column)?),
                None => None,
            };
            for (row, body) in json_rows(&batch)?.into_iter().enumerate() {
                let key = keys.as_ref().and_then(|keys| keys[row].clone());
                messages.push(OutMessage { id: format!("{batch_id}-{}", messages.len()), key, body });
            }
        }
        Ok(Some(messages))
    }

    /// Removes the staged rows of `token`: published, or never to be.
    pub(crate) async fn remove(&self, token: &str) -> Result<()> {
        match self.store.delete(&self.path(token)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Tokens with staged rows.
    pub(crate) async fn tokens(&self) -> Result<Vec<String>> {
        let listed: Vec<_> = self.store.list(Some(&self.prefix)).try_collect().await?;
        let mut tokens: Vec<String> = listed
            .into_iter()
            .filter_map(|meta| meta.location.filename()?.strip_suffix(".arrow").map(String::from))
            .collect();
        tokens.sort();
        Ok(tokens)
    }
}

/// Whether rows of `schema` can be published with `key` as key column.
pub(crate) fn check_key(schema: &Schema, key: Option<&str>) -> std::result::Result<(), String> {
    match key {
        Some(column) if schema.field_with_name(column).is_err() => {
            let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(format!("key column \"{column}\" is not in the transform's output; its columns: {}", known.join(", ")))
        }
        _ => Ok(()),
    }
}

/// Each row of `batch` as a JSON object (NULL columns left out).
fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut encoded = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut encoded);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    // JSON escapes newlines inside strings: each line is one row.
    Ok(encoded.split(|b| *b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect())
}

/// The values of `column` as text, one per row.
fn key_texts(batch: &RecordBatch, column: &str) -> Result<Vec<Option<String>>> {
    let index = batch.schema().index_of(column)?;
    let texts = cast(batch.column(index), &DataType::Utf8)?;
    let texts = arrow::array::AsArray::as_string::<i32>(texts.as_ref());
    Ok((0..texts.len()).map(|row| (!texts.is_null(row)).then(|| texts.value(row).to_string())).collect())
}

/// Runs `sends` (one a message), `in_flight` at a time, failing on the
/// first that the broker does not confirm.
pub(crate) async fn send_all<Fut>(sends: Vec<Fut>, in_flight: usize) -> Result<()>
where
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut sending = futures::stream::iter(sends).buffer_unordered(in_flight.max(1));
    while let Some(sent) = sending.next().await {
        sent?;
    }
    Ok(())
}

/// What differs between the broker sinks: where the rows go and how a
/// message is sent. Staging, publishing after the commit and re-driving
/// after a crash are [`OutboxSink`]'s.
#[async_trait]
pub(crate) trait Publisher: Send + Sync + fmt::Debug {
    /// The topic, queue or exchange the rows go to: the staged output's name.
    fn target(&self) -> &str;

    /// The column whose value is each message's key, if there is one.
    fn key(&self) -> Option<&str> {
        None
    }

    /// Sends every message and returns once the broker has them all.
    async fn send(&self, messages: &[OutMessage]) -> Result<()>;

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    fn describe(&self) -> Vec<(&'static str, String)>;
}

/// A broker sink: rows staged in the outbox, published by `P` once the
/// batch is committed, at least once with stable ids.
#[derive(Debug)]
pub(crate) struct OutboxSink<P> {
    outbox: Outbox,
    publisher: P,
}

impl<P: Publisher> OutboxSink<P> {
    pub(crate) fn new(outbox: Outbox, publisher: P) -> Self {
        OutboxSink { outbox, publisher }
    }
}

#[async_trait]
impl<P: Publisher + 'static> Sink for OutboxSink<P> {
    fn check_schema(&self, schema: &Schema) -> std::result::Result<(), String> {
        check_key(schema, self.publisher.key())
    }

    async fn stage(&self, attempt: &Attempt, data: SendableRecordBatchStream) -> Result<Staged> {
        self.check_schema(&data.schema()).map_err(Error::Config)?;
        self.outbox.stage(&attempt.token, self.publisher.target(), data).await
    }

    async fn publish(&self, staged: &Staged) -> Result<()> {
        let batch_id = batch_of_token(&staged.token).map(|id| id.to_string()).unwrap_or_default();
        let Some(messages) = self.outbox.messages(&staged.token, &batch_id, self.publisher.key()).await? else {
            // Published already.
            return Ok(());
        };
        self.publisher.send(&messages).await?;
        sluice_engine::failpoint::hit("during_publish");
        self.outbox.remove(&staged.token).await
    }

    async fn discard(&self, token: &str) -> Result<()> {
        self.outbox.remove(token).await
    }

    async fn staged_tokens(&self) -> Result<Vec<String>> {
        self.outbox.tokens().await
    }

    fn default_checkpoint(&self) -> Option<StorageLocation> {
        None
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        self.publisher.describe()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;
    use datafusion::physical_plan::memory::MemoryStream;

    use super::*;

    #[tokio::test]
    async fn staged_rows_become_messages_with_stable_ids_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = StorageLocation::resolve(dir.path().to_str().expect("utf-8"), dir.path()).expect("location");
        let outbox = Outbox::new(&location).expect("outbox");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![7, 8])), Arc::new(StringArray::from(vec![Some("a\nb"), None]))],
        )
        .expect("batch");
        let stream = Box::pin(MemoryStream::try_new(vec![batch.clone(), batch], schema, None).expect("stream"));
        let staged = outbox.stage("b1-x", "orders", stream).await.expect("stages");
        assert_eq!(staged.rows(), 4);
        assert_eq!(outbox.tokens().await.expect("lists"), ["b1-x"]);

        let messages = outbox.messages("b1-x", "b1", Some("id")).await.expect("reads").expect("staged");
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["b1-0", "b1-1", "b1-2", "b1-3"]);
        assert_eq!(messages[0].key.as_deref(), Some("7"));
        assert_eq!(String::from_utf8_lossy(&messages[0].body), r#"{"id":7,"name":"a\nb"}"#);
        assert_eq!(String::from_utf8_lossy(&messages[1].body), r#"{"id":8}"#);
        assert_eq!(outbox.messages("b1-x", "b1", Some("id")).await.expect("again").expect("staged"), messages);

        outbox.remove("b1-x").await.expect("removes");
        assert!(outbox.messages("b1-x", "b1", None).await.expect("reads").is_none());
        assert!(outbox.tokens().await.expect("lists").is_empty());
    }
}
