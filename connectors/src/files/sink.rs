//! The files sink: stages each attempt's files below `_sluice/staging/`,
//! and moves them to their final names once the batch is committed.
//!
//! ```text
//! <sink>/_sluice/staging/<token>.part-<batch id>-0.parquet.staged              staged (invisible)
//! <sink>/_sluice/staging/<token>/country=FR/part-<batch id>-0.parquet.staged   staged, partitioned
//!                      │ publish, after the commit record
//!                      ▼
//! <sink>/part-<batch id>-0.parquet                                            final
//! <sink>/country=FR/part-<batch id>-0.parquet
//! ```
//!
//! A staged name ends in `.staged`, so that no reader's glob for the data
//! (`out/**/*.parquet` in DuckDB or Polars, which do not skip folders
//! named `_sluice`) matches a file that is not committed. Files staged
//! without the suffix, by earlier versions, are still published and
//! discarded.
//!
//! A file at the sink's top is staged beside the others, its name prefixed
//! with the token, not in a folder of its own: on a local disk a folder
//! made and removed for every batch costs more than the batch's file
//! (ext4 slows down finding free inodes among recently freed ones).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::basic::{Compression, ZstdLevel};
use sluice_engine::sink::{Attempt, OutputObject, Sink, Staged};
use sluice_engine::source::{ReadTally, Rejected};
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::storage::StorageLocation;
use sluice_engine::{Error, Result};

use super::compression::{COMPRESSIONS, compression_name, level_of, parse_compression, with_level};
use super::config::{FilesSinkConfig, OutputFormat};
use super::partition::Partitioner;
use super::writer::{Encoding, FileWriter, io_error};

/// The folder below the sink that holds what is not yet committed.
const STAGING: &str = "_sluice/staging";

/// What a staged file's name ends in: no data glob matches it.
const STAGED_SUFFIX: &str = ".staged";

/// Writes files under a location.
#[derive(Debug)]
pub struct FilesSink {
    location: StorageLocation,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    encoding: Encoding,
    partitioner: Partitioner,
}

impl FilesSink {
    /// Reads and checks `[sink]`, collecting every problem.
    pub fn from_component(component: &Component<'_>) -> Result<Self, Diagnostics> {
        let config: FilesSinkConfig = component.parse()?;
        let mut problems = Diagnostics::default();
        let location = component
            .file()
            .location(config.url.get_ref())
            .map_err(|message| problems.0.push(component.error("url", message, None)))
            .ok();
        let compression = match (&config.compression, config.format) {
            (None, OutputFormat::Parquet) => Compression::ZSTD(ZstdLevel::default()),
            (None, _) => Compression::UNCOMPRESSED,
            (Some(name), OutputFormat::Parquet) => parse_compression(name.get_ref()).unwrap_or_else(|| {
                problems.0.push(component.error(
                    "compression",
                    format!("unknown compression \"{}\"", name.get_ref()),
                    Some(format!("parquet compressions: {COMPRESSIONS}")),
                ));
                Compression::UNCOMPRESSED
            }),
            (Some(name), _) if name.get_ref() == "none" => Compression::UNCOMPRESSED,
            (Some(_), _) => {
                problems.0.push(component.error(
                    "compression",
                    "applies to parquet only",
                    Some("remove it, or write format = \"parquet\"".into()),
                ));
                Compression::UNCOMPRESSED
            }
        };
        let compression = match &config.compression_level {
            None => compression,
            Some(_) if config.format != OutputFormat::Parquet => {
                problems.0.push(component.error(
                    "compression_level",
                    "applies to parquet only",
                    Some("remove it, or write format = \"parquet\"".into()),
                ));
                compression
            }
            Some(level) => with_level(compression, *level.get_ref()).unwrap_or_else(|message| {
                problems.0.push(component.error("compression_level", message, None));
                compression
            }),
        };
        let mut seen = Vec::new();
        for column in &config.partition_by {
            if column.is_empty() || seen.contains(column) {
                problems.0.push(component.error("partition_by", format!("\"{column}\" is empty or named twice"), None));
            } else if column.starts_with('_') || column.starts_with('.') {
                problems.0.push(component.error(
                    "partition_by",
                    format!(
                        "\"{column}\" starts with `_` or `.`: readers skip such folders, so its rows would be hidden"
                    ),
                    Some(format!(
                        "rename the column in the SQL, e.g. SELECT {column} AS {} ...",
                        column.trim_start_matches(['_', '.'])
                    )),
                ));
            }
            seen.push(column.clone());
        }
        let opened = location.as_ref().and_then(|location| {
            location.open().map_err(|e| problems.0.push(component.error("url", e.to_string(), None))).ok()
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        let (Some(location), Some((store, prefix))) = (location, opened) else {
            unreachable!("every missing part was reported as a problem");
        };
        Ok(FilesSink {
            location,
            store,
            prefix,
            encoding: Encoding { format: config.format, compression },
            partitioner: Partitioner::new(config.partition_by),
        })
    }

    /// A sink of NDJSON files at `location`, unpartitioned: where dead
    /// letters go.
    pub fn ndjson(location: StorageLocation) -> Result<Self> {
        let (store, prefix) = location.open()?;
        Ok(FilesSink {
            location,
            store,
            prefix,
            encoding: Encoding { format: OutputFormat::Json, compression: Compression::UNCOMPRESSED },
            partitioner: Partitioner::new(Vec::new()),
        })
    }

    fn staging_root(&self, token: &str) -> Path {
        self.path(&format!("{STAGING}/{token}"))
    }

    /// Where an attempt stages its output `relative`.
    fn staged_path(&self, token: &str, relative: &str) -> Result<Path> {
        self.unsuffixed_staged_path(token, &format!("{relative}{STAGED_SUFFIX}"))
    }

    /// Where earlier versions staged the output `relative`: the same name
    /// without the suffix.
    fn unsuffixed_staged_path(&self, token: &str, relative: &str) -> Result<Path> {
        match relative.contains('/') {
            true => below(&self.staging_root(token), relative),
            false => below(&self.path(STAGING), &format!("{token}.{relative}")),
        }
    }

    /// The places the output `relative` of `token` may be staged at, the
    /// current one first, then those of earlier versions: without the
    /// suffix, and (a top-level file) in a folder of the token's own.
    fn staged_candidates(&self, token: &str, relative: &str) -> Result<Vec<Path>> {
        let mut candidates = vec![self.staged_path(token, relative)?, self.unsuffixed_staged_path(token, relative)?];
        if !relative.contains('/') {
            candidates.push(below(&self.staging_root(token), relative)?);
        }
        Ok(candidates)
    }

    fn path(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|part| !part.is_empty()) {
            path = path.join(part);
        }
        path
    }

    fn relative(&self, path: &Path, below: &Path) -> Option<String> {
        let parts: Vec<String> = path.prefix_match(below)?.map(|part| part.as_ref().to_string()).collect();
        Some(parts.join("/"))
    }

    /// Writes every row of `data` as the staged outputs of `attempt`; a row
    /// that no folder can hold goes to `dead_letters`, or fails the batch
    /// without them.
    async fn stage_rows(
        &self,
        attempt: &Attempt,
        mut data: SendableRecordBatchStream,
        dead_letters: Option<&ReadTally>,
    ) -> Result<Staged> {
        let schema = data.schema();
        self.check_schema(&schema).map_err(Error::Config)?;
        let file_schema = self.partitioner.file_schema(&schema);
        let extension = self.encoding.format.extension();
        let file_name = format!("part-{}-0.{extension}", attempt.batch_id);

        // One file per partition folder, in the order the folders appear.
        let mut files: Vec<(String, Path, FileWriter)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(batch) = data.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let split = self.partitioner.split(&batch)?;
            set_apart(split.unwritable, dead_letters).await?;
            for (folder, rows) in split.parts {
                let at = match index.get(&folder) {
                    Some(at) => *at,
                    None => {
                        let relative =
                            if folder.is_empty() { file_name.clone() } else { format!("{folder}/{file_name}") };
                        let path = self.staged_path(&attempt.token, &relative)?;
                        let writer =
                            FileWriter::new(self.store.clone(), path.clone(), file_schema.clone(), self.encoding)?;
                        files.push((relative, path, writer));
                        index.insert(folder, files.len() - 1);
                        files.len() - 1
                    }
                };
                files[at].2.write(&rows).await?;
            }
            sluice_engine::failpoint::hit("during_sink_write");
        }

        let mut outputs = Vec::with_capacity(files.len());
        for (relative, path, writer) in files {
            let rows = writer.finish().await?;
            let bytes = self.store.head(&path).await?.size;
            outputs.push(OutputObject { path: relative, rows, bytes });
        }
        Ok(Staged { token: attempt.token.clone(), outputs })
    }

    /// Removes folders left empty below a local staging folder.
    fn tidy(&self, token: &str) {
        if let Some(local) = self.location.local_path() {
            let root = local.join(STAGING).join(token);
            remove_empty_dirs(&root);
        }
    }
}

/// Hands rows that no folder can hold to the dead letters, each as a JSON
/// object with why; without dead letters, the first fails the batch.
async fn set_apart(unwritable: Vec<(String, RecordBatch)>, dead_letters: Option<&ReadTally>) -> Result<()> {
    let Some((why, _)) = unwritable.first() else { return Ok(()) };
    let Some(dead_letters) = dead_letters else { return Err(Error::Config(why.clone())) };
    let mut rejected = Vec::new();
    for (why, rows) in &unwritable {
        let mut encoded = Vec::new();
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut encoded);
        writer.write(rows)?;
        writer.finish()?;
        for row in String::from_utf8_lossy(&encoded).lines() {
            rejected.push(Rejected {
                source: "sink".into(),
                line: None,
                offset: None,
                partition: None,
                message_id: None,
                error: why.clone(),
                raw: row.to_string(),
                raw_base64: None,
            });
        }
    }
    tracing::warn!("{} row(s) cannot be written and go to the dead letters: {why}", rejected.len());
    dead_letters.set_aside_output(rejected).await
}

/// The object `relative` (with `/`, partition values already escaped)
/// below `root`, taken as it is written.
fn below(root: &Path, relative: &str) -> Result<Path> {
    Ok(Path::parse(format!("{root}/{relative}")).map_err(object_store::Error::from)?)
}

/// The token of an entry of the staging folder: `<token>` (a folder) or
/// `<token>.<file name>`. Tokens are hex digits and `-`.
fn token_of(name: &str) -> &str {
    name.split(['.', '/']).next().unwrap_or(name)
}

fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    // Fails, as it should, when something is still inside.
    let _ = std::fs::remove_dir(dir);
}

#[async_trait]
impl Sink for FilesSink {
    fn check_schema(&self, schema: &Schema) -> std::result::Result<(), String> {
        self.partitioner.check(schema)
    }

    async fn stage(&self, attempt: &Attempt, data: SendableRecordBatchStream) -> Result<Staged> {
        self.stage_rows(attempt, data, None).await
    }

    async fn stage_with_dead_letters(
        &self,
        attempt: &Attempt,
        data: SendableRecordBatchStream,
        dead_letters: &ReadTally,
    ) -> Result<Staged> {
        self.stage_rows(attempt, data, Some(dead_letters)).await
    }

    async fn publish(&self, staged: &Staged) -> Result<()> {
        for output in &staged.outputs {
            let to = below(&self.prefix, &output.path)?;
            let mut moved = Err(object_store::Error::NotFound { path: to.to_string(), source: "not staged".into() });
            for from in self.staged_candidates(&staged.token, &output.path)? {
                moved = self.store.rename(&from, &to).await;
                if !matches!(moved, Err(object_store::Error::NotFound { .. })) {
                    break;
                }
            }
            match moved {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    // Published before a crash: the file is in place already.
                    self.store.head(&to).await.map_err(|cause| Error::StorageAt {
                        what: format!("committed output {} is neither staged nor published", output.path),
                        cause,
                    })?;
                }
                Err(other) => return Err(other.into()),
            }
            sluice_engine::failpoint::hit("during_publish");
        }
        self.tidy(&staged.token);
        Ok(())
    }

    async fn discard(&self, token: &str) -> Result<()> {
        if let Some(local) = self.location.local_path() {
            // Local stores keep a write cut short as `<name>#<n>`, which
            // listings leave out: the folder goes whole, and every file
            // named for the token, cut short or not.
            let staging = local.join(STAGING);
            let entries = match std::fs::read_dir(&staging) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(error) => return Err(io_error(error)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_str().map(token_of) != Some(token) {
                    continue;
                }
                let removed = match entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    true => std::fs::remove_dir_all(entry.path()),
                    false => std::fs::remove_file(entry.path()),
                };
                match removed {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(error)),
                }
            }
            return Ok(());
        }
        let root = self.path(STAGING);
        let staged: Vec<Path> = self
            .store
            .list(Some(&root))
            .try_filter(|meta| {
                let ours = self.relative(&meta.location, &root).is_some_and(|name| token_of(&name) == token);
                futures::future::ready(ours)
            })
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in staged {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    async fn staged_tokens(&self) -> Result<Vec<String>> {
        let mut tokens: Vec<String> = match self.location.local_path() {
            // Read as a folder, so that tokens holding only cut-short
            // writes are found too.
            Some(local) => match std::fs::read_dir(local.join(STAGING)) {
                Ok(entries) => entries
                    .filter_map(|entry| Some(token_of(&entry.ok()?.file_name().into_string().ok()?).to_string()))
                    .collect(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(error) => return Err(io_error(error)),
            },
            None => {
                let root = self.path(STAGING);
                self.store
                    .list(Some(&root))
                    .try_filter_map(|meta| {
                        let token = self.relative(&meta.location, &root).map(|name| token_of(&name).to_string());
                        futures::future::ready(Ok(token))
                    })
                    .try_collect()
                    .await?
            }
        };
        tokens.sort();
        tokens.dedup();
        Ok(tokens)
    }

    fn default_checkpoint(&self) -> Option<StorageLocation> {
        Some(self.location.join("_sluice"))
    }

    fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            ("type", "files".to_string()),
            ("url", self.location.to_string()),
            ("format", self.encoding.format.extension().to_string()),
        ];
        if self.encoding.format == OutputFormat::Parquet {
            lines.push(("compression", compression_name(self.encoding.compression).to_string()));
            if let Some(level) = level_of(self.encoding.compression) {
                lines.push(("compression_level", level.to_string()));
            }
        }
        if self.partitioner.is_partitioned() {
            lines.push(("partition_by", self.partitioner.columns().join(", ")));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use sluice_engine::batch::BatchId;

    use super::*;

    fn staged(token: &str, path: &str) -> Staged {
        Staged { token: token.into(), outputs: vec![OutputObject { path: path.into(), rows: 1, bytes: 3 }] }
    }

    #[tokio::test]
    async fn files_staged_beside_each_other_are_told_apart_by_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FilesSink::ndjson(StorageLocation::resolve(".", dir.path()).expect("location")).expect("sink");
        let staging = dir.path().join(STAGING);
        let (ours, theirs) = (Attempt::new(BatchId::from_string("aa".into())), "bb-0123456789abcdef");
        std::fs::create_dir_all(staging.join(theirs).join("country=FR")).expect("mkdir");
        for name in [format!("{}.part-aa-0.json", ours.token), format!("{}.part-aa-0.json#3", ours.token)] {
            std::fs::write(staging.join(name), "{}\n").expect("write");
        }
        std::fs::write(staging.join(format!("{theirs}.part-bb-0.json")), "{}\n").expect("write");
        assert_eq!(sink.staged_tokens().await.expect("tokens"), [ours.token.clone(), theirs.to_string()]);

        // A cut-short write goes with the rest of the attempt's files.
        sink.discard(&ours.token).await.expect("discard");
        assert_eq!(sink.staged_tokens().await.expect("tokens"), [theirs]);
        sink.publish(&staged(theirs, "part-bb-0.json")).await.expect("publish");
        assert!(dir.path().join("part-bb-0.json").is_file());
    }

    #[tokio::test]
    async fn a_file_staged_in_a_folder_of_its_own_is_still_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FilesSink::ndjson(StorageLocation::resolve(".", dir.path()).expect("location")).expect("sink");
        let token = "cc-0123456789abcdef";
        let folder = dir.path().join(STAGING).join(token);
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("part-cc-0.json"), "{}\n").expect("write");
        sink.publish(&staged(token, "part-cc-0.json")).await.expect("publish");
        assert!(dir.path().join("part-cc-0.json").is_file());
        assert!(!folder.exists(), "the emptied folder is removed");
    }
}
