//! DataFusion: the session a batch runs in and the transform's plan.

use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;

use crate::Result;

/// The name of the table the transform reads.
pub const INPUT_TABLE: &str = "input";

/// The transform used when `[transform] sql` is absent.
pub const IDENTITY_SQL: &str = "SELECT * FROM input";

/// A session for one batch, using `concurrency` threads of work.
pub fn session(concurrency: usize) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(concurrency.max(1)).with_information_schema(false);
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

/// Where the schema of `input` came from when planning without a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSchemaFrom {
    /// `[source.schema]`.
    Declared,
    /// Inferred from this many input objects found now.
    Inferred(usize),
}

/// Plans the pipeline's transform against the input it would read now:
/// over the declared schema, or over the first batch's worth of the input
/// objects present. `Ok(None)` when there is neither, so nothing to plan
/// against yet. Problems point at `transform.sql` or the sink's keys.
pub async fn plan_pipeline(
    spec: &PipelineSpec,
    ctx: &SessionContext,
) -> Result<Option<(DataFrame, InputSchemaFrom)>, Diagnostics> {
    let located = |message: String| Diagnostics(vec![spec.diagnostic("source", message, None)]);
    let (table, from): (Arc<dyn datafusion::catalog::TableProvider>, _) = match spec.source.declared_schema() {
        Some(schema) => {
            let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| located(e.to_string()))?;
            (Arc::new(empty), InputSchemaFrom::Declared)
        }
        None => {
            let mut found = spec.source.discover().await.map_err(|e| located(e.to_string()))?;
            if found.is_empty() {
                return Ok(None);
            }
            found.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.path.cmp(&b.path)));
            found.truncate(spec.trigger.max_files_per_batch.max(1));
            let table = spec
                .source
                .table(&ctx.state(), &found)
                .await
                .map_err(|e| located(format!("cannot infer the schema of the input files: {e}")))?;
            (table, InputSchemaFrom::Inferred(found.len()))
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
    Ok(Some((frame, from)))
}
