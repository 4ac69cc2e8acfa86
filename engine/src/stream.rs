//! Streams: records that arrive on a broker (a Kafka topic, an AMQP
//! queue) rather than objects that are listed.
//!
//! A stream is read in micro-batches. The reader hands out the messages
//! of one micro-batch; the controller plans them as a batch whose
//! [`StreamInputs`] say exactly which messages it holds (offset ranges per
//! partition, or message ids), runs and commits it, and only then tells
//! the reader to settle (acknowledge) them:
//!
//! ```text
//!  reader.next() ─► log: planned{ranges | ids} ─► lease ─► stage ─► log: committed{positions} ─► reader.settle()
//!                     │ refused (another run planned first)                                         (AMQP ack,
//!                     └─► reader.release(log state): start again from the log's positions            Kafka group offsets)
//! ```
//!
//! Kafka ranges are contiguous per partition: a range is planned only if
//! it starts at or after where the log's last range of that partition
//! ended, so no offset is ever in two batches, and a crash between plan and
//! commit is repaired by reading the same range again. AMQP messages
//! cannot be read again: a batch that did not commit is abandoned and its
//! messages, redelivered by the broker, are planned afresh; those whose
//! `message_id` is in a committed batch are recognised and acknowledged
//! without being written twice (see [`MESSAGE_ID_WINDOW`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::log::LogState;
use crate::source::Input;

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
                nonce: crate::sink::unique_suffix(),
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

/// When a micro-batch closes: at whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatchLimits {
    /// Most messages in one micro-batch.
    pub max_records: usize,
    /// Longest a micro-batch stays open after its first message.
    pub max_wait: Duration,
    /// Most payload bytes in one micro-batch.
    pub max_bytes: u64,
}

/// How long a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Until stopped, waiting for messages when there are none.
    Follow,
    /// Until what the broker held at start is read: Kafka stops at the
    /// high watermarks read at start, AMQP once the queue has no ready
    /// messages.
    UntilCaughtUp,
}

/// A stream of messages, implemented by each stream source connector.
///
/// Contract:
/// - [`StreamSource::open`] connects and positions a reader after what
///   the log has planned; building the source never connects.
/// - [`StreamSource::replay`] returns exactly the messages of a planned
///   batch (Kafka reads its ranges again); a source whose messages cannot
///   be read twice (AMQP) says so with an error, and its batches that did
///   not commit are abandoned instead.
/// - [`StreamSource::decode`] never drops a message: one that does not
///   parse or fit the schema comes back as a
///   [`crate::source::Rejected`] naming its partition and offset or its
///   message id.
#[async_trait]
pub trait StreamSource: Send + Sync + fmt::Debug {
    /// Connects, and starts reading after the positions `state` holds (or
    /// where `[source] start` says, for partitions it has none of).
    async fn open(&self, state: &LogState, mode: ReadMode) -> Result<Box<dyn StreamReader>>;

    /// Reads the messages of a planned batch again.
    async fn replay(&self, inputs: &StreamInputs) -> Result<Vec<Message>>;

    /// The messages as a table `input` for the SQL, and those that do not
    /// fit. `threads` is the session's parallelism.
    fn decode(&self, messages: &[Message], threads: usize) -> Result<Input>;

    /// Messages on the broker that no batch holds yet: what `sluice
    /// status` shows as lag.
    async fn lag(&self, state: &LogState) -> Result<u64>;

    /// The schema declared in the pipeline file, if there is one.
    fn declared_schema(&self) -> Option<SchemaRef>;

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    fn describe(&self) -> Vec<(&'static str, String)>;
}

/// An open reader of a stream, used by one controller, one micro-batch at
/// a time.
#[async_trait]
pub trait StreamReader: Send {
    /// The next micro-batch, once one of `limits` is reached (or, reading
    /// until caught up, once nothing more is there); `None` when caught
    /// up. A reader whose `next` was dropped unfinished is dropped too
    /// (it may have taken messages it never handed out); that loses
    /// nothing, since what was not settled is read again by the next run.
    async fn next(&mut self, limits: &MicroBatchLimits) -> Result<Option<Vec<Message>>>;

    /// Partitions the reader began at [`StreamSource::open`] that the log
    /// had no position for: recorded in the log before the first batch.
    fn starts(&self) -> Vec<PartitionStart> {
        Vec::new()
    }

    /// The micro-batch handed out last is committed, or needs no writing
    /// (every message a recognised redelivery): acknowledge it to the broker.
    async fn settle(&mut self) -> Result<()>;

    /// The micro-batch handed out last will not be committed by this run:
    /// hand it back (AMQP: requeued), and read on from `state`'s positions.
    async fn release(&mut self, state: &LogState) -> Result<()>;
}
