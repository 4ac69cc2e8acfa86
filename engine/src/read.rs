//! What a read hands the worker: the batch's input as a table, and the
//! tally of records that did not fit, on their way to the dead letters.

use std::sync::{Arc, Mutex};

use datafusion::catalog::TableProvider;

use crate::Result;

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
