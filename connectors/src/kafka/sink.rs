//! The Kafka sink: a batch's rows wait in the outbox until its commit,
//! then each is produced as a JSON record, with an idempotent producer
//! and a stable `sluice-message-id` header (at least once: a publish cut
//! short by a crash is done again with the same ids).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_engine::Result;
use sluice_engine::sink::Sink;
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::storage::StorageLocation;
use tokio::sync::OnceCell;

use super::config::KafkaSinkConfig;
use super::{MESSAGE_ID_HEADER, broker_error, check_brokers, check_options, client_config, shown_option};
use crate::outbox::{OutMessage, Outbox, OutboxSink, Publisher, send_all};

/// Records produced at once while waiting for the broker's acks.
const IN_FLIGHT: usize = 10_000;
/// How long a record may wait for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Produces rows to a Kafka topic.
pub(crate) struct KafkaPublisher {
    brokers: String,
    topic: String,
    key: Option<String>,
    options: BTreeMap<String, String>,
    producer: OnceCell<FutureProducer>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Reads and checks `[sink] type = "kafka"`; the rows wait below
/// `checkpoint` until they are published. Connects to nothing.
pub(crate) fn sink(
    component: &Component<'_>,
    checkpoint: Option<&StorageLocation>,
) -> Result<Arc<dyn Sink>, Diagnostics> {
    let config: KafkaSinkConfig = component.parse()?;
    let mut problems = Diagnostics::default();
    problems.0.extend(check_brokers(component, config.brokers.get_ref()));
    problems.0.extend(check_options(component, &config.options));
    if config.topic.get_ref().trim().is_empty() {
        problems.0.push(component.error("topic", "is empty", None));
    }
    let outbox = Outbox::of_sink(component, checkpoint, &mut problems);
    let (Some(outbox), true) = (outbox, problems.is_empty()) else { return Err(problems) };
    let publisher = KafkaPublisher {
        brokers: config.brokers.get_ref().clone(),
        topic: config.topic.get_ref().clone(),
        key: config.key.map(|key| key.get_ref().clone()),
        options: config.options,
        producer: OnceCell::new(),
    };
    Ok(Arc::new(OutboxSink::new(outbox, publisher)))
}

impl KafkaPublisher {
    async fn producer(&self) -> Result<&FutureProducer> {
        self.producer
            .get_or_try_init(|| async {
                let mut config = client_config(&self.brokers, &[("linger.ms", "5")], &self.options);
                config.set("enable.idempotence", "true");
                config.create().map_err(|e| broker_error(&self.brokers, "cannot create a producer", e))
            })
            .await
    }

    async fn produce(&self, producer: &FutureProducer, message: &OutMessage) -> Result<()> {
        let headers = OwnedHeaders::new().insert(Header { key: MESSAGE_ID_HEADER, value: Some(message.id.as_str()) });
        let mut record = FutureRecord::to(&self.topic).payload(&message.body).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_str());
        }
        producer.send(record, QUEUE_TIMEOUT).await.map(|_| ()).map_err(|(error, _)| {
            broker_error(
                &self.brokers,
                &format!("record {} was not delivered to topic {}", message.id, self.topic),
                error,
            )
        })
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    fn target(&self) -> &str {
        &self.topic
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    async fn send(&self, messages: &[OutMessage]) -> Result<()> {
        let producer = self.producer().await?;
        send_all(messages.iter().map(|message| self.produce(producer, message)).collect(), IN_FLIGHT).await
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            ("type", "kafka".to_string()),
            ("brokers", self.brokers.clone()),
            ("topic", self.topic.clone()),
            ("format", "json, one record a row, header sluice-message-id = <batch id>-<row>".to_string()),
        ];
        if let Some(key) = &self.key {
            lines.push(("key", key.clone()));
        }
        for (key, value) in &self.options {
            lines.push(("option", shown_option(key, value)));
        }
        lines
    }
}
