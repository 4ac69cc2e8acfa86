//! DataFusion: the session a batch runs in and the transform's plan.

use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;

use crate::Result;

/// The name of the table the transform reads.
pub const INPUT_TABLE: &str = "input";

/// The transform used when `[transform] sql` is absent.
pub const IDENTITY_SQL: &str = "SELECT * FROM input";

/// A session for one batch, using `concurrency` threads of work.
///
/// A literal such as `1.20` is an exact decimal, as the SQL standard and
/// DuckDB have it, so that `amount * 1.20` on a decimal column stays exact.
pub fn session(concurrency: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(concurrency.max(1)).with_information_schema(false);
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    SessionContext::new_with_config(config)
}

/// What a transform may be: a query, never DDL, DML or `SET`.
pub fn query_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Plans the transform over the table `input` already registered in `ctx`.
pub async fn plan_transform(ctx: &SessionContext, sql: Option<&str>) -> Result<DataFrame> {
    Ok(ctx.sql_with_options(sql.unwrap_or(IDENTITY_SQL), query_only()).await?)
}

use std::sync::Arc;

use datafusion::datasource::MemTable;

use crate::spec::{Diagnostics, PipelineSpec};

/// What `input` stood for when the transform was planned without a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedInput {
    /// An empty table of the `[source.schema]` columns.
    Declared,
    /// The first batch's worth of the input files present: this many.
    Files(usize),
}

/// Which input [`plan_pipeline`] plans against when it has the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOver {
    /// The declared schema when there is one: no listing (`validate`).
    DeclaredSchema,
    /// The input files present when there are some (`explain`).
    InputFiles,
}

/// Plans the pipeline's transform without running a batch: over the
/// declared schema or over the first batch's worth of the input files
/// present, as `over` prefers. `Ok(None)` when there is neither, so
/// nothing to plan against yet (only the SQL's syntax is checked then).
/// Problems point at `transform.sql` or the sink's keys.
pub async fn plan_pipeline(
    spec: &PipelineSpec,
    ctx: &SessionContext,
    over: PlanOver,
) -> Result<Option<(DataFrame, PlannedInput)>, Diagnostics> {
    let located = |message: String| Diagnostics(vec![spec.diagnostic("source", message, None)]);
    let declared = spec.source.declared_schema();
    let mut found = Vec::new();
    // A stream is not read to plan: only a declared schema is planned over.
    let objects = spec.source.objects();
    if let Some(source) = objects
        && (declared.is_none() || over == PlanOver::InputFiles)
    {
        found = source.discover().await.map_err(|e| located(e.to_string()))?;
        found.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.path.cmp(&b.path)));
        found.truncate(spec.trigger.max_files_per_batch.max(1));
    }
    let (table, input): (Arc<dyn datafusion::catalog::TableProvider>, _) = match declared {
        Some(schema) if found.is_empty() => {
            let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| located(e.to_string()))?;
            (Arc::new(empty), PlannedInput::Declared)
        }
        None if found.is_empty() => {
            // Nothing to plan against yet: at least the syntax is checked.
            let sql = spec.sql.as_deref().unwrap_or(IDENTITY_SQL);
            return match datafusion::sql::parser::DFParser::parse_sql(sql) {
                Ok(_) => Ok(None),
                Err(e) => Err(Diagnostics(vec![spec.sql_diagnostic(format!("the SQL does not parse: {e}"), None)])),
            };
        }
        _ => {
            let Some(source) = objects else { unreachable!("only an object source finds input files") };
            let input = source
                .read(&ctx.state(), &found)
                .await
                .map_err(|e| located(format!("cannot read the input files: {e}")))?;
            // A file set aside whole (a corrupt Parquet footer) is named
            // here; records that do not fit are found only when read.
            let unreadable = input.tally.take_rejected();
            if over == PlanOver::InputFiles && !unreadable.is_empty() {
                let causes: Vec<String> = unreadable.iter().map(|r| format!("{}: {}", r.source, r.error)).collect();
                return Err(located(format!(
                    "cannot read the input files; a batch sets these aside as dead letters: {}",
                    causes.join("; ")
                )));
            }
            (input.table, PlannedInput::Files(found.len()))
        }
    };
    ctx.register_table(INPUT_TABLE, table).map_err(|e| located(e.to_string()))?;
    let frame = plan_transform(ctx, spec.sql.as_deref()).await.map_err(|e| {
        Diagnostics(vec![spec.sql_diagnostic(
            format!("the SQL does not plan: {e}"),
            Some("the transform reads the table `input`; `sluice explain` shows its columns".into()),
        )])
    })?;
    let schema = frame.schema().as_arrow().clone();
    if let Err(message) = spec.sink.check_schema(&schema) {
        return Err(Diagnostics(vec![spec.diagnostic("sink.partition_by", message, None)]));
    }
    Ok(Some((frame, input)))
}
