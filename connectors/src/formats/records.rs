//! Reading CSV and JSON record by record, setting aside the records that
//! do not parse or do not fit the schema (dead letters) and keeping the
//! rest.
//!
//! Each object is split into records (CSV rows, quoted newlines included;
//! JSON lines; or one message each, for streams), and the records are
//! decoded in chunks by Arrow's decoders,
//! every column of every record. A chunk that fails is halved until the
//! failing records stand alone, so a clean chunk costs one decode and each
//! bad record a handful more.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::floats::reject_overflow;
#[cfg(test)]
use sluice_engine::source::Rejected;

/// Records decoded at once while no error is found.
pub(crate) const CHUNK: usize = 8192;

/// One record of an object: where it starts, and its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// Byte offset in the object.
    pub(crate) offset: usize,
    /// Byte offset of its end (exclusive).
    pub(crate) end: usize,
    /// Its first line, from 1.
    pub(crate) line: u64,
}

/// How the records of an object are cut and decoded.
pub(crate) trait RecordFormat: Sync {
    /// The records of `bytes`, in order, without a header. The last one
    /// may be cut short: more of the object may follow.
    fn split(&self, bytes: &[u8]) -> Vec<Span>;
    /// The records of the last `bytes` of an object, which nothing follows,
    /// and those whose quoted field is never closed.
    fn split_end(&self, bytes: &[u8]) -> (Vec<Span>, Vec<Unclosed>) {
        (self.split(bytes), Vec::new())
    }
    /// Decodes records laid end to end in `bytes` (`rows` of them); room
    /// is left for one more, so that a span holding two records shows.
    fn decode(&self, schema: &SchemaRef, bytes: &[u8], rows: usize) -> Result<Option<RecordBatch>, ArrowError>;
}

/// CSV rows, split by the same rules (quotes, delimiter) as the reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvRecords {
    pub(crate) header: bool,
    pub(crate) delimiter: u8,
}

impl CsvRecords {
    /// Finds where each record of `bytes` starts with the rules of the CSV
    /// reader (csv-core's): a quote opens a quoted field only at a field's
    /// start, `""` inside one is a quote, and `\n`, `\r` or `\r\n` outside
    /// quotes end a record; empty lines are no record. Each of `\n`, `\r`
    /// and `\r\n` ends a line, inside quotes too, as an editor counts them.
    /// Only the quotes and line ends are looked at (memchr), so this costs a
    /// fraction of a full parse: the decoder parses every field afterwards
    /// anyway.
    ///
    /// The header is not taken off. When the last record still has a quote
    /// open at the end of `bytes`, the quote is returned too.
    fn scan(&self, bytes: &[u8]) -> (Vec<Span>, Option<OpenQuote>) {
        let mut spans = Vec::with_capacity(bytes.len() / 64 + 1);
        // The current record's first byte (once it has one) and line.
        let (mut begin, mut begin_line, mut line) = (0usize, 1u64, 1u64);
        let mut quoted = false;
        let mut open = OpenQuote { at: 0, line: 1 };
        // A byte already dealt with: the second quote of `""`, the `\n` of `\r\n`.
        let mut skip = usize::MAX;
        for at in memchr::memchr3_iter(b'"', b'\n', b'\r', bytes) {
            if at == skip {
                continue;
            }
            match bytes[at] {
                b'"' if quoted => match bytes.get(at + 1) {
                    Some(b'"') => skip = at + 1,
                    _ => quoted = false,
                },
                b'"' => {
                    quoted = at == begin || bytes[at - 1] == self.delimiter;
                    if quoted {
                        open = OpenQuote { at, line };
                    }
                }
                b'\n' if quoted => line += 1,
                b'\r' if quoted => line += u64::from(bytes.get(at + 1) != Some(&b'\n')),
                end => {
                    if at > begin {
                        spans.push(Span { offset: begin, end: 0, line: begin_line });
                    }
                    let mut next = at + 1;
                    if end == b'\r' && bytes.get(next) == Some(&b'\n') {
                        skip = next;
                        next += 1;
                    }
                    line += 1;
                    (begin, begin_line) = (next, line);
                }
            }
        }
        if begin < bytes.len() {
            spans.push(Span { offset: begin, end: 0, line: begin_line });
        }
        // A record runs to the next one's start: line ends and empty lines
        // after it are its own.
        for i in 1..spans.len() {
            spans[i - 1].end = spans[i].offset;
        }
        if let Some(last) = spans.last_mut() {
            last.end = bytes.len();
        }
        (spans, quoted.then_some(open))
    }
}

/// A quote that opens a quoted field and is not closed before the end of
/// the bytes looked at.
#[derive(Debug, Clone, Copy)]
struct OpenQuote {
    /// Its byte offset.
    at: usize,
    /// Its line, from 1.
    line: u64,
}

/// A record whose quoted field is never closed: what of it is set aside.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unclosed {
    /// The record's bytes up to the end of the line where the quote opens.
    pub(crate) span: Span,
    /// The line where the quote opens, from 1, counted like the span's.
    pub(crate) quote_line: u64,
}

impl Unclosed {
    /// The dead letter's error, the quote's line counted in the object
    /// when the bytes cut start on its line `first_line`.
    pub(crate) fn error(&self, first_line: u64) -> String {
        let line = first_line + self.quote_line - 1;
        format!("unterminated quote opened on line {line}: the record is set aside up to the end of that line")
    }
}

/// The end of the line that `at` is on: past its `\n`, `\r` or `\r\n`, or
/// the end of `bytes`.
fn past_line_end(bytes: &[u8], at: usize) -> usize {
    match memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
        Some(found) if bytes[at + found] == b'\r' && bytes.get(at + found + 1) == Some(&b'\n') => at + found + 2,
        Some(found) => at + found + 1,
        None => bytes.len(),
    }
}

impl RecordFormat for CsvRecords {
    /// The records that [`CsvRecords::scan`] finds, without the header.
    fn split(&self, bytes: &[u8]) -> Vec<Span> {
        let (mut spans, _) = self.scan(bytes);
        if self.header && !spans.is_empty() {
            spans.remove(0);
        }
        spans
    }

    /// A quote still open at the end of the object is a malformed record,
    /// as Spark and DuckDB report it, rather than a field that silently
    /// swallows every record after it: the record is set aside up to the
    /// end of the line where the quote opens, and cutting resumes on the
    /// next line, so that the records after it are read. (The quote is
    /// taken as the mistake: a stray `"` is far likelier than a quoted
    /// field that runs to the end of a file.)
    fn split_end(&self, bytes: &[u8]) -> (Vec<Span>, Vec<Unclosed>) {
        let (mut spans, mut unclosed) = (Vec::new(), Vec::new());
        let (mut from, mut lines_before) = (0usize, 0u64);
        let mut header = self.header;
        loop {
            let (found, open) = self.scan(&bytes[from..]);
            spans.extend(found.into_iter().map(|span| Span {
                offset: from + span.offset,
                end: from + span.end,
                line: lines_before + span.line,
            }));
            let Some(quote) = open else { break };
            // The open quote is in the last record found.
            let Some(record) = spans.pop() else { break };
            if spans.is_empty() && unclosed.is_empty() {
                // The header itself is broken: it is set aside, and no
                // later line is taken for it.
                header = false;
            }
            let resume = past_line_end(bytes, from + quote.at);
            let quote_line = lines_before + quote.line;
            unclosed
                .push(Unclosed { span: Span { offset: record.offset, end: resume, line: record.line }, quote_line });
            (from, lines_before) = (resume, quote_line);
        }
        if header && !spans.is_empty() {
            spans.remove(0);
        }
        (spans, unclosed)
    }

    /// A number too large for its float column is rejected
    /// ([`floats`](super::floats)).
    fn decode(&self, schema: &SchemaRef, bytes: &[u8], rows: usize) -> Result<Option<RecordBatch>, ArrowError> {
        let decode = |schema: &SchemaRef| {
            let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(false)
                .with_delimiter(self.delimiter)
                .with_batch_size(rows + 1)
                .build_decoder();
            feed(bytes, |chunk| decoder.decode(chunk))?;
            decoder.decode(&[])?;
            decoder.flush()
        };
        reject_overflow(schema, decode(schema)?, decode)
    }
}

/// JSON objects, one a line.
pub(crate) struct JsonLines;

impl RecordFormat for JsonLines {
    fn split(&self, bytes: &[u8]) -> Vec<Span> {
        let mut spans = Vec::with_capacity(bytes.len() / 128 + 1);
        let (mut offset, mut line) = (0, 1);
        let ends = memchr::memchr_iter(b'\n', bytes)
            .map(|at| at + 1)
            .chain((bytes.last() != Some(&b'\n')).then_some(bytes.len()));
        for end in ends {
            if !bytes[offset..end].trim_ascii().is_empty() {
                spans.push(Span { offset, end, line });
            }
            (offset, line) = (end, line + 1);
        }
        spans
    }

    /// Integers are read as text and cast without loss: Arrow's JSON
    /// decoder would truncate `1.5` to `1`, and a value that does not fit
    /// must be rejected instead. A string holding an integer (`"10"`) is
    /// that integer, as protobuf's JSON mapping and JavaScript producers
    /// write 64-bit integers. A number too large for its float column is
    /// rejected ([`floats`](super::floats)).
    fn decode(&self, schema: &SchemaRef, bytes: &[u8], rows: usize) -> Result<Option<RecordBatch>, ArrowError> {
        let decode = |schema: &SchemaRef| decode_json(schema, bytes, rows);
        reject_overflow(schema, decode(schema)?, decode)
    }
}

/// Decodes JSON lines (`rows` of them) into `schema`, its integers read
/// as text and cast without loss.
fn decode_json(schema: &SchemaRef, bytes: &[u8], rows: usize) -> Result<Option<RecordBatch>, ArrowError> {
    let as_text = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| match field.data_type().is_integer() {
                true => Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8)),
                false => field.clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let mut decoder = arrow::json::ReaderBuilder::new(as_text)
        .with_coerce_primitive(true)
        .with_batch_size(rows + 1)
        .build_decoder()?;
    feed(bytes, |chunk| decoder.decode(chunk))?;
    let Some(batch) = decoder.flush()? else { return Ok(None) };
    let strict = CastOptions { safe: false, ..CastOptions::default() };
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.data_type().is_integer() {
            true => cast_with_options(column, field.data_type(), &strict)
                .map_err(|e| ArrowError::JsonError(format!("whilst decoding field '{}': {e}", field.name()))),
            false => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map(Some)
}

/// Hands `bytes` to a decoder until it has taken all of them (or takes no
/// more: its batch is full).
fn feed(bytes: &[u8], mut decode: impl FnMut(&[u8]) -> Result<usize, ArrowError>) -> Result<(), ArrowError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let used = decode(rest)?;
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    Ok(())
}

/// Decodes every record of one object on up to `threads` threads: the
/// batches of those that fit, and the rejected ones, in the object's order.
#[cfg(test)]
pub(crate) fn sort_object(
    format: &dyn RecordFormat,
    schema: &SchemaRef,
    source: &str,
    bytes: &[u8],
    threads: usize,
) -> (Vec<RecordBatch>, Vec<Rejected>) {
    let (spans, unclosed) = format.split_end(bytes);
    let (good, bad) = sort_spans(format, schema, bytes, &spans, threads);
    let mut rejected: Vec<Rejected> =
        bad.into_iter().map(|(span, error)| reject(source, bytes, &span, error)).collect();
    rejected.extend(unclosed.iter().map(|u| reject(source, bytes, &u.span, u.error(1))));
    rejected.sort_by_key(|r| r.offset);
    (good, rejected)
}

/// Decodes the records at `spans` of `bytes` on up to `threads` threads:
/// the batches of those that fit, and the spans of those that do not with
/// why, in order.
pub(crate) fn sort_spans(
    format: &dyn RecordFormat,
    schema: &SchemaRef,
    bytes: &[u8],
    spans: &[Span],
    threads: usize,
) -> (Vec<RecordBatch>, Vec<(Span, String)>) {
    let chunks: Vec<&[Span]> = spans.chunks(CHUNK).collect();
    // Each thread takes a run of consecutive chunks; the runs are put back
    // in order.
    let threads = threads.min(chunks.len()).max(1);
    let per_thread = chunks.len().div_ceil(threads).max(1);
    let sorted: Vec<Sorted> = if threads == 1 {
        vec![sort_chunks(format, schema, bytes, &chunks)]
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunks
                .chunks(per_thread)
                .map(|run| scope.spawn(move || sort_chunks(format, schema, bytes, run)))
                .collect();
            running
                .into_iter()
                .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (batches, rejected) in sorted {
        good.extend(batches);
        bad.extend(rejected);
    }
    (good, bad)
}

/// Decoded batches, and the spans that did not decode with why.
type Sorted = (Vec<RecordBatch>, Vec<(Span, String)>);

fn sort_chunks(format: &dyn RecordFormat, schema: &SchemaRef, bytes: &[u8], chunks: &[&[Span]]) -> Sorted {
    let mut sorted = (Vec::new(), Vec::new());
    for chunk in chunks {
        sort_chunk(format, schema, bytes, chunk, &mut sorted);
    }
    sorted
}

fn sort_chunk(format: &dyn RecordFormat, schema: &SchemaRef, bytes: &[u8], spans: &[Span], sorted: &mut Sorted) {
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else { return };
    let mut joined;
    let records: &[u8] = if spans.windows(2).all(|pair| pair[0].end == pair[1].offset) {
        &bytes[first.offset..last.end]
    } else {
        joined = Vec::new();
        for span in spans {
            joined.extend_from_slice(&bytes[span.offset..span.end]);
            if !joined.ends_with(b"\n") {
                joined.push(b'\n');
            }
        }
        &joined
    };
    // A record without its line end (the object's last one) is ended here
    // so that the decoder sees it whole.
    let ended;
    let records = if records.ends_with(b"\n") {
        records
    } else {
        ended = [records, b"\n"].concat();
        &ended
    };
    match format.decode(schema, records, spans.len()) {
        Ok(Some(batch)) if batch.num_rows() == spans.len() => sorted.0.push(batch),
        Ok(None) if spans.is_empty() => {}
        Ok(decoded) if spans.len() == 1 => {
            sorted.1.push((*first, format!("decoded into {} rows instead of one", decoded.map_or(0, |b| b.num_rows()))))
        }
        Err(error) if spans.len() == 1 => sorted.1.push((*first, describe(&error, schema))),
        _ => {
            let (left, right) = spans.split_at(spans.len() / 2);
            sort_chunk(format, schema, bytes, left, sorted);
            sort_chunk(format, schema, bytes, right, sorted);
        }
    }
}

#[cfg(test)]
fn reject(source: &str, bytes: &[u8], span: &Span, error: String) -> Rejected {
    let (raw, raw_base64) = raw_parts(&bytes[span.offset..span.end]);
    Rejected {
        source: source.to_string(),
        line: Some(span.line),
        offset: Some(span.offset as u64),
        partition: None,
        message_id: None,
        error,
        raw,
        raw_base64,
    }
}

/// A record's bytes as the dead letter shows them, without its line end
/// (nor the empty lines after it): as text (lossily decoded as UTF-8), and
/// in base64 too when they are not valid UTF-8, so that the original bytes
/// are never lost.
pub(crate) fn raw_parts(raw: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    let end = raw.iter().rposition(|&b| b != b'\n' && b != b'\r').map_or(0, |at| at + 1);
    let raw = &raw[..end];
    match std::str::from_utf8(raw) {
        Ok(text) => (text.to_string(), None),
        Err(_) => {
            (String::from_utf8_lossy(raw).into_owned(), Some(base64::engine::general_purpose::STANDARD.encode(raw)))
        }
    }
}

/// Arrow's message without what only makes sense inside a chunk (its line
/// numbers count from the chunk, and the row is in `raw` already), and
/// with the column's name.
fn describe(error: &ArrowError, schema: &SchemaRef) -> String {
    let text = match error {
        ArrowError::ParseError(message) | ArrowError::CsvError(message) | ArrowError::JsonError(message) => {
            message.clone()
        }
        other => other.to_string(),
    };
    let text = text.split(". Row data:").next().unwrap_or(&text).to_string();
    let text = cut_number(&text, " at line ", "");
    let text = cut_number(&text, " for line ", ":");
    name_column(&text, schema)
}

/// `text` with its first `column <index>` naming the column instead.
fn name_column(text: &str, schema: &SchemaRef) -> String {
    let Some(at) = text.find("column ") else { return text.to_string() };
    let rest = &text[at + "column ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<usize>().ok().and_then(|i| schema.fields().get(i)) {
        Some(field) => format!("{}column {}{}", &text[..at], field.name(), &rest[digits.len()..]),
        None => text.to_string(),
    }
}

/// `text` with `marker` and the number after it (and a comma) replaced.
fn cut_number(text: &str, marker: &str, replacement: &str) -> String {
    let Some(at) = text.find(marker) else { return text.to_string() };
    let rest = &text[at + marker.len()..];
    let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if after.len() == rest.len() {
        return text.to_string();
    }
    format!("{}{replacement}{}", &text[..at], after.strip_prefix(',').unwrap_or(after))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::Field;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|batch| {
                let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64").clone();
                (0..ids.len()).map(move |i| ids.value(i))
            })
            .collect()
    }

    #[test]
    fn csv_rows_that_do_not_fit_are_set_aside_with_their_line() {
        let text =
            "id,name,score\n1,a,1.5\n2,\"multi\nline\",2\nx,bad number,3\n4,d,4,extra\n5,e,5\n6,\"broken,6\n7,g,7\n";
        let format = CsvRecords { header: true, delimiter: b',' };
        let (good, bad) = sort_object(&format, &schema(), "in/a.csv", text.as_bytes(), 2);
        assert_eq!(ids(&good), [1, 2, 5, 7], "the unclosed quote does not take the record after it");
        let found: Vec<(u64, &str)> = bad.iter().map(|r| (r.line.unwrap_or(0), r.raw.as_str())).collect();
        assert_eq!(found, [(5, "x,bad number,3"), (6, "4,d,4,extra"), (8, "6,\"broken,6")]);
        assert_eq!(bad[0].error, "Error while parsing value 'x' as type 'Int64' for column id");
        assert!(!bad[0].error.contains("line"), "chunk line numbers are dropped: {}", bad[0].error);
        assert_eq!(bad[1].error, "incorrect number of fields: expected 3 got 4");
        assert_eq!(bad[0].source, "in/a.csv");
        assert_eq!(bad[0].offset, Some(text.find("x,bad").expect("there") as u64));
    }

    /// Where the csv crate (csv-core, which Arrow's decoder is built on)
    /// says records start, with their first line.
    fn reference_starts(bytes: &[u8]) -> Vec<(usize, u64)> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
        let mut record = csv::ByteRecord::new();
        let mut starts = Vec::new();
        while reader.read_byte_record(&mut record).expect("a slice reads") {
            let position = record.position().expect("a position");
            starts.push((position.byte() as usize, position.line()));
        }
        starts
    }

    #[test]
    fn records_are_cut_where_the_csv_reader_cuts_them() {
        // Random texts of the bytes that matter: quotes in and out of
        // fields, doubled quotes, delimiters, every kind of line end.
        let alphabet = b"ab,,\"\"\n\r";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let format = CsvRecords { header: false, delimiter: b',' };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let text: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            // The reader starts a record before the empty lines it skips;
            // `split` starts it at its first byte. The reader counts `\n`
            // only; `split` counts a lone `\r` as a line end too.
            let expected: Vec<(usize, u64)> = reference_starts(&text)
                .into_iter()
                .map(|(mut at, _)| {
                    while matches!(text.get(at), Some(b'\n' | b'\r')) {
                        at += 1;
                    }
                    let ends =
                        (0..at).filter(|&i| text[i] == b'\n' || (text[i] == b'\r' && text.get(i + 1) != Some(&b'\n')));
                    (at, 1 + ends.count() as u64)
                })
                .collect();
            let found: Vec<(usize, u64)> = format.split(&text).iter().map(|span| (span.offset, span.line)).collect();
            assert_eq!(found, expected, "{:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn a_header_and_crlf_line_ends_are_cut_off() {
        let text = b"id,name\r\n1,\"a\r\nb\"\r\n\r\n2,c\r\n3,d";
        let spans = CsvRecords { header: true, delimiter: b',' }.split(text);
        let cut: Vec<(&[u8], u64)> = spans.iter().map(|s| (&text[s.offset..s.end], s.line)).collect();
        assert_eq!(cut, [(&b"1,\"a\r\nb\"\r\n\r\n"[..], 2), (&b"2,c\r\n"[..], 5), (&b"3,d"[..], 6)]);
    }

    fn sorted_csv(text: &str) -> (Vec<i64>, Vec<(u64, String, String)>) {
        let format = CsvRecords { header: true, delimiter: b',' };
        let (good, bad) = sort_object(&format, &schema(), "a.csv", text.as_bytes(), 2);
        (ids(&good), bad.into_iter().map(|r| (r.line.unwrap_or(0), r.raw, r.error)).collect())
    }

    #[test]
    fn a_quote_open_at_the_end_sets_its_line_aside_and_the_records_after_it_are_read() {
        let (good, bad) = sorted_csv("id,name,score\n1,\"abc\n2,b,2\n3,c,3");
        assert_eq!(good, [2, 3]);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].0, bad[0].1.as_str()), (2, "1,\"abc"));
        assert!(bad[0].2.starts_with("unterminated quote opened on line 2"), "{}", bad[0].2);

        // The quote opens on the record's second line: the record is set
        // aside up to there.
        let (good, bad) = sorted_csv("id,name,score\r\n1,\"x\r\ny\",\"open\r\n5,e,5\r\n");
        assert_eq!(good, [5]);
        assert_eq!((bad[0].0, bad[0].1.as_str()), (2, "1,\"x\r\ny\",\"open"));
        assert!(bad[0].2.contains("line 3"), "{}", bad[0].2);

        // One in the header: it is set aside, and no record is taken for it.
        let (good, bad) = sorted_csv("id,\"name\n1,a,1\n2,b,2\n");
        assert_eq!(good, [1, 2]);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_quote_closed_on_a_later_line_is_no_dead_letter() {
        let (good, bad) = sorted_csv("id,name,score\n1,\"a\n\nb\",1\n2,\"\"\"\",2\n");
        assert_eq!((good, bad), (vec![1, 2], vec![]));
    }

    #[test]
    fn cr_line_ends_count_lines() {
        let text = b"id,name\r1,\"a\rb\"\r\r2,c\r3,d";
        let spans = CsvRecords { header: true, delimiter: b',' }.split(text);
        let lines: Vec<u64> = spans.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 5, 6]);
    }

    #[test]
    fn a_number_too_large_for_a_float_is_set_aside_and_the_spellings_of_infinity_are_read() {
        let (good, bad) = sorted_csv("id,name,score\n1,a,1e309\n2,b,inf\n3,c,-Infinity\n4,d,NaN\n5,e,\n6,f,-2e308\n");
        assert_eq!(good, [2, 3, 4, 5]);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [2, 7]);
        assert!(bad[0].2.contains("'1e309'") && bad[0].2.contains("column score"), "{}", bad[0].2);

        let json = "{\"id\": 1, \"score\": 1e309}\n{\"id\": 2, \"score\": \"inf\"}\n{\"id\": 3, \"score\": 1.5}\n";
        let (good, bad) = sort_object(&JsonLines, &schema(), "a.json", json.as_bytes(), 1);
        assert_eq!(ids(&good), [2, 3]);
        assert_eq!(bad.iter().filter_map(|r| r.line).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn chunks_decoded_on_several_threads_come_back_in_order() {
        let rows = CHUNK * 5 + 17;
        let mut text = String::from("id,name,score\n");
        for id in 0..rows {
            // A bad row in the first and in the last chunk.
            match id {
                3 => text.push_str("x,bad,1\n"),
                id if id == rows - 2 => text.push_str("y,bad,1\n"),
                id => text.push_str(&format!("{id},n,1.5\n")),
            }
        }
        let format = CsvRecords { header: true, delimiter: b',' };
        let (good, bad) = sort_object(&format, &schema(), "big.csv", text.as_bytes(), 2);
        let expected: Vec<i64> = (0..rows as i64).filter(|&id| id != 3 && id != rows as i64 - 2).collect();
        assert_eq!(ids(&good), expected);
        let lines: Vec<u64> = bad.iter().filter_map(|r| r.line).collect();
        assert_eq!(lines, [5, rows as u64]);
    }

    #[test]
    fn json_lines_that_do_not_parse_are_set_aside() {
        let text =
            "{\"id\": 1, \"name\": \"a\"}\n\n{\"id\": \"two\"}\n{not json\n{\"id\": 1.5}\n{\"id\": \"5\"}\n{\"id\": 6}";
        let (good, bad) = sort_object(&JsonLines, &schema(), "a.json", text.as_bytes(), 2);
        assert_eq!(ids(&good), [1, 5, 6]);
        let lines: Vec<u64> = bad.iter().filter_map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 5], "1.5 does not fit an int64: it is not truncated");
        assert!(bad[2].error.contains("'id'") && bad[2].error.contains("1.5"), "{}", bad[2].error);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_in_base64() {
        use base64::Engine as _;
        assert_eq!(raw_parts(b"1,caf\xc3\xa9\r\n"), ("1,caf\u{e9}".to_string(), None));
        let (text, base64) = raw_parts(b"1,\xff\xfe\n");
        assert_eq!(text, "1,\u{fffd}\u{fffd}");
        let decoded = base64::engine::general_purpose::STANDARD.decode(base64.expect("base64")).expect("decodes");
        assert_eq!(decoded, b"1,\xff\xfe");
    }

    #[test]
    fn a_clean_object_is_decoded_in_one_go() {
        let text: String = std::iter::once("id,name,score\n".to_string())
            .chain((0..100).map(|i| format!("{i},n{i},{i}.5\n")))
            .collect();
        let (good, bad) =
            sort_object(&CsvRecords { header: true, delimiter: b',' }, &schema(), "a", text.as_bytes(), 2);
        assert!(bad.is_empty());
        assert_eq!(good.len(), 1);
        assert_eq!(ids(&good), (0..100).collect::<Vec<_>>());
    }
}
