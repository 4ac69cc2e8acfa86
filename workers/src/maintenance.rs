//! `sluice retry` and `sluice vacuum`: an operator's repairs, both safe to
//! run while controllers and workers run.

use chrono::Utc;
use sluice_engine::batch::BatchId;
use sluice_engine::log::{Appended, CheckpointLog, Leased, Record, Refusal, Retried, leftover_tokens};
use sluice_engine::spec::PipelineSpec;
use sluice_engine::{Error, Result};

use crate::controller::replay_publishes;

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
        let record = Record::Retried(Retried { batch_id: id.clone(), at: Utc::now() });
        match log.append(record).await? {
            Appended::Written(_) => retried.push((id, files)),
            Appended::Refused(refusal) => {
                let why = match refusal {
                    Refusal::NotPlanned => "the log has no such batch; `sluice status --json` lists the failed ones",
                    Refusal::AlreadyCommitted => "it is committed already",
                    Refusal::NotFailed => "it has not failed: it is pending and runs with the next `sluice run`",
                    _ => "the log refuses it",
                };
                return Err(Error::Config(format!("cannot retry batch {id}: {why}")));
            }
        }
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
/// An attempt whose lease ran out could still wake up and commit, so
/// before its files go the batch is taken over in the log: from then on
/// the log refuses that attempt's commit.
pub async fn vacuum(spec: &PipelineSpec) -> Result<Vacuumed> {
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await?;
    let mut done = Vacuumed { published: replay_publishes(spec, &log).await?, ..Vacuumed::default() };
    let owner = format!("vacuum:{}", crate::worker::owner_id());
    for sink in [&spec.sink, &spec.dead_letters] {
        let tokens = sink.staged_tokens().await?;
        let now = Utc::now();
        let leftovers: Vec<String> = leftover_tokens(log.state(), &tokens, now).into_iter().cloned().collect();
        done.kept += (tokens.len() - leftovers.len()) as u64;
        for token in leftovers {
            if !fence(&mut log, &token, &owner).await? {
                done.kept += 1;
                continue;
            }
            sink.discard(&token).await?;
            done.removed += 1;
        }
    }
    Ok(done)
}

/// Makes sure the attempt behind `token` can never commit; false if a
/// worker holds the batch now.
async fn fence(log: &mut CheckpointLog, token: &str, owner: &str) -> Result<bool> {
    let Some(entry) = sluice_engine::log::batch_of_token(token).and_then(|id| log.state().batch(&id).cloned()) else {
        return Ok(false);
    };
    if !entry.is_pending() || entry.lease.is_none() {
        // Committed, failed, abandoned or released: no attempt of it holds
        // a lease, so none can commit.
        return Ok(true);
    }
    let now = Utc::now();
    let record = Record::Leased(Leased {
        batch_id: entry.planned.batch_id.clone(),
        attempt: entry.attempts + 1,
        owner: owner.to_string(),
        // Runs out at once: any worker may take the batch next.
        expires: now,
        at: now,
    });
    Ok(match log.append(record).await? {
        Appended::Written(_) => true,
        Appended::Refused(Refusal::AlreadyCommitted | Refusal::Abandoned | Refusal::Failed) => true,
        Appended::Refused(_) => false,
    })
}
