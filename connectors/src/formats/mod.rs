//! Decoding records into Arrow, shared by the sources: CSV and JSON read
//! record by record with the malformed ones set aside ([`records`]), and
//! stream messages, one record each ([`messages`]); float values too large
//! for their type are told from infinities ([`floats`]).

pub(crate) mod floats;
pub(crate) mod messages;
pub(crate) mod records;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use sluice_engine::Result;

/// A table over `batches` with a partition per thread, so that the SQL
/// runs on all of them.
pub(crate) fn memory_table(schema: SchemaRef, batches: Vec<RecordBatch>, threads: usize) -> Result<Arc<MemTable>> {
    let partitions = threads.clamp(1, batches.len().max(1));
    let per_partition = batches.len().div_ceil(partitions).max(1);
    let partitions: Vec<Vec<RecordBatch>> = batches.chunks(per_partition).map(<[RecordBatch]>::to_vec).collect();
    let partitions = if partitions.is_empty() { vec![Vec::new()] } else { partitions };
    Ok(Arc::new(MemTable::try_new(schema, partitions)?))
}
