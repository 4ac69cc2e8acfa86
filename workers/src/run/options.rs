//! What a run is told, what it reports, and how it paces its retries.

use std::time::{Duration, Instant};

/// How `sluice run` behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Process everything pending, then return.
    pub until_caught_up: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// With `[workers] dispatch`: where the key that signs tasks comes from.
    pub task_keys: crate::task_keys::KeySources,
}

/// What one `sluice run` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Batches this run committed.
    pub batches: u64,
    /// Input files in those batches.
    pub files: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Malformed records set aside as dead letters.
    pub rows_dead_lettered: u64,
    /// Batches that used up their attempts in this run.
    pub failed: u64,
    /// Batches given up because their inputs changed before they ran.
    pub abandoned: u64,
    /// Batches of the log that wait for `sluice retry`, at the end.
    pub failed_in_log: u64,
    /// Stream messages in the batches this run committed.
    pub messages: u64,
    /// Redelivered messages recognised as committed already, not written again.
    pub duplicates: u64,
}

/// How often reading the log or listing the source is tried before a run
/// that runs until caught up gives up.
pub(super) const TRANSIENT_ATTEMPTS: u32 = 3;

/// How long to wait before try number `failures + 1`: 1 s, 2 s, 4 s, ... at most a minute.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64 << failures.min(7)).min(Duration::from_secs(60))
}

/// Seconds since `start`, for the summary line.
pub fn elapsed_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// What a spawned batch's panic said, for its failure message.
pub(crate) fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(error) => error.to_string(),
    }
}
