//! The pipelines a `sluice worker` may run: the `.toml` files of the folder
//! or bucket prefix an operator gave it with `--pipelines`. A task names a
//! pipeline and the SHA-256 of its file; the worker runs the batch only
//! with its own copy of that file, byte for byte the one the controller
//! planned with.
//!
//! The folder is read at start and again (at most once a second) when a
//! task names a pipeline or a version the worker does not have, so that an
//! operator who updates the files beside a running worker needs no restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_engine::spec::{MAX_PIPELINE_FILE_BYTES, pipeline_name, text_sha256};
use sluice_engine::storage::StorageLocation;

/// How often at most the folder is read again for a task it cannot match.
const RESCAN_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// One pipeline file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it was read: relative paths in it are taken from its folder.
    pub path: PathBuf,
    /// Its text.
    pub text: Arc<str>,
}

/// The pipeline files of one folder or bucket prefix.
#[derive(Debug)]
pub struct Catalogue {
    /// As the operator wrote it, for messages.
    shown: String,
    location: StorageLocation,
    /// By name and SHA-256.
    files: HashMap<(String, String), Entry>,
    names: HashSet<String>,
    scanned: Option<Instant>,
}

impl Catalogue {
    /// The pipelines at `from`: a folder, or a `file://`, `s3://`, `gs://`
    /// or `az://` prefix.
    pub async fn open(from: &str) -> Result<Self, String> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let location =
            StorageLocation::resolve(from, &cwd).map_err(|message| format!("--pipelines {from:?} {message}"))?;
        if let Some(path) = location.local_path()
            && !path.is_dir()
        {
            return Err(format!(
                "--pipelines {}: no such folder; give the folder that holds the pipeline files the controller runs",
                path.display()
            ));
        }
        let mut catalogue = Catalogue {
            shown: from.to_string(),
            location,
            files: HashMap::new(),
            names: HashSet::new(),
            scanned: None,
        };
        catalogue.scan().await?;
        Ok(catalogue)
    }

    /// How many pipeline files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The pipeline `name` whose file has the SHA-256 `sha256`, or why
    /// there is none.
    pub async fn find(&mut self, name: &str, sha256: &str) -> Result<Entry, String> {
        let key = (name.to_string(), sha256.to_ascii_lowercase());
        if !self.files.contains_key(&key)
            && self.scanned.is_none_or(|at| at.elapsed() >= RESCAN_AT_MOST_EVERY)
            && let Err(error) = self.scan().await
        {
            tracing::warn!("cannot read the pipelines again: {error}");
        }
        if let Some(entry) = self.files.get(&key) {
            return Ok(entry.clone());
        }
        Err(if self.names.contains(name) {
            format!(
                "this worker's pipeline {name} (in {}) is not the file the controller planned the batch with \
                 (its sha256 differs from the task's {}): give workers and the controller the same file",
                self.shown,
                &key.1[..12.min(key.1.len())]
            )
        } else {
            format!("this worker has no pipeline named {name} in {}", self.shown)
        })
    }

    /// Reads every `.toml` file again.
    async fn scan(&mut self) -> Result<(), String> {
        let found = match self.location.local_path() {
            Some(folder) => scan_folder(&folder)?,
            None => self.scan_bucket().await?,
        };
        self.files.clear();
        self.names.clear();
        for (path, text) in found {
            match pipeline_name(&text) {
                Some(name) => {
                    self.names.insert(name.clone());
                    self.files.insert((name, text_sha256(&text)), Entry { path, text: text.into() });
                }
                None => tracing::warn!("{} names no [pipeline] name; it is not a pipeline file", path.display()),
            }
        }
        self.scanned = Some(Instant::now());
        Ok(())
    }

    async fn scan_bucket(&self) -> Result<Vec<(PathBuf, String)>, String> {
        let shown = &self.shown;
        let (store, prefix) = self.location.open().map_err(|e| format!("cannot open {shown}: {e}"))?;
        let listed: Vec<_> =
            store.list(Some(&prefix)).try_collect().await.map_err(|e| format!("cannot list {shown}: {e}"))?;
        let mut found = Vec::new();
        for object in listed {
            let relative = object.location.as_ref().strip_prefix(prefix.as_ref()).unwrap_or_default();
            let relative = relative.trim_start_matches('/');
            if !relative.ends_with(".toml") || relative.contains('/') || object.size > MAX_PIPELINE_FILE_BYTES {
                continue;
            }
            let bytes = store
                .get(&object.location)
                .await
                .map_err(|e| format!("cannot read {}: {e}", object.location))?
                .bytes()
                .await
                .map_err(|e| format!("cannot read {}: {e}", object.location))?;
            match String::from_utf8(bytes.to_vec()) {
                // Relative paths in a file from a bucket are taken from the
                // worker's working folder: write URLs or absolute paths.
                Ok(text) => found.push((PathBuf::from(relative), text)),
                Err(_) => tracing::warn!("{} is not UTF-8; it is not a pipeline file", object.location),
            }
        }
        Ok(found)
    }
}

/// The `.toml` files directly in `folder`, with their text.
fn scan_folder(folder: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let entries = std::fs::read_dir(folder).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        match sluice_engine::spec::read(&path) {
            Ok(text) => found.push((path, text)),
            Err(problems) => tracing::warn!("skipping {}: {problems}", path.display()),
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pipeline_is_found_by_name_and_hash_and_taken_up_when_it_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let text = "[pipeline]\nname = \"orders\"\n";
        std::fs::write(dir.path().join("orders.toml"), text).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "[pipeline]\nname = \"other\"\n").expect("write");
        let mut catalogue = Catalogue::open(dir.path().to_str().expect("utf-8")).await.expect("open");
        assert_eq!(catalogue.len(), 1);
        assert_eq!(&*catalogue.find("orders", &text_sha256(text)).await.expect("found").text, text);
        let wrong = catalogue.find("orders", &"0".repeat(64)).await.expect_err("another version");
        assert!(wrong.contains("sha256 differs"), "{wrong}");
        assert!(catalogue.find("other", &"0".repeat(64)).await.expect_err("none").contains("no pipeline named other"));
        let changed = "[pipeline]\nname = \"orders\"\nversion = 2\n";
        std::fs::write(dir.path().join("orders.toml"), changed).expect("write");
        catalogue.scanned = None;
        assert!(catalogue.find("orders", &text_sha256(changed)).await.is_ok());
        assert!(Catalogue::open("/surely/not/a/folder").await.is_err());
    }
}
