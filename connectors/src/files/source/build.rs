//! A files source from its `[source]` table, every problem collected.

use std::sync::atomic::AtomicU64;

use globset::GlobBuilder;
use sluice_engine::Result;
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
        let opened = location.as_ref().and_then(|location| {
            location.open().map_err(|e| problems.0.push(component.error("url", e.to_string(), None))).ok()
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
            on_change: config.on_change,
            follow_symlinks: config.follow_symlinks.is_some_and(|follow| *follow.get_ref()),
            skipped: AtomicU64::new(0),
            warned: Warned::default(),
        })
    }
}
