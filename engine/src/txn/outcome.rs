//! How each step of a batch's life can end, as the runtime acts on it.

use chrono::{DateTime, Utc};

use crate::lookup::TableVersions;
use crate::sink::Staged;

/// Why a batch has nothing left to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A commit is in the log.
    Committed,
    /// It was abandoned, for `reason`; its inputs may be planned again.
    Abandoned {
        /// Why.
        reason: String,
    },
    /// It failed and waits for `sluice retry`, or the log has no such
    /// batch.
    Closed,
}

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leasing {
    /// The batch is this worker's, as attempt `attempt`.
    Leased {
        /// The attempt's number.
        attempt: u32,
        /// Whose lease ran out and was taken over, if one was.
        taken_from: Option<String>,
    },
    /// Another worker holds it until `until`, unless renewed.
    Busy {
        /// When their lease runs out unless renewed.
        until: DateTime<Utc>,
    },
    /// Its holder died in the last attempt allowed: the batch is failed
    /// now, with `error`, until `sluice retry`.
    GaveUp {
        /// The failure recorded.
        error: String,
    },
    /// Nothing to run.
    Settled(Settled),
}

/// How a renewal of a lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewed {
    /// The lease is held for another span.
    Held,
    /// Another attempt holds the batch now: this one cannot commit.
    Lost,
    /// The batch settled meanwhile: there is nothing to renew.
    Settled,
}

/// What an attempt staged, for its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// The outputs, staged and not yet visible.
    pub staged: Staged,
    /// Rows read from the inputs, dead letters included.
    pub rows_in: u64,
    /// The dead letters, staged, when some records were malformed.
    pub dead_letters: Option<Staged>,
    /// Malformed records set aside as dead letters.
    pub rows_dead_lettered: u64,
    /// The lookup tables' versions the SQL joined against.
    pub tables: TableVersions,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committing {
    /// The log holds this attempt's commit: publish its files.
    Committed,
    /// Another attempt committed the batch: this one's files go.
    AlreadyCommitted,
    /// Another run abandoned the batch first.
    Abandoned,
    /// Another attempt took the batch over: this one's files go.
    Fenced,
    /// The log refuses the commit outright and will never name this
    /// attempt's files (a bug: the batch is not in the log as planned);
    /// they go, and the attempt fails with this reason.
    Refused(String),
}

/// How recording a failed attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failing {
    /// The failure is in the log, and the lease released.
    Recorded {
        /// Whether it was the last attempt allowed: the batch waits for
        /// `sluice retry`.
        gave_up: bool,
    },
    /// Another attempt committed the batch meanwhile.
    AlreadyCommitted,
    /// Another attempt holds the batch now, or it settled otherwise.
    Fenced,
}

/// How abandoning a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abandoning {
    /// It is abandoned (by this call or another's first).
    Abandoned,
    /// It was committed first: its messages are in a commit.
    AlreadyCommitted,
}

/// How `sluice retry` of one batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retrying {
    /// The batch is pending again, with a fresh count of attempts.
    Retried,
    /// The log has no such batch.
    Unknown,
    /// It is committed already.
    AlreadyCommitted,
    /// It has not failed: it is pending, and runs with the next run.
    NotFailed,
}

/// How planning a cut of new input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planning {
    /// Batches this call planned.
    pub batches: usize,
    /// Batches another run planned first, left out.
    pub planned_by_others: usize,
}
