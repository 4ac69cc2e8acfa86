//! Where a pipeline's input comes from: the [`Source`] trait of sources
//! whose input is listed objects (files in a folder or bucket), and
//! [`SourceConnector`], which is that or a stream
//! ([`crate::stream::StreamSource`]).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::context::SessionState;

use serde::Deserialize;

use crate::Result;
use crate::batch::InputObject;
pub use crate::read::{Input, ReadTally, Rejected};
use crate::stream::StreamSource;

/// `[source] on_change`: what becomes of an input the log holds in an
/// earlier version when the object at its path has changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    /// An object that grew and whose planned bytes are unchanged is read
    /// from where the planned version ended: only the new bytes. Any other
    /// change (rewritten, shrunk, compressed or Parquet) is a new version,
    /// read whole.
    #[default]
    Append,
    /// Any change is a new version, read whole.
    NewVersion,
    /// A path once planned is never read again.
    Ignore,
}

impl OnChange {
    /// The setting as the pipeline file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnChange::Append => "append",
            OnChange::NewVersion => "new_version",
            OnChange::Ignore => "ignore",
        }
    }
}

/// `[source] after_commit`: what becomes of a batch's input files once the
/// batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCommit {
    /// They stay where they are (the log remembers them).
    #[default]
    Keep,
    /// They are deleted.
    Delete,
    /// They are moved below `[source] move_to`, under the same names.
    Move,
}

impl AfterCommit {
    /// The setting as the pipeline file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AfterCommit::Keep => "keep",
            AfterCommit::Delete => "delete",
            AfterCommit::Move => "move",
        }
    }
}

/// A pipeline's `[source]`, as its connector built it.
#[derive(Debug, Clone)]
pub enum SourceConnector {
    /// Objects that are listed and planned into batches.
    Objects(Arc<dyn Source>),
    /// Messages that arrive on a broker, read in micro-batches.
    Stream(Arc<dyn StreamSource>),
}

impl SourceConnector {
    /// The object source, unless this is a stream.
    pub fn objects(&self) -> Option<&Arc<dyn Source>> {
        match self {
            SourceConnector::Objects(source) => Some(source),
            SourceConnector::Stream(_) => None,
        }
    }

    /// The stream source, if this is one.
    pub fn stream(&self) -> Option<&Arc<dyn StreamSource>> {
        match self {
            SourceConnector::Stream(source) => Some(source),
            SourceConnector::Objects(_) => None,
        }
    }

    /// The schema declared in the pipeline file, if there is one.
    pub fn declared_schema(&self) -> Option<SchemaRef> {
        match self {
            SourceConnector::Objects(source) => source.declared_schema(),
            SourceConnector::Stream(source) => source.declared_schema(),
        }
    }

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        match self {
            SourceConnector::Objects(source) => source.describe(),
            SourceConnector::Stream(source) => source.describe(),
        }
    }
}

/// A source of input objects, implemented by each source connector.
///
/// Contract:
/// - [`Source::discover`] lists what exists now and nothing else; it never
///   decides what is new (the planner does, against the checkpoint log),
///   and it leaves out names starting with `_` or `.` (files being written
///   and engine files).
/// - [`Source::read`] reads exactly the inputs it is given, whatever has
///   happened to the source since: a batch is always the same data. An
///   input that is no longer the planned version is
///   [`crate::Error::InputChanged`], from `read` or from
///   [`Source::verify`] once the batch has been read.
/// - A record that does not parse or does not fit the schema is never
///   dropped, turned into NULL or truncated: `read` returns it as
///   [`Rejected`], and the rest of the batch goes on.
/// - An input whose `start` is not 0 is the appended part of an object
///   that grew: `read` reads its bytes from `start` to `size` and nothing
///   else, and an object that grew further since, its bytes up to `size`
///   unchanged (as [`InputObject::tail_sha256`] tells), is still the
///   planned version.
/// - Neither keeps state between calls, so any worker can serve any batch.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The input objects available now, in any order.
    async fn discover(&self) -> Result<Vec<InputObject>>;

    /// Reads exactly `inputs`: a table over their records, registered as
    /// `input` for the SQL, and the records that do not fit.
    async fn read(&self, state: &SessionState, inputs: &[InputObject]) -> Result<Input>;

    /// Checks, after a batch was read, that its inputs are still the
    /// versions planned, so that one replaced while it was being read is
    /// never committed. Sources whose inputs cannot change keep the default.
    async fn verify(&self, inputs: &[InputObject]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// `[source] on_change`; sources whose inputs cannot change keep the
    /// default.
    fn on_change(&self) -> OnChange {
        OnChange::NewVersion
    }

    /// Whether `now` is `before` with bytes added at its end and nothing
    /// else changed: larger, and its bytes where `before` ended hash to
    /// `before`'s [`InputObject::tail_sha256`]. Reads those bytes only.
    /// `false` for what cannot be appended to (compressed, Parquet).
    async fn appended_to(&self, before: &InputObject, now: &InputObject) -> Result<bool> {
        let _ = (before, now);
        Ok(false)
    }

    /// Records the [`InputObject::tail_sha256`] of each input about to be
    /// planned that could later be appended to; leaves the rest alone.
    async fn fingerprint(&self, inputs: &mut [InputObject]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// The input object that a bucket notification names, as it is now:
    /// `None` when the object is not this source's input (another bucket,
    /// outside the prefix, not matching the pattern, hidden) or is gone.
    /// Reads one object's metadata, never a listing.
    async fn lookup(&self, bucket: &str, key: &str) -> Result<Option<InputObject>> {
        let _ = (bucket, key);
        Ok(None)
    }

    /// `[source] max_file_age`: inputs modified longer than this before
    /// the newest input seen are neither planned nor remembered.
    fn max_file_age(&self) -> Option<std::time::Duration> {
        None
    }

    /// `[source] after_commit`; sources that keep their inputs keep the
    /// default.
    fn after_commit(&self) -> AfterCommit {
        AfterCommit::Keep
    }

    /// Deletes or moves the inputs of a committed batch, as
    /// [`Source::after_commit`] says; the number of objects it removed from
    /// the source. Idempotent: an input that is gone already is done, and
    /// one that is no longer the version planned (a file dropped again at
    /// its path) is left, to be read as new input. Called after each commit
    /// and, for what a crash left, on every planning pass with the committed
    /// inputs still listed.
    async fn settle(&self, inputs: &[InputObject]) -> Result<u64> {
        let _ = inputs;
        Ok(0)
    }

    /// The schema declared in the pipeline file, if there is one.
    fn declared_schema(&self) -> Option<SchemaRef>;

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    fn describe(&self) -> Vec<(&'static str, String)>;

    /// How many names the last [`Source::discover`] passed over because
    /// they cannot be read (not UTF-8, a control character, a link that
    /// loops or leads out of the source), each with a warning, while it
    /// listed the rest. Sources that skip nothing keep the default.
    fn skipped_names(&self) -> u64 {
        0
    }

    /// Starts watching the source for new input, where the store can tell
    /// (a local folder's file-system notifications). `None`: it cannot, and
    /// the controller lists it every `[trigger] poll_interval`.
    fn watch(&self) -> Result<Option<Watch>> {
        Ok(None)
    }
}

/// A source's notifications of change: each message on `changes` means
/// "something may be new, list again". Watching stops when it is dropped.
pub struct Watch {
    /// Signalled on change; several changes may come as one message.
    pub changes: tokio::sync::mpsc::Receiver<()>,
    /// Whatever keeps the notifications coming.
    pub guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}
