//! The records of the checkpoint log, one JSON object each.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::segment::SegmentRef;
use crate::model::{
    BatchId, InputObject, OffsetRange, PartitionStart, PipelineName, Staged, StreamInputs, TableVersions,
};

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A batch was cut from new input; written before any output (write-ahead).
    Planned(Planned),
    /// Several batches cut in one look at the source, in order: a backlog
    /// of many batches is planned with one write, not one each.
    PlannedBatches(PlannedBatches),
    /// A worker claims a batch for one attempt, until `expires` unless
    /// renewed.
    Leased(Leased),
    /// A batch's outputs are final.
    Committed(Committed),
    /// An attempt ended in an error; after `max_attempts` of them the
    /// batch is failed until `sluice retry`.
    Failed(Failed),
    /// `sluice retry` made a failed batch pending again.
    Retried(Retried),
    /// A batch will never be committed (its inputs changed before it ran,
    /// or its stream messages went back to the broker); its inputs may be
    /// planned again.
    Abandoned(Abandoned),
    /// Where partitions that the log had no position for begin: a stream
    /// pipeline's first read of them.
    Started(Started),
    /// Committed batches leave the state: their inputs are in a segment
    /// (see [`super::segment`]) and their counts in the state's tally.
    Sealed(Sealed),
}

impl Record {
    /// The batch the record is about; `None` for records about the source.
    pub fn batch_id(&self) -> Option<&BatchId> {
        match self {
            Record::Planned(planned) => Some(&planned.batch_id),
            Record::PlannedBatches(_) => None,
            Record::Leased(leased) => Some(&leased.batch_id),
            Record::Committed(committed) => Some(&committed.batch_id),
            Record::Failed(failed) => Some(&failed.batch_id),
            Record::Retried(retried) => Some(&retried.batch_id),
            Record::Abandoned(abandoned) => Some(&abandoned.batch_id),
            Record::Started(_) | Record::Sealed(_) => None,
        }
    }
}

/// The write-ahead record of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// The batch.
    pub batch_id: BatchId,
    /// The pipeline that planned it.
    pub pipeline: PipelineName,
    /// The pipeline's version.
    pub version: u32,
    /// The batch's exact input objects; none for a stream batch.
    pub inputs: Vec<InputObject>,
    /// A stream batch's exact messages: offset ranges or message ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamInputs>,
    /// When it was planned.
    pub at: DateTime<Utc>,
}

/// The write-ahead record of several batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedBatches {
    /// The batches, oldest first, each as its own `planned` record would
    /// hold it. The record is admitted whole or not at all.
    pub batches: Vec<Planned>,
    /// `[source] max_file_age`: from this record on, inputs last modified
    /// before this time are never planned. It only moves forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_before: Option<DateTime<Utc>>,
    /// Committed batches, all of whose inputs were modified before
    /// `forget_before` and whose outputs are published, that the log
    /// forgets: they leave the state, and their counts stay in its tally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<BatchId>,
}

/// A claim on a batch for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leased {
    /// The batch.
    pub batch_id: BatchId,
    /// The attempt's number, 1 for the first; a renewal repeats it.
    pub attempt: u32,
    /// Who holds it: `host:pid:random`, unique per process.
    pub owner: String,
    /// When the claim runs out unless renewed.
    pub expires: DateTime<Utc>,
    /// When it was written, by the writer's clock.
    pub at: DateTime<Utc>,
}

/// The commit record of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The batch.
    pub batch_id: BatchId,
    /// The attempt that wrote the outputs; it must hold the lease.
    pub attempt: u32,
    /// The winning attempt's outputs.
    pub staged: Staged,
    /// Rows read from the inputs.
    pub rows_in: u64,
    /// The attempt's dead-letter files, when some records were malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<Staged>,
    /// Malformed records set aside as dead letters.
    pub rows_dead_lettered: u64,
    /// A Kafka batch's offset ranges: the positions that move with the
    /// output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_positions: Vec<OffsetRange>,
    /// Who ran the winning attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_by: Option<RanBy>,
    /// The version (objects and entity tags) of each lookup table the
    /// winning attempt joined against, by `[tables.NAME]`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: TableVersions,
    /// When it was committed.
    pub at: DateTime<Utc>,
}

/// Who ran a batch: for `sluice status` and for an operator who wants to
/// know which worker, on which machine, on whose task, wrote an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanBy {
    /// The worker's id, as its lease records name it (`host:pid:random`).
    pub worker: String,
    /// The machine's host name.
    pub host: String,
    /// The id of the key that signed the task, for a batch run from a task
    /// queue (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_key: Option<String>,
}

/// An attempt that ended in an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// The batch.
    pub batch_id: BatchId,
    /// The attempt; it must hold the lease, which this record releases.
    pub attempt: u32,
    /// The error, secrets redacted.
    pub error: String,
    /// Whether this was the last attempt: the batch is failed until
    /// `sluice retry`.
    pub gave_up: bool,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// A failed batch made pending again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retried {
    /// The batch.
    pub batch_id: BatchId,
    /// When.
    pub at: DateTime<Utc>,
}

/// The record of a batch given up for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abandoned {
    /// The batch.
    pub batch_id: BatchId,
    /// Why.
    pub reason: String,
    /// When it was abandoned.
    pub at: DateTime<Utc>,
}

/// Where partitions new to the log begin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The first offset to read of each.
    pub partitions: Vec<PartitionStart>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Committed batches sealed into a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The segment that holds their inputs, written before this record.
    pub segment: SegmentRef,
    /// The batches, each committed; the record is admitted whole or not
    /// at all.
    pub batches: Vec<BatchId>,
    /// When.
    pub at: DateTime<Utc>,
}
