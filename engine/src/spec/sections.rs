//! The engine's own tables of a pipeline file (`[pipeline]`, `[trigger]`,
//! `[transform]`, `[checkpoint]`, `[workers]`, `[dead_letter]`), as read,
//! with their defaults and limits.

use serde::Deserialize;
use toml::Spanned;

use super::urls::NotificationQueue;
use crate::planner::BatchLimits;
use crate::stream::MicroBatchLimits;
use crate::units::{ByteSize, HumanDuration};

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
pub(super) struct PipelineSection {
    /// The pipeline's name, `[a-z0-9_-]+`; part of every batch id.
    pub(super) name: Spanned<String>,
    /// The pipeline's version; part of every batch id.
    #[serde(default = "default_version")]
    pub(super) version: Spanned<u32>,
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
pub(super) const OBJECT_TRIGGER_KEYS: &[&str] =
    &["poll_interval", "reconcile_interval", "max_files_per_batch", "max_bytes_per_batch", "notifications"];
/// `[trigger]` keys that apply to stream sources only.
pub(super) const STREAM_TRIGGER_KEYS: &[&str] = &["max_records", "max_wait", "max_bytes"];

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
pub(super) struct TransformSection {
    /// DataFusion SQL over the table `input`; all rows as they are when absent.
    pub(super) sql: Option<Spanned<String>>,
}

/// `[checkpoint]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointSection {
    /// Where the checkpoint log lives; default `<sink url>/_sluice`.
    pub(super) url: Option<Spanned<String>>,
}

/// `[workers]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkersSection {
    /// Batches run at once, and threads per batch; default: the number of cores.
    pub(super) concurrency: Option<Spanned<usize>>,
    /// Attempts that end in an error before a batch is recorded as failed.
    pub(super) max_attempts: Option<Spanned<u32>>,
    /// How long a claim on a batch lasts unless renewed: a worker that
    /// dies holds its batch this long before another takes it over.
    pub(super) lease_timeout: Option<Spanned<HumanDuration>>,
    /// `amqp://` URL of a broker: the controller publishes batches there as
    /// tasks for `sluice worker`s instead of running them.
    pub(super) dispatch: Option<Spanned<String>>,
    /// The queue of those tasks.
    pub(super) task_queue: Option<Spanned<String>>,
}

/// `[dead_letter]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterSection {
    /// Where malformed records go; default `<checkpoint url>/dead_letters`.
    pub(super) url: Option<Spanned<String>>,
    /// Most dead letters one batch may set aside; past them it fails.
    pub(super) max_records: Option<Spanned<u64>>,
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
