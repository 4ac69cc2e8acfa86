//! Planning: which discovered inputs are new, which are new versions of
//! inputs the log holds already, and how they are cut into batches. Pure:
//! it reads the log's state and writes nothing; what a changed input
//! becomes is decided here from what the source found out about it, which
//! [`changes`] asks the source.

pub mod changes;
pub mod horizon;

use std::collections::{HashMap, HashSet};

use crate::batch::{Batch, BatchId, InputKey, InputObject, PipelineName};
use crate::log::{History, LogState, Seq};
use crate::source::OnChange;

/// How large a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most input objects in one batch (at least 1).
    pub max_files: usize,
    /// Most input bytes in one batch; a single larger object is a batch
    /// of its own.
    pub max_bytes: u64,
}

/// An input whose path the log holds in an earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The latest version of the path in a batch that was not abandoned.
    pub before: InputObject,
    /// The object as it is listed now.
    pub now: InputObject,
}

/// What a listing holds that the log has not seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unseen {
    /// Inputs at paths the log has never planned (or only in abandoned
    /// batches).
    pub new: Vec<InputObject>,
    /// New versions of inputs the log holds.
    pub changed: Vec<Changed>,
}

/// The inputs of committed batches that `listed` still shows: what
/// `[source] after_commit` has yet to delete or move (a crash came between
/// the commit and the removal). Those of batches in the state are given as
/// they were planned; a sealed batch is a committed one, so a listed input
/// that `history` has seen is one too. The log is read through only when a
/// listed input is one it holds.
pub fn committed_still_listed(listed: &[InputObject], state: &LogState, history: &History) -> Vec<InputObject> {
    let mut leftover: Vec<InputObject> =
        listed.iter().filter(|input| history.has_seen(&input.key())).cloned().collect();
    let held: HashSet<InputKey> = listed.iter().map(InputObject::key).filter(|key| state.holds_input(key)).collect();
    if held.is_empty() {
        return leftover;
    }
    leftover.extend(
        state
            .batches()
            .filter(|entry| entry.committed.is_some())
            .flat_map(|entry| &entry.planned.inputs)
            .filter(|input| held.contains(&input.key()))
            .cloned(),
    );
    leftover
}

/// Splits the inputs of `discovered` that the log has not seen (in its
/// state or, through `history`, in its segments) into new paths and new
/// versions of planned ones; an input found twice (two notifications of
/// one object) counts once.
pub fn unseen(discovered: Vec<InputObject>, state: &LogState, history: &History) -> Unseen {
    let mut found = HashSet::new();
    let fresh: Vec<InputObject> = discovered
        .into_iter()
        .filter(|input| {
            let key = input.key();
            !state.has_seen(&key) && !history.has_seen(&key) && found.insert(key)
        })
        .collect();
    if fresh.is_empty() {
        return Unseen::default();
    }
    // The latest planned version of each path listed: the log is read
    // through only when something is new.
    let paths: HashSet<&str> = fresh.iter().map(|input| input.path.as_str()).collect();
    let mut latest: HashMap<&str, ((Seq, u32), &InputObject)> = HashMap::new();
    for path in &paths {
        if let Some(((seq, index), input)) = history.latest(path) {
            latest.insert(input.path.as_str(), ((Seq(seq), index), input));
        }
    }
    for entry in state.batches().filter(|entry| entry.abandoned.is_none()) {
        let at = (entry.planned_seq, entry.planned_index);
        for input in entry.planned.inputs.iter().filter(|input| paths.contains(input.path.as_str())) {
            let slot = latest.entry(input.path.as_str()).or_insert((at, input));
            if at >= slot.0 {
                *slot = (at, input);
            }
        }
    }
    let mut unseen = Unseen::default();
    for input in fresh {
        match latest.get(input.path.as_str()) {
            Some((_, before)) => unseen.changed.push(Changed { before: (*before).clone(), now: input }),
            None => unseen.new.push(input),
        }
    }
    unseen
}

/// What planning does with a changed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangePlan {
    /// Read only the bytes added since the version planned before.
    ReadAppended(InputObject),
    /// Read the whole object as a new version.
    ReadWhole(InputObject),
    /// Leave it unread (`on_change = "ignore"`).
    Leave(InputObject),
}

/// What `on_change` makes of `changed`, given whether the source found it
/// to be its earlier version with bytes appended.
pub fn resolve_change(on_change: OnChange, changed: Changed, appended: bool) -> ChangePlan {
    match on_change {
        OnChange::Ignore => ChangePlan::Leave(changed.now),
        OnChange::Append if appended => {
            ChangePlan::ReadAppended(InputObject { start: changed.before.size, ..changed.now })
        }
        OnChange::Append | OnChange::NewVersion => ChangePlan::ReadWhole(changed.now),
    }
}

/// Cuts the inputs the state has not seen into batches, oldest first, a
/// changed input read whole as a new version; an input found twice counts
/// once. It looks at the state alone: a log with segments is asked for
/// its [`History`] and planned with [`unseen`].
pub fn plan_new(
    discovered: Vec<InputObject>,
    state: &LogState,
    limits: BatchLimits,
    pipeline: &PipelineName,
    version: u32,
) -> Vec<Batch> {
    let Unseen { mut new, changed } = unseen(discovered, state, &History::default());
    new.extend(changed.into_iter().map(|changed| changed.now));
    cut_batches(new, limits, pipeline, version)
}

/// Cuts `inputs` into batches, oldest first.
pub fn cut_batches(
    mut new: Vec<InputObject>,
    limits: BatchLimits,
    pipeline: &PipelineName,
    version: u32,
) -> Vec<Batch> {
    new.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.path.cmp(&b.path)));

    let mut batches = Vec::new();
    let mut current: Vec<InputObject> = Vec::new();
    let mut current_bytes = 0u64;
    for input in new {
        let bytes = input.size - input.start.min(input.size);
        let full = current.len() >= limits.max_files.max(1)
            || (!current.is_empty() && current_bytes + bytes > limits.max_bytes);
        if full {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.push(input);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches.into_iter().map(|inputs| Batch::of_objects(BatchId::derive(pipeline, version, &inputs), inputs)).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration};

    use super::*;
    use crate::log::{Planned, Record, Seq};

    fn input(path: &str, size: u64, age: i64) -> InputObject {
        InputObject {
            path: path.into(),
            size,
            etag: Some(format!("{path}-{size}")),
            last_modified: DateTime::UNIX_EPOCH + Duration::seconds(age),
            ..InputObject::default()
        }
    }

    fn name() -> PipelineName {
        PipelineName::new("p").expect("valid")
    }

    #[test]
    fn cuts_by_count_and_bytes_oldest_first() {
        let limits = BatchLimits { max_files: 2, max_bytes: 100 };
        let found =
            vec![input("c", 10, 3), input("a", 10, 1), input("b", 10, 2), input("big", 500, 4), input("d", 10, 5)];
        let batches = plan_new(found, &LogState::default(), limits, &name(), 1);
        let paths: Vec<Vec<&str>> =
            batches.iter().map(|b| b.inputs.iter().map(|i| i.path.as_str()).collect()).collect();
        assert_eq!(paths, vec![vec!["a", "b"], vec!["c"], vec!["big"], vec!["d"]]);
    }

    #[test]
    fn committed_inputs_still_listed_are_found_and_others_are_not() {
        let mut log = crate::txn::testing::Log::planned();
        let listed = log.0.pending()[0].inputs.clone();
        assert!(
            committed_still_listed(&listed, &log.0, &History::default()).is_empty(),
            "a pending batch's input stays"
        );
        log.lease(1, "w", 0, 10).commit(1, "t");
        assert_eq!(committed_still_listed(&listed, &log.0, &History::default()), listed);
        let dropped_again = InputObject { size: 2, ..listed[0].clone() };
        assert!(
            committed_still_listed(&[dropped_again], &log.0, &History::default()).is_empty(),
            "a new version at the path stays"
        );
    }

    #[test]
    fn skips_inputs_already_planned_but_not_changed_ones() {
        let mut state = LogState::default();
        let old = input("a.csv", 10, 1);
        state.apply(
            Seq(0),
            Record::Planned(Planned {
                batch_id: BatchId::derive(&name(), 1, std::slice::from_ref(&old)),
                pipeline: name(),
                version: 1,
                inputs: vec![old.clone()],
                stream: None,
                at: DateTime::UNIX_EPOCH,
            }),
        );
        let limits = BatchLimits { max_files: 16, max_bytes: u64::MAX };
        assert!(plan_new(vec![old.clone()], &state, limits, &name(), 1).is_empty());
        let replaced = input("a.csv", 12, 9);
        let batches = plan_new(vec![replaced.clone()], &state, limits, &name(), 1);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].inputs, vec![replaced]);
    }

    #[test]
    fn a_changed_input_is_told_from_a_new_one_against_its_latest_planned_version() {
        let mut state = LogState::default();
        let first = input("a.csv", 10, 1);
        let second = InputObject { start: 10, ..input("a.csv", 20, 2) };
        for (seq, old) in [first.clone(), second.clone()].into_iter().enumerate() {
            state.apply(
                Seq(seq as u64),
                Record::Planned(Planned {
                    batch_id: BatchId::derive(&name(), 1, std::slice::from_ref(&old)),
                    pipeline: name(),
                    version: 1,
                    inputs: vec![old],
                    stream: None,
                    at: DateTime::UNIX_EPOCH,
                }),
            );
        }
        let grown = input("a.csv", 30, 3);
        let found = unseen(vec![second.clone(), grown.clone(), input("b.csv", 5, 3)], &state, &History::default());
        assert_eq!(found.new, vec![input("b.csv", 5, 3)]);
        assert_eq!(found.changed, vec![Changed { before: second.clone(), now: grown.clone() }]);

        let changed = found.changed[0].clone();
        let part = InputObject { start: 20, ..grown.clone() };
        assert_eq!(resolve_change(OnChange::Append, changed.clone(), true), ChangePlan::ReadAppended(part.clone()));
        assert_eq!(resolve_change(OnChange::Append, changed.clone(), false), ChangePlan::ReadWhole(grown.clone()));
        assert_eq!(resolve_change(OnChange::NewVersion, changed.clone(), true), ChangePlan::ReadWhole(grown.clone()));
        assert_eq!(resolve_change(OnChange::Ignore, changed, true), ChangePlan::Leave(grown.clone()));

        // The part is its own batch, and counts only its own bytes.
        let limits = BatchLimits { max_files: 16, max_bytes: 10 };
        let batches = cut_batches(vec![part.clone(), input("c.csv", 10, 4)], limits, &name(), 1);
        assert_eq!(batches.len(), 2, "10 new bytes each");
        assert_ne!(batches[0].id, cut_batches(vec![grown], limits, &name(), 1)[0].id);
    }

    #[test]
    fn an_input_found_twice_is_planned_once() {
        let limits = BatchLimits { max_files: 16, max_bytes: u64::MAX };
        let twice = vec![input("a.csv", 10, 1), input("a.csv", 10, 1)];
        let batches = plan_new(twice, &LogState::default(), limits, &name(), 1);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].inputs.len(), 1);
    }
}
