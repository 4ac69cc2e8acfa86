//! `sluice status`: what the checkpoint log says about a pipeline.

use crate::Result;
use crate::log::{CheckpointLog, LogState};
use crate::planner::horizon::{horizon, within};
use crate::planner::unseen;
use crate::source::{OnChange, SourceConnector};
use crate::spec::PipelineSpec;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One pipeline's state, as `sluice status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PipelineStatus {
    /// `[pipeline] name`.
    pub pipeline: String,
    /// `[pipeline] version`.
    pub version: u32,
    /// Where the log is.
    pub checkpoint: String,
    /// Batches whose output is committed.
    pub committed_batches: u64,
    /// Batches planned, not committed yet, and held by no worker.
    pub pending_batches: u64,
    /// Batches a worker holds a live lease on.
    pub running_batches: u64,
    /// Batches that used up their attempts and wait for `sluice retry`.
    pub failed_batches: u64,
    /// The failed batches, with their errors.
    pub failed: Vec<FailedBatch>,
    /// Committed batches the log forgot (`[source] max_file_age`): counted
    /// in `committed_batches` and the totals, no longer kept one by one.
    pub forgotten_batches: u64,
    /// Committed batches sealed into the log's segments: counted in
    /// `committed_batches` and the totals; their inputs are in segments
    /// that only planners read.
    pub sealed_batches: u64,
    /// Batches given up because their inputs changed before they ran.
    pub abandoned_batches: u64,
    /// Input files the source has that no batch holds yet.
    pub new_files: u64,
    /// Inputs planned as the appended part of a file that grew after an
    /// earlier version was planned: only the new bytes are read.
    pub appended_inputs: u64,
    /// Inputs planned whole as a new version of a file planned before
    /// that was rewritten (or changed in a way other than growing).
    pub rewritten_inputs: u64,
    /// Files listed now that changed since they were planned and that
    /// `on_change = "ignore"` leaves unread.
    pub ignored_inputs: u64,
    /// Names in the source folder passed over because they cannot be
    /// read (not UTF-8, a tab or newline, a symbolic link that loops or
    /// leads out of the folder); each is named in a warning.
    pub skipped_names: u64,
    /// Input not yet committed, in `lag_unit`: new files and those of
    /// pending, running and failed batches; for a stream, messages on the
    /// broker after the log's positions (AMQP: ready in the queue).
    pub lag: u64,
    /// What `lag` counts: `files` or `messages`.
    pub lag_unit: &'static str,
    /// Kafka: the next offset the log says each partition is read from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<PartitionPosition>,
    /// Input files in committed batches.
    pub files_committed: u64,
    /// Rows read by committed batches.
    pub rows_read: u64,
    /// Rows written by committed batches.
    pub rows_written: u64,
    /// Malformed records committed batches set aside as dead letters.
    pub dead_lettered_rows: u64,
    /// Where dead letters go.
    pub dead_letters: String,
    /// Output files of committed batches.
    pub output_files: u64,
    /// When the last batch was committed.
    pub last_commit_at: Option<DateTime<Utc>>,
    /// Who committed batches in the hour before now: one entry a worker,
    /// busiest first.
    pub workers_last_hour: Vec<WorkerCount>,
}

/// What one worker committed in the last hour, from its commit records.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerCount {
    /// The worker's id, as its lease records name it.
    pub worker: String,
    /// Its host.
    pub host: String,
    /// The id of the key that signed its tasks, for a `sluice worker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_key: Option<String>,
    /// Batches it committed.
    pub batches: u64,
    /// Rows those batches read.
    pub rows_read: u64,
    /// Rows they wrote.
    pub rows_written: u64,
    /// Its last commit.
    pub last_commit_at: DateTime<Utc>,
}

/// Where a Kafka partition is read from next.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset after the last one planned into a batch.
    pub next_offset: i64,
}

/// A batch that used up its attempts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedBatch {
    /// Its id, for `sluice retry FILE --batch ID`.
    pub batch_id: String,
    /// Attempts that ended in an error.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// Its input files.
    pub files: Vec<String>,
}

/// Reads the log (and lists the source) of `spec`.
pub async fn pipeline_status(spec: &PipelineSpec) -> Result<PipelineStatus> {
    let mut log = CheckpointLog::open(&spec.checkpoint, &spec.name).await?;
    // What a planning pass would see: the listing within max_file_age,
    // and what the segments say of it.
    let listing = match &spec.source {
        SourceConnector::Objects(source) => {
            let listed = source.discover().await?;
            let horizon = horizon(&listed, log.state(), source.max_file_age());
            let listed = within(listed, horizon).0;
            let history = log.history(&listed).await?;
            Some((listed, history))
        }
        SourceConnector::Stream(_) => None,
    };
    let state = log.state();
    let now = Utc::now();
    let mut status = PipelineStatus {
        pipeline: spec.name.to_string(),
        version: spec.version,
        checkpoint: spec.checkpoint.to_string(),
        committed_batches: 0,
        pending_batches: 0,
        running_batches: 0,
        failed_batches: 0,
        failed: Vec::new(),
        abandoned_batches: 0,
        forgotten_batches: 0,
        sealed_batches: 0,
        new_files: 0,
        appended_inputs: 0,
        rewritten_inputs: 0,
        ignored_inputs: 0,
        skipped_names: 0,
        lag: 0,
        lag_unit: "files",
        positions: Vec::new(),
        files_committed: 0,
        rows_read: 0,
        rows_written: 0,
        dead_lettered_rows: 0,
        dead_letters: spec.dead_letter.to_string(),
        output_files: 0,
        last_commit_at: None,
        workers_last_hour: Vec::new(),
    };
    let hour_ago = now - chrono::TimeDelta::hours(1);
    let mut workers: std::collections::BTreeMap<String, WorkerCount> = std::collections::BTreeMap::new();
    // Forgotten batches (`max_file_age`) and sealed ones count in the totals.
    let mut totals = state.forgotten().clone();
    totals.add(state.sealed());
    for entry in state.batches() {
        match &entry.committed {
            Some(committed) => {
                totals.count(entry, committed);
                if let Some(ran_by) = committed.ran_by.as_ref().filter(|_| committed.at >= hour_ago) {
                    let count = workers.entry(ran_by.worker.clone()).or_insert_with(|| WorkerCount {
                        worker: ran_by.worker.clone(),
                        host: ran_by.host.clone(),
                        task_key: ran_by.task_key.clone(),
                        batches: 0,
                        rows_read: 0,
                        rows_written: 0,
                        last_commit_at: committed.at,
                    });
                    count.batches += 1;
                    count.rows_read += committed.rows_in;
                    count.rows_written += committed.staged.rows();
                    count.last_commit_at = count.last_commit_at.max(committed.at);
                }
            }
            None if entry.abandoned.is_some() => status.abandoned_batches += 1,
            None => match &entry.failed {
                Some(failed) => {
                    status.failed_batches += 1;
                    status.failed.push(FailedBatch {
                        batch_id: entry.planned.batch_id.to_string(),
                        attempts: entry.failures,
                        error: failed.error.clone(),
                        files: entry.planned.inputs.iter().map(|input| input.path.clone()).collect(),
                    });
                }
                None if entry.live_lease(now).is_some() => status.running_batches += 1,
                None => status.pending_batches += 1,
            },
        }
    }
    status.forgotten_batches = state.forgotten().batches;
    status.sealed_batches = state.sealed().batches;
    status.committed_batches = totals.batches;
    status.files_committed = totals.files;
    status.rows_read = totals.rows_in;
    status.rows_written = totals.rows_out;
    status.dead_lettered_rows = totals.rows_dead_lettered;
    status.output_files = totals.output_files;
    status.last_commit_at = totals.last_commit_at;
    status.workers_last_hour = workers.into_values().collect();
    status.workers_last_hour.sort_by(|a, b| b.batches.cmp(&a.batches).then_with(|| a.worker.cmp(&b.worker)));
    (status.appended_inputs, status.rewritten_inputs) = changed_inputs(state);
    match &spec.source {
        SourceConnector::Objects(source) => {
            let (listed, history) = listing.unwrap_or_default();
            let found = unseen(listed, state, &history);
            status.skipped_names = source.skipped_names();
            let changed = found.changed.len() as u64;
            match source.on_change() {
                OnChange::Ignore => (status.new_files, status.ignored_inputs) = (found.new.len() as u64, changed),
                OnChange::Append | OnChange::NewVersion => status.new_files = found.new.len() as u64 + changed,
            }
            status.lag = status.new_files + state.files_waiting() as u64;
        }
        SourceConnector::Stream(source) => {
            status.lag = source.lag(state.positions()).await?;
            status.lag_unit = "messages";
            status.positions = state
                .positions()
                .iter()
                .map(|(key, next)| PartitionPosition {
                    topic: key.topic.clone(),
                    partition: key.partition,
                    next_offset: *next,
                })
                .collect();
        }
    }
    Ok(status)
}

/// Inputs of batches not abandoned that are appended parts, and those read
/// whole at a path with an earlier version read whole.
fn changed_inputs(state: &LogState) -> (u64, u64) {
    let mut whole_paths = std::collections::HashSet::new();
    let (mut appended, mut rewritten) = (0, 0);
    let inputs = state.batches().filter(|entry| entry.abandoned.is_none()).flat_map(|entry| &entry.planned.inputs);
    for input in inputs {
        if input.is_appended_part() {
            appended += 1;
        } else if !whole_paths.insert(input.path.as_str()) {
            rewritten += 1;
        }
    }
    (appended, rewritten)
}

impl PipelineStatus {
    /// The readable form: one `key  value` line each.
    pub fn to_text(&self) -> String {
        let last = self.last_commit_at.map_or_else(|| "never".to_string(), |at| at.to_rfc3339());
        let rows: [(&str, String); 23] = [
            ("pipeline", self.pipeline.clone()),
            ("version", self.version.to_string()),
            ("checkpoint", self.checkpoint.clone()),
            ("committed_batches", self.committed_batches.to_string()),
            ("pending_batches", self.pending_batches.to_string()),
            ("running_batches", self.running_batches.to_string()),
            ("failed_batches", self.failed_batches.to_string()),
            ("abandoned_batches", self.abandoned_batches.to_string()),
            ("forgotten_batches", self.forgotten_batches.to_string()),
            ("sealed_batches", self.sealed_batches.to_string()),
            ("new_files", self.new_files.to_string()),
            ("appended_inputs", self.appended_inputs.to_string()),
            ("rewritten_inputs", self.rewritten_inputs.to_string()),
            ("ignored_inputs", self.ignored_inputs.to_string()),
            ("skipped_names", self.skipped_names.to_string()),
            ("lag", format!("{} {}", self.lag, self.lag_unit)),
            ("files_committed", self.files_committed.to_string()),
            ("rows_read", self.rows_read.to_string()),
            ("rows_written", self.rows_written.to_string()),
            ("dead_lettered_rows", self.dead_lettered_rows.to_string()),
            ("dead_letters", self.dead_letters.clone()),
            ("output_files", self.output_files.to_string()),
            ("last_commit_at", last),
        ];
        let mut text: String = rows.iter().map(|(key, value)| format!("{key:<18} {value}\n")).collect();
        for position in &self.positions {
            text.push_str(&format!(
                "{:<18} {}/{} next offset {}\n",
                "position", position.topic, position.partition, position.next_offset
            ));
        }
        for failed in &self.failed {
            text.push_str(&format!(
                "\nfailed batch {} after {} attempts ({}):\n  {}\n",
                failed.batch_id,
                failed.attempts,
                failed.files.join(", "),
                failed.error
            ));
        }
        if !self.failed.is_empty() {
            text.push_str("\nfix the cause, then: sluice retry FILE --failed\n");
        }
        if !self.workers_last_hour.is_empty() {
            text.push_str("\nworkers in the last hour:\n");
            for worker in &self.workers_last_hour {
                let key = worker.task_key.as_deref().map(|id| format!(", task key {id}")).unwrap_or_default();
                text.push_str(&format!(
                    "  {} ({}{key}): {} batches, {} rows read, {} rows written, last at {}\n",
                    worker.worker,
                    worker.host,
                    worker.batches,
                    worker.rows_read,
                    worker.rows_written,
                    worker.last_commit_at.to_rfc3339()
                ));
            }
        }
        text
    }
}
