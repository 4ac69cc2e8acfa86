//! Writing one output file, streamed to the object store.
//!
//! A Parquet file's columns are encoded in parallel: the rows that arrive
//! are gathered into runs of [`RUN_ROWS`], and each column of a run is
//! encoded (and compressed) by a task of its own on the blocking pool,
//! while the sink goes on taking the next rows from the SQL. A column
//! takes its next run once its previous one is encoded, so at most one
//! run per column is in flight. When a row group is full, its encoded
//! column chunks are appended to the file in memory and the bytes are
//! streamed to the store.
//!
//! ```text
//! rows ─► run (64K rows) ─► column 1 ─► encoder task ─┐
//!                        ├► column 2 ─► encoder task ─┤ row group full:
//!                        └► column N ─► encoder task ─┴► chunks appended ─► upload
//! ```

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use sluice_engine::{Cause, Result};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

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
    Parquet(ParquetFile),
    Text { out: BufWriter, format: OutputFormat, header_written: bool },
}

impl FileWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, schema: SchemaRef, encoding: Encoding) -> Result<Self> {
        let inner = match encoding.format {
            OutputFormat::Parquet => {
                let properties = WriterProperties::builder().set_compression(encoding.compression).build();
                Inner::Parquet(ParquetFile::new(BufWriter::new(store, path), schema, properties)?)
            }
            format => Inner::Text { out: BufWriter::new(store, path), format, header_written: false },
        };
        Ok(FileWriter { inner, rows: 0 })
    }

    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Parquet(file) => file.write(batch).await,
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
            Inner::Parquet(file) => file.finish().await?,
            Inner::Text { mut out, .. } => out.shutdown().await.map_err(io_error)?,
        }
        Ok(self.rows)
    }
}

/// Rows gathered before their columns are handed to the encoders: enough
/// that a task's start costs nothing beside its work, few enough that
/// the rows held stay small.
const RUN_ROWS: usize = 64 * 1024;
/// Encoded bytes held in memory before they are sent to the store.
const UPLOAD_BYTES: usize = 8 << 20;

/// A Parquet file whose columns are encoded in parallel.
struct ParquetFile {
    /// The file as far as it is written, in memory until sent.
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    out: BufWriter,
    /// The row group being encoded, if rows arrived since the last one.
    group: Option<RowGroup>,
    max_rows: usize,
    run_rows: usize,
}

/// One row group being encoded: a slot per leaf column, and the rows not
/// yet handed to the encoders.
struct RowGroup {
    columns: Vec<Encoder>,
    rows: usize,
    waiting: Vec<RecordBatch>,
    waiting_rows: usize,
}

/// A leaf column's writer: at hand, or encoding a run on the blocking pool.
/// One lives per leaf column of a file being written: its size does not
/// matter.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Idle(ArrowColumnWriter),
    Busy(JoinHandle<parquet::errors::Result<ArrowColumnWriter>>),
}

impl Encoder {
    /// The writer, once it has encoded what it was given.
    async fn ready(self) -> Result<ArrowColumnWriter> {
        match self {
            Encoder::Idle(writer) => Ok(writer),
            Encoder::Busy(task) => task.await.map_err(encoder_failed)?.map_err(parquet_error),
        }
    }
}

impl ParquetFile {
    fn new(out: BufWriter, schema: SchemaRef, properties: WriterProperties) -> Result<Self> {
        Self::with_runs_of(out, schema, properties, RUN_ROWS)
    }

    fn with_runs_of(out: BufWriter, schema: SchemaRef, properties: WriterProperties, run_rows: usize) -> Result<Self> {
        let max_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).map_err(parquet_error)?;
        let (file, factory) = writer.into_serialized_writer().map_err(parquet_error)?;
        Ok(ParquetFile { file, factory, schema, out, group: None, max_rows, run_rows: run_rows.max(1) })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let group = match &mut self.group {
                Some(group) => group,
                None => {
                    let writers = self
                        .factory
                        .create_column_writers(self.file.flushed_row_groups().len())
                        .map_err(parquet_error)?;
                    let columns = writers.into_iter().map(Encoder::Idle).collect();
                    self.group.insert(RowGroup { columns, rows: 0, waiting: Vec::new(), waiting_rows: 0 })
                }
            };
            let room = self.max_rows - group.rows - group.waiting_rows;
            let take = room.min(batch.num_rows() - offset);
            group.waiting.push(batch.slice(offset, take));
            group.waiting_rows += take;
            offset += take;
            if group.rows + group.waiting_rows >= self.max_rows {
                self.close_group().await?;
            } else if group.waiting_rows >= self.run_rows {
                group.hand_over(&self.schema).await?;
            }
        }
        Ok(())
    }

    /// Encodes what is left of the row group, appends it to the file and
    /// sends the file's bytes on once enough are held.
    async fn close_group(&mut self) -> Result<()> {
        let Some(mut group) = self.group.take() else { return Ok(()) };
        let chunks = match group.rows == 0 && group.waiting_rows < self.run_rows {
            // A small file (a row group of less than a run): encoded here,
            // where handing its columns to other threads would cost more
            // than encoding them.
            true => group.encode_here(&self.schema).await?,
            false => {
                group.hand_over(&self.schema).await?;
                let mut closing = Vec::with_capacity(group.columns.len());
                for column in group.columns {
                    let writer = column.ready().await?;
                    closing.push(tokio::task::spawn_blocking(move || writer.close()));
                }
                let mut chunks: Vec<ArrowColumnChunk> = Vec::with_capacity(closing.len());
                for task in closing {
                    chunks.push(task.await.map_err(encoder_failed)?.map_err(parquet_error)?);
                }
                chunks
            }
        };
        let mut row_group = self.file.next_row_group().map_err(parquet_error)?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group).map_err(parquet_error)?;
        }
        row_group.close().map_err(parquet_error)?;
        self.file.flush().map_err(io_error)?;
        if self.file.inner().len() >= UPLOAD_BYTES {
            self.upload().await?;
        }
        Ok(())
    }

    /// Sends the bytes written so far to the store.
    async fn upload(&mut self) -> Result<()> {
        let bytes = std::mem::take(self.file.inner_mut());
        self.out.write_all(&bytes).await.map_err(io_error)
    }

    async fn finish(mut self) -> Result<()> {
        self.close_group().await?;
        let bytes = self.file.into_inner().map_err(parquet_error)?;
        self.out.write_all(&bytes).await.map_err(io_error)?;
        self.out.shutdown().await.map_err(io_error)
    }
}

impl RowGroup {
    /// The leaf columns of the waiting rows, a run per leaf column.
    fn runs(&mut self, schema: &SchemaRef) -> Result<Vec<Vec<ArrowLeafColumn>>> {
        let mut runs: Vec<Vec<ArrowLeafColumn>> = (0..self.columns.len()).map(|_| Vec::new()).collect();
        for batch in std::mem::take(&mut self.waiting) {
            let mut leaf = 0;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                for leaves in compute_leaves(field, column).map_err(parquet_error)? {
                    runs[leaf].push(leaves);
                    leaf += 1;
                }
            }
        }
        self.rows += self.waiting_rows;
        self.waiting_rows = 0;
        Ok(runs)
    }

    /// Encodes the waiting rows and closes every column on this thread.
    async fn encode_here(mut self, schema: &SchemaRef) -> Result<Vec<ArrowColumnChunk>> {
        let runs = self.runs(schema)?;
        let mut chunks = Vec::with_capacity(runs.len());
        for (column, run) in self.columns.into_iter().zip(runs) {
            let mut writer = column.ready().await?;
            for leaves in &run {
                writer.write(leaves).map_err(parquet_error)?;
            }
            chunks.push(writer.close().map_err(parquet_error)?);
        }
        Ok(chunks)
    }

    /// Hands the waiting rows to the encoders, each leaf column to its own
    /// task once that column's previous run is encoded.
    async fn hand_over(&mut self, schema: &SchemaRef) -> Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let runs = self.runs(schema)?;
        let columns = std::mem::take(&mut self.columns);
        for (column, run) in columns.into_iter().zip(runs) {
            let mut writer = column.ready().await?;
            self.columns.push(Encoder::Busy(tokio::task::spawn_blocking(move || {
                for leaves in &run {
                    writer.write(leaves)?;
                }
                Ok(writer)
            })));
        }
        Ok(())
    }
}

fn parquet_error(error: parquet::errors::ParquetError) -> sluice_engine::Error {
    match error {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store_error) => sluice_engine::Error::Storage(*store_error),
            Err(other) => encode_error("writing output: parquet", Cause::new(other)),
        },
        other => encode_error("writing output: parquet", Cause::new(other)),
    }
}

fn encoder_failed(error: tokio::task::JoinError) -> sluice_engine::Error {
    encode_error("writing output: parquet: a column's encoder stopped", Cause::new(error))
}

fn encode_error(what: &str, cause: Cause) -> sluice_engine::Error {
    sluice_engine::Error::Encode { what: what.into(), cause }
}

pub(crate) fn io_error(error: std::io::Error) -> sluice_engine::Error {
    sluice_engine::Error::Storage(object_store::Error::Generic { store: "sink", source: Box::new(error) })
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, StringArray, StructArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
    use bytes::Bytes;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::ZstdLevel;

    use super::*;

    /// Rows with a nested column (two leaves), nulls, long and repeated text.
    fn rows(first: i64, n: usize) -> RecordBatch {
        let schema = schema();
        let ids = Int64Array::from_iter_values(first..first + n as i64);
        let text = StringArray::from_iter((0..n).map(|i| match i % 3 {
            0 => None,
            1 => Some(format!("note, \"{}\"", (first as usize + i) % 17)),
            _ => Some("x".repeat((first as usize + i) % 60)),
        }));
        let at = TimestampMicrosecondArray::from_iter_values((0..n).map(|i| 1_700_000_000_000_000 + i as i64))
            .with_timezone("UTC");
        let inner = StructArray::new(
            nested_fields(),
            vec![
                Arc::new(Int64Array::from_iter((0..n).map(|i| (i % 5 != 0).then_some(i as i64)))) as ArrayRef,
                Arc::new(StringArray::from_iter_values((0..n).map(|i| ["FR", "DE", "JP"][i % 3]))),
            ],
            None,
        );
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(text), Arc::new(at), Arc::new(inner)])
            .expect("works in memory")
    }

    fn nested_fields() -> Fields {
        Fields::from(vec![Field::new("qty", DataType::Int64, true), Field::new("country", DataType::Utf8, false)])
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("line", DataType::Struct(nested_fields()), false),
        ]))
    }

    fn properties(row_group: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("works in memory")))
            .set_max_row_group_row_count(Some(row_group))
            .build()
    }

    async fn written(store: &Arc<dyn ObjectStore>, name: &str) -> Bytes {
        store.get(&Path::from(name)).await.expect("works in memory").bytes().await.expect("works in memory")
    }

    #[tokio::test]
    async fn columns_encoded_in_parallel_make_the_file_the_plain_writer_makes() {
        // Batches of uneven sizes across row-group boundaries, runs handed
        // over mid-group, and a last group shorter than a run.
        let batches: Vec<RecordBatch> = [700, 1, 2_500, 333, 4_000, 1_200]
            .iter()
            .scan(0, |first, n| {
                let batch = rows(*first, *n);
                *first += *n as i64;
                Some(batch)
            })
            .collect();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut parallel = ParquetFile::with_runs_of(
            BufWriter::new(store.clone(), Path::from("parallel.parquet")),
            schema(),
            properties(3_000),
            1_000,
        )
        .expect("works in memory");
        let mut plain = Vec::new();
        let mut reference =
            ArrowWriter::try_new(&mut plain, schema(), Some(properties(3_000))).expect("works in memory");
        for batch in &batches {
            parallel.write(batch).await.expect("works in memory");
            reference.write(batch).expect("works in memory");
        }
        parallel.finish().await.expect("works in memory");
        reference.close().expect("works in memory");
        let bytes = written(&store, "parallel.parquet").await;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).expect("works in memory");
        assert_eq!(reader.metadata().num_row_groups(), 3, "8,734 rows: 3,000, 3,000 and 2,734");
        assert_eq!(reader.schema(), &schema(), "the Arrow schema travels in the file");
        let back: Vec<RecordBatch> =
            reader.build().expect("works in memory").map(|b| b.expect("works in memory")).collect();
        let expected = arrow::compute::concat_batches(&schema(), &batches).expect("works in memory");
        assert_eq!(arrow::compute::concat_batches(&schema(), &back).expect("works in memory"), expected);
        assert_eq!(bytes.as_ref(), plain.as_slice(), "the same bytes as the parquet crate's own writer");
    }

    #[tokio::test]
    async fn a_small_file_is_encoded_in_one_go_and_reads_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut file =
            ParquetFile::new(BufWriter::new(store.clone(), Path::from("small.parquet")), schema(), properties(1 << 20))
                .expect("works in memory");
        file.write(&rows(0, 10)).await.expect("works in memory");
        file.write(&rows(10, 490)).await.expect("works in memory");
        file.finish().await.expect("works in memory");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(written(&store, "small.parquet").await).expect("works in memory");
        assert_eq!(reader.metadata().num_row_groups(), 1);
        let back: Vec<RecordBatch> =
            reader.build().expect("works in memory").map(|b| b.expect("works in memory")).collect();
        let expected =
            arrow::compute::concat_batches(&schema(), &[rows(0, 10), rows(10, 490)]).expect("works in memory");
        assert_eq!(arrow::compute::concat_batches(&schema(), &back).expect("works in memory"), expected);
    }
}
