//! What the log says, folded from its records: a pure value that the
//! protocol's decisions are made from.
//!
//! [`LogState::admits`] is the one rule of the log: a record is folded in
//! only if the log as it stood before it admits it. Writers ask before
//! they append, and readers ignore a record the log would have refused, so
//! every reader of the same records reaches the same state.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Seq;
use super::record::{Abandoned, Committed, Failed, Leased, Planned, PlannedBatches, Record};
use super::segment::SegmentRef;
use crate::model::{Batch, BatchId, InputKey, MESSAGE_ID_WINDOW, PartitionKey, Positions, StreamInputs};

mod forget;
mod seal;

pub use forget::Forgotten;

/// The state of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The record that planned it.
    pub planned: Planned,
    /// Where in the log it was planned.
    pub planned_seq: Seq,
    /// Its place among the batches of that record.
    pub planned_index: u32,
    /// The highest attempt number claimed so far.
    pub attempts: u32,
    /// The current claim, until released by a failure or a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Leased>,
    /// Attempts that ended in an error since it was planned or retried.
    pub failures: u32,
    /// `attempts` when it was last retried: the attempts counted against
    /// `[workers] max_attempts` are those after it.
    pub attempts_at_retry: u32,
    /// The latest attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when its last allowed attempt failed; cleared by a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// Its commit, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Committed>,
    /// Why it was given up, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<Abandoned>,
}

impl BatchEntry {
    fn new(planned: Planned, planned_seq: Seq, planned_index: u32) -> Self {
        BatchEntry {
            planned,
            planned_seq,
            planned_index,
            attempts: 0,
            lease: None,
            failures: 0,
            attempts_at_retry: 0,
            last_error: None,
            failed: None,
            committed: None,
            abandoned: None,
        }
    }

    /// Whether the batch still waits to be committed (failed batches wait
    /// for `sluice retry`, not for a worker).
    pub fn is_pending(&self) -> bool {
        self.committed.is_none() && self.abandoned.is_none() && self.failed.is_none()
    }

    /// The lease, if someone holds one that has not run out at `now`.
    pub fn live_lease(&self, now: DateTime<Utc>) -> Option<&Leased> {
        self.lease.as_ref().filter(|lease| lease.expires > now && self.is_pending())
    }

    /// The batch it describes.
    pub fn batch(&self) -> Batch {
        Batch {
            id: self.planned.batch_id.clone(),
            inputs: self.planned.inputs.clone(),
            stream: self.planned.stream.clone(),
        }
    }

    fn refusal_unless_pending(&self) -> Result<(), Refusal> {
        if self.committed.is_some() {
            Err(Refusal::AlreadyCommitted)
        } else if self.abandoned.is_some() {
            Err(Refusal::Abandoned)
        } else if self.failed.is_some() {
            Err(Refusal::Failed)
        } else {
            Ok(())
        }
    }

    /// Whether `attempt` holds the lease now: the record it writes would
    /// be admitted.
    fn check_holder(&self, attempt: u32) -> Result<(), Refusal> {
        match &self.lease {
            Some(lease) if lease.attempt == attempt => Ok(()),
            _ => Err(Refusal::Fenced),
        }
    }
}

/// Everything the log holds, by batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogState {
    next_seq: Seq,
    #[serde(with = "entries")]
    batches: BTreeMap<BatchId, BatchEntry>,
    #[serde(skip)]
    seen_inputs: HashSet<InputKey>,
    /// Kafka: the offset after the last one planned, by partition.
    #[serde(default, with = "positions", skip_serializing_if = "BTreeMap::is_empty")]
    positions: BTreeMap<PartitionKey, i64>,
    /// AMQP: the message ids of committed batches, oldest first, at most
    /// [`MESSAGE_ID_WINDOW`].
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    committed_ids: VecDeque<String>,
    #[serde(skip)]
    committed_id_set: HashSet<String>,
    /// AMQP: the batch each message id of a batch not yet settled is in.
    #[serde(skip)]
    unsettled_ids: HashMap<String, BatchId>,
    /// The newest modification time of an input planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest_input: Option<DateTime<Utc>>,
    /// `[source] max_file_age`: inputs modified before this are never
    /// planned, and committed batches of only such inputs may be forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forgotten_before: Option<DateTime<Utc>>,
    /// What the forgotten batches had done.
    #[serde(default, skip_serializing_if = "Forgotten::is_empty")]
    forgotten: Forgotten,
    /// The segments that hold the inputs of sealed batches, in the order
    /// they were sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<SegmentRef>,
    /// What the sealed batches had done.
    #[serde(default, skip_serializing_if = "Forgotten::is_empty")]
    sealed: Forgotten,
    /// Inputs of batches sealed since this state was loaded, or since its
    /// planner last asked the segments ([`super::CheckpointLog::history`]):
    /// a plan of them, made before they were sealed, is still refused.
    #[serde(skip)]
    sealed_inputs: HashSet<InputKey>,
}

/// Why the log refuses to append a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Some input is already part of a planned batch.
    InputsAlreadyPlanned,
    /// The batch is already committed.
    AlreadyCommitted,
    /// The record names a batch that was never planned.
    NotPlanned,
    /// The batch was abandoned.
    Abandoned,
    /// The batch failed and waits for `sluice retry`.
    Failed,
    /// `sluice retry` of a batch that has not failed.
    NotFailed,
    /// Another worker holds the batch's lease.
    Leased {
        /// Who.
        owner: String,
        /// Until when, unless renewed.
        expires: DateTime<Utc>,
    },
    /// The attempt no longer holds the lease: another took it over.
    Fenced,
    /// A seal of batches that are not all committed and in the state
    /// (another planner sealed them first).
    Unsealable,
}

impl LogState {
    /// The number the next record gets.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Folds in the record numbered `seq` (records arrive in order). A
    /// record the log refuses changes nothing but the next number.
    pub fn apply(&mut self, seq: Seq, record: Record) {
        self.next_seq = Seq(seq.0 + 1);
        if self.admits(&record).is_err() {
            return;
        }
        match record {
            Record::Planned(planned) => return self.apply_plan(planned, seq, 0),
            Record::PlannedBatches(many) => {
                for (index, planned) in many.batches.into_iter().enumerate() {
                    self.apply_plan(planned, seq, index as u32);
                }
                if let Some(before) = many.forget_before {
                    self.forget(before, &many.forget);
                }
                return;
            }
            Record::Started(started) => {
                for start in started.partitions {
                    let key = PartitionKey { topic: start.topic, partition: start.partition };
                    self.positions.entry(key).or_insert(start.offset);
                }
                return;
            }
            Record::Sealed(sealed) => return self.seal(sealed),
            _ => {}
        }
        let Some(id) = record.batch_id() else { return };
        let Some(entry) = self.batches.get_mut(id) else { return };
        match record {
            Record::Planned(_) | Record::PlannedBatches(_) | Record::Started(_) | Record::Sealed(_) => {}
            Record::Leased(leased) => {
                entry.attempts = entry.attempts.max(leased.attempt);
                entry.lease = Some(leased);
            }
            Record::Committed(committed) => {
                entry.lease = None;
                entry.committed = Some(committed);
                let ids = take_message_ids(entry);
                for id in &ids {
                    self.unsettled_ids.remove(id);
                }
                self.remember_committed_ids(ids);
            }
            Record::Failed(failed) => {
                entry.lease = None;
                entry.failures += 1;
                entry.last_error = Some(failed.error.clone());
                if failed.gave_up {
                    entry.failed = Some(failed);
                    for id in message_ids(entry) {
                        self.unsettled_ids.remove(id);
                    }
                }
            }
            Record::Retried(_) => {
                entry.failed = None;
                entry.failures = 0;
                entry.attempts_at_retry = entry.attempts;
                for id in message_ids(entry) {
                    self.unsettled_ids.insert(id.clone(), entry.planned.batch_id.clone());
                }
            }
            Record::Abandoned(abandoned) => {
                for input in &entry.planned.inputs {
                    self.seen_inputs.remove(&input.key());
                }
                entry.lease = None;
                entry.failed = None;
                entry.abandoned = Some(abandoned);
                for id in take_message_ids(entry) {
                    self.unsettled_ids.remove(&id);
                }
            }
        }
    }

    /// Adds the ids of a committed batch to the window, forgetting the
    /// oldest beyond [`MESSAGE_ID_WINDOW`].
    fn remember_committed_ids(&mut self, ids: Vec<String>) {
        for id in ids {
            if self.committed_id_set.insert(id.clone()) {
                self.committed_ids.push_back(id);
            }
        }
        while self.committed_ids.len() > MESSAGE_ID_WINDOW {
            if let Some(old) = self.committed_ids.pop_front() {
                self.committed_id_set.remove(&old);
            }
        }
    }

    /// Whether a message with this id is in a committed batch, as far as
    /// the window reaches back.
    pub fn is_committed_message(&self, message_id: &str) -> bool {
        self.committed_id_set.contains(message_id)
    }

    /// The batch, planned and not committed or abandoned, that holds the
    /// AMQP message `message_id`.
    pub fn unsettled_batch_of(&self, message_id: &str) -> Option<&BatchEntry> {
        self.unsettled_ids.get(message_id).and_then(|id| self.batches.get(id))
    }

    /// The offset after the last planned one of a Kafka partition (or where
    /// the log recorded that it begins); `None` if the log knows nothing of it.
    pub fn position(&self, key: &PartitionKey) -> Option<i64> {
        self.positions.get(key).copied()
    }

    /// Every Kafka partition's position, as [`LogState::position`] gives it.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Whether `record` may be appended to the log as it stands.
    pub fn admits(&self, record: &Record) -> Result<(), Refusal> {
        let id = match record {
            Record::Planned(planned) => return self.admits_plan(planned),
            Record::PlannedBatches(many) => return self.admits_plans(many),
            Record::Started(_) => return Ok(()),
            Record::Sealed(sealed) => return self.admits_seal(sealed),
            other => other.batch_id().ok_or(Refusal::NotPlanned)?,
        };
        let entry = self.batches.get(id).ok_or(Refusal::NotPlanned)?;
        match record {
            Record::Planned(_) | Record::PlannedBatches(_) | Record::Started(_) | Record::Sealed(_) => Ok(()),
            Record::Leased(leased) => {
                entry.refusal_unless_pending()?;
                match &entry.lease {
                    // A renewal by the holder.
                    Some(current) if current.attempt == leased.attempt && current.owner == leased.owner => Ok(()),
                    Some(current) if current.expires > leased.at => {
                        Err(Refusal::Leased { owner: current.owner.clone(), expires: current.expires })
                    }
                    // Free, released or run out: the next attempt may take it.
                    _ if leased.attempt == entry.attempts + 1 => Ok(()),
                    _ => Err(Refusal::Fenced),
                }
            }
            Record::Committed(committed) => {
                entry.refusal_unless_pending()?;
                entry.check_holder(committed.attempt)
            }
            Record::Failed(failed) => {
                entry.refusal_unless_pending()?;
                entry.check_holder(failed.attempt)
            }
            Record::Retried(_) => match (&entry.failed, entry.committed.is_some()) {
                (Some(_), _) => Ok(()),
                (None, true) => Err(Refusal::AlreadyCommitted),
                (None, false) => Err(Refusal::NotFailed),
            },
            // A failed batch may be abandoned too: a stream batch whose
            // messages went back to the broker.
            Record::Abandoned(_) if entry.failed.is_some() && entry.committed.is_none() => Ok(()),
            Record::Abandoned(_) => entry.refusal_unless_pending(),
        }
    }

    /// A plan is admitted if no input of it is in another batch: no
    /// object version planned before, no Kafka offset before the
    /// partition's position.
    fn admits_plan(&self, planned: &Planned) -> Result<(), Refusal> {
        // An abandoned batch's inputs may come back as they were (a
        // file moved away and back): the same id is planned afresh.
        let taken = self.batches.get(&planned.batch_id).is_some_and(|entry| entry.abandoned.is_none());
        if taken || planned.inputs.iter().any(|input| self.has_seen(&input.key())) {
            return Err(Refusal::InputsAlreadyPlanned);
        }
        if let Some(StreamInputs::Kafka { ranges }) = &planned.stream {
            let overlaps = ranges.iter().any(|range| {
                range.start >= range.end || self.positions.get(&range.key()).is_some_and(|next| range.start < *next)
            });
            if overlaps {
                return Err(Refusal::InputsAlreadyPlanned);
            }
        }
        Ok(())
    }

    /// Several plans are admitted if each is, and no two share an input
    /// or an id.
    fn admits_plans(&self, many: &PlannedBatches) -> Result<(), Refusal> {
        let mut ids = HashSet::new();
        let mut inputs = HashSet::new();
        for planned in &many.batches {
            self.admits_plan(planned)?;
            let fresh = ids.insert(&planned.batch_id) && planned.inputs.iter().all(|input| inputs.insert(input.key()));
            if !fresh {
                return Err(Refusal::InputsAlreadyPlanned);
            }
        }
        Ok(())
    }

    /// Folds in the plan of one batch, the `index`-th of record `seq`.
    fn apply_plan(&mut self, planned: Planned, seq: Seq, index: u32) {
        self.seen_inputs.extend(planned.inputs.iter().map(|input| input.key()));
        let newest = planned.inputs.iter().map(|input| input.last_modified).max();
        self.newest_input = self.newest_input.max(newest);
        match &planned.stream {
            Some(StreamInputs::Kafka { ranges }) => {
                for range in ranges {
                    let position = self.positions.entry(range.key()).or_insert(range.end);
                    *position = (*position).max(range.end);
                }
            }
            Some(StreamInputs::Amqp { message_ids, .. }) => {
                for id in message_ids {
                    self.unsettled_ids.insert(id.clone(), planned.batch_id.clone());
                }
            }
            None => {}
        }
        self.batches.insert(planned.batch_id.clone(), BatchEntry::new(planned, seq, index));
    }

    /// Whether this version of an input is part of some planned batch
    /// that the state holds (or held, for batches sealed since it was
    /// loaded). The inputs of sealed batches are in the segments, which
    /// [`super::CheckpointLog::history`] reads.
    pub fn has_seen(&self, key: &InputKey) -> bool {
        self.seen_inputs.contains(key) || self.sealed_inputs.contains(key)
    }

    /// Whether this version of an input is part of a batch the state
    /// holds (not one sealed).
    pub fn holds_input(&self, key: &InputKey) -> bool {
        self.seen_inputs.contains(key)
    }

    /// The batches planned and not committed, failed or abandoned, oldest
    /// first.
    pub fn pending(&self) -> Vec<Batch> {
        let mut pending: Vec<&BatchEntry> = self.batches.values().filter(|entry| entry.is_pending()).collect();
        pending.sort_by_key(|entry| (entry.planned_seq, entry.planned_index));
        pending.into_iter().map(BatchEntry::batch).collect()
    }

    /// Input files of batches not committed: pending, running or failed
    /// (abandoned batches' files are planned again, in another batch).
    pub fn files_waiting(&self) -> usize {
        self.batches
            .values()
            .filter(|entry| entry.committed.is_none() && entry.abandoned.is_none())
            .map(|entry| entry.planned.inputs.len())
            .sum()
    }

    /// One batch.
    pub fn batch(&self, id: &BatchId) -> Option<&BatchEntry> {
        self.batches.get(id)
    }

    /// All batches, by id.
    pub fn batches(&self) -> impl Iterator<Item = &BatchEntry> {
        self.batches.values()
    }

    /// Rebuilds what a snapshot leaves out.
    pub(super) fn restore_index(&mut self) {
        self.committed_id_set = self.committed_ids.iter().cloned().collect();
        self.unsettled_ids = self
            .batches
            .values()
            .filter(|entry| entry.is_pending())
            .flat_map(|entry| message_ids(entry).iter().map(|id| (id.clone(), entry.planned.batch_id.clone())))
            .collect();
        self.seen_inputs = self
            .batches
            .values()
            .filter(|entry| entry.abandoned.is_none())
            .flat_map(|entry| entry.planned.inputs.iter().map(|input| input.key()))
            .collect();
    }
}

/// The message ids of an AMQP batch.
fn message_ids(entry: &BatchEntry) -> &[String] {
    match &entry.planned.stream {
        Some(StreamInputs::Amqp { message_ids, .. }) => message_ids,
        _ => &[],
    }
}

/// The message ids of an AMQP batch, moved out of its entry once it is
/// settled: only the window of committed ids is kept.
fn take_message_ids(entry: &mut BatchEntry) -> Vec<String> {
    match &mut entry.planned.stream {
        Some(StreamInputs::Amqp { message_ids, .. }) => std::mem::take(message_ids),
        _ => Vec::new(),
    }
}

/// Positions are written as a list of `{topic, partition, next}`.
mod positions {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::PartitionKey;

    #[derive(Serialize, Deserialize)]
    struct Position {
        topic: String,
        partition: i32,
        next: i64,
    }

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<PartitionKey, i64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(key, next)| Position {
            topic: key.topic.clone(),
            partition: key.partition,
            next: *next,
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<PartitionKey, i64>, D::Error> {
        let list = Vec::<Position>::deserialize(d)?;
        Ok(list.into_iter().map(|p| (PartitionKey { topic: p.topic, partition: p.partition }, p.next)).collect())
    }
}

/// Batches are written as a list: JSON object keys would repeat each id.
mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::BatchEntry;
    use crate::batch::BatchId;

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<BatchId, BatchEntry>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<BatchId, BatchEntry>, D::Error> {
        let list = Vec::<BatchEntry>::deserialize(d)?;
        Ok(list.into_iter().map(|entry| (entry.planned.batch_id.clone(), entry)).collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta};

    use super::*;
    use crate::batch::{InputObject, PipelineName};
    use crate::log::record::{Retried, Started};
    use crate::model::{OffsetRange, PartitionStart};
    use crate::sink::Staged;

    fn id(id: &str) -> BatchId {
        BatchId::from_string(id.into())
    }

    fn planned(batch: &str, path: &str) -> Record {
        Record::Planned(Planned {
            batch_id: id(batch),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![InputObject { path: path.into(), size: 1, ..InputObject::default() }],
            stream: None,
            at: DateTime::UNIX_EPOCH,
        })
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    pub(crate) fn leased(batch: &str, attempt: u32, owner: &str, from: i64, until: i64) -> Record {
        Record::Leased(Leased { batch_id: id(batch), attempt, owner: owner.into(), expires: at(until), at: at(from) })
    }

    fn committed(batch: &str, attempt: u32) -> Record {
        Record::Committed(Committed {
            batch_id: id(batch),
            attempt,
            staged: Staged { token: format!("{batch}-{attempt}"), outputs: vec![] },
            rows_in: 0,
            dead_letters: None,
            rows_dead_lettered: 0,
            source_positions: vec![],
            ran_by: None,
            tables: Default::default(),
            at: DateTime::UNIX_EPOCH,
        })
    }

    fn failed(batch: &str, attempt: u32, gave_up: bool) -> Record {
        Record::Failed(Failed { batch_id: id(batch), attempt, error: "boom".into(), gave_up, at: at(0) })
    }

    fn log(records: Vec<Record>) -> LogState {
        let mut state = LogState::default();
        for (seq, record) in records.into_iter().enumerate() {
            state.apply(Seq(seq as u64), record);
        }
        state
    }

    /// One `planned_batches` record of the `(batch, path)` plans.
    fn planned_many(plans: &[(&str, &str)]) -> Record {
        let batches = plans
            .iter()
            .map(|(batch, path)| match planned(batch, path) {
                Record::Planned(planned) => planned,
                _ => unreachable!("planned() makes a planned record"),
            })
            .collect();
        Record::PlannedBatches(PlannedBatches { batches, forget_before: None, forget: Vec::new() })
    }

    #[test]
    fn batches_planned_in_one_record_are_pending_in_its_order() {
        let state = log(vec![planned("z", "0.csv"), planned_many(&[("c", "1.csv"), ("a", "2.csv"), ("b", "3.csv")])]);
        let ids: Vec<String> = state.pending().iter().map(|b| b.id.to_string()).collect();
        assert_eq!(ids, ["z", "c", "a", "b"]);
        assert!(state.has_seen(&state.pending()[3].inputs[0].key()));
        assert_eq!(state.admits(&leased("a", 1, "w", 0, 9)), Ok(()));
    }

    #[test]
    fn batches_planned_in_one_record_are_admitted_whole_or_not_at_all() {
        let state = log(vec![planned("a", "1.csv")]);
        // One of them overlaps what is planned: none of them is.
        let overlapping = planned_many(&[("b", "2.csv"), ("c", "1.csv")]);
        assert_eq!(state.admits(&overlapping), Err(Refusal::InputsAlreadyPlanned));
        let state = log(vec![planned("a", "1.csv"), overlapping]);
        assert!(state.batch(&id("b")).is_none(), "a refused record plans nothing");
        // Nor may two of them share an input, or an id.
        assert_eq!(state.admits(&planned_many(&[("b", "2.csv"), ("c", "2.csv")])), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(state.admits(&planned_many(&[("b", "2.csv"), ("b", "3.csv")])), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(state.admits(&planned_many(&[("b", "2.csv"), ("c", "3.csv")])), Ok(()));
    }

    #[test]
    fn planned_batches_are_pending_until_committed() {
        let state =
            log(vec![planned("b", "2.csv"), planned("a", "1.csv"), leased("b", 1, "w", 0, 9), committed("b", 1)]);
        let ids: Vec<String> = state.pending().iter().map(|b| b.id.to_string()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(state.next_seq(), Seq(4));
    }

    #[test]
    fn refuses_double_plans_and_double_commits() {
        let state = log(vec![planned("a", "1.csv")]);
        assert_eq!(state.admits(&planned("a", "1.csv")), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(state.admits(&planned("other", "1.csv")), Err(Refusal::InputsAlreadyPlanned), "same input");
        let state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 9), committed("a", 1)]);
        assert_eq!(state.admits(&committed("a", 1)), Err(Refusal::AlreadyCommitted));
        assert_eq!(state.admits(&committed("zzz", 1)), Err(Refusal::NotPlanned));
        assert_eq!(state.admits(&leased("a", 2, "v", 10, 20)), Err(Refusal::AlreadyCommitted));
    }

    #[test]
    fn a_live_lease_keeps_others_out_and_an_expired_one_is_taken_over() {
        let state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10)]);
        assert_eq!(
            state.admits(&leased("a", 2, "v", 5, 15)),
            Err(Refusal::Leased { owner: "w".into(), expires: at(10) })
        );
        assert_eq!(state.admits(&leased("a", 1, "w", 5, 15)), Ok(()), "the holder renews");
        assert_eq!(state.admits(&leased("a", 2, "v", 10, 20)), Ok(()), "taken over once run out");
        assert_eq!(state.admits(&leased("a", 3, "v", 10, 20)), Err(Refusal::Fenced), "attempts are numbered in turn");
    }

    #[test]
    fn an_attempt_that_lost_its_lease_cannot_commit_or_fail() {
        let state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10), leased("a", 2, "v", 11, 20)]);
        assert_eq!(state.admits(&committed("a", 1)), Err(Refusal::Fenced));
        assert_eq!(state.admits(&failed("a", 1, false)), Err(Refusal::Fenced));
        assert_eq!(
            state.admits(&leased("a", 1, "w", 12, 22)),
            Err(Refusal::Leased { owner: "v".into(), expires: at(20) })
        );
        assert_eq!(state.admits(&committed("a", 2)), Ok(()));
        // Readers ignore what the log refuses: a stale commit changes nothing.
        let mut state = state;
        state.apply(Seq(3), committed("a", 1));
        assert!(state.batch(&id("a")).expect("planned").committed.is_none());
        assert_eq!(state.next_seq(), Seq(4));
    }

    #[test]
    fn a_holder_whose_lease_ran_out_unclaimed_may_still_commit() {
        let state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10)]);
        assert_eq!(state.admits(&committed("a", 1)), Ok(()));
    }

    #[test]
    fn failures_release_the_lease_and_the_last_one_fails_the_batch() {
        let mut state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10), failed("a", 1, false)]);
        let entry = state.batch(&id("a")).expect("planned");
        assert!(entry.lease.is_none() && entry.is_pending());
        assert_eq!(state.admits(&leased("a", 2, "v", 1, 11)), Ok(()), "released before it ran out");
        state.apply(Seq(3), leased("a", 2, "v", 1, 11));
        state.apply(Seq(4), failed("a", 2, true));
        let entry = state.batch(&id("a")).expect("planned");
        assert_eq!((entry.failures, entry.is_pending()), (2, false));
        assert!(state.pending().is_empty(), "a failed batch blocks nothing");
        assert_eq!(state.admits(&leased("a", 3, "v", 2, 12)), Err(Refusal::Failed));

        let retry = Record::Retried(Retried { batch_id: id("a"), at: at(3) });
        assert_eq!(state.admits(&retry), Ok(()));
        state.apply(Seq(5), retry.clone());
        assert_eq!(state.pending().len(), 1);
        assert_eq!(state.admits(&retry), Err(Refusal::NotFailed));
        assert_eq!(state.admits(&leased("a", 3, "v", 4, 14)), Ok(()), "attempt numbers keep counting");
    }

    #[test]
    fn an_abandoned_batch_frees_its_inputs_and_cannot_commit() {
        let abandon = Record::Abandoned(Abandoned { batch_id: id("a"), reason: "changed".into(), at: at(0) });
        let state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10), abandon.clone()]);
        let key = InputObject { path: "1.csv".into(), size: 1, ..InputObject::default() }.key();
        assert!(!state.has_seen(&key), "1.csv may be planned again");
        assert!(state.pending().is_empty());
        assert_eq!(state.admits(&committed("a", 1)), Err(Refusal::Abandoned));
        assert_eq!(state.admits(&abandon), Err(Refusal::Abandoned));
        assert_eq!(state.admits(&planned("b", "1.csv")), Ok(()));
    }

    #[test]
    fn inputs_that_come_back_unchanged_after_an_abandon_are_planned_again() {
        let abandon = Record::Abandoned(Abandoned { batch_id: id("a"), reason: "gone".into(), at: at(0) });
        let mut state = log(vec![planned("a", "1.csv"), leased("a", 1, "w", 0, 10), abandon]);
        assert_eq!(state.admits(&planned("a", "1.csv")), Ok(()), "same inputs, same id");
        state.apply(Seq(3), planned("a", "1.csv"));
        let entry = state.batch(&id("a")).expect("planned");
        assert!(entry.is_pending() && entry.lease.is_none() && entry.attempts == 0);
        assert_eq!(state.admits(&planned("a", "1.csv")), Err(Refusal::InputsAlreadyPlanned));
    }

    #[test]
    fn a_commit_without_a_lease_is_fenced() {
        let state = log(vec![planned("a", "1.csv")]);
        assert_eq!(state.admits(&committed("a", 0)), Err(Refusal::Fenced));
        assert_eq!(state.admits(&committed("a", 1)), Err(Refusal::Fenced));
    }

    fn kafka(batch: &str, ranges: &[(i32, i64, i64)]) -> Record {
        let ranges = ranges
            .iter()
            .map(|&(partition, start, end)| OffsetRange { topic: "t".into(), partition, start, end })
            .collect();
        Record::Planned(Planned {
            batch_id: id(batch),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![],
            stream: Some(StreamInputs::Kafka { ranges }),
            at: DateTime::UNIX_EPOCH,
        })
    }

    fn amqp(batch: &str, ids: &[&str]) -> Record {
        Record::Planned(Planned {
            batch_id: id(batch),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![],
            stream: Some(StreamInputs::Amqp {
                queue: "q".into(),
                messages: ids.len() as u64,
                message_ids: ids.iter().map(|id| id.to_string()).collect(),
                nonce: batch.into(),
            }),
            at: DateTime::UNIX_EPOCH,
        })
    }

    fn partition(n: i32) -> PartitionKey {
        PartitionKey { topic: "t".into(), partition: n }
    }

    #[test]
    fn kafka_ranges_never_overlap_and_positions_follow_the_plans() {
        let mut state = log(vec![kafka("a", &[(0, 0, 10), (1, 5, 7)])]);
        assert_eq!(state.position(&partition(0)), Some(10));
        assert_eq!(state.position(&partition(1)), Some(7));
        assert_eq!(state.position(&partition(2)), None);
        assert_eq!(state.admits(&kafka("b", &[(0, 9, 20)])), Err(Refusal::InputsAlreadyPlanned), "offset 9 is in a");
        assert_eq!(state.admits(&kafka("b", &[(0, 10, 20), (1, 6, 8)])), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(state.admits(&kafka("b", &[(0, 12, 12)])), Err(Refusal::InputsAlreadyPlanned), "empty");
        assert_eq!(
            state.admits(&kafka("b", &[(0, 12, 20), (2, 0, 3)])),
            Ok(()),
            "a gap is records gone from the broker"
        );
        state.apply(Seq(1), kafka("b", &[(0, 10, 20)]));
        assert_eq!(state.position(&partition(0)), Some(20));
        // A range the log refused moves nothing.
        state.apply(Seq(2), kafka("c", &[(0, 15, 30)]));
        assert_eq!(state.position(&partition(0)), Some(20));
        assert_eq!(state.pending().len(), 2);
        assert_eq!(state.files_waiting(), 0);
    }

    #[test]
    fn a_partition_begins_where_the_log_first_recorded_it() {
        let started = |offset| {
            Record::Started(Started {
                partitions: vec![PartitionStart { topic: "t".into(), partition: 0, offset }],
                at: DateTime::UNIX_EPOCH,
            })
        };
        let state = log(vec![started(40), started(99)]);
        assert_eq!(state.position(&partition(0)), Some(40), "the first start holds");
        assert_eq!(state.admits(&kafka("a", &[(0, 39, 50)])), Err(Refusal::InputsAlreadyPlanned));
        assert_eq!(state.admits(&kafka("a", &[(0, 40, 50)])), Ok(()));
    }

    #[test]
    fn message_ids_of_committed_batches_are_remembered_and_survive_a_snapshot() {
        let mut state = log(vec![amqp("a", &["m1", "m2"]), leased("a", 1, "w", 0, 9), amqp("b", &["m3"])]);
        assert!(!state.is_committed_message("m1"), "planned is not committed");
        assert_eq!(state.unsettled_batch_of("m1").map(|e| e.planned.batch_id.as_str()), Some("a"));
        state.apply(Seq(3), committed("a", 1));
        assert!(state.unsettled_batch_of("m1").is_none(), "settled");
        assert!(state.unsettled_batch_of("m3").is_some());
        assert!(state.is_committed_message("m1") && state.is_committed_message("m2"));
        assert!(!state.is_committed_message("m3"));
        let abandon = Record::Abandoned(Abandoned { batch_id: id("b"), reason: "r".into(), at: at(0) });
        state.apply(Seq(4), abandon);
        assert!(!state.is_committed_message("m3"), "an abandoned batch's messages come back");
        assert!(state.unsettled_batch_of("m3").is_none());
        let kept = state.batch(&id("a")).expect("planned");
        assert!(
            matches!(&kept.planned.stream, Some(StreamInputs::Amqp { message_ids, messages: 2, .. }) if message_ids.is_empty()),
            "the window holds the ids, not the batch"
        );

        let json = serde_json::to_string(&state).expect("encodes");
        let mut back: LogState = serde_json::from_str(&json).expect("decodes");
        back.restore_index();
        assert!(back.is_committed_message("m2"));
        assert!(!back.is_committed_message("m3"));
    }

    #[test]
    fn a_stream_batch_that_failed_for_good_holds_no_message_and_may_be_abandoned() {
        let mut state = log(vec![amqp("f", &["x1"]), leased("f", 1, "w", 0, 9), failed("f", 1, true)]);
        assert!(state.unsettled_batch_of("x1").is_none(), "its messages went back to the broker");
        let retry = Record::Retried(Retried { batch_id: id("f"), at: at(1) });
        state.apply(Seq(3), retry);
        assert!(state.unsettled_batch_of("x1").is_some(), "retried: pending again");
        state.apply(Seq(4), leased("f", 2, "w", 2, 9));
        state.apply(Seq(5), failed("f", 2, true));
        let abandon = Record::Abandoned(Abandoned { batch_id: id("f"), reason: "handed back".into(), at: at(3) });
        assert_eq!(state.admits(&abandon), Ok(()));
        state.apply(Seq(6), abandon.clone());
        let entry = state.batch(&id("f")).expect("planned");
        assert!(entry.abandoned.is_some() && entry.failed.is_none(), "abandoned, no longer failed");
        assert_eq!(state.admits(&abandon), Err(Refusal::Abandoned));
        let committed = log(vec![amqp("c", &["y"]), leased("c", 1, "w", 0, 9), committed("c", 1)]);
        let abandon = Record::Abandoned(Abandoned { batch_id: id("c"), reason: "r".into(), at: at(3) });
        assert_eq!(committed.admits(&abandon), Err(Refusal::AlreadyCommitted));
    }

    #[test]
    fn the_message_id_window_forgets_the_oldest() {
        let mut state = LogState::default();
        let ids: Vec<String> = (0..MESSAGE_ID_WINDOW + 2).map(|n| format!("m{n}")).collect();
        state.remember_committed_ids(ids);
        assert!(!state.is_committed_message("m0") && !state.is_committed_message("m1"));
        assert!(state.is_committed_message("m2"));
        assert!(state.is_committed_message(&format!("m{}", MESSAGE_ID_WINDOW + 1)));
        assert_eq!(state.committed_ids.len(), MESSAGE_ID_WINDOW);
    }

    #[test]
    fn a_state_survives_its_snapshot() {
        let state = log(vec![
            planned("a", "1.csv"),
            leased("a", 1, "w", 0, 10),
            planned("b", "2.csv"),
            kafka("k", &[(3, 0, 8)]),
        ]);
        let json = serde_json::to_string(&state).expect("encodes");
        let mut back: LogState = serde_json::from_str(&json).expect("decodes");
        back.restore_index();
        assert_eq!(back.next_seq(), state.next_seq());
        assert_eq!(back.position(&partition(3)), Some(8));
        assert_eq!(back.batches().collect::<Vec<_>>(), state.batches().collect::<Vec<_>>());
        assert_eq!(back.admits(&planned("c", "2.csv")), Err(Refusal::InputsAlreadyPlanned));
    }
}
