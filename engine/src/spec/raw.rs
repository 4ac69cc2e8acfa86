//! The first stage of reading a pipeline file: the TOML tree with the span
//! of every key and value, `${env:NAME}` substituted, and the generic step
//! that turns one table into a plain config struct while reporting every
//! unknown key at once.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserializer, forward_to_deserialize_any};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Diagnostic, Diagnostics, SpecFile, closest};

/// A value of the pipeline file with its span.
pub(crate) type RawValue<'a> = Spanned<DeValue<'a>>;

/// A `[source]` or `[sink]` table: its `type` and the rest of its keys,
/// kept raw until the connector of that type reads them into its own
/// config struct.
#[derive(Clone)]
pub struct Component<'a> {
    key: String,
    kind: Spanned<String>,
    value: RawValue<'a>,
    file: &'a SpecFile,
}

impl<'a> Component<'a> {
    pub(crate) fn new(key: impl Into<String>, kind: Spanned<String>, value: RawValue<'a>, file: &'a SpecFile) -> Self {
        Component { key: key.into(), kind, value, file }
    }

    /// The table's key in the file: `source`, `sink` or `tables.NAME`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `type` the table names.
    pub fn kind(&self) -> &str {
        self.kind.get_ref()
    }

    /// The pipeline file.
    pub fn file(&self) -> &SpecFile {
        self.file
    }

    /// Reads the table (without `type`) into the connector's config.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        parse_table(self.file, &self.key, &self.value)
    }

    /// The span of `key` in this table (its value), or of the table.
    pub fn span_of(&self, key: &str) -> Range<usize> {
        self.value
            .get_ref()
            .as_table()
            .and_then(|table| table.get(key))
            .map_or_else(|| self.value.span(), Spanned::span)
    }

    /// A problem with the value of `key` in this table.
    pub fn error(&self, key: &str, message: impl AsRef<str>, hint: Option<String>) -> Diagnostic {
        self.file.diagnostic(self.span_of(key), format!("{}.{key}", self.key), message, hint)
    }

    /// The error for a `type` no connector registers.
    pub fn unknown_kind(&self, known: &[&str]) -> Diagnostics {
        let kind = self.kind();
        let mut hint = format!("known {} types: {}", self.key, known.join(", "));
        if let Some(near) = closest(kind, known.iter().copied()) {
            hint = format!("did you mean \"{near}\"? {hint}");
        }
        Diagnostics(vec![self.file.diagnostic(
            self.kind.span(),
            format!("{}.type", self.key),
            format!("unknown {} type \"{kind}\"", self.key),
            Some(hint),
        )])
    }
}

impl Component<'_> {
    /// The problem of a `type` this build of sluice leaves out: its
    /// connector needs the cargo feature `feature`.
    pub fn not_built(&self, feature: &str) -> Diagnostics {
        Diagnostics(vec![self.file.diagnostic(
            self.kind.span(),
            format!("{}.type", self.key),
            format!("this sluice is built without the {} connector", self.kind()),
            Some(format!(
                "use a sluice built with the cargo feature `{feature}` (on by default): cargo build --release -p \
                 sluice-workers --features {feature}"
            )),
        )])
    }
}

/// Reads one table of the file into `T`.
///
/// Every key `T` does not know is reported, each with its position and the
/// nearest known key, before serde sees the table; then serde reports the
/// first wrong type or missing key.
pub(crate) fn parse_table<T: DeserializeOwned>(
    file: &SpecFile,
    path: &str,
    value: &RawValue<'_>,
) -> Result<T, Diagnostics> {
    let Some(table) = value.get_ref().as_table() else {
        return Err(Diagnostics(vec![file.diagnostic(
            value.span(),
            path,
            format!("must be a table, not {}", value.get_ref().type_str()),
            Some(format!("write it as a [{path}] section")),
        )]));
    };
    if let Some(fields) = struct_fields::<T>() {
        let unknown = unknown_keys(file, path, table, fields);
        if !unknown.is_empty() {
            return Err(unknown);
        }
    }
    T::deserialize(ValueDeserializer::from(value.clone())).map_err(|error| {
        let span = error.span().unwrap_or_else(|| value.span());
        let message = error.message().to_string();
        let key_path = match missing_field(&message) {
            Some(field) => join(path, field),
            None => key_path_at(table, path, &span).unwrap_or_else(|| path.to_string()),
        };
        let hint = type_hint(&message);
        Diagnostics(vec![file.diagnostic(span, key_path, message, hint)])
    })
}

/// Reports every key of `table` not in `known`; at the top level
/// (`path` empty) the keys are the file's tables.
pub(crate) fn unknown_keys(file: &SpecFile, path: &str, table: &DeTable<'_>, known: &[&str]) -> Diagnostics {
    let mut problems = Diagnostics::default();
    for (key, _) in table.iter() {
        let name: &str = key.get_ref();
        if known.contains(&name) {
            continue;
        }
        let near = closest(name, known.iter().copied());
        let (message, hint) = if path.is_empty() {
            let hint = match near {
                Some(near) => format!("did you mean [{near}]?"),
                None => format!("a pipeline file has these tables: {}", known.join(", ")),
            };
            (format!("unknown table `{name}`"), hint)
        } else {
            let hint = match near {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("known keys of [{path}]: {}", known.join(", ")),
            };
            (format!("unknown key `{name}`"), hint)
        };
        problems.0.push(file.diagnostic(key.span(), join(path, name), message, Some(hint)));
    }
    problems
}

/// How to write the value serde expected, for its common type errors.
fn type_hint(message: &str) -> Option<String> {
    let expected = message.split("expected ").nth(1)?;
    let hint = if ["usize", "u32", "u64", "i64", "an integer"].iter().any(|t| expected.starts_with(t)) {
        "write a whole number without quotes, e.g. 4"
    } else if expected.starts_with("a boolean") {
        "write true or false, without quotes"
    } else if expected.starts_with("a sequence") {
        "write a list, e.g. [\"country\", \"day\"]"
    } else if expected.starts_with("a string") || expected.starts_with("a borrowed string") {
        "write the value in double quotes"
    } else {
        return None;
    };
    Some(hint.to_string())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The dotted path of the innermost key whose value covers `span`.
fn key_path_at(table: &DeTable<'_>, path: &str, span: &Range<usize>) -> Option<String> {
    for (key, value) in table.iter() {
        let value_span = value.span();
        let covers = value_span.start <= span.start && span.end <= value_span.end;
        let on_key = key.span().start <= span.start && span.end <= key.span().end;
        if covers || on_key {
            let here = join(path, key.get_ref());
            return match value.get_ref().as_table() {
                Some(inner) => key_path_at(inner, &here, span).or(Some(here)),
                None => Some(here),
            };
        }
    }
    None
}

/// Replaces every `${env:NAME}` in the strings of `table` with the
/// variable's value, remembering the value so that it is never printed.
pub(crate) fn substitute_env(file: &SpecFile, table: &mut DeTable<'_>, path: &str) -> Diagnostics {
    let mut problems = Diagnostics::default();
    for (key, value) in table.iter_mut() {
        substitute_value(file, value, &join(path, key.get_ref()), &mut problems);
    }
    problems
}

fn substitute_value(file: &SpecFile, value: &mut RawValue<'_>, path: &str, problems: &mut Diagnostics) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains("${") => match expand(text, &file.base_dir()) {
            Ok((expanded, secrets)) => {
                for (value, name) in secrets {
                    if let Some(path) = name.strip_prefix("file:") {
                        file.remember_secret_file(resolve_secret_path(path, &file.base_dir()), value.clone());
                    }
                    file.remember_secret(value, name);
                }
                *text = expanded.into();
            }
            Err((message, hint)) => problems.0.push(file.diagnostic(span, path, message, Some(hint))),
        },
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_value(file, item, &format!("{path}[{i}]"), problems);
            }
        }
        DeValue::Table(inner) => problems.extend(substitute_env(file, inner, path)),
        _ => {}
    }
}

type Expanded = (String, Vec<(String, String)>);

fn expand(text: &str, base_dir: &Path) -> Result<Expanded, (String, String)> {
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err((
                "unterminated `${` in a string".into(),
                "write ${env:NAME} to use the environment variable NAME, ${file:/PATH} to use a file's content".into(),
            ));
        };
        let inner = &after[..end];
        let (value, shown) = if let Some(name) = inner.strip_prefix("env:") {
            match std::env::var(name) {
                Ok(value) => (value, format!("${{env:{name}}}")),
                Err(_) => {
                    return Err((
                        format!("environment variable {name} is not set"),
                        format!("set it before running sluice, e.g. `export {name}=...`"),
                    ));
                }
            }
        } else if let Some(path) = inner.strip_prefix("file:") {
            let value = read_secret_file(&resolve_secret_path(path, base_dir)).map_err(|message| {
                (message, "mount the secret at that path (a Kubernetes or Docker secret), or fix the path".into())
            })?;
            (value, format!("${{file:{path}}}"))
        } else {
            return Err((
                format!("unknown substitution `${{{inner}}}`"),
                "write ${env:NAME} to use the environment variable NAME, or ${file:/PATH} to use the content of \
                 a file (a mounted secret)"
                    .into(),
            ));
        };
        if in_user_info(&out) && value.contains(['@', '/', '?', '#']) {
            return Err((
                format!(
                    "the value of {shown} sits in a URL's user info and holds `@`, `/`, `?` or `#`, which would end \
                     the user info early and leave the rest of the value in the URL's host or path"
                ),
                "percent-encode the value (`@` as %40, `/` as %2F, `?` as %3F, `#` as %23)".into(),
            ));
        }
        out.push_str(&value);
        secrets.push((value, inner.to_string()));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if let Some(after_scheme) = broker_authority(&out)
        && after_scheme.matches('@').count() > 1
    {
        return Err((
            "the URL holds `@` more than once: a user name or password with a raw `@` cannot be \
             read as meant"
                .into(),
            "percent-encode an `@` in the user name or password as %40".into(),
        ));
    }
    Ok((out, secrets))
}

/// Where `${file:PATH}` reads: `PATH` itself if absolute, else taken from
/// the pipeline file's folder.
pub(crate) fn resolve_secret_path(path: &str, base_dir: &Path) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) }
}

/// The largest secret file read: a key, a password, a certificate chain.
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// The content of a secret file, without the line ends at its end (what
/// `echo value > file` adds). The error never shows the content.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("the secret file {} is not a regular file", path.display()));
    }
    if metadata.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!("the secret file {} is over 64 KiB", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("the secret file {} is not UTF-8 text", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Whether text written so far ends inside the user info of a URL: after
/// `scheme://` with no `/`, `?`, `#` or `@` since.
fn in_user_info(before: &str) -> bool {
    match before.rfind("://") {
        Some(at) => !before[at + 3..].contains(['/', '?', '#', '@']),
        None => false,
    }
}

/// The part of an AMQP URL after `://`, where a password with a raw `@`
/// shows as a second `@` (no host, vhost or queue name holds one).
fn broker_authority(url: &str) -> Option<&str> {
    url.strip_prefix("amqp://").or_else(|| url.strip_prefix("amqps://"))
}

/// The field names of a struct that derives `Deserialize`, read by asking
/// it to deserialize from a probe; `None` for anything else.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("field probe"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        alpha: u32,
        beta: Option<String>,
    }

    #[test]
    fn probe_reads_struct_fields() {
        assert_eq!(struct_fields::<Probe>(), Some(&["alpha", "beta"][..]));
        assert_eq!(struct_fields::<String>(), None);
    }

    #[test]
    fn expands_environment_variables() {
        // PATH is set in every environment the tests run in.
        let path = std::env::var("PATH").expect("PATH is set");
        let (out, secrets) = expand("a${env:PATH}b", Path::new(".")).expect("expands");
        assert_eq!(out, format!("a{path}b"));
        assert_eq!(secrets, vec![(path, "env:PATH".to_string())]);
        assert!(expand("${env:SLUICE_SURELY_UNSET_VARIABLE}", Path::new(".")).is_err());
        assert!(expand("${nope}", Path::new(".")).is_err());
        assert!(expand("${env:PATH", Path::new(".")).is_err());
        assert!(expand("amqp://u:p@ss@host:5672/%2f", Path::new(".")).is_err(), "a raw @ in a literal password");
        assert!(expand("amqp://u:p%40ss@host:5672/%2f", Path::new(".")).is_ok());
    }

    #[test]
    fn reads_secret_files_relative_to_the_pipeline_without_their_line_end() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("token"), "s3cret-token\n").expect("write");
        let (out, secrets) = expand("Bearer ${file:token}", dir.path()).expect("expands");
        assert_eq!(out, "Bearer s3cret-token");
        assert_eq!(secrets, vec![("s3cret-token".to_string(), "file:token".to_string())]);
        let missing = expand("${file:/surely/not/a/secret}", dir.path()).expect_err("missing");
        assert!(missing.0.contains("/surely/not/a/secret"), "{missing:?}");
        assert!(expand("${file:.}", dir.path()).expect_err("a folder").0.contains("not a regular file"));
    }
}
