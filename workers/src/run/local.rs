//! `sluice run` of files in this process: plans new input into batches
//! (write-ahead), and runs batches with the configured concurrency until
//! caught up or until told to stop.
//!
//! ```text
//! loop:  refresh log ─► replay publishes of committed batches
//!        discover ─► plan new batches ─► append `planned` records
//!        run every pending batch nobody holds (oldest first, `concurrency` at once)
//!        caught up?  --until-caught-up: exit
//!                    otherwise: sleep until the folder changes (or reconcile_interval / poll_interval)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::CheckpointLog;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use super::options::{RunOptions, RunSummary, backoff, panic_message};
use super::pass::{backlog, failed_in_log, plan_pass};
use crate::metrics::{self, CommittedBatch};
use crate::progress::Progress;
use crate::wake::Wake;
use crate::worker::{BatchOutcome, Runner, batch_span, run_batch};

/// Runs the batches in this process, `[workers] concurrency` at once. A
/// batch is a task of the async runtime that exists only while it runs:
/// an idle controller holds no worker and no thread that is awake.
pub(super) async fn run(
    spec: Arc<PipelineSpec>,
    options: RunOptions,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<CheckpointLog>>,
    mut wake: Wake,
) -> Result<RunSummary> {
    let owner = Runner::here();
    let mut summary = RunSummary::default();
    // Batches not to run before a moment: held by another worker, or
    // backing off after a failed attempt.
    let mut not_before: HashMap<BatchId, (Instant, u32)> = HashMap::new();
    let mut storage_failures = 0;
    let progress = Progress::new(options.progress);
    let mut spec = spec;
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(pending) = plan_pass(&spec, &log, &options, &mut wake, &mut storage_failures, &mut stop).await? else {
            continue;
        };
        // Rotated credentials in secret files are used by the batches about
        // to run: a secret replaced before their input was listed is seen.
        spec = crate::with_fresh_secrets(spec);
        progress.set_work(summary.batches, pending.len() as u64);
        let now = Instant::now();
        not_before.retain(|id, _| pending.iter().any(|batch| batch.id == *id));
        let (runnable, waiting): (Vec<Batch>, Vec<Batch>) =
            pending.into_iter().partition(|batch| not_before.get(&batch.id).is_none_or(|(at, _)| *at <= now));

        if runnable.is_empty() {
            if waiting.is_empty() && options.until_caught_up {
                break;
            }
            // Wake for the first batch that may run again, or for new input.
            let first = waiting.iter().filter_map(|batch| not_before.get(&batch.id)).map(|(at, _)| *at).min();
            wake.wait(first.map(|at| at.saturating_duration_since(now)), &mut stop).await;
            continue;
        }

        // Once stopping, no further batch starts; those started finish.
        let mut results = futures::stream::iter(runnable)
            .take_while(|_| futures::future::ready(!*stop.borrow()))
            .map(|batch| {
                let (spec, log, owner) = (spec.clone(), log.clone(), owner.clone());
                let span = batch_span(&spec, &batch, &owner.owner);
                // Spawned, so that batches run at once on every core, not
                // taking turns on the thread that drives this loop.
                let (spawned, spawned_span) = (batch.clone(), span.clone());
                let running = tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = run_batch(&spec, &log, &batch, &owner, None).instrument(span.clone()).await;
                    (batch, outcome, started.elapsed(), span)
                });
                async move {
                    // A panic ends the attempt, never the process: its lease
                    // runs out and the batch is tried again.
                    running.await.unwrap_or_else(|error| {
                        let outcome = Err(Error::Panicked(panic_message(error)));
                        (spawned, outcome, Duration::ZERO, spawned_span)
                    })
                }
            })
            .buffer_unordered(spec.concurrency.max(1));
        while let Some((batch, outcome, took, span)) = results.next().await {
            let failures = not_before.get(&batch.id).map_or(0, |(_, n)| *n);
            // The outcome is logged in the batch's span, as its work was.
            let in_batch = span.enter();
            match outcome {
                Ok(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                    summary.batches += 1;
                    summary.files += batch.inputs.len() as u64;
                    summary.rows_in += rows_in;
                    summary.rows_out += rows_out;
                    summary.rows_dead_lettered += rows_dead_lettered;
                    let bytes_in = batch.inputs.iter().map(|input| input.size).sum();
                    let counts = CommittedBatch { rows_in, rows_out, rows_dead_lettered, bytes_in, duration: took };
                    metrics::committed(spec.name.as_str(), counts);
                    progress.batch_done(summary.rows_in);
                    tracing::info!(
                        pipeline = %spec.name, batch_id = %batch.id, files = batch.inputs.len(),
                        rows_in, rows_out, rows_dead_lettered, "batch committed"
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
                Ok(BatchOutcome::Settled) => {}
                Ok(BatchOutcome::Busy { until }) => {
                    let wait = (until - Utc::now()).to_std().unwrap_or_default().max(Duration::from_millis(50));
                    tracing::debug!("held by another worker for {wait:?}");
                    not_before.insert(batch.id.clone(), (Instant::now() + wait, failures));
                }
                Ok(BatchOutcome::Fenced) => {
                    tracing::warn!("another worker took the batch over; this attempt is dropped");
                    not_before.insert(batch.id.clone(), (Instant::now() + Duration::from_millis(100), failures));
                }
                Ok(BatchOutcome::Failed { error, gave_up: true }) => {
                    summary.failed += 1;
                    metrics::attempt_failed(spec.name.as_str(), true);
                    tracing::error!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        files = ?batch.inputs.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
                        "batch failed {} times and waits for `sluice retry`: {error}", spec.max_attempts
                    );
                }
                Ok(BatchOutcome::Failed { error, gave_up: false }) => {
                    metrics::attempt_failed(spec.name.as_str(), false);
                    let wait = backoff(failures + 1);
                    tracing::warn!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        "attempt failed, trying again in {wait:?}: {error}"
                    );
                    not_before.insert(batch.id.clone(), (Instant::now() + wait, failures + 1));
                }
                Err(error) => {
                    let wait = backoff(failures + 1);
                    tracing::warn!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        "cannot run the batch, trying again in {wait:?}: {}", spec.file.redact(&error.to_string())
                    );
                    not_before.insert(batch.id.clone(), (Instant::now() + wait, failures + 1));
                }
            }
            drop(in_batch);
            // Never wait for the log here: a batch still in `results` may
            // hold it, and it is only driven by `results.next()`.
            if let Ok(log) = log.try_lock() {
                let (pending, files_behind) = backlog(log.state());
                metrics::backlog(spec.name.as_str(), pending, files_behind);
            }
        }
    }
    drop(progress);
    summary.failed_in_log = failed_in_log(&log).await;
    Ok(summary)
}
