//! What attempts leave behind, as pure functions of the log: commits
//! whose publish a crash cut short, staged files no commit will ever
//! name, and the fence `sluice vacuum` puts up before it removes them.

use chrono::{DateTime, Utc};

use crate::batch::BatchId;
use crate::log::{Committed, LogState, Refusal};

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

/// What must happen before the staged files of `token` may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// No attempt of the batch holds a lease (it is committed, failed,
    /// abandoned or released), so none can commit.
    Needless,
    /// An attempt may still hold a lease that ran out: lease the batch as
    /// attempt `attempt`, which fences that one off.
    Take {
        /// The batch.
        batch_id: BatchId,
        /// The attempt number to lease.
        attempt: u32,
    },
    /// The token is of no batch of this log (yet): keep its files.
    Unknown,
}

/// What must happen before the staged files of `token` may go.
pub fn fence(state: &LogState, token: &str) -> Fence {
    let Some(entry) = batch_of_token(token).and_then(|id| state.batch(&id)) else { return Fence::Unknown };
    if !entry.is_pending() || entry.lease.is_none() {
        return Fence::Needless;
    }
    Fence::Take { batch_id: entry.planned.batch_id.clone(), attempt: entry.attempts + 1 }
}

/// Whether a refused fence leaves no attempt able to commit: the batch
/// settled meanwhile.
pub fn fence_refused(refusal: &Refusal) -> bool {
    matches!(refusal, Refusal::AlreadyCommitted | Refusal::Abandoned | Refusal::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Seq;
    use crate::txn::testing::{Log, at, id};

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

    #[test]
    fn vacuum_fences_a_batch_leased_and_not_settled() {
        let mut log = Log::planned();
        assert_eq!(fence(&log.0, "b1-w"), Fence::Needless, "nobody leased it");
        assert_eq!(fence(&log.0, "other-x"), Fence::Unknown);
        log.lease(1, "w", 0, 10);
        assert_eq!(fence(&log.0, "b1-w"), Fence::Take { batch_id: id(), attempt: 2 });
        log.commit(1, "b1-w");
        assert_eq!(fence(&log.0, "b1-w"), Fence::Needless, "committed");
        assert!(fence_refused(&Refusal::AlreadyCommitted));
        assert!(!fence_refused(&Refusal::Leased { owner: "w".into(), expires: at(10) }));
    }
}
