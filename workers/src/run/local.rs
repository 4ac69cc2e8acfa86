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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use sluice_engine::Result;
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::CheckpointLog;
use sluice_engine::retry::Backoff;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::txn;
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use super::options::{RunOptions, RunSummary};
use super::pass::{backlog, failed_in_log, plan_pass, seal_committed};
use crate::drive::{Driven, Driver, until_then};
use crate::metrics;
use crate::progress::Progress;
use crate::wake::Wake;
use crate::worker::{BatchOutcome, Runner, batch_span};

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
        let Some(pending) =
            plan_pass(&spec, &log, &options, &mut wake, &HashSet::new(), &mut storage_failures, &mut stop).await?
        else {
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
        let driver = Driver {
            spec: spec.clone(),
            log: log.clone(),
            runner: owner.clone(),
            errors: Backoff::for_run(options.until_caught_up),
            retry_any_error: true,
            refresh: false,
            wait_for_holder: false,
        };
        let mut results = futures::stream::iter(runnable)
            .take_while(|_| futures::future::ready(!*stop.borrow()))
            .map(|batch| {
                let (driver, mut stop) = (driver.clone(), stop.clone());
                let span = batch_span(&spec, &batch, &owner.owner);
                async move {
                    let driven = driver.drive(&batch, None, &mut stop).instrument(span.clone()).await;
                    (batch, driven, span)
                }
            })
            .buffer_unordered(spec.concurrency.max(1));
        let mut committed_since_seal = 0;
        while let Some((batch, driven, span)) = results.next().await {
            let failures = not_before.get(&batch.id).map_or(0, |(_, n)| *n);
            summary.add(&batch, &driven);
            if matches!(driven, Driven::Settled(BatchOutcome::Committed { .. })) {
                committed_since_seal += 1;
                if committed_since_seal >= txn::SEAL_AT {
                    // A long backlog is sealed as it goes, so that the
                    // snapshots written meanwhile stay small.
                    committed_since_seal = 0;
                    if let Err(error) = seal_committed(&spec, &mut *log.lock().await, &HashSet::new()).await {
                        let error = spec.file.redact(&error.to_string());
                        tracing::warn!(pipeline = %spec.name, "cannot seal committed batches yet: {error}");
                    }
                }
            }
            // The outcome is logged in the batch's span, as its work was.
            let in_batch = span.enter();
            match driven {
                Driven::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                    progress.batch_done(summary.rows_in);
                    tracing::info!(
                        pipeline = %spec.name, batch_id = %batch.id, files = batch.inputs.len(),
                        rows_in, rows_out, rows_dead_lettered, "batch committed"
                    );
                }
                Driven::Settled(BatchOutcome::Abandoned { reason }) => {
                    tracing::warn!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        "batch abandoned, its files are planned again as they are now: {reason}"
                    );
                }
                Driven::Settled(BatchOutcome::AlreadyCommitted) => {
                    tracing::info!(pipeline = %spec.name, batch_id = %batch.id, "batch was committed by another run");
                }
                Driven::Settled(BatchOutcome::Failed { error, .. }) => {
                    tracing::error!(
                        pipeline = %spec.name, batch_id = %batch.id,
                        files = ?batch.inputs.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
                        "batch failed {} times and waits for `sluice retry`: {error}", spec.max_attempts
                    );
                }
                Driven::Settled(_) | Driven::Stopped => {}
                Driven::Busy { until } => {
                    let wait = until_then(until);
                    tracing::debug!("held by another worker for {wait:?}");
                    not_before.insert(batch.id.clone(), (Instant::now() + wait, failures));
                }
                // The store fails: the batch is tried again by a later pass.
                Driven::Unrun(error) => {
                    let wait = Backoff::ATTEMPTS.wait(failures + 1);
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
