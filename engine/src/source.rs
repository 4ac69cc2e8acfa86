//! The [`Source`] trait: where a pipeline's input comes from.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::context::SessionState;

use crate::Result;
use crate::batch::InputObject;

/// A source of input objects, implemented by each source connector.
///
/// Contract:
/// - [`Source::discover`] lists what exists now and nothing else; it never
///   decides what is new (the planner does, against the checkpoint log),
///   and it leaves out names starting with `_` or `.` (files being written
///   and engine files).
/// - [`Source::table`] reads exactly the inputs it is given, whatever has
///   happened to the source since: a batch is always the same data. An
///   input that is no longer the planned version is
///   [`crate::Error::InputChanged`], from `table` or from
///   [`Source::verify`] once the batch has been read.
/// - Neither keeps state between calls, so any worker can serve any batch.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The input objects available now, in any order.
    async fn discover(&self) -> Result<Vec<InputObject>>;

    /// A table over exactly `inputs`, registered as `input` for the SQL.
    async fn table(&self, state: &SessionState, inputs: &[InputObject]) -> Result<Arc<dyn TableProvider>>;

    /// Checks, after a batch was read, that its inputs are still the
    /// versions planned, so that one replaced while it was being read is
    /// never committed. Sources whose inputs cannot change keep the default.
    async fn verify(&self, inputs: &[InputObject]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// The schema declared in the pipeline file, if there is one.
    fn declared_schema(&self) -> Option<SchemaRef>;

    /// `(key, value)` lines that `sluice explain` shows; no secrets.
    fn describe(&self) -> Vec<(&'static str, String)>;
}
