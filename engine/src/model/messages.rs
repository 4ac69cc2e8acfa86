//! A stream batch's messages, as its log records name them: Kafka offset
//! ranges per partition, or AMQP message ids.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::unique::unique_suffix;

/// How many message ids of committed AMQP batches the log keeps, newest
/// first: a redelivered message whose id is among them is recognised and
/// not written again.
pub const MESSAGE_ID_WINDOW: usize = 100_000;

/// One partition of a Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionKey {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// What a stream source sees of the log: where each Kafka partition the
/// log knows reads on from (the offset after its last planned range, or
/// its recorded start).
pub type Positions = BTreeMap<PartitionKey, i64>;

/// Offsets `start..end` (end exclusive) of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset of the range.
    pub start: i64,
    /// The offset after the last one.
    pub end: i64,
}

impl OffsetRange {
    /// The partition of the range.
    pub fn key(&self) -> PartitionKey {
        PartitionKey { topic: self.topic.clone(), partition: self.partition }
    }
}

/// Where one partition begins for a pipeline whose log has no range of it
/// yet (`[source] start`), recorded so that every later run begins there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStart {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset to read.
    pub offset: i64,
}

/// Exactly which messages a stream batch holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamInputs {
    /// Offset ranges, one per partition with messages in the batch.
    Kafka {
        /// The ranges, by topic and partition.
        ranges: Vec<OffsetRange>,
    },
    /// Messages taken from an AMQP queue.
    Amqp {
        /// The queue.
        queue: String,
        /// How many messages, with or without an id.
        messages: u64,
        /// The `message_id`s they carry, for recognising redeliveries.
        #[serde(default)]
        message_ids: Vec<String>,
        /// Makes the batch id unique: two batches of the same messages
        /// (redelivered after an abandon) are two batches.
        nonce: String,
    },
}

impl StreamInputs {
    /// The inputs of `messages`: the offset range each partition's
    /// messages span, or the queue's message ids.
    pub fn of(messages: &[Message]) -> Option<Self> {
        let first = messages.first()?;
        Some(match &first.origin {
            Origin::Kafka { .. } => {
                let mut ranges: BTreeMap<PartitionKey, (i64, i64)> = BTreeMap::new();
                for message in messages {
                    if let Origin::Kafka { topic, partition, offset } = &message.origin {
                        let key = PartitionKey { topic: topic.clone(), partition: *partition };
                        let range = ranges.entry(key).or_insert((*offset, *offset + 1));
                        range.0 = range.0.min(*offset);
                        range.1 = range.1.max(*offset + 1);
                    }
                }
                StreamInputs::Kafka {
                    ranges: ranges
                        .into_iter()
                        .map(|(key, (start, end))| OffsetRange {
                            topic: key.topic,
                            partition: key.partition,
                            start,
                            end,
                        })
                        .collect(),
                }
            }
            Origin::Amqp { queue, .. } => StreamInputs::Amqp {
                queue: queue.clone(),
                messages: messages.len() as u64,
                message_ids: messages.iter().filter_map(|m| m.origin.message_id().map(String::from)).collect(),
                nonce: unique_suffix(),
            },
        })
    }

    /// How many messages the batch holds (Kafka: offsets its ranges span).
    pub fn messages(&self) -> u64 {
        match self {
            StreamInputs::Kafka { ranges } => ranges.iter().map(|r| (r.end - r.start).max(0) as u64).sum(),
            StreamInputs::Amqp { messages, .. } => *messages,
        }
    }

    /// Whether the batch can be read again from the broker.
    pub fn is_replayable(&self) -> bool {
        matches!(self, StreamInputs::Kafka { .. })
    }

    /// A short description for logs: `orders/0@10..20, orders/1@5..9`.
    pub fn describe(&self) -> String {
        match self {
            StreamInputs::Kafka { ranges } => ranges
                .iter()
                .map(|r| format!("{}/{}@{}..{}", r.topic, r.partition, r.start, r.end))
                .collect::<Vec<_>>()
                .join(", "),
            StreamInputs::Amqp { queue, messages, .. } => format!("{messages} messages of {queue}"),
        }
    }
}

/// Where a message came from: what a dead letter names and what
/// positions are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Kafka record.
    Kafka {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// An AMQP message.
    Amqp {
        /// The queue it was taken from.
        queue: String,
        /// Its `message_id` property, when it has one.
        message_id: Option<String>,
    },
}

impl Origin {
    /// The message's id, for AMQP messages that carry one.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Origin::Amqp { message_id, .. } => message_id.as_deref(),
            Origin::Kafka { .. } => None,
        }
    }
}

/// One message of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its body (Kafka: the record's value).
    pub payload: Bytes,
    /// Where it came from.
    pub origin: Origin,
}
