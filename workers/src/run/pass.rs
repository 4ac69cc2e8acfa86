//! One planning pass of a run of files: the log brought up to date,
//! publishes a crash cut short finished, new input planned.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::{CheckpointLog, Committed, LogState};
use sluice_engine::planner::changes::inputs_to_plan;
use sluice_engine::planner::horizon::{any_forgettable, forgettable, horizon, within};
use sluice_engine::planner::{committed_still_listed, cut_batches};
use sluice_engine::retry::Backoff;
use sluice_engine::sink::{Sink, Staged};
use sluice_engine::source::AfterCommit;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::txn::{self, commits_to_replay};
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use super::options::RunOptions;
use crate::drive::pause;
use crate::metrics;
use crate::wake::Wake;

/// One pass of [`prepare`]: the pending batches, or `None` after a store
/// failure that was waited out. `keep` are committed batches the caller
/// has yet to count, which the pass does not seal. A store that fails for a while does not
/// end a controller that runs until stopped; one that runs until caught up
/// gives up after a few tries.
pub(super) async fn plan_pass(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    options: &RunOptions,
    wake: &mut Wake,
    keep: &HashSet<BatchId>,
    failures: &mut u32,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Vec<Batch>>> {
    match prepare(spec, log, wake, keep).instrument(tracing::info_span!("plan", pipeline = %spec.name)).await {
        Ok(pending) => {
            *failures = 0;
            let (pending_batches, files_behind) = backlog(log.lock().await.state());
            metrics::backlog(spec.name.as_str(), pending_batches, files_behind);
            Ok(Some(pending))
        }
        Err(error) if error.is_retryable() && !Backoff::for_run(options.until_caught_up).exhausted(*failures + 1) => {
            *failures += 1;
            let wait = Backoff::ATTEMPTS.wait(*failures).max(spec.trigger.poll_interval.0);
            tracing::warn!(
                pipeline = %spec.name,
                "cannot read the log or list the source, trying again in {wait:?}: {}",
                spec.file.redact(&error.to_string())
            );
            pause(wait, stop).await;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Brings the log up to date, replays publishes that a crash cut short,
/// plans new input, and returns every pending batch, oldest first.
async fn prepare(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    wake: &mut Wake,
    keep: &HashSet<BatchId>,
) -> Result<Vec<Batch>> {
    let mut log = log.lock().await;
    log.refresh().await?;
    replay_publishes(spec, &log).await?;
    seal_committed(spec, &mut log, keep).await?;

    let source = spec.source.objects().ok_or_else(|| Error::Config("a stream has no files to list".into()))?;
    let mut found = wake.discover(source.as_ref()).await?;
    let history = log.history(&found.inputs).await?;
    if source.after_commit() != AfterCommit::Keep {
        // A crash between a commit and its files' removal left them.
        let leftover = committed_still_listed(&found.inputs, log.state(), &history);
        if !leftover.is_empty() {
            let removed = source.settle(&leftover).await?;
            tracing::info!(pipeline = %spec.name, "removed {removed} files of committed batches (after_commit)");
        }
    }
    let horizon = horizon(&found.inputs, log.state(), source.max_file_age());
    let (listed, too_old) = within(std::mem::take(&mut found.inputs), horizon);
    if too_old > 0 {
        tracing::debug!(pipeline = %spec.name, "{too_old} files listed are older than max_file_age: not planned");
    }
    let inputs = inputs_to_plan(source.as_ref(), listed, log.state(), &history).await?;
    let batches = cut_batches(inputs, spec.trigger.limits(), &spec.name, spec.version);
    let forget = match horizon {
        Some(before) if !batches.is_empty() => {
            Some(txn::Forget { before, batches: to_forget(spec, &log, before).await? })
        }
        _ => None,
    };
    let planned = txn::plan_files(&mut log, &spec.name, spec.version, batches, forget, Utc::now()).await;
    // Notifications are acknowledged once what they name is in the log.
    wake.settle(found, planned.is_ok()).await;
    planned?;
    Ok(log.state().pending())
}

/// The committed batches that the plan about to be written may forget at
/// `before` (`max_file_age`): none with files left in staging.
async fn to_forget(spec: &PipelineSpec, log: &CheckpointLog, before: DateTime<Utc>) -> Result<Vec<BatchId>> {
    if !any_forgettable(log.state(), before) {
        return Ok(Vec::new());
    }
    Ok(forgettable(log.state(), before, &staged_batches(spec).await?))
}

/// Seals committed batches into a segment once the state holds enough of
/// them (none with files left in staging, none of `keep`), so that the
/// state a worker loads stays the size of the live work.
pub(crate) async fn seal_committed(
    spec: &PipelineSpec,
    log: &mut CheckpointLog,
    keep: &HashSet<BatchId>,
) -> Result<()> {
    if !txn::seal_due(log.state()) {
        return Ok(());
    }
    let mut kept = staged_batches(spec).await?;
    kept.extend(keep.iter().cloned());
    let ids = txn::sealable(log.state(), &kept);
    let sealed = txn::seal(log, ids, Utc::now()).await?;
    if sealed > 0 {
        tracing::debug!(pipeline = %spec.name, "sealed {sealed} committed batches into a segment of the log");
    }
    Ok(())
}

/// The batches with files in staging, outputs or dead letters.
async fn staged_batches(spec: &PipelineSpec) -> Result<HashSet<BatchId>> {
    let mut staged = HashSet::new();
    for sink in [&spec.sink, &spec.dead_letters] {
        staged.extend(sink.staged_tokens().await?.iter().filter_map(|token| txn::batch_of_token(token)));
    }
    Ok(staged)
}

/// Batches of the log that wait for `sluice retry`.
pub(super) async fn failed_in_log(log: &Mutex<CheckpointLog>) -> u64 {
    log.lock().await.state().batches().filter(|entry| entry.failed.is_some()).count() as u64
}

/// Batches pending (running ones included) and the input files not yet
/// committed, as the gauges show them.
pub(super) fn backlog(state: &LogState) -> (usize, usize) {
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
