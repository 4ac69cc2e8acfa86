//! `sluice run` with `[workers] dispatch`: the controller plans batches and
//! publishes each as a task (see [`crate::tasks`]); `sluice worker`s on any
//! machine run them. The controller runs no batch itself: it follows the
//! log until every batch it planned is committed or failed.
//!
//! ```text
//! loop:  refresh log ─► discover ─► plan ─► publish a task per pending batch not yet sent
//!        count what the log says was committed, failed or abandoned
//!        caught up?  --until-caught-up: exit    otherwise: wait for news
//! ```
//!
//! A task may reach the queue twice (a controller restarted before its
//! batches were committed sends them again): the second is acked and
//! skipped by whichever worker gets it, since the log says the batch is
//! committed, or waits for the holder's lease. Nothing runs twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Result;
use sluice_engine::batch::BatchId;
use sluice_engine::log::CheckpointLog;
use sluice_engine::retry::Backoff;
use sluice_engine::spec::{Dispatch, PipelineSpec};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use super::options::{RunOptions, RunSummary};
use super::pass::{failed_in_log, plan_pass};
use crate::drive::pause;
use crate::progress::Progress;
use crate::tasks::{Task, TaskQueue, dead_queue, shown_url};
use crate::wake::Wake;

/// How often the log is read while tasks are out.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How long without a commit before the controller says it is waiting for workers.
const QUIET_HINT: Duration = Duration::from_secs(30);

/// Plans, publishes and follows, until caught up or stopped.
pub(super) async fn run(
    spec: Arc<PipelineSpec>,
    options: RunOptions,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<CheckpointLog>>,
    mut wake: Wake,
    dispatch: &Dispatch,
) -> Result<RunSummary> {
    let shown = shown_url(&dispatch.url);
    // Tasks are signed with the first key; without one they go unsigned,
    // and only workers started with --insecure-unsigned-tasks run them.
    let key = options.task_keys.load().map_err(sluice_engine::Error::Config)?.into_iter().next();
    match &key {
        Some(key) => tracing::info!(pipeline = %spec.name, task_key = key.id(), "tasks are signed"),
        None => tracing::warn!(
            pipeline = %spec.name,
            "no task key (SLUICE_TASK_KEY or --task-key-file): tasks go unsigned, and only workers started with \
             --insecure-unsigned-tasks run them"
        ),
    }
    let mut queue: Option<TaskQueue> = None;
    let mut failures = 0;
    let mut broker_failures = 0;
    let policy = Backoff::for_run(options.until_caught_up);
    // Pending batches with a task out, sent by this run.
    let mut sent: HashSet<BatchId> = HashSet::new();
    // Every batch this run sent, and those of them already counted.
    let mut followed: HashSet<BatchId> = HashSet::new();
    let mut counted: HashSet<BatchId> = HashSet::new();
    let mut summary = RunSummary::default();
    let progress = Progress::new(options.progress);
    let mut last_news = Instant::now();
    let mut spec = spec;
    loop {
        if *stop.borrow() {
            break;
        }
        spec = crate::with_fresh_secrets(spec);
        // One trace a pass: the plan, then a `task` span per task sent,
        // which the worker's batch joins (traces.rs).
        let pass = tracing::info_span!("dispatch", pipeline = %spec.name);
        // Batches sent and not yet counted stay in the state, to be counted.
        let uncounted: HashSet<BatchId> = followed.difference(&counted).cloned().collect();
        let planned =
            plan_pass(&spec, &log, &options, &mut wake, &uncounted, &mut failures, &mut stop).instrument(pass.clone());
        let Some(pending) = planned.await? else {
            continue;
        };
        let pending_ids: HashSet<&BatchId> = pending.iter().map(|batch| &batch.id).collect();
        sent.retain(|id| pending_ids.contains(id));
        let unsent: Vec<_> = pending.iter().filter(|batch| !sent.contains(&batch.id)).cloned().collect();
        if !unsent.is_empty() {
            if queue.is_none() {
                match TaskQueue::connect(&dispatch.url, &dispatch.queue).await {
                    Ok(connected) => queue = Some(connected),
                    Err(error) => {
                        broker_failures += 1;
                        if policy.exhausted(broker_failures) {
                            return Err(error);
                        }
                        let wait = policy.wait(broker_failures);
                        tracing::warn!(pipeline = %spec.name, "trying again in {wait:?}: {error}");
                        pause(wait, &mut stop).await;
                        continue;
                    }
                }
            }
            if let Some(connected) = &queue {
                for batch in unsent {
                    let id = batch.id.clone();
                    let task = tracing::info_span!(parent: &pass, "task", pipeline = %spec.name, batch_id = %id);
                    let published = connected.publish(&Task::new(&spec, batch), key.as_ref()).instrument(task).await;
                    if let Err(error) = published {
                        broker_failures += 1;
                        if policy.exhausted(broker_failures) {
                            return Err(error);
                        }
                        tracing::warn!(pipeline = %spec.name, batch_id = %id, "reconnecting: {error}");
                        if let Some(lost) = queue.take() {
                            lost.close().await;
                        }
                        break;
                    }
                    tracing::info!(pipeline = %spec.name, batch_id = %id, queue = %dispatch.queue, "task sent");
                    broker_failures = 0;
                    sent.insert(id.clone());
                    followed.insert(id);
                }
            }
        }

        drop(pass);
        let before = counted.len();
        tally(&log, &followed, &mut counted, &mut summary).await;
        if counted.len() > before {
            last_news = Instant::now();
            progress.batch_done(summary.rows_in);
        }
        progress.set_work(summary.batches, pending.len() as u64);
        if pending.is_empty() {
            if options.until_caught_up {
                break;
            }
            wake.wait(None, &mut stop).await;
        } else {
            if last_news.elapsed() >= QUIET_HINT {
                tracing::info!(
                    pipeline = %spec.name,
                    "{} batches wait in the queue {} at {shown}; start `sluice worker --tasks URL --queue {}` \
                     to run them (tasks no worker could run wait in {} with the reason in the worker's log)",
                    pending.len(), dispatch.queue, dispatch.queue, dead_queue(&dispatch.queue)
                );
                last_news = Instant::now();
            }
            // Follow the log until the batches out are done or it is time
            // to list the source again; only the log is read meanwhile.
            let until = Instant::now() + spec.trigger.poll_interval.0.max(FOLLOW_EVERY);
            while Instant::now() < until && !*stop.borrow() {
                wake.wait(Some(FOLLOW_EVERY), &mut stop).await;
                if let Err(error) = log.lock().await.refresh().await {
                    tracing::warn!(pipeline = %spec.name, "cannot read the log: {}", spec.file.redact(&error.to_string()));
                    break;
                }
                let before = counted.len();
                tally(&log, &followed, &mut counted, &mut summary).await;
                if counted.len() > before {
                    last_news = Instant::now();
                    progress.batch_done(summary.rows_in);
                }
                if followed.iter().all(|id| counted.contains(id)) {
                    break;
                }
            }
        }
    }
    drop(progress);
    if let Some(queue) = queue {
        queue.close().await;
    }
    summary.failed_in_log = failed_in_log(&log).await;
    Ok(summary)
}

/// Adds to `summary` the batches of `followed` that the log now says are
/// committed, failed or abandoned, once each.
async fn tally(
    log: &Mutex<CheckpointLog>,
    followed: &HashSet<BatchId>,
    counted: &mut HashSet<BatchId>,
    summary: &mut RunSummary,
) {
    let log = log.lock().await;
    for id in followed.difference(&counted.clone()) {
        let Some(entry) = log.state().batch(id) else {
            // Sealed by another planner: committed, its counts only in the
            // log's tally.
            if !log.state().sealed().is_empty() {
                summary.batches += 1;
                counted.insert(id.clone());
            }
            continue;
        };
        if let Some(committed) = &entry.committed {
            summary.batches += 1;
            summary.files += entry.planned.inputs.len() as u64;
            summary.rows_in += committed.rows_in;
            summary.rows_out += committed.staged.rows();
            summary.rows_dead_lettered += committed.rows_dead_lettered;
        } else if entry.abandoned.is_some() {
            summary.abandoned += 1;
        } else if entry.failed.is_some() {
            summary.failed += 1;
        } else {
            continue;
        }
        counted.insert(id.clone());
    }
}
