//! The pipeline file: one TOML file a pipeline, read strictly.
//!
//! Reading happens in two stages. This module reads the file into a tree
//! that keeps the position of every key, substitutes `${env:NAME}`, and
//! reads the engine's own tables (`[pipeline]`, `[trigger]`,
//! `[transform]`, `[checkpoint]`, `[workers]`,
//! `[dead_letter]`). `[source]` and `[sink]`
//! are handed as `type` + raw table ([`Component`]) to a
//! [`ConnectorRegistry`], which reads them into the connector's own
//! config. Every problem found on the way is collected, each with
//! `FILE:LINE:COL` and its key path.

mod diag;
mod raw;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use diag::{Diagnostic, Diagnostics, SpecFile, closest};
pub use raw::Component;
use raw::{RawValue, parse_table, substitute_env, unknown_keys};

use crate::batch::PipelineName;
use crate::planner::BatchLimits;
use crate::sink::Sink;
use crate::source::SourceConnector;
use crate::storage::{StorageLocation, StorageOptions};
use crate::stream::MicroBatchLimits;
use crate::units::{ByteSize, HumanDuration};

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

/// The tables a pipeline file may have.
pub const SECTIONS: &[&str] = &[
    "pipeline",
    "source",
    "tables",
    "trigger",
    "transform",
    "sink",
    "checkpoint",
    "workers",
    "dead_letter",
    "storage",
    "test",
];

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSection {
    /// The pipeline's name, `[a-z0-9_-]+`; part of every batch id.
    name: Spanned<String>,
    /// The pipeline's version; part of every batch id.
    #[serde(default = "default_version")]
    version: Spanned<u32>,
}

fn default_version() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// `[trigger]`: when to look for new input and how to cut it into batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// How often `sluice run` lists a source it cannot watch for new input.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// How often `sluice run` lists a watched source (a local folder, or a
    /// bucket with `notifications`) anyway, in case a notification was missed.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval: HumanDuration,
    /// `amqp://USER:PASSWORD@HOST:5672/VHOST/QUEUE`: a queue of bucket
    /// notifications (S3 event JSON) from which `sluice run` plans new
    /// objects without listing the source.
    pub notifications: Option<Spanned<String>>,
    /// Most input files in one batch.
    #[serde(default = "default_max_files_per_batch")]
    pub max_files_per_batch: usize,
    /// Most input bytes in one batch; a larger file is a batch of its own.
    #[serde(default = "default_max_bytes_per_batch")]
    pub max_bytes_per_batch: ByteSize,
    /// Streams: most messages in one micro-batch.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Streams: longest a micro-batch stays open after its first message.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
    /// Streams: most payload bytes in one micro-batch.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

/// `[trigger]` keys that apply to files sources only.
const OBJECT_TRIGGER_KEYS: &[&str] =
    &["poll_interval", "reconcile_interval", "max_files_per_batch", "max_bytes_per_batch", "notifications"];
/// `[trigger]` keys that apply to stream sources only.
const STREAM_TRIGGER_KEYS: &[&str] = &["max_records", "max_wait", "max_bytes"];

fn default_max_records() -> usize {
    10_000
}

fn default_max_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_reconcile_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

fn default_max_files_per_batch() -> usize {
    16
}

fn default_max_bytes_per_batch() -> ByteSize {
    ByteSize(256 << 20)
}

impl TriggerSpec {
    /// The planner's limits.
    pub fn limits(&self) -> BatchLimits {
        BatchLimits { max_files: self.max_files_per_batch, max_bytes: self.max_bytes_per_batch.0 }
    }

    /// `notifications`: where bucket notifications are read from.
    pub fn notification_queue(&self) -> Option<NotificationQueue> {
        self.notifications.as_ref().and_then(|url| NotificationQueue::parse(url.get_ref()).ok())
    }

    /// When a stream's micro-batch closes.
    pub fn micro_batch(&self) -> MicroBatchLimits {
        MicroBatchLimits { max_records: self.max_records, max_wait: self.max_wait.0, max_bytes: self.max_bytes.0 }
    }
}

/// `[transform]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformSection {
    /// DataFusion SQL over the table `input`; all rows as they are when absent.
    sql: Option<Spanned<String>>,
}

/// `[checkpoint]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointSection {
    /// Where the checkpoint log lives; default `<sink url>/_sluice`.
    url: Option<Spanned<String>>,
}

/// `[workers]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkersSection {
    /// Batches run at once, and threads per batch; default: the number of cores.
    concurrency: Option<Spanned<usize>>,
    /// Attempts that end in an error before a batch is recorded as failed.
    max_attempts: Option<Spanned<u32>>,
    /// How long a claim on a batch lasts unless renewed: a worker that
    /// dies holds its batch this long before another takes it over.
    lease_timeout: Option<Spanned<HumanDuration>>,
    /// `amqp://` URL of a broker: the controller publishes batches there as
    /// tasks for `sluice worker`s instead of running them.
    dispatch: Option<Spanned<String>>,
    /// The queue of those tasks.
    task_queue: Option<Spanned<String>>,
}

/// `[dead_letter]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterSection {
    /// Where malformed records go; default `<checkpoint url>/dead_letters`.
    url: Option<Spanned<String>>,
    /// Most dead letters one batch may set aside; past them it fails.
    max_records: Option<Spanned<u64>>,
}

/// Dead letters one batch may set aside, by default: more than scattered
/// bad records in the largest default batch (256 MiB, some 2.5 million
/// rows of 100 bytes, 4 % of them bad), while a pipeline whose input is
/// wholly unlike it (wrong delimiter, format or schema) stops after tens of
/// megabytes of dead letters instead of one for every row of its input.
pub const DEFAULT_DEAD_LETTER_MAX_RECORDS: u64 = 100_000;

/// Attempts of a batch that may end in an error, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// How long a lease lasts unless renewed, by default.
pub const DEFAULT_LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The shortest `[trigger] poll_interval`: a hundred listings a second at
/// most, so that a typo such as "1ns" cannot turn an idle controller into
/// a loop that lists the source as fast as it can.
pub const MIN_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// The shortest `[trigger] reconcile_interval`: the listing it forces is a
/// safety net for a missed notification, never the way input is found.
pub const MIN_RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// The shortest `[trigger] max_wait`: below a millisecond a micro-batch
/// closes after every message.
pub const MIN_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(1);
/// The shortest `[workers] lease_timeout`: a lease is renewed every third
/// of it, and a renewal is a write to the checkpoint log.
pub const MIN_LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// The task queue that default `[workers] task_queue` names.
pub const DEFAULT_TASK_QUEUE: &str = "sluice.tasks";

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
    sql_span: std::ops::Range<usize>,
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

/// Reads, checks and builds the pipeline in the file at `path`.
pub fn load(path: &Path, registry: &dyn ConnectorRegistry) -> Result<PipelineSpec, Diagnostics> {
    parse(SpecFile::new(path, read(path)?), registry)
}

/// `[pipeline] name` as written in `text`, read without substituting
/// anything: how a worker tells which pipeline a file holds.
pub fn pipeline_name(text: &str) -> Option<String> {
    let root = DeTable::parse(text).ok()?.into_inner();
    match root.get("pipeline")?.get_ref() {
        DeValue::Table(table) => match table.get("name")?.get_ref() {
            DeValue::String(name) => Some(name.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The hex SHA-256 of a pipeline file's text: what a task names, so that
/// a worker runs a batch only with the file it was planned with.
pub fn text_sha256(text: &str) -> String {
    crate::batch::tail_digest(text.as_bytes())
}

/// The text of the pipeline file at `path`: a regular file of at most
/// [`MAX_PIPELINE_FILE_BYTES`], in UTF-8.
pub fn read(path: &Path) -> Result<String, Diagnostics> {
    let unreadable = |message: String, hint: Option<String>| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            key_path: String::new(),
            message,
            hint,
        }])
    };
    // The metadata comes first so that a device, a FIFO or a directory is
    // never opened: reading `/dev/zero` grows without end and opening a
    // FIFO blocks until something writes to it.
    let metadata =
        std::fs::metadata(path).map_err(|e| unreadable(format!("cannot read the pipeline file: {e}"), None))?;
    if !metadata.is_file() {
        return Err(unreadable(
            format!("{} is not a regular file; a pipeline file must be a regular file", path.display()),
            Some("name the .toml file itself, not a directory, device or pipe".into()),
        ));
    }
    if metadata.len() > MAX_PIPELINE_FILE_BYTES {
        return Err(unreadable(
            format!(
                "{} is {} bytes; a pipeline file may be at most 1 MiB ({MAX_PIPELINE_FILE_BYTES} bytes)",
                path.display(),
                metadata.len()
            ),
            None,
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            // The file may have grown since its metadata was read: one byte
            // past the limit is enough to tell.
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PIPELINE_FILE_BYTES + 1), &mut bytes)
        })
        .map_err(|e| unreadable(format!("cannot read the pipeline file: {e}"), None))?;
    if bytes.len() as u64 > MAX_PIPELINE_FILE_BYTES {
        return Err(unreadable(
            format!("{} is over 1 MiB; a pipeline file may be at most 1 MiB", path.display()),
            None,
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        // Point at the first byte that is not UTF-8, counted as the
        // diagnostics count: lines, then characters.
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).unwrap_or_default();
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: valid.matches('\n').count() + 1,
            column: valid[line_start..].chars().count() + 1,
            key_path: String::new(),
            message: "the pipeline file is not valid UTF-8".into(),
            hint: Some("save it as UTF-8 text".into()),
        }])
    })?;
    Ok(text)
}

/// The largest pipeline file `load` reads: far more than any pipeline
/// needs, small enough that a wrong path cannot fill memory.
pub const MAX_PIPELINE_FILE_BYTES: u64 = 1 << 20;

/// Reads, checks and builds the pipeline in `file`.
pub fn parse(file: SpecFile, registry: &dyn ConnectorRegistry) -> Result<PipelineSpec, Diagnostics> {
    let file = Arc::new(file);
    let mut root = match DeTable::parse(file.text()) {
        Ok(root) => root.into_inner(),
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            return Err(Diagnostics(vec![file.diagnostic(span, "", error.message(), None)]));
        }
    };
    let mut problems = unknown_keys(&file, "", &root, SECTIONS);
    problems.extend(substitute_env(&file, &mut root, ""));

    let section = |name: &str| -> Option<RawValue<'_>> { root.get(name).cloned() };
    let empty = || Spanned::new(0..0, DeValue::Table(DeTable::new()));
    if let Some(storage) = section("storage") {
        match storage_options(&file, &storage) {
            Ok(options) => file.set_storage(options),
            Err(found) => problems.extend(found),
        }
    }

    let pipeline: Option<PipelineSection> = match section("pipeline") {
        Some(value) => collect(parse_table(&file, "pipeline", &value), &mut problems),
        None => {
            problems.0.push(file.diagnostic(
                0..0,
                "pipeline",
                "missing table [pipeline]",
                Some("start the file with [pipeline] and name = \"my_pipeline\"".into()),
            ));
            None
        }
    };
    let name = pipeline.as_ref().and_then(|p| {
        PipelineName::new(p.name.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(p.name.span(), "pipeline.name", message, None)))
            .ok()
    });
    if let Some(p) = &pipeline
        && *p.version.get_ref() == 0
    {
        problems.0.push(file.diagnostic(p.version.span(), "pipeline.version", "must be 1 or more", None));
    }

    let trigger: Option<TriggerSpec> =
        collect(parse_table(&file, "trigger", &section("trigger").unwrap_or_else(empty)), &mut problems);
    if let Some(trigger) = &trigger {
        let floors = [
            (
                "trigger.poll_interval",
                trigger.poll_interval.0,
                MIN_POLL_INTERVAL,
                "an idle controller lists the source this often; \"1s\" is the default",
            ),
            (
                "trigger.reconcile_interval",
                trigger.reconcile_interval.0,
                MIN_RECONCILE_INTERVAL,
                "a watched folder is listed this often anyway; \"60s\" is the default",
            ),
            (
                "trigger.max_wait",
                trigger.max_wait.0,
                MIN_MAX_WAIT,
                "a micro-batch stays open this long after its first message; \"1s\" is the default",
            ),
        ];
        for (path, value, floor, hint) in floors {
            if value < floor {
                problems.0.push(file.diagnostic(
                    locate_key(file.text(), path),
                    path,
                    format!("must be at least {}", HumanDuration(floor)),
                    Some(hint.into()),
                ));
            }
        }
        if let Some(url) = &trigger.notifications
            && let Err(message) = NotificationQueue::parse(url.get_ref())
        {
            problems.0.push(
                file.diagnostic(
                    url.span(),
                    "trigger.notifications",
                    message,
                    Some(
                        "write it as amqp://USER:PASSWORD@HOST:5672/%2f/QUEUE (the password as ${env:NAME}) for S3 \
                     events on a broker, or azqueue://ACCOUNT/QUEUE for Event Grid's events on an Azure Storage \
                     queue"
                            .into(),
                    ),
                ),
            );
        }
        if trigger.max_files_per_batch == 0 {
            problems.0.push(file.diagnostic(
                locate_key(file.text(), "trigger.max_files_per_batch"),
                "trigger.max_files_per_batch",
                "must be 1 or more",
                None,
            ));
        }
        if trigger.max_bytes_per_batch.0 == 0 {
            problems.0.push(file.diagnostic(
                locate_key(file.text(), "trigger.max_bytes_per_batch"),
                "trigger.max_bytes_per_batch",
                "must be more than 0 bytes",
                None,
            ));
        }
        let zero_stream_limits = [("max_records", trigger.max_records == 0), ("max_bytes", trigger.max_bytes.0 == 0)];
        for (key, zero) in zero_stream_limits {
            if zero {
                let path = format!("trigger.{key}");
                problems.0.push(file.diagnostic(locate_key(file.text(), &path), &path, "must be more than 0", None));
            }
        }
    }
    let transform: Option<TransformSection> =
        collect(parse_table(&file, "transform", &section("transform").unwrap_or_else(empty)), &mut problems);
    if let Some(sql) = transform.as_ref().and_then(|t| t.sql.as_ref())
        && let Err(message) = crate::sql::check_depth(sql.get_ref())
    {
        problems.0.push(file.diagnostic(
            sql.span(),
            "transform.sql",
            message,
            Some("split the chain into parts, e.g. with parentheses or a subquery".into()),
        ));
    }
    let checkpoint: Option<CheckpointSection> =
        collect(parse_table(&file, "checkpoint", &section("checkpoint").unwrap_or_else(empty)), &mut problems);
    let workers: Option<WorkersSection> =
        collect(parse_table(&file, "workers", &section("workers").unwrap_or_else(empty)), &mut problems);
    let concurrency = match workers.as_ref().and_then(|w| w.concurrency.as_ref()) {
        Some(c) if *c.get_ref() == 0 => {
            problems.0.push(file.diagnostic(c.span(), "workers.concurrency", "must be 1 or more", None));
            1
        }
        Some(c) => *c.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let max_attempts = match workers.as_ref().and_then(|w| w.max_attempts.as_ref()) {
        Some(n) if *n.get_ref() == 0 => {
            problems.0.push(file.diagnostic(n.span(), "workers.max_attempts", "must be 1 or more", None));
            1
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_MAX_ATTEMPTS,
    };
    let lease_timeout = match workers.as_ref().and_then(|w| w.lease_timeout.as_ref()) {
        Some(lease) if lease.get_ref().0 < MIN_LEASE_TIMEOUT => {
            problems.0.push(file.diagnostic(
                lease.span(),
                "workers.lease_timeout",
                format!("must be at least {}", HumanDuration(MIN_LEASE_TIMEOUT)),
                Some("a lease is renewed every third of it; \"30s\" is the default".into()),
            ));
            DEFAULT_LEASE_TIMEOUT
        }
        Some(lease) => lease.get_ref().0,
        None => DEFAULT_LEASE_TIMEOUT,
    };
    let dispatch = workers.as_ref().and_then(|w| {
        let url = w.dispatch.as_ref()?;
        if let Err(message) = check_broker_url(url.get_ref()) {
            problems.0.push(file.diagnostic(
                url.span(),
                "workers.dispatch",
                message,
                Some("write it as amqp://USER:PASSWORD@HOST:5672/%2f, the password as ${env:NAME}".into()),
            ));
        }
        let queue = match &w.task_queue {
            Some(queue) if queue.get_ref().trim().is_empty() => {
                problems.0.push(file.diagnostic(queue.span(), "workers.task_queue", "is empty", None));
                DEFAULT_TASK_QUEUE.to_string()
            }
            Some(queue) => queue.get_ref().clone(),
            None => DEFAULT_TASK_QUEUE.to_string(),
        };
        Some(Dispatch { url: url.get_ref().clone(), queue })
    });
    if let Some(w) = &workers
        && w.dispatch.is_none()
        && let Some(queue) = &w.task_queue
    {
        problems.0.push(file.diagnostic(
            queue.span(),
            "workers.task_queue",
            "has no effect without [workers] dispatch",
            Some("add dispatch = \"amqp://...\" to hand batches to `sluice worker`s, or remove task_queue".into()),
        ));
    }
    let dead_letter: Option<DeadLetterSection> =
        collect(parse_table(&file, "dead_letter", &section("dead_letter").unwrap_or_else(empty)), &mut problems);

    let explicit_checkpoint = checkpoint.as_ref().and_then(|c| c.url.as_ref()).and_then(|url| {
        file.location(url.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(url.span(), "checkpoint.url", message, None)))
            .ok()
    });
    let source_component = component(&file, "source", section("source"), &mut problems);
    let stream = source_component.as_ref().is_some_and(|c| registry.is_stream(c.kind()));
    let source = source_component.and_then(|c| collect(registry.source(&c), &mut problems));
    let sink = component(&file, "sink", section("sink"), &mut problems)
        .and_then(|c| collect(registry.sink(&c, explicit_checkpoint.as_ref()), &mut problems));
    let tables = lookup_tables(&file, section("tables"), registry, &mut problems);
    let trigger_keys: Vec<String> = match section("trigger").as_ref().map(|value| value.get_ref()) {
        Some(DeValue::Table(table)) => table.iter().map(|(key, _)| key.get_ref().to_string()).collect(),
        _ => Vec::new(),
    };
    problems.extend(check_source_kind(&file, stream, &trigger_keys, dispatch.is_some()));

    let checkpoint_location = match checkpoint.as_ref().and_then(|c| c.url.as_ref()) {
        Some(_) => explicit_checkpoint,
        None => sink.as_ref().and_then(|sink| {
            let default = sink.default_checkpoint();
            if default.is_none() {
                problems.0.push(file.diagnostic(
                    0..0,
                    "checkpoint.url",
                    "this sink has no folder to keep the checkpoint log in",
                    Some("add [checkpoint] url = \"<a folder or bucket URL>\"".into()),
                ));
            }
            default
        }),
    };

    let dead_letter_max_records = dead_letter
        .as_ref()
        .and_then(|d| d.max_records.as_ref())
        .map_or(DEFAULT_DEAD_LETTER_MAX_RECORDS, |max| *max.get_ref());
    let dead_letter_location = match dead_letter.as_ref().and_then(|d| d.url.as_ref()) {
        Some(url) => file
            .location(url.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(url.span(), "dead_letter.url", message, None)))
            .ok(),
        None => checkpoint_location.as_ref().map(|checkpoint| checkpoint.join("dead_letters")),
    };
    let dead_letters = dead_letter_location.as_ref().and_then(|location| {
        registry
            .dead_letters(location)
            .map_err(|message| {
                problems.0.push(file.diagnostic(
                    locate_key(file.text(), "dead_letter.url"),
                    "dead_letter.url",
                    message,
                    None,
                ))
            })
            .ok()
    });

    if !problems.is_empty() {
        problems.0.sort_by_key(|problem| (problem.line, problem.column));
        return Err(problems);
    }
    let (
        Some(pipeline),
        Some(name),
        Some(trigger),
        Some(transform),
        Some(source),
        Some(sink),
        Some(checkpoint),
        Some(dead_letter),
        Some(dead_letters),
    ) = (pipeline, name, trigger, transform, source, sink, checkpoint_location, dead_letter_location, dead_letters)
    else {
        unreachable!("every missing part was reported as a problem");
    };
    let (sql, sql_span) = match transform.sql {
        Some(sql) => (Some(sql.get_ref().clone()), sql.span()),
        None => (None, locate_key(file.text(), "transform")),
    };
    Ok(PipelineSpec {
        file,
        name,
        version: *pipeline.version.get_ref(),
        source,
        trigger,
        sql,
        sink,
        checkpoint,
        concurrency,
        max_attempts,
        lease_timeout,
        dispatch,
        dead_letter,
        dead_letter_max_records,
        dead_letters,
        tables,
        sql_span,
    })
}

/// Reads `[tables.NAME]`: each a lookup table of files, its name one the
/// SQL can write unquoted and not `input`.
fn lookup_tables(
    file: &SpecFile,
    value: Option<RawValue<'_>>,
    registry: &dyn ConnectorRegistry,
    problems: &mut Diagnostics,
) -> Vec<crate::lookup::LookupTable> {
    let Some(value) = value else { return Vec::new() };
    let Some(entries) = value.get_ref().as_table() else {
        problems.0.push(file.diagnostic(
            value.span(),
            "tables",
            format!("must be a table of tables, not {}", value.get_ref().type_str()),
            Some("write each as [tables.NAME] with url = \"<folder>\"".into()),
        ));
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (name, table) in entries {
        let key = format!("tables.{}", name.get_ref());
        let valid = name.get_ref().starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid || name.get_ref() == crate::sql::INPUT_TABLE {
            problems.0.push(file.diagnostic(
                name.span(),
                &key,
                "names a lookup table: lower-case letters, digits and `_`, starting with a letter or `_`, and not \
                 `input` (the pipeline's own input)",
                None,
            ));
            continue;
        }
        if table.get_ref().as_table().is_none() {
            problems.0.push(file.diagnostic(
                table.span(),
                &key,
                "must be a table",
                Some(format!("write it as [{key}]")),
            ));
            continue;
        }
        let component = Component::new(key, Spanned::new(name.span(), "files".to_string()), table.clone(), file);
        if let Some(source) = collect(registry.table(&component), problems) {
            tables.push(crate::lookup::LookupTable { name: name.get_ref().to_string(), source });
        }
    }
    tables
}

/// Reads `[storage]`: string, boolean or integer values under the keys of
/// `object_store`'s builders, each key checked.
fn storage_options(file: &SpecFile, value: &RawValue<'_>) -> Result<StorageOptions, Diagnostics> {
    let mut problems = Diagnostics::default();
    let Some(table) = value.get_ref().as_table() else {
        return Err(Diagnostics(vec![file.diagnostic(
            value.span(),
            "storage",
            "must be a table",
            Some("write it as [storage] with keys such as aws_endpoint = \"http://127.0.0.1:9000\"".into()),
        )]));
    };
    let mut options = Vec::new();
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let path = format!("storage.{name}");
        if !StorageOptions::is_known(name) {
            problems.0.push(
                file.diagnostic(
                    key.span(),
                    &path,
                    format!("unknown storage key `{name}`"),
                    Some(
                        "keys are object_store's settings in lower case, e.g. aws_region, aws_endpoint, \
                     aws_allow_http, google_service_account, azure_storage_account_name"
                            .into(),
                    ),
                ),
            );
            continue;
        }
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Boolean(flag) => flag.to_string(),
            DeValue::Integer(number) => number.to_string(),
            other => {
                problems.0.push(file.diagnostic(
                    value.span(),
                    &path,
                    format!("must be a string, a boolean or a number, not {}", other.type_str()),
                    None,
                ));
                continue;
            }
        };
        options.push((name.to_string(), text));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    StorageOptions::new(options)
        .map_err(|message| Diagnostics(vec![file.diagnostic(value.span(), "storage", message, None)]))
}

/// The settings that only make sense for files sources, or only for
/// streams, given to the other kind.
fn check_source_kind(file: &SpecFile, stream: bool, trigger_keys: &[String], dispatch: bool) -> Diagnostics {
    let mut problems = Diagnostics::default();
    let (misplaced, message, hint) = match stream {
        true => (
            OBJECT_TRIGGER_KEYS,
            "applies to files sources only",
            "a stream's micro-batch closes at max_records, max_wait or max_bytes, whichever comes first",
        ),
        false => (
            STREAM_TRIGGER_KEYS,
            "applies to kafka and amqp sources only",
            "a files source's batches are cut by max_files_per_batch and max_bytes_per_batch",
        ),
    };
    for key in trigger_keys.iter().filter(|key| misplaced.contains(&key.as_str())) {
        let path = format!("trigger.{key}");
        problems.0.push(file.diagnostic(locate_key(file.text(), &path), &path, message, Some(hint.to_string())));
    }
    if stream && dispatch {
        problems.0.push(file.diagnostic(
            locate_key(file.text(), "workers.dispatch"),
            "workers.dispatch",
            "a stream source's micro-batches run in the `sluice run` process that reads them",
            Some("remove [workers] dispatch; it hands out batches of files sources to `sluice worker`s".into()),
        ));
    }
    problems
}

/// Checks that `raw` is an AMQP URL; the message never shows the URL,
/// which may hold a password.
pub fn check_broker_url(raw: &str) -> Result<(), String> {
    // A raw `@` in a password ends the user info early: the URL parses, with
    // the rest of the password as its host and path, and is shown that way.
    if raw.split_once("://").is_some_and(|(_, rest)| rest.matches('@').count() > 1) {
        return Err("holds `@` more than once: percent-encode an `@` in the user name or password as %40".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    match url.scheme() {
        "amqp" | "amqps" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "amqp" | "amqps" => Err("names no host".into()),
        other => Err(format!("has the scheme \"{other}\"; only amqp:// and amqps:// brokers can take tasks")),
    }
}

/// Where `[trigger] notifications` are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationQueue {
    /// S3 event JSON on an AMQP queue: the broker's URL (which may hold a
    /// password) and the queue.
    Amqp {
        /// `amqp://...` or `amqps://...`, up to the virtual host.
        url: String,
        /// The queue's name.
        queue: String,
    },
    /// Event Grid's blob events on an Azure Storage queue of `account`,
    /// reached with the credentials of `[storage]` and the `AZURE_*`
    /// variables.
    AzureQueue {
        /// The storage account.
        account: String,
        /// The queue's name.
        queue: String,
    },
}

impl NotificationQueue {
    /// The longest queue name: Azure's limit of 63, less the `-poison`
    /// that names where messages that are not events go.
    pub const MAX_AZURE_QUEUE: usize = 63 - "-poison".len();

    /// Reads `amqp://HOST/VHOST/QUEUE` (or `amqps://`) or
    /// `azqueue://ACCOUNT/QUEUE`; the message never shows the URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(rest) = raw.strip_prefix("azqueue://") else {
            return split_queue_url(raw).map(|(url, queue)| NotificationQueue::Amqp { url, queue });
        };
        let (account, queue) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| "names no queue: write it as azqueue://ACCOUNT/QUEUE".to_string())?;
        let account_ok =
            (3..=24).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !account_ok {
            return Err(format!(
                "names the storage account \"{account}\": an account name is 3 to 24 lower-case letters and digits"
            ));
        }
        let queue_ok = (3..=Self::MAX_AZURE_QUEUE).contains(&queue.len())
            && queue.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !queue.starts_with('-')
            && !queue.ends_with('-')
            && !queue.contains("--");
        if !queue_ok {
            return Err(format!(
                "names the queue \"{queue}\": a queue name is 3 to {} lower-case letters, digits and single \
                 hyphens, starting and ending with a letter or digit (sluice adds -poison for messages that are \
                 not events)",
                Self::MAX_AZURE_QUEUE
            ));
        }
        Ok(NotificationQueue::AzureQueue { account: account.into(), queue: queue.into() })
    }
}

/// Splits `amqp://HOST/VHOST/QUEUE` (or `amqp://HOST/QUEUE`, on the default
/// virtual host) into the broker's URL and the queue's name; the message
/// never shows the URL, which may hold a password.
pub fn split_queue_url(raw: &str) -> Result<(String, String), String> {
    check_broker_url(raw)?;
    let mut url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    let mut segments: Vec<String> =
        url.path_segments().map(|parts| parts.map(str::to_string).collect()).unwrap_or_default();
    let queue = match segments.pop() {
        Some(queue) if !queue.is_empty() => queue,
        _ => return Err("names no queue: the URL's last path segment is the queue".into()),
    };
    let queue = percent_encoding::percent_decode_str(&queue).decode_utf8_lossy().into_owned();
    url.set_path(&segments.join("/"));
    Ok((url.to_string(), queue))
}

/// Keeps the value, or adds the problems to `problems`. An error without
/// any problem in it still counts as one, so that every `None` is reported.
fn collect<T>(result: Result<T, Diagnostics>, problems: &mut Diagnostics) -> Option<T> {
    result
        .map_err(|found| {
            if found.is_empty() {
                problems.0.push(Diagnostic {
                    file: PathBuf::new(),
                    line: 1,
                    column: 1,
                    key_path: String::new(),
                    message: "a connector refused its table without saying why (a bug in sluice)".into(),
                    hint: None,
                });
            }
            problems.extend(found);
        })
        .ok()
}

/// Splits a `[source]`/`[sink]` table into its `type` and the rest.
fn component<'a>(
    file: &'a SpecFile,
    key: &'static str,
    value: Option<RawValue<'a>>,
    problems: &mut Diagnostics,
) -> Option<Component<'a>> {
    let Some(mut value) = value else {
        problems.0.push(file.diagnostic(
            0..0,
            key,
            format!("missing table [{key}]"),
            Some(format!("add [{key}] with type = \"files\" and url = \"<folder>\"")),
        ));
        return None;
    };
    let span = value.span();
    let DeValue::Table(table) = value.get_mut() else {
        problems.0.push(file.diagnostic(span, key, "must be a table", Some(format!("write it as [{key}]"))));
        return None;
    };
    let kind = match table.remove("type") {
        Some(kind) => match kind.get_ref().as_str() {
            Some(text) => Spanned::new(kind.span(), text.to_string()),
            None => {
                problems.0.push(file.diagnostic(kind.span(), format!("{key}.type"), "must be a string", None));
                return None;
            }
        },
        None => {
            problems.0.push(file.diagnostic(
                span,
                format!("{key}.type"),
                "missing key `type`",
                Some("for example type = \"files\"".into()),
            ));
            return None;
        }
    };
    Some(Component::new(key, kind, value, file))
}

/// Where `a.b` is written in the file (its key, or its table header):
/// for problems found after reading, when only the path is known.
fn locate_key(text: &str, key_path: &str) -> std::ops::Range<usize> {
    let (table, key) = key_path.split_once('.').unwrap_or((key_path, ""));
    let header = format!("[{table}]");
    let mut offset = 0;
    let mut in_table = false;
    let mut header_at = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('[') {
            in_table = trimmed.starts_with(&header);
            if in_table && header_at.is_none() {
                header_at = Some(offset + indent);
            }
        } else if in_table && !key.is_empty() {
            let name = trimmed.split('=').next().unwrap_or("").trim();
            if name == key {
                return offset + indent..offset + indent + key.len();
            }
        }
        offset += line.len();
    }
    header_at.map_or(0..0, |at| at..at + header.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_urls_name_a_queue_after_the_virtual_host() {
        let split = |raw| split_queue_url(raw).expect("splits");
        assert_eq!(split("amqp://u:p@h:5672/%2f/events"), ("amqp://u:p@h:5672/%2f".into(), "events".into()));
        assert_eq!(split("amqp://h/events"), ("amqp://h".into(), "events".into()));
        assert_eq!(split("amqp://h/prod/s3.events"), ("amqp://h/prod".into(), "s3.events".into()));
        assert!(split_queue_url("amqp://h/").is_err());
        assert!(split_queue_url("http://h/q").is_err());
    }

    #[test]
    fn locates_keys_for_late_problems() {
        let text = "[pipeline]\nname = \"x\"\n\n[transform]\n  sql = \"SELECT 1\"\n";
        assert_eq!(locate_key(text, "transform.sql"), 37..40);
        assert_eq!(locate_key(text, "transform"), 23..34);
        assert_eq!(locate_key(text, "workers.concurrency"), 0..0);
    }
}
