//! Watching a local source folder: file-system notifications (inotify on
//! Linux) wake the controller instead of a listing on a timer, so an idle
//! `sluice run` costs no CPU.

use std::path::{Path, PathBuf};

use notify::{Event, EventKind, RecursiveMode, Watcher};
use sluice_engine::source::Watch;
use sluice_engine::{Error, Result};
use tokio::sync::mpsc;

/// Watches `folder` and everything below it. Events about names starting
/// with `_` or `.` (files being written, engine files) are ignored, as the
/// listing ignores those files.
pub(crate) fn watch_folder(folder: &Path) -> Result<Watch> {
    // One slot: changes that come while one is waiting are the same news.
    let (tx, changes) = mpsc::channel(1);
    let root = folder.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) if is_news(&root, &event) => {
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        // The kernel's queue overflowed, or similar: list to be sure.
        Err(error) => {
            tracing::debug!("file watcher: {error}");
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| watch_error(folder, e))?;
    watcher.watch(folder, RecursiveMode::Recursive).map_err(|e| watch_error(folder, e))?;
    Ok(Watch { changes, guard: Box::new(watcher) })
}

/// Whether the event may mean new input: a file created, written, closed
/// or moved in, whose name below the folder has no part starting with `_`
/// or `.`. Reads and metadata changes are not news.
fn is_news(root: &Path, event: &Event) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other
    ) && !matches!(event.kind, EventKind::Modify(notify::event::ModifyKind::Metadata(_)));
    kind && (event.need_rescan() || event.paths.iter().any(|path| visible(root, path)))
}

fn visible(root: &Path, path: &Path) -> bool {
    let relative: PathBuf = path.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf());
    relative.components().all(|part| {
        let name = part.as_os_str().to_string_lossy();
        !(name.starts_with('_') || name.starts_with('.'))
    })
}

fn watch_error(folder: &Path, error: notify::Error) -> Error {
    Error::Misconfigured {
        what: format!("cannot watch the source folder {}", folder.display()),
        cause: sluice_engine::Cause::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn new_and_written_files_are_news() {
        let root = Path::new("/in");
        assert!(is_news(root, &event(EventKind::Create(CreateKind::File), "/in/a.csv")));
        assert!(is_news(root, &event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/in/d/a.csv")));
    }

    #[test]
    fn hidden_files_reads_and_metadata_are_not_news() {
        let root = Path::new("/in");
        assert!(!is_news(root, &event(EventKind::Create(CreateKind::File), "/in/.a.csv.tmp")));
        assert!(!is_news(root, &event(EventKind::Create(CreateKind::File), "/in/_sluice/log/1.json")));
        assert!(!is_news(root, &event(EventKind::Access(notify::event::AccessKind::Any), "/in/a.csv")));
        let metadata = ModifyKind::Metadata(notify::event::MetadataKind::Any);
        assert!(!is_news(root, &event(EventKind::Modify(metadata), "/in/a.csv")));
    }

    #[tokio::test]
    async fn a_file_dropped_in_the_folder_wakes_the_watcher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut watch = watch_folder(dir.path()).expect("watch");
        std::fs::write(dir.path().join(".hidden"), "x").expect("write");
        std::fs::write(dir.path().join("a.csv"), "id\n1\n").expect("write");
        let woke = tokio::time::timeout(std::time::Duration::from_secs(10), watch.changes.recv()).await;
        assert_eq!(woke.expect("a notification within 10 s"), Some(()));
    }
}
