//! The files source: lists objects matching a glob, reads a batch of them
//! as one DataFusion table.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::SessionState;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt};
use globset::GlobMatcher;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};
use sluice_engine::batch::{InputObject, etag_value, tail_digest};
use sluice_engine::source::{AfterCommit, Input, OnChange, ReadTally, Rejected, Source, Watch};
use sluice_engine::storage::StorageLocation;
use sluice_engine::{Error, Result};

use super::config::InputFormat;
use super::footer;
use super::listing::{Warned, list_folder};
use super::streamed::{Compression, ObjectsPartition, TextFormat};
use crate::formats::records::CsvRecords;

mod build;
mod settle;

/// Tail digests read at once while planning.
const DIGESTS_AT_ONCE: usize = 16;

/// Reads files under a location.
#[derive(Debug)]
pub struct FilesSource {
    location: StorageLocation,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    pattern: GlobMatcher,
    format: InputFormat,
    header: bool,
    delimiter: u8,
    schema: Option<SchemaRef>,
    on_change: OnChange,
    /// `[source] after_commit`.
    after_commit: AfterCommit,
    /// `[source] max_file_age`.
    max_file_age: Option<std::time::Duration>,
    /// `[source] move_to`, and its prefix in `store`.
    move_to: Option<(StorageLocation, Path)>,
    /// `[source] follow_symlinks`: follow links out of a local folder.
    follow_symlinks: bool,
    /// The names the last listing skipped.
    skipped: AtomicU64,
    /// The skipped names warned about already.
    warned: Warned,
}

impl FilesSource {
    /// Whether an object at `path` can be appended to meaningfully: CSV or
    /// NDJSON as it is. A compressed stream or a Parquet file that grew is
    /// a new file.
    fn appendable(&self, path: &str) -> bool {
        self.format != InputFormat::Parquet && Compression::of(path) == Compression::None
    }

    /// The SHA-256 of the bytes `range` of the object at `relative`, as
    /// long as it is still the version `etag`; `None` once it is not (or
    /// is gone).
    async fn digest(&self, relative: &str, range: Range<u64>, etag: Option<&str>) -> Result<Option<String>> {
        let path = self.object_path(relative)?;
        let options = GetOptions {
            range: (!range.is_empty()).then_some(GetRange::Bounded(range)),
            if_match: etag.map(String::from),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&path, options).await {
            Ok(got) => got.bytes().await,
            Err(error) => Err(error),
        };
        match got {
            Ok(bytes) => Ok(Some(tail_digest(&bytes))),
            Err(object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// DataFusion's reader of the format, for inferring a JSON schema from
    /// an object named `name` (compressed as its extension says); CSV
    /// schemas are inferred from the records the reader cuts
    /// ([`super::infer`]).
    fn file_format(&self, name: Option<&str>) -> Arc<dyn FileFormat> {
        let compression = match name.map(Compression::of) {
            Some(Compression::Gzip) => FileCompressionType::GZIP,
            Some(Compression::Zstd) => FileCompressionType::ZSTD,
            _ => FileCompressionType::UNCOMPRESSED,
        };
        match self.format {
            InputFormat::Csv => Arc::new(
                CsvFormat::default()
                    .with_has_header(self.header)
                    .with_delimiter(self.delimiter)
                    .with_newlines_in_values(true)
                    .with_file_compression_type(compression),
            ),
            InputFormat::Json => Arc::new(JsonFormat::default().with_file_compression_type(compression)),
            InputFormat::Parquet => Arc::new(ParquetFormat::default()),
        }
    }

    /// Checks that every input is still the version that was planned, and
    /// returns their metadata: a batch always reads the same data, and an
    /// input replaced since is new input for a new batch.
    async fn check_unchanged(&self, inputs: &[InputObject]) -> Result<Vec<ObjectMeta>> {
        futures::future::try_join_all(inputs.iter().map(|input| self.check_input(input))).await
    }

    async fn check_input(&self, input: &InputObject) -> Result<ObjectMeta> {
        let path = self.object_path(&input.path)?;
        let meta = match self.store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::InputChanged { path: input.path.clone(), detail: "it no longer exists".into() });
            }
            Err(other) => return Err(other.into()),
        };
        let same_etag = match (&input.etag, &meta.e_tag) {
            (None, _) => true,
            (Some(planned), Some(now)) => etag_value(planned) == etag_value(now),
            (Some(_), None) => false,
        };
        if meta.size == input.size && same_etag {
            return Ok(meta);
        }
        // An object that only grew since is still the planned version up
        // to its planned size, which is all that is read of it.
        if let Some(planned) = &input.tail_sha256
            && meta.size > input.size
            && self.appendable(&input.path)
            && self.digest(&input.path, input.tail_range(), meta.e_tag.as_deref()).await?.as_ref() == Some(planned)
        {
            return Ok(ObjectMeta { size: input.size, ..meta });
        }
        let detail = match same_etag {
            true => format!("it was {} bytes, it is {} bytes now", input.size, meta.size),
            false => format!(
                "it was rewritten: its entity tag was {}, it is {} now ({} bytes, {} before)",
                input.etag.as_deref().unwrap_or("none"),
                meta.e_tag.as_deref().unwrap_or("none"),
                meta.size,
                input.size
            ),
        };
        Err(Error::InputChanged { path: input.path.clone(), detail })
    }

    /// The URL of an input, each name percent-encoded so that `#`, `?` or
    /// `%` in a file name stay part of it.
    fn input_url(&self, input: &InputObject) -> Result<ListingTableUrl> {
        let mut url = self.location.url().clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for part in input.path.split('/') {
                segments.push(part);
            }
        }
        Ok(ListingTableUrl::try_new(url, None)?)
    }

    /// The declared schema, or the one inferred from `objects`.
    async fn schema_of(&self, state: &SessionState, objects: &[ObjectMeta]) -> Result<SchemaRef> {
        if let Some(schema) = &self.schema {
            return Ok(schema.clone());
        }
        if objects.is_empty() {
            return Err(Error::Config("a batch without inputs has no schema to infer".into()));
        }
        if self.format == InputFormat::Csv {
            let csv = CsvRecords { header: self.header, delimiter: self.delimiter };
            return Ok(Arc::new(super::infer::csv_schema(self.store.as_ref(), objects, csv).await?));
        }
        let first = objects[0].location.filename();
        Ok(self.file_format(first).infer_schema(state, &self.store, objects).await?)
    }

    /// A table that streams `inputs` record by record with `format`, and
    /// the tally of the records that do not fit `schema`. The inputs are
    /// shared out over up to `threads` partitions, each decoding with its
    /// share of the threads: `[workers] concurrency`.
    fn stream_records(
        &self,
        inputs: &[InputObject],
        format: TextFormat,
        schema: SchemaRef,
        threads: usize,
    ) -> Result<Input> {
        let tally = ReadTally::counting();
        let partitions = threads.min(inputs.len()).max(1);
        let mut shares: Vec<Vec<(String, Path, Range<u64>)>> = vec![Vec::new(); partitions];
        for (i, input) in inputs.iter().enumerate() {
            let range = input.start.min(input.size)..input.size;
            shares[i % partitions].push((input.path.clone(), self.object_path(&input.path)?, range));
        }
        let streams: Vec<Arc<dyn PartitionStream>> = shares
            .into_iter()
            .map(|objects| {
                Arc::new(ObjectsPartition {
                    store: self.store.clone(),
                    objects,
                    format,
                    schema: schema.clone(),
                    threads: (threads / partitions).max(1),
                    tally: tally.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Input { table: Arc::new(StreamingTable::try_new(schema, streams)?), tally })
    }

    /// Parquet inputs as a table read by DataFusion. Each file's footer is
    /// checked first: one that cannot be read, or whose columns do not fit
    /// `[source.schema]`, is set aside whole as a dead letter, and the
    /// table reads the others.
    async fn read_parquet(
        &self,
        state: &SessionState,
        inputs: &[InputObject],
        objects: Vec<ObjectMeta>,
    ) -> Result<Input> {
        let mut readable = Vec::new();
        let mut rejected = Vec::new();
        for (input, meta) in inputs.iter().zip(objects) {
            let cause = match footer::parquet_schema(self.store.as_ref(), &meta).await? {
                Ok(file) => self.schema.as_ref().and_then(|declared| footer::misfit(&file, declared)),
                Err(cause) => Some(cause),
            };
            match cause {
                Some(error) => {
                    tracing::warn!(file = %input.path, "the file goes to the dead letters whole: {error}");
                    rejected.push(Rejected {
                        source: input.path.clone(),
                        line: None,
                        offset: None,
                        partition: None,
                        message_id: None,
                        error,
                        raw: String::new(),
                        raw_base64: None,
                    });
                }
                None => readable.push((input, meta)),
            }
        }
        let tally = ReadTally::of(rejected);
        if readable.is_empty() {
            let Some(schema) = &self.schema else {
                let causes =
                    tally.take_rejected().iter().map(|r| format!("{}: {}", r.source, r.error)).collect::<Vec<_>>();
                return Err(Error::Config(format!("no input file of the batch can be read: {}", causes.join("; "))));
            };
            return Ok(Input { table: Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?), tally });
        }
        let metas: Vec<ObjectMeta> = readable.iter().map(|(_, meta)| meta.clone()).collect();
        let schema = self.schema_of(state, &metas).await?;
        // DataFusion reads the files through this source's store.
        state.runtime_env().register_object_store(self.location.url(), self.store.clone());
        let urls = readable.iter().map(|(input, _)| self.input_url(input)).collect::<Result<Vec<_>, _>>()?;
        let options = ListingOptions::new(self.file_format(None)).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
        Ok(Input { table: Arc::new(ListingTable::try_new(config)?), tally })
    }

    /// The input an object below the prefix is, unless it is hidden (a
    /// part of its name starts with `_` or `.`) or does not match the
    /// pattern.
    fn input_of(&self, meta: ObjectMeta) -> Option<InputObject> {
        let parts: Vec<String> =
            meta.location.prefix_match(&self.prefix)?.map(|part| part.as_ref().to_string()).collect();
        if parts.iter().any(|part| part.starts_with('_') || part.starts_with('.')) {
            return None;
        }
        let relative = parts.join("/");
        if !self.pattern.is_match(&relative) {
            return None;
        }
        Some(InputObject {
            path: relative,
            size: meta.size,
            etag: meta.e_tag,
            last_modified: meta.last_modified,
            ..InputObject::default()
        })
    }

    fn object_path(&self, relative: &str) -> Result<Path> {
        Ok(Path::parse(format!("{}/{relative}", self.prefix)).map_err(object_store::Error::from)?)
    }
}

#[async_trait]
impl Source for FilesSource {
    async fn discover(&self) -> Result<Vec<InputObject>> {
        if let Some(folder) = self.location.local_path()
            && !folder.is_dir()
        {
            return Err(Error::Config(format!(
                "the source folder {} does not exist; create it, or correct [source] url",
                folder.components().collect::<std::path::PathBuf>().display()
            )));
        }
        let listed: Vec<ObjectMeta> = match self.location.local_path() {
            Some(folder) => {
                let (prefix, follow) = (self.prefix.clone(), self.follow_symlinks);
                let local_error = |source: Box<dyn std::error::Error + Send + Sync>| {
                    Error::Storage(object_store::Error::Generic { store: "LocalFileSystem", source })
                };
                let listing = tokio::task::spawn_blocking(move || list_folder(&folder, &prefix, follow))
                    .await
                    .map_err(|e| local_error(e.into()))?
                    .map_err(|e| local_error(e.into()))?;
                self.warned.warn(&listing.skipped);
                self.skipped.store(listing.skipped.len() as u64, Ordering::Relaxed);
                listing.objects
            }
            None => self.store.list(Some(&self.prefix)).try_collect().await?,
        };
        Ok(listed.into_iter().filter_map(|meta| self.input_of(meta)).collect())
    }

    fn skipped_names(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    async fn lookup(&self, bucket: &str, key: &str) -> Result<Option<InputObject>> {
        if self.location.bucket() != Some(bucket) {
            return Ok(None);
        }
        let Ok(path) = Path::parse(key) else { return Ok(None) };
        if path.prefix_match(&self.prefix).is_none() {
            return Ok(None);
        }
        match self.store.head(&path).await {
            Ok(meta) => Ok(self.input_of(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    async fn read(&self, state: &SessionState, inputs: &[InputObject]) -> Result<Input> {
        let objects = self.check_unchanged(inputs).await?;
        // CSV and JSON are decoded here, every column of every record, so
        // that each malformed record is found and set aside whichever
        // columns the SQL reads. Parquet is typed already.
        let format = match self.format {
            InputFormat::Csv => TextFormat::Csv(CsvRecords { header: self.header, delimiter: self.delimiter }),
            InputFormat::Json => TextFormat::Json,
            InputFormat::Parquet => return self.read_parquet(state, inputs, objects).await,
        };
        let schema = self.schema_of(state, &objects).await?;
        self.stream_records(inputs, format, schema, state.config().target_partitions())
    }

    async fn verify(&self, inputs: &[InputObject]) -> Result<()> {
        self.check_unchanged(inputs).await.map(|_| ())
    }

    fn after_commit(&self) -> AfterCommit {
        self.after_commit
    }

    fn max_file_age(&self) -> Option<std::time::Duration> {
        self.max_file_age
    }

    async fn settle(&self, inputs: &[InputObject]) -> Result<u64> {
        self.settle_inputs(inputs).await
    }

    fn on_change(&self) -> OnChange {
        self.on_change
    }

    async fn appended_to(&self, before: &InputObject, now: &InputObject) -> Result<bool> {
        let Some(planned) = &before.tail_sha256 else { return Ok(false) };
        if now.size <= before.size || !self.appendable(&now.path) {
            return Ok(false);
        }
        if before.size == 0 {
            return Ok(true);
        }
        Ok(self.digest(&now.path, before.tail_range(), now.etag.as_deref()).await?.as_ref() == Some(planned))
    }

    async fn fingerprint(&self, inputs: &mut [InputObject]) -> Result<()> {
        if self.on_change != OnChange::Append {
            return Ok(());
        }
        // One small ranged GET an object, several at once: a backlog of
        // thousands of new files is fingerprinted in one planning pass.
        let wanted: Vec<usize> = (0..inputs.len()).filter(|&i| self.appendable(&inputs[i].path)).collect();
        let reads: Vec<_> = wanted
            .iter()
            .map(|&i| {
                let input = &inputs[i];
                self.digest(&input.path, input.tail_range(), input.etag.as_deref())
            })
            .collect();
        let digests: Vec<Option<String>> = futures::stream::iter(reads).buffered(DIGESTS_AT_ONCE).try_collect().await?;
        for (i, digest) in wanted.into_iter().zip(digests) {
            inputs[i].tail_sha256 = digest;
        }
        Ok(())
    }

    fn declared_schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    fn watch(&self) -> Result<Option<Watch>> {
        match self.location.local_path() {
            Some(folder) => super::watch::watch_folder(&folder).map(Some),
            None => Ok(None),
        }
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            ("type", "files".to_string()),
            ("url", self.location.to_string()),
            ("pattern", self.pattern.glob().glob().to_string()),
            ("format", format!("{:?}", self.format).to_lowercase()),
            ("on_change", self.on_change.as_str().to_string()),
            ("after_commit", self.after_commit.as_str().to_string()),
        ];
        if let Some((to, _)) = &self.move_to {
            lines.push(("move_to", to.to_string()));
        }
        if let Some(age) = self.max_file_age {
            lines.push(("max_file_age", sluice_engine::units::HumanDuration(age).to_string()));
        }
        if self.format == InputFormat::Csv {
            lines.push(("header", self.header.to_string()));
            lines.push(("delimiter", format!("{:?}", self.delimiter as char)));
        }
        match &self.schema {
            Some(schema) => lines.push((
                "schema",
                schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            None => lines.push(("schema", "inferred from each batch's files".into())),
        }
        lines
    }
}
