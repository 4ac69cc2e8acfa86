//! DataFusion: the session a batch runs in and the transform's plan.

use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;

use crate::Result;

/// The stack of every thread that plans or runs a transform. Planning
/// and running recurse once for each level an expression nests (a chain
/// `a OR b OR c ...` nests once a term), so the stack bounds how deep
/// the SQL may be: [`MAX_SQL_DEPTH`] levels fit with room to spare. Only
/// the pages a thread touches are ever mapped in.
pub const STACK_SIZE: usize = 64 * 1024 * 1024;

/// How deep an expression of the transform may nest once its chains of
/// `OR` and `AND` are balanced (see [`plan_transform`]): a chain such as
/// `a + b + ...` of this many terms still plans and runs on a
/// [`STACK_SIZE`] stack, with a wide margin.
pub const MAX_SQL_DEPTH: usize = 5_000;

/// Refuses SQL that nests deeper than [`MAX_SQL_DEPTH`]: planning it
/// could overflow the stack. SQL that does not parse passes here, and is
/// reported where it is planned.
pub fn check_depth(sql: &str) -> std::result::Result<(), String> {
    use std::ops::ControlFlow;

    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};

    /// The current and the deepest nesting of expressions seen.
    struct Depth {
        now: usize,
        deepest: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now += 1;
            self.deepest = self.deepest.max(self.now);
            // Deeper than this is refused anyway: no need to walk on.
            if self.now > MAX_SQL_DEPTH { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    let Ok(mut statements) = DFParser::parse_sql(sql) else { return Ok(()) };
    let mut depth = Depth { now: 0, deepest: 0 };
    for statement in &mut statements {
        if let Statement::Statement(statement) = statement {
            let _ = datafusion::sql::sqlparser::ast::VisitMut::visit(statement.as_mut(), &mut ChainBalancer);
            let _ = statement.visit(&mut depth);
        }
    }
    match depth.deepest > MAX_SQL_DEPTH {
        true => Err(format!(
            "an expression nests more than {MAX_SQL_DEPTH} levels deep (a chain of that many terms such as \
             `a + b + ...`), more than a worker can plan"
        )),
        false => Ok(()),
    }
}

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
///
/// Long chains of `OR` or of `AND` are planned as balanced trees of the
/// same terms in the same order (`a OR b OR c OR d` as `(a OR b) OR (c OR
/// d)`), which gives the same rows: DataFusion's planning is recursive and
/// quadratic in how deep an expression nests, so a chain of 4,000 terms
/// would take minutes to plan and a deep stack to run.
pub async fn plan_transform(ctx: &SessionContext, sql: Option<&str>) -> Result<DataFrame> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql.unwrap_or(IDENTITY_SQL), &dialect)?;
    if let datafusion::sql::parser::Statement::Statement(inner) = &mut statement {
        let _ = datafusion::sql::sqlparser::ast::VisitMut::visit(inner.as_mut(), &mut ChainBalancer);
    }
    let plan = state.statement_to_plan(statement).await?;
    query_only().verify_plan(&plan)?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// Chains shorter than this are left as written.
const SHORTEST_CHAIN_BALANCED: usize = 64;

/// Rebuilds each long chain of one of `OR` and `AND` as a balanced tree.
struct ChainBalancer;

impl datafusion::sql::sqlparser::ast::VisitorMut for ChainBalancer {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut SqlExpr) -> std::ops::ControlFlow<()> {
        if let SqlExpr::BinaryOp { op: op @ (BinaryOperator::Or | BinaryOperator::And), .. } = expr {
            let op = op.clone();
            let mut terms = Vec::new();
            chain_terms(std::mem::replace(expr, SqlExpr::value(Value::Null)), &op, &mut terms);
            *expr = match terms.len() < SHORTEST_CHAIN_BALANCED {
                true => left_deep(terms, &op),
                false => balanced(terms, &op),
            };
        }
        std::ops::ControlFlow::Continue(())
    }
}

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr, Value};

/// The terms of the chain of `op` that `expr` is, in order, without
/// recursing down the chain (a chain is left-deep as parsed).
fn chain_terms(expr: SqlExpr, op: &BinaryOperator, terms: &mut Vec<SqlExpr>) {
    let mut rights = Vec::new();
    let mut left = expr;
    loop {
        match left {
            SqlExpr::BinaryOp { left: l, op: o, right } if &o == op => {
                rights.push(*right);
                left = *l;
            }
            other => {
                terms.push(other);
                break;
            }
        }
    }
    // A right operand may be a chain of its own (`a OR (b OR c)` is
    // parsed with `Nested`, so only a chain built by hand gets here).
    terms.extend(rights.into_iter().rev());
}

/// `terms` joined by `op` as the parser builds them: left-deep.
fn left_deep(terms: Vec<SqlExpr>, op: &BinaryOperator) -> SqlExpr {
    let mut terms = terms.into_iter();
    let first = terms.next().unwrap_or(SqlExpr::value(Value::Null));
    terms.fold(first, |left, right| SqlExpr::BinaryOp { left: Box::new(left), op: op.clone(), right: Box::new(right) })
}

/// `terms` joined by `op` as a balanced tree, in order.
fn balanced(mut terms: Vec<SqlExpr>, op: &BinaryOperator) -> SqlExpr {
    if terms.len() <= 1 {
        return terms.pop().unwrap_or(SqlExpr::value(Value::Null));
    }
    let right = terms.split_off(terms.len() / 2);
    SqlExpr::BinaryOp { left: Box::new(balanced(terms, op)), op: op.clone(), right: Box::new(balanced(right, op)) }
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
    // A lookup table with a declared schema is planned over it, as the
    // input is; one without is read.
    for table in &spec.tables {
        let at_table =
            |message: String| Diagnostics(vec![spec.diagnostic(&format!("tables.{}", table.name), message, None)]);
        match table.source.declared_schema() {
            Some(schema) => {
                let empty = MemTable::try_new(schema, vec![vec![]]).map_err(|e| at_table(e.to_string()))?;
                ctx.register_table(table.name.as_str(), Arc::new(empty)).map_err(|e| at_table(e.to_string()))?;
            }
            None => {
                crate::lookup::register_all(std::slice::from_ref(table), ctx)
                    .await
                    .map_err(|e| at_table(e.to_string()))?;
            }
        }
    }
    let frame = plan_transform(ctx, spec.sql.as_deref()).await.map_err(|e| {
        Diagnostics(vec![spec.sql_diagnostic(
            format!("the SQL does not plan: {e}"),
            Some("the transform reads the table `input` (and any [tables.NAME]); `sluice explain` shows their columns".into()),
        )])
    })?;
    let schema = frame.schema().as_arrow().clone();
    if let Err(message) = spec.sink.check_schema(&schema) {
        return Err(Diagnostics(vec![spec.diagnostic("sink.partition_by", message, None)]));
    }
    Ok(Some((frame, input)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, terms: usize) -> String {
        let terms: Vec<String> = (0..terms).map(|i| format!("id = {i}")).collect();
        format!("SELECT id FROM input WHERE {}", terms.join(op))
    }

    #[test]
    fn a_chain_of_or_is_measured_once_balanced_and_a_chain_of_plus_as_written() {
        assert_eq!(check_depth(&chain(" OR ", 50_000)), Ok(()));
        assert_eq!(check_depth(&chain(" AND ", 50_000)), Ok(()));
        let sum = vec!["id"; MAX_SQL_DEPTH + 10].join(" + ");
        assert!(check_depth(&format!("SELECT {sum} FROM input")).is_err());
        assert_eq!(check_depth("SELEC nonsense"), Ok(()), "reported where it is planned");
    }

    #[tokio::test]
    async fn a_balanced_chain_keeps_the_rows_and_a_short_one_its_shape() {
        let ctx = session(1);
        let table = datafusion::datasource::MemTable::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                "id",
                arrow::datatypes::DataType::Int64,
                false,
            )])),
            vec![vec![
                arrow::record_batch::RecordBatch::try_new(
                    Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                        "id",
                        arrow::datatypes::DataType::Int64,
                        false,
                    )])),
                    vec![Arc::new(arrow::array::Int64Array::from_iter_values(0..1000))],
                )
                .expect("batch"),
            ]],
        )
        .expect("table");
        ctx.register_table(INPUT_TABLE, Arc::new(table)).expect("register");
        let rows = plan_transform(&ctx, Some(&chain(" OR ", 300))).await.expect("plan").count().await.expect("run");
        assert_eq!(rows, 300);
        let short = plan_transform(&ctx, Some("SELECT id = 1 OR id = 2 OR id = 3 FROM input")).await.expect("plan");
        let name = short.schema().field(0).name().clone();
        assert_eq!(name, "input.id = Int64(1) OR input.id = Int64(2) OR input.id = Int64(3)");
    }
}
