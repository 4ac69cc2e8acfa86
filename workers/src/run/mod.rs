//! `sluice run`: finds new input, plans it into batches (write-ahead),
//! and runs them until caught up or until told to stop. Where the batches
//! run is the run mode's: in this process ([`local`]), on `sluice
//! worker`s through a task queue ([`dispatch`]), or as micro-batches of a
//! stream ([`stream`]). Any number of runs may run the same pipeline:
//! leases in the log share the batches out.

#[cfg(feature = "amqp")]
mod dispatch;
mod local;
mod options;
mod pass;
mod stream;

use std::sync::Arc;

use sluice_engine::Result;
use sluice_engine::log::CheckpointLog;
use sluice_engine::spec::PipelineSpec;
use tokio::sync::{Mutex, watch};

pub use options::{RunOptions, RunSummary, elapsed_since};
pub use pass::replay_publishes;

use crate::metrics;
use crate::wake::Wake;

/// Runs the pipeline until caught up (with the option) or until `stop`
/// turns true; the batches in hand when it does are finished first. With
/// `[workers] dispatch`, the batches go to `sluice worker`s instead.
pub async fn run(spec: Arc<PipelineSpec>, options: RunOptions, stop: watch::Receiver<bool>) -> Result<RunSummary> {
    metrics::register(spec.name.as_str());
    let log = Arc::new(Mutex::new(CheckpointLog::open(&spec.checkpoint, &spec.name).await?));
    if spec.source.stream().is_some() {
        return stream::run(spec, options, stop, log).await;
    }
    // A controller that runs until stopped sleeps until its source changes.
    let wake = Wake::new(&spec, !options.until_caught_up)?;
    match spec.dispatch.clone() {
        #[cfg(feature = "amqp")]
        Some(dispatch) => dispatch::run(spec, options, stop, log, wake, &dispatch).await,
        #[cfg(not(feature = "amqp"))]
        Some(_) => Err(sluice_engine::Error::Config(
            "[workers] dispatch hands batches out over AMQP, and this sluice is built without it; use a sluice \
             built with the cargo feature `amqp` (on by default), or remove [workers] dispatch to run here"
                .into(),
        )),
        None => local::run(spec, options, stop, log, wake).await,
    }
}
