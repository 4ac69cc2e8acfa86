//! `sluice worker`: an ephemeral worker that takes batches from the task
//! queue, runs each, commits it, and exits once it has had nothing to do
//! for its idle timeout.
//!
//! ```text
//! consume (prefetch N) ─► task ─► signed with a task key? ─► a pipeline of --pipelines, same sha256?
//!   ─► the batch pending in that pipeline's own log, with the same inputs? ─► run_batch ─► committed ─► ack
//!   │ any check fails, or the pipeline does not load ─► moved to <queue>.dead, the reason in a header
//!   └ held by another worker ─► wait for its lease, then take it over or skip
//! no task for --idle-timeout ─► exit 0
//! ```
//!
//! Nothing a task says reaches a setting: the worker takes the pipeline,
//! its storage, its endpoints and its log from its own files, and from the
//! task only which batch to run, which must be one that log planned.
//!
//! A task is acknowledged only once its batch is settled in the log:
//! committed (by this worker or another), failed for good, or abandoned.
//! A worker killed mid-batch never acks: the broker hands the task to
//! another worker, which takes the batch over when the dead worker's lease
//! runs out; the log keeps the output exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use sluice_connectors::Registry;
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::CheckpointLog;
use sluice_engine::model::owner_id;
use sluice_engine::retry::Backoff;
use sluice_engine::spec::{PipelineSpec, SpecFile};
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::catalogue::Catalogue;
use crate::drive::{Driven, Driver};
use crate::logging;
use crate::metrics;
use crate::run::RunSummary;
use crate::task_keys::{KEY_ID_HEADER, KeySources, SIGNATURE_HEADER, TaskKey, Unsigned, verify};
use crate::tasks::{Task, TaskQueue, dead_queue, header, shown_url};
use crate::worker::{BatchOutcome, Runner, batch_span};

/// How `sluice worker` runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The broker's URL.
    pub tasks: String,
    /// The task queue.
    pub queue: String,
    /// Exit after this long without a task.
    pub idle_timeout: Duration,
    /// Tasks held (and run) at once.
    pub prefetch: u16,
    /// The folder or bucket prefix of the pipeline files it may run.
    pub pipelines: String,
    /// Where its task keys come from.
    pub keys: KeySources,
    /// Run tasks that carry no signature.
    pub insecure_unsigned_tasks: bool,
}

/// What every task's handling shares.
struct Shared {
    /// The operator's pipeline files.
    catalogue: Mutex<Catalogue>,
    /// Pipelines loaded so far, by name and file SHA-256, each with its open log.
    loaded: Mutex<HashMap<(String, String), Loaded>>,
    /// The task keys, and where they come from.
    keys: Mutex<Vec<TaskKey>>,
    key_sources: KeySources,
    insecure_unsigned_tasks: bool,
    queue: TaskQueue,
}

#[derive(Clone)]
struct Loaded {
    spec: Arc<PipelineSpec>,
    log: Arc<Mutex<CheckpointLog>>,
}

/// What became of one task.
enum Handled {
    Done(Box<Batch>, Driven),
    Rejected,
    Requeued,
}

/// Consumes tasks until idle for `idle_timeout` or until `stop`; the tasks
/// in hand are finished first.
pub async fn serve(options: WorkerOptions, mut stop: watch::Receiver<bool>) -> Result<RunSummary> {
    sluice_engine::spec::check_broker_url(&options.tasks).map_err(|message| {
        Error::Config(format!("--tasks {message}; write it as amqp://USER:PASSWORD@HOST:5672/%2f"))
    })?;
    if !options.keys.any() && !options.insecure_unsigned_tasks {
        return Err(Error::Config(
            "no task key: give the worker the controller's key in SLUICE_TASK_KEY or --task-key-file FILE \
             (or start it with --insecure-unsigned-tasks to run unsigned tasks, on a broker only you can \
             publish to)"
                .into(),
        ));
    }
    let keys = options.keys.load().map_err(Error::Config)?;
    if options.insecure_unsigned_tasks {
        tracing::warn!("--insecure-unsigned-tasks: tasks without a signature are run");
    }
    let catalogue = Catalogue::open(&options.pipelines).await.map_err(Error::Config)?;
    if catalogue.is_empty() {
        tracing::warn!("{} holds no pipeline file yet; every task will be refused until it does", options.pipelines);
    }
    let owner = owner_id();
    let queue = TaskQueue::connect(&options.tasks, &options.queue).await?;
    let mut consumer = queue.consume(options.prefetch.max(1), &owner).await?;
    tracing::info!(
        queue = %options.queue, broker = %shown_url(&options.tasks), worker = %owner,
        pipelines = catalogue.len(), task_keys = keys.len(),
        "waiting for tasks; exiting after {} without one", humantime::format_duration(options.idle_timeout)
    );
    let shared = Arc::new(Shared {
        catalogue: Mutex::new(catalogue),
        loaded: Mutex::default(),
        keys: Mutex::new(keys),
        key_sources: options.keys.clone(),
        insecure_unsigned_tasks: options.insecure_unsigned_tasks,
        queue,
    });
    let mut running: JoinSet<Handled> = JoinSet::new();
    let mut summary = RunSummary::default();
    let idle = tokio::time::sleep(options.idle_timeout);
    tokio::pin!(idle);
    let mut consuming = true;
    let mut cancelled = false;
    let mut failure = None;
    loop {
        tokio::select! {
            delivery = consumer.next(), if consuming => match delivery {
                Some(Ok(delivery)) => {
                    summary.tasks += 1;
                    // Each task is its own worker in the log: two copies of
                    // one batch in this process never share a lease.
                    let (shared, stop) = (shared.clone(), stop.clone());
                    running.spawn(async move { handle(delivery, &shared, stop).await });
                }
                Some(Err(error)) => {
                    // The connection is gone: the broker gives the tasks in
                    // hand to others; finish them anyway, then exit.
                    failure = Some(sluice_connectors::amqp::broker_error(&options.tasks, "lost the task queue", error));
                    consuming = false;
                }
                None => consuming = false,
            },
            Some(joined) = running.join_next() => {
                match joined {
                    Ok(Handled::Done(batch, driven)) => summary.add(&batch, &driven),
                    Ok(Handled::Rejected) => summary.rejected += 1,
                    Ok(Handled::Requeued) => {}
                    Err(panicked) => tracing::error!("a task's run panicked: {panicked}"),
                }
                if running.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + options.idle_timeout);
                }
            }
            () = &mut idle, if running.is_empty() && consuming => {
                tracing::info!(
                    "no task for {}, exiting", humantime::format_duration(options.idle_timeout)
                );
                consuming = false;
            }
            _ = stop.changed(), if consuming => {
                tracing::info!("stopping: finishing the tasks in hand");
                consuming = false;
            }
        }
        if !consuming && running.is_empty() {
            break;
        }
        if !consuming && !cancelled {
            // No new task starts; tasks sent to this worker and not yet
            // started go back to the queue.
            let _ = shared.queue.cancel(&owner).await;
            cancelled = true;
        }
    }
    shared.queue.close().await;
    match failure {
        Some(error) => Err(error),
        None => Ok(summary),
    }
}

/// Runs one task to its end and acknowledges it, or moves it to the dead
/// queue if any check fails or it cannot be run at all.
async fn handle(delivery: Delivery, shared: &Shared, mut stop: watch::Receiver<bool>) -> Handled {
    let message_id: String = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
        .unwrap_or_default();
    let task_key = match check_signature(&delivery, shared).await {
        Ok(key) => key,
        Err(reason) => return refuse(&delivery, shared, &message_id, &reason).await,
    };
    let task = match Task::from_json(&delivery.data) {
        Ok(task) => task,
        Err(reason) => return refuse(&delivery, shared, &message_id, &reason).await,
    };
    // The batch is run as this pipeline's own log planned it; the task
    // only names it.
    let admitted = match load(shared, &task).await {
        Ok(loaded) => planned_batch(&loaded, &task).await.map(|planned| (loaded, planned)),
        Err(unloadable) => Err(unloadable),
    };
    let (loaded, task) = match admitted {
        Ok((loaded, planned)) => (loaded, Task { batch: planned, ..task }),
        Err(Unloadable::Pipeline(reason)) => return refuse(&delivery, shared, &message_id, &reason).await,
        Err(Unloadable::Log(reason)) => {
            // The operator's storage fails for a while: another try, a
            // little later.
            tracing::warn!(message_id, "handing the task back to the queue in {REQUEUE_AFTER:?}: {reason}");
            tokio::time::sleep(REQUEUE_AFTER).await;
            return requeue(&delivery).await;
        }
    };
    let owner = Runner::task(task_key);
    let (spec, log) = (&loaded.spec, &loaded.log);
    let span = batch_span(spec, &task.batch, &owner.owner);
    crate::traces::set_parent(&span, &crate::tasks::trace_context(&delivery));
    let ran = async {
        let driver = Driver {
            spec: spec.clone(),
            log: log.clone(),
            runner: owner.clone(),
            // A store that keeps failing hands the task back to the queue.
            errors: Backoff::IN_ATTEMPT,
            retry_any_error: true,
            refresh: true,
            wait_for_holder: true,
        };
        match driver.drive(&task.batch, None, &mut stop).await {
            Driven::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                tracing::info!(
                    pipeline = %spec.name, batch_id = %task.batch.id, files = task.batch.inputs.len(),
                    rows_in, rows_out, rows_dead_lettered, "batch committed"
                );
                Ran::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered })
            }
            Driven::Settled(BatchOutcome::Failed { error, gave_up }) => {
                tracing::error!(
                    pipeline = %spec.name, batch_id = %task.batch.id,
                    "batch failed {} times and waits for `sluice retry`: {error}", spec.max_attempts
                );
                Ran::Settled(BatchOutcome::Failed { error, gave_up })
            }
            Driven::Settled(BatchOutcome::Settled) if unknown_to(&*log.lock().await, &task.batch.id) => {
                // Not in this worker's log: it reads other storage than the
                // controller (a file system not mounted, another path).
                Ran::Unknown(format!(
                    "batch {} is not in the checkpoint log at {}; does this worker see the controller's \
                     storage at the same path?",
                    task.batch.id, spec.checkpoint
                ))
            }
            Driven::Settled(settled) => {
                tracing::info!(
                    pipeline = %spec.name, batch_id = %task.batch.id,
                    "nothing to do, the batch is settled: {settled:?}"
                );
                Ran::Settled(settled)
            }
            Driven::Unrun(panicked @ Error::Panicked(_)) => Ran::Unknown(spec.file.redact(&panicked.to_string())),
            Driven::Unrun(error) => {
                tracing::warn!(
                    pipeline = %spec.name, batch_id = %task.batch.id,
                    "cannot run the batch, handing the task back to the queue: {}",
                    spec.file.redact(&error.to_string())
                );
                Ran::Stopped
            }
            Driven::Busy { .. } | Driven::Stopped => Ran::Stopped,
        }
    }
    .instrument(span.clone())
    .await;
    async {
        match ran {
            Ran::Settled(outcome) => {
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    // The broker hands the task out again; the log makes the
                    // next worker skip it.
                    tracing::warn!("cannot acknowledge the task: {error}");
                }
                Handled::Done(Box::new(task.batch), Driven::Settled(outcome))
            }
            Ran::Stopped => requeue(&delivery).await,
            Ran::Unknown(reason) => refuse(&delivery, shared, &message_id, &reason).await,
        }
    }
    .instrument(span.clone())
    .await
}

/// How a task's run ended.
enum Ran {
    /// The batch is settled in the log: ack.
    Settled(BatchOutcome),
    /// Stopping, or the store keeps failing: back to the queue.
    Stopped,
    /// The log does not know the batch, or its run panicked: to the dead queue.
    Unknown(String),
}

/// How long a task whose log cannot be opened waits before going back to the queue.
const REQUEUE_AFTER: Duration = Duration::from_secs(5);

/// Hands the task back to the queue, for this worker or another.
async fn requeue(delivery: &Delivery) -> Handled {
    let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
    Handled::Requeued
}

/// The id of the key that signed the task, `None` for an unsigned task
/// this worker may run; or why the task is refused.
async fn check_signature(delivery: &Delivery, shared: &Shared) -> Result<Option<String>, String> {
    let signature = header(delivery, SIGNATURE_HEADER);
    let key_id = header(delivery, KEY_ID_HEADER);
    let mut keys = shared.keys.lock().await;
    if keys.is_empty() && shared.insecure_unsigned_tasks {
        return Ok(None);
    }
    match verify(&keys, &delivery.data, signature, key_id) {
        Ok(id) => Ok(Some(id)),
        Err(Unsigned::Missing) if shared.insecure_unsigned_tasks => Ok(None),
        Err(Unsigned::Missing) => Err(Unsigned::Missing.to_string()),
        Err(_) => {
            // A key added to the worker's key files since it started: read
            // them again (keeping the keys in hand if they cannot be read).
            if let Ok(reloaded) = shared.key_sources.load() {
                *keys = reloaded;
            }
            verify(&keys, &delivery.data, signature, key_id).map(Some).map_err(|bad| bad.to_string())
        }
    }
}

/// Why a task's pipeline could not be loaded.
enum Unloadable {
    /// The task does not match what this worker may run: no other try
    /// will help.
    Pipeline(String),
    /// The checkpoint log cannot be read now.
    Log(String),
}

/// The pipeline `task` names, from this worker's own files, loaded once
/// per worker with its log open.
async fn load(shared: &Shared, task: &Task) -> Result<Loaded, Unloadable> {
    let entry = shared.catalogue.lock().await.find(&task.pipeline, &task.sha256).await.map_err(Unloadable::Pipeline)?;
    let key = (task.pipeline.clone(), task.sha256.to_ascii_lowercase());
    let mut loaded = shared.loaded.lock().await;
    if let Some(found) = loaded.get_mut(&key) {
        // Rotated credentials in secret files are used from this batch on.
        found.spec = crate::with_fresh_secrets(found.spec.clone());
        return Ok(found.clone());
    }
    let file = SpecFile::new(entry.path.clone(), entry.text.clone());
    let spec = sluice_engine::spec::parse(file, &Registry).map_err(|problems| {
        Unloadable::Pipeline(format!("its pipeline {} does not load here:\n{problems}", entry.path.display()))
    })?;
    logging::redact_with(spec.file.clone());
    let log = CheckpointLog::open(&spec.checkpoint, &spec.name).await.map_err(|e| {
        let message = format!("cannot open the checkpoint log: {}", spec.file.redact(&e.to_string()));
        if e.is_retryable() { Unloadable::Log(message) } else { Unloadable::Pipeline(message) }
    })?;
    metrics::register(spec.name.as_str());
    let found = Loaded { spec: Arc::new(spec), log: Arc::new(Mutex::new(log)) };
    loaded.insert(key, found.clone());
    Ok(found)
}

/// The batch `task` names as this pipeline's log planned it: the task
/// must name a batch the log knows, with the same inputs.
async fn planned_batch(loaded: &Loaded, task: &Task) -> Result<sluice_engine::batch::Batch, Unloadable> {
    let mut log = loaded.log.lock().await;
    log.refresh().await.map_err(|e| {
        let message = format!("cannot read the checkpoint log: {}", loaded.spec.file.redact(&e.to_string()));
        if e.is_retryable() { Unloadable::Log(message) } else { Unloadable::Pipeline(message) }
    })?;
    let Some(entry) = log.state().batch(&task.batch.id) else {
        return Err(Unloadable::Pipeline(format!(
            "batch {} is not in the checkpoint log at {} of this worker's pipeline {}; does this worker see the \
             controller's storage at the same path?",
            task.batch.id, loaded.spec.checkpoint, loaded.spec.name
        )));
    };
    let planned = entry.batch();
    if planned.inputs != task.batch.inputs || planned.stream != task.batch.stream {
        return Err(Unloadable::Pipeline(format!(
            "the task's inputs are not those the log planned for batch {}: {} files in the task, {} planned",
            task.batch.id,
            task.batch.inputs.len(),
            planned.inputs.len()
        )));
    }
    Ok(planned)
}

/// Moves the task to the dead queue, the reason in a header and in the
/// worker's log.
async fn refuse(delivery: &Delivery, shared: &Shared, message_id: &str, reason: &str) -> Handled {
    tracing::error!(
        message_id,
        redelivered = delivery.redelivered,
        "refused a task; it goes to the queue {}: {reason}",
        dead_queue(shared.queue.name())
    );
    metrics::task_refused();
    shared.queue.refuse(delivery, reason).await;
    Handled::Rejected
}

/// Whether the log has never heard of batch `id`: not in its state, and
/// it has let no committed batch go (a batch sealed or forgotten is one
/// that committed long ago, whose task came again).
fn unknown_to(log: &CheckpointLog, id: &BatchId) -> bool {
    let state = log.state();
    state.batch(id).is_none() && !state.let_committed_go()
}
