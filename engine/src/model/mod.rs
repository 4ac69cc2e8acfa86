//! The bottom floor: the plain data every other module names, and that
//! names nothing above it. Batches and their ids, a stream batch's
//! messages, what an attempt stages.

pub mod batch;
mod messages;
mod staged;
mod unique;

pub use batch::{Batch, BatchId, InputKey, InputObject, PipelineName};
pub use messages::{
    MESSAGE_ID_WINDOW, Message, OffsetRange, Origin, PartitionKey, PartitionStart, Positions, StreamInputs,
};
pub use staged::{Attempt, OutputObject, Staged, TableObject, TableVersions};
pub use unique::{host_name, owner_id, process_id, unique_suffix};
