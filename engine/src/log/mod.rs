//! The checkpoint log: numbered JSON records in object storage, each
//! created with put-if-absent, the single source of truth for what is
//! planned and committed.
//!
//! ```text
//!  writer A                        log/                         writer B
//!  reads up to 6 ──► put 7 (if absent) ✔  ...06 07              reads up to 6
//!                                          ▲                    put 7 (if absent) ✘ AlreadyExists
//!                                          └──────────────────  re-reads 7, checks, put 8 ✔
//! ```
//!
//! Exactly one writer wins each number. A loser re-reads what won, asks
//! [`LogState::admits`] whether its record still makes sense (a batch
//! committed by the winner must not be committed again) and tries the next
//! number.

mod paths;
mod record;
mod state;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

pub use paths::LogPaths;
pub use record::{Abandoned, Committed, Planned, Record};
pub use state::{BatchEntry, LogState, Refusal};

use crate::batch::PipelineName;
use crate::storage::StorageLocation;
use crate::{Error, Result};

/// The number of a log record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The record is in the log with this number.
    Written(Seq),
    /// The log, as it stands, refuses the record.
    Refused(Refusal),
}

/// How many times an append meets a newer record before giving up.
const MAX_APPEND_ATTEMPTS: usize = 64;
/// How many records are read at once.
const READ_CONCURRENCY: usize = 16;

/// One pipeline's checkpoint log, with its state as last read.
#[derive(Debug)]
pub struct CheckpointLog {
    store: Arc<dyn ObjectStore>,
    paths: LogPaths,
    pipeline: PipelineName,
    state: LogState,
}

impl CheckpointLog {
    /// Opens the log at `location` and reads all of it.
    pub async fn open(location: &StorageLocation, pipeline: &PipelineName) -> Result<Self> {
        let (store, root) = location.open()?;
        Self::open_in(store, root, pipeline).await
    }

    /// Opens the log below `root` of `store` and reads all of it.
    pub async fn open_in(store: Arc<dyn ObjectStore>, root: Path, pipeline: &PipelineName) -> Result<Self> {
        let mut log =
            CheckpointLog { store, paths: LogPaths::new(root), pipeline: pipeline.clone(), state: LogState::default() };
        log.refresh().await?;
        Ok(log)
    }

    /// The state as last read or written.
    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// Reads the records written since the last read.
    pub async fn refresh(&mut self) -> Result<()> {
        let next = self.state.next_seq();
        let listing = match next.0 {
            0 => self.store.list(Some(&self.paths.records())),
            n => self.store.list_with_offset(Some(&self.paths.records()), &self.paths.record(Seq(n - 1))),
        };
        let metas: Vec<_> = listing.try_collect().await?;
        let mut seqs: Vec<(Seq, Path)> = metas
            .into_iter()
            .filter_map(|meta| self.paths.parse_record(&meta.location).map(|seq| (seq, meta.location)))
            .filter(|(seq, _)| *seq >= next)
            .collect();
        seqs.sort();
        // Only a gap-free run of numbers from `next` on is read: a record
        // missing from a listing is read on the next refresh.
        let contiguous = seqs.iter().enumerate().take_while(|(i, (seq, _))| seq.0 == next.0 + *i as u64).count();
        seqs.truncate(contiguous);

        let store = &self.store;
        let mut records = futures::stream::iter(seqs)
            .map(|(seq, path)| async move {
                let bytes = store.get(&path).await?.bytes().await?;
                let record: Record = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::CorruptLog { path: path.to_string(), reason: e.to_string() })?;
                Ok::<_, Error>((seq, record))
            })
            .buffered(READ_CONCURRENCY);
        while let Some(read) = records.next().await {
            let (seq, record) = read?;
            self.check_owner(&record)?;
            self.state.apply(seq, record);
        }
        Ok(())
    }

    fn check_owner(&self, record: &Record) -> Result<()> {
        match record {
            Record::Planned(planned) if planned.pipeline != self.pipeline => Err(Error::Config(format!(
                "the checkpoint log holds batches of pipeline \"{}\", not \"{}\"; \
                 give each pipeline its own [checkpoint] url",
                planned.pipeline, self.pipeline
            ))),
            _ => Ok(()),
        }
    }

    /// Appends `record` at the next free number, unless the log, once
    /// up to date, refuses it.
    pub async fn append(&mut self, record: Record) -> Result<Appended> {
        let payload = PutPayload::from(serde_json::to_vec(&record).map_err(|e| Error::CorruptLog {
            path: self.paths.records().to_string(),
            reason: format!("cannot encode record: {e}"),
        })?);
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            if let Err(refusal) = self.state.admits(&record) {
                return Ok(Appended::Refused(refusal));
            }
            let seq = self.state.next_seq();
            let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.store.put_opts(&self.paths.record(seq), payload.clone(), options).await {
                Ok(_) => {
                    tracing::debug!(seq = seq.0, batch_id = %record.batch_id(), "log record written");
                    self.state.apply(seq, record);
                    return Ok(Appended::Written(seq));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    tracing::debug!(seq = seq.0, attempt, "log record taken by another writer; re-reading");
                    self.refresh().await?;
                    if self.state.next_seq() == seq {
                        // Taken but not yet listable: wait for it to show.
                        tokio::time::sleep(Duration::from_millis(10 * (attempt as u64 + 1))).await;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::LogContention { attempts: MAX_APPEND_ATTEMPTS })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::batch::{BatchId, InputObject};
    use crate::sink::Staged;

    fn planned(path: &str) -> Record {
        let pipeline = PipelineName::new("orders").expect("valid");
        let inputs =
            vec![InputObject { path: path.into(), size: 3, etag: Some("e".into()), last_modified: Utc::now() }];
        Record::Planned(Planned {
            batch_id: BatchId::derive(&pipeline, 1, &inputs),
            pipeline,
            version: 1,
            inputs,
            at: Utc::now(),
        })
    }

    fn commit_of(record: &Record) -> Record {
        Record::Committed(Committed {
            batch_id: record.batch_id().clone(),
            staged: Staged { token: "t".into(), outputs: vec![] },
            rows_in: 1,
            at: Utc::now(),
        })
    }

    async fn open(dir: &std::path::Path) -> CheckpointLog {
        let location = StorageLocation::resolve(dir.to_str().expect("utf-8"), dir).expect("location");
        CheckpointLog::open(&location, &PipelineName::new("orders").expect("valid")).await.expect("opens")
    }

    #[tokio::test]
    async fn two_writers_never_share_a_number_and_see_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = open(dir.path()).await;
        let mut b = open(dir.path()).await;
        let plan = planned("1.csv");
        assert_eq!(a.append(plan.clone()).await.expect("append"), Appended::Written(Seq(0)));
        // b has not read record 0: its put of 0 loses, it re-reads, and
        // then the log refuses the same inputs twice.
        assert_eq!(b.append(plan.clone()).await.expect("append"), Appended::Refused(Refusal::InputsAlreadyPlanned));
        assert_eq!(b.append(planned("2.csv")).await.expect("append"), Appended::Written(Seq(1)));
        let commit = commit_of(&plan);
        a.refresh().await.expect("refresh");
        assert_eq!(a.append(commit.clone()).await.expect("append"), Appended::Written(Seq(2)));
        assert_eq!(b.append(commit).await.expect("append"), Appended::Refused(Refusal::AlreadyCommitted));

        let reopened = open(dir.path()).await;
        assert_eq!(reopened.state().next_seq(), Seq(3));
        assert_eq!(reopened.state().pending().len(), 1, "2.csv is planned, not committed");
    }

    #[tokio::test]
    async fn a_log_of_another_pipeline_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path()).await;
        log.append(planned("1.csv")).await.expect("append");
        let location = StorageLocation::resolve(dir.path().to_str().expect("utf-8"), dir.path()).expect("location");
        let other = CheckpointLog::open(&location, &PipelineName::new("other").expect("valid")).await;
        assert!(matches!(other, Err(Error::Config(message)) if message.contains("own [checkpoint] url")));
    }
}
