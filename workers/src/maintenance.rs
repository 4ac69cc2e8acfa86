//! `sluice retry` and `sluice vacuum`: an operator's repairs, both safe to
//! run while controllers and workers run.

use chrono::Utc;
use sluice_engine::batch::BatchId;
use sluice_engine::log::CheckpointLog;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::txn::{self, Retrying, is_leftover};
use sluice_engine::{Error, Result};

use crate::run::replay_publishes;

/// Which failed batches `sluice retry` plans again.
#[derive(Debug, Clone)]
pub enum RetryTarget {
    /// One batch, by id.
    Batch(String),
    /// Every failed batch.
    AllFailed,
}

/// Makes failed batches pending again, with a fresh count of attempts;
/// returns the ids and input counts of the batches retried.
pub async fn retry(spec: &PipelineSpec, target: &RetryTarget) -> Result<Vec<(BatchId, usize)>> {
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await?;
    let ids: Vec<BatchId> = match target {
        RetryTarget::Batch(id) => vec![BatchId::from_string(id.clone())],
        RetryTarget::AllFailed => log
            .state()
            .batches()
            .filter(|entry| entry.failed.is_some())
            .map(|entry| entry.planned.batch_id.clone())
            .collect(),
    };
    let mut retried = Vec::new();
    for id in ids {
        let files = log.state().batch(&id).map_or(0, |entry| entry.planned.inputs.len());
        let why = match txn::retry(&mut log, &id, Utc::now()).await? {
            Retrying::Retried => {
                retried.push((id, files));
                continue;
            }
            Retrying::Unknown => "the log has no such batch; `sluice status --json` lists the failed ones",
            Retrying::AlreadyCommitted => "it is committed already",
            Retrying::NotFailed => "it has not failed: it is pending and runs with the next `sluice run`",
        };
        return Err(Error::Config(format!("cannot retry batch {id}: {why}")));
    }
    Ok(retried)
}

/// What `sluice vacuum` did, or with `--dry-run` would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vacuumed {
    /// Staged attempts removed, outputs and dead letters.
    pub removed: u64,
    /// Committed batches whose publish it finished.
    pub published: u64,
    /// Staged attempts kept because their worker still holds the lease.
    pub kept: u64,
    /// Objects of the checkpoint log removed: records every kept snapshot
    /// holds, snapshots past the kept ones, segments the log no longer names.
    pub log_objects: u64,
    /// With `--dry-run`, what would go: staged attempts and log objects.
    pub would_remove: Vec<String>,
}

/// Removes the staged files of attempts that will never commit, finishes
/// publishing those that did, and removes the checkpoint log's objects
/// that no reader needs ([`CheckpointLog::garbage`]). With `dry_run` it
/// changes nothing and says what it would remove.
///
/// The staged folders are listed before the log is read: an attempt
/// leases its batch before it stages anything, so the log read afterwards
/// knows every attempt whose files were listed. An attempt whose lease
/// ran out could still wake up and commit, so before its files go the
/// batch is taken over in the log, and the decision is made again on the
/// log as that append left it: if the attempt committed first, its files
/// stay and are published.
pub async fn vacuum(spec: &PipelineSpec, dry_run: bool) -> Result<Vacuumed> {
    let listed = [spec.sink.staged_tokens().await?, spec.dead_letters.staged_tokens().await?];
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await?;
    if dry_run {
        return dry_vacuum(&mut log, listed).await;
    }
    let mut done = Vacuumed { published: replay_publishes(spec, &log).await?, ..Vacuumed::default() };
    let owner = format!("vacuum:{}", sluice_engine::model::owner_id());
    for (sink, tokens) in [&spec.sink, &spec.dead_letters].into_iter().zip(listed) {
        for token in tokens {
            let leftover = |log: &CheckpointLog| is_leftover(log.state(), &token, Utc::now());
            if leftover(&log) && txn::fence(&mut log, &token, &owner, Utc::now()).await? && leftover(&log) {
                sink.discard(&token).await?;
                done.removed += 1;
            } else {
                done.kept += 1;
            }
        }
    }
    // Commits that landed while vacuum ran are published now.
    done.published += replay_publishes(spec, &log).await?;
    let garbage = log.garbage(Utc::now()).await?;
    log.remove(&garbage).await?;
    done.log_objects = garbage.len() as u64;
    Ok(done)
}

/// What [`vacuum`] would remove, changing nothing: staged attempts no
/// commit names and whose lease is not live (vacuum would take over a
/// lease that ran out first), and the log's garbage.
async fn dry_vacuum(log: &mut CheckpointLog, listed: [Vec<String>; 2]) -> Result<Vacuumed> {
    let mut done = Vacuumed::default();
    for (what, tokens) in ["outputs", "dead letters"].into_iter().zip(listed) {
        for token in tokens {
            if is_leftover(log.state(), &token, Utc::now()) {
                done.removed += 1;
                done.would_remove.push(format!("staged {what} of attempt {token} (below _sluice/staging/)"));
            } else {
                done.kept += 1;
            }
        }
    }
    let garbage = log.garbage(Utc::now()).await?;
    done.log_objects = garbage.len() as u64;
    let objects = garbage.snapshots.iter().chain(&garbage.segments).chain(&garbage.records);
    done.would_remove.extend(objects.map(|path| format!("checkpoint log object {path}")));
    Ok(done)
}
