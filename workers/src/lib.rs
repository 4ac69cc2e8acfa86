//! The runtime of sluice: the worker that runs one batch, the controller
//! that finds work and runs it or hands it out over AMQP, the `sluice
//! worker` that takes it from there, and the commands of the `sluice`
//! binary.

pub mod catalogue;
mod changes;
pub mod cli;
pub mod consumer;
pub mod controller;
mod dispatch;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod progress;
pub mod status;
mod stream;
pub mod task_keys;
pub mod tasks;
mod wake;
pub mod worker;

use std::path::Path;

use sluice_connectors::Registry;
use sluice_engine::spec::{Diagnostics, PipelineSpec};

/// Reads, checks and builds the pipeline in the file at `path`; from then
/// on the logs never show the values it took from the environment.
pub fn load_pipeline(path: &Path) -> Result<PipelineSpec, Diagnostics> {
    let spec = sluice_engine::spec::load(path, &Registry)?;
    logging::redact_with(spec.file.clone());
    Ok(spec)
}
