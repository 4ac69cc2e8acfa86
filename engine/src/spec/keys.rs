//! Where a key is in the file, and how problems are gathered.

use std::path::PathBuf;

use toml::Spanned;
use toml::de::DeValue;

use super::diag::{Diagnostic, Diagnostics, SpecFile};
use super::raw::{Component, RawValue};

/// Keeps the value, or adds the problems to `problems`. An error without
/// any problem in it still counts as one, so that every `None` is reported.
pub(super) fn collect<T>(result: Result<T, Diagnostics>, problems: &mut Diagnostics) -> Option<T> {
    result
        .map_err(|found| {
            if found.is_empty() {
                problems.0.push(Diagnostic {
                    file: PathBuf::new(),
                    line: 1,
                    column: 1,
                    key_path: String::new(),
                    message: "a connector refused its table without saying why (a bug in sluice)".into(),
                    hint: None,
                });
            }
            problems.extend(found);
        })
        .ok()
}

/// Splits a `[source]`/`[sink]` table into its `type` and the rest.
pub(super) fn component<'a>(
    file: &'a SpecFile,
    key: &'static str,
    value: Option<RawValue<'a>>,
    problems: &mut Diagnostics,
) -> Option<Component<'a>> {
    let Some(mut value) = value else {
        problems.0.push(file.diagnostic(
            0..0,
            key,
            format!("missing table [{key}]"),
            Some(format!("add [{key}] with type = \"files\" and url = \"<folder>\"")),
        ));
        return None;
    };
    let span = value.span();
    let DeValue::Table(table) = value.get_mut() else {
        problems.0.push(file.diagnostic(span, key, "must be a table", Some(format!("write it as [{key}]"))));
        return None;
    };
    let kind = match table.remove("type") {
        Some(kind) => match kind.get_ref().as_str() {
            Some(text) => Spanned::new(kind.span(), text.to_string()),
            None => {
                problems.0.push(file.diagnostic(kind.span(), format!("{key}.type"), "must be a string", None));
                return None;
            }
        },
        None => {
            problems.0.push(file.diagnostic(
                span,
                format!("{key}.type"),
                "missing key `type`",
                Some("for example type = \"files\"".into()),
            ));
            return None;
        }
    };
    Some(Component::new(key, kind, value, file))
}

/// Where `a.b` is written in the file (its key; for a table, its name in
/// the header): for problems found after reading, when only the path is
/// known. The key of the nearest table on the path that is written, if
/// `a.b` is not; the file's start if none is. Read from the file's spanned
/// tree, so a key is found however it is written (`a.b = 1` in the root,
/// quoted, inline).
pub(super) fn locate_key(text: &str, key_path: &str) -> std::ops::Range<usize> {
    let Ok(root) = toml::de::DeTable::parse(text) else { return 0..0 };
    let mut table = root.get_ref();
    let mut found = 0..0;
    for part in key_path.split('.') {
        let Some((key, value)) = table.get_key_value(part) else { break };
        found = key.span();
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_for_late_problems() {
        let text = "[pipeline]\nname = \"x\"\n\n[transform]\n  sql = \"SELECT 1\"\n";
        assert_eq!(locate_key(text, "transform.sql"), 37..40);
        assert_eq!(&text[locate_key(text, "transform")], "transform");
        assert_eq!(locate_key(text, "transform.missing"), 24..33, "the table, when the key is not written");
        assert_eq!(locate_key(text, "workers.concurrency"), 0..0);
        // Written in ways a line scan would not see.
        let dotted = "pipeline.name = \"x\"\ntrigger = { max_files_per_batch = 0 }\n";
        assert_eq!(&dotted[locate_key(dotted, "trigger.max_files_per_batch")], "max_files_per_batch");
        assert_eq!(&dotted[locate_key(dotted, "pipeline.name")], "name");
        let quoted = "[sink]\n\"url\" = \"out\"\n";
        assert_eq!(&quoted[locate_key(quoted, "sink.url")], "\"url\"");
    }
}
