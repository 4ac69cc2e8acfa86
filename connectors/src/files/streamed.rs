//! Reading CSV and NDJSON objects as streams, so that memory stays bounded
//! whatever an object's size: each object is read with one streamed GET
//! (decompressed on the way when its name ends in `.gz` or `.zst`), cut
//! into segments of about [`SEGMENT`] bytes at a record's end, and the
//! segments are decoded record by record (malformed ones set aside), up to
//! `threads` at once, while the SQL and the sink take the batches of those
//! before.
//!
//! ```text
//! GET ─► gunzip/unzstd ─► segment (8 MiB, cut at a record end; the rest carried)
//!                              │ decode, `threads` segments at once (blocking pool)
//!                              ▼
//!                  batches, in order ─► channel (2) ─► SQL ─► sink
//!                  rejects, a slice of records at a time ─► tally ─► dead-letter writer
//! ```
//!
//! Malformed records leave a segment a slice at a time, so that a segment
//! of nothing but bad records holds a few thousand of them, never millions;
//! once the batch has more than `[dead_letter] max_records`, decoding stops.
//!
//! A compressed object that breaks off (truncated, corrupt, not compressed
//! at all) is the input's fault, not the batch's: the records before the
//! break are read, and the rest of the object is one dead letter that says
//! where and why it broke. A store's error while reading stays an error,
//! which a retry may cure.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use bytes::{Bytes, BytesMut};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::TryStreamExt;
#[cfg(test)]
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use sluice_engine::source::{ReadTally, Rejected};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio_util::io::StreamReader;

use crate::formats::records::{CHUNK, CsvRecords, JsonLines, RecordFormat, Span, Unclosed, raw_parts, sort_spans};

/// Bytes of an object decoded at once.
pub(crate) const SEGMENT: usize = 8 << 20;
/// Batches decoded ahead of the SQL, at most.
const AHEAD: usize = 2;

/// How an input object is compressed, by its name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// As it is.
    None,
    /// `.gz`, `.gzip`.
    Gzip,
    /// `.zst`, `.zstd`.
    Zstd,
}

impl Compression {
    /// The compression `name` says.
    pub(crate) fn of(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// `name` without the compression's extension.
    pub(crate) fn strip(name: &str) -> &str {
        match Compression::of(name) {
            Compression::None => name,
            _ => name.rsplit_once('.').map_or(name, |(stem, _)| stem),
        }
    }
}

/// The text formats read record by record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TextFormat {
    /// CSV, with or without a header line.
    Csv(CsvRecords),
    /// NDJSON.
    Json,
}

impl TextFormat {
    /// Runs `f` with the format of a segment: only an object's first
    /// segment has a CSV header.
    fn with_records<R>(self, first: bool, f: impl FnOnce(&dyn RecordFormat) -> R) -> R {
        match self {
            TextFormat::Csv(csv) => f(&CsvRecords { header: csv.header && first, ..csv }),
            TextFormat::Json => f(&JsonLines),
        }
    }
}

/// One partition of a batch's input: its objects, read one after another.
#[derive(Debug)]
pub(crate) struct ObjectsPartition {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `(name in the dead letters, object path, bytes to read)`: all of
    /// an object's bytes as planned, or those appended since an earlier
    /// version.
    pub(crate) objects: Vec<(String, Path, Range<u64>)>,
    pub(crate) format: TextFormat,
    pub(crate) schema: SchemaRef,
    pub(crate) threads: usize,
    pub(crate) tally: ReadTally,
}

impl PartitionStream for ObjectsPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), AHEAD);
        let tx = builder.tx();
        let reader = ObjectReader {
            store: self.store.clone(),
            format: self.format,
            schema: self.schema.clone(),
            threads: self.threads,
            tally: self.tally.clone(),
        };
        let objects = self.objects.clone();
        builder.spawn(async move {
            for (name, path, range) in objects {
                if !reader.read(&name, &path, range, &tx).await? {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    format: TextFormat,
    schema: SchemaRef,
    threads: usize,
    tally: ReadTally,
}

/// A segment decoded: its batches (its rejects went to the tally).
struct Decoded {
    batches: Vec<RecordBatch>,
}

/// The records of a segment, cut at the last whole one.
struct Cut {
    spans: Vec<Span>,
    /// Records whose quote is still open at the object's end (only its
    /// last segment has them: in any other the record may go on in the
    /// next).
    unclosed: Vec<Unclosed>,
    /// Bytes of the segment taken; the rest starts the next one.
    consumed: usize,
    /// Lines in those bytes.
    lines: u64,
}

/// Where a segment of an object starts: for the dead letters' lines and
/// offsets, and for the CSV header.
#[derive(Clone, Copy)]
struct Place {
    first: bool,
    offset: u64,
    /// Unknown in the appended part of an object: the lines before it
    /// were not read.
    line: Option<u64>,
}

/// An object's bytes, as they are read.
pub(crate) enum Body {
    /// A whole local file as it is: read on the blocking pool straight
    /// into the segment. The store's own stream reads 8 KiB per hop to the
    /// blocking pool, and the hops (thread wake-ups) cost more than the
    /// reading.
    File { file: Option<std::fs::File>, left: u64 },
    /// Anything else: the store's stream, decompressed on the way.
    Stream(Pin<Box<dyn AsyncRead + Send>>),
}

impl Body {
    /// Starts reading the bytes `range` of the object at `path` (all of it
    /// when `range` is empty), decompressed as `name` says: no more, even
    /// if it has grown since it was planned.
    pub(crate) async fn open(
        store: &dyn ObjectStore,
        name: &str,
        path: &Path,
        range: Range<u64>,
    ) -> Result<Self, DataFusionError> {
        let options =
            GetOptions { range: (!range.is_empty()).then_some(GetRange::Bounded(range)), ..GetOptions::default() };
        let got = store.get_opts(path, options).await.map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
        let (start, len) = (got.range.start, got.range.end - got.range.start);
        let compression = Compression::of(name);
        let bytes: Pin<Box<dyn AsyncBufRead + Send>> = match got.payload {
            GetResultPayload::File(mut file, _) if compression == Compression::None => {
                if start > 0 {
                    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(|e| read_error(name, e))?;
                }
                return Ok(Body::File { file: Some(file), left: len });
            }
            GetResultPayload::File(file, _) => {
                let mut file = tokio::fs::File::from_std(file);
                file.set_max_buf_size(SEGMENT);
                file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| read_error(name, e))?;
                Box::pin(BufReader::new(file.take(len)))
            }
            GetResultPayload::Stream(stream) => Box::pin(StreamReader::new(stream.map_err(std::io::Error::other))),
        };
        Ok(Body::Stream(match compression {
            Compression::None => Box::pin(bytes),
            Compression::Gzip => {
                let mut decoder = GzipDecoder::new(bytes);
                decoder.multiple_members(true);
                Box::pin(decoder)
            }
            Compression::Zstd => Box::pin(ZstdDecoder::new(bytes)),
        }))
    }

    /// Reads until `buffer` holds `want` bytes or the object ends; whether
    /// it ended.
    pub(crate) async fn fill(&mut self, buffer: &mut BytesMut, want: usize) -> std::io::Result<bool> {
        match self {
            Body::Stream(reader) => {
                while buffer.len() < want {
                    buffer.reserve(want - buffer.len());
                    if reader.read_buf(buffer).await? == 0 {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Body::File { file, left } => {
                // Once ended, what `buffer` holds stays in it.
                let Some(mut open) = file.take() else { return Ok(true) };
                let (mut into, limit) = (std::mem::take(buffer), *left);
                let read = tokio::task::spawn_blocking(move || {
                    let had = into.len();
                    let room = (want.saturating_sub(had) as u64).min(limit) as usize;
                    into.resize(had + room, 0);
                    let mut got = 0;
                    while got < room {
                        match std::io::Read::read(&mut open, &mut into[had + got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    into.truncate(had + got);
                    Ok((open, into, got as u64))
                });
                let (open, into, got) = read.await.map_err(std::io::Error::other)??;
                *buffer = into;
                *left -= got;
                let ended = *left == 0 || buffer.len() < want;
                *file = (!ended).then_some(open);
                Ok(ended)
            }
        }
    }
}

impl ObjectReader {
    /// Streams one object to `tx`; `false` once nobody reads any more.
    ///
    /// Segments are cut here, one after another, and decoded on the
    /// blocking pool, up to `threads` at once, while the SQL takes the
    /// batches of those before; batches go on in the object's order.
    async fn read(
        &self,
        name: &str,
        path: &Path,
        range: Range<u64>,
        tx: &Sender<datafusion::error::Result<RecordBatch>>,
    ) -> Result<bool, DataFusionError> {
        let mut buffer = BytesMut::new();
        let (mut place, mut want, mut ended) = (Place { first: true, offset: 0, line: Some(1) }, SEGMENT, false);
        let mut body = if range.start == 0 {
            Body::open(self.store.as_ref(), name, path, range).await?
        } else {
            let mut body = Body::open(self.store.as_ref(), name, path, range.start - 1..range.end).await?;
            let skipped = self.skip_cut_record(name, &mut body, &mut buffer, range.start).await?;
            place = Place { first: false, offset: range.start + skipped, line: None };
            body
        };
        let mut decoding: VecDeque<JoinHandle<Result<Decoded, DataFusionError>>> = VecDeque::new();
        while !ended {
            // Hand on what is decoded already; wait for the oldest while
            // more than `threads` segments are being decoded, so that
            // `threads` go on while the next one is read and cut.
            while let Some(oldest) = decoding.front() {
                if !oldest.is_finished() && decoding.len() <= self.threads {
                    break;
                }
                let Some(oldest) = decoding.pop_front() else { break };
                if !self.forward(oldest, tx).await? {
                    return Ok(false);
                }
            }
            let broken = match body.fill(&mut buffer, want).await {
                Ok(end) => {
                    ended = end;
                    None
                }
                Err(error) => Some(input_fault(name, error)?),
            };
            if let Some(cause) = broken {
                self.broken_off(name, buffer.split().freeze(), place, &cause, &mut decoding).await?;
                break;
            }
            if buffer.is_empty() {
                break;
            }
            let segment = buffer.split().freeze();
            let Some(cut) = self.cut(segment.clone(), place.first, ended).await? else {
                // One record longer than the segment: read on.
                buffer.extend_from_slice(&segment);
                want *= 2;
                continue;
            };
            buffer.extend_from_slice(&segment[cut.consumed..]);
            // An object of one segment is decoded on every thread.
            let threads = if place.first && ended { self.threads } else { 1 };
            decoding.push_back(self.decode(name, segment, cut.spans, cut.unclosed, place, threads));
            place = Place {
                first: false,
                offset: place.offset + cut.consumed as u64,
                line: place.line.map(|line| line + cut.lines),
            };
            want = SEGMENT;
        }
        while let Some(oldest) = decoding.pop_front() {
            if !self.forward(oldest, tx).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends an object whose bytes broke off at `tail` (what was read since
    /// the last cut, at `place`): its whole records are decoded, and the
    /// rest, from the record at the break on, is one dead letter with the
    /// decoder's `cause`.
    async fn broken_off(
        &self,
        name: &str,
        tail: Bytes,
        place: Place,
        cause: &str,
        decoding: &mut VecDeque<JoinHandle<Result<Decoded, DataFusionError>>>,
    ) -> Result<(), DataFusionError> {
        let (mut consumed, mut lines) = (0, 0);
        if !tail.is_empty()
            && let Some(cut) = self.cut(tail.clone(), place.first, false).await?
        {
            (consumed, lines) = (cut.consumed, cut.lines);
            decoding.push_back(self.decode(name, tail.clone(), cut.spans, cut.unclosed, place, 1));
        }
        let (line, offset) = (place.line.map(|line| line + lines), place.offset + consumed as u64);
        let (raw, raw_base64) = raw_parts(&tail[consumed..]);
        let rejected = Rejected {
            source: name.to_string(),
            line,
            offset: Some(offset),
            partition: None,
            message_id: None,
            error: format!(
                "the compressed input breaks off after {offset} bytes decompressed: {cause}; the records before \
                 this one were read, the rest of the object was not"
            ),
            raw,
            raw_base64,
        };
        tracing::warn!(input = %name, "{}", rejected.error);
        self.tally.set_aside(vec![rejected]).await.map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// Reads the byte before `start`, where an appended part begins. When
    /// it ends a line, the part begins with a record. Otherwise the object
    /// ended in the middle of a record when its earlier version was read
    /// (its writer was mid-line): that record's start was read then, and
    /// the rest of it, up to the first line end, is set aside as a dead
    /// letter here rather than read as a record of its own (only a line
    /// end is nothing to set aside). Returns the bytes of the part taken;
    /// what follows them is left in `buffer`.
    async fn skip_cut_record(
        &self,
        name: &str,
        body: &mut Body,
        buffer: &mut BytesMut,
        start: u64,
    ) -> Result<u64, DataFusionError> {
        let mut ended = body.fill(buffer, 1).await.map_err(|e| read_error(name, e))?;
        if buffer.is_empty() {
            return Ok(0);
        }
        if buffer.split_to(1)[0] == b'\n' {
            return Ok(0);
        }
        let rest = loop {
            if let Some(end) = memchr::memchr(b'\n', buffer) {
                break buffer.split_to(end + 1);
            }
            if ended {
                break buffer.split();
            }
            let want = buffer.len() * 2 + (64 << 10);
            ended = body.fill(buffer, want).await.map_err(|e| read_error(name, e))?;
        };
        if rest.iter().any(|b| !matches!(b, b'\r' | b'\n')) {
            let (raw, raw_base64) = raw_parts(&rest);
            let rejected = Rejected {
                source: name.to_string(),
                line: None,
                offset: Some(start),
                partition: None,
                message_id: None,
                error: format!(
                    "the rest of a record cut off at byte {start}, where {name} ended when it was read before; \
                     the record's start was read then"
                ),
                raw,
                raw_base64,
            };
            self.tally.set_aside(vec![rejected]).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        Ok(rest.len() as u64)
    }

    /// Counts a decoded segment and sends its batches; `false` once nobody
    /// reads any more.
    async fn forward(
        &self,
        decoding: JoinHandle<Result<Decoded, DataFusionError>>,
        tx: &Sender<datafusion::error::Result<RecordBatch>>,
    ) -> Result<bool, DataFusionError> {
        let decoded = decoding.await.map_err(|e| DataFusionError::External(Box::new(e)))??;
        let rows = decoded.batches.iter().map(|batch| batch.num_rows() as u64).sum();
        self.tally.count_rows(rows);
        for batch in decoded.batches {
            if tx.send(Ok(batch)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Finds the whole records of `segment` (all of it at the end of the
    /// object) on the blocking pool; `None` if it holds less than two.
    async fn cut(&self, segment: Bytes, first: bool, ended: bool) -> Result<Option<Cut>, DataFusionError> {
        let format = self.format;
        let cut = move || {
            format.with_records(first, |records| {
                if ended {
                    let (spans, unclosed) = records.split_end(&segment);
                    return Some(Cut { spans, unclosed, consumed: segment.len(), lines: 0 });
                }
                let mut spans = records.split(&segment);
                if spans.len() < 2 {
                    return None;
                }
                let last = spans.pop()?;
                Some(Cut { spans, unclosed: Vec::new(), consumed: last.offset, lines: last.line - 1 })
            })
        };
        tokio::task::spawn_blocking(cut).await.map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// Starts decoding the records at `spans` of `segment` on the blocking
    /// pool, on `threads` threads. The malformed ones (the `unclosed` ones
    /// as they are) go to the tally a slice of records at a time; past the
    /// batch's limit of dead letters the rest is not decoded.
    fn decode(
        &self,
        name: &str,
        segment: Bytes,
        spans: Vec<Span>,
        unclosed: Vec<Unclosed>,
        place: Place,
        threads: usize,
    ) -> JoinHandle<Result<Decoded, DataFusionError>> {
        let (format, schema, name, tally) = (self.format, self.schema.clone(), name.to_string(), self.tally.clone());
        tokio::task::spawn_blocking(move || {
            format.with_records(place.first, |records| {
                let rejected_of = |bad: Vec<(Span, String)>| -> Vec<Rejected> {
                    bad.into_iter()
                        .map(|(span, error)| {
                            let (raw, raw_base64) = raw_parts(&segment[span.offset..span.end]);
                            Rejected {
                                source: name.clone(),
                                line: place.line.map(|line| line + span.line - 1),
                                offset: Some(place.offset + span.offset as u64),
                                partition: None,
                                message_id: None,
                                error,
                                raw,
                                raw_base64,
                            }
                        })
                        .collect()
                };
                if !unclosed.is_empty() {
                    let bad = unclosed
                        .iter()
                        .map(|record| {
                            (record.span, match place.line {
                            Some(first_line) => record.error(first_line),
                            None => "unterminated quote: the record is set aside up to the end of the line where the \
                                     quote opened"
                                .to_string(),
                        })
                        })
                        .collect();
                    tally.set_aside_blocking(rejected_of(bad)).map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
                let mut batches = Vec::new();
                for slice in spans.chunks(CHUNK * threads.max(1)) {
                    if let Some(error) = tally.limit_error() {
                        return Err(DataFusionError::External(Box::new(error)));
                    }
                    let (good, bad) = sort_spans(records, &schema, &segment, slice, threads);
                    batches.extend(good);
                    if bad.is_empty() {
                        continue;
                    }
                    tally.set_aside_blocking(rejected_of(bad)).map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
                Ok(Decoded { batches })
            })
        })
    }
}

/// Why reading an object failed, if it is the input's fault: a decoder's
/// error (truncated or corrupt compressed bytes), as its text. The store's
/// errors and the operating system's stay errors, which a retry may cure.
fn input_fault(name: &str, error: std::io::Error) -> Result<String, DataFusionError> {
    let from_store = error.get_ref().is_some_and(|inner| inner.is::<object_store::Error>());
    let internal = error.get_ref().is_some_and(|inner| inner.is::<tokio::task::JoinError>());
    if from_store || internal || error.raw_os_error().is_some() {
        return Err(read_error(name, error));
    }
    Ok(error.to_string())
}

/// A failed read: the store's error as it is (a retry may help), anything
/// else as an error naming the object.
pub(crate) fn read_error(name: &str, error: std::io::Error) -> DataFusionError {
    if error.get_ref().is_none() {
        return match error.raw_os_error() {
            Some(_) => DataFusionError::IoError(error),
            None => DataFusionError::Execution(format!("cannot read {name}: {error}")),
        };
    }
    match error.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
        Some(Ok(store)) => DataFusionError::ObjectStore(store),
        Some(Err(other)) => DataFusionError::Execution(format!("cannot read {name}: {other}")),
        None => DataFusionError::Execution(format!("cannot read {name}")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]))
    }

    async fn read(name: &str, bytes: Vec<u8>, format: TextFormat) -> (Vec<i64>, Vec<Rejected>, Option<u64>) {
        let store = Arc::new(InMemory::new());
        store.put(&Path::from(name), PutPayload::from(bytes)).await.expect("put");
        read_from(store, name, format).await
    }

    async fn read_from(
        store: Arc<dyn ObjectStore>,
        name: &str,
        format: TextFormat,
    ) -> (Vec<i64>, Vec<Rejected>, Option<u64>) {
        let size = store.head(&Path::from(name)).await.expect("head").size;
        read_part(store, name, 0..size, format).await
    }

    async fn read_part(
        store: Arc<dyn ObjectStore>,
        name: &str,
        range: Range<u64>,
        format: TextFormat,
    ) -> (Vec<i64>, Vec<Rejected>, Option<u64>) {
        let tally = ReadTally::counting();
        let partition = ObjectsPartition {
            store,
            objects: vec![(name.to_string(), Path::from(name), range)],
            format,
            schema: schema(),
            threads: 2,
            tally: tally.clone(),
        };
        let mut stream = partition.execute(Arc::new(TaskContext::default()));
        let mut ids = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.expect("a batch");
            let column = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64").clone();
            ids.extend((0..column.len()).map(|i| column.value(i)));
        }
        // Segments set their rejects aside as they are decoded, in any order.
        let mut rejected = tally.take_rejected();
        rejected.sort_by_key(|r| r.offset);
        (ids, rejected, tally.rows())
    }

    /// A CSV of `rows` records over several segments, with a quoted
    /// newline across a segment's end and a bad record in each third.
    fn big_csv(rows: usize) -> (String, Vec<i64>, Vec<u64>) {
        let mut text = String::from("id,name\n");
        let (mut good, mut bad_lines) = (Vec::new(), Vec::new());
        let mut line = 1;
        for id in 0..rows {
            line += 1;
            if id % (rows / 3) == 7 {
                text.push_str("x,bad\n");
                bad_lines.push(line);
            } else if id % 1000 == 0 {
                text.push_str(&format!("{id},\"two\nlines {}\"\n", "y".repeat(40)));
                good.push(id as i64);
                line += 1;
            } else {
                text.push_str(&format!("{id},name {id} {}\n", "z".repeat(60)));
                good.push(id as i64);
            }
        }
        (text, good, bad_lines)
    }

    #[tokio::test]
    async fn a_csv_larger_than_a_segment_is_read_whole_with_lines_and_offsets_of_the_object() {
        let (text, good, bad_lines) = big_csv(300_000);
        assert!(text.len() > 2 * SEGMENT, "spans segments: {} bytes", text.len());
        let format = TextFormat::Csv(CsvRecords { header: true, delimiter: b',' });
        let (ids, rejected, rows) = read("big.csv", text.clone().into_bytes(), format).await;
        assert_eq!(ids, good, "every good record once, in order");
        assert_eq!(rows, Some(good.len() as u64));
        let lines: Vec<u64> = rejected.iter().filter_map(|r| r.line).collect();
        assert_eq!(lines, bad_lines);
        for reject in &rejected {
            let at = reject.offset.expect("offset") as usize;
            assert!(text[at..].starts_with("x,bad\n"), "offset {at} points at the record");
        }
    }

    #[tokio::test]
    async fn a_local_csv_larger_than_a_segment_is_read_whole_in_order() {
        let (text, good, bad_lines) = big_csv(300_000);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("big.csv"), &text).expect("write");
        let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("store"));
        let format = TextFormat::Csv(CsvRecords { header: true, delimiter: b',' });
        let (ids, rejected, rows) = read_from(store.clone(), "big.csv", format).await;
        assert_eq!(ids, good, "every good record once, in order");
        assert_eq!(rows, Some(good.len() as u64));
        assert_eq!(rejected.iter().filter_map(|r| r.line).collect::<Vec<_>>(), bad_lines);

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(text.as_bytes()).expect("gzip");
        std::fs::write(dir.path().join("big.csv.gz"), gzip.finish().expect("gzip")).expect("write");
        let (ids, rejected, _) = read_from(store, "big.csv.gz", format).await;
        assert_eq!((ids, rejected.len()), (good, bad_lines.len()), "the same, decompressed on the way");
    }

    #[tokio::test]
    async fn an_unterminated_quote_before_several_segments_is_one_dead_letter_and_the_rest_is_read() {
        // The open quote makes the rest of the object one record longer
        // than a segment: the reader reads on to the object's end, where
        // the quote is found unclosed.
        let mut text = String::from("id,name\n1,a\n2,\"broken\n");
        let mut good = vec![1];
        for id in 3..200_000 {
            text.push_str(&format!("{id},name {id} {}\n", "z".repeat(60)));
            good.push(id);
        }
        assert!(text.len() > SEGMENT + SEGMENT / 2);
        let format = TextFormat::Csv(CsvRecords { header: true, delimiter: b',' });
        let (ids, rejected, rows) = read("open.csv", text.into_bytes(), format).await;
        assert_eq!(ids, good);
        assert_eq!(rows, Some(good.len() as u64));
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].line, rejected[0].offset, rejected[0].raw.as_str()), (Some(3), Some(12), "2,\"broken"));
        assert!(rejected[0].error.contains("opened on line 3"), "{}", rejected[0].error);
    }

    #[tokio::test]
    async fn lines_of_a_csv_with_cr_line_ends_count_across_segments() {
        let (text, good, bad_lines) = big_csv(200_000);
        let text = text.replace('\n', "\r");
        let format = TextFormat::Csv(CsvRecords { header: true, delimiter: b',' });
        let (ids, rejected, _) = read("cr.csv", text.into_bytes(), format).await;
        assert_eq!(ids, good);
        assert_eq!(rejected.iter().filter_map(|r| r.line).collect::<Vec<_>>(), bad_lines);
    }

    #[tokio::test]
    async fn gzip_and_zstd_inputs_are_read_by_their_extension() {
        let text = "{\"id\": 1, \"name\": \"a\"}\n{\"id\": \"bad\"}\n{\"id\": 3, \"name\": \"c\"}\n";
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(text.as_bytes()).expect("gzip");
        let (ids, rejected, _) = read("in/a.json.gz", gzip.finish().expect("gzip"), TextFormat::Json).await;
        assert_eq!((ids, rejected.len()), (vec![1, 3], 1));
        assert_eq!(rejected[0].line, Some(2));

        let zstd = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        let (ids, _, _) = read("in/a.json.zst", zstd, TextFormat::Json).await;
        assert_eq!(ids, [1, 3]);
    }

    #[tokio::test]
    async fn an_input_that_is_not_gzip_is_one_dead_letter_with_the_cause() {
        let (ids, rejected, _) = read("a.csv.gz", b"not gzip at all".to_vec(), TextFormat::Json).await;
        assert!(ids.is_empty());
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!((rejected[0].source.as_str(), rejected[0].line, rejected[0].offset), ("a.csv.gz", Some(1), Some(0)));
        assert!(rejected[0].error.contains("gzip header"), "the decoder's cause: {}", rejected[0].error);
    }

    #[tokio::test]
    async fn a_truncated_gzip_input_keeps_the_records_before_the_break() {
        let text: String = (0..2000).map(|id| format!("{{\"id\": {id}, \"name\": \"n{id}\"}}\n")).collect();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(text.as_bytes()).expect("gzip");
        let whole = gzip.finish().expect("gzip");
        let (ids, rejected, _) = read("a.json.gz", whole[..whole.len() - 40].to_vec(), TextFormat::Json).await;
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        let broke = &rejected[0];
        let line = broke.line.expect("a line") as usize;
        assert_eq!(ids, (0..line as i64 - 1).collect::<Vec<_>>(), "every record before the break, once");
        assert!(text[broke.offset.expect("an offset") as usize..].starts_with(&broke.raw), "the rest is the raw");
        assert!(broke.error.contains("breaks off") && broke.error.contains("end of file"), "{}", broke.error);
    }

    #[tokio::test]
    async fn decoding_stops_once_a_batch_has_too_many_dead_letters() {
        let text: String = (0..100_000).map(|_| "x,bad\n").collect();
        let store = Arc::new(InMemory::new());
        store.put(&Path::from("a.csv"), PutPayload::from(text.into_bytes())).await.expect("put");
        let tally = ReadTally::counting();
        let (outlet, mut letters) = tokio::sync::mpsc::channel(2);
        tally.stream_to(outlet, 1000);
        let partition = ObjectsPartition {
            store,
            objects: vec![("a.csv".into(), Path::from("a.csv"), 0..600_000)],
            format: TextFormat::Csv(CsvRecords { header: false, delimiter: b',' }),
            schema: schema(),
            threads: 1,
            tally: tally.clone(),
        };
        let received = tokio::spawn(async move {
            let mut received = 0;
            while let Some(chunk) = letters.recv().await {
                received += chunk.len();
            }
            received
        });
        let mut stream = partition.execute(Arc::new(TaskContext::default()));
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(error)) => break error,
                None => panic!("the read should fail"),
            }
        };
        assert!(error.to_string().contains("max_records"), "{error}");
        assert!(tally.is_over_limit());
        drop(stream);
        drop(partition);
        drop(tally);
        assert!(received.await.expect("receiver") <= 1000, "nothing past the limit is sent");
    }

    #[tokio::test]
    async fn an_appended_part_is_read_from_its_start_without_a_header_and_only_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = "id,name\n1,a\n2,b\n";
        let text = format!("{before}3,c\nx,bad\n4,d\n5,later\n");
        std::fs::write(dir.path().join("a.csv"), &text).expect("write");
        let local = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("store"));
        let memory = Arc::new(InMemory::new());
        memory.put(&Path::from("a.csv"), PutPayload::from(text.clone().into_bytes())).await.expect("put");
        let format = TextFormat::Csv(CsvRecords { header: true, delimiter: b',' });
        let end = (text.len() - "5,later\n".len()) as u64;
        for store in [local as Arc<dyn ObjectStore>, memory] {
            let (ids, rejected, rows) = read_part(store, "a.csv", before.len() as u64..end, format).await;
            assert_eq!((ids, rows), (vec![3, 4], Some(2)), "no header taken, nothing past the planned end");
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].line, None, "the lines before the part were not counted");
            assert_eq!(rejected[0].offset, Some(text.find("x,bad").expect("there") as u64));
        }
    }

    #[tokio::test]
    async fn the_rest_of_a_record_cut_off_by_the_earlier_read_is_a_dead_letter() {
        let store = Arc::new(InMemory::new());
        let text = "{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"na";
        let full = format!("{text}me\": \"b\"}}\n{{\"id\": 3, \"name\": \"c\"}}\n");
        store.put(&Path::from("a.json"), PutPayload::from(full.clone().into_bytes())).await.expect("put");
        let part = text.len() as u64..full.len() as u64;
        let (ids, rejected, _) = read_part(store.clone(), "a.json", part, TextFormat::Json).await;
        assert_eq!(ids, [3]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].raw.trim_end(), "me\": \"b\"}");
        assert_eq!(rejected[0].offset, Some(text.len() as u64));

        // Only the line end was missing: nothing is set aside.
        let text = "{\"id\": 1}";
        let full = format!("{text}\n{{\"id\": 2}}\n");
        store.put(&Path::from("b.json"), PutPayload::from(full.clone().into_bytes())).await.expect("put");
        let (ids, rejected, _) =
            read_part(store, "b.json", text.len() as u64..full.len() as u64, TextFormat::Json).await;
        assert_eq!((ids, rejected.len()), (vec![2], 0));
    }

    #[test]
    fn extensions_name_the_compression() {
        assert_eq!(Compression::of("a.CSV.GZ"), Compression::Gzip);
        assert_eq!(Compression::of("a.json.zst"), Compression::Zstd);
        assert_eq!(Compression::strip("a.csv.gz"), "a.csv");
        assert_eq!(Compression::strip("a.csv"), "a.csv");
    }
}
