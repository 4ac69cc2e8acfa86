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

pub mod azqueue;
mod blob_event;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use sluice_engine::Result;
use sluice_engine::source::Watch;
use sluice_engine::spec::NotificationQueue;
use sluice_engine::storage::StorageOptions;
use tokio::sync::mpsc;

use crate::amqp::{open_queue, shown};

/// Notices delivered and not yet acknowledged, at most.
const PREFETCH: u16 = 1000;
/// The longest wait before connecting again after the broker went away.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

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
    delivery: Delivery,
}

/// How a notice is settled with the queue it came from.
enum Delivery {
    Amqp(Acker),
    Azure(Box<azqueue::Receipt>),
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice").field("objects", &self.objects).finish_non_exhaustive()
    }
}

impl Notice {
    /// Acknowledges the message: its objects are planned.
    pub async fn ack(self) {
        let done = match self.delivery {
            Delivery::Amqp(acker) => acker.ack(BasicAckOptions::default()).await.map(drop).map_err(|e| e.to_string()),
            Delivery::Azure(receipt) => receipt.delete().await,
        };
        if let Err(error) = done {
            // The channel is gone, or the message's receipt expired: the
            // queue delivers it again, and the log refuses what it planned
            // already.
            tracing::debug!("cannot acknowledge a bucket notification (it comes again): {error}");
        }
    }

    /// Hands the message back to the queue, to be delivered again.
    pub async fn requeue(self) {
        let done = match self.delivery {
            Delivery::Amqp(acker) => {
                let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                acker.nack(options).await.map(drop).map_err(|e| e.to_string())
            }
            Delivery::Azure(receipt) => receipt.release().await,
        };
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
    pub fn start(queue: NotificationQueue, storage: &StorageOptions) -> Result<(NotificationFeed, Watch)> {
        let pending = Arc::new(Mutex::new(Vec::new()));
        let (tx, changes) = mpsc::channel(1);
        let task = match queue {
            NotificationQueue::Amqp { url, queue } => tokio::spawn(consume(url, queue, pending.clone(), tx)),
            NotificationQueue::AzureQueue { account, queue } => {
                let queue = azqueue::AzureQueue::new(&account, &queue, storage)?;
                tokio::spawn(azqueue::poll(queue, pending.clone(), tx))
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

/// Consumes `queue` for ever, connecting again after every failure.
async fn consume(url: String, queue: String, pending: Arc<Mutex<Vec<Notice>>>, wake: mpsc::Sender<()>) {
    let mut failures = 0u32;
    loop {
        match consume_once(&url, &queue, &pending, &wake, &mut failures).await {
            Ok(()) => tracing::warn!(queue, "the bucket notification queue's consumer was cancelled; connecting again"),
            Err(error) => tracing::warn!(
                queue,
                "bucket notifications from {} stopped, relying on listings until they come back: {error}",
                shown(&url)
            ),
        }
        failures += 1;
        let wait = Duration::from_millis(500u64 << failures.min(6)).min(MAX_RECONNECT_WAIT);
        tokio::time::sleep(wait).await;
        // What was missed meanwhile, a listing finds.
        let _ = wake.try_send(());
    }
}

async fn consume_once(
    url: &str,
    queue: &str,
    pending: &Mutex<Vec<Notice>>,
    wake: &mpsc::Sender<()>,
    failures: &mut u32,
) -> Result<()> {
    let (_connection, channel) = open_queue(url, queue).await?;
    let broker = |what: &str, e: lapin::Error| crate::amqp::broker_error(url, what, e);
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| broker("basic.qos", e))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "sluice-notifications".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker("basic.consume", e))?;
    tracing::debug!(queue, "reading bucket notifications");
    *failures = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|e| broker("delivery", e))?;
        match parse_event(&delivery.data) {
            Ok(objects) => {
                pending
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(Notice { objects, delivery: Delivery::Amqp(delivery.acker) });
                let _ = wake.try_send(());
            }
            Err(reason) => {
                // Not an event: the broker's dead-letter exchange of the
                // queue, if it has one, keeps it; the next listing finds
                // any object it was about.
                let shown_body = String::from_utf8_lossy(&delivery.data[..delivery.data.len().min(200)]).into_owned();
                tracing::warn!(queue, body = %shown_body, "a message on the notification queue is not an S3 event, rejected: {reason}");
                let options = BasicNackOptions { requeue: false, ..BasicNackOptions::default() };
                let _ = delivery.acker.nack(options).await;
            }
        }
    }
    Ok(())
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
