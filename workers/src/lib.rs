//! The runtime of sluice: the worker that runs one batch, the controller
//! that finds work and runs it or hands it out over AMQP, the `sluice
//! worker` that takes it from there, and the commands of the `sluice`
//! binary.

pub mod catalogue;
pub mod cli;
#[cfg(feature = "amqp")]
pub mod consumer;
pub mod drive;
pub mod exit;
mod expected;
mod lease;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod pipeline_tests;
mod produce;
pub mod progress;
pub mod report;
pub mod run;
pub mod task_keys;
#[cfg(feature = "amqp")]
pub mod tasks;
pub mod traces;
mod wake;
pub mod worker;

use std::path::Path;
use std::sync::Arc;

use sluice_connectors::Registry;
use sluice_engine::spec::{Diagnostics, PipelineSpec, SpecFile};

/// Reads, checks and builds the pipeline in the file at `path`; from then
/// on the logs never show the values it took from the environment.
pub fn load_pipeline(path: &Path) -> Result<PipelineSpec, Diagnostics> {
    let spec = sluice_engine::spec::load(path, &Registry)?;
    logging::redact_with(spec.file.clone());
    Ok(spec)
}

/// `spec` built again from its text when a file one of its `${file:PATH}`
/// placeholders read has changed since (a rotated credential); `spec`
/// itself otherwise, or if the new values do not load. The text stays the
/// one first read, so a task's SHA-256 still names it.
pub fn with_fresh_secrets(spec: Arc<PipelineSpec>) -> Arc<PipelineSpec> {
    if !spec.file.secret_files_changed() {
        return spec;
    }
    let file = SpecFile::new(spec.file.path(), spec.file.text());
    match sluice_engine::spec::parse(file, &Registry) {
        Ok(fresh) if fresh.checkpoint.to_string() == spec.checkpoint.to_string() => {
            logging::redact_with(fresh.file.clone());
            tracing::info!(pipeline = %spec.name, "a secret file changed: the pipeline's settings are read again");
            Arc::new(fresh)
        }
        Ok(_) => {
            tracing::warn!(
                pipeline = %spec.name,
                "a secret file changed the checkpoint's location; the old settings stay until a restart"
            );
            spec
        }
        Err(problems) => {
            tracing::warn!(
                pipeline = %spec.name,
                "a secret file changed and the pipeline no longer loads; the old settings stay:\n{problems}"
            );
            spec
        }
    }
}
