//! The commit protocol's decisions, as pure functions of what was read
//! from the log: whether to start, resume or take over a batch, whether a
//! failed attempt was the last, which commits to replay, and which staged
//! files nobody will ever commit.
//!
//! ```text
//! planned ──► leased(1) ──► committed ──► publish (replayed after a crash)
//!               │  └─ runs out ──► leased(2) by another: attempt 1 is fenced
//!               └─ error ──► failed(1) ──► leased(2) ... failed(max, gave_up) ──► retry ──► pending
//! ```

use chrono::{DateTime, Utc};

use super::record::Committed;
use super::state::{BatchEntry, LogState};
use crate::batch::BatchId;

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

/// Committed batches whose staged files are still there: a crash came
/// between the commit record and the end of the publish, which is
/// replayed (publishing is idempotent).
pub fn commits_to_replay<'a>(state: &'a LogState, staged_tokens: &[String]) -> Vec<&'a Committed> {
    staged_tokens
        .iter()
        .filter_map(|token| {
            let committed = state.batch(&batch_of_token(token)?)?.committed.as_ref()?;
            names_token(committed, token).then_some(committed)
        })
        .collect()
}

/// Whether `committed` is the commit of the attempt behind `token`.
fn names_token(committed: &Committed, token: &str) -> bool {
    committed.staged.token == token || committed.dead_letters.as_ref().is_some_and(|dead| dead.token == token)
}

/// Staged tokens that no commit will ever name: attempts that crashed,
/// were fenced, failed or were abandoned. Tokens of a batch whose lease is
/// live are kept, since their attempt may still commit.
pub fn leftover_tokens<'a>(state: &LogState, staged_tokens: &'a [String], now: DateTime<Utc>) -> Vec<&'a String> {
    staged_tokens.iter().filter(|token| is_leftover(state, token, now)).collect()
}

/// Whether no commit will ever name the staged attempt `token`.
pub fn is_leftover(state: &LogState, token: &str, now: DateTime<Utc>) -> bool {
    let Some(entry) = batch_of_token(token).and_then(|id| state.batch(&id)) else {
        // Not a batch of this log (yet): planned by a writer whose record
        // this reader has not seen. Keep it.
        return false;
    };
    match &entry.committed {
        Some(committed) => !names_token(committed, token),
        None => entry.live_lease(now).is_none(),
    }
}

/// The batch a staging token belongs to: tokens are `<batch id>-<random>`.
pub fn batch_of_token(token: &str) -> Option<BatchId> {
    let (id, _) = token.rsplit_once('-')?;
    Some(BatchId::from_string(id.to_string()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::batch::{InputObject, PipelineName};
    use crate::log::record::{Failed, Leased, Planned, Record};
    use crate::log::{Refusal, Seq};
    use crate::sink::Staged;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    fn id() -> BatchId {
        BatchId::from_string("b1".into())
    }

    struct Log(LogState);

    impl Log {
        fn planned() -> Self {
            let mut log = Log(LogState::default());
            log.push(Record::Planned(Planned {
                batch_id: id(),
                pipeline: PipelineName::new("p").expect("valid"),
                version: 1,
                inputs: vec![InputObject {
                    path: "1.csv".into(),
                    size: 1,
                    last_modified: at(0),
                    ..InputObject::default()
                }],
                stream: None,
                at: at(0),
            }));
            log
        }

        fn push(&mut self, record: Record) -> &mut Self {
            let seq = self.0.next_seq();
            self.0.apply(seq, record);
            self
        }

        fn lease(&mut self, attempt: u32, owner: &str, from: i64, until: i64) -> &mut Self {
            self.push(Record::Leased(Leased {
                batch_id: id(),
                attempt,
                owner: owner.into(),
                expires: at(until),
                at: at(from),
            }))
        }

        fn commit(&mut self, attempt: u32, token: &str) -> &mut Self {
            self.push(Record::Committed(Committed {
                batch_id: id(),
                attempt,
                staged: Staged { token: token.into(), outputs: vec![] },
                rows_in: 1,
                dead_letters: None,
                rows_dead_lettered: 0,
                source_positions: vec![],
                ran_by: None,
                tables: Default::default(),
                at: at(1),
            }))
        }

        fn fail(&mut self, attempt: u32, gave_up: bool) -> &mut Self {
            self.push(Record::Failed(Failed { batch_id: id(), attempt, error: "e".into(), gave_up, at: at(1) }))
        }
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
        let late = Record::Committed(Committed {
            batch_id: id(),
            attempt: 1,
            staged: Staged { token: "b1-w".into(), outputs: vec![] },
            rows_in: 1,
            dead_letters: None,
            rows_dead_lettered: 0,
            source_positions: vec![],
            ran_by: None,
            tables: Default::default(),
            at: at(12),
        });
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
    fn replay_the_commit_whose_publish_was_cut_short() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10).lease(2, "v", 11, 20).commit(2, "b1-v");
        let tokens = vec!["b1-v".to_string(), "b1-w".to_string(), "other-x".to_string()];
        let replays: Vec<&str> = commits_to_replay(&log.0, &tokens).iter().map(|c| c.staged.token.as_str()).collect();
        assert_eq!(replays, ["b1-v"]);
        assert_eq!(leftover_tokens(&log.0, &tokens, at(30)), [&tokens[1]], "the fenced attempt's files go");
        assert_eq!(log.0.next_seq(), Seq(4));
    }

    #[test]
    fn staged_files_of_a_running_attempt_are_kept() {
        let mut log = Log::planned();
        log.lease(1, "w", 0, 10);
        let tokens = vec!["b1-w".to_string()];
        assert!(leftover_tokens(&log.0, &tokens, at(5)).is_empty());
        assert_eq!(leftover_tokens(&log.0, &tokens, at(10)), [&tokens[0]], "once its lease ran out");
    }
}
