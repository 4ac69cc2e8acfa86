//! Where a pipeline's input comes from: the [`Source`] trait of sources
//! whose input is listed objects (files in a folder or bucket), and
//! [`SourceConnector`], which is that or a stream
//! ([`crate::stream::StreamSource`]).

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::context::SessionState;

use crate::Result;
use crate::batch::InputObject;
use crate::stream::StreamSource;

/// A record that could not be read, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The input object relative to the source, the topic, or the queue.
    pub source: String,
    /// The record's first line in its object, 1 for the first line.
    pub line: Option<u64>,
    /// The record's byte offset in its object, or the Kafka record's offset.
    pub offset: Option<u64>,
    /// The Kafka record's partition.
    pub partition: Option<i32>,
    /// The AMQP message's `message_id`.
    pub message_id: Option<String>,
    /// Why it was rejected.
    pub error: String,
    /// The record as it was, lossily decoded as UTF-8.
    pub raw: String,
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

/// A batch's inputs as read: a table over the records that fit the
/// schema, and a tally of those that do not.
#[derive(Debug)]
pub struct Input {
    /// The records that fit, registered as the table `input`.
    pub table: Arc<dyn TableProvider>,
    /// The malformed records, for the dead letters: complete once the
    /// table has been scanned, since a streamed input is decoded while
    /// the SQL runs.
    pub tally: ReadTally,
}

/// What a read set aside, and how many records it decoded when it counts
/// them itself, shared between the table that reads and the worker.
#[derive(Debug, Clone, Default)]
pub struct ReadTally(Arc<Mutex<Tally>>);

#[derive(Debug, Default)]
struct Tally {
    rejected: Vec<Rejected>,
    rows: Option<u64>,
}

impl ReadTally {
    /// A tally of a read that is over: `rejected` is all it set aside, and
    /// the rows are counted by the plan that scans the table.
    pub fn of(rejected: Vec<Rejected>) -> Self {
        ReadTally(Arc::new(Mutex::new(Tally { rejected, rows: None })))
    }

    /// A tally that the reading table fills in as it goes.
    pub fn counting() -> Self {
        ReadTally(Arc::new(Mutex::new(Tally { rejected: Vec::new(), rows: Some(0) })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `rows` records decoded, and sets `rejected` aside.
    pub fn add(&self, rows: u64, rejected: Vec<Rejected>) {
        let mut tally = self.lock();
        tally.rows = Some(tally.rows.unwrap_or(0) + rows);
        tally.rejected.extend(rejected);
    }

    /// The records set aside so far, taken out of the tally.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        std::mem::take(&mut self.lock().rejected)
    }

    /// The records that fit, if the reading table counted them.
    pub fn rows(&self) -> Option<u64> {
        self.lock().rows
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

    /// The input object that a bucket notification names, as it is now:
    /// `None` when the object is not this source's input (another bucket,
    /// outside the prefix, not matching the pattern, hidden) or is gone.
    /// Reads one object's metadata, never a listing.
    async fn lookup(&self, bucket: &str, key: &str) -> Result<Option<InputObject>> {
        let _ = (bucket, key);
        Ok(None)
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
