//! The controller behind `sluice run`: finds new input, plans it into
//! batches (write-ahead), and runs batches with the configured concurrency
//! until caught up or until told to stop; with `[workers] dispatch` it
//! hands them to `sluice worker`s instead (see `dispatch`). Any number of
//! controllers may run the same pipeline: leases in the log share the
//! batches out.
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
use sluice_engine::log::{CheckpointLog, Committed, LogState};
use sluice_engine::planner::cut_batches;
use sluice_engine::sink::{Sink, Staged};
use sluice_engine::spec::PipelineSpec;
use sluice_engine::txn::{self, commits_to_replay};
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use crate::changes;
use crate::metrics::{self, CommittedBatch};
use crate::progress::Progress;
use crate::wake::Wake;
use crate::worker::{BatchOutcome, Runner, batch_span, run_batch};

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
pub(crate) const TRANSIENT_ATTEMPTS: u32 = 3;

/// Runs the pipeline until caught up (with the option) or until `stop`
/// turns true; the batches in hand when it does are finished first. With
/// `[workers] dispatch`, the batches go to `sluice worker`s instead.
pub async fn run(spec: Arc<PipelineSpec>, options: RunOptions, stop: watch::Receiver<bool>) -> Result<RunSummary> {
    metrics::register(spec.name.as_str());
    let log = Arc::new(Mutex::new(CheckpointLog::open(&spec.checkpoint, &spec.name).await?));
    if spec.source.stream().is_some() {
        return crate::stream::run(spec, options, stop, log).await;
    }
    // A controller that runs until stopped sleeps until its source changes.
    let wake = Wake::new(&spec, !options.until_caught_up)?;
    match spec.dispatch.clone() {
        Some(dispatch) => crate::dispatch::run(spec, options, stop, log, wake, &dispatch).await,
        None => run_here(spec, options, stop, log, wake).await,
    }
}

/// Runs the batches in this process, `[workers] concurrency` at once. A
/// batch is a task of the async runtime that exists only while it runs:
/// an idle controller holds no worker and no thread that is awake.
async fn run_here(
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

/// One pass of [`prepare`]: the pending batches, or `None` after a store
/// failure that was waited out. A store that fails for a while does not
/// end a controller that runs until stopped; one that runs until caught up
/// gives up after a few tries.
pub(crate) async fn plan_pass(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    options: &RunOptions,
    wake: &mut Wake,
    failures: &mut u32,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Vec<Batch>>> {
    match prepare(spec, log, wake).instrument(tracing::info_span!("plan", pipeline = %spec.name)).await {
        Ok(pending) => {
            *failures = 0;
            let (pending_batches, files_behind) = backlog(log.lock().await.state());
            metrics::backlog(spec.name.as_str(), pending_batches, files_behind);
            Ok(Some(pending))
        }
        Err(error) if error.is_retryable() && (!options.until_caught_up || *failures + 1 < TRANSIENT_ATTEMPTS) => {
            *failures += 1;
            let wait = backoff(*failures).max(spec.trigger.poll_interval.0);
            tracing::warn!(
                pipeline = %spec.name,
                "cannot read the log or list the source, trying again in {wait:?}: {}",
                spec.file.redact(&error.to_string())
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Brings the log up to date, replays publishes that a crash cut short,
/// plans new input, and returns every pending batch, oldest first.
async fn prepare(spec: &PipelineSpec, log: &Mutex<CheckpointLog>, wake: &mut Wake) -> Result<Vec<Batch>> {
    let mut log = log.lock().await;
    log.refresh().await?;
    replay_publishes(spec, &log).await?;

    let source = spec.source.objects().ok_or_else(|| Error::Config("a stream has no files to list".into()))?;
    let mut found = wake.discover(source.as_ref()).await?;
    let inputs = changes::inputs_to_plan(source.as_ref(), std::mem::take(&mut found.inputs), log.state()).await?;
    let batches = cut_batches(inputs, spec.trigger.limits(), &spec.name, spec.version);
    let planned = txn::plan_files(&mut log, &spec.name, spec.version, batches, Utc::now()).await;
    // Notifications are acknowledged once what they name is in the log.
    wake.settle(found, planned.is_ok()).await;
    planned?;
    Ok(log.state().pending())
}

/// Batches of the log that wait for `sluice retry`.
pub(crate) async fn failed_in_log(log: &Mutex<CheckpointLog>) -> u64 {
    log.lock().await.state().batches().filter(|entry| entry.failed.is_some()).count() as u64
}

/// Batches pending (running ones included) and the input files not yet
/// committed, as the gauges show them.
fn backlog(state: &LogState) -> (usize, usize) {
    (state.pending().len(), state.files_waiting())
}

/// Publishes committed batches whose staged files are still waiting:
/// outputs and dead letters. A store that fails ends the pass (it is
/// tried again); a batch whose files cannot be published is reported and
/// left, so that it does not stop every other batch.
pub async fn replay_publishes(spec: &PipelineSpec, log: &CheckpointLog) -> Result<u64> {
    let mut replayed = 0;
    type StagedOf = fn(&Committed) -> Option<&Staged>;
    let sinks: [(&Arc<dyn Sink>, &str, StagedOf); 2] = [
        (&spec.sink, "outputs", |committed| Some(&committed.staged)),
        (&spec.dead_letters, "dead letters", |committed| committed.dead_letters.as_ref()),
    ];
    for (sink, what, staged_of) in sinks {
        let tokens = sink.staged_tokens().await?;
        for committed in commits_to_replay(log.state(), &tokens) {
            let Some(staged) = staged_of(committed) else { continue };
            tracing::info!(batch_id = %committed.batch_id, "finishing the publish of a committed batch's {what}");
            match sink.publish(staged).await {
                Ok(()) => replayed += 1,
                Err(error) if error.is_retryable() => return Err(error),
                Err(error) => tracing::error!(
                    pipeline = %spec.name, batch_id = %committed.batch_id,
                    "cannot publish the committed batch's {what}: {}", spec.file.redact(&error.to_string())
                ),
            }
        }
    }
    Ok(replayed)
}

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
