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
use sluice_engine::sink::Attempt;
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
    let staged = spec.sink.stage(&attempt, stream).await?;
    let rows_in = scanned_rows(&plan);
    let rows_out = staged.rows();
    let record =
        Record::Committed(Committed { batch_id: batch.id.clone(), staged: staged.clone(), rows_in, at: Utc::now() });
    let appended = log.lock().await.append(record).await?;
    match appended {
        Appended::Written(seq) => {
            tracing::debug!(batch_id = %batch.id, seq = seq.0, "committed");
            spec.sink.publish(&staged).await?;
            Ok(BatchOutcome::Committed { rows_in, rows_out })
        }
        Appended::Refused(Refusal::AlreadyCommitted) => {
            spec.sink.discard(&attempt.token).await?;
            Ok(BatchOutcome::AlreadyCommitted)
        }
        Appended::Refused(other) => {
            spec.sink.discard(&attempt.token).await?;
            Err(Error::Refused(format!("commit of batch {}: {other:?}", batch.id)))
        }
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
