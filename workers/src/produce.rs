//! An attempt's work before its commit: the batch's input read as a
//! table, the SQL run over it, the result and the malformed records
//! staged.

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext, execute_stream};
use datafusion::prelude::SessionContext;
use sluice_engine::batch::Batch;
use sluice_engine::lookup::{self, TableVersions};
use sluice_engine::sink::{Attempt, Staged};
use sluice_engine::source::{Input, ReadTally, Rejected, SourceConnector};
use sluice_engine::spec::PipelineSpec;
use sluice_engine::sql::{self, INPUT_TABLE};
use sluice_engine::stream::Message;
use sluice_engine::txn::Produced;
use sluice_engine::{Error, Result};
use tracing::Instrument;

/// Dead-letter chunks (a slice of a segment's records each) waiting for
/// their writer, at most.
const DEAD_LETTERS_AHEAD: usize = 4;

/// Reads the batch and stages its output, and its malformed records as
/// dead letters.
///
/// The dead letters are staged while the batch runs: the read (and the
/// sink, for rows it cannot write) hands them to the tally, the tally to a
/// bounded channel, and the dead-letter sink writes them from there, so
/// that memory stays bounded whatever their number. Past `[dead_letter]
/// max_records` the read stops and the attempt fails with
/// [`Error::TooManyDeadLetters`].
pub(crate) async fn produce(
    spec: &PipelineSpec,
    batch: &Batch,
    attempt: &Attempt,
    in_hand: Option<&[Message]>,
) -> Result<Produced> {
    let ctx = sql::session(spec.concurrency);
    let input = read(spec, &ctx, batch, in_hand).await?;
    let tally = input.tally.clone();
    let (outlet, letters) = tokio::sync::mpsc::channel(DEAD_LETTERS_AHEAD);
    tally.stream_to(outlet, spec.dead_letter_max_records);
    let output = async {
        let staged = stage(spec, &ctx, input.table, attempt, &tally).await;
        // Closes the channel, so that the dead letters' file ends.
        let set_aside = tally.finish().await;
        (staged, set_aside)
    };
    let dead_letters = spec.dead_letters.stage(attempt, dead_letter_stream(spec, batch, letters));
    let ((staged, set_aside), dead_letters) = tokio::join!(output, dead_letters);
    // The most telling reason first: a failed read or write of the dead
    // letters shows in the output's error only as a closed channel.
    if let Some(too_many) = tally.limit_error() {
        return Err(too_many);
    }
    let dead_letters = dead_letters?;
    let (staged, scanned, tables) = staged?;
    let rejected = set_aside?;
    let rows_read = tally.rows().unwrap_or(scanned);
    if rejected > 0 {
        tracing::warn!("{rejected} malformed record(s) went to the dead letters; the rest of the batch goes on");
    }
    Ok(Produced {
        staged,
        rows_in: rows_read + rejected - tally.rejected_by_output(),
        dead_letters: (!dead_letters.outputs.is_empty()).then_some(dead_letters),
        rows_dead_lettered: rejected,
        tables,
    })
}

/// The batch's input as a table: its files read, or its messages decoded
/// (read again from the broker when they are not in hand).
async fn read(spec: &PipelineSpec, ctx: &SessionContext, batch: &Batch, in_hand: Option<&[Message]>) -> Result<Input> {
    match &spec.source {
        SourceConnector::Objects(source) => {
            source
                .read(&ctx.state(), &batch.inputs)
                .instrument(tracing::info_span!("read", files = batch.inputs.len()))
                .await
        }
        SourceConnector::Stream(source) => {
            let threads = ctx.state().config().target_partitions();
            if let Some(messages) = in_hand {
                return tracing::info_span!("read", messages = messages.len())
                    .in_scope(|| source.decode(messages, threads));
            }
            let inputs = batch
                .stream
                .as_ref()
                .ok_or_else(|| Error::Refused(format!("batch {} of a stream pipeline names no messages", batch.id)))?;
            let messages =
                source.replay(inputs).instrument(tracing::info_span!("read", again = %inputs.describe())).await?;
            source.decode(&messages, threads)
        }
    }
}

/// Runs the SQL over `table` (and the lookup tables) and stages the
/// result: the staged outputs, the rows read and the lookup tables'
/// versions.
async fn stage(
    spec: &PipelineSpec,
    ctx: &SessionContext,
    table: Arc<dyn TableProvider>,
    attempt: &Attempt,
    dead_letters: &ReadTally,
) -> Result<(Staged, u64, TableVersions)> {
    let (plan, tables) = async {
        ctx.register_table(INPUT_TABLE, table)?;
        let tables = lookup::register_all(&spec.tables, ctx).await?;
        let frame = sql::plan_transform(ctx, spec.sql.as_deref()).await?;
        Ok::<_, Error>((frame.create_physical_plan().await?, tables))
    }
    .instrument(tracing::info_span!("transform"))
    .await?;
    // Made before the plan starts to run: made after `execute_stream`,
    // the span was closed on the log lines but never reached the trace
    // exporter (whose per-layer filter had not seen it made).
    let write = tracing::info_span!("write");
    let stream = execute_stream(plan.clone(), ctx.task_ctx())?;
    let staged = spec.sink.stage_with_dead_letters(attempt, stream, dead_letters).instrument(write).await?;
    Ok((staged, scanned_rows(&plan), tables))
}

/// The dead letters as rows, a chunk at a time as they come: one NDJSON
/// object each once written (`raw_base64` only when the bytes are not
/// UTF-8; empty fields are left out).
fn dead_letter_stream(
    spec: &PipelineSpec,
    batch: &Batch,
    letters: tokio::sync::mpsc::Receiver<Vec<Rejected>>,
) -> SendableRecordBatchStream {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let schema = Arc::new(Schema::new(vec![
        text("source"),
        Field::new("line", DataType::UInt64, true),
        Field::new("offset", DataType::UInt64, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("message_id", DataType::Utf8, true),
        text("error"),
        text("raw"),
        Field::new("raw_base64", DataType::Utf8, true),
        text("pipeline"),
        text("batch_id"),
    ]));
    let (pipeline, batch_id) = (spec.name.to_string(), batch.id.to_string());
    let rows_schema = schema.clone();
    let rows = futures::stream::unfold(letters, move |mut letters| {
        let (schema, pipeline, batch_id) = (rows_schema.clone(), pipeline.clone(), batch_id.clone());
        async move {
            let rejected = letters.recv().await?;
            let n = rejected.len();
            let rows = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| r.source.as_str()))),
                    Arc::new(UInt64Array::from_iter(rejected.iter().map(|r| r.line))),
                    Arc::new(UInt64Array::from_iter(rejected.iter().map(|r| r.offset))),
                    Arc::new(Int32Array::from_iter(rejected.iter().map(|r| r.partition))),
                    Arc::new(StringArray::from_iter(rejected.iter().map(|r| r.message_id.as_deref()))),
                    Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| r.error.as_str()))),
                    Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| r.raw.as_str()))),
                    Arc::new(StringArray::from_iter(rejected.iter().map(|r| r.raw_base64.as_deref()))),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(pipeline.as_str(), n))),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(batch_id.as_str(), n))),
                ],
            )
            .map_err(datafusion::error::DataFusionError::from);
            Some((rows, letters))
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, rows))
}

/// Rows the plan's leaves produced: the rows read from the inputs. A
/// source that knows its row count exactly (a table in memory, Parquet
/// metadata) says so; file scans count rows as they go.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let children = plan.children();
    if children.is_empty() {
        let exact =
            StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new()).ok().and_then(|stats| match stats
                .num_rows
            {
                Precision::Exact(rows) => Some(rows),
                _ => None,
            });
        let counted = || plan.metrics().and_then(|metrics| metrics.output_rows());
        return exact.or_else(counted).unwrap_or(0) as u64;
    }
    children.into_iter().map(scanned_rows).sum()
}
