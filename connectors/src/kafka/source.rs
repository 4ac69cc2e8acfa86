//! The Kafka source: which partitions there are, where a new pipeline
//! begins them, and reading a planned batch's ranges again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_engine::source::Input;
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::stream::{
    Message, PartitionKey, PartitionStart, Positions, ReadMode, StreamInputs, StreamReader, StreamSource,
};
use sluice_engine::{Error, Result};

use super::config::{KafkaSourceConfig, StartPosition};
use super::reader::{KafkaReader, Until, find_ends, read_ranges};
use super::{REQUEST_TIMEOUT, blocking, broker_error, check_brokers, check_options, client_config, shown_option};
use crate::formats::messages::MessageDecoder;

/// Reads records of Kafka topics.
pub struct KafkaSource {
    brokers: String,
    topics: Vec<String>,
    group: String,
    start: StartPosition,
    options: BTreeMap<String, String>,
    decoder: MessageDecoder,
}

impl std::fmt::Debug for KafkaSource {
    /// Without the `options` values, which may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Reads and checks `[source]`, collecting every problem; connects to
    /// nothing.
    pub fn from_component(component: &Component<'_>) -> Result<Self, Diagnostics> {
        let config: KafkaSourceConfig = component.parse()?;
        let mut problems = Diagnostics::default();
        problems.0.extend(check_brokers(component, config.brokers.get_ref()));
        problems.0.extend(check_options(component, &config.options));
        let topics: Vec<String> = match (&config.topic, &config.topics) {
            (Some(topic), None) => vec![topic.get_ref().clone()],
            (None, Some(topics)) => topics.get_ref().clone(),
            (Some(_), Some(_)) => {
                problems.0.push(component.error("topics", "give `topic` or `topics`, not both", None));
                Vec::new()
            }
            (None, None) => {
                problems.0.push(component.error(
                    "topic",
                    "missing key `topic`",
                    Some("add topic = \"orders\", or topics = [\"orders\", \"refunds\"]".into()),
                ));
                Vec::new()
            }
        };
        if (config.topic.is_some() != config.topics.is_some())
            && (topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()))
        {
            let key = if config.topic.is_some() { "topic" } else { "topics" };
            problems.0.push(component.error(key, "names no topic", None));
        }
        let group = match &config.group {
            Some(group) if group.get_ref().trim().is_empty() => {
                problems.0.push(component.error("group", "is empty", None));
                String::new()
            }
            Some(group) => group.get_ref().clone(),
            None => format!("sluice-{}", topics.first().map_or("", String::as_str)),
        };
        let decoder =
            MessageDecoder::from_config(component, config.format, config.delimiter, config.schema, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(KafkaSource {
            brokers: config.brokers.get_ref().clone(),
            topics,
            group,
            start: config.start.map_or(StartPosition::Earliest, |s| *s.get_ref()),
            options: config.options,
            decoder,
        })
    }

    /// A consumer that commits no offsets by itself and whose fetches come
    /// back within 100 ms when there is nothing new (unless `options` say
    /// otherwise).
    fn consumer(&self) -> Result<Arc<StreamConsumer>> {
        // A drained fetch queue is refilled at once, not after librdkafka's
        // default second of backoff.
        let defaults = [("fetch.wait.max.ms", "100"), ("fetch.queue.backoff.ms", "10")];
        let mut config = client_config(&self.brokers, &defaults, &self.options);
        config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A position the broker no longer has (retention) reads on from
            // the oldest record it has.
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer =
            config.create().map_err(|e| broker_error(&self.brokers, "cannot create a consumer", e))?;
        Ok(Arc::new(consumer))
    }

    /// Every partition of the topics, and each one's low and high watermark.
    async fn partitions(&self, consumer: &Arc<StreamConsumer>) -> Result<BTreeMap<PartitionKey, (i64, i64)>> {
        let (consumer, topics, brokers) = (consumer.clone(), self.topics.clone(), self.brokers.clone());
        blocking(move || {
            let mut found = BTreeMap::new();
            for topic in &topics {
                let metadata = consumer
                    .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                    .map_err(|e| broker_error(&brokers, &format!("cannot read the metadata of topic {topic}"), e))?;
                let Some(described) = metadata.topics().iter().find(|t| t.name() == topic) else { continue };
                if described.error().is_some() || described.partitions().is_empty() {
                    return Err(Error::Config(format!(
                        "topic {topic} does not exist on {brokers}; create it, or correct [source] topic"
                    )));
                }
                for partition in described.partitions() {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                        .map_err(|e| broker_error(&brokers, &format!("cannot read the offsets of {topic}"), e))?;
                    found.insert(PartitionKey { topic: topic.clone(), partition: partition.id() }, (low, high));
                }
            }
            Ok(found)
        })
        .await
    }
}

#[async_trait]
impl StreamSource for KafkaSource {
    async fn open(&self, log_positions: &Positions, mode: ReadMode) -> Result<Box<dyn StreamReader>> {
        let consumer = self.consumer()?;
        let opened_ms = chrono::Utc::now().timestamp_millis();
        let partitions = self.partitions(&consumer).await?;
        let mut positions = BTreeMap::new();
        let mut targets = BTreeMap::new();
        let mut new_partitions = BTreeMap::new();
        // `start` is where a topic new to the log begins; a partition added
        // to a topic the log knows is read from its oldest record.
        let known_topics: BTreeSet<&str> = log_positions.keys().map(|key| key.topic.as_str()).collect();
        let mut added_partitions = BTreeMap::new();
        for (key, (low, high)) in partitions {
            match log_positions.get(&key).copied() {
                Some(next) => {
                    positions.insert(key.clone(), next);
                }
                None if known_topics.contains(key.topic.as_str()) || self.start == StartPosition::Earliest => {
                    added_partitions.insert(key.clone(), low);
                }
                None => {
                    new_partitions.insert(key.clone(), high);
                }
            }
            targets.insert(key, high);
        }
        let mut new_partitions = find_ends(&consumer, &self.brokers, &new_partitions, opened_ms).await?;
        new_partitions.extend(added_partitions);
        let starts: Vec<PartitionStart> = new_partitions
            .iter()
            .map(|(key, offset)| PartitionStart { topic: key.topic.clone(), partition: key.partition, offset: *offset })
            .collect();
        positions.extend(new_partitions);
        let mut assignment = TopicPartitionList::new();
        for (key, next) in &positions {
            assignment
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(*next))
                .map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))?;
        }
        consumer.assign(&assignment).map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))?;
        let until = match mode {
            ReadMode::Follow => None,
            ReadMode::UntilCaughtUp => Some(Until::new(targets)),
        };
        tracing::debug!(?positions, "reading kafka partitions");
        Ok(Box::new(KafkaReader::new(consumer, self.brokers.clone(), self.topics.clone(), positions, starts, until)))
    }

    async fn replay(&self, inputs: &StreamInputs) -> Result<Vec<Message>> {
        let StreamInputs::Kafka { ranges } = inputs else {
            return Err(Error::Config(format!("a kafka source cannot read {}", inputs.describe())));
        };
        read_ranges(self.consumer()?, &self.brokers, ranges).await
    }

    fn decode(&self, messages: &[Message], threads: usize) -> Result<Input> {
        self.decoder.decode(messages, threads)
    }

    async fn lag(&self, log_positions: &Positions) -> Result<u64> {
        let consumer = self.consumer()?;
        let partitions = self.partitions(&consumer).await?;
        Ok(partitions
            .iter()
            .map(|(key, (low, high))| {
                let next = log_positions.get(key).copied().unwrap_or(match self.start {
                    StartPosition::Earliest => *low,
                    StartPosition::Latest => *high,
                });
                (high - next.max(*low)).max(0) as u64
            })
            .sum())
    }

    fn declared_schema(&self) -> Option<SchemaRef> {
        self.decoder.declared_schema()
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            ("type", "kafka".to_string()),
            ("brokers", self.brokers.clone()),
            ("topics", self.topics.join(", ")),
            ("group", self.group.clone()),
            ("start", format!("{:?}", self.start).to_lowercase()),
        ];
        self.decoder.describe(&mut lines);
        for (key, value) in &self.options {
            lines.push(("option", shown_option(key, value)));
        }
        lines
    }
}
