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

/// What `sluice vacuum` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vacuumed {
    /// Staged attempts removed, outputs and dead letters.
    pub removed: u64,
    /// Committed batches whose publish it finished.
    pub published: u64,
    /// Staged attempts kept because their worker still holds the lease.
    pub kept: u64,
}

/// Removes the staged files of attempts that will never commit, and
/// finishes publishing those that did.
///
/// The staged folders are listed before the log is read: an attempt
/// leases its batch before it stages anything, so the log read afterwards
/// knows every attempt whose files were listed. An attempt whose lease
/// ran out could still wake up and commit, so before its files go the
/// batch is taken over in the log, and the decision is made again on the
/// log as that append left it: if the attempt committed first, its files
/// stay and are published.
pub async fn vacuum(spec: &PipelineSpec) -> Result<Vacuumed> {
    let listed = [spec.sink.staged_tokens().await?, spec.dead_letters.staged_tokens().await?];
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await?;
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
    Ok(done)
}
