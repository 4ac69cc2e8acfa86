//! The [`Sink`] trait: where a pipeline's output goes, in two steps that
//! bracket the commit record.
//!
//! ```text
//!   stage(attempt)          commit record            publish(staged)
//!   ───────────────►  log: committed{staged} ─────►  outputs visible
//!   staged files are        the log decides          idempotent: replayed
//!   invisible to readers    which attempt won        after a crash
//! ```

use std::fmt;

use arrow::datatypes::Schema;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::batch::BatchId;
use crate::source::ReadTally;
use crate::storage::StorageLocation;

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

/// 16 hex digits that differ between processes and calls: what tells
/// attempts, and workers, apart.
pub fn unique_suffix() -> String {
    format!("{:016x}", random_u64())
}

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
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

/// A destination for a pipeline's rows, implemented by each sink connector.
///
/// Contract:
/// - [`Sink::stage`] writes under names no plain reader of the sink sees
///   (for files: below `_sluice/`), distinct per attempt, so that racing
///   attempts never mix.
/// - [`Sink::publish`] is called only after the commit record exists, may
///   be called again for the same [`Staged`] after a crash, and then
///   leaves the same visible result: outputs have names derived from the
///   batch id, never duplicates.
/// - [`Sink::discard`] drops an attempt that did not commit.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// Whether the rows of `schema` can be written (partition columns
    /// exist, types are supported); a message saying what to change if not.
    fn check_schema(&self, schema: &Schema) -> std::result::Result<(), String>;

    /// Writes every row of `data` as the staged outputs of `attempt`.
    async fn stage(&self, attempt: &Attempt, data: SendableRecordBatchStream) -> Result<Staged>;

    /// [`Sink::stage`], handing a row that this sink can never write (its
    /// partition folder's name would be too long) to `dead_letters`
    /// instead of failing the batch. Sinks that write every row keep the
    /// default.
    async fn stage_with_dead_letters(
        &self,
        attempt: &Attempt,
        data: SendableRecordBatchStream,
        dead_letters: &ReadTally,
    ) -> Result<Staged> {
        let _ = dead_letters;
        self.stage(attempt, data).await
    }

    /// Makes committed outputs visible under their final names.
    async fn publish(&self, staged: &Staged) -> Result<()>;

    /// Removes what an uncommitted attempt staged.
    async fn discard(&self, token: &str) -> Result<()>;

    /// Tokens of attempts that still have staged outputs.
    async fn staged_tokens(&self) -> Result<Vec<String>>;

    /// Where the checkpoint log goes when `[checkpoint] url` is not set.
    fn default_checkpoint(&self) -> Option<StorageLocation>;

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    fn describe(&self) -> Vec<(&'static str, String)>;
}
