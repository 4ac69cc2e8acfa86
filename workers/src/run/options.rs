//! What a run is told, and what it reports.

use std::time::Instant;

use sluice_engine::batch::Batch;
use sluice_engine::stream::StreamInputs;

use crate::drive::Driven;
use crate::worker::BatchOutcome;

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

/// What one `sluice run`, or one `sluice worker`, did.
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
    /// `sluice worker`: tasks taken from the queue.
    pub tasks: u64,
    /// `sluice worker`: tasks whose batch was settled already, acknowledged.
    pub skipped: u64,
    /// `sluice worker`: tasks refused into the dead queue.
    pub rejected: u64,
}

impl RunSummary {
    /// Folds in how one batch's drive ended.
    pub(crate) fn add(&mut self, batch: &Batch, driven: &Driven) {
        match driven {
            Driven::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                self.batches += 1;
                self.files += batch.inputs.len() as u64;
                self.messages += batch.stream.as_ref().map_or(0, StreamInputs::messages);
                self.rows_in += rows_in;
                self.rows_out += rows_out;
                self.rows_dead_lettered += rows_dead_lettered;
            }
            Driven::Settled(BatchOutcome::Failed { gave_up: true, .. }) => self.failed += 1,
            Driven::Settled(BatchOutcome::Abandoned { .. }) => self.abandoned += 1,
            Driven::Settled(_) => self.skipped += 1,
            _ => {}
        }
    }
}

/// Seconds since `start`, for the summary line.
pub fn elapsed_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
