//! What an attempt stages and its commit records: the attempt's token,
//! its output objects, and the versions of the lookup tables it joined.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::batch::{BatchId, InputObject};
use super::unique::unique_suffix;

/// One attempt at a batch. Its staged outputs are kept apart from other
/// attempts' until the log says which attempt committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The batch.
    pub batch_id: BatchId,
    /// Unique per attempt: `<batch id>-<random>`.
    pub token: String,
}

impl Attempt {
    /// A new attempt at `batch_id`.
    pub fn new(batch_id: BatchId) -> Self {
        let token = format!("{batch_id}-{}", unique_suffix());
        Attempt { batch_id, token }
    }
}

/// One output object of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputObject {
    /// Final path relative to the sink location, with `/`.
    pub path: String,
    /// Rows in the object.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// What an attempt staged: recorded in the commit so that publishing can
/// be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The attempt's token; names its staging folder.
    pub token: String,
    /// The outputs, by final path.
    pub outputs: Vec<OutputObject>,
}

impl Staged {
    /// Rows over all outputs.
    pub fn rows(&self) -> u64 {
        self.outputs.iter().map(|o| o.rows).sum()
    }
}

/// One object of a table's version: what a commit records of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableObject {
    /// Its path below the table's location.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its entity tag, when the store gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl TableObject {
    /// The object a table version records of `input`.
    pub(crate) fn of(input: &InputObject) -> Self {
        TableObject { path: input.path.clone(), size: input.size, etag: input.etag.clone() }
    }
}

/// The versions of the tables a batch read, by table name.
pub type TableVersions = BTreeMap<String, Vec<TableObject>>;
