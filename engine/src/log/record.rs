//! The records of the checkpoint log, one JSON object each.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::batch::{BatchId, InputObject, PipelineName};
use crate::sink::Staged;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A batch was cut from new input; written before any output (write-ahead).
    Planned(Planned),
    /// A batch's outputs are final.
    Committed(Committed),
    /// A batch will never be committed (its inputs changed before it ran);
    /// its inputs may be planned again.
    Abandoned(Abandoned),
}

impl Record {
    /// The batch the record is about.
    pub fn batch_id(&self) -> &BatchId {
        match self {
            Record::Planned(planned) => &planned.batch_id,
            Record::Committed(committed) => &committed.batch_id,
            Record::Abandoned(abandoned) => &abandoned.batch_id,
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
    /// The batch's exact inputs.
    pub inputs: Vec<InputObject>,
    /// When it was planned.
    pub at: DateTime<Utc>,
}

/// The commit record of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The batch.
    pub batch_id: BatchId,
    /// The winning attempt's outputs.
    pub staged: Staged,
    /// Rows read from the inputs.
    pub rows_in: u64,
    /// When it was committed.
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
