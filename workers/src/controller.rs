//! The controller behind `sluice run`: finds new input, plans it into
//! batches (write-ahead), and runs batches with the configured concurrency
//! until caught up or until told to stop.
//!
//! ```text
//! loop:  refresh log ─► replay publishes of committed batches
//!        discover ─► plan new batches ─► append `planned` records
//!        run every pending batch (oldest first, `concurrency` at once)
//!        caught up?  --until-caught-up: exit    otherwise: wait poll_interval
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use sluice_engine::Result;
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::{Appended, CheckpointLog, Planned, Record};
use sluice_engine::planner::plan_new;
use sluice_engine::spec::PipelineSpec;
use tokio::sync::{Mutex, watch};

use crate::worker::{BatchOutcome, run_batch};

/// How `sluice run` behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Process everything pending, then return.
    pub until_caught_up: bool,
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
    /// Batches that failed and are left pending.
    pub failed: u64,
    /// Batches given up because their inputs changed before they ran.
    pub abandoned: u64,
}

/// How often a batch whose failure may pass (storage) is tried in one run.
const TRANSIENT_ATTEMPTS: u32 = 3;

/// Runs the pipeline until caught up (with the option) or until `stop`
/// turns true; the batches in hand when it does are finished first.
pub async fn run(spec: Arc<PipelineSpec>, options: RunOptions, mut stop: watch::Receiver<bool>) -> Result<RunSummary> {
    let log = Arc::new(Mutex::new(CheckpointLog::open(&spec.checkpoint, &spec.name).await?));
    let mut summary = RunSummary::default();
    // Failed batches: how often, and when to try again. Until caught up,
    // a batch is tried once per run; polling, again after a backoff.
    let mut failed: HashMap<BatchId, (u32, Instant)> = HashMap::new();
    let mut storage_failures = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let pending = match prepare(&spec, &log).await {
            Ok(pending) => {
                storage_failures = 0;
                pending
            }
            // A store that fails for a while does not end a controller that
            // runs until stopped; one that runs until caught up gives up
            // after a few tries.
            Err(error)
                if error.is_retryable() && (!options.until_caught_up || storage_failures + 1 < TRANSIENT_ATTEMPTS) =>
            {
                storage_failures += 1;
                let wait = backoff(storage_failures).max(spec.trigger.poll_interval.0);
                tracing::warn!(
                    pipeline = %spec.name,
                    "cannot read the log or list the source, trying again in {wait:?}: {}",
                    spec.file.redact(&error.to_string())
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        let now = Instant::now();
        let runnable: Vec<Batch> = pending
            .into_iter()
            .filter(|batch| match failed.get(&batch.id) {
                None => true,
                Some((_, retry_at)) => !options.until_caught_up && *retry_at <= now,
            })
            .collect();
        let nothing_to_do = runnable.is_empty();

        // Once stopping, no further batch starts; those started finish.
        let mut results = futures::stream::iter(runnable)
            .take_while(|_| futures::future::ready(!*stop.borrow()))
            .map(|batch| {
                let spec = spec.clone();
                let log = log.clone();
                async move {
                    let outcome = run_with_retries(&spec, &log, &batch).await;
                    (batch, outcome)
                }
            })
            .buffer_unordered(spec.concurrency.max(1));
        while let Some((batch, outcome)) = results.next().await {
            if outcome.is_ok() {
                failed.remove(&batch.id);
            }
            match outcome {
                Ok(BatchOutcome::Committed { rows_in, rows_out }) => {
                    summary.batches += 1;
                    summary.files += batch.inputs.len() as u64;
                    summary.rows_in += rows_in;
                    summary.rows_out += rows_out;
                    tracing::info!(
                        pipeline = %spec.name, batch_id = %batch.id, files = batch.inputs.len(),
                        rows_in, rows_out, "batch committed"
                    );
                }
                Ok(BatchOutcome::Abandoned { reason }) => {
                    summary.abandoned += 1;
                    tracing::warn!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        "batch abandoned, its files are planned again as they are now: {reason}"
                    );
                }
                Ok(BatchOutcome::AlreadyCommitted) => {
                    tracing::info!(pipeline = %spec.name, batch_id = %batch.id, "batch was committed by another run");
                }
                Err(error) => {
                    let failures = failed.get(&batch.id).map_or(1, |(n, _)| n + 1);
                    let wait = backoff(failures + 3);
                    let next = if options.until_caught_up {
                        "left pending for the next run".to_string()
                    } else {
                        format!("tried again in {wait:?}")
                    };
                    tracing::error!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        files = ?batch.inputs.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
                        "batch failed, {next}: {}", spec.file.redact(&error.to_string())
                    );
                    failed.insert(batch.id.clone(), (failures, Instant::now() + wait));
                }
            }
        }
        drop(results);

        if *stop.borrow() {
            break;
        }
        if options.until_caught_up {
            if nothing_to_do {
                break;
            }
            continue;
        }
        if nothing_to_do {
            tokio::select! {
                _ = tokio::time::sleep(spec.trigger.poll_interval.0) => {}
                _ = stop.changed() => {}
            }
        }
    }
    summary.failed = failed.len() as u64;
    Ok(summary)
}

/// Brings the log up to date, replays publishes that a crash cut short,
/// plans new input, and returns every pending batch, oldest first.
async fn prepare(spec: &PipelineSpec, log: &Mutex<CheckpointLog>) -> Result<Vec<Batch>> {
    let mut log = log.lock().await;
    log.refresh().await?;
    replay_publishes(spec, &log).await?;

    let discovered = spec.source.discover().await?;
    let batches = plan_new(discovered, log.state(), spec.trigger.limits(), &spec.name, spec.version);
    for batch in batches {
        let record = Record::Planned(Planned {
            batch_id: batch.id.clone(),
            pipeline: spec.name.clone(),
            version: spec.version,
            inputs: batch.inputs.clone(),
            at: Utc::now(),
        });
        match log.append(record).await? {
            Appended::Written(seq) => {
                tracing::debug!(batch_id = %batch.id, seq = seq.0, files = batch.inputs.len(), "planned");
            }
            Appended::Refused(refusal) => {
                tracing::debug!(batch_id = %batch.id, ?refusal, "another run planned these inputs first");
            }
        }
    }
    Ok(log.state().pending())
}

/// Publishes committed batches whose staged files are still waiting.
async fn replay_publishes(spec: &PipelineSpec, log: &CheckpointLog) -> Result<()> {
    let tokens = spec.sink.staged_tokens().await?;
    if tokens.is_empty() {
        return Ok(());
    }
    for entry in log.state().batches() {
        let Some(committed) = &entry.committed else { continue };
        if tokens.binary_search(&committed.staged.token).is_ok() {
            tracing::info!(batch_id = %committed.batch_id, "finishing the publish of a committed batch");
            spec.sink.publish(&committed.staged).await?;
        }
    }
    Ok(())
}

async fn run_with_retries(spec: &PipelineSpec, log: &Mutex<CheckpointLog>, batch: &Batch) -> Result<BatchOutcome> {
    let mut attempt = 1;
    loop {
        match run_batch(spec, log, batch).await {
            Err(error) if error.is_retryable() && attempt < TRANSIENT_ATTEMPTS => {
                let wait = backoff(attempt);
                tracing::warn!(
                    batch_id = %batch.id, attempt, "batch failed, retrying in {wait:?}: {}",
                    spec.file.redact(&error.to_string())
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How long to wait before try number `failures + 1`: 1 s, 2 s, 4 s, ... at most a minute.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64 << failures.min(7)).min(Duration::from_secs(60))
}

/// Seconds since `start`, for the summary line.
pub fn elapsed_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
