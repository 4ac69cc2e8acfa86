//! Parts of a pipeline file read apart: `[tables.NAME]`, `[storage]`, and
//! the keys that only fit a files source or a stream.

use toml::Spanned;
use toml::de::DeValue;

use super::diag::{Diagnostics, SpecFile};
use super::keys::{collect, locate_key};
use super::pipeline::ConnectorRegistry;
use super::raw::{Component, RawValue};
use super::sections::{OBJECT_TRIGGER_KEYS, STREAM_TRIGGER_KEYS};
use crate::storage::StorageOptions;

/// Reads `[tables.NAME]`: each a lookup table of files, its name one the
/// SQL can write unquoted and not `input`.
pub(super) fn lookup_tables(
    file: &SpecFile,
    value: Option<RawValue<'_>>,
    registry: &dyn ConnectorRegistry,
    problems: &mut Diagnostics,
) -> Vec<crate::lookup::LookupTable> {
    let Some(value) = value else { return Vec::new() };
    let Some(entries) = value.get_ref().as_table() else {
        problems.0.push(file.diagnostic(
            value.span(),
            "tables",
            format!("must be a table of tables, not {}", value.get_ref().type_str()),
            Some("write each as [tables.NAME] with url = \"<folder>\"".into()),
        ));
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (name, table) in entries {
        let key = format!("tables.{}", name.get_ref());
        let valid = name.get_ref().starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid || name.get_ref() == crate::sql::INPUT_TABLE {
            problems.0.push(file.diagnostic(
                name.span(),
                &key,
                "names a lookup table: lower-case letters, digits and `_`, starting with a letter or `_`, and not \
                 `input` (the pipeline's own input)",
                None,
            ));
            continue;
        }
        if table.get_ref().as_table().is_none() {
            problems.0.push(file.diagnostic(
                table.span(),
                &key,
                "must be a table",
                Some(format!("write it as [{key}]")),
            ));
            continue;
        }
        let component = Component::new(key, Spanned::new(name.span(), "files".to_string()), table.clone(), file);
        if let Some(source) = collect(registry.table(&component), problems) {
            tables.push(crate::lookup::LookupTable { name: name.get_ref().to_string(), source });
        }
    }
    tables
}

/// Reads `[storage]`: string, boolean or integer values under the keys of
/// `object_store`'s builders, each key checked.
pub(super) fn storage_options(file: &SpecFile, value: &RawValue<'_>) -> Result<StorageOptions, Diagnostics> {
    let mut problems = Diagnostics::default();
    let Some(table) = value.get_ref().as_table() else {
        return Err(Diagnostics(vec![file.diagnostic(
            value.span(),
            "storage",
            "must be a table",
            Some("write it as [storage] with keys such as aws_endpoint = \"http://127.0.0.1:9000\"".into()),
        )]));
    };
    let mut options = Vec::new();
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let path = format!("storage.{name}");
        if !StorageOptions::is_known(name) {
            problems.0.push(
                file.diagnostic(
                    key.span(),
                    &path,
                    format!("unknown storage key `{name}`"),
                    Some(
                        "keys are object_store's settings in lower case, e.g. aws_region, aws_endpoint, \
                     aws_allow_http, google_service_account, azure_storage_account_name"
                            .into(),
                    ),
                ),
            );
            continue;
        }
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Boolean(flag) => flag.to_string(),
            DeValue::Integer(number) => number.to_string(),
            other => {
                problems.0.push(file.diagnostic(
                    value.span(),
                    &path,
                    format!("must be a string, a boolean or a number, not {}", other.type_str()),
                    None,
                ));
                continue;
            }
        };
        options.push((name.to_string(), text));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    StorageOptions::new(options)
        .map_err(|message| Diagnostics(vec![file.diagnostic(value.span(), "storage", message, None)]))
}

/// The settings that only make sense for files sources, or only for
/// streams, given to the other kind.
pub(super) fn check_source_kind(file: &SpecFile, stream: bool, trigger_keys: &[String], dispatch: bool) -> Diagnostics {
    let mut problems = Diagnostics::default();
    let (misplaced, message, hint) = match stream {
        true => (
            OBJECT_TRIGGER_KEYS,
            "applies to files sources only",
            "a stream's micro-batch closes at max_records, max_wait or max_bytes, whichever comes first",
        ),
        false => (
            STREAM_TRIGGER_KEYS,
            "applies to kafka and amqp sources only",
            "a files source's batches are cut by max_files_per_batch and max_bytes_per_batch",
        ),
    };
    for key in trigger_keys.iter().filter(|key| misplaced.contains(&key.as_str())) {
        let path = format!("trigger.{key}");
        problems.0.push(file.diagnostic(locate_key(file.text(), &path), &path, message, Some(hint.to_string())));
    }
    if stream && dispatch {
        problems.0.push(file.diagnostic(
            locate_key(file.text(), "workers.dispatch"),
            "workers.dispatch",
            "a stream source's micro-batches run in the `sluice run` process that reads them",
            Some("remove [workers] dispatch; it hands out batches of files sources to `sluice worker`s".into()),
        ));
    }
    problems
}
