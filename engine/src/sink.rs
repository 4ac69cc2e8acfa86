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

use crate::Result;
pub use crate::model::{Attempt, OutputObject, Staged, unique_suffix};
use crate::read::ReadTally;
use crate::storage::StorageLocation;

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
