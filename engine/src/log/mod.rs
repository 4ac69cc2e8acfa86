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

mod format;
mod garbage;
mod history;
mod paths;
mod record;
mod segment;
mod state;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

pub use format::{FORMAT, WRITTEN_BY};
pub use garbage::Garbage;
pub use paths::LogPaths;
pub use record::{
    Abandoned, Committed, Failed, Leased, Planned, PlannedBatches, RanBy, Record, Retried, Sealed, Started,
};
pub use segment::{History, SealedInput, SegmentBody, SegmentRef};
pub use state::{BatchEntry, Forgotten, LogState, Refusal};

use crate::model::PipelineName;
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
const READ_CONCURRENCY: u64 = 16;
/// Records between two snapshots, by default.
pub const SNAPSHOT_EVERY: u64 = 1000;
/// Snapshots kept; older ones are deleted once a newer one is written.
const SNAPSHOTS_KEPT: usize = 2;
/// How old a record or segment no reader needs must be before `sluice
/// vacuum` removes it. A reader that has not read the log for half as
/// long loads the newest snapshot again before it reads on (see
/// [`CheckpointLog::refresh`]), so it never takes a removed record's
/// number for the next free one.
pub const VACUUM_AFTER: Duration = Duration::from_secs(3600);
/// How long a reader may go without reading the log before it looks for
/// a newer snapshot first.
const RELOAD_AFTER: Duration = Duration::from_secs(VACUUM_AFTER.as_secs() / 2);

/// A snapshot: the state folded from the records before `state.next_seq()`.
/// Written with its format stamp, like a record (see [`format`]).
#[derive(Debug, Deserialize)]
struct Snapshot {
    pipeline: PipelineName,
    state: LogState,
}

/// A snapshot to write, borrowing the state.
#[derive(Serialize)]
struct SnapshotOf<'a> {
    pipeline: &'a PipelineName,
    state: &'a LogState,
}

/// One pipeline's checkpoint log, with its state as last read.
///
/// Opening reads the newest snapshot and the records after it, so start-up
/// reads at most [`SNAPSHOT_EVERY`] records however long the log is.
/// Records are read by number until one is missing, never by listing.
#[derive(Debug)]
pub struct CheckpointLog {
    store: Arc<dyn ObjectStore>,
    paths: LogPaths,
    pipeline: PipelineName,
    state: LogState,
    snapshot_every: u64,
    last_snapshot: Seq,
    records_read: u64,
    segments: segment::SegmentCache,
    last_read: std::time::Instant,
    reload_after: Duration,
}

impl CheckpointLog {
    /// Opens the log at `location` and reads all of it.
    /// A bucket must refuse a second create of the same object: that is
    /// checked first, and a store that does not is refused.
    pub async fn open(location: &StorageLocation, pipeline: &PipelineName) -> Result<Self> {
        let (store, root) = location.open()?;
        if !location.is_local() {
            check_put_if_absent(store.as_ref(), &root, location).await?;
        }
        Self::open_in(store, root, pipeline, SNAPSHOT_EVERY).await
    }

    /// Opens the log below `root` of `store` and reads all of it; a
    /// snapshot is written every `snapshot_every` records.
    pub async fn open_in(
        store: Arc<dyn ObjectStore>,
        root: Path,
        pipeline: &PipelineName,
        snapshot_every: u64,
    ) -> Result<Self> {
        let mut log = CheckpointLog {
            store,
            paths: LogPaths::new(root),
            pipeline: pipeline.clone(),
            state: LogState::default(),
            snapshot_every: snapshot_every.max(1),
            last_snapshot: Seq(0),
            records_read: 0,
            segments: segment::SegmentCache::default(),
            last_read: std::time::Instant::now(),
            reload_after: RELOAD_AFTER,
        };
        log.load_snapshot().await?;
        log.refresh().await?;
        Ok(log)
    }

    /// The state as last read or written.
    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// How many records were read since the log was opened.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// The snapshots there are, by the number of the record after them,
    /// newest first.
    async fn snapshots_newest_first(&self) -> Result<Vec<(Seq, Path)>> {
        let listed: Vec<_> = self.store.list(Some(&self.paths.snapshots())).try_collect().await?;
        let mut found: Vec<(Seq, Path)> = listed
            .into_iter()
            .filter_map(|meta| self.paths.parse_record(&meta.location).map(|seq| (seq, meta.location)))
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        Ok(found)
    }

    /// Starts from the newest readable snapshot, if there is one newer
    /// than the state held.
    async fn load_snapshot(&mut self) -> Result<()> {
        for (next, path) in self.snapshots_newest_first().await? {
            if next <= self.state.next_seq() {
                return Ok(());
            }
            let snapshot = match self.store.get(&path).await {
                Ok(got) => match format::read::<Snapshot>(path.as_ref(), &got.bytes().await?) {
                    Err(newer @ Error::NewerLog { .. }) => return Err(newer),
                    read => read.map_err(|e| e.to_string()),
                },
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(other) => return Err(other.into()),
            };
            match snapshot {
                Ok(snapshot) if snapshot.pipeline != self.pipeline => {
                    return Err(self.foreign(&snapshot.pipeline));
                }
                Ok(snapshot) if snapshot.state.next_seq() == next => {
                    self.state = snapshot.state;
                    self.state.restore_index();
                    self.last_snapshot = next;
                    return Ok(());
                }
                Ok(_) => tracing::warn!(%path, "snapshot does not match its name; reading an older one"),
                Err(reason) => tracing::warn!(%path, "snapshot unreadable, reading an older one: {reason}"),
            }
        }
        Ok(())
    }

    /// Reads the records written since the last read: by number, in
    /// windows read concurrently, up to the first number not written yet.
    /// A reader that has not read for [`RELOAD_AFTER`] starts from a newer
    /// snapshot if there is one: `sluice vacuum` may have removed the
    /// records after the last one it read.
    pub async fn refresh(&mut self) -> Result<()> {
        if self.last_read.elapsed() >= self.reload_after {
            self.load_snapshot().await?;
        }
        self.last_read = std::time::Instant::now();
        loop {
            let next = self.state.next_seq().0;
            let window: Vec<Seq> = (next..next + READ_CONCURRENCY).map(Seq).collect();
            let (store, paths) = (&self.store, &self.paths);
            let reads: Vec<Result<Option<(Seq, Record)>>> =
                futures::stream::iter(window)
                    .map(|seq| async move {
                        read_record(store.as_ref(), &paths.record(seq)).await.map(|r| r.map(|r| (seq, r)))
                    })
                    .buffered(READ_CONCURRENCY as usize)
                    .collect()
                    .await;
            let mut complete = true;
            for read in reads {
                let Some((seq, record)) = read? else {
                    complete = false;
                    break;
                };
                self.check_owner(&record)?;
                self.records_read += 1;
                self.state.apply(seq, record);
            }
            if !complete {
                break;
            }
        }
        self.snapshot_if_due().await;
        Ok(())
    }

    fn check_owner(&self, record: &Record) -> Result<()> {
        match record {
            Record::Planned(planned) if planned.pipeline != self.pipeline => Err(self.foreign(&planned.pipeline)),
            Record::PlannedBatches(many) => match many.batches.iter().find(|p| p.pipeline != self.pipeline) {
                Some(planned) => Err(self.foreign(&planned.pipeline)),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn foreign(&self, other: &PipelineName) -> Error {
        Error::Config(format!(
            "the checkpoint log holds batches of pipeline \"{other}\", not \"{}\"; \
             give each pipeline its own [checkpoint] url",
            self.pipeline
        ))
    }

    /// Appends `record` at the next free number, unless the log, once
    /// up to date, refuses it.
    pub async fn append(&mut self, record: Record) -> Result<Appended> {
        let stamp = match record {
            Record::Sealed(_) => format::SEALING_FORMAT,
            _ => format::FIRST_FORMAT,
        };
        let payload = PutPayload::from(serde_json::to_vec(&format::stamped_as(stamp, &record)).map_err(|e| {
            Error::CorruptLog { path: self.paths.records().to_string(), reason: format!("cannot encode record: {e}") }
        })?);
        if self.last_read.elapsed() >= self.reload_after {
            // Vacuum may have removed records this reader has not read.
            self.refresh().await?;
        }
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            if let Err(refusal) = self.state.admits(&record) {
                return Ok(Appended::Refused(refusal));
            }
            let seq = self.state.next_seq();
            let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.store.put_opts(&self.paths.record(seq), payload.clone(), options).await {
                Ok(_) => {
                    tracing::debug!(seq = seq.0, batch_id = ?record.batch_id(), "log record written");
                    self.state.apply(seq, record);
                    self.snapshot_if_due().await;
                    return Ok(Appended::Written(seq));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    tracing::debug!(seq = seq.0, attempt, "log record taken by another writer; re-reading");
                    self.refresh().await?;
                    if self.state.next_seq() == seq {
                        // Taken but not yet readable: wait for it to show.
                        tokio::time::sleep(Duration::from_millis(10 * (attempt as u64 + 1))).await;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::LogContention { attempts: MAX_APPEND_ATTEMPTS })
    }

    /// Writes a snapshot once enough records have passed since the last
    /// one. Whoever notices first writes it; writing the same state twice
    /// is harmless, and a failed write only means a longer read next time.
    async fn snapshot_if_due(&mut self) {
        let next = self.state.next_seq();
        if next.0 < self.last_snapshot.0.saturating_add(self.snapshot_every) {
            return;
        }
        if let Err(error) = self.write_snapshot().await {
            tracing::warn!(next = next.0, "cannot write a log snapshot (start-up reads more): {error}");
        }
    }

    /// Writes a snapshot of the state as it stands, and removes all but
    /// the newest [`SNAPSHOTS_KEPT`].
    pub async fn write_snapshot(&mut self) -> Result<()> {
        let next = self.state.next_seq();
        self.last_snapshot = next;
        // A reader that cannot forget must not load a log that has.
        let format = if !self.state.segments().is_empty() {
            format::SEALING_FORMAT
        } else if self.state.forgotten_before().is_some() {
            format::FORGETTING_FORMAT
        } else {
            format::FIRST_FORMAT
        };
        let bytes = serde_json::to_vec(&format::stamped_as(
            format,
            &SnapshotOf { pipeline: &self.pipeline, state: &self.state },
        ))
        .map_err(|e| Error::CorruptLog {
            path: self.paths.snapshot(next).to_string(),
            reason: format!("cannot encode snapshot: {e}"),
        })?;
        self.store.put(&self.paths.snapshot(next), PutPayload::from(bytes)).await?;
        let older = self.snapshots_newest_first().await?.into_iter().filter(|(seq, _)| *seq < next);
        for (_, path) in older.skip(SNAPSHOTS_KEPT - 1) {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        tracing::debug!(next = next.0, "log snapshot written");
        Ok(())
    }
}

/// The object that shows whether a store refuses a second create.
const PUT_IF_ABSENT_CHECK: &str = "put-if-absent-check";

/// Checks that the store at `root` creates objects only if absent: the log
/// is only safe where exactly one writer wins each number. The check
/// object is created once; from then on, creating it again must fail. A
/// store that accepts a second create (one that ignores `If-None-Match`)
/// or that cannot create conditionally at all is refused, never used with
/// a weaker guarantee.
async fn check_put_if_absent(store: &dyn ObjectStore, root: &Path, location: &StorageLocation) -> Result<()> {
    let path = root.clone().join(PUT_IF_ABSENT_CHECK);
    let create = || PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    let refuse = |why: String| {
        Error::Config(format!(
            "the checkpoint log cannot live at {location}: {why}. The log needs a store whose conditional \
             create (put-if-absent, S3 If-None-Match: *) is atomic, so that two workers never both write the \
             same record: AWS S3, Google Cloud Storage, Azure Blob Storage, or an S3-compatible server that \
             supports conditional writes. Point [checkpoint] url at one"
        ))
    };
    for attempt in 0..2 {
        let payload = PutPayload::from_static(b"sluice checks that this store refuses a second create\n");
        match store.put_opts(&path, payload, create()).await {
            Ok(_) if attempt == 0 => continue,
            Ok(_) => return Err(refuse("it accepted a second create of the same object".into())),
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(()),
            Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                return Err(refuse(
                    "the store cannot create an object only if it is absent (is \
                                   aws_conditional_put disabled?)"
                        .into(),
                ));
            }
            Err(other) if other.to_string().contains("169.254.169.254") => {
                // No credentials given: the client asked the cloud's
                // instance metadata service, which is not there.
                return Err(Error::Misconfigured {
                    what: format!(
                        "no credentials for {location}: {}; the instance metadata service did not answer",
                        location.credentials_hint()
                    ),
                    cause: crate::Cause::new(other),
                });
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// One record, or `None` when its number is not written yet.
async fn read_record(store: &dyn ObjectStore, path: &Path) -> Result<Option<Record>> {
    let bytes = match store.get(path).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(other) => return Err(other.into()),
    };
    format::read(path.as_ref(), &bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::batch::{BatchId, InputObject};
    use crate::sink::Staged;

    fn planned(path: &str) -> Record {
        let pipeline = PipelineName::new("orders").expect("valid");
        let inputs = vec![InputObject {
            path: path.into(),
            size: 3,
            etag: Some("e".into()),
            last_modified: Utc::now(),
            ..InputObject::default()
        }];
        Record::Planned(Planned {
            batch_id: BatchId::derive(&pipeline, 1, &inputs),
            pipeline,
            version: 1,
            inputs,
            stream: None,
            at: Utc::now(),
        })
    }

    fn lease_of(record: &Record) -> Record {
        Record::Leased(crate::log::Leased {
            batch_id: record.batch_id().expect("a batch record").clone(),
            attempt: 1,
            owner: "w".into(),
            expires: Utc::now() + chrono::TimeDelta::minutes(5),
            at: Utc::now(),
        })
    }

    fn commit_of(record: &Record) -> Record {
        Record::Committed(Committed {
            batch_id: record.batch_id().expect("a batch record").clone(),
            attempt: 1,
            staged: Staged { token: "t".into(), outputs: vec![] },
            rows_in: 1,
            dead_letters: None,
            rows_dead_lettered: 0,
            source_positions: vec![],
            ran_by: None,
            tables: Default::default(),
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
        assert_eq!(a.append(lease_of(&plan)).await.expect("append"), Appended::Written(Seq(2)));
        assert_eq!(a.append(commit.clone()).await.expect("append"), Appended::Written(Seq(3)));
        b.refresh().await.expect("refresh");
        assert_eq!(b.append(commit).await.expect("append"), Appended::Refused(Refusal::AlreadyCommitted));

        let reopened = open(dir.path()).await;
        assert_eq!(reopened.state().next_seq(), Seq(4));
        assert_eq!(reopened.state().pending().len(), 1, "2.csv is planned, not committed");
    }

    #[tokio::test]
    async fn start_up_reads_the_newest_snapshot_and_what_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = StorageLocation::resolve(dir.path().to_str().expect("utf-8"), dir.path()).expect("location");
        let name = PipelineName::new("orders").expect("valid");
        let (store, root) = location.open().expect("store");
        let mut log = CheckpointLog::open_in(store.clone(), root.clone(), &name, 10).await.expect("opens");
        for n in 0..35 {
            let plan = planned(&format!("{n}.csv"));
            log.append(plan.clone()).await.expect("append");
        }
        let snapshots: Vec<_> = store.list(Some(&root.clone().join("snapshots"))).try_collect().await.expect("list");
        assert_eq!(snapshots.len(), 2, "older snapshots are removed: {snapshots:?}");

        let reopened = CheckpointLog::open_in(store, root, &name, 10).await.expect("opens");
        assert_eq!(reopened.records_read(), 5, "records 30..34 after the snapshot of 0..29");
        assert_eq!(reopened.state().next_seq(), Seq(35));
        assert_eq!(reopened.state().pending().len(), 35);
        assert_eq!(
            reopened.state().admits(&planned("3.csv")),
            Err(Refusal::InputsAlreadyPlanned),
            "inputs inside the snapshot are known"
        );
    }

    #[tokio::test]
    async fn a_snapshot_of_a_log_that_forgot_batches_is_format_two_and_reopens() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (root, name) = (Path::from("ck"), PipelineName::new("orders").expect("valid"));
        let mut log = CheckpointLog::open_in(store.clone(), root.clone(), &name, 2).await.expect("opens");
        let old = planned("1.csv");
        for record in [old.clone(), lease_of(&old), commit_of(&old)] {
            log.append(record).await.expect("append");
        }
        let Record::Planned(new) = planned("2.csv") else { unreachable!() };
        let forgetting = Record::PlannedBatches(PlannedBatches {
            batches: vec![new],
            forget_before: Some(Utc::now() + chrono::TimeDelta::hours(1)),
            forget: vec![old.batch_id().expect("a batch").clone()],
        });
        assert_eq!(log.append(forgetting).await.expect("append"), Appended::Written(Seq(3)));
        let snapshot = store.get(&root.clone().join("snapshots").join(format!("{:020}.json", 4))).await;
        let bytes = snapshot.expect("a snapshot after record 3").bytes().await.expect("bytes");
        assert!(bytes.starts_with(br#"{"format":2,"#), "{}", String::from_utf8_lossy(&bytes));

        let reopened = CheckpointLog::open_in(store, root, &name, 2).await.expect("opens");
        assert_eq!(reopened.records_read(), 0, "all of it from the snapshot");
        assert_eq!(reopened.state().forgotten().batches, 1);
        assert!(reopened.state().batch(old.batch_id().expect("a batch")).is_none());
        assert_eq!(reopened.state().pending().len(), 1, "2.csv");
    }

    #[tokio::test]
    async fn sealed_batches_leave_the_snapshot_and_planners_find_their_inputs_in_the_segment() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (root, name) = (Path::from("ck"), PipelineName::new("orders").expect("valid"));
        let mut log = CheckpointLog::open_in(store.clone(), root.clone(), &name, 8).await.expect("opens");
        let plans: Vec<Record> = ["a.csv", "b.csv", "c.csv"].iter().map(|path| planned(path)).collect();
        for plan in &plans {
            log.append(plan.clone()).await.expect("append");
        }
        for plan in &plans[..2] {
            log.append(lease_of(plan)).await.expect("append");
            log.append(commit_of(plan)).await.expect("append");
        }
        let ids: Vec<BatchId> = plans[..2].iter().map(|plan| plan.batch_id().expect("a batch").clone()).collect();
        let segment = log.write_segment(&ids).await.expect("segment");
        assert_eq!((segment.first.as_str(), segment.last.as_str(), segment.inputs), ("a.csv", "b.csv", 2));
        let sealed = Record::Sealed(Sealed { segment, batches: ids.clone(), at: Utc::now() });
        assert_eq!(log.append(sealed.clone()).await.expect("append"), Appended::Written(Seq(7)));
        let snapshot = store.get(&root.clone().join("snapshots").join(format!("{:020}.json", 8))).await;
        let bytes = snapshot.expect("a snapshot after record 7").bytes().await.expect("bytes");
        assert!(bytes.starts_with(br#"{"format":3,"#), "{}", String::from_utf8_lossy(&bytes));
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(ids[0].as_str()) && !text.contains(ids[1].as_str()), "sealed batches are not in it");
        assert!(text.contains(r#""first":"a.csv","last":"b.csv""#), "the segment's range is: {text}");

        let mut reopened = CheckpointLog::open_in(store, root, &name, 8).await.expect("opens");
        assert_eq!(reopened.records_read(), 0, "all of it from the snapshot");
        assert!(reopened.state().batch(&ids[0]).is_none());
        assert_eq!((reopened.state().sealed().batches, reopened.state().pending().len()), (2, 1));
        assert_eq!(reopened.append(sealed).await.expect("append"), Appended::Refused(Refusal::Unsealable));

        let input = |plan: &Record| match plan {
            Record::Planned(planned) => planned.inputs[0].clone(),
            _ => unreachable!("a planned record"),
        };
        let rewritten = InputObject { etag: Some("other".into()), ..input(&plans[1]) };
        let new = InputObject { path: "d.csv".into(), ..input(&plans[2]) };
        let listed = [input(&plans[0]), rewritten.clone(), input(&plans[2]), new.clone()];
        let history = reopened.history(&listed).await.expect("history");
        assert!(history.has_seen(&listed[0].key()), "a.csv is in the segment");
        assert!(!history.has_seen(&rewritten.key()), "a new version of b.csv is not");
        let (_, before) = history.latest("b.csv").expect("b.csv's sealed version");
        assert_eq!(before, &input(&plans[1]));
        assert!(history.latest("a.csv").is_none(), "the version listed is the one sealed");
        assert!(!history.has_seen(&new.key()) && history.latest("d.csv").is_none());
        let unseen = crate::planner::unseen(listed.to_vec(), reopened.state(), &history);
        assert_eq!(unseen.new, [new], "c.csv is pending, a.csv sealed");
        assert_eq!(unseen.changed.len(), 1, "b.csv changed since it was sealed");
    }

    #[tokio::test]
    async fn a_segment_the_log_names_that_is_gone_is_a_corrupt_log_not_new_files() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (root, name) = (Path::from("ck"), PipelineName::new("orders").expect("valid"));
        let mut log = CheckpointLog::open_in(store.clone(), root.clone(), &name, 1000).await.expect("opens");
        let plan = planned("a.csv");
        for record in [plan.clone(), lease_of(&plan), commit_of(&plan)] {
            log.append(record).await.expect("append");
        }
        let ids = vec![plan.batch_id().expect("a batch").clone()];
        let segment = log.write_segment(&ids).await.expect("segment");
        let path = root.clone().join("segments").join(segment.name.as_str());
        log.append(Record::Sealed(Sealed { segment, batches: ids, at: Utc::now() })).await.expect("append");
        store.delete(&path).await.expect("delete");

        let mut reopened = CheckpointLog::open_in(store, root, &name, 1000).await.expect("opens");
        let Record::Planned(planned) = plan else { unreachable!() };
        let error = reopened.history(&planned.inputs).await.expect_err("the segment is gone");
        assert!(matches!(&error, Error::CorruptLog { .. }), "{error:?}");
        assert!(error.to_string().contains("would be read again"), "{error}");
    }

    #[tokio::test]
    async fn vacuum_takes_what_the_kept_snapshots_hold_and_a_reader_left_behind_reads_on_from_a_snapshot() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (root, name) = (Path::from("ck"), PipelineName::new("orders").expect("valid"));
        let mut behind = CheckpointLog::open_in(store.clone(), root.clone(), &name, 4).await.expect("opens");
        behind.reload_after = Duration::ZERO;
        let mut log = CheckpointLog::open_in(store.clone(), root.clone(), &name, 4).await.expect("opens");
        for n in 0..22 {
            log.append(planned(&format!("{n}.csv"))).await.expect("append");
        }
        let stray = root.clone().join("segments").join("lost-race.json");
        store.put(&stray, PutPayload::from_static(b"{}")).await.expect("put");

        let now = Utc::now();
        assert!(log.garbage(now).await.expect("garbage").is_empty(), "nothing is an hour old yet");
        let later = now + chrono::TimeDelta::hours(2);
        let garbage = log.garbage(later).await.expect("garbage");
        let names = |paths: &[Path]| paths.iter().map(|p| p.filename().unwrap_or("").to_string()).collect::<Vec<_>>();
        assert_eq!(garbage.records.len(), 16, "records 0..15: both kept snapshots (16, 20) hold them");
        assert_eq!(names(&garbage.records)[15], format!("{:020}.json", 15));
        assert_eq!(names(&garbage.segments), ["lost-race.json"], "a segment the log does not name");
        assert!(garbage.snapshots.is_empty(), "writers keep two");
        log.remove(&garbage).await.expect("remove");
        assert!(log.garbage(later).await.expect("garbage").is_empty());

        let reopened = CheckpointLog::open_in(store.clone(), root.clone(), &name, 4).await.expect("opens");
        assert_eq!((reopened.state().next_seq(), reopened.state().pending().len()), (Seq(22), 22));
        // A reader that read nothing since record 0 would take the removed
        // number 0 for the next free one; it starts from a snapshot instead.
        assert_eq!(behind.append(planned("late.csv")).await.expect("append"), Appended::Written(Seq(22)));
        assert_eq!(
            behind.append(planned("3.csv")).await.expect("append"),
            Appended::Refused(Refusal::InputsAlreadyPlanned)
        );
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

    /// Copies the log in `engine/testdata/log-before-formats`, written by
    /// sluice before records named their format (every kind of record, a
    /// snapshot after six), into a new folder.
    fn log_before_formats() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/log-before-formats/_sluice");
        for folder in ["log", "snapshots"] {
            std::fs::create_dir_all(dir.path().join("_sluice").join(folder)).expect("mkdir");
            for entry in std::fs::read_dir(from.join(folder)).expect("fixture") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), dir.path().join("_sluice").join(folder).join(entry.file_name()))
                    .expect("copy");
            }
        }
        dir
    }

    async fn open_fixture(dir: &std::path::Path) -> CheckpointLog {
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("local store"));
        CheckpointLog::open_in(store, Path::from("_sluice"), &PipelineName::new("orders").expect("valid"), 1000)
            .await
            .expect("a log written before formats opens")
    }

    #[tokio::test]
    async fn a_log_written_before_formats_opens_and_takes_new_records() {
        let dir = log_before_formats();
        let mut log = open_fixture(dir.path()).await;
        assert_eq!(log.records_read(), 4, "records 6..9 after the snapshot of 0..5");
        let state = log.state();
        assert_eq!(state.next_seq(), Seq(10));
        let by_path = |path: &str| {
            state.batches().find(|b| b.planned.inputs.first().is_some_and(|i| i.path == path)).expect("planned")
        };
        let committed = by_path("1.csv").committed.as_ref().expect("committed");
        assert_eq!((committed.attempt, committed.rows_in, committed.rows_dead_lettered), (1, 100, 1));
        assert_eq!(committed.ran_by.as_ref().map(|r| r.host.as_str()), Some("host"));
        let retried = by_path("2.csv");
        assert!(retried.failed.is_none() && retried.attempts == 2, "{retried:?}");
        assert_eq!(retried.lease.as_ref().map(|l| l.attempt), Some(2));
        assert!(by_path("3.csv").abandoned.is_some());
        assert_eq!(
            state.position(&crate::model::PartitionKey { topic: "t".into(), partition: 0 }),
            Some(20),
            "the stream batch's range is planned"
        );
        assert_eq!(state.pending().len(), 2, "2.csv and the stream batch");

        // A record written now carries its format, and the log reads on.
        let next = planned("4.csv");
        assert_eq!(log.append(next).await.expect("append"), Appended::Written(Seq(10)));
        let written = std::fs::read_to_string(dir.path().join("_sluice/log/00000000000000000010.json")).expect("read");
        assert!(
            written.starts_with(&format!(
                r#"{{"format":{},"sluice":"{WRITTEN_BY}","kind":"planned""#,
                format::FIRST_FORMAT
            )),
            "{written}"
        );
        let reopened = open_fixture(dir.path()).await;
        assert_eq!((reopened.state().next_seq(), reopened.state().pending().len()), (Seq(11), 3));
    }

    /// A copy of `engine/testdata/log-format-1`, a log as sluice wrote it
    /// before segments, opened.
    async fn log_format_one(dir: &std::path::Path) -> CheckpointLog {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/log-format-1/_sluice/log");
        std::fs::create_dir_all(dir.join("_sluice/log")).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("fixture") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.join("_sluice/log").join(entry.file_name())).expect("copy");
        }
        open_fixture(dir).await
    }

    #[tokio::test]
    async fn a_log_in_format_one_opens_finishes_its_batches_and_seals_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = log_format_one(dir.path()).await;
        assert_eq!(log.state().next_seq(), Seq(8));
        let by_path = |log: &CheckpointLog, path: &str| {
            log.state()
                .batches()
                .find(|b| b.planned.inputs.first().is_some_and(|i| i.path == path))
                .expect("planned")
                .clone()
        };
        let two = by_path(&log, "2.csv").committed.expect("committed");
        assert_eq!((two.rows_in, two.rows_dead_lettered, two.dead_letters.is_some()), (2, 1, true));
        let crashed = by_path(&log, "3.csv");
        assert!(crashed.lease.as_ref().is_some_and(|lease| lease.expires < Utc::now()), "its lease ran out");
        assert_eq!(log.state().pending().len(), 2, "3.csv and 4.csv wait");
        let first = by_path(&log, "1.csv").planned.inputs[0].clone();

        // Both are finished with today's records: 3.csv by a second
        // attempt, which takes over the lease that ran out.
        for (entry, attempt) in [(crashed, 2), (by_path(&log, "4.csv"), 1)] {
            let plan = Record::Planned(entry.planned.clone());
            let Record::Leased(lease) = lease_of(&plan) else { unreachable!() };
            let lease = Record::Leased(Leased { attempt, ..lease });
            let Record::Committed(commit) = commit_of(&plan) else { unreachable!() };
            let commit = Record::Committed(Committed { attempt, ..commit });
            for record in [lease, commit] {
                assert!(matches!(log.append(record).await.expect("append"), Appended::Written(_)));
            }
        }
        let ids: Vec<BatchId> = log.state().batches().map(|entry| entry.planned.batch_id.clone()).collect();
        assert_eq!(ids.len(), 4);
        let segment = log.write_segment(&ids).await.expect("segment");
        let sealed = Record::Sealed(Sealed { segment, batches: ids, at: Utc::now() });
        assert_eq!(log.append(sealed).await.expect("append"), Appended::Written(Seq(12)));
        let written = std::fs::read_to_string(dir.path().join("_sluice/log/00000000000000000012.json")).expect("read");
        assert!(written.starts_with(r#"{"format":3,"#), "{written}");

        let mut reopened = open_fixture(dir.path()).await;
        let state = reopened.state();
        assert_eq!((state.next_seq(), state.batches().count(), state.sealed().batches), (Seq(13), 0, 4));
        assert_eq!((state.sealed().rows_in, state.sealed().rows_dead_lettered), (6, 1));
        let listed = [first];
        let history = reopened.history(&listed).await.expect("history");
        assert!(history.has_seen(&listed[0].key()), "1.csv is found in the segment, not planned again");
    }

    #[tokio::test]
    async fn a_log_a_newer_sluice_wrote_is_refused_with_the_version_it_needs() {
        let dir = log_before_formats();
        let record = dir.path().join("_sluice/log/00000000000000000010.json");
        std::fs::write(&record, r#"{"format":7,"sluice":"3.1.0","kind":"sealed","segment":"s1"}"#).expect("write");
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        let name = PipelineName::new("orders").expect("valid");
        let opened = CheckpointLog::open_in(store.clone(), Path::from("_sluice"), &name, 1000).await;
        let error = opened.expect_err("a newer record");
        assert!(matches!(&error, Error::NewerLog { format: 7, .. }), "{error:?}");
        assert!(error.to_string().contains("run sluice 3.1.0 or newer"), "{error}");

        std::fs::remove_file(&record).expect("rm");
        let snapshot = dir.path().join("_sluice/snapshots/00000000000000000006.json");
        std::fs::write(&snapshot, r#"{"format":4,"sluice":"2.0.0","pipeline":"orders","state":{"live":[]}}"#)
            .expect("write");
        let error = CheckpointLog::open_in(store, Path::from("_sluice"), &name, 1000).await.expect_err("newer");
        assert!(error.to_string().contains("is in log format 4, written by sluice 2.0.0"), "{error}");
    }
}
