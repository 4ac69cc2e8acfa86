//! Where data and logs live: a URL (`file:///...`, later `s3://...`) and
//! the object store that serves it. All engine I/O goes through
//! `object_store`, so a local folder and a bucket behave alike.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::{Error, Result};

/// A folder of an object store, named by URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageLocation {
    url: Url,
}

impl StorageLocation {
    /// Reads a location as written in a pipeline file: a URL with a scheme,
    /// or a local path, relative paths being taken from `base_dir`.
    pub fn resolve(raw: &str, base_dir: &Path) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is empty; give a folder path or a URL such as file:///data/in".into());
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
            return match scheme {
                "file" => Ok(Self::directory(url)),
                "s3" | "gs" | "az" | "abfs" | "abfss" => Err(format!(
                    "{scheme}:// storage is not available in this build of sluice yet; \
                     use a local folder or a file:// URL"
                )),
                other => Err(format!("unsupported scheme \"{other}\"; use a local folder or file:// URL")),
            };
        }
        let path = Path::new(raw);
        let joined = if path.is_absolute() { path.to_path_buf() } else { absolute(base_dir).join(path) };
        let url = Url::from_directory_path(normalize(&joined))
            .map_err(|()| format!("cannot turn {} into a file URL", joined.display()))?;
        Ok(StorageLocation { url })
    }

    fn directory(mut url: Url) -> Self {
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        StorageLocation { url }
    }

    /// The location `child` below this one (`child` uses `/`).
    pub fn join(&self, child: &str) -> Self {
        let child = child.trim_matches('/');
        let mut url = self.url.clone();
        url.set_path(&format!("{}{child}/", self.url.path()));
        StorageLocation { url }
    }

    /// The URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder, for `file://` locations.
    pub fn local_path(&self) -> Option<PathBuf> {
        self.url.to_file_path().ok()
    }

    /// The object store and the prefix of this location inside it.
    pub fn open(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        match self.url.scheme() {
            "file" => {
                let store = LocalFileSystem::new().with_automatic_cleanup(true);
                let prefix = ObjectPath::from_url_path(self.url.path()).map_err(object_store::Error::from)?;
                Ok((Arc::new(store), prefix))
            }
            other => Err(Error::Config(format!("no object store for {other}:// URLs"))),
        }
    }
}

impl fmt::Display for StorageLocation {
    /// The URL without any password it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        write!(f, "{shown}")
    }
}

impl fmt::Debug for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageLocation({self})")
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Removes `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_pipeline_folder() {
        let location = StorageLocation::resolve("../data/in", Path::new("/srv/pipelines")).expect("resolves");
        assert_eq!(location.url().as_str(), "file:///srv/data/in/");
        assert_eq!(location.join("_sluice").url().as_str(), "file:///srv/data/in/_sluice/");
    }

    #[test]
    fn file_urls_are_kept_and_unknown_schemes_refused() {
        let location = StorageLocation::resolve("file:///tmp/x", Path::new("/")).expect("resolves");
        assert_eq!(location.url().as_str(), "file:///tmp/x/");
        assert!(StorageLocation::resolve("ftp://host/x", Path::new("/")).is_err());
        assert!(StorageLocation::resolve("", Path::new("/")).is_err());
    }

    #[test]
    fn object_paths_keep_spaces() {
        let location = StorageLocation::resolve("/tmp/with space", Path::new("/")).expect("resolves");
        let (_, prefix) = location.open().expect("opens");
        assert_eq!(prefix.as_ref(), "tmp/with space");
    }
}
