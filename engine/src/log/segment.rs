//! Sealed history: the inputs of committed batches, folded out of the
//! state a reader loads into immutable segment objects.
//!
//! ```text
//! <checkpoint>/segments/<hash of the batch ids>.json   {"format":3,...,"inputs":[[seq,index,{input}],...]}
//! ```
//!
//! A `sealed` record names a segment and the committed batches whose
//! inputs it holds; from that record on, those batches are no longer in
//! the state (their counts stay in its tally), so a snapshot, and every
//! worker that loads one, stays the size of the live work. Planners ask
//! the segments whether a listed input was planned before
//! ([`super::CheckpointLog::history`]); a segment is only read when a
//! listed path falls inside its range of paths, and once read its keys
//! stay in memory as hashes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{BatchId, InputKey, InputObject};

/// A segment, as the state names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Its object's name in the log's `segments/` folder.
    pub name: String,
    /// The first input path it holds, in byte order.
    pub first: String,
    /// The last input path it holds.
    pub last: String,
    /// How many inputs it holds.
    pub inputs: u64,
    /// The newest modification time of its inputs: once `max_file_age`
    /// puts the horizon past it, no input of it can be listed again and
    /// the state lets it go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<DateTime<Utc>>,
}

impl SegmentRef {
    /// Whether `path` is inside its range of paths.
    pub fn covers(&self, path: &str) -> bool {
        self.first.as_str() <= path && path <= self.last.as_str()
    }
}

/// One sealed input: where it was planned (record number and place in
/// it), then the input as planned.
pub type SealedInput = (u64, u32, InputObject);

/// A segment's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentBody {
    /// The inputs, sorted by path, each path's versions in planned order.
    pub inputs: Vec<SealedInput>,
}

impl SegmentBody {
    /// The body of `inputs`, sorted.
    pub fn of(mut inputs: Vec<SealedInput>) -> Self {
        inputs.sort_by(|a, b| (a.2.path.as_str(), a.0, a.1).cmp(&(b.2.path.as_str(), b.0, b.1)));
        SegmentBody { inputs }
    }

    /// The name and range it is known by in the state, for the batches
    /// `ids` (the name comes from them, so that two planners sealing the
    /// same batches write the same object).
    pub fn reference(&self, ids: &[BatchId]) -> SegmentRef {
        let mut hash = Sha256::new();
        for id in ids {
            hash.update(id.as_str().as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let name: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
        SegmentRef {
            name: format!("{name}.json"),
            first: self.inputs.first().map(|(_, _, input)| input.path.clone()).unwrap_or_default(),
            last: self.inputs.last().map(|(_, _, input)| input.path.clone()).unwrap_or_default(),
            inputs: self.inputs.len() as u64,
            newest: self.inputs.iter().map(|(_, _, input)| input.last_modified).max(),
        }
    }
}

/// What the sealed history says of some listed inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Listed inputs whose version a sealed (so committed) batch holds.
    seen: HashSet<InputKey>,
    /// For listed paths with a sealed version not listed now: the latest
    /// sealed version, with where it was planned.
    latest: HashMap<String, ((u64, u32), InputObject)>,
}

impl History {
    /// Whether a sealed batch holds this version of an input.
    pub fn has_seen(&self, key: &InputKey) -> bool {
        self.seen.contains(key)
    }

    /// The latest sealed version of `path`, with the record number and
    /// place it was planned at, when it is not the version listed.
    pub fn latest(&self, path: &str) -> Option<((u64, u32), &InputObject)> {
        self.latest.get(path).map(|(at, input)| (*at, input))
    }

    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.latest.is_empty()
    }
}

/// A segment's keys and paths, as 128-bit hashes: what a planner keeps of
/// a segment it has read.
#[derive(Debug)]
struct Hashes {
    keys: HashSet<u128>,
    paths: HashSet<u128>,
}

/// The segments a log has read, by name. The hashes are keyed afresh in
/// every process, so no two inputs collide the same way twice.
#[derive(Debug)]
pub(super) struct SegmentCache {
    hashers: (RandomState, RandomState),
    read: HashMap<String, Arc<Hashes>>,
}

impl Default for SegmentCache {
    fn default() -> Self {
        SegmentCache { hashers: (RandomState::new(), RandomState::new()), read: HashMap::new() }
    }
}

impl SegmentCache {
    fn hash<T: Hash>(&self, value: &T) -> u128 {
        (u128::from(self.hashers.0.hash_one(value)) << 64) | u128::from(self.hashers.1.hash_one(value))
    }

    /// Keeps the hashes of `body` as the segment `name`.
    pub(super) fn keep(&mut self, name: &str, body: &SegmentBody) {
        let keys = body.inputs.iter().map(|(_, _, input)| self.hash(&input.key())).collect();
        let paths = body.inputs.iter().map(|(_, _, input)| self.hash(&input.path)).collect();
        self.read.insert(name.to_string(), Arc::new(Hashes { keys, paths }));
    }

    /// Whether the segment `name` has been read.
    pub(super) fn has(&self, name: &str) -> bool {
        self.read.contains_key(name)
    }

    /// Whether the segment `name` (read) holds `key`, and whether it holds
    /// some version of its path.
    pub(super) fn holds(&self, name: &str, key: &InputKey, path: &str) -> (bool, bool) {
        match self.read.get(name) {
            Some(hashes) => (hashes.keys.contains(&self.hash(key)), hashes.paths.contains(&self.hash(&path))),
            None => (false, false),
        }
    }
}

/// Folds what the segments said of `listed` into a [`History`]: `found`
/// holds the keys that some segment holds, `bodies` the segments read in
/// full for paths with a sealed version that is not the one listed.
pub(super) fn history_of(found: HashSet<InputKey>, bodies: &[SegmentBody], wanted: &HashSet<&str>) -> History {
    let mut latest: HashMap<String, ((u64, u32), InputObject)> = HashMap::new();
    for body in bodies {
        for (seq, index, input) in &body.inputs {
            if !wanted.contains(input.path.as_str()) {
                continue;
            }
            let at = (*seq, *index);
            match latest.get(&input.path) {
                Some((newer, _)) if *newer > at => {}
                _ => {
                    latest.insert(input.path.clone(), (at, input.clone()));
                }
            }
        }
    }
    History { seen: found, latest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, etag: &str) -> InputObject {
        InputObject { path: path.into(), size: 1, etag: Some(etag.into()), ..InputObject::default() }
    }

    #[test]
    fn a_body_is_sorted_by_path_and_named_by_its_batches() {
        let body = SegmentBody::of(vec![(5, 0, input("b", "1")), (3, 1, input("a", "2")), (3, 0, input("a", "1"))]);
        let order: Vec<(&str, u64, u32)> = body.inputs.iter().map(|(s, i, x)| (x.path.as_str(), *s, *i)).collect();
        assert_eq!(order, [("a", 3, 0), ("a", 3, 1), ("b", 5, 0)]);
        let ids = [BatchId::from_string("x".into()), BatchId::from_string("y".into())];
        let reference = body.reference(&ids);
        assert_eq!((reference.first.as_str(), reference.last.as_str(), reference.inputs), ("a", "b", 3));
        assert_eq!(reference.name, body.reference(&ids).name, "the same batches, the same name");
        assert_ne!(reference.name, body.reference(&ids[..1]).name);
        assert!(reference.covers("a") && reference.covers("aa") && !reference.covers("c"));
    }

    #[test]
    fn the_cache_knows_keys_and_paths_and_history_takes_the_latest_version() {
        let body = SegmentBody::of(vec![(1, 0, input("a", "1")), (7, 0, input("a", "2")), (2, 0, input("b", "1"))]);
        let mut cache = SegmentCache::default();
        cache.keep("s", &body);
        assert!(cache.has("s") && !cache.has("t"));
        assert_eq!(cache.holds("s", &input("a", "1").key(), "a"), (true, true));
        assert_eq!(cache.holds("s", &input("a", "3").key(), "a"), (false, true));
        assert_eq!(cache.holds("s", &input("c", "1").key(), "c"), (false, false));

        let found: HashSet<InputKey> = [input("b", "1").key()].into();
        let history = history_of(found, &[body], &["a"].into());
        assert!(history.has_seen(&input("b", "1").key()));
        let (at, latest) = history.latest("a").expect("a sealed version of a");
        assert_eq!((at, latest.etag.as_deref()), ((7, 0), Some("2")));
        assert!(history.latest("b").is_none(), "b was not asked for");
    }
}
