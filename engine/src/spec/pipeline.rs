//! What reading a pipeline file gives: the pipeline, checked and with
//! its connectors built, and the registry that builds them.

use std::sync::Arc;

use super::diag::{Diagnostic, Diagnostics, SpecFile};
use super::keys::locate_key;
use super::raw::Component;
use super::sections::TriggerSpec;
use crate::batch::PipelineName;
use crate::sink::Sink;
use crate::source::SourceConnector;
use crate::storage::StorageLocation;

/// Builds sources and sinks from their tables, by `type`. Building checks
/// and never connects: a broker is reached once the pipeline runs.
pub trait ConnectorRegistry {
    /// The source that `component` (the `[source]` table) describes.
    fn source(&self, component: &Component<'_>) -> Result<SourceConnector, Diagnostics>;
    /// The sink that `component` (the `[sink]` table) describes;
    /// `checkpoint` is `[checkpoint] url` when the file sets it (a sink
    /// without a folder of its own stages its output there).
    fn sink(
        &self,
        component: &Component<'_>,
        checkpoint: Option<&StorageLocation>,
    ) -> Result<Arc<dyn Sink>, Diagnostics>;
    /// The sink of dead letters at `location`: NDJSON files.
    fn dead_letters(&self, location: &StorageLocation) -> Result<Arc<dyn Sink>, String>;
    /// Whether the source `type` is a stream, read in micro-batches.
    fn is_stream(&self, kind: &str) -> bool;
    /// A lookup table `[tables.NAME]`: files, read as a `files` source
    /// reads them (`component.kind()` is `files`).
    fn table(&self, component: &Component<'_>) -> Result<Arc<dyn crate::source::Source>, Diagnostics>;
}

/// `[workers] dispatch`: batches go as tasks to a queue on a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The broker, `amqp://` or `amqps://` (may hold a password).
    pub url: String,
    /// `[workers] task_queue`.
    pub queue: String,
}

/// A pipeline, read, checked and with its connectors built.
#[derive(Debug)]
pub struct PipelineSpec {
    /// The file it was read from.
    pub file: Arc<SpecFile>,
    /// `[pipeline] name`.
    pub name: PipelineName,
    /// `[pipeline] version`.
    pub version: u32,
    /// `[source]`.
    pub source: SourceConnector,
    /// `[trigger]`.
    pub trigger: TriggerSpec,
    /// `[transform] sql`.
    pub sql: Option<String>,
    /// `[sink]`.
    pub sink: Arc<dyn Sink>,
    /// `[checkpoint] url`, resolved.
    pub checkpoint: StorageLocation,
    /// `[workers] concurrency`, resolved.
    pub concurrency: usize,
    /// `[workers] max_attempts`.
    pub max_attempts: u32,
    /// `[workers] lease_timeout`.
    pub lease_timeout: std::time::Duration,
    /// `[workers] dispatch` and `task_queue`: `None` runs batches in the
    /// controller's process.
    pub dispatch: Option<Dispatch>,
    /// `[dead_letter] url`, resolved.
    pub dead_letter: StorageLocation,
    /// `[dead_letter] max_records`: a batch with more dead letters fails.
    pub dead_letter_max_records: u64,
    /// Where malformed records go, with the same staging and publishing
    /// as outputs.
    pub dead_letters: Arc<dyn Sink>,
    /// `[tables.NAME]`: lookup tables registered beside `input`.
    pub tables: Vec<crate::lookup::LookupTable>,
    pub(super) sql_span: std::ops::Range<usize>,
}

impl PipelineSpec {
    /// A problem with the transform's SQL, pointing at `transform.sql`.
    pub fn sql_diagnostic(&self, message: impl AsRef<str>, hint: Option<String>) -> Diagnostic {
        self.file.diagnostic(self.sql_span.clone(), "transform.sql", message, hint)
    }

    /// A problem with the pipeline as a whole, pointing at `section`.
    pub fn diagnostic(&self, key_path: &str, message: impl AsRef<str>, hint: Option<String>) -> Diagnostic {
        let span = locate_key(self.file.text(), key_path);
        self.file.diagnostic(span, key_path, message, hint)
    }
}
