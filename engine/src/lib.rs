//! The engine of sluice: what a pipeline is, how work is cut into batches,
//! and the checkpoint log that makes every retry safe.
//!
//! The engine holds no network client and no command line. It defines
//! the [`source::Source`], [`stream::StreamSource`] and [`sink::Sink`]
//! traits that connectors implement, the pipeline file format ([`spec`]), the batch model
//! ([`batch`]), the checkpoint log ([`log`]) and the pure planning
//! decisions over it ([`planner`]).

pub mod error;
pub mod explain;
pub mod failpoint;
pub mod log;
pub mod lookup;
pub mod model;
pub mod planner;
pub mod read;
pub mod retry;
pub mod sink;
pub mod source;
pub mod spec;
pub mod sql;
pub mod status;
pub mod storage;
pub mod stream;
pub mod txn;
pub mod units;

pub use error::{Cause, Error, Result};
pub use model::batch;
