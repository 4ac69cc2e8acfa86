//! `[source] max_file_age`: what the log no longer remembers. A plan
//! record moves the horizon (`forget_before`) and names the committed
//! batches it forgets; every reader folds the same records, so every
//! reader forgets the same batches at the same record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BatchEntry, LogState};
use crate::log::Committed;
use crate::model::BatchId;

/// The counts of committed batches: of those the log forgot, so that
/// totals stay whole, or of all of them (`sluice status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// Committed batches forgotten.
    pub batches: u64,
    /// Their input files.
    pub files: u64,
    /// Rows they read.
    pub rows_in: u64,
    /// Rows they wrote.
    pub rows_out: u64,
    /// Rows they set aside as dead letters.
    pub rows_dead_lettered: u64,
    /// Output files they wrote.
    pub output_files: u64,
    /// The latest of their commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_at: Option<DateTime<Utc>>,
}

impl Forgotten {
    /// Adds the counts of `entry`, committed as `committed`.
    pub fn count(&mut self, entry: &BatchEntry, committed: &Committed) {
        self.batches += 1;
        self.files += entry.planned.inputs.len() as u64;
        self.rows_in += committed.rows_in;
        self.rows_out += committed.staged.rows();
        self.rows_dead_lettered += committed.rows_dead_lettered;
        self.output_files += committed.staged.outputs.len() as u64;
        self.last_commit_at = self.last_commit_at.max(Some(committed.at));
    }

    /// Adds another tally's counts.
    pub fn add(&mut self, other: &Forgotten) {
        self.batches += other.batches;
        self.files += other.files;
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.rows_dead_lettered += other.rows_dead_lettered;
        self.output_files += other.output_files;
        self.last_commit_at = self.last_commit_at.max(other.last_commit_at);
    }

    /// Whether nothing was forgotten.
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }
}

impl LogState {
    /// Inputs modified before this are never planned (`max_file_age`).
    pub fn forgotten_before(&self) -> Option<DateTime<Utc>> {
        self.forgotten_before
    }

    /// The newest modification time of an input planned, the one
    /// `max_file_age` counts back from.
    pub fn newest_input(&self) -> Option<DateTime<Utc>> {
        self.newest_input
    }

    /// What the forgotten batches had done.
    pub fn forgotten(&self) -> &Forgotten {
        &self.forgotten
    }

    /// Whether the log may forget `entry` once inputs modified before
    /// `before` are never planned: committed, from files (not a stream),
    /// every input older than `before`.
    pub fn may_forget(entry: &BatchEntry, before: DateTime<Utc>) -> bool {
        entry.committed.is_some()
            && entry.planned.stream.is_none()
            && !entry.planned.inputs.is_empty()
            && entry.planned.inputs.iter().all(|input| input.last_modified < before)
    }

    /// Moves the horizon to `before` (never back) and forgets the batches
    /// of `ids` that [`LogState::may_forget`] allows at the horizon now.
    pub(super) fn forget(&mut self, before: DateTime<Utc>, ids: &[BatchId]) {
        let horizon = self.forgotten_before.max(Some(before)).unwrap_or(before);
        self.forgotten_before = Some(horizon);
        // No input of a segment older than the horizon is planned again.
        self.segments.retain(|segment| segment.newest.is_none_or(|newest| newest >= horizon));
        for id in ids {
            let Some(entry) = self.batches.get(id).filter(|entry| LogState::may_forget(entry, horizon)) else {
                continue;
            };
            let Some(committed) = &entry.committed else { continue };
            self.forgotten.count(entry, committed);
            for input in &entry.planned.inputs {
                self.seen_inputs.remove(&input.key());
            }
            self.batches.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{InputObject, PipelineName};
    use crate::log::{Planned, PlannedBatches, Record};
    use crate::txn::testing::{at, committed};

    fn planned(batch: &str, modified: i64) -> Planned {
        Planned {
            batch_id: BatchId::from_string(batch.into()),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![InputObject {
                path: format!("{batch}.csv"),
                size: 1,
                last_modified: at(modified),
                ..InputObject::default()
            }],
            stream: None,
            at: at(modified),
        }
    }

    fn forgetting(batches: Vec<Planned>, before: i64, forget: &[&str]) -> Record {
        Record::PlannedBatches(PlannedBatches {
            batches,
            forget_before: Some(at(before)),
            forget: forget.iter().map(|id| BatchId::from_string(id.to_string())).collect(),
        })
    }

    fn fold(records: Vec<Record>) -> LogState {
        let mut state = LogState::default();
        for record in records {
            state.apply(state.next_seq(), record);
        }
        state
    }

    fn leased(batch: &str) -> Record {
        Record::Leased(crate::log::Leased {
            batch_id: id(batch),
            attempt: 1,
            owner: "w".into(),
            expires: at(1000),
            at: at(0),
        })
    }

    fn id(batch: &str) -> BatchId {
        BatchId::from_string(batch.into())
    }

    /// Committed `old` (modified at 0) and `recent` (100), pending
    /// `waiting` (5), then a plan of `new` (200) forgetting before 50.
    fn history() -> Vec<Record> {
        vec![
            Record::Planned(planned("old", 0)),
            Record::Planned(planned("recent", 100)),
            Record::Planned(planned("waiting", 5)),
            leased("old"),
            committed(id("old"), 1, "old-t"),
            leased("recent"),
            committed(id("recent"), 1, "recent-t"),
            forgetting(vec![planned("new", 200)], 50, &["old", "recent", "waiting"]),
        ]
    }

    #[test]
    fn a_plan_forgets_the_old_committed_batches_it_names_and_keeps_their_counts() {
        let state = fold(history());
        let key = |batch: &str| planned(batch, 0).inputs[0].key();
        assert!(state.batch(&id("old")).is_none(), "committed, every input before the horizon: forgotten");
        assert!(!state.has_seen(&key("old")));
        assert!(state.batch(&id("recent")).is_some(), "its input is after the horizon");
        assert!(state.batch(&id("waiting")).is_some_and(BatchEntry::is_pending), "not committed: kept");
        assert!(state.batch(&id("new")).is_some_and(BatchEntry::is_pending));
        assert_eq!(state.forgotten().batches, 1);
        assert_eq!((state.forgotten().files, state.forgotten().rows_in), (1, 1));
        assert_eq!(state.forgotten().last_commit_at, Some(at(1)));
        assert_eq!(state.forgotten_before(), Some(at(50)));
        assert_eq!(state.newest_input(), Some(at(200)));
    }

    #[test]
    fn the_horizon_never_moves_back_and_a_batch_not_named_stays() {
        let mut records = history();
        records.push(Record::Planned(planned("late", 300)));
        records.push(leased("waiting"));
        records.push(committed(id("waiting"), 1, "waiting-t"));
        records.push(forgetting(vec![planned("newer", 400)], 10, &[]));
        let state = fold(records);
        assert_eq!(state.forgotten_before(), Some(at(50)), "an earlier horizon does not move it back");
        assert!(state.batch(&id("waiting")).is_some(), "committed and old, but not named: kept");
        assert_eq!(state.forgotten().batches, 1);
    }

    #[test]
    fn what_a_state_forgot_survives_its_snapshot() {
        let state = fold(history());
        let json = serde_json::to_string(&state).expect("encodes");
        let mut read: LogState = serde_json::from_str(&json).expect("decodes");
        read.restore_index();
        assert_eq!(read.forgotten(), state.forgotten());
        assert_eq!((read.forgotten_before(), read.newest_input()), (Some(at(50)), Some(at(200))));
        assert!(read.batch(&id("old")).is_none());
        assert!(read.has_seen(&planned("recent", 100).inputs[0].key()));
    }
}
