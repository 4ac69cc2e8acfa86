//! The worker: runs one attempt at one batch, from its lease to its commit.
//!
//! ```text
//! lease ─► inputs ─► table `input` ─► SQL ─► sink.stage ─► log: committed ─► sink.publish
//! (claim,   renewed while it runs)            (invisible)   (the decision:   (visible)
//!                                                            holder only)
//! ```
//!
//! A worker keeps nothing between batches: the batch and the log are all
//! it needs, so a crash anywhere is repaired by running the batch again.
//! An attempt that loses its lease (it stalled, another worker took the
//! batch over) cannot commit: the log refuses it, and its staged files are
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sluice_engine::batch::Batch;
use sluice_engine::failpoint;
use sluice_engine::log::{CheckpointLog, RanBy};
use sluice_engine::model::{host_name, owner_id, process_id};
use sluice_engine::retry::Backoff;
use sluice_engine::sink::Attempt;
use sluice_engine::source::AfterCommit;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::stream::Message;
use sluice_engine::txn::{self, Abandoning, Committing, Failing, Leasing, Produced, Settled, Terms};
use sluice_engine::{Error, Result};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::lease::Renewal;
use crate::produce::produce;

/// What running a batch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This attempt committed the batch.
    Committed {
        /// Rows read from the inputs, dead letters included.
        rows_in: u64,
        /// Rows written to the sink.
        rows_out: u64,
        /// Malformed records set aside as dead letters.
        rows_dead_lettered: u64,
    },
    /// Another attempt had committed it; this one's output was discarded.
    AlreadyCommitted,
    /// Its inputs changed since it was planned: it was given up, and the
    /// inputs are planned again as they are now.
    Abandoned {
        /// What changed.
        reason: String,
    },
    /// Another worker holds it; it is theirs until `until`.
    Busy {
        /// When their lease runs out unless renewed.
        until: DateTime<Utc>,
    },
    /// The attempt lost its lease to another before it could commit.
    Fenced,
    /// The attempt ended in an error, recorded in the log.
    Failed {
        /// The error, secrets redacted.
        error: String,
        /// Whether it was the last attempt allowed: the batch waits for
        /// `sluice retry`.
        gave_up: bool,
    },
    /// It is failed or unknown to the log: nothing to run.
    Settled,
}

/// Who runs an attempt: the owner its lease records name, and what its
/// commit record says of who ran it.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The lease owner: unique to this process, and to one task of a
    /// `sluice worker`, so that two copies of one task never share a lease.
    pub owner: String,
    /// This process, its host, and the key that signed the task.
    pub ran_by: RanBy,
}

impl Runner {
    /// This process, running batches of its own planning.
    pub fn here() -> Self {
        Runner { owner: process_id().to_string(), ran_by: ran_by(None) }
    }

    /// One task of this process, signed with `task_key`.
    pub fn task(task_key: Option<String>) -> Self {
        Runner { owner: owner_id(), ran_by: ran_by(task_key) }
    }
}

fn ran_by(task_key: Option<String>) -> RanBy {
    RanBy { worker: process_id().to_string(), host: host_name(), task_key }
}

/// Runs one attempt at `batch`: leases it, runs it, commits it, or
/// records why not.
/// Callers run it inside [`batch_span`], so that everything it logs names
/// the batch; each step has a span of its own inside: `read`,
/// `transform`, `write`, `commit`, `publish`.
///
/// A stream batch runs on `in_hand`, the messages just read for it; without
/// them (a batch a crash left planned) its messages are read again.
pub async fn run_batch(
    spec: &PipelineSpec,
    log: &Arc<Mutex<CheckpointLog>>,
    batch: &Batch,
    runner: &Runner,
    in_hand: Option<&[Message]>,
) -> Result<BatchOutcome> {
    let (owner, ran_by) = (runner.owner.as_str(), &runner.ran_by);
    let attempt_no = match lease(spec, log, batch, owner).await? {
        Ok(attempt) => attempt,
        Err(outcome) => return Ok(outcome),
    };
    failpoint::hit("after_lease");
    let fenced = Arc::new(AtomicBool::new(false));
    let renewal = Renewal::start(spec, log.clone(), batch, owner, attempt_no, fenced.clone());

    let tries = async {
        let mut tries = 1;
        loop {
            match attempt(spec, log, batch, ran_by, attempt_no, &fenced, in_hand).await {
                Err(error) if error.is_retryable() && !Backoff::IN_ATTEMPT.exhausted(tries) => {
                    let wait = Backoff::IN_ATTEMPT.wait(tries);
                    tracing::warn!("retrying in {wait:?}: {}", spec.file.redact(&error.to_string()));
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                other => break other,
            }
        }
    };
    // A panic is a failed attempt, recorded like any other error, so that
    // a batch that panics every time ends failed after max_attempts.
    let result =
        std::panic::AssertUnwindSafe(tries).catch_unwind().await.unwrap_or_else(|panic| Err(Error::panicked(&*panic)));
    renewal.stop();
    match result {
        Ok(outcome) => Ok(outcome),
        Err(error) => record_failure(spec, log, batch, attempt_no, &error).await,
    }
}

/// The span a batch runs in: `pipeline`, `batch_id`, `worker`, and
/// `attempt` once leased.
pub fn batch_span(spec: &PipelineSpec, batch: &Batch, owner: &str) -> tracing::Span {
    tracing::info_span!(
        "batch", pipeline = %spec.name, batch_id = %batch.id, worker = %owner, attempt = tracing::field::Empty
    )
}

/// Claims the batch: the attempt number, or why there is nothing to run.
async fn lease(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    batch: &Batch,
    owner: &str,
) -> Result<Result<u32, BatchOutcome>> {
    let mut log = log.lock().await;
    Ok(match txn::lease(&mut log, &batch.id, owner, Terms::of(spec), Utc::now()).await? {
        Leasing::Leased { attempt, taken_from } => {
            tracing::Span::current().record("attempt", attempt);
            if let Some(from) = taken_from {
                tracing::info!("took the batch over from {from}, whose lease ran out");
            }
            Ok(attempt)
        }
        Leasing::Busy { until } => Err(BatchOutcome::Busy { until }),
        Leasing::GaveUp { error } => Err(BatchOutcome::Failed { error, gave_up: true }),
        Leasing::Settled(Settled::Committed) => Err(BatchOutcome::AlreadyCommitted),
        Leasing::Settled(Settled::Abandoned { reason }) => Err(BatchOutcome::Abandoned { reason }),
        Leasing::Settled(Settled::Closed) => Err(BatchOutcome::Settled),
    })
}

/// The attempt's work: read, transform, stage, verify, commit, publish.
async fn attempt(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    batch: &Batch,
    ran_by: &RanBy,
    attempt_no: u32,
    fenced: &AtomicBool,
    in_hand: Option<&[Message]>,
) -> Result<BatchOutcome> {
    let attempt = Attempt::new(batch.id.clone());
    let produced = async {
        let produced = produce(spec, batch, &attempt, in_hand).await?;
        // An input replaced while it was read must not be committed: its
        // rows may mix two versions.
        if let Some(source) = spec.source.objects() {
            source.verify(&batch.inputs).await?;
        }
        Ok(produced)
    };
    let produced = match produced.await {
        Ok(produced) => produced,
        Err(error) => {
            discard_quietly(spec, &attempt).await;
            return match error {
                changed @ Error::InputChanged { .. } => abandon(log, batch, changed.to_string()).await,
                other => Err(other),
            };
        }
    };
    failpoint::hit("after_sink_write");
    if fenced.load(Ordering::SeqCst) {
        discard_quietly(spec, &attempt).await;
        return Ok(BatchOutcome::Fenced);
    }

    let rows_out = produced.staged.rows();
    let committing = async {
        let mut log = log.lock().await;
        txn::commit(&mut log, batch, attempt_no, &produced, ran_by, Utc::now()).await
    }
    .instrument(tracing::info_span!("commit"))
    .await;
    let outcome = match committing {
        Ok(Committing::Committed) => {
            failpoint::hit("after_commit");
            publish(spec, batch, &produced).instrument(tracing::info_span!("publish")).await;
            settle_inputs(spec, batch).await;
            return Ok(BatchOutcome::Committed {
                rows_in: produced.rows_in,
                rows_out,
                rows_dead_lettered: produced.rows_dead_lettered,
            });
        }
        Ok(Committing::AlreadyCommitted) => BatchOutcome::AlreadyCommitted,
        Ok(Committing::Abandoned) => BatchOutcome::Abandoned { reason: "another run abandoned it first".into() },
        Ok(Committing::Fenced) => BatchOutcome::Fenced,
        // The log refuses the commit outright: it will never name these files.
        Ok(Committing::Refused(reason)) => {
            discard_quietly(spec, &attempt).await;
            return Err(Error::Refused(reason));
        }
        // Whether the record was written is unknown: the staged files
        // stay, for the next run to publish if the commit is in the log.
        Err(error) => return Err(error),
    };
    discard_quietly(spec, &attempt).await;
    Ok(outcome)
}

/// Tries a few times to make a committed batch's files visible. A publish
/// that still fails is finished by the controller's next pass, which
/// replays the publish of every committed batch with staged files.
async fn publish(spec: &PipelineSpec, batch: &Batch, produced: &Produced) {
    for attempt in 1..=Backoff::PUBLISH.tries {
        let mut result = spec.sink.publish(&produced.staged).await;
        if let (Ok(()), Some(dead)) = (&result, &produced.dead_letters) {
            result = spec.dead_letters.publish(dead).await;
        }
        match result {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(
                    batch_id = %batch.id, attempt,
                    "committed, but moving the files into place failed: {}",
                    spec.file.redact(&error.to_string())
                );
                tokio::time::sleep(Backoff::PUBLISH.wait(attempt)).await;
            }
        }
    }
    tracing::warn!(batch_id = %batch.id, "the next pass finishes moving this committed batch's files into place");
}

/// `[source] after_commit`: the committed batch's files deleted or moved.
/// A failure leaves them, for the next planning pass to remove.
async fn settle_inputs(spec: &PipelineSpec, batch: &Batch) {
    let Some(source) = spec.source.objects().filter(|source| source.after_commit() != AfterCommit::Keep) else {
        return;
    };
    if let Err(error) = source.settle(&batch.inputs).await {
        tracing::warn!(
            batch_id = %batch.id,
            "committed, but its files were not {}; the next pass does it: {}",
            if source.after_commit() == AfterCommit::Delete { "deleted" } else { "moved" },
            spec.file.redact(&error.to_string())
        );
    }
}

/// Removes what an attempt staged; a failure only leaves invisible files,
/// which `sluice vacuum` removes.
async fn discard_quietly(spec: &PipelineSpec, attempt: &Attempt) {
    for sink in [&spec.sink, &spec.dead_letters] {
        if let Err(error) = sink.discard(&attempt.token).await {
            tracing::warn!(token = %attempt.token, "cannot remove staged files: {}", spec.file.redact(&error.to_string()));
        }
    }
}

async fn abandon(log: &Mutex<CheckpointLog>, batch: &Batch, reason: String) -> Result<BatchOutcome> {
    Ok(match txn::abandon(&mut *log.lock().await, &batch.id, &reason, Utc::now()).await? {
        Abandoning::Abandoned => BatchOutcome::Abandoned { reason },
        Abandoning::AlreadyCommitted => BatchOutcome::AlreadyCommitted,
    })
}

/// Records a failed attempt, which releases the lease; the last allowed
/// one fails the batch until `sluice retry`.
async fn record_failure(
    spec: &PipelineSpec,
    log: &Mutex<CheckpointLog>,
    batch: &Batch,
    attempt: u32,
    error: &Error,
) -> Result<BatchOutcome> {
    let message = spec.file.redact(&error.to_string());
    let mut log = log.lock().await;
    let failing =
        txn::fail(&mut log, &batch.id, attempt, &message, error.fails_every_attempt(), Terms::of(spec), Utc::now());
    match failing.await {
        Ok(Failing::Recorded { gave_up }) => Ok(BatchOutcome::Failed { error: message, gave_up }),
        Ok(Failing::AlreadyCommitted) => Ok(BatchOutcome::AlreadyCommitted),
        Ok(Failing::Fenced) => Ok(BatchOutcome::Fenced),
        // The log cannot be written either: the lease runs out, and the
        // batch is taken over.
        Err(log_error) => {
            tracing::warn!(batch_id = %batch.id, "cannot record the failure in the log: {log_error}");
            Err(Error::Storage(object_store::Error::Generic { store: "log", source: message.into() }))
        }
    }
}
