//! The commit protocol's decisions about one batch, as pure functions of
//! what was read from the log: whether to start, resume or take over a
//! batch, whether a failed attempt was the last, and what the log's
//! refusal of each step means.
//!
//! ```text
//! planned ──► leased(1) ──► committed ──► publish (replayed after a crash)
//!               │  └─ runs out ──► leased(2) by another: attempt 1 is fenced
//!               └─ error ──► failed(1) ──► leased(2) ... failed(max, gave_up) ──► retry ──► pending
//! ```

use chrono::{DateTime, Utc};

use super::outcome::{Abandoning, Committing, Failing, Leasing, Renewed, Retrying, Settled};
use crate::batch::{Batch, BatchId};
use crate::log::{BatchEntry, LogState, Refusal};
use crate::model::{OffsetRange, StreamInputs};

/// What a worker does with a batch, given the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds it: lease it as attempt `attempt`.
    Start {
        /// The attempt number to lease.
        attempt: u32,
    },
    /// Its holder's lease ran out (the holder died or stalled): lease it as
    /// the next attempt, which fences the old one off.
    TakeOver {
        /// The attempt number to lease.
        attempt: u32,
        /// The holder whose lease ran out.
        from: String,
    },
    /// This worker holds it already: renew and go on with the same attempt.
    Resume {
        /// The attempt it holds.
        attempt: u32,
    },
    /// Someone else holds it: leave it to them until `until`.
    Wait {
        /// Who holds it.
        owner: String,
        /// When their lease runs out unless renewed.
        until: DateTime<Utc>,
    },
    /// Its holder's lease ran out and it was the last attempt allowed:
    /// that attempt died without recording why (killed, panicked, out of
    /// memory), and the batch is failed instead of taken over again.
    GiveUp {
        /// The attempt that died, whose failure is recorded.
        attempt: u32,
        /// Why the batch fails.
        error: String,
    },
    /// Nothing to run: it is committed, failed, abandoned or unknown.
    Settled,
}

/// Decides what `owner` does with batch `id` at `now`, when a batch has
/// `max_attempts` attempts: a lease that ran out is taken over while
/// attempts remain, and fails the batch once none does.
pub fn claim(state: &LogState, id: &BatchId, owner: &str, now: DateTime<Utc>, max_attempts: u32) -> Claim {
    let Some(entry) = state.batch(id).filter(|entry| entry.is_pending()) else { return Claim::Settled };
    match &entry.lease {
        Some(lease) if lease.owner == owner => Claim::Resume { attempt: lease.attempt },
        Some(lease) if lease.expires > now => Claim::Wait { owner: lease.owner.clone(), until: lease.expires },
        Some(lease) if entry.attempts.saturating_sub(entry.attempts_at_retry) >= max_attempts.max(1) => Claim::GiveUp {
            attempt: lease.attempt,
            error: format!(
                "attempt {} ended without recording why (killed, panicked or out of memory), \
                 the last of {max_attempts} allowed",
                lease.attempt
            ),
        },
        Some(lease) => Claim::TakeOver { attempt: entry.attempts + 1, from: lease.owner.clone() },
        None => Claim::Start { attempt: entry.attempts + 1 },
    }
}

/// Whether an attempt that just ended in an error is the last one allowed.
pub fn gives_up(entry: &BatchEntry, max_attempts: u32) -> bool {
    entry.failures + 1 >= max_attempts
}

/// Whether an attempt that ended in `error` fails the batch: it was the
/// last allowed, or every attempt would meet the same error.
pub fn fails_batch(state: &LogState, id: &BatchId, max_attempts: u32, fails_every_attempt: bool) -> bool {
    fails_every_attempt || state.batch(id).is_some_and(|entry| gives_up(entry, max_attempts))
}

/// Why a batch the log will not lease has nothing to run.
pub fn settled(state: &LogState, id: &BatchId) -> Settled {
    match state.batch(id) {
        Some(entry) if entry.committed.is_some() => Settled::Committed,
        Some(entry) => match &entry.abandoned {
            Some(abandoned) => Settled::Abandoned { reason: abandoned.reason.clone() },
            None => Settled::Closed,
        },
        None => Settled::Closed,
    }
}

/// What the log's refusal of a lease taken at `now` means.
pub fn lease_refused(refusal: Refusal, state: &LogState, id: &BatchId, now: DateTime<Utc>) -> Leasing {
    match refusal {
        Refusal::Leased { expires, .. } => Leasing::Busy { until: expires },
        // Another took the same attempt number first: try again at once.
        Refusal::Fenced => Leasing::Busy { until: now },
        _ => Leasing::Settled(settled(state, id)),
    }
}

/// What the log's refusal of a give-up (a dead holder's failure) means.
pub fn give_up_refused(refusal: Refusal, state: &LogState, id: &BatchId) -> Leasing {
    match refusal {
        Refusal::Leased { expires, .. } => Leasing::Busy { until: expires },
        _ => Leasing::Settled(settled(state, id)),
    }
}

/// What the log's refusal of a renewal means.
pub fn renewal_refused(refusal: &Refusal) -> Renewed {
    match refusal {
        Refusal::Leased { .. } | Refusal::Fenced => Renewed::Lost,
        _ => Renewed::Settled,
    }
}

/// What the log's refusal of a commit means; `None` for a refusal no
/// commit of a leased batch can meet. `ours` says whether the log's
/// commit of the batch is this attempt's: a put that succeeded, was
/// reported lost and was retried by the store's client comes back as
/// taken.
pub fn commit_refused(refusal: &Refusal, ours: bool) -> Option<Committing> {
    match refusal {
        Refusal::AlreadyCommitted if ours => Some(Committing::Committed),
        Refusal::AlreadyCommitted => Some(Committing::AlreadyCommitted),
        Refusal::Abandoned => Some(Committing::Abandoned),
        Refusal::Fenced | Refusal::Leased { .. } => Some(Committing::Fenced),
        _ => None,
    }
}

/// Whether the log's commit of `id` is the attempt behind `token`.
pub fn is_commit_of(state: &LogState, id: &BatchId, token: &str) -> bool {
    state.batch(id).and_then(|entry| entry.committed.as_ref()).is_some_and(|committed| committed.staged.token == token)
}

/// What the log's refusal of a failed attempt's record means.
pub fn failure_refused(refusal: &Refusal) -> Failing {
    match refusal {
        Refusal::AlreadyCommitted => Failing::AlreadyCommitted,
        _ => Failing::Fenced,
    }
}

/// What the log's refusal to abandon a batch means; `None` for a batch
/// the log does not know.
pub fn abandon_refused(refusal: &Refusal) -> Option<Abandoning> {
    match refusal {
        Refusal::Abandoned => Some(Abandoning::Abandoned),
        Refusal::AlreadyCommitted => Some(Abandoning::AlreadyCommitted),
        _ => None,
    }
}

/// What the log's refusal of `sluice retry` means.
pub fn retry_refused(refusal: &Refusal) -> Retrying {
    match refusal {
        Refusal::NotPlanned => Retrying::Unknown,
        Refusal::AlreadyCommitted => Retrying::AlreadyCommitted,
        _ => Retrying::NotFailed,
    }
}

/// The source positions that move with a batch's output: a Kafka batch's
/// offset ranges.
pub fn source_positions(batch: &Batch) -> Vec<OffsetRange> {
    match &batch.stream {
        Some(StreamInputs::Kafka { ranges }) => ranges.clone(),
        _ => Vec::new(),
    }
}

/// The batches of a cut that the log has not seen any input of: after
/// another run planned some of the same inputs first, the rest are
/// planned again.
pub fn unplanned(state: &LogState, batches: Vec<Batch>) -> Vec<Batch> {
    batches.into_iter().filter(|batch| batch.inputs.iter().all(|input| !state.has_seen(&input.key()))).collect()
}

/// Committed batches a planner seals at once, and the fewest it waits
/// for: a snapshot holds at most about this many committed batches.
pub const SEAL_AT: usize = 1000;

/// The committed batches to seal, oldest first, once there are at least
/// [`SEAL_AT`] of them; none of them with files in staging (`staged`, the
/// batches of the staged tokens), whose publish may not be finished or
/// whose leftovers vacuum has yet to remove.
pub fn sealable(state: &LogState, staged: &std::collections::HashSet<BatchId>) -> Vec<BatchId> {
    let mut committed: Vec<_> = state
        .batches()
        .filter(|entry| LogState::may_seal(entry) && !staged.contains(&entry.planned.batch_id))
        .collect();
    if committed.len() < SEAL_AT {
        return Vec::new();
    }
    committed.sort_by_key(|entry| (entry.planned_seq, entry.planned_index));
    committed.into_iter().map(|entry| entry.planned.batch_id.clone()).collect()
}

/// Whether enough committed batches are in the state that
/// [`sealable`] may find some: whether to look at staging at all.
pub fn seal_due(state: &LogState) -> bool {
    state.batches().filter(|entry| LogState::may_seal(entry)).count() >= SEAL_AT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Record;
    use crate::txn::testing::{Log, at, committed, id};

    #[test]
    fn committed_batches_are_sealed_oldest_first_once_there_are_enough_and_none_kept() {
        use crate::batch::{InputObject, PipelineName};
        use crate::log::{Leased, Planned};
        let mut log = Log(LogState::default());
        let batch = |n: usize| BatchId::from_string(format!("b{n}"));
        for n in 0..SEAL_AT + 2 {
            log.push(Record::Planned(Planned {
                batch_id: batch(n),
                pipeline: PipelineName::new("p").expect("valid"),
                version: 1,
                inputs: vec![InputObject { path: format!("{n}.csv"), size: 1, ..InputObject::default() }],
                stream: None,
                at: at(0),
            }));
        }
        let commit = |log: &mut Log, n: usize| {
            let lease = Leased { batch_id: batch(n), attempt: 1, owner: "w".into(), expires: at(9), at: at(0) };
            log.push(Record::Leased(lease)).push(committed(batch(n), 1, "t"));
        };
        for n in 1..SEAL_AT {
            commit(&mut log, n);
        }
        assert!(!seal_due(&log.0) && sealable(&log.0, &Default::default()).is_empty(), "not yet enough");
        commit(&mut log, SEAL_AT + 1);
        commit(&mut log, 0);
        assert!(seal_due(&log.0));
        let all = sealable(&log.0, &Default::default());
        assert_eq!(all.len(), SEAL_AT + 1, "every committed one; b{} is pending", SEAL_AT);
        assert_eq!((all[0].clone(), all[SEAL_AT].clone()), (batch(0), batch(SEAL_AT + 1)), "in planned order");
        let kept = [batch(0), batch(1)].into();
        assert!(sealable(&log.0, &kept).is_empty(), "too few once those staged or kept are left out");
    }

    #[test]
    fn start_a_batch_nobody_holds() {
        let log = Log::planned();
        assert_eq!(claim(&log.0, &id(), "w", at(1), 3), Claim::Start { attempt: 1 });
    }

    #[test]
    fn resume_a_batch_this_worker_holds() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10);
        assert_eq!(claim(&log.0, &id(), "w", at(5), 3), Claim::Resume { attempt: 1 });
        assert_eq!(claim(&log.0, &id(), "v", at(5), 3), Claim::Wait { owner: "w".into(), until: at(10) });
    }

    #[test]
    fn take_over_a_lease_that_ran_out() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10);
        assert_eq!(claim(&log.0, &id(), "v", at(10), 3), Claim::TakeOver { attempt: 2, from: "w".into() });
    }

    #[test]
    fn an_attempt_taken_over_is_fenced() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10).lease(2, "v", 11, 20);
        let late = committed(id(), 1, "b1-w");
        assert_eq!(log.0.admits(&late), Err(Refusal::Fenced));
        assert_eq!(claim(&log.0, &id(), "w", at(12), 3), Claim::Wait { owner: "v".into(), until: at(20) });
    }

    #[test]
    fn settled_batches_are_not_run() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10).commit(1, "b1-w");
        assert_eq!(claim(&log.0, &id(), "v", at(11), 3), Claim::Settled);
        assert_eq!(claim(&log.0, &BatchId::from_string("nope".into()), "v", at(11), 3), Claim::Settled);
    }

    #[test]
    fn the_last_allowed_failure_gives_up() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10).fail(1, false);
        let entry = log.0.batch(&id()).expect("planned");
        assert!(!gives_up(entry, 3));
        assert!(gives_up(entry, 2));
        assert_eq!(claim(&log.0, &id(), "v", at(2), 3), Claim::Start { attempt: 2 }, "a failure releases the lease");
        log.lease(2, "v", 2, 12).fail(2, true);
        assert_eq!(claim(&log.0, &id(), "v", at(3), 3), Claim::Settled);
    }

    #[test]
    fn a_lease_that_ran_out_is_taken_over_while_attempts_remain_then_fails_the_batch() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10);
        assert_eq!(claim(&log.0, &id(), "v", at(10), 2), Claim::TakeOver { attempt: 2, from: "w".into() });
        log.lease(2, "v", 10, 20);
        assert_eq!(claim(&log.0, &id(), "u", at(15), 2), Claim::Wait { owner: "v".into(), until: at(20) });
        let Claim::GiveUp { attempt, error } = claim(&log.0, &id(), "u", at(20), 2) else { panic!("not given up") };
        assert_eq!(attempt, 2);
        assert!(error.starts_with("attempt 2 ended without recording why"), "{error}");
        log.fail(2, true);
        assert_eq!(claim(&log.0, &id(), "u", at(21), 2), Claim::Settled, "the give-up is admitted");
    }

    #[test]
    fn a_refused_lease_says_who_holds_the_batch_or_why_it_is_settled() {
        let mut log = Log::planned();
        let held = Refusal::Leased { owner: "v".into(), expires: at(9) };
        assert_eq!(lease_refused(held.clone(), &log.0, &id(), at(1)), Leasing::Busy { until: at(9) });
        assert_eq!(lease_refused(Refusal::Fenced, &log.0, &id(), at(1)), Leasing::Busy { until: at(1) });
        assert_eq!(give_up_refused(held, &log.0, &id()), Leasing::Busy { until: at(9) });
        log.lease(1, "w", 0, 10).commit(1, "b1-w");
        assert_eq!(
            lease_refused(Refusal::AlreadyCommitted, &log.0, &id(), at(1)),
            Leasing::Settled(Settled::Committed)
        );
        let unknown = BatchId::from_string("nope".into());
        assert_eq!(lease_refused(Refusal::NotPlanned, &log.0, &unknown, at(1)), Leasing::Settled(Settled::Closed));
    }

    #[test]
    fn an_abandoned_batch_is_settled_with_its_reason() {
        let mut log = Log::planned();
        log.push(Record::Abandoned(crate::log::Abandoned { batch_id: id(), reason: "moved".into(), at: at(1) }));
        assert_eq!(settled(&log.0, &id()), Settled::Abandoned { reason: "moved".into() });
    }

    #[test]
    fn a_refused_commit_is_ours_taken_abandoned_or_fenced() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10).commit(1, "b1-w");
        assert!(is_commit_of(&log.0, &id(), "b1-w"));
        assert!(!is_commit_of(&log.0, &id(), "b1-v"));
        assert_eq!(commit_refused(&Refusal::AlreadyCommitted, true), Some(Committing::Committed));
        assert_eq!(commit_refused(&Refusal::AlreadyCommitted, false), Some(Committing::AlreadyCommitted));
        assert_eq!(commit_refused(&Refusal::Abandoned, false), Some(Committing::Abandoned));
        assert_eq!(commit_refused(&Refusal::Fenced, false), Some(Committing::Fenced));
        assert_eq!(commit_refused(&Refusal::NotPlanned, false), None);
    }

    #[test]
    fn refusals_of_renewal_failure_abandon_and_retry() {
        assert_eq!(renewal_refused(&Refusal::Fenced), Renewed::Lost);
        assert_eq!(renewal_refused(&Refusal::AlreadyCommitted), Renewed::Settled);
        assert_eq!(failure_refused(&Refusal::AlreadyCommitted), Failing::AlreadyCommitted);
        assert_eq!(failure_refused(&Refusal::Fenced), Failing::Fenced);
        assert_eq!(abandon_refused(&Refusal::Abandoned), Some(Abandoning::Abandoned));
        assert_eq!(abandon_refused(&Refusal::AlreadyCommitted), Some(Abandoning::AlreadyCommitted));
        assert_eq!(abandon_refused(&Refusal::NotPlanned), None);
        assert_eq!(retry_refused(&Refusal::NotPlanned), Retrying::Unknown);
        assert_eq!(retry_refused(&Refusal::AlreadyCommitted), Retrying::AlreadyCommitted);
        assert_eq!(retry_refused(&Refusal::NotFailed), Retrying::NotFailed);
    }

    #[test]
    fn an_error_every_attempt_meets_fails_the_batch_at_once() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10);
        assert!(!fails_batch(&log.0, &id(), 3, false));
        assert!(fails_batch(&log.0, &id(), 3, true));
        assert!(fails_batch(&log.0, &id(), 1, false));
    }

    #[test]
    fn a_cut_loses_the_batches_another_run_planned_first() {
        let log = Log::planned();
        let input = |path: &str| crate::batch::InputObject {
            path: path.into(),
            size: 1,
            last_modified: at(0),
            ..Default::default()
        };
        let taken = Batch::of_objects(BatchId::from_string("x".into()), vec![input("1.csv")]);
        let fresh = Batch::of_objects(BatchId::from_string("y".into()), vec![input("2.csv")]);
        let left: Vec<BatchId> = unplanned(&log.0, vec![taken, fresh]).into_iter().map(|batch| batch.id).collect();
        assert_eq!(left, [BatchId::from_string("y".into())]);
    }

    #[test]
    fn only_a_kafka_batch_moves_source_positions() {
        let range = crate::model::OffsetRange { topic: "t".into(), partition: 0, start: 0, end: 2 };
        let mut batch = Batch::of_objects(id(), vec![]);
        assert!(source_positions(&batch).is_empty());
        batch.stream = Some(StreamInputs::Kafka { ranges: vec![range.clone()] });
        assert_eq!(source_positions(&batch), [range]);
    }
}
