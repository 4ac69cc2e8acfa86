//! The AMQP source: consumes a queue with manual acknowledgements, hands
//! out micro-batches, and acknowledges each only once it is committed.

use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use sluice_engine::source::Input;
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::stream::{
    Message, MicroBatchLimits, Origin, Positions, ReadMode, StreamInputs, StreamReader, StreamSource,
};
use sluice_engine::{Error, Result};

use super::config::AmqpSourceConfig;
use super::{broker_error, check_url, open_queue, shown};
use crate::formats::messages::MessageDecoder;

/// How long without a delivery before a queue read until caught up is
/// checked for ready messages.
const IDLE: Duration = Duration::from_millis(300);

/// Consumes an AMQP queue.
pub struct AmqpSource {
    url: String,
    queue: String,
    decoder: MessageDecoder,
}

impl std::fmt::Debug for AmqpSource {
    /// Without the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource").field("url", &shown(&self.url)).field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl AmqpSource {
    /// Reads and checks `[source]`, collecting every problem; connects to
    /// nothing.
    pub fn from_component(component: &Component<'_>) -> Result<Self, Diagnostics> {
        let config: AmqpSourceConfig = component.parse()?;
        let mut problems = Diagnostics::default();
        problems.0.extend(check_url(component, config.url.get_ref()));
        if config.queue.get_ref().trim().is_empty() {
            problems.0.push(component.error("queue", "is empty", None));
        }
        let decoder =
            MessageDecoder::from_config(component, config.format, config.delimiter, config.schema, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(AmqpSource { url: config.url.get_ref().clone(), queue: config.queue.get_ref().clone(), decoder })
    }

    /// Connects and makes sure the queue exists.
    async fn connect(&self) -> Result<(Connection, Channel)> {
        open_queue(&self.url, &self.queue).await
    }
}

/// Messages ready in `queue` (not counting those delivered and not yet
/// acknowledged).
async fn ready_messages(channel: &Channel, url: &str, queue: &str) -> Result<u64> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map_err(|e| broker_error(url, &format!("cannot read the queue {queue}"), e))?;
    Ok(u64::from(declared.message_count()))
}

#[async_trait]
impl StreamSource for AmqpSource {
    async fn open(&self, _positions: &Positions, mode: ReadMode) -> Result<Box<dyn StreamReader>> {
        let (connection, channel) = self.connect().await?;
        let tag = format!("sluice-{}", sluice_engine::sink::unique_suffix());
        tracing::debug!(queue = %self.queue, broker = %shown(&self.url), "consuming");
        Ok(Box::new(AmqpReader {
            url: self.url.clone(),
            queue: self.queue.clone(),
            mode,
            _connection: connection,
            channel,
            tag,
            consumer: None,
            last_tag: None,
            warned_without_id: false,
        }))
    }

    async fn replay(&self, inputs: &StreamInputs) -> Result<Vec<Message>> {
        Err(Error::Config(format!(
            "AMQP messages cannot be read twice ({}): the broker hands them out again once they are not acknowledged",
            inputs.describe()
        )))
    }

    fn decode(&self, messages: &[Message], threads: usize) -> Result<Input> {
        self.decoder.decode(messages, threads)
    }

    async fn lag(&self, _positions: &Positions) -> Result<u64> {
        let (connection, channel) = self.connect().await?;
        let ready = ready_messages(&channel, &self.url, &self.queue).await;
        let _ = connection.close(200, "done".into()).await;
        ready
    }

    fn declared_schema(&self) -> Option<SchemaRef> {
        self.decoder.declared_schema()
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![("type", "amqp".to_string()), ("url", shown(&self.url)), ("queue", self.queue.clone())];
        self.decoder.describe(&mut lines);
        lines
    }
}

/// A consumer of one queue, handing out micro-batches.
struct AmqpReader {
    url: String,
    queue: String,
    mode: ReadMode,
    /// Closed when the reader is dropped: unacknowledged messages go back
    /// to the queue at once.
    _connection: Connection,
    channel: Channel,
    tag: String,
    /// Started on the first micro-batch, once its size is known.
    consumer: Option<Consumer>,
    /// The delivery tag of the newest message handed out and not settled.
    last_tag: Option<u64>,
    warned_without_id: bool,
}

impl AmqpReader {
    /// Starts consuming, holding at most about two micro-batches
    /// unacknowledged.
    async fn consumer(&mut self, limits: &MicroBatchLimits) -> Result<&mut Consumer> {
        if self.consumer.is_none() {
            let prefetch = limits.max_records.saturating_mul(2).min(usize::from(u16::MAX)) as u16;
            self.channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| broker_error(&self.url, "basic.qos", e))?;
            let consumer = self
                .channel
                .basic_consume(
                    self.queue.as_str().into(),
                    self.tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| broker_error(&self.url, &format!("cannot consume from {}", self.queue), e))?;
            self.consumer = Some(consumer);
        }
        self.consumer.as_mut().ok_or_else(|| Error::Broker("the consumer is gone".into()))
    }
}

#[async_trait]
impl StreamReader for AmqpReader {
    async fn next(&mut self, limits: &MicroBatchLimits) -> Result<Option<Vec<Message>>> {
        let (url, queue, mode) = (self.url.clone(), self.queue.clone(), self.mode);
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut closes_at: Option<Instant> = None;
        let mut last_tag = self.last_tag;
        let mut without_id = false;
        loop {
            let wait = match (closes_at, mode) {
                (Some(at), ReadMode::Follow) => Some(at.saturating_duration_since(Instant::now())),
                (Some(at), ReadMode::UntilCaughtUp) => Some(at.saturating_duration_since(Instant::now()).min(IDLE)),
                (None, ReadMode::UntilCaughtUp) => Some(IDLE),
                (None, ReadMode::Follow) => None,
            };
            let consumer = self.consumer(limits).await?;
            let delivery = match wait {
                Some(wait) => tokio::time::timeout(wait, consumer.next()).await.ok(),
                None => Some(consumer.next().await),
            };
            let delivery = match delivery {
                None => {
                    if closes_at.is_some_and(|at| Instant::now() >= at) || !batch.is_empty() {
                        break;
                    }
                    // Quiet and nothing in hand: caught up once the queue has
                    // no ready message.
                    if ready_messages(&self.channel, &url, &queue).await? == 0 {
                        break;
                    }
                    continue;
                }
                Some(None) => return Err(Error::Broker(format!("the broker cancelled the consumer of {queue}"))),
                Some(Some(Err(error))) => return Err(broker_error(&url, &format!("lost the queue {queue}"), error)),
                Some(Some(Ok(delivery))) => delivery,
            };
            let message_id = delivery.properties.message_id().as_ref().map(ToString::to_string);
            without_id |= message_id.is_none();
            last_tag = Some(delivery.delivery_tag);
            bytes += delivery.data.len() as u64;
            batch.push(Message {
                payload: Bytes::from(delivery.data),
                origin: Origin::Amqp { queue: queue.clone(), message_id },
            });
            closes_at.get_or_insert_with(|| Instant::now() + limits.max_wait);
            if batch.len() >= limits.max_records || bytes >= limits.max_bytes {
                break;
            }
        }
        if without_id && !self.warned_without_id {
            self.warned_without_id = true;
            tracing::warn!(
                queue = %queue,
                "messages without a message_id cannot be recognised when the broker delivers them again: \
                 they are written at least once (publish them with a message_id for exactly once)"
            );
        }
        self.last_tag = last_tag;
        Ok((!batch.is_empty()).then_some(batch))
    }

    async fn settle(&mut self) -> Result<()> {
        let Some(tag) = self.last_tag.take() else { return Ok(()) };
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| broker_error(&self.url, "cannot acknowledge the batch's messages", e))
    }

    async fn release(&mut self, _positions: &Positions) -> Result<()> {
        let Some(tag) = self.last_tag.take() else { return Ok(()) };
        self.channel
            .basic_nack(tag, BasicNackOptions { multiple: true, requeue: true })
            .await
            .map_err(|e| broker_error(&self.url, "cannot hand the batch's messages back", e))
    }
}
