//! The pipeline file: one TOML file a pipeline, read strictly.
//!
//! Reading happens in two stages. `parse` reads the file into a tree
//! that keeps the position of every key, substitutes `${env:NAME}`, and
//! reads the engine's own tables (`[pipeline]`, `[trigger]`,
//! `[transform]`, `[checkpoint]`, `[workers]`,
//! `[dead_letter]`). `[source]` and `[sink]`
//! are handed as `type` + raw table ([`Component`]) to a
//! [`ConnectorRegistry`], which reads them into the connector's own
//! config. Every problem found on the way is collected, each with
//! `FILE:LINE:COL` and its key path.

mod diag;
mod keys;
mod load;
mod parse;
mod parts;
mod pipeline;
mod raw;
pub mod schema;
mod sections;
mod urls;

pub use diag::{Diagnostic, Diagnostics, SpecFile, closest};
pub use load::{MAX_PIPELINE_FILE_BYTES, load, pipeline_name, read, text_sha256};
pub use parse::parse;
pub use pipeline::{ConnectorRegistry, Dispatch, PipelineSpec};
pub use raw::Component;
pub use sections::{
    DEFAULT_DEAD_LETTER_MAX_RECORDS, DEFAULT_LEASE_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_TASK_QUEUE,
    MIN_LEASE_TIMEOUT, MIN_MAX_WAIT, MIN_POLL_INTERVAL, MIN_RECONCILE_INTERVAL, SECTIONS, TriggerSpec,
};
pub use urls::{NotificationQueue, check_broker_url, shown_url, split_queue_url};
