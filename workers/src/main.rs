//! The `sluice` binary.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use datafusion::physical_plan::displayable;
use sluice_engine::sql::{self, PlanOver, PlannedInput};
use sluice_workers::cli::{Cli, Command};
use sluice_workers::controller::{self, RunOptions};
use sluice_workers::{load_pipeline, status};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn,sluice=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { files } => validate(&files).await,
        Command::Explain { file } => explain(&file).await,
        Command::Run { file, until_caught_up } => run(&file, RunOptions { until_caught_up }).await,
        Command::Status { file, json } => show_status(&file, json).await,
    }
}

async fn validate(files: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in files {
        let problems = match load_pipeline(path) {
            Err(problems) => Some(problems),
            Ok(spec) => {
                let ctx = sql::session(spec.concurrency);
                sql::plan_pipeline(&spec, &ctx, PlanOver::DeclaredSchema).await.err()
            }
        };
        match problems {
            Some(problems) => {
                failed = true;
                eprintln!("{problems}");
            }
            None => println!("{}: ok", path.display()),
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn explain(path: &Path) -> anyhow::Result<ExitCode> {
    let spec = match load_pipeline(path) {
        Ok(spec) => spec,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("[pipeline]\n  name = {}\n  version = {}", spec.name, spec.version);
    println!("[source]");
    for (key, value) in spec.source.describe() {
        println!("  {key} = {}", spec.file.redact(&value));
    }
    let trigger = &spec.trigger;
    println!(
        "[trigger]\n  poll_interval = {}\n  max_files_per_batch = {}\n  max_bytes_per_batch = {}",
        trigger.poll_interval, trigger.max_files_per_batch, trigger.max_bytes_per_batch
    );
    println!("[transform]\n  sql = {}", spec.sql.as_deref().unwrap_or(sql::IDENTITY_SQL));
    println!("[sink]");
    for (key, value) in spec.sink.describe() {
        println!("  {key} = {}", spec.file.redact(&value));
    }
    println!("[checkpoint]\n  url = {}", spec.checkpoint);
    println!("[workers]\n  concurrency = {}", spec.concurrency);

    let ctx = sql::session(spec.concurrency);
    match sql::plan_pipeline(&spec, &ctx, PlanOver::InputFiles).await {
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
        Ok(None) => {
            println!("\nNo input files yet and no [source.schema]: the plan is shown once there is either.");
        }
        Ok(Some((frame, input))) => {
            let origin = match (input, spec.source.declared_schema().is_some()) {
                (PlannedInput::Declared, _) => "declared in [source.schema]; no input files yet".to_string(),
                (PlannedInput::Files(n), true) => {
                    format!("declared in [source.schema]; planned over {n} input file(s)")
                }
                (PlannedInput::Files(n), false) => format!("inferred from {n} input file(s) present now"),
            };
            println!("\ninput columns ({origin}):");
            let input = ctx.table_provider(sql::INPUT_TABLE).await?.schema();
            for field in input.fields() {
                println!(
                    "  {} {}{}",
                    field.name(),
                    field.data_type(),
                    if field.is_nullable() { "" } else { " not null" }
                );
            }
            let logical = frame.clone().into_optimized_plan()?;
            println!("\nlogical plan:\n{}", logical.display_indent());
            let physical = frame.create_physical_plan().await?;
            println!("\nphysical plan:\n{}", displayable(physical.as_ref()).indent(true));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(path: &Path, options: RunOptions) -> anyhow::Result<ExitCode> {
    let spec = match load_pipeline(path) {
        Ok(spec) => Arc::new(spec),
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing the batches in hand (signal again to exit at once)");
        let _ = stop_tx.send(true);
        wait_for_signal().await;
        eprintln!("sluice: exiting at once; the batches in hand will be redone by the next run");
        std::process::exit(130);
    });
    let summary = controller::run(spec.clone(), options, stop_rx)
        .await
        .map_err(|e| anyhow::anyhow!(spec.file.redact(&e.to_string())))
        .with_context(|| format!("pipeline {}", spec.name))?;
    let mut line = format!(
        "sluice: {}: {} batches, {} files, {} rows in, {} rows out in {:.2}s",
        spec.name,
        summary.batches,
        summary.files,
        summary.rows_in,
        summary.rows_out,
        controller::elapsed_since(started)
    );
    if summary.abandoned > 0 {
        line.push_str(&format!("; {} batches abandoned (inputs changed, planned again)", summary.abandoned));
    }
    if summary.failed > 0 {
        line.push_str(&format!("; {} batches failed and stay pending (see the errors above)", summary.failed));
    }
    println!("{line}");
    Ok(if summary.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn show_status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let spec = match load_pipeline(path) {
        Ok(spec) => spec,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = status::pipeline_status(&spec).await.map_err(|e| anyhow::anyhow!(spec.file.redact(&e.to_string())))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
