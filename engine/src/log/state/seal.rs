//! Sealing: committed batches leave the state for a segment (see
//! [`crate::log::segment`]). A `sealed` record names them, so every
//! reader lets the same batches go at the same record.

use std::collections::HashSet;

use super::{BatchEntry, Forgotten, LogState, Refusal};
use crate::log::record::Sealed;
use crate::log::segment::SegmentRef;

impl LogState {
    /// The segments that hold the inputs of sealed batches, oldest first.
    pub fn segments(&self) -> &[SegmentRef] {
        &self.segments
    }

    /// What the sealed batches had done.
    pub fn sealed(&self) -> &Forgotten {
        &self.sealed
    }

    /// Whether `entry` may be sealed: it is committed. (A planner also
    /// keeps batches whose attempts left files in staging, so that their
    /// publish can be finished and their leftovers removed.)
    pub fn may_seal(entry: &BatchEntry) -> bool {
        entry.committed.is_some()
    }

    /// Whether the state has let committed batches go (sealed or
    /// forgotten): a planned batch it no longer holds is one of those, so
    /// committed.
    pub fn let_committed_go(&self) -> bool {
        !self.sealed.is_empty() || !self.forgotten.is_empty()
    }

    /// Lets go of the inputs of batches sealed while this state was held:
    /// a planner that has just asked the segments about what it lists
    /// (which hold them) no longer needs them here, so a long-running
    /// planner does not keep its whole history in memory.
    pub(in crate::log) fn drop_sealed_inputs(&mut self) {
        self.sealed_inputs = HashSet::new();
    }

    /// A seal is admitted if it names batches, each once, each committed
    /// and in the state.
    pub(super) fn admits_seal(&self, sealed: &Sealed) -> Result<(), Refusal> {
        let mut named = HashSet::new();
        let sealable = !sealed.batches.is_empty()
            && sealed.batches.iter().all(|id| named.insert(id) && self.batches.get(id).is_some_and(LogState::may_seal));
        if sealable { Ok(()) } else { Err(Refusal::Unsealable) }
    }

    /// Lets the batches of `sealed` go: their counts go to the tally, and
    /// their inputs are found in the segment from now on.
    pub(super) fn seal(&mut self, sealed: Sealed) {
        for id in &sealed.batches {
            let Some(entry) = self.batches.remove(id) else { continue };
            if let Some(committed) = &entry.committed {
                self.sealed.count(&entry, committed);
            }
            for input in &entry.planned.inputs {
                let key = input.key();
                self.seen_inputs.remove(&key);
                self.sealed_inputs.insert(key);
            }
        }
        if sealed.segment.inputs > 0 {
            self.segments.push(sealed.segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::batch::{BatchId, InputObject, PipelineName};
    use crate::log::{Planned, Record, Seq};
    use crate::txn::testing::{at, committed};

    fn id(batch: &str) -> BatchId {
        BatchId::from_string(batch.into())
    }

    fn planned(batch: &str) -> Record {
        Record::Planned(Planned {
            batch_id: id(batch),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![InputObject { path: format!("{batch}.csv"), size: 1, ..InputObject::default() }],
            stream: None,
            at: at(0),
        })
    }

    fn leased(batch: &str) -> Record {
        Record::Leased(crate::log::Leased {
            batch_id: id(batch),
            attempt: 1,
            owner: "w".into(),
            expires: at(0) + TimeDelta::minutes(5),
            at: at(0),
        })
    }

    fn sealed(batches: &[&str]) -> Record {
        let segment = SegmentRef {
            name: "s.json".into(),
            first: "a.csv".into(),
            last: "b.csv".into(),
            inputs: batches.len() as u64,
            newest: Some(at(0)),
        };
        Record::Sealed(Sealed { segment, batches: batches.iter().map(|b| id(b)).collect(), at: at(2) })
    }

    fn fold(records: Vec<Record>) -> LogState {
        let mut state = LogState::default();
        for record in records {
            state.apply(state.next_seq(), record);
        }
        state
    }

    fn history() -> Vec<Record> {
        vec![
            planned("a"),
            planned("b"),
            planned("c"),
            leased("a"),
            committed(id("a"), 1, "a-t"),
            leased("b"),
            committed(id("b"), 1, "b-t"),
        ]
    }

    #[test]
    fn sealed_batches_leave_the_state_and_their_counts_stay() {
        let mut records = history();
        records.push(sealed(&["a", "b"]));
        let state = fold(records);
        assert!(state.batch(&id("a")).is_none() && state.batch(&id("b")).is_none());
        assert!(state.batch(&id("c")).is_some_and(BatchEntry::is_pending));
        assert_eq!((state.sealed().batches, state.sealed().files, state.sealed().rows_in), (2, 2, 2));
        assert_eq!(state.segments().len(), 1);
        let key = |batch: &str| InputObject { path: format!("{batch}.csv"), size: 1, ..InputObject::default() }.key();
        assert!(state.has_seen(&key("a")), "sealed while this state was held: still refused here");
        assert!(!state.holds_input(&key("a")), "but not held: the segment has it");
        assert_eq!(state.admits(&planned("a")), Err(Refusal::InputsAlreadyPlanned));

        let json = serde_json::to_string(&state).expect("encodes");
        let mut read: LogState = serde_json::from_str(&json).expect("decodes");
        read.restore_index();
        assert_eq!((read.segments(), read.sealed()), (state.segments(), state.sealed()));
        assert!(!read.has_seen(&key("a")), "loaded afresh: the planner asks the segment");
        assert!(read.has_seen(&key("c")));
        assert_eq!(read.next_seq(), Seq(8));
    }

    #[test]
    fn a_seal_of_batches_not_all_committed_or_named_twice_is_refused_whole() {
        let state = fold(history());
        for refused in [sealed(&["a", "c"]), sealed(&["a", "a"]), sealed(&[]), sealed(&["a", "zz"])] {
            assert_eq!(state.admits(&refused), Err(Refusal::Unsealable), "{refused:?}");
        }
        let mut records = history();
        records.extend([sealed(&["a"]), sealed(&["a", "b"])]);
        let state = fold(records);
        assert!(state.batch(&id("b")).is_some(), "the second seal names a batch sealed already: refused");
        assert_eq!(state.sealed().batches, 1);
    }
}
