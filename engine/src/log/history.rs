//! What a planner asks of the log's sealed history: segments written
//! when batches are sealed, and read back for the names a listing holds
//! (see [`super::segment`]).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};

use super::segment::{self, History, SealedInput, SegmentBody, SegmentRef};
use super::{CheckpointLog, READ_CONCURRENCY, format};
use crate::model::{BatchId, InputKey, InputObject};
use crate::{Error, Result};

impl CheckpointLog {
    /// Writes the segment of the committed batches `ids` (their inputs,
    /// sorted), for a `sealed` record to name. Writing it twice writes the
    /// same object.
    pub async fn write_segment(&mut self, ids: &[BatchId]) -> Result<SegmentRef> {
        let inputs: Vec<SealedInput> = ids
            .iter()
            .filter_map(|id| self.state.batch(id))
            .flat_map(|entry| {
                let at = (entry.planned_seq.0, entry.planned_index);
                entry.planned.inputs.iter().map(move |input| (at.0, at.1, input.clone()))
            })
            .collect();
        let body = SegmentBody::of(inputs);
        let reference = body.reference(ids);
        let path = self.paths.segment(&reference.name);
        let bytes = serde_json::to_vec(&format::stamped_as(format::SEALING_FORMAT, &body))
            .map_err(|e| Error::CorruptLog { path: path.to_string(), reason: format!("cannot encode segment: {e}") })?;
        self.store.put(&path, PutPayload::from(bytes)).await?;
        self.segments.keep(&reference.name, &body);
        Ok(reference)
    }

    /// What the segments say of the `listed` inputs that the state does
    /// not hold: which versions sealed batches hold, and the latest sealed
    /// version of each other path. A segment is read only if a listed
    /// path is inside its range, and once read its hashes are kept.
    pub async fn history(&mut self, listed: &[InputObject]) -> Result<History> {
        // From here on the segments answer for what was sealed.
        self.state.drop_sealed_inputs();
        if self.state.segments().is_empty() {
            return Ok(History::default());
        }
        let mut candidates: Vec<(&str, InputKey)> = listed
            .iter()
            .map(|input| (input.path.as_str(), input.key()))
            .filter(|(_, key)| !self.state.holds_input(key))
            .collect();
        if candidates.is_empty() {
            return Ok(History::default());
        }
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        let segments = self.state.segments().to_vec();
        let unread: Vec<SegmentRef> = segments
            .iter()
            .filter(|segment| !self.segments.has(&segment.name) && covered(&candidates, segment).next().is_some())
            .cloned()
            .collect();
        for (segment, body) in self.read_segments(&unread).await? {
            self.segments.keep(&segment.name, &body);
        }
        let mut seen = HashSet::new();
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut holding = Vec::new();
        for segment in &segments {
            let mut holds_a_path = false;
            for (path, key) in covered(&candidates, segment) {
                let (has_key, has_path) = self.segments.holds(&segment.name, key, path);
                if has_key {
                    seen.insert(key.clone());
                } else if has_path {
                    wanted.insert(path);
                    holds_a_path = true;
                }
            }
            if holds_a_path {
                holding.push(segment.clone());
            }
        }
        // A path whose listed version is sealed is not a changed one.
        let seen_paths: HashSet<&str> =
            candidates.iter().filter(|(_, key)| seen.contains(key)).map(|(path, _)| *path).collect();
        wanted.retain(|path| !seen_paths.contains(path));
        let bodies = match wanted.is_empty() {
            true => Vec::new(),
            false => self.read_segments(&holding).await?.into_iter().map(|(_, body)| body).collect(),
        };
        Ok(segment::history_of(seen, &bodies, &wanted))
    }

    /// Reads segments, several at once. A segment that is gone must be
    /// one the log no longer names (vacuum removed it once `max_file_age`
    /// passed it): the log is read on, and a segment it still names is a
    /// corrupt log, since the inputs it held would be read again.
    async fn read_segments(&mut self, segments: &[SegmentRef]) -> Result<Vec<(SegmentRef, SegmentBody)>> {
        let (store, paths) = (&self.store, &self.paths);
        let read: Vec<(SegmentRef, Option<SegmentBody>)> = futures::stream::iter(segments.iter().cloned())
            .map(|segment| async move {
                let path = paths.segment(&segment.name);
                let bytes = match store.get(&path).await {
                    Ok(got) => got.bytes().await?,
                    Err(object_store::Error::NotFound { .. }) => return Ok((segment, None)),
                    Err(other) => return Err(Error::from(other)),
                };
                let body: SegmentBody = format::read(path.as_ref(), &bytes)?;
                Ok((segment, Some(body)))
            })
            .buffered(READ_CONCURRENCY as usize)
            .try_collect()
            .await?;
        if read.iter().any(|(_, body)| body.is_none()) {
            self.refresh().await?;
            if let Some((missing, _)) = read.iter().find(|(segment, body)| {
                body.is_none() && self.state.segments().iter().any(|named| named.name == segment.name)
            }) {
                return Err(Error::CorruptLog {
                    path: self.paths.segment(&missing.name).to_string(),
                    reason: "the log names this segment and it is missing; it holds the inputs of committed \
                             batches, which would be read again"
                        .into(),
                });
            }
        }
        Ok(read.into_iter().filter_map(|(segment, body)| body.map(|body| (segment, body))).collect())
    }
}

/// The candidates (sorted by path) whose path `segment` covers.
fn covered<'a>(
    candidates: &'a [(&'a str, InputKey)],
    segment: &'a SegmentRef,
) -> impl Iterator<Item = &'a (&'a str, InputKey)> {
    let from = candidates.partition_point(|(path, _)| *path < segment.first.as_str());
    candidates[from..].iter().take_while(|(path, _)| segment.covers(path))
}
