//! What the log says, folded from its records: a pure value that the
//! protocol's decisions are made from.

use std::collections::{BTreeMap, HashSet};

use super::Seq;
use super::record::{Abandoned, Committed, Planned, Record};
use crate::batch::{Batch, BatchId, InputKey};

/// The state of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    /// The record that planned it.
    pub planned: Planned,
    /// Where in the log it was planned.
    pub planned_seq: Seq,
    /// Its commit, once there is one.
    pub committed: Option<Committed>,
    /// Why it was given up, if it was.
    pub abandoned: Option<Abandoned>,
}

impl BatchEntry {
    /// Whether the batch still waits to be committed.
    pub fn is_pending(&self) -> bool {
        self.committed.is_none() && self.abandoned.is_none()
    }
}

/// Everything the log holds, by batch.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    next_seq: Seq,
    batches: BTreeMap<BatchId, BatchEntry>,
    seen_inputs: HashSet<InputKey>,
}

/// Why the log refuses to append a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Some input is already part of a planned batch.
    InputsAlreadyPlanned,
    /// The batch is already committed.
    AlreadyCommitted,
    /// A commit names a batch that was never planned.
    NotPlanned,
    /// The batch was abandoned.
    Abandoned,
}

impl LogState {
    /// The number the next record gets.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Folds in the record numbered `seq` (records arrive in order).
    pub fn apply(&mut self, seq: Seq, record: Record) {
        self.next_seq = Seq(seq.0 + 1);
        match record {
            Record::Planned(planned) => {
                if self.batches.contains_key(&planned.batch_id) {
                    return;
                }
                self.seen_inputs.extend(planned.inputs.iter().map(|input| input.key()));
                self.batches.insert(
                    planned.batch_id.clone(),
                    BatchEntry { planned, planned_seq: seq, committed: None, abandoned: None },
                );
            }
            Record::Committed(committed) => {
                if let Some(entry) = self.batches.get_mut(&committed.batch_id)
                    && entry.is_pending()
                {
                    entry.committed = Some(committed);
                }
            }
            Record::Abandoned(abandoned) => {
                if let Some(entry) = self.batches.get_mut(&abandoned.batch_id)
                    && entry.is_pending()
                {
                    for input in &entry.planned.inputs {
                        self.seen_inputs.remove(&input.key());
                    }
                    entry.abandoned = Some(abandoned);
                }
            }
        }
    }

    /// Whether `record` may be appended to the log as it stands.
    pub fn admits(&self, record: &Record) -> Result<(), Refusal> {
        match record {
            Record::Planned(planned) => {
                if self.batches.contains_key(&planned.batch_id)
                    || planned.inputs.iter().any(|input| self.seen_inputs.contains(&input.key()))
                {
                    return Err(Refusal::InputsAlreadyPlanned);
                }
            }
            Record::Committed(_) | Record::Abandoned(_) => match self.batches.get(record.batch_id()) {
                None => return Err(Refusal::NotPlanned),
                Some(entry) if entry.committed.is_some() => return Err(Refusal::AlreadyCommitted),
                Some(entry) if entry.abandoned.is_some() => return Err(Refusal::Abandoned),
                Some(_) => {}
            },
        }
        Ok(())
    }

    /// Whether this version of an input is part of some planned batch.
    pub fn has_seen(&self, key: &InputKey) -> bool {
        self.seen_inputs.contains(key)
    }

    /// The batches planned and not committed, oldest first.
    pub fn pending(&self) -> Vec<Batch> {
        let mut pending: Vec<&BatchEntry> = self.batches.values().filter(|entry| entry.is_pending()).collect();
        pending.sort_by_key(|entry| entry.planned_seq);
        pending
            .into_iter()
            .map(|entry| Batch { id: entry.planned.batch_id.clone(), inputs: entry.planned.inputs.clone() })
            .collect()
    }

    /// One batch.
    pub fn batch(&self, id: &BatchId) -> Option<&BatchEntry> {
        self.batches.get(id)
    }

    /// All batches, by id.
    pub fn batches(&self) -> impl Iterator<Item = &BatchEntry> {
        self.batches.values()
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::batch::{InputObject, PipelineName};
    use crate::sink::Staged;

    fn planned(id: &str, path: &str) -> Planned {
        Planned {
            batch_id: BatchId::from_string(id.into()),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![InputObject { path: path.into(), size: 1, etag: None, last_modified: DateTime::UNIX_EPOCH }],
            at: DateTime::UNIX_EPOCH,
        }
    }

    fn committed(id: &str) -> Committed {
        Committed {
            batch_id: BatchId::from_string(id.into()),
            staged: Staged { token: format!("{id}-1"), outputs: vec![] },
            rows_in: 0,
            at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn planned_batches_are_pending_until_committed() {
        let mut state = LogState::default();
        state.apply(Seq(0), Record::Planned(planned("b", "2.csv")));
        state.apply(Seq(1), Record::Planned(planned("a", "1.csv")));
        let ids: Vec<String> = state.pending().iter().map(|b| b.id.to_string()).collect();
        assert_eq!(ids, ["b", "a"], "oldest plan first");
        state.apply(Seq(2), Record::Committed(committed("b")));
        assert_eq!(state.pending().len(), 1);
        assert_eq!(state.next_seq(), Seq(3));
    }

    #[test]
    fn refuses_double_plans_and_double_commits() {
        let mut state = LogState::default();
        let plan = Record::Planned(planned("a", "1.csv"));
        assert_eq!(state.admits(&plan), Ok(()));
        state.apply(Seq(0), plan.clone());
        assert_eq!(state.admits(&plan), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(
            state.admits(&Record::Planned(planned("other", "1.csv"))),
            Err(Refusal::InputsAlreadyPlanned),
            "the same input in another batch"
        );
        let commit = Record::Committed(committed("a"));
        assert_eq!(state.admits(&commit), Ok(()));
        state.apply(Seq(1), commit.clone());
        assert_eq!(state.admits(&commit), Err(Refusal::AlreadyCommitted));
        assert_eq!(state.admits(&Record::Committed(committed("zzz"))), Err(Refusal::NotPlanned));
    }

    #[test]
    fn an_abandoned_batch_frees_its_inputs_and_cannot_commit() {
        let mut state = LogState::default();
        let plan = planned("a", "1.csv");
        let key = plan.inputs[0].key();
        state.apply(Seq(0), Record::Planned(plan));
        let abandon = Record::Abandoned(Abandoned {
            batch_id: BatchId::from_string("a".into()),
            reason: "changed".into(),
            at: DateTime::UNIX_EPOCH,
        });
        assert_eq!(state.admits(&abandon), Ok(()));
        state.apply(Seq(1), abandon.clone());
        assert!(!state.has_seen(&key), "1.csv may be planned again");
        assert!(state.pending().is_empty());
        assert_eq!(state.admits(&Record::Committed(committed("a"))), Err(Refusal::Abandoned));
        assert_eq!(state.admits(&abandon), Err(Refusal::Abandoned));
        assert_eq!(state.admits(&Record::Planned(planned("b", "1.csv"))), Ok(()));
    }

    #[test]
    fn the_first_commit_wins() {
        let mut state = LogState::default();
        state.apply(Seq(0), Record::Planned(planned("a", "1.csv")));
        let mut first = committed("a");
        first.rows_in = 1;
        state.apply(Seq(1), Record::Committed(first));
        state.apply(Seq(2), Record::Committed(committed("a")));
        let entry = state.batch(&BatchId::from_string("a".into())).expect("planned");
        assert_eq!(entry.committed.as_ref().map(|c| c.rows_in), Some(1));
    }
}
