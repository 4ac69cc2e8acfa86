//! `[source] max_file_age`: the horizon before which inputs are neither
//! planned nor remembered. It is the newest input seen (in the log or in
//! the listing) less the age, and never earlier than the log's own
//! horizon, so a file the log has forgotten is never planned again, even
//! after the age is raised or removed.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::batch::{BatchId, InputObject};
use crate::log::LogState;

/// The horizon of a planning pass that lists `listed`, or `None` when
/// nothing is left unplanned for its age.
pub fn horizon(listed: &[InputObject], state: &LogState, max_age: Option<Duration>) -> Option<DateTime<Utc>> {
    let moved = max_age.and_then(|age| {
        let newest = listed.iter().map(|input| input.last_modified).max().max(state.newest_input())?;
        newest.checked_sub_signed(TimeDelta::from_std(age).ok()?)
    });
    state.forgotten_before().max(moved)
}

/// `listed` without the inputs modified before `horizon`, and how many
/// were left out.
pub fn within(listed: Vec<InputObject>, horizon: Option<DateTime<Utc>>) -> (Vec<InputObject>, usize) {
    let Some(horizon) = horizon else { return (listed, 0) };
    let before = listed.len();
    let kept: Vec<InputObject> = listed.into_iter().filter(|input| input.last_modified >= horizon).collect();
    let left = before - kept.len();
    (kept, left)
}

/// The committed batches the log may forget at `before`, none of them
/// with files in staging (`staged`, the batches of the staged tokens): a
/// batch whose outputs may not all be published yet, or whose leftovers
/// vacuum has yet to remove, stays until they are gone.
pub fn forgettable(state: &LogState, before: DateTime<Utc>, staged: &HashSet<BatchId>) -> Vec<BatchId> {
    state
        .batches()
        .filter(|entry| LogState::may_forget(entry, before) && !staged.contains(&entry.planned.batch_id))
        .map(|entry| entry.planned.batch_id.clone())
        .collect()
}

/// The committed batches the log could forget at `before`, before staging
/// is looked at: whether to look at all.
pub fn any_forgettable(state: &LogState, before: DateTime<Utc>) -> bool {
    state.batches().any(|entry| LogState::may_forget(entry, before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::testing::{Log, at};

    fn input(path: &str, modified: i64) -> InputObject {
        InputObject { path: path.into(), size: 1, last_modified: at(modified), ..InputObject::default() }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_horizon_counts_back_from_the_newest_input_listed_or_planned() {
        let empty = LogState::default();
        assert_eq!(horizon(&[input("a", 0)], &empty, None), None, "no max_file_age, no horizon");
        assert_eq!(horizon(&[], &empty, Some(HOUR)), None, "nothing seen yet");
        let listed = [input("a", 100), input("b", 7200)];
        assert_eq!(horizon(&listed, &empty, Some(HOUR)), Some(at(3600)));
        // The log planned an input at 10,000: it counts even when the
        // listing no longer shows it.
        let mut log = Log(LogState::default());
        log.push(crate::log::Record::Planned(crate::log::Planned {
            batch_id: BatchId::from_string("b".into()),
            pipeline: crate::batch::PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![input("c", 10_000)],
            stream: None,
            at: at(0),
        }));
        assert_eq!(horizon(&listed, &log.0, Some(HOUR)), Some(at(6400)));
    }

    #[test]
    fn inputs_before_the_horizon_are_left_out() {
        let listed = vec![input("old", 10), input("edge", 50), input("new", 90)];
        let (kept, left) = within(listed.clone(), Some(at(50)));
        assert_eq!(kept.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(), ["edge", "new"]);
        assert_eq!(left, 1);
        assert_eq!(within(listed, None), (vec![input("old", 10), input("edge", 50), input("new", 90)], 0));
    }

    #[test]
    fn a_batch_with_files_in_staging_is_not_forgotten() {
        let mut log = Log::planned();
        assert!(!any_forgettable(&log.0, at(10)), "pending: not forgettable");
        log.lease(1, "w", 0, 10).commit(1, "t");
        let batch = crate::txn::testing::id();
        assert!(!any_forgettable(&log.0, at(0)), "its input is not before the horizon");
        assert!(any_forgettable(&log.0, at(10)));
        assert_eq!(forgettable(&log.0, at(10), &HashSet::new()), vec![batch.clone()]);
        assert!(forgettable(&log.0, at(10), &HashSet::from([batch])).is_empty(), "its publish may be unfinished");
    }
}
