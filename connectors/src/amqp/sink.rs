//! The AMQP sink: a batch's rows wait in the outbox until its commit, then
//! each is published as a persistent JSON message with a stable
//! `message_id`, and counts as sent once the broker confirms it (at least
//! once: a publish cut short by a crash is done again with the same ids).

use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use sluice_engine::sink::Sink;
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::storage::StorageLocation;
use sluice_engine::{Error, Result};
use tokio::sync::Mutex;

use super::config::AmqpSinkConfig;
use super::{broker_error, check_url, connect, shown};
use crate::outbox::{OutMessage, Outbox, OutboxSink, Publisher, send_all};

/// Messages published at once while waiting for the broker's confirms.
const IN_FLIGHT: usize = 1_000;

/// Publishes rows to an AMQP exchange.
pub(crate) struct AmqpPublisher {
    url: String,
    exchange: String,
    routing_key: String,
    /// The connection, opened on the first publish and again after a failure.
    connected: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("url", &shown(&self.url))
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

/// Reads and checks `[sink] type = "amqp"`; the rows wait below
/// `checkpoint` until they are published. Connects to nothing.
pub(crate) fn sink(
    component: &Component<'_>,
    checkpoint: Option<&StorageLocation>,
) -> Result<Arc<dyn Sink>, Diagnostics> {
    let config: AmqpSinkConfig = component.parse()?;
    let mut problems = Diagnostics::default();
    problems.0.extend(check_url(component, config.url.get_ref()));
    if config.exchange.is_empty() && config.routing_key.get_ref().trim().is_empty() {
        problems.0.push(component.error(
            "routing_key",
            "is empty: with the default exchange it names the queue the messages go to",
            None,
        ));
    }
    let outbox = Outbox::of_sink(component, checkpoint, &mut problems);
    let (Some(outbox), true) = (outbox, problems.is_empty()) else { return Err(problems) };
    let publisher = AmqpPublisher {
        url: config.url.get_ref().clone(),
        exchange: config.exchange,
        routing_key: config.routing_key.get_ref().clone(),
        connected: Mutex::new(None),
    };
    Ok(Arc::new(OutboxSink::new(outbox, publisher)))
}

impl AmqpPublisher {
    /// A channel in confirm mode; with the default exchange, the queue
    /// `routing_key` names is declared durable if it is missing.
    async fn channel(&self) -> Result<Channel> {
        let mut connected = self.connected.lock().await;
        if let Some((connection, channel)) = connected.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let (connection, channel) = connect(&self.url).await?;
        if self.exchange.is_empty() {
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let probe =
                connection.create_channel().await.map_err(|e| broker_error(&self.url, "cannot open a channel", e))?;
            if probe.queue_declare(self.routing_key.as_str().into(), passive, FieldTable::default()).await.is_err() {
                channel
                    .queue_declare(
                        self.routing_key.as_str().into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        broker_error(&self.url, &format!("cannot declare the queue {}", self.routing_key), e)
                    })?;
            }
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker_error(&self.url, "confirm.select", e))?;
        *connected = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn send_one(&self, channel: &Channel, message: &OutMessage) -> Result<()> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message.id.as_str().into())
            .with_content_type("application/json".into());
        // Mandatory: a message no queue is bound for comes back instead of
        // being dropped by the broker.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                options,
                &message.body,
                properties,
            )
            .await
            .map_err(|e| broker_error(&self.url, "cannot publish", e))?
            .await
            .map_err(|e| broker_error(&self.url, "the broker did not confirm a message", e))?;
        if !confirm.is_ack() {
            return Err(Error::Broker(format!("the broker refused message {}", message.id)));
        }
        if confirm.take_message().is_some() {
            return Err(Error::Config(format!(
                "no queue is bound to exchange \"{}\" with routing key \"{}\": the messages would be lost; \
                 bind a queue, or correct [sink] exchange and routing_key",
                self.exchange, self.routing_key
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    fn target(&self) -> &str {
        if self.exchange.is_empty() { &self.routing_key } else { &self.exchange }
    }

    async fn send(&self, messages: &[OutMessage]) -> Result<()> {
        let channel = self.channel().await?;
        let sent = send_all(messages.iter().map(|message| self.send_one(&channel, message)).collect(), IN_FLIGHT).await;
        if sent.is_err() {
            // The next publish opens a fresh connection.
            self.connected.lock().await.take();
        }
        sent
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("type", "amqp".to_string()),
            ("url", shown(&self.url)),
            ("exchange", if self.exchange.is_empty() { "(default)".into() } else { self.exchange.clone() }),
            ("routing_key", self.routing_key.clone()),
            ("format", "json, one persistent message a row, message_id = <batch id>-<row>".to_string()),
        ]
    }
}
