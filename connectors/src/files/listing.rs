//! Listing a local source folder: a name that cannot be read is passed
//! over, with a warning, and the rest of the folder is listed.
//!
//! The object store's own listing of a local folder fails whole on one
//! name it cannot hold (bytes that are not UTF-8, a tab or a newline) or on
//! a symbolic link that loops, and it follows every link, wherever it
//! leads. Here each such name is skipped and counted instead, and a link
//! whose target lies outside the source folder is not followed unless
//! `[source] follow_symlinks = true`.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::Path as FsPath;
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use object_store::path::Path;
use walkdir::WalkDir;

/// What one listing of a local folder found.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// The files, with the metadata the object store gives them.
    pub(super) objects: Vec<ObjectMeta>,
    /// Names passed over, relative to the folder and lossily decoded,
    /// each with why.
    pub(super) skipped: Vec<(String, &'static str)>,
}

/// Lists the regular files below `folder` (whose object path is
/// `prefix`), leaving out hidden names (a part starting with `_` or `.`)
/// and skipping the names that cannot be read.
pub(super) fn list_folder(folder: &FsPath, prefix: &Path, follow_symlinks: bool) -> std::io::Result<Listing> {
    let root = std::fs::canonicalize(folder)?;
    let mut listing = Listing::default();
    let relative_name = |path: &FsPath| path.strip_prefix(folder).unwrap_or(path).to_string_lossy().into_owned();
    let mut walker = WalkDir::new(folder).min_depth(1).follow_links(true).sort_by_file_name().into_iter();
    while let Some(entry) = walker.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let name = error.path().map(relative_name).unwrap_or_default();
                match error.io_error().map(std::io::Error::kind) {
                    // Removed while the folder was listed.
                    Some(std::io::ErrorKind::NotFound) => {}
                    _ if error.loop_ancestor().is_some() => listing.skipped.push((name, "a symbolic link that loops")),
                    _ => listing.skipped.push((name, "cannot be listed")),
                }
                continue;
            }
        };
        let is_dir = entry.file_type().is_dir();
        let Some(name) = entry.file_name().to_str() else {
            listing.skipped.push((relative_name(entry.path()), "the name is not UTF-8"));
            if is_dir {
                walker.skip_current_dir();
            }
            continue;
        };
        if name.starts_with('_') || name.starts_with('.') {
            if is_dir {
                walker.skip_current_dir();
            }
            continue;
        }
        if entry.path_is_symlink() && !follow_symlinks {
            let inside = std::fs::canonicalize(entry.path()).is_ok_and(|target| target.starts_with(&root));
            if !inside {
                listing.skipped.push((relative_name(entry.path()), "a symbolic link that leads out of the folder"));
                if is_dir {
                    walker.skip_current_dir();
                }
                continue;
            }
        }
        if is_dir {
            continue;
        }
        let relative = relative_name(entry.path());
        if !entry.file_type().is_file() {
            listing.skipped.push((relative, "not a regular file"));
            continue;
        }
        if is_partial_write(name) {
            continue;
        }
        // Every part is UTF-8: each folder on the way was checked as it
        // was entered.
        let parts: Vec<&str> =
            entry.path().strip_prefix(folder).unwrap_or(entry.path()).iter().filter_map(|part| part.to_str()).collect();
        let Ok(location) = Path::parse(format!("{prefix}/{}", parts.join("/"))) else {
            listing.skipped.push((relative, "the name holds a control character (a tab, a newline)"));
            continue;
        };
        match entry.metadata() {
            Ok(metadata) => listing.objects.push(object_meta(&metadata, location)),
            Err(error) if error.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {}
            Err(_) => listing.skipped.push((relative, "cannot be read")),
        }
    }
    Ok(listing)
}

/// A write the local store has under way: `<name>#<digits>`, renamed to
/// `<name>` once complete.
fn is_partial_write(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// The metadata the local object store gives a file, so that a listed
/// input compares equal with what a later `head` of it says.
fn object_meta(metadata: &Metadata, location: Path) -> ObjectMeta {
    let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let micros = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0u64;
    let size = metadata.len();
    ObjectMeta {
        location,
        last_modified: DateTime::<Utc>::from(modified),
        size,
        e_tag: Some(format!("{inode:x}-{micros:x}-{size:x}")),
        version: None,
    }
}

/// The names already warned about, so that a folder listed every poll
/// interval warns once of each.
#[derive(Debug, Default)]
pub(super) struct Warned(Mutex<HashSet<String>>);

impl Warned {
    /// Logs a warning for each skipped name not warned about before.
    pub(super) fn warn(&self, skipped: &[(String, &'static str)]) {
        let mut warned = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (name, why) in skipped {
            if warned.insert(name.clone()) {
                // `{:?}` escapes what a name may hold (a newline), so that
                // it cannot forge a log line.
                tracing::warn!("skipping the input {name:?}: {why}; the other files are read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;

    use super::*;

    fn prefix_of(dir: &FsPath) -> Path {
        Path::from_filesystem_path(dir).expect("prefix")
    }

    #[tokio::test]
    async fn listed_metadata_is_what_the_store_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/x #1.csv"), "id\n1\n").expect("write");
        let prefix = prefix_of(dir.path());
        let listing = list_folder(dir.path(), &prefix, false).expect("list");
        assert_eq!(listing.objects.len(), 1);
        let head = LocalFileSystem::new().head(&listing.objects[0].location).await.expect("head");
        assert_eq!(listing.objects[0], head);
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_names_are_skipped_and_the_rest_listed() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("inbox");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        for name in ["good.csv", "sub/deep.csv", "tab\there.csv", "new\nline.csv", "_hidden.csv", "x.csv#3"] {
            std::fs::write(root.join(name), "id\n1\n").expect("write");
        }
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff.csv")), "id\n1\n").expect("write");
        std::os::unix::fs::symlink("..", root.join("sub/loop")).expect("symlink");
        std::fs::write(dir.path().join("secret.csv"), "id\n1\n").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), root.join("out.csv")).expect("symlink");
        std::os::unix::fs::symlink(root.join("good.csv"), root.join("in.csv")).expect("symlink");

        let prefix = prefix_of(&root);
        let names = |listing: &Listing| -> Vec<String> {
            listing.objects.iter().map(|meta| meta.location.filename().unwrap_or_default().to_string()).collect()
        };
        let listing = list_folder(&root, &prefix, false).expect("list");
        assert_eq!(names(&listing), ["good.csv", "in.csv", "deep.csv"]);
        let mut why: Vec<&str> = listing.skipped.iter().map(|(_, why)| *why).collect();
        why.sort();
        assert_eq!(
            why,
            [
                "a symbolic link that leads out of the folder",
                "a symbolic link that loops",
                "the name holds a control character (a tab, a newline)",
                "the name holds a control character (a tab, a newline)",
                "the name is not UTF-8",
            ]
        );

        let followed = list_folder(&root, &prefix, true).expect("list");
        assert_eq!(names(&followed), ["good.csv", "in.csv", "out.csv", "deep.csv"]);
    }
}
