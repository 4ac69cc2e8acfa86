//! `type = "files"`: objects in a folder or bucket, as source and as sink.
//!
//! The source lists objects matching a glob and reads them as CSV, NDJSON
//! (streamed record by record, malformed records set aside; `.gz` and
//! `.zst` decompressed on the way) or Parquet (through DataFusion, by
//! ranged reads). The sink writes Parquet, CSV or NDJSON,
//! optionally in hive-style partition folders, staging each attempt below
//! `_sluice/staging/` and moving the files into place only once the batch
//! is committed. A local source folder is watched with file-system
//! notifications.

mod compression;
mod config;
mod footer;
mod infer;
mod listing;
mod partition;
mod sink;
mod source;
mod streamed;
mod watch;
mod writer;

pub use config::{FilesSinkConfig, FilesSourceConfig, InputFormat, OutputFormat};
pub use sink::FilesSink;
pub use source::FilesSource;

#[cfg(test)]
mod tests;
