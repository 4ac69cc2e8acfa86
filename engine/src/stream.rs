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

use std::fmt;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::Result;
pub use crate::model::{
    MESSAGE_ID_WINDOW, Message, OffsetRange, Origin, PartitionKey, PartitionStart, Positions, StreamInputs,
};
use crate::read::Input;

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
    async fn open(&self, positions: &Positions, mode: ReadMode) -> Result<Box<dyn StreamReader>>;

    /// Reads the messages of a planned batch again.
    async fn replay(&self, inputs: &StreamInputs) -> Result<Vec<Message>>;

    /// The messages as a table `input` for the SQL, and those that do not
    /// fit. `threads` is the session's parallelism.
    fn decode(&self, messages: &[Message], threads: usize) -> Result<Input>;

    /// Messages on the broker that no batch holds yet: what `sluice
    /// status` shows as lag.
    async fn lag(&self, positions: &Positions) -> Result<u64>;

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
    async fn release(&mut self, positions: &Positions) -> Result<()>;
}
