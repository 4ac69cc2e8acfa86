//! A files source from its `[source]` table, every problem collected.

use std::sync::atomic::AtomicU64;

use globset::GlobBuilder;
use sluice_engine::Result;
use sluice_engine::source::{AfterCommit, OnChange};
use sluice_engine::spec::{Component, Diagnostics};
use sluice_engine::storage::StorageLocation;

use super::super::config::{FilesSourceConfig, InputFormat};
use super::super::listing::Warned;
use super::FilesSource;

impl FilesSource {
    /// The same source reading below `location` instead: `sluice test`
    /// reads a test's input from a folder of its own, decoded as the
    /// pipeline's files are.
    pub fn reading_from(mut self, location: StorageLocation) -> Result<Self> {
        let (store, prefix) = location.open()?;
        self.location = location;
        self.store = store;
        self.prefix = prefix;
        Ok(self)
    }

    /// Reads and checks `[source]`, collecting every problem.
    pub fn from_component(component: &Component<'_>) -> Result<Self, Diagnostics> {
        let config: FilesSourceConfig = component.parse()?;
        let file = component.file();
        let mut problems = Diagnostics::default();

        let location = file
            .location(config.url.get_ref())
            .map_err(|message| problems.0.push(component.error("url", message, None)))
            .ok();
        let pattern = GlobBuilder::new(config.pattern.get_ref())
            .literal_separator(true)
            .build()
            .map(|glob| glob.compile_matcher())
            .map_err(|e| {
                problems.0.push(component.error(
                    "pattern",
                    format!("is not a valid glob: {e}"),
                    Some("for example \"*.csv\" or \"**/*.json\"".into()),
                ))
            })
            .ok();
        let format = match &config.format {
            Some(format) => Some(*format.get_ref()),
            None => {
                let guessed = InputFormat::from_pattern(config.pattern.get_ref());
                if guessed.is_none() {
                    problems.0.push(component.error(
                        "format",
                        "missing key `format`: the pattern does not say how the files are encoded",
                        Some("add format = \"csv\", \"json\" or \"parquet\"".into()),
                    ));
                }
                guessed
            }
        };
        if format.is_some_and(|f| f != InputFormat::Csv) {
            for key in ["header", "delimiter"] {
                let given = match key {
                    "header" => config.header.is_some(),
                    _ => config.delimiter.is_some(),
                };
                if given {
                    problems.0.push(component.error(key, "applies to csv only", None));
                }
            }
        }
        let delimiter = match &config.delimiter {
            Some(d) if d.get_ref().len() == 1 => d.get_ref().as_bytes()[0],
            Some(d) => {
                problems.0.push(component.error(
                    "delimiter",
                    format!("must be one ASCII character, not \"{}\"", d.get_ref()),
                    Some("for example delimiter = \";\" or delimiter = \"\\t\"".into()),
                ));
                b','
            }
            None => b',',
        };
        let schema = match &config.schema {
            Some(schema) => {
                schema.get_ref().to_arrow(file, "source.schema").map_err(|found| problems.extend(found)).ok()
            }
            None => None,
        };
        if config.follow_symlinks.is_some() && location.as_ref().is_some_and(|location| !location.is_local()) {
            problems.0.push(component.error(
                "follow_symlinks",
                "applies to a local folder only: an object store has no symbolic links",
                Some("remove it".into()),
            ));
        }
        let after_commit = config.after_commit.as_ref().map_or(AfterCommit::Keep, |after| *after.get_ref());
        let on_change = match &config.on_change {
            Some(on_change) if *on_change.get_ref() == OnChange::Append && after_commit != AfterCommit::Keep => {
                problems.0.push(component.error(
                    "on_change",
                    format!(
                        "\"append\" reads a grown file on from where it ended, and after_commit = \"{}\" \
                         removes each file once its batch is committed: a file at the same path is a new file",
                        after_commit.as_str()
                    ),
                    Some("remove on_change (a file dropped again at a path is read whole)".into()),
                ));
                OnChange::NewVersion
            }
            Some(on_change) if *on_change.get_ref() != OnChange::NewVersion && config.max_file_age.is_some() => {
                problems.0.push(component.error(
                    "on_change",
                    format!(
                        "\"{}\" compares a changed file with the version planned before, and max_file_age \
                         forgets that version once it is old: a file changed after that would be read whole",
                        on_change.get_ref().as_str()
                    ),
                    Some("remove on_change (a changed file is read whole as a new version), or max_file_age".into()),
                ));
                OnChange::NewVersion
            }
            Some(on_change) => *on_change.get_ref(),
            None if after_commit != AfterCommit::Keep || config.max_file_age.is_some() => OnChange::NewVersion,
            None => OnChange::Append,
        };
        let max_file_age = config.max_file_age.as_ref().map(|age| age.get_ref().0);
        if max_file_age.is_some_and(|age| age.is_zero()) {
            problems.0.push(component.error(
                "max_file_age",
                "must be longer than 0s: every file but the newest would be left unread",
                Some("for example max_file_age = \"7d\"".into()),
            ));
        }
        let move_to = match (&config.move_to, after_commit) {
            (None, AfterCommit::Move) => {
                problems.0.push(component.error(
                    "after_commit",
                    "\"move\" needs `move_to`: the folder the committed files are moved to",
                    Some("add move_to = \"<folder>\" (a name starting with _ inside url is never read)".into()),
                ));
                None
            }
            (Some(_), AfterCommit::Keep | AfterCommit::Delete) => {
                problems.0.push(component.error(
                    "move_to",
                    "applies to after_commit = \"move\" only",
                    Some("add after_commit = \"move\", or remove move_to".into()),
                ));
                None
            }
            (Some(raw), AfterCommit::Move) => match (file.location(raw.get_ref()), &location) {
                (Err(message), _) => {
                    problems.0.push(component.error("move_to", message, None));
                    None
                }
                (Ok(to), Some(from)) => match check_move_to(from, &to) {
                    Ok(()) => to
                        .open()
                        .map(|(_, prefix)| (to, prefix))
                        .map_err(|e| {
                            problems.0.push(component.error("move_to", e.to_string(), None));
                        })
                        .ok(),
                    Err((message, hint)) => {
                        problems.0.push(component.error("move_to", message, Some(hint)));
                        None
                    }
                },
                (Ok(_), None) => None,
            },
            (None, _) => None,
        };
        let opened = location.as_ref().and_then(|location| {
            location
                .open_keeping_folders()
                .map_err(|e| problems.0.push(component.error("url", e.to_string(), None)))
                .ok()
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        let (Some(location), Some(pattern), Some(format), Some((store, prefix))) = (location, pattern, format, opened)
        else {
            unreachable!("every missing part was reported as a problem");
        };
        Ok(FilesSource {
            location,
            store,
            prefix,
            pattern,
            format,
            header: config.header.is_none_or(|h| *h.get_ref()),
            delimiter,
            schema,
            on_change,
            after_commit,
            max_file_age,
            move_to,
            follow_symlinks: config.follow_symlinks.is_some_and(|follow| *follow.get_ref()),
            skipped: AtomicU64::new(0),
            warned: Warned::default(),
        })
    }
}

/// Whether committed files can move from `from` to `to`: on the same store
/// (a move is a rename there), and out of what the source lists.
fn check_move_to(from: &StorageLocation, to: &StorageLocation) -> Result<(), (String, String)> {
    let store_of = |location: &StorageLocation| {
        (location.is_local(), location.url().scheme().to_string(), location.url().host_str().map(str::to_string))
    };
    if store_of(from) != store_of(to) {
        return Err((
            format!("{to} is not on the store of url ({from}): files move by a rename within one store"),
            "move_to = a folder (or a prefix of the same bucket) beside the inbox".into(),
        ));
    }
    let (from_path, to_path) = (from.url().path().trim_end_matches('/'), to.url().path().trim_end_matches('/'));
    if to_path == from_path {
        return Err(("is url itself: the moved files would be read again".into(), "move_to = \"<url>/_done\"".into()));
    }
    if let Some(inside) = to_path.strip_prefix(from_path).and_then(|rest| rest.strip_prefix('/'))
        && !inside.split('/').any(|part| part.starts_with('_') || part.starts_with('.'))
    {
        return Err((
            format!("lies inside url, where the moved files would be listed again ({inside})"),
            format!("use a folder whose name starts with _ (never read), for example _{inside}"),
        ));
    }
    Ok(())
}
