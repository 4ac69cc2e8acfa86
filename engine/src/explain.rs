//! `sluice explain`: a pipeline's settings as they were read, with their
//! defaults, and the plan its SQL makes over the input's columns.

use std::fmt::Write;

use datafusion::physical_plan::displayable;

use crate::Result;
use crate::spec::{Diagnostics, PipelineSpec, shown_url};
use crate::sql::{self, PlanOver, PlannedInput};

/// One line of the text: writing to a `String` cannot fail.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// The text of `sluice explain`, or the problems planning found.
pub async fn describe(spec: &PipelineSpec) -> Result<Result<String, Diagnostics>> {
    let mut out = String::new();
    say!(out, "[pipeline]\n  name = {}\n  version = {}", spec.name, spec.version);
    say!(out, "[source]");
    for (key, value) in spec.source.describe() {
        say!(out, "  {key} = {value}");
    }
    for table in &spec.tables {
        say!(out, "[tables.{}]", table.name);
        for (key, value) in table.source.describe().into_iter().filter(|(key, _)| *key != "on_change") {
            say!(out, "  {key} = {value}");
        }
    }
    let trigger = &spec.trigger;
    match spec.source.stream() {
        Some(_) => say!(
            out,
            "[trigger]\n  max_records = {}\n  max_wait = {}\n  max_bytes = {}",
            trigger.max_records,
            trigger.max_wait,
            trigger.max_bytes
        ),
        None => say!(
            out,
            "[trigger]\n  poll_interval = {}\n  reconcile_interval = {}\n  max_files_per_batch = {}\n  max_bytes_per_batch = {}",
            trigger.poll_interval,
            trigger.reconcile_interval,
            trigger.max_files_per_batch,
            trigger.max_bytes_per_batch
        ),
    }
    say!(out, "[transform]\n  sql = {}", spec.sql.as_deref().unwrap_or(sql::IDENTITY_SQL));
    say!(out, "[sink]");
    for (key, value) in spec.sink.describe() {
        say!(out, "  {key} = {value}");
    }
    say!(out, "[checkpoint]\n  url = {}", spec.checkpoint);
    say!(
        out,
        "[workers]\n  concurrency = {}\n  max_attempts = {}\n  lease_timeout = {}",
        spec.concurrency,
        spec.max_attempts,
        humantime::format_duration(spec.lease_timeout)
    );
    if let Some(dispatch) = &spec.dispatch {
        say!(out, "  dispatch = {}\n  task_queue = {}", shown_url(&dispatch.url), dispatch.queue);
    }
    say!(out, "[dead_letter]\n  url = {}\n  max_records = {}", spec.dead_letter, spec.dead_letter_max_records);

    let ctx = sql::session(spec.concurrency);
    let (frame, input) = match sql::plan_pipeline(spec, &ctx, PlanOver::InputFiles).await {
        Err(problems) => return Ok(Err(problems)),
        Ok(None) if spec.source.stream().is_some() => {
            say!(out, "\nNo [source.schema]: the columns are inferred from the first micro-batch of each run.");
            return Ok(Ok(out));
        }
        Ok(None) => {
            say!(out, "\nNo input files yet and no [source.schema]: the plan is shown once there is either.");
            return Ok(Ok(out));
        }
        Ok(Some(planned)) => planned,
    };
    let origin = match (input, spec.source.declared_schema().is_some()) {
        (PlannedInput::Declared, _) if spec.source.stream().is_some() => "declared in [source.schema]".to_string(),
        (PlannedInput::Declared, _) => "declared in [source.schema]; no input files yet".to_string(),
        (PlannedInput::Files(n), true) => format!("declared in [source.schema]; planned over {n} input file(s)"),
        (PlannedInput::Files(n), false) => format!("inferred from {n} input file(s) present now"),
    };
    say!(out, "\ninput columns ({origin}):");
    let input = ctx.table_provider(sql::INPUT_TABLE).await?.schema();
    for field in input.fields() {
        let nullable = if field.is_nullable() { "" } else { " not null" };
        say!(out, "  {} {}{nullable}", field.name(), field.data_type());
    }
    // A plan folds constants: `upper('${env:X}')` is shown as the
    // upper-cased secret, which redaction cannot recognise.
    if spec.sql.as_deref().is_some_and(|sql| spec.file.holds_secret(sql)) {
        say!(
            out,
            "\nThe logical and physical plans are not shown: [transform] sql holds a value from the environment, \
             and a plan shows constants computed from it."
        );
        return Ok(Ok(out));
    }
    let logical = frame.clone().into_optimized_plan()?;
    say!(out, "\nlogical plan:\n{}", logical.display_indent());
    let physical = frame.create_physical_plan().await?;
    say!(out, "\nphysical plan:\n{}", displayable(physical.as_ref()).indent(true));
    Ok(Ok(out))
}
