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

/// Where `a.b` is written in the file (its key, or its table header):
/// for problems found after reading, when only the path is known.
pub(super) fn locate_key(text: &str, key_path: &str) -> std::ops::Range<usize> {
    let (table, key) = key_path.split_once('.').unwrap_or((key_path, ""));
    let header = format!("[{table}]");
    let mut offset = 0;
    let mut in_table = false;
    let mut header_at = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('[') {
            in_table = trimmed.starts_with(&header);
            if in_table && header_at.is_none() {
                header_at = Some(offset + indent);
            }
        } else if in_table && !key.is_empty() {
            let name = trimmed.split('=').next().unwrap_or("").trim();
            if name == key {
                return offset + indent..offset + indent + key.len();
            }
        }
        offset += line.len();
    }
    header_at.map_or(0..0, |at| at..at + header.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_for_late_problems() {
        let text = "[pipeline]\nname = \"x\"\n\n[transform]\n  sql = \"SELECT 1\"\n";
        assert_eq!(locate_key(text, "transform.sql"), 37..40);
        assert_eq!(locate_key(text, "transform"), 23..34);
        assert_eq!(locate_key(text, "workers.concurrency"), 0..0);
    }
}
