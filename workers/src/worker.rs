//! The worker: runs one batch from its inputs to a commit.
//!
//! ```text
//! inputs ─► table `input` ─► SQL ─► sink.stage(attempt) ─► log: committed ─► sink.publish
//!                                   (invisible files)      (the decision)    (visible files)
//! ```
//!
//! A worker keeps nothing between batches: the batch and the log are all
//! it needs, so a crash anywhere is repaired by running the batch again.

use std::sync::Arc;

use chrono::Utc;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use sluice_engine::batch::Batch;
use sluice_engine::log::{Abandoned, Appended, CheckpointLog, Committed, Record, Refusal};
use sluice_engine::sink::{Attempt, Staged};
use sluice_engine::spec::PipelineSpec;
use sluice_engine::sql::{self, INPUT_TABLE};
use sluice_engine::{Error, Result};
use tokio::sync::Mutex;

/// What running a batch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This attempt committed the batch.
    Committed {
        /// Rows read from the inputs.
        rows_in: u64,
        /// Rows written to the sink.
        rows_out: u64,
    },
    /// Another attempt had committed it; this one's output was discarded.
    AlreadyCommitted,
    /// Its inputs changed since it was planned: it was given up, and the
    /// inputs are planned again as they are now.
    Abandoned {
        /// What changed.
        reason: String,
    },
}

/// Runs `batch` of `spec` and commits it in `log`.
pub async fn run_batch(spec: &PipelineSpec, log: &Mutex<CheckpointLog>, batch: &Batch) -> Result<BatchOutcome> {
    let ctx = sql::session(spec.concurrency);
    let table = match spec.source.table(&ctx.state(), &batch.inputs).await {
        Ok(table) => table,
        Err(changed @ Error::InputChanged { .. }) => return abandon(log, batch, changed.to_string()).await,
        Err(other) => return Err(other),
    };
    ctx.register_table(INPUT_TABLE, table)?;
    let frame = sql::plan_transform(&ctx, spec.sql.as_deref()).await?;
    let plan = frame.create_physical_plan().await?;
    let stream = execute_stream(plan.clone(), ctx.task_ctx())?;

    let attempt = Attempt::new(batch.id.clone());
    let staged = match spec.sink.stage(&attempt, stream).await {
        Ok(staged) => staged,
        Err(error) => {
            discard_quietly(spec, &attempt).await;
            return Err(error);
        }
    };
    // An input replaced while it was read must not be committed: its rows
    // may mix two versions.
    match spec.source.verify(&batch.inputs).await {
        Ok(()) => {}
        Err(changed @ Error::InputChanged { .. }) => {
            discard_quietly(spec, &attempt).await;
            return abandon(log, batch, changed.to_string()).await;
        }
        Err(other) => {
            discard_quietly(spec, &attempt).await;
            return Err(other);
        }
    }

    let rows_in = scanned_rows(&plan);
    let rows_out = staged.rows();
    let record =
        Record::Committed(Committed { batch_id: batch.id.clone(), staged: staged.clone(), rows_in, at: Utc::now() });
    let appended = log.lock().await.append(record).await;
    match appended {
        Ok(Appended::Written(seq)) => {
            tracing::debug!(batch_id = %batch.id, seq = seq.0, "committed");
            publish(spec, batch, &staged).await;
            Ok(BatchOutcome::Committed { rows_in, rows_out })
        }
        Ok(Appended::Refused(Refusal::AlreadyCommitted)) => {
            discard_quietly(spec, &attempt).await;
            Ok(BatchOutcome::AlreadyCommitted)
        }
        Ok(Appended::Refused(Refusal::Abandoned)) => {
            discard_quietly(spec, &attempt).await;
            Ok(BatchOutcome::Abandoned { reason: "another run abandoned it first".into() })
        }
        Ok(Appended::Refused(other)) => {
            discard_quietly(spec, &attempt).await;
            Err(Error::Refused(format!("commit of batch {}: {other:?}", batch.id)))
        }
        Err(error) => {
            // Whether the record was written is unknown: the staged files
            // stay, for the next run to publish if the commit is in the log.
            Err(error)
        }
    }
}

/// Tries a few times to make a committed batch's files visible. A publish
/// that still fails is finished by the controller's next pass, which
/// replays the publish of every committed batch with staged files.
async fn publish(spec: &PipelineSpec, batch: &Batch, staged: &Staged) {
    for attempt in 1..=3u32 {
        match spec.sink.publish(staged).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(
                    batch_id = %batch.id, attempt,
                    "committed, but moving the files into place failed: {}",
                    spec.file.redact(&error.to_string())
                );
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::warn!(batch_id = %batch.id, "the next pass finishes moving this committed batch's files into place");
}

/// Removes what an attempt staged; a failure only leaves invisible files.
async fn discard_quietly(spec: &PipelineSpec, attempt: &Attempt) {
    if let Err(error) = spec.sink.discard(&attempt.token).await {
        tracing::warn!(token = %attempt.token, "cannot remove staged files: {}", spec.file.redact(&error.to_string()));
    }
}

async fn abandon(log: &Mutex<CheckpointLog>, batch: &Batch, reason: String) -> Result<BatchOutcome> {
    let record = Record::Abandoned(Abandoned { batch_id: batch.id.clone(), reason: reason.clone(), at: Utc::now() });
    match log.lock().await.append(record).await? {
        Appended::Written(_) | Appended::Refused(Refusal::Abandoned) => Ok(BatchOutcome::Abandoned { reason }),
        Appended::Refused(Refusal::AlreadyCommitted) => Ok(BatchOutcome::AlreadyCommitted),
        Appended::Refused(other) => Err(Error::Refused(format!("abandoning batch {}: {other:?}", batch.id))),
    }
}

/// Rows the plan's leaves produced: the rows read from the inputs.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let children = plan.children();
    if children.is_empty() {
        return plan.metrics().and_then(|metrics| metrics.output_rows()).unwrap_or(0) as u64;
    }
    children.into_iter().map(scanned_rows).sum()
}
