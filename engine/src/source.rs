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

use serde::Deserialize;

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
    /// The record's bytes in base64 when they are not valid UTF-8 (so
    /// that `raw` lost some); `None` otherwise.
    pub raw_base64: Option<String>,
}

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

/// What a batch set aside as dead letters, and how many records its read
/// decoded when it counts them itself, shared between the table that
/// reads, the sink that writes and the worker.
///
/// Until the worker attaches an outlet ([`ReadTally::stream_to`]) the
/// records are kept here; from then on they go to the outlet as they come,
/// so that memory stays bounded whatever their number. Past the outlet's
/// `max_records` nothing more is taken: [`ReadTally::set_aside`] fails, and
/// the read stops.
#[derive(Debug, Clone, Default)]
pub struct ReadTally(Arc<Mutex<Tally>>);

#[derive(Debug, Default)]
struct Tally {
    /// Records not yet handed to the outlet.
    rejected: Vec<Rejected>,
    rows: Option<u64>,
    /// Records set aside, kept or sent.
    count: u64,
    /// Of those, rows that the sink could not write.
    from_output: u64,
    outlet: Option<tokio::sync::mpsc::Sender<Vec<Rejected>>>,
    max_records: Option<u64>,
}

/// Dead letters to send, and the channel they go to.
type Delivery = (tokio::sync::mpsc::Sender<Vec<Rejected>>, Vec<Rejected>);

impl ReadTally {
    /// A tally of a read that is over: `rejected` is all it set aside, and
    /// the rows are counted by the plan that scans the table.
    pub fn of(rejected: Vec<Rejected>) -> Self {
        let count = rejected.len() as u64;
        ReadTally(Arc::new(Mutex::new(Tally { rejected, count, ..Tally::default() })))
    }

    /// A tally that the reading table fills in as it goes.
    pub fn counting() -> Self {
        ReadTally(Arc::new(Mutex::new(Tally { rows: Some(0), ..Tally::default() })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the records set aside to `outlet` from now on, and takes at
    /// most `max_records` of them (`[dead_letter] max_records`).
    pub fn stream_to(&self, outlet: tokio::sync::mpsc::Sender<Vec<Rejected>>, max_records: u64) {
        let mut tally = self.lock();
        tally.outlet = Some(outlet);
        tally.max_records = Some(max_records);
    }

    /// Counts `rows` records decoded.
    pub fn count_rows(&self, rows: u64) {
        let mut tally = self.lock();
        tally.rows = Some(tally.rows.unwrap_or(0) + rows);
    }

    /// Counts `rows` records decoded, and sets `rejected` aside.
    pub async fn add(&self, rows: u64, rejected: Vec<Rejected>) -> Result<()> {
        self.count_rows(rows);
        self.set_aside(rejected).await
    }

    /// Sets `rejected` aside: kept, or sent to the outlet (waiting while
    /// it is full). Fails once the batch has more than `max_records`, or
    /// when the outlet is gone (its writer failed).
    pub async fn set_aside(&self, rejected: Vec<Rejected>) -> Result<()> {
        if let Some((outlet, chunk)) = self.admit(rejected, false)? {
            outlet.send(chunk).await.map_err(|_| outlet_gone())?;
        }
        Ok(())
    }

    /// [`ReadTally::set_aside`] for a thread of the blocking pool, never
    /// an async task.
    pub fn set_aside_blocking(&self, rejected: Vec<Rejected>) -> Result<()> {
        if let Some((outlet, chunk)) = self.admit(rejected, false)? {
            outlet.blocking_send(chunk).map_err(|_| outlet_gone())?;
        }
        Ok(())
    }

    /// [`ReadTally::set_aside`] of rows that the sink could not write.
    pub async fn set_aside_output(&self, rejected: Vec<Rejected>) -> Result<()> {
        if let Some((outlet, chunk)) = self.admit(rejected, true)? {
            outlet.send(chunk).await.map_err(|_| outlet_gone())?;
        }
        Ok(())
    }

    /// Counts `rejected`, and returns what to send where, if anything.
    fn admit(&self, rejected: Vec<Rejected>, from_output: bool) -> Result<Option<Delivery>> {
        let mut guard = self.lock();
        let tally = &mut *guard;
        tally.count += rejected.len() as u64;
        if from_output {
            tally.from_output += rejected.len() as u64;
        }
        if let Some(error) = tally.over_limit() {
            return Err(error);
        }
        tally.rejected.extend(rejected);
        match &tally.outlet {
            Some(outlet) if !tally.rejected.is_empty() => {
                let outlet = outlet.clone();
                Ok(Some((outlet, std::mem::take(&mut tally.rejected))))
            }
            _ => Ok(None),
        }
    }

    /// Whether the batch has more dead letters than it may: then no more
    /// records need decoding.
    pub fn is_over_limit(&self) -> bool {
        self.lock().over_limit().is_some()
    }

    /// The error that failed the batch for its dead letters, if it has too
    /// many.
    pub fn limit_error(&self) -> Option<crate::Error> {
        self.lock().over_limit()
    }

    /// Sends what is still kept to the outlet and closes it, so that its
    /// writer finishes: the number of records set aside.
    pub async fn finish(&self) -> Result<u64> {
        let (outlet, rest) = {
            let mut tally = self.lock();
            if let Some(error) = tally.over_limit() {
                tally.outlet = None;
                return Err(error);
            }
            (tally.outlet.take(), std::mem::take(&mut tally.rejected))
        };
        if let Some(outlet) = outlet
            && !rest.is_empty()
        {
            outlet.send(rest).await.map_err(|_| outlet_gone())?;
        }
        Ok(self.rejected())
    }

    /// The records set aside so far, kept or sent.
    pub fn rejected(&self) -> u64 {
        self.lock().count
    }

    /// Of those, the rows that the sink could not write.
    pub fn rejected_by_output(&self) -> u64 {
        self.lock().from_output
    }

    /// The records kept so far (none once an outlet takes them), taken out
    /// of the tally.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        std::mem::take(&mut self.lock().rejected)
    }

    /// The records that fit, if the reading table counted them.
    pub fn rows(&self) -> Option<u64> {
        self.lock().rows
    }
}

impl Tally {
    fn over_limit(&self) -> Option<crate::Error> {
        let max_records = self.max_records?;
        (self.count > max_records).then_some(crate::Error::TooManyDeadLetters { max_records })
    }
}

fn outlet_gone() -> crate::Error {
    crate::Error::Output("the dead-letter writer stopped before the batch was read".into())
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
