//! `sluice run` of a stream source (`kafka`, `amqp`): reads micro-batches,
//! plans each as a batch that names exactly its messages, runs and commits
//! it in this process, and only then acknowledges the messages to the
//! broker.
//!
//! ```text
//! start: refresh log ─► finish cut-short publishes ─► batches a crash left planned:
//!          kafka: read their ranges again and run them    amqp: abandon (the broker delivers them again)
//!        open the reader at the log's positions ─► log: started{partitions new to the log}
//! loop:  reader.next() ─► drop redeliveries of committed messages ─► log: planned{ranges | ids}
//!          ─► lease ─► stage ─► log: committed{positions} ─► publish ─► reader.settle() (ack, group offsets)
//!        refused plan (another run was first) ─► reader.release(): read on from the log's positions
//!        --until-caught-up: the reader says when what the broker held at start is read
//! ```
//!
//! A crash anywhere leaves the log consistent: a Kafka batch planned and
//! not committed is the same offset range on the next run, read again; an
//! AMQP batch's messages were never acknowledged, so the broker delivers
//! them again, and those of them a commit already holds are recognised by
//! their `message_id` and not written twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sluice_engine::batch::{Batch, BatchId};
use sluice_engine::log::CheckpointLog;
use sluice_engine::retry::Backoff;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::stream::{Message, ReadMode, StreamInputs, StreamReader, StreamSource};
use sluice_engine::txn::{self, Fresh, Terms, batches_redelivered, drop_redeliveries, is_orphaned};
use sluice_engine::{Error, Result};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use super::options::{RunOptions, RunSummary};
use super::pass::{failed_in_log, replay_publishes};
use crate::drive::{Driven, Driver, pause};
use crate::metrics;
use crate::worker::{BatchOutcome, Runner, batch_span};

/// How often the lag gauge asks the broker how far behind the log is.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How one batch's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its output is committed, by this run or another.
    Committed,
    /// It used up its attempts and waits for `sluice retry`.
    Failed,
    /// It will never be committed (another run abandoned it).
    Abandoned,
    /// Its messages went back to the broker: it failed or was abandoned,
    /// and cannot be read again.
    HandedBack,
    /// The run was told to stop first.
    Stopped,
}

/// Reads, plans, runs and acknowledges micro-batches until caught up (with
/// the option) or stopped; the batch in hand when told to stop is finished.
pub(super) async fn run(
    spec: Arc<PipelineSpec>,
    options: RunOptions,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<CheckpointLog>>,
) -> Result<RunSummary> {
    let source =
        spec.source.stream().cloned().ok_or_else(|| Error::Config("the pipeline's source is not a stream".into()))?;
    let owner = Runner::here();
    let mut run = StreamRun {
        spec: spec.clone(),
        log: log.clone(),
        owner,
        summary: RunSummary::default(),
        options: options.clone(),
    };
    {
        let mut log = log.lock().await;
        log.refresh().await?;
        replay_publishes(&spec, &log).await?;
    }
    if run.recover(&mut stop).await? == Ended::Stopped {
        return run.finish().await;
    }
    let mode = if options.until_caught_up { ReadMode::UntilCaughtUp } else { ReadMode::Follow };
    let limits = spec.trigger.micro_batch();
    let mut reader: Option<Box<dyn StreamReader>> = None;
    let mut broker_failures = 0;
    // The first look at the lag waits as long as the later ones: a short
    // run until caught up does not pay a broker round trip for a gauge.
    let mut lag_checked = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let open = match reader.as_mut() {
            Some(open) => open,
            None => match run.open(source.as_ref(), mode).await {
                Ok(opened) => reader.insert(opened),
                Err(error) => {
                    if !run.wait_out(error, &mut broker_failures, &mut stop).await? {
                        break;
                    }
                    continue;
                }
            },
        };
        let next = tokio::select! {
            next = open.next(&limits) => next,
            _ = stop.changed() => break,
        };
        let messages = match next {
            Ok(Some(messages)) => messages,
            Ok(None) => break,
            Err(error) => {
                reader = None;
                if !run.wait_out(error, &mut broker_failures, &mut stop).await? {
                    break;
                }
                continue;
            }
        };
        broker_failures = 0;
        let ended = match run.plan_and_run(open.as_mut(), messages, &mut stop).await {
            Ok(ended) => ended,
            Err(error) => {
                // The broker or the log failed around the batch: whatever was
                // not acknowledged is read again after reconnecting.
                reader = None;
                if !run.wait_out(error, &mut broker_failures, &mut stop).await? {
                    break;
                }
                continue;
            }
        };
        if lag_checked.elapsed() >= LAG_EVERY {
            lag_checked = Instant::now();
            run.report_lag(source.as_ref()).await;
            run.finish_publishes().await;
        }
        match ended {
            Ended::Committed | Ended::Failed | Ended::Abandoned => {}
            Ended::Stopped => break,
            Ended::HandedBack if options.until_caught_up => break,
            Ended::HandedBack => {
                // The messages are back in the queue: give the cause time.
                if !pause(Backoff::ATTEMPTS.wait(spec.max_attempts), &mut stop).await {
                    break;
                }
            }
        }
    }
    run.finish().await
}

/// What one run of a stream pipeline holds.
struct StreamRun {
    spec: Arc<PipelineSpec>,
    log: Arc<Mutex<CheckpointLog>>,
    owner: Runner,
    summary: RunSummary,
    options: RunOptions,
}

impl StreamRun {
    async fn finish(mut self) -> Result<RunSummary> {
        self.finish_publishes().await;
        self.summary.failed_in_log = failed_in_log(&self.log).await;
        Ok(self.summary)
    }

    /// Publishes what committed batches could not (their sink was down for
    /// a moment): the messages that made them are acknowledged already.
    async fn finish_publishes(&self) {
        let log = self.log.lock().await;
        if let Err(error) = replay_publishes(&self.spec, &log).await {
            tracing::warn!(
                pipeline = %self.spec.name,
                "committed batches wait to be published, tried again later: {}", self.spec.file.redact(&error.to_string())
            );
        }
    }

    /// Waits out a failure of the broker or the log: `Ok(true)` to go on,
    /// `Ok(false)` when stopped meanwhile; the error itself when it cannot
    /// be waited out, or a run until caught up met it too often.
    async fn wait_out(&self, error: Error, failures: &mut u32, stop: &mut watch::Receiver<bool>) -> Result<bool> {
        *failures += 1;
        let policy = Backoff::for_run(self.options.until_caught_up);
        if !error.is_retryable() || policy.exhausted(*failures) {
            return Err(error);
        }
        let wait = policy.wait(*failures);
        tracing::warn!(
            pipeline = %self.spec.name,
            "reading the stream again in {wait:?}: {}", self.spec.file.redact(&error.to_string())
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(true),
            _ = stop.changed() => Ok(false),
        }
    }

    /// Opens the reader at the log's positions, and records where the
    /// partitions new to the log begin.
    async fn open(&self, source: &dyn StreamSource, mode: ReadMode) -> Result<Box<dyn StreamReader>> {
        // Nothing else of this run needs the log meanwhile: it is held, not
        // copied, while the reader opens.
        let mut log = self.log.lock().await;
        log.refresh().await?;
        let mut reader = source.open(log.state().positions(), mode).await?;
        let partitions = reader.starts();
        if !partitions.is_empty() {
            tracing::info!(
                pipeline = %self.spec.name,
                "partitions new to the log begin at {}",
                partitions.iter().map(|p| format!("{}/{}@{}", p.topic, p.partition, p.offset)).collect::<Vec<_>>().join(", ")
            );
            txn::start(&mut log, partitions, Utc::now()).await?;
            // Another run may have recorded its start first: the log's holds.
            reader.release(log.state().positions()).await?;
        }
        Ok(reader)
    }

    /// Finishes what a crash left planned: Kafka batches are read again and
    /// run; AMQP batches nobody holds are abandoned, since their messages
    /// were never acknowledged and the broker delivers them again.
    async fn recover(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Ended> {
        let pending: Vec<Batch> = self.log.lock().await.state().pending();
        for batch in pending {
            let Some(inputs) = &batch.stream else { continue };
            if inputs.is_replayable() {
                tracing::info!(
                    pipeline = %self.spec.name, batch_id = %batch.id,
                    "running a batch planned before and not committed, reading {} again", inputs.describe()
                );
                if self.run_to_end(&batch, None, stop).await? == Ended::Stopped {
                    return Ok(Ended::Stopped);
                }
            } else {
                self.abandon_unless_held(&batch).await?;
            }
        }
        Ok(Ended::Committed)
    }

    /// Abandons an AMQP batch unless another run holds it (a live lease, or
    /// planned so recently that its lease may not be written yet).
    async fn abandon_unless_held(&self, batch: &Batch) -> Result<()> {
        let mut log = self.log.lock().await;
        let now = Utc::now();
        let grace = Terms::of(&self.spec).lease_for;
        if !log.state().batch(&batch.id).is_some_and(|entry| is_orphaned(entry, now, grace)) {
            return Ok(());
        }
        let reason =
            "its messages were never acknowledged: the broker delivers them again, and they are planned afresh";
        tracing::info!(pipeline = %self.spec.name, batch_id = %batch.id, "batch abandoned: {reason}");
        txn::abandon(&mut log, &batch.id, reason, now).await?;
        Ok(())
    }

    /// Plans the micro-batch `messages`, runs it, and settles or releases
    /// it with the reader.
    async fn plan_and_run(
        &mut self,
        reader: &mut dyn StreamReader,
        messages: Vec<Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended> {
        let fresh = self.take_back(messages).await?;
        if fresh.duplicates > 0 {
            self.summary.duplicates += fresh.duplicates;
            tracing::info!(
                pipeline = %self.spec.name,
                "{} redelivered messages are in a committed batch already: acknowledged, not written again",
                fresh.duplicates
            );
        }
        let Some(inputs) = StreamInputs::of(&fresh.messages) else {
            reader.settle().await?;
            return Ok(Ended::Committed);
        };
        let batch = Batch {
            id: BatchId::derive_stream(&self.spec.name, self.spec.version, &inputs),
            inputs: Vec::new(),
            stream: Some(inputs),
        };
        let span = batch_span(&self.spec, &batch, &self.owner.owner);
        if !self.plan(&batch).instrument(span.clone()).await? {
            let log = self.log.lock().await;
            reader.release(log.state().positions()).await?;
            return Ok(Ended::Committed);
        }
        let in_hand: Arc<[Message]> = fresh.messages.into();
        let ended = self.run_to_end(&batch, Some(in_hand), stop).instrument(span).await?;
        let replayable = batch.stream.as_ref().is_some_and(StreamInputs::is_replayable);
        match ended {
            Ended::Committed => reader.settle().await?,
            // The range waits in the log for `sluice retry`; the stream moves on.
            Ended::Failed if replayable => reader.settle().await?,
            Ended::Failed | Ended::HandedBack => {
                // Its messages go back to the queue, and the batch is done
                // with: they come back in a batch of their own.
                let mut log = self.log.lock().await;
                let reason = format!(
                    "failed {} times; its messages went back to the queue: {}",
                    self.spec.max_attempts,
                    log.state().batch(&batch.id).and_then(|entry| entry.last_error.clone()).unwrap_or_default()
                );
                txn::abandon(&mut log, &batch.id, &reason, Utc::now()).await?;
                reader.release(log.state().positions()).await?;
                return Ok(Ended::HandedBack);
            }
            // Another run took its messages over.
            Ended::Abandoned => {
                let log = self.log.lock().await;
                reader.release(log.state().positions()).await?;
            }
            Ended::Stopped => {
                let mut log = self.log.lock().await;
                if !replayable {
                    let reason = "the run stopped before it committed; its messages went back to the queue";
                    txn::abandon(&mut log, &batch.id, reason, Utc::now()).await?;
                }
                reader.release(log.state().positions()).await?;
            }
        }
        Ok(ended)
    }

    /// The micro-batch without the redelivered messages a commit holds
    /// already. A batch not yet settled that holds some of the others is
    /// abandoned first: the broker delivered its messages again, so the run
    /// that read them is gone (or cut off from the broker), and its commit
    /// must not land beside this one's. If it committed first, those
    /// messages are redeliveries too.
    async fn take_back(&self, messages: Vec<Message>) -> Result<Fresh> {
        let mut log = self.log.lock().await;
        log.refresh().await?;
        let mut fresh = drop_redeliveries(log.state(), messages);
        loop {
            let held = batches_redelivered(log.state(), &fresh.messages);
            if held.is_empty() {
                return Ok(fresh);
            }
            for batch_id in held {
                let reason = "its messages were delivered again, to another run: the run that read them is gone";
                tracing::info!(pipeline = %self.spec.name, %batch_id, "batch abandoned: {reason}");
                txn::abandon(&mut log, &batch_id, reason, Utc::now()).await?;
            }
            // Any of them that committed first holds redeliveries.
            let more = drop_redeliveries(log.state(), fresh.messages);
            fresh = Fresh { messages: more.messages, duplicates: fresh.duplicates + more.duplicates };
        }
    }

    /// Appends the batch's planned record (write-ahead): false if the log
    /// refuses it, because another run planned these messages first.
    async fn plan(&self, batch: &Batch) -> Result<bool> {
        let mut log = self.log.lock().await;
        super::pass::seal_committed(&self.spec, &mut log, &Default::default()).await?;
        txn::plan_stream(&mut log, &self.spec.name, self.spec.version, batch, Utc::now()).await
    }

    /// Runs `batch` until it is committed, failed for good, abandoned, or
    /// the run is stopped: the one drive loop, trying attempts that end in
    /// an error again with backoff.
    async fn run_to_end(
        &mut self,
        batch: &Batch,
        in_hand: Option<Arc<[Message]>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended> {
        // Rotated credentials in secret files are used from this batch on
        // (the broker connection keeps those it opened with).
        self.spec = crate::with_fresh_secrets(self.spec.clone());
        let spec = self.spec.clone();
        let driver = Driver {
            spec: spec.clone(),
            log: self.log.clone(),
            runner: self.owner.clone(),
            errors: Backoff::for_run(self.options.until_caught_up),
            retry_any_error: false,
            refresh: false,
            wait_for_holder: true,
        };
        let driven = driver.drive(batch, in_hand, stop).await;
        self.summary.add(batch, &driven);
        Ok(match driven {
            Driven::Settled(BatchOutcome::Committed { rows_in, rows_out, rows_dead_lettered }) => {
                let messages = batch.stream.as_ref().map_or(0, StreamInputs::messages);
                tracing::info!(
                    pipeline = %spec.name, batch_id = %batch.id, inputs = %batch.describe_inputs(),
                    messages, rows_in, rows_out, rows_dead_lettered, "batch committed"
                );
                Ended::Committed
            }
            Driven::Settled(BatchOutcome::Failed { error, .. }) => {
                let what = if batch.stream.as_ref().is_some_and(StreamInputs::is_replayable) {
                    "waits for `sluice retry`, which reads its records again"
                } else {
                    "gave its messages back to the queue"
                };
                tracing::error!(
                    pipeline = %spec.name, batch_id = %batch.id, inputs = %batch.describe_inputs(),
                    "batch failed {} times and {what}: {error}", spec.max_attempts
                );
                Ended::Failed
            }
            Driven::Settled(BatchOutcome::Abandoned { .. }) => Ended::Abandoned,
            Driven::Settled(BatchOutcome::Settled) => Ended::Failed,
            Driven::Settled(_) => Ended::Committed,
            Driven::Busy { .. } | Driven::Stopped => Ended::Stopped,
            Driven::Unrun(error) => return Err(error),
        })
    }

    /// Sets the gauges: batches pending, and messages on the broker no
    /// batch holds yet.
    async fn report_lag(&self, source: &dyn StreamSource) {
        let log = self.log.lock().await;
        match source.lag(log.state().positions()).await {
            Ok(lag) => metrics::backlog(self.spec.name.as_str(), log.state().pending().len(), lag as usize),
            Err(error) => tracing::debug!("cannot read the lag: {error}"),
        }
    }
}
