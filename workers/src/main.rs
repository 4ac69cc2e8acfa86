//! The `sluice` binary.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::sql::{self, PlanOver};
use sluice_engine::status;
use sluice_workers::cli::{Cli, Command};
#[cfg(feature = "amqp")]
use sluice_workers::consumer::{self, WorkerOptions};
use sluice_workers::exit::{Exit, Shown};
use sluice_workers::logging::LogFormat;
use sluice_workers::maintenance::{self, RetryTarget};
use sluice_workers::report::RunReport;
use sluice_workers::run::{self, RunOptions};
use sluice_workers::task_keys::KeySources;
use sluice_workers::{load_pipeline, logging, metrics};
use tokio::sync::watch;

fn main() -> ExitCode {
    share_allocator_arenas();
    let cli = Cli::parse();
    let exporting = logging::init(cli.log_format.unwrap_or_else(LogFormat::detect));
    let stack = sql::STACK_SIZE;
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(stack).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::Internal.into();
        }
    };
    // The commands run on a thread of their own, not on `main`: validate
    // and explain plan the SQL there, and planning recurses as deep as the
    // SQL nests, so it needs the stack every runtime thread has.
    let commands = std::thread::Builder::new()
        .name("sluice".into())
        .stack_size(stack)
        .spawn(move || runtime.block_on(dispatch(cli.command)));
    let outcome = match commands {
        Ok(handle) => handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the command panicked"))),
        Err(error) => Err(anyhow::Error::new(error).context("cannot start the command's thread")),
    };
    // Spans still buffered go to the collector before the process exits.
    exporting.flush();
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::of(&error).into()
        }
    }
}

/// Caps glibc's allocator at one arena per core (its default is eight per
/// core), unless `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` says otherwise.
/// A batch's buffers of megabytes (input segments, decoded columns, encoded
/// pages) are allocated on one thread of the blocking pool and freed on
/// another; with an arena per thread, each keeps the high-water mark of
/// what passed through it. On the benchmarks' 1M-row files this cuts the
/// peak RSS by a third (NDJSON 240 MB to 150 MB, CSV 275 MB to 190 MB) and
/// costs no time; mimalloc and jemalloc were tried and use more of both.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn share_allocator_arenas() {
    let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|tunables| tunables.contains("arena_max"));
    if tuned {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a parameter of the C allocator, which it
    // takes its own lock for; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn share_allocator_arenas() {}

async fn dispatch(command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Validate { files } => validate(&files).await,
        Command::Explain { file } => explain(&file).await,
        Command::Test { files } => sluice_workers::pipeline_tests::test_command(&files).await,
        Command::Run { file, until_caught_up, metrics_addr, task_key_file, json } => {
            if let Some(addr) = metrics_addr {
                metrics::serve(addr)?;
            }
            let progress = until_caught_up && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let task_keys = KeySources::from_env(task_key_file.into_iter().collect());
            run(&file, RunOptions { until_caught_up, progress, task_keys }, json).await
        }
        #[cfg(feature = "amqp")]
        Command::Worker {
            tasks,
            queue,
            idle_timeout,
            prefetch,
            metrics_addr,
            pipelines,
            task_key_file,
            insecure_unsigned_tasks,
        } => {
            if let Some(addr) = metrics_addr {
                metrics::serve(addr)?;
            }
            let keys = KeySources::from_env(task_key_file);
            worker(WorkerOptions { tasks, queue, idle_timeout, prefetch, pipelines, keys, insecure_unsigned_tasks })
                .await
        }
        #[cfg(not(feature = "amqp"))]
        Command::Worker { .. } => Err(sluice_engine::Error::Config(
            "this sluice is built without AMQP, which `sluice worker` takes its tasks from; use a sluice built \
             with the cargo feature `amqp` (on by default)"
                .into(),
        )
        .into()),
        Command::Status { file, json } => show_status(&file, json).await,
        Command::Retry { file, batch, failed: _ } => {
            let target = batch.map_or(RetryTarget::AllFailed, RetryTarget::Batch);
            retry(&file, &target).await
        }
        Command::Vacuum { file, dry_run } => vacuum(&file, dry_run).await,
    }
}

/// The pipeline at `path`, or `None` once its problems are printed.
fn load_or_report(path: &Path) -> Option<PipelineSpec> {
    load_pipeline(path).map_err(|problems| eprintln!("{problems}")).ok()
}

async fn validate(files: &[std::path::PathBuf]) -> anyhow::Result<Exit> {
    let mut failed = false;
    for path in files {
        let checked = match load_pipeline(path) {
            Err(problems) => Err(problems),
            Ok(spec) => {
                let ctx = sql::session(spec.concurrency);
                sql::plan_pipeline(&spec, &ctx, PlanOver::DeclaredSchema).await
            }
        };
        match checked {
            Err(problems) => {
                failed = true;
                eprintln!("{problems}");
            }
            Ok(Some(_)) => println!("{}: ok", path.display()),
            Ok(None) => println!(
                "{}: ok (the SQL parses; it is planned once there is input or [source.schema] is declared)",
                path.display()
            ),
        }
    }
    Ok(if failed { Exit::Usage } else { Exit::Done })
}

async fn explain(path: &Path) -> anyhow::Result<Exit> {
    let Some(spec) = load_or_report(path) else { return Ok(Exit::Usage) };
    // Everything shown passes through `redact`: the SQL, URLs and plans
    // may hold values that came from the environment.
    match sluice_engine::explain::describe(&spec).await {
        Ok(Ok(text)) => {
            print!("{}", spec.file.redact(&text));
            Ok(Exit::Done)
        }
        Ok(Err(problems)) => {
            eprintln!("{problems}");
            Ok(Exit::Usage)
        }
        Err(error) => Err(Shown::engine(&error, |text| spec.file.redact(text)).into()),
    }
}

/// A receiver that turns true on the first SIGINT or SIGTERM; the second
/// exits at once.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing the batches in hand (signal again to exit at once)");
        let _ = stop_tx.send(true);
        wait_for_signal().await;
        logging::hide_progress();
        eprintln!("sluice: exiting at once; the batches in hand will be redone");
        std::process::exit(130);
    });
    stop_rx
}

#[cfg(feature = "amqp")]
async fn worker(options: WorkerOptions) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let stop_rx = stop_on_signal();
    // Printed as the engine says it, once: not again through its chain.
    let summary = consumer::serve(options, stop_rx).await.map_err(|e| Shown::engine(&e, str::to_string))?;
    println!(
        "sluice worker: {} tasks, {} batches committed, {} files, {} rows in, {} rows out, {} dead letters, \
         {} skipped (already settled), {} failed, {} rejected in {:.2}s",
        summary.tasks,
        summary.batches,
        summary.files,
        summary.rows_in,
        summary.rows_out,
        summary.rows_dead_lettered,
        summary.skipped + summary.abandoned,
        summary.failed,
        summary.rejected,
        run::elapsed_since(started)
    );
    // A batch this worker failed for good waits for `sluice retry`, as
    // after `sluice run`.
    Ok(if summary.failed > 0 { Exit::BatchesFailed } else { Exit::Done })
}

async fn run(path: &Path, options: RunOptions, json: bool) -> anyhow::Result<Exit> {
    let Some(spec) = load_or_report(path).map(Arc::new) else { return Ok(Exit::Usage) };
    // SQL that cannot plan over the declared schema would fail every batch
    // it is given: refuse it before anything is planned, as `validate` does.
    if spec.source.declared_schema().is_some() {
        let ctx = sql::session(spec.concurrency);
        if let Err(problems) = sql::plan_pipeline(&spec, &ctx, PlanOver::DeclaredSchema).await {
            eprintln!("{problems}");
            return Ok(Exit::Usage);
        }
    }
    let started = Instant::now();
    let stop_rx = stop_on_signal();
    let summary = run::run(spec.clone(), options, stop_rx)
        .await
        .map_err(|e| Shown::engine(&e, |text| spec.file.redact(text)))
        .with_context(|| format!("pipeline {}", spec.name))?;
    let report = RunReport::new(spec.name.as_str(), &summary, run::elapsed_since(started));
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.to_text(path, spec.source.stream().is_some()));
    }
    Ok(report.exit)
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

async fn retry(path: &Path, target: &RetryTarget) -> anyhow::Result<Exit> {
    let Some(spec) = load_or_report(path) else { return Ok(Exit::Usage) };
    let retried =
        maintenance::retry(&spec, target).await.map_err(|e| Shown::engine(&e, |text| spec.file.redact(text)))?;
    for (id, files) in &retried {
        println!("sluice: {}: batch {id} ({files} files) is pending again", spec.name);
    }
    match retried.len() {
        0 => println!("sluice: {}: no failed batches", spec.name),
        _ => println!("sluice: {}: `sluice run {}` runs them", spec.name, path.display()),
    }
    Ok(Exit::Done)
}

async fn vacuum(path: &Path, dry_run: bool) -> anyhow::Result<Exit> {
    let Some(spec) = load_or_report(path) else { return Ok(Exit::Usage) };
    let done =
        maintenance::vacuum(&spec, dry_run).await.map_err(|e| Shown::engine(&e, |text| spec.file.redact(text)))?;
    if dry_run {
        for line in &done.would_remove {
            println!("would remove {}", spec.file.redact(line));
        }
        println!(
            "sluice: {}: would remove {} staged attempts that never committed and {} checkpoint log objects no \
             reader needs; kept {} staged attempts of running workers (dry run: nothing removed)",
            spec.name, done.removed, done.log_objects, done.kept
        );
        return Ok(Exit::Done);
    }
    println!(
        "sluice: {}: removed {} staged attempts that never committed, finished publishing {} committed batches, \
         kept {} staged attempts of running workers, removed {} checkpoint log objects no reader needs",
        spec.name, done.removed, done.published, done.kept, done.log_objects
    );
    Ok(Exit::Done)
}

async fn show_status(path: &Path, json: bool) -> anyhow::Result<Exit> {
    let Some(spec) = load_or_report(path) else { return Ok(Exit::Usage) };
    let status = status::pipeline_status(&spec).await.map_err(|e| Shown::engine(&e, |text| spec.file.redact(text)))?;
    if json {
        println!("{}", spec.file.redact(&serde_json::to_string_pretty(&status)?));
    } else {
        print!("{}", spec.file.redact(&status.to_text()));
    }
    Ok(Exit::Done)
}
