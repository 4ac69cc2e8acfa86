//! Writing one output file, streamed to the object store.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sluice_engine::Result;
use tokio::io::AsyncWriteExt;

use super::config::OutputFormat;

/// How files are encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoding {
    pub(crate) format: OutputFormat,
    pub(crate) compression: Compression,
}

/// One output file being written.
pub(crate) struct FileWriter {
    inner: Inner,
    rows: u64,
}

// One lives per output file being written: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Parquet(AsyncArrowWriter<BufWriter>),
    Text { out: BufWriter, format: OutputFormat, header_written: bool },
}

impl FileWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, schema: SchemaRef, encoding: Encoding) -> Result<Self> {
        let inner = match encoding.format {
            OutputFormat::Parquet => {
                let properties = WriterProperties::builder().set_compression(encoding.compression).build();
                let target = BufWriter::new(store, path);
                Inner::Parquet(AsyncArrowWriter::try_new(target, schema, Some(properties)).map_err(parquet_error)?)
            }
            format => Inner::Text { out: BufWriter::new(store, path), format, header_written: false },
        };
        Ok(FileWriter { inner, rows: 0 })
    }

    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Parquet(writer) => writer.write(batch).await.map_err(parquet_error),
            Inner::Text { out, format, header_written } => {
                let mut encoded = Vec::new();
                match format {
                    OutputFormat::Csv => {
                        let mut writer =
                            arrow::csv::WriterBuilder::new().with_header(!*header_written).build(&mut encoded);
                        writer.write(batch)?;
                        *header_written = true;
                    }
                    _ => {
                        let mut writer = arrow::json::LineDelimitedWriter::new(&mut encoded);
                        writer.write(batch)?;
                        writer.finish()?;
                    }
                }
                out.write_all(&encoded).await.map_err(io_error)?;
                Ok(())
            }
        }
    }

    /// Finishes the file; returns its rows.
    pub(crate) async fn finish(self) -> Result<u64> {
        match self.inner {
            Inner::Parquet(writer) => {
                writer.close().await.map_err(parquet_error)?;
            }
            Inner::Text { mut out, .. } => out.shutdown().await.map_err(io_error)?,
        }
        Ok(self.rows)
    }
}

fn parquet_error(error: parquet::errors::ParquetError) -> sluice_engine::Error {
    match error {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store_error) => sluice_engine::Error::Storage(*store_error),
            Err(other) => sluice_engine::Error::Output(format!("parquet: {other}")),
        },
        other => sluice_engine::Error::Output(format!("parquet: {other}")),
    }
}

pub(crate) fn io_error(error: std::io::Error) -> sluice_engine::Error {
    sluice_engine::Error::Storage(object_store::Error::Generic { store: "sink", source: Box::new(error) })
}
