//! Bucket notifications read from an AMQP queue: S3 event JSON, each
//! message acknowledged once its objects are planned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sluice_engine::Result;
use tokio::sync::mpsc;

use super::{Delivery, Notice, parse_event};
use crate::amqp::{open_queue, shown};

/// Notices delivered and not yet acknowledged, at most.
const PREFETCH: u16 = 1000;
/// The longest wait before connecting again after the broker went away.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl Delivery for Acker {
    async fn ack(self: Box<Self>) -> Result<(), String> {
        Acker::ack(&self, BasicAckOptions::default()).await.map(drop).map_err(|e| e.to_string())
    }

    async fn requeue(self: Box<Self>) -> Result<(), String> {
        let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
        self.nack(options).await.map(drop).map_err(|e| e.to_string())
    }
}

/// Consumes `queue` for ever, connecting again after every failure.
pub(super) async fn consume(url: String, queue: String, pending: Arc<Mutex<Vec<Notice>>>, wake: mpsc::Sender<()>) {
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
                    .push(Notice { objects, delivery: Box::new(delivery.acker) });
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
