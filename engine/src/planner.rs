//! Planning: which discovered inputs are new, and how they are cut into
//! batches. Pure: it reads the log's state and writes nothing.

use crate::batch::{Batch, BatchId, InputObject, PipelineName};
use crate::log::LogState;

/// How large a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most input objects in one batch (at least 1).
    pub max_files: usize,
    /// Most input bytes in one batch; a single larger object is a batch
    /// of its own.
    pub max_bytes: u64,
}

/// Cuts the inputs the log has not seen into batches, oldest first; an
/// input found twice (two notifications of one object) counts once.
pub fn plan_new(
    discovered: Vec<InputObject>,
    state: &LogState,
    limits: BatchLimits,
    pipeline: &PipelineName,
    version: u32,
) -> Vec<Batch> {
    let mut found = std::collections::HashSet::new();
    let mut new: Vec<InputObject> = discovered
        .into_iter()
        .filter(|input| {
            let key = input.key();
            !state.has_seen(&key) && found.insert(key)
        })
        .collect();
    new.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.path.cmp(&b.path)));

    let mut batches = Vec::new();
    let mut current: Vec<InputObject> = Vec::new();
    let mut current_bytes = 0u64;
    for input in new {
        let full = current.len() >= limits.max_files.max(1)
            || (!current.is_empty() && current_bytes + input.size > limits.max_bytes);
        if full {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += input.size;
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
    fn an_input_found_twice_is_planned_once() {
        let limits = BatchLimits { max_files: 16, max_bytes: u64::MAX };
        let twice = vec![input("a.csv", 10, 1), input("a.csv", 10, 1)];
        let batches = plan_new(twice, &LogState::default(), limits, &name(), 1);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].inputs.len(), 1);
    }
}
