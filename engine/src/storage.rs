//! Where data and logs live: a URL (`file:///...`, `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix`) and the object store
//! that serves it. All engine I/O goes through `object_store`, so a local
//! folder and a bucket behave alike.
//!
//! Credentials and endpoints come from the standard variables of each
//! store (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`, ...;
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...), overridden by the pipeline file's
//! `[storage]` table, whose keys are the same names in lower case.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use object_store::ObjectStore;
#[cfg(feature = "cloud")]
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
#[cfg(feature = "cloud")]
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
#[cfg(feature = "cloud")]
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::Result;

/// The URL schemes of object stores, besides `file`.
const CLOUD_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// What a build without the clouds says of a cloud location or setting.
#[cfg(not(feature = "cloud"))]
const NO_CLOUD: &str = "this sluice is built without the clouds (S3, GCS, Azure); use a sluice built with the \
                        cargo feature `cloud` (on by default)";

/// `[storage]`: settings of the object stores, `(key, value)` sorted by
/// key. Keys are `object_store`'s names (`aws_endpoint`, `aws_region`,
/// `google_service_account`, `azure_storage_account_name`, ...).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(Arc<Vec<(String, String)>>);

impl StorageOptions {
    /// Checks every key; the error names the first unknown one.
    pub fn new(mut options: Vec<(String, String)>) -> Result<Self, String> {
        for (key, _) in &options {
            if !Self::is_known(key) {
                #[cfg(not(feature = "cloud"))]
                return Err(format!("`{key}` is a cloud store's setting, and {NO_CLOUD}"));
                #[cfg(feature = "cloud")]
                return Err(format!("unknown storage key `{key}`"));
            }
        }
        options.sort();
        Ok(StorageOptions(Arc::new(options)))
    }

    /// Whether any of the stores knows `key`.
    #[cfg(feature = "cloud")]
    pub fn is_known(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        AmazonS3ConfigKey::from_str(&key).is_ok()
            || GoogleConfigKey::from_str(&key).is_ok()
            || AzureConfigKey::from_str(&key).is_ok()
    }

    /// Whether any of the stores knows `key`: none, in a build without
    /// the clouds.
    #[cfg(not(feature = "cloud"))]
    pub fn is_known(_key: &str) -> bool {
        false
    }

    /// The settings that parse as keys of one store (`AmazonS3ConfigKey`,
    /// `GoogleConfigKey`, `AzureConfigKey`), aliases included.
    pub fn of<K: FromStr>(&self) -> impl Iterator<Item = (K, &str)> {
        self.0.iter().filter_map(|(key, value)| Some((key.to_ascii_lowercase().parse().ok()?, value.as_str())))
    }
}

impl fmt::Debug for StorageOptions {
    /// Keys only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(key, _)| key)).finish()
    }
}

/// Stores already built, by bucket and settings: one HTTP client per
/// bucket in a process, however many locations point into it.
static STORES: LazyLock<Mutex<HashMap<StoreKey, Arc<dyn ObjectStore>>>> = LazyLock::new(Mutex::default);

/// `scheme://bucket` and the settings a store was built with.
type StoreKey = (String, Vec<(String, String)>);

/// A folder of an object store, named by URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageLocation {
    url: Url,
    options: StorageOptions,
}

impl StorageLocation {
    /// Reads a location as written in a pipeline file: a URL with a scheme,
    /// or a local path, relative paths being taken from `base_dir`.
    pub fn resolve(raw: &str, base_dir: &Path) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is empty; give a folder path or a URL such as file:///data/in or s3://bucket/in".into());
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let url = Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
            return match scheme {
                "file" => Ok(Self::directory(url)),
                #[cfg(not(feature = "cloud"))]
                scheme if CLOUD_SCHEMES.contains(&scheme) => Err(format!("names a {scheme}:// bucket, and {NO_CLOUD}")),
                #[cfg(feature = "cloud")]
                scheme if CLOUD_SCHEMES.contains(&scheme) => match url.host_str() {
                    Some(host) if !host.is_empty() => Ok(Self::directory(url)),
                    _ => Err(format!("names no bucket; write it as {scheme}://BUCKET/PREFIX")),
                },
                other => {
                    Err(format!("unsupported scheme \"{other}\"; use a local folder, file://, s3://, gs:// or az://"))
                }
            };
        }
        let path = Path::new(raw);
        let joined = if path.is_absolute() { path.to_path_buf() } else { absolute(base_dir).join(path) };
        let url = Url::from_directory_path(normalize(&joined))
            .map_err(|()| format!("cannot turn {} into a file URL", joined.display()))?;
        Ok(StorageLocation { url, options: StorageOptions::default() })
    }

    /// The same location, its store built with `options`.
    pub fn with_options(mut self, options: StorageOptions) -> Self {
        self.options = options;
        self
    }

    fn directory(mut url: Url) -> Self {
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        StorageLocation { url, options: StorageOptions::default() }
    }

    /// The location `child` below this one (`child` uses `/`).
    pub fn join(&self, child: &str) -> Self {
        let child = child.trim_matches('/');
        let mut url = self.url.clone();
        url.set_path(&format!("{}{child}/", self.url.path()));
        StorageLocation { url, options: self.options.clone() }
    }

    /// The URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder, for `file://` locations.
    pub fn local_path(&self) -> Option<PathBuf> {
        match self.url.scheme() {
            "file" => self.url.to_file_path().ok(),
            _ => None,
        }
    }

    /// Whether this is a local folder.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// The bucket (or container) of a cloud location.
    pub fn bucket(&self) -> Option<&str> {
        match self.is_local() {
            true => None,
            false => self.url.host_str(),
        }
    }

    /// What to set when no credentials were found for this location's
    /// store.
    pub fn credentials_hint(&self) -> &'static str {
        match self.url.scheme() {
            "gs" => {
                "set GOOGLE_SERVICE_ACCOUNT (a key file) or GOOGLE_SERVICE_ACCOUNT_KEY (its JSON), or \
                 google_service_account / google_service_account_key in [storage]; an emulator's key JSON \
                 takes \"gcs_base_url\" and \"disable_oauth\": true"
            }
            "az" | "azure" | "abfs" | "abfss" => {
                "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token, or a client \
                 id and secret), or the same keys in lower case in [storage]; for Azurite, \
                 AZURE_STORAGE_USE_EMULATOR=true"
            }
            _ => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible \
                 server), or aws_access_key_id and aws_secret_access_key in [storage]"
            }
        }
    }

    /// The object store and the prefix of this location inside it, as a
    /// source opens it: deleting a local file leaves its folder, even empty
    /// (the inbox stays where files are dropped).
    pub fn open_keeping_folders(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        if self.is_local() {
            let prefix = ObjectPath::from_url_path(self.url.path()).map_err(object_store::Error::from)?;
            return Ok((Arc::new(LocalFileSystem::new()), prefix));
        }
        self.open()
    }

    /// The object store and the prefix of this location inside it. Deleting
    /// a local file removes the folders it leaves empty.
    pub fn open(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let prefix = ObjectPath::from_url_path(self.url.path()).map_err(object_store::Error::from)?;
        if self.is_local() {
            let store = LocalFileSystem::new().with_automatic_cleanup(true);
            return Ok((Arc::new(store), prefix));
        }
        let bucket = format!("{}://{}", self.url.scheme(), self.url.host_str().unwrap_or_default());
        let key = (bucket, self.options.0.as_ref().clone());
        let mut stores = STORES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok((store.clone(), prefix));
        }
        let store = self.build(&key.0)?;
        stores.insert(key, store.clone());
        Ok((store, prefix))
    }

    /// Builds the store of `bucket` (`scheme://name`) from the environment
    /// and `[storage]`.
    #[cfg(not(feature = "cloud"))]
    fn build(&self, _bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        Err(crate::Error::Config(format!("{self}: {NO_CLOUD}")))
    }

    /// Builds the store of `bucket` (`scheme://name`) from the environment
    /// and `[storage]`.
    #[cfg(feature = "cloud")]
    fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let store: Arc<dyn ObjectStore> = match self.url.scheme() {
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(bucket);
                for (key, value) in self.options.of::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build()?)
            }
            "gs" => {
                let mut builder = GoogleCloudStorageBuilder::from_env().with_url(bucket);
                for (key, value) in self.options.of::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build()?)
            }
            _ => {
                let mut builder = MicrosoftAzureBuilder::from_env().with_url(self.url.as_str());
                for (key, value) in self.options.of::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build()?)
            }
        };
        Ok(store)
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
