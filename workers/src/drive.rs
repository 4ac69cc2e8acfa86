//! The one loop every batch runs in, whoever planned it: attempts until
//! it settles (committed, failed for good, abandoned), waiting out other
//! workers' leases and backing off after failures. A run mode says only
//! where its batches come from (a planning pass, a stream's micro-batch,
//! a task from the queue) and what it does once each has settled.
//!
//! ```text
//! attempt (spawned: a panic ends the attempt, never the run)
//!   committed / already committed / abandoned / failed for good ─► Settled
//!   attempt failed ─► wait Backoff::ATTEMPTS ─► attempt
//!   held by another worker ─► wait for its lease (or hand it back: Busy) ─► attempt
//!   fenced ─► wait 100 ms ─► attempt
//!   error (log, broker) ─► wait, within the mode's policy ─► attempt   (or Unrun)
//!   told to stop while waiting ─► Stopped
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sluice_engine::batch::Batch;
use sluice_engine::log::CheckpointLog;
use sluice_engine::retry::Backoff;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::stream::Message;
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use crate::metrics::{self, CommittedBatch};
use crate::worker::{BatchOutcome, Runner, run_batch};

/// How a batch's drive ended.
#[derive(Debug)]
pub enum Driven {
    /// It settled: [`BatchOutcome::Committed`], `AlreadyCommitted`,
    /// `Abandoned`, `Failed` with `gave_up`, or `Settled` (failed before,
    /// or unknown to the log).
    Settled(BatchOutcome),
    /// Another worker holds it until `until`: for a mode that does not
    /// wait for holders.
    Busy {
        /// When their lease runs out unless renewed.
        until: DateTime<Utc>,
    },
    /// The run was told to stop while the batch waited for another try.
    Stopped,
    /// It could not be run: an error the mode's policy does not wait out.
    Unrun(Error),
}

/// One run mode's way of driving its batches.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The pipeline.
    pub spec: Arc<PipelineSpec>,
    /// Its log, shared by the batches this process runs.
    pub log: Arc<Mutex<CheckpointLog>>,
    /// Who runs the attempts.
    pub runner: Runner,
    /// How often an error that is not an attempt's own (the log cannot be
    /// read or written, the broker is gone) is tried.
    pub errors: Backoff,
    /// Whether an error that says it will not pass is tried again all
    /// the same, within `errors`.
    pub retry_any_error: bool,
    /// Whether the log is read again before each attempt: a worker that
    /// runs batches others planned.
    pub refresh: bool,
    /// Whether a batch another worker holds is waited for, or handed back
    /// at once as [`Driven::Busy`].
    pub wait_for_holder: bool,
}

/// How long a fenced attempt waits before the batch is looked at again.
const AFTER_FENCED: Duration = Duration::from_millis(100);

impl Driver {
    /// Runs `batch` until it settles, or the policy or `stop` ends the
    /// drive. A stream batch runs on `in_hand`, the messages just read.
    /// Callers run it inside the batch's span.
    pub async fn drive(
        &self,
        batch: &Batch,
        in_hand: Option<Arc<[Message]>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Driven {
        let name = self.spec.name.as_str();
        let mut failures = 0;
        loop {
            let started = Instant::now();
            let wait = match self.attempt(batch, in_hand.clone()).await {
                Ok(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                    let bytes_in = batch.inputs.iter().map(|input| input.size).sum::<u64>()
                        + in_hand
                            .as_deref()
                            .map_or(0, |messages| messages.iter().map(|m| m.payload.len() as u64).sum());
                    let counts =
                        CommittedBatch { rows_in, rows_out, rows_dead_lettered, bytes_in, duration: started.elapsed() };
                    metrics::committed(name, counts);
                    return Driven::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered });
                }
                Ok(failed @ BatchOutcome::Failed { gave_up: true, .. }) => {
                    metrics::attempt_failed(name, true);
                    return Driven::Settled(failed);
                }
                Ok(
                    settled @ (BatchOutcome::AlreadyCommitted | BatchOutcome::Abandoned { .. } | BatchOutcome::Settled),
                ) => return Driven::Settled(settled),
                Ok(BatchOutcome::Failed { error, gave_up: false }) => {
                    failures += 1;
                    metrics::attempt_failed(name, false);
                    let wait = Backoff::ATTEMPTS.wait(failures);
                    tracing::warn!(pipeline = %name, batch_id = %batch.id, "attempt failed, trying again in {wait:?}: {error}");
                    wait
                }
                Ok(BatchOutcome::Busy { until }) if !self.wait_for_holder => return Driven::Busy { until },
                Ok(BatchOutcome::Busy { until }) => {
                    // The holder may be dead: wait for its lease to run out,
                    // then take the batch over.
                    let wait = until_then(until);
                    tracing::debug!("held by another worker for {wait:?}");
                    wait
                }
                Ok(BatchOutcome::Fenced) => {
                    tracing::warn!("another worker took the batch over; this attempt is dropped");
                    AFTER_FENCED
                }
                Err(panicked @ Error::Panicked(_)) => return Driven::Unrun(panicked),
                Err(error) => {
                    failures += 1;
                    if !(error.is_retryable() || self.retry_any_error) || self.errors.exhausted(failures) {
                        return Driven::Unrun(error);
                    }
                    let wait = self.errors.wait(failures);
                    tracing::warn!(
                        pipeline = %name, batch_id = %batch.id,
                        "cannot run the batch, trying again in {wait:?}: {}", self.spec.file.redact(&error.to_string())
                    );
                    wait
                }
            };
            if !pause(wait, stop).await {
                return Driven::Stopped;
            }
        }
    }

    /// One attempt, spawned so that batches run on every core and a panic
    /// ends the attempt, not the run.
    async fn attempt(&self, batch: &Batch, in_hand: Option<Arc<[Message]>>) -> Result<BatchOutcome> {
        if self.refresh {
            self.log.lock().await.refresh().await?;
        }
        let (spec, log, runner, batch) = (self.spec.clone(), self.log.clone(), self.runner.clone(), batch.clone());
        let running = async move { run_batch(&spec, &log, &batch, &runner, in_hand.as_deref()).await };
        tokio::spawn(running.in_current_span()).await.unwrap_or_else(|error| match error.try_into_panic() {
            Ok(panic) => Err(Error::panicked(&*panic)),
            Err(error) => Err(Error::Panicked(error.to_string())),
        })
    }
}

/// How long until `until`, at least a moment.
pub fn until_then(until: DateTime<Utc>) -> Duration {
    (until - Utc::now()).to_std().unwrap_or_default().max(Duration::from_millis(50))
}

/// Sleeps `wait`; false if told to stop first.
pub async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.changed() => false,
    }
}
