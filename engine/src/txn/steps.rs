//! The protocol's steps: each takes `now` from its caller, builds its
//! record, appends it, and says how it ended, the log's refusals read by
//! [`super::decide`].

use chrono::{DateTime, TimeDelta, Utc};

use super::decide::{self, Claim};
use super::leftover::{self, Fence};
use super::outcome::{Abandoning, Committing, Failing, Leasing, Planning, Produced, Renewed, Retrying};
use crate::batch::{Batch, BatchId, PipelineName};
use crate::log::{
    Abandoned, Appended, CheckpointLog, Committed, Failed, Leased, Planned, PlannedBatches, RanBy, Record, Refusal,
    Retried, Sealed, Started,
};
use crate::model::PartitionStart;
use crate::spec::PipelineSpec;
use crate::{Error, Result, failpoint};

/// A pipeline's terms for its batches' attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// How long a lease runs unless renewed.
    pub lease_for: TimeDelta,
    /// Attempts a batch has before it fails until `sluice retry`.
    pub max_attempts: u32,
}

impl Terms {
    /// The terms `spec` sets.
    pub fn of(spec: &PipelineSpec) -> Self {
        Terms {
            lease_for: TimeDelta::from_std(spec.lease_timeout).unwrap_or(TimeDelta::seconds(30)),
            max_attempts: spec.max_attempts,
        }
    }
}

/// Leases batch `id` for `owner`, or says why not: another holds it, it
/// is settled, or its holder died in the last attempt allowed (which
/// fails it now).
pub async fn lease(
    log: &mut CheckpointLog,
    id: &BatchId,
    owner: &str,
    terms: Terms,
    now: DateTime<Utc>,
) -> Result<Leasing> {
    let (attempt, taken_from) = match decide::claim(log.state(), id, owner, now, terms.max_attempts) {
        Claim::Start { attempt } | Claim::Resume { attempt } => (attempt, None),
        Claim::TakeOver { attempt, from } => (attempt, Some(from)),
        Claim::Wait { until, .. } => return Ok(Leasing::Busy { until }),
        Claim::GiveUp { attempt, error } => {
            let record =
                Record::Failed(Failed { batch_id: id.clone(), attempt, error: error.clone(), gave_up: true, at: now });
            return Ok(match log.append(record).await? {
                Appended::Written(_) => Leasing::GaveUp { error },
                Appended::Refused(refusal) => decide::give_up_refused(refusal, log.state(), id),
            });
        }
        Claim::Settled => return Ok(Leasing::Settled(decide::settled(log.state(), id))),
    };
    let record = leased(id, attempt, owner, now + terms.lease_for, now);
    Ok(match log.append(record).await? {
        Appended::Written(_) => Leasing::Leased { attempt, taken_from },
        Appended::Refused(refusal) => decide::lease_refused(refusal, log.state(), id, now),
    })
}

/// Renews `owner`'s lease of `id` as attempt `attempt` for another span.
pub async fn renew(
    log: &mut CheckpointLog,
    id: &BatchId,
    owner: &str,
    attempt: u32,
    terms: Terms,
    now: DateTime<Utc>,
) -> Result<Renewed> {
    Ok(match log.append(leased(id, attempt, owner, now + terms.lease_for, now)).await? {
        Appended::Written(_) => Renewed::Held,
        Appended::Refused(refusal) => decide::renewal_refused(&refusal),
    })
}

fn leased(id: &BatchId, attempt: u32, owner: &str, expires: DateTime<Utc>, now: DateTime<Utc>) -> Record {
    Record::Leased(Leased { batch_id: id.clone(), attempt, owner: owner.to_string(), expires, at: now })
}

/// Commits what attempt `attempt` of `batch` produced: the decision that
/// makes its output final, for the holder of the lease only.
pub async fn commit(
    log: &mut CheckpointLog,
    batch: &Batch,
    attempt: u32,
    produced: &Produced,
    ran_by: &RanBy,
    now: DateTime<Utc>,
) -> Result<Committing> {
    let record = Record::Committed(Committed {
        batch_id: batch.id.clone(),
        attempt,
        staged: produced.staged.clone(),
        rows_in: produced.rows_in,
        dead_letters: produced.dead_letters.clone(),
        rows_dead_lettered: produced.rows_dead_lettered,
        source_positions: decide::source_positions(batch),
        ran_by: Some(ran_by.clone()),
        tables: produced.tables.clone(),
        at: now,
    });
    match log.append(record).await? {
        Appended::Written(seq) => {
            tracing::debug!(seq = seq.0, "committed");
            Ok(Committing::Committed)
        }
        // A batch this attempt leased is gone only once another attempt
        // committed it and it was sealed (never while this attempt's
        // files wait in staging, so never with this attempt's commit).
        Appended::Refused(Refusal::NotPlanned) if log.state().let_committed_go() => Ok(Committing::AlreadyCommitted),
        Appended::Refused(refusal) => {
            let ours = decide::is_commit_of(log.state(), &batch.id, &produced.staged.token);
            Ok(decide::commit_refused(&refusal, ours)
                .unwrap_or_else(|| Committing::Refused(format!("commit of batch {}: {refusal:?}", batch.id))))
        }
    }
}

/// Records that attempt `attempt` of `id` ended in `error` (redacted),
/// which releases the lease. The last attempt allowed, or an error every
/// attempt would meet, fails the batch until `sluice retry`.
pub async fn fail(
    log: &mut CheckpointLog,
    id: &BatchId,
    attempt: u32,
    error: &str,
    fails_every_attempt: bool,
    terms: Terms,
    now: DateTime<Utc>,
) -> Result<Failing> {
    let gave_up = decide::fails_batch(log.state(), id, terms.max_attempts, fails_every_attempt);
    let record = Record::Failed(Failed { batch_id: id.clone(), attempt, error: error.to_string(), gave_up, at: now });
    Ok(match log.append(record).await? {
        Appended::Written(_) => Failing::Recorded { gave_up },
        Appended::Refused(refusal) => decide::failure_refused(&refusal),
    })
}

/// Gives batch `id` up for good, for `reason`: its inputs may be planned
/// again.
pub async fn abandon(log: &mut CheckpointLog, id: &BatchId, reason: &str, now: DateTime<Utc>) -> Result<Abandoning> {
    let record = Record::Abandoned(Abandoned { batch_id: id.clone(), reason: reason.to_string(), at: now });
    match log.append(record).await? {
        Appended::Written(_) => Ok(Abandoning::Abandoned),
        Appended::Refused(refusal) => decide::abandon_refused(&refusal)
            .ok_or_else(|| Error::Refused(format!("abandoning batch {id}: {refusal:?}"))),
    }
}

/// Makes failed batch `id` pending again, with a fresh count of attempts.
pub async fn retry(log: &mut CheckpointLog, id: &BatchId, now: DateTime<Utc>) -> Result<Retrying> {
    Ok(match log.append(Record::Retried(Retried { batch_id: id.clone(), at: now })).await? {
        Appended::Written(_) => Retrying::Retried,
        Appended::Refused(refusal) => decide::retry_refused(&refusal),
    })
}

/// What a plan record makes the log forget (`[source] max_file_age`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forget {
    /// Inputs modified before this are never planned from then on.
    pub before: DateTime<Utc>,
    /// Committed batches of only such inputs, their outputs published
    /// (`planner::horizon::forgettable`).
    pub batches: Vec<BatchId>,
}

/// Plans a cut of new input files: one `planned` record, or one
/// `planned_batches` record for several (or with a [`Forget`]), so that a
/// backlog of many batches costs one write. When another run planned some
/// of the same inputs first, the batches it did not plan are tried again.
/// Nothing is written, and nothing forgotten, when there is nothing to
/// plan.
pub async fn plan_files(
    log: &mut CheckpointLog,
    pipeline: &PipelineName,
    version: u32,
    mut batches: Vec<Batch>,
    forget: Option<Forget>,
    now: DateTime<Utc>,
) -> Result<Planning> {
    let mut planning = Planning { batches: 0, planned_by_others: 0 };
    while !batches.is_empty() {
        let mut plans: Vec<Planned> = batches.iter().map(|batch| planned(pipeline, version, batch, now)).collect();
        let record = match (plans.len(), &forget) {
            (1, None) => Record::Planned(plans.remove(0)),
            _ => Record::PlannedBatches(PlannedBatches {
                batches: plans,
                forget_before: forget.as_ref().map(|forget| forget.before),
                forget: forget.as_ref().map(|forget| forget.batches.clone()).unwrap_or_default(),
            }),
        };
        failpoint::hit("before_plan");
        match log.append(record).await? {
            Appended::Written(seq) => {
                let files: usize = batches.iter().map(|batch| batch.inputs.len()).sum();
                tracing::debug!(seq = seq.0, batches = batches.len(), files, "planned");
                failpoint::hit("after_plan");
                planning.batches = batches.len();
                return Ok(planning);
            }
            Appended::Refused(refusal) => {
                let before = batches.len();
                batches = decide::unplanned(log.state(), batches);
                planning.planned_by_others += before - batches.len();
                tracing::debug!(?refusal, "another run planned {} of the batches first", before - batches.len());
                if batches.len() == before {
                    return Err(Error::Refused(format!("planning {before} batches: {refusal:?}")));
                }
            }
        }
    }
    Ok(planning)
}

/// Plans a stream batch that names exactly its messages (write-ahead):
/// false if another run planned these messages first.
pub async fn plan_stream(
    log: &mut CheckpointLog,
    pipeline: &PipelineName,
    version: u32,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<bool> {
    failpoint::hit("before_plan");
    match log.append(Record::Planned(planned(pipeline, version, batch, now))).await? {
        Appended::Written(seq) => {
            tracing::debug!(seq = seq.0, inputs = %batch.describe_inputs(), "planned");
            failpoint::hit("after_plan");
            Ok(true)
        }
        Appended::Refused(refusal) => {
            tracing::info!(?refusal, "another run planned these messages first; reading on from the log's positions");
            Ok(false)
        }
    }
}

fn planned(pipeline: &PipelineName, version: u32, batch: &Batch, now: DateTime<Utc>) -> Planned {
    Planned {
        batch_id: batch.id.clone(),
        pipeline: pipeline.clone(),
        version,
        inputs: batch.inputs.clone(),
        stream: batch.stream.clone(),
        at: now,
    }
}

/// Records where partitions new to the log begin. Another run may have
/// recorded its start first: the log's first start of a partition holds.
pub async fn start(log: &mut CheckpointLog, partitions: Vec<PartitionStart>, now: DateTime<Utc>) -> Result<()> {
    log.append(Record::Started(Started { partitions, at: now })).await?;
    Ok(())
}

/// Seals the committed batches `ids` (see [`decide::sealable`]): writes
/// the segment of their inputs, then the record that lets them go from the
/// state. Returns how many were sealed: none when another planner sealed
/// some of them first (its segment holds them; ours is vacuum's to remove).
pub async fn seal(log: &mut CheckpointLog, ids: Vec<BatchId>, now: DateTime<Utc>) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let segment = log.write_segment(&ids).await?;
    let count = ids.len();
    Ok(match log.append(Record::Sealed(Sealed { segment, batches: ids, at: now })).await? {
        Appended::Written(_) => count,
        Appended::Refused(_) => 0,
    })
}

/// Makes sure no attempt of the batch behind staged `token` can commit
/// any more, before `sluice vacuum` removes its files: a lease that ran
/// out is taken over by `owner`, running out at once. False if a worker
/// holds the batch's lease, live, or the batch is unknown; the caller
/// decides again on the log as the append left it.
pub async fn fence(log: &mut CheckpointLog, token: &str, owner: &str, now: DateTime<Utc>) -> Result<bool> {
    Ok(match leftover::fence(log.state(), token) {
        Fence::Unknown => false,
        Fence::Needless => true,
        Fence::Take { batch_id, attempt } => match log.append(leased(&batch_id, attempt, owner, now, now)).await? {
            Appended::Written(_) => true,
            Appended::Refused(refusal) => leftover::fence_refused(&refusal),
        },
    })
}
