//! What `sluice vacuum` takes from the log: records every kept snapshot
//! holds, snapshots past the kept ones, segments the state no longer
//! names.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{CheckpointLog, READ_CONCURRENCY, SNAPSHOTS_KEPT, Seq, VACUUM_AFTER};
use crate::{Error, Result};

/// Objects of the log that no reader needs any longer (`sluice vacuum`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Garbage {
    /// Records before the older snapshot kept, older than [`VACUUM_AFTER`].
    pub records: Vec<Path>,
    /// Snapshots older than the two kept.
    pub snapshots: Vec<Path>,
    /// Segments the state does not name (a seal that lost a race, or
    /// history past `max_file_age`), older than [`VACUUM_AFTER`].
    pub segments: Vec<Path>,
}

impl Garbage {
    /// How many objects, in all.
    pub fn len(&self) -> usize {
        self.records.len() + self.snapshots.len() + self.segments.len()
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CheckpointLog {
    /// What no reader needs any longer, as of `now`: records that every
    /// snapshot kept folds in, snapshots past the kept ones, and segments
    /// the state does not name. Records and segments are only taken once
    /// they are [`VACUUM_AFTER`] old, so that a reader that is slow to read
    /// on, or a seal whose record is still being written, is not undercut.
    pub async fn garbage(&mut self, now: chrono::DateTime<chrono::Utc>) -> Result<Garbage> {
        self.refresh().await?;
        let old_enough = |meta: &object_store::ObjectMeta| {
            chrono::TimeDelta::from_std(VACUUM_AFTER).is_ok_and(|age| meta.last_modified <= now - age)
        };
        let mut garbage = Garbage::default();
        let mut snapshots = self.snapshots_newest_first().await?;
        let kept: Vec<(Seq, Path)> = snapshots.drain(..snapshots.len().min(SNAPSHOTS_KEPT)).collect();
        garbage.snapshots = snapshots.into_iter().map(|(_, path)| path).collect();
        if kept.len() == SNAPSHOTS_KEPT {
            let first_needed = kept.iter().map(|(seq, _)| *seq).min().unwrap_or_default();
            let listed: Vec<_> = self.store.list(Some(&self.paths.records())).try_collect().await?;
            garbage.records = listed
                .into_iter()
                .filter(|meta| old_enough(meta))
                .filter_map(|meta| self.paths.parse_record(&meta.location).map(|seq| (seq, meta.location)))
                .filter(|(seq, _)| *seq < first_needed)
                .map(|(_, path)| path)
                .collect();
            garbage.records.sort();
        }
        let named: HashSet<Path> =
            self.state.segments().iter().map(|segment| self.paths.segment(&segment.name)).collect();
        let listed: Vec<_> = self.store.list(Some(&self.paths.segments())).try_collect().await?;
        garbage.segments = listed
            .into_iter()
            .filter(|meta| old_enough(meta) && !named.contains(&meta.location))
            .map(|meta| meta.location)
            .collect();
        garbage.segments.sort();
        Ok(garbage)
    }

    /// Removes `garbage` (what [`CheckpointLog::garbage`] found).
    pub async fn remove(&self, garbage: &Garbage) -> Result<()> {
        let paths = garbage.snapshots.iter().chain(&garbage.segments).chain(&garbage.records).cloned();
        let store = &self.store;
        futures::stream::iter(paths)
            .map(|path| async move {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(other) => Err(Error::from(other)),
                }
            })
            .buffer_unordered(READ_CONCURRENCY as usize)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}
