//! Bucket notifications: `[trigger] notifications =
//! "amqp://HOST/VHOST/QUEUE"` (S3 event JSON on an AMQP queue) or
//! `"azqueue://ACCOUNT/QUEUE"` (Event Grid's blob events on an Azure
//! Storage queue, [`azqueue`]).
//!
//! S3 and S3-compatible servers (MinIO, Ceph, ...) can send an event for
//! every object written, and Azure Blob Storage sends one through Event
//! Grid; routed to a queue, they tell the controller which objects are new
//! without a listing. The feed consumes the queue in the background, parses
//! each message as an event, and keeps the notices until the controller
//! takes them. A notice is settled (acknowledged, or deleted from the Azure
//! queue) only once the objects it names are planned in the log (or found
//! not to be input), so none is lost to a crash; one taken twice, or late,
//! plans nothing twice, since the log refuses inputs it has planned.
//!
//! ```text
//! bucket ──event──► queue ──► feed (parse, keep) ──► controller: head each object,
//!                                   │ wake            plan, append, then settle
//!                                   ▼
//!                            Wake (no listing until reconcile_interval)
//! ```

#[cfg(feature = "amqp")]
mod amqp_queue;
#[cfg(feature = "cloud")]
pub mod azqueue;
#[cfg(feature = "cloud")]
mod blob_event;

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sluice_engine::Result;
use sluice_engine::source::Watch;
use sluice_engine::spec::NotificationQueue;
use sluice_engine::storage::StorageOptions;
use tokio::sync::mpsc;

/// One object an event says was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The bucket (or container) named in the event.
    pub bucket: String,
    /// The object's key, decoded.
    pub key: String,
}

/// One message of the queue: the objects it names, and its delivery.
pub struct Notice {
    /// The objects written; empty for test events and removals.
    pub objects: Vec<ObjectEvent>,
    delivery: Box<dyn Delivery>,
}

/// How a notice is settled with the queue it came from.
#[async_trait::async_trait]
trait Delivery: Send {
    /// Acknowledges the message: it is not delivered again.
    async fn ack(self: Box<Self>) -> Result<(), String>;
    /// Hands the message back, to be delivered again.
    async fn requeue(self: Box<Self>) -> Result<(), String>;
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice").field("objects", &self.objects).finish_non_exhaustive()
    }
}

impl Notice {
    /// Acknowledges the message: its objects are planned.
    pub async fn ack(self) {
        let done = self.delivery.ack().await;
        if let Err(error) = done {
            // The channel is gone, or the message's receipt expired: the
            // queue delivers it again, and the log refuses what it planned
            // already.
            tracing::debug!("cannot acknowledge a bucket notification (it comes again): {error}");
        }
    }

    /// Hands the message back to the queue, to be delivered again.
    pub async fn requeue(self) {
        let done = self.delivery.requeue().await;
        if let Err(error) = done {
            tracing::debug!("cannot requeue a bucket notification (it comes again): {error}");
        }
    }
}

/// The notices of one queue, consumed in the background.
#[derive(Debug, Clone)]
pub struct NotificationFeed {
    pending: Arc<Mutex<Vec<Notice>>>,
}

impl NotificationFeed {
    /// Starts reading `queue` (an AMQP queue is declared durable if
    /// missing; an Azure queue is reached with the Azure settings of
    /// `storage` and the `AZURE_*` variables), and returns the feed and a
    /// [`Watch`] signalled when notices arrive. The reader connects again,
    /// with a growing wait, whenever the queue cannot be reached; dropping
    /// the `Watch` stops it.
    #[cfg_attr(not(all(feature = "amqp", feature = "cloud")), allow(unreachable_code, unused_variables))]
    pub fn start(queue: NotificationQueue, storage: &StorageOptions) -> Result<(NotificationFeed, Watch)> {
        let pending = Arc::new(Mutex::new(Vec::new()));
        let (tx, changes) = mpsc::channel(1);
        let task = match queue {
            #[cfg(feature = "amqp")]
            NotificationQueue::Amqp { url, queue } => {
                tokio::spawn(amqp_queue::consume(url, queue, pending.clone(), tx))
            }
            #[cfg(not(feature = "amqp"))]
            NotificationQueue::Amqp { .. } => {
                return Err(sluice_engine::Error::Config(
                    "[source] notifications on an AMQP queue: this sluice is built without AMQP; use a sluice built \
                     with the cargo feature `amqp` (on by default)"
                        .into(),
                ));
            }
            #[cfg(feature = "cloud")]
            NotificationQueue::AzureQueue { account, queue } => {
                let queue = azqueue::AzureQueue::new(&account, &queue, storage)?;
                tokio::spawn(azqueue::poll(queue, pending.clone(), tx))
            }
            #[cfg(not(feature = "cloud"))]
            NotificationQueue::AzureQueue { .. } => {
                return Err(sluice_engine::Error::Config(
                    "[trigger] notifications on an Azure queue: this sluice is built without the clouds; use a \
                     sluice built with the cargo feature `cloud` (on by default)"
                        .into(),
                ));
            }
        };
        let guard = Box::new(AbortOnDrop(task));
        Ok((NotificationFeed { pending }, Watch { changes, guard }))
    }

    /// Takes every notice that arrived since the last call.
    pub fn take(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An S3 event message (AWS's format, which S3-compatible servers send
/// too): `{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}`.
#[derive(Deserialize)]
struct EventMessage {
    #[serde(rename = "Records", default)]
    records: Option<Vec<EventRecord>>,
    /// `s3:TestEvent`, sent when notifications are switched on.
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: EventEntity,
}

#[derive(Deserialize)]
struct EventEntity {
    bucket: EventBucket,
    object: EventObject,
}

#[derive(Deserialize)]
struct EventBucket {
    name: String,
}

#[derive(Deserialize)]
struct EventObject {
    key: String,
}

/// The objects written that a message names. Removals and test events
/// name none; anything that is not an S3 event is an error.
pub fn parse_event(body: &[u8]) -> Result<Vec<ObjectEvent>, String> {
    let message: EventMessage = serde_json::from_slice(body).map_err(|e| format!("not S3 event JSON: {e}"))?;
    let records = match (message.records, message.event) {
        (Some(records), _) => records,
        (None, Some(event)) if event.ends_with("TestEvent") => return Ok(Vec::new()),
        (None, _) => return Err("no `Records`".into()),
    };
    Ok(records
        .into_iter()
        .filter(|record| record.event_name.trim_start_matches("s3:").starts_with("ObjectCreated"))
        .map(|record| ObjectEvent { bucket: record.s3.bucket.name, key: decode_key(&record.s3.object.key) })
        .collect())
}

/// S3 sends keys form-encoded: `+` for a space, `%XX` for other bytes.
fn decode_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_objects_are_read_from_an_s3_event() {
        let body = br#"{"Records":[
            {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
             "s3":{"bucket":{"name":"drops"},"object":{"key":"in/day+1/a%C3%A9.csv","size":12,"eTag":"x"}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"drops"},"object":{"key":"in/b.csv"}}},
            {"eventName":"s3:ObjectCreated:CompleteMultipartUpload",
             "s3":{"bucket":{"name":"drops"},"object":{"key":"in/c.csv"}}}]}"#;
        let objects = parse_event(body).expect("an event");
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["in/day 1/aé.csv", "in/c.csv"]);
        assert!(objects.iter().all(|o| o.bucket == "drops"));
    }

    #[test]
    fn test_events_name_nothing_and_other_messages_are_errors() {
        let test_event = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"drops"}"#;
        assert_eq!(parse_event(test_event), Ok(Vec::new()));
        assert!(parse_event(b"hello").is_err());
        assert!(parse_event(br#"{"Key":"x"}"#).is_err());
    }
}
