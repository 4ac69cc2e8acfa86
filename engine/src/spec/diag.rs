//! Problems found in a pipeline file, each pointing at `FILE:LINE:COL`
//! and the key path, printed all at once by `sluice validate`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::storage::{StorageLocation, StorageOptions};

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// Dotted key path such as `source.pattern`; empty for the whole file.
    pub key_path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        // A message of several lines (DataFusion's often are) goes on
        // indented, so that every line that starts at the margin names a
        // place in a file.
        write!(f, "{}", self.message.trim_end().replace('\n', "\n  "))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {}", hint.trim_end().replace('\n', "\n  "))?;
        }
        Ok(())
    }
}

/// Every problem found in one pipeline file; the error of loading one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the problems of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The text of a pipeline file, the values substituted into it from the
/// environment, and the place problems are collected.
pub struct SpecFile {
    path: PathBuf,
    text: Arc<str>,
    /// `(value, placeholder)` of every `${env:NAME}` and `${file:PATH}`
    /// substituted, the placeholder without its `${}`.
    secrets: Mutex<Vec<(String, String)>>,
    /// The files `${file:PATH}` read, with the value read.
    secret_files: Mutex<Vec<(PathBuf, String)>>,
    /// `[storage]`, once read.
    storage: OnceLock<StorageOptions>,
}

impl SpecFile {
    /// A pipeline file read from `path`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        SpecFile {
            path: path.into(),
            text: text.into(),
            secrets: Mutex::default(),
            secret_files: Mutex::default(),
            storage: OnceLock::new(),
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A location written in the file: relative paths are taken from the
    /// file's folder, and a bucket's store is built with `[storage]`.
    pub fn location(&self, raw: &str) -> Result<StorageLocation, String> {
        let location = StorageLocation::resolve(raw, &self.base_dir())?;
        Ok(location.with_options(self.storage.get().cloned().unwrap_or_default()))
    }

    /// `[storage]`, as read (with its secrets filled in).
    pub fn storage(&self) -> StorageOptions {
        self.storage.get().cloned().unwrap_or_default()
    }

    pub(crate) fn set_storage(&self, options: StorageOptions) {
        let _ = self.storage.set(options);
    }

    pub(crate) fn remember_secret(&self, value: String, name: String) {
        if !value.is_empty() {
            self.secrets().push((value, name));
        }
    }

    pub(crate) fn remember_secret_file(&self, path: PathBuf, value: String) {
        self.secret_files.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((path, value));
    }

    /// Whether a file a `${file:PATH}` read now holds another value (a
    /// rotated credential) or cannot be read: the pipeline should be loaded
    /// again before its next batch.
    pub fn secret_files_changed(&self) -> bool {
        let files = self.secret_files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        files.iter().any(|(path, value)| super::raw::read_secret_file(path).ok().as_ref() != Some(value))
    }

    fn secrets(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.secrets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `text` holds a value that came from the environment (of
    /// three characters or more, as [`SpecFile::redact`] counts them).
    pub fn holds_secret(&self, text: &str) -> bool {
        self.secrets().iter().any(|(value, _)| value.len() >= 3 && text.contains(value.as_str()))
    }

    /// Replaces every value that came from the environment or a secret
    /// file with the `${env:NAME}` or `${file:PATH}` it came from, so that
    /// no secret reaches a log. A value
    /// shown percent-encoded (inside a URL) is found too. Values of one or
    /// two characters (a delimiter, a flag) are not treated as secrets.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets();
        let secrets: Vec<&(String, String)> = secrets.iter().filter(|(value, _)| value.len() >= 3).collect();
        if secrets.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        if out.contains('%') {
            let decoded = percent_encoding::percent_decode_str(&out).decode_utf8_lossy().into_owned();
            if secrets.iter().any(|(value, _)| decoded.contains(value.as_str())) {
                out = decoded;
            }
        }
        for (value, name) in secrets {
            let placeholder = format!("${{{name}}}");
            out = out.replace(value.as_str(), &placeholder);
            // A path is often shown without its outer slashes, and a value
            // inside a JSON log line or a Debug field with its quotes and
            // backslashes escaped.
            let bare = value.trim_matches('/');
            let debug = format!("{value:?}");
            let escaped = [
                serde_json::to_string(value).unwrap_or_default(),
                serde_json::to_string(debug.trim_matches('"')).unwrap_or_default(),
                debug,
            ];
            // A value that a URL parser cut at a delimiter (a raw `@` or `/`
            // in a password) is shown in pieces: each long piece is hidden.
            // The parts before and after each delimiter, the longest first.
            let cuts = value.match_indices(['@', '/', '?', '#', ':']).map(|(at, _)| at);
            let mut pieces: Vec<&str> = cuts.flat_map(|at| [&value[..at], &value[at + 1..]]).collect();
            pieces.retain(|piece| piece.len() >= 4);
            pieces.sort_by_key(|piece| std::cmp::Reverse(piece.len()));
            let variants = escaped.iter().map(|quoted| quoted.trim_matches('"')).chain([bare]).chain(pieces);
            for variant in variants {
                if variant.len() >= 3 && variant != value {
                    out = out.replace(variant, &placeholder);
                }
            }
        }
        out
    }

    /// 1-based line and column of a byte offset.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// A problem at `span` of the file.
    pub fn diagnostic(
        &self,
        span: Range<usize>,
        key_path: impl Into<String>,
        message: impl AsRef<str>,
        hint: Option<String>,
    ) -> Diagnostic {
        let (line, column) = self.locate(span.start);
        Diagnostic {
            file: self.path.clone(),
            line,
            column,
            key_path: key_path.into(),
            message: self.redact(message.as_ref()),
            hint: hint.map(|h| self.redact(&h)),
        }
    }
}

impl fmt::Debug for SpecFile {
    /// Without the environment's values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpecFile").field("path", &self.path).finish_non_exhaustive()
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The known word closest to `word`, for "did you mean" hints.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(3) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_columns_in_characters() {
        let file = SpecFile::new("p.toml", "a = 1\n\u{e9}b = 2\n");
        assert_eq!(file.locate(0), (1, 1));
        assert_eq!(file.locate(6), (2, 1));
        assert_eq!(file.locate(8), (2, 2));
    }

    #[test]
    fn indents_the_lines_after_the_first() {
        let file = SpecFile::new("p.toml", "a = 1\n");
        let shown = file.diagnostic(0..0, "a", "first\nsecond\n", Some("do\nthis".into())).to_string();
        assert_eq!(shown, "p.toml:1:1: a: first\n  second\n  hint: do\n  this");
    }

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(closest("pattren", ["pattern", "format", "url"]), Some("pattern"));
        assert_eq!(closest("zzzzzz", ["pattern", "format", "url"]), None);
    }

    #[test]
    fn redacts_substituted_values() {
        let file = SpecFile::new("p.toml", "");
        file.remember_secret("hunter 22@x".into(), "env:PASSWORD".into());
        assert_eq!(file.redact("bad value hunter 22@x"), "bad value ${env:PASSWORD}");
        assert_eq!(file.redact("file:///data/hunter%2022%40x/"), "file:///data/${env:PASSWORD}/");
        assert!(!format!("{file:?}").contains("hunter"));
        file.remember_secret("pa\"ss\\word".into(), "env:QUOTED".into());
        assert_eq!(file.redact(r#"{"message":"x pa\"ss\\word"}"#), r#"{"message":"x ${env:QUOTED}"}"#);
        // A Debug field inside a JSON line: escaped twice.
        assert_eq!(file.redact(r#"{"files":"[\"pa\\\"ss\\\\word\"]"}"#), r#"{"files":"[\"${env:QUOTED}\"]"}"#);
        // A password that a URL parser cut at its raw `@` or `/`.
        file.remember_secret("s3cr@t/Pw#Q?Z:9x".into(), "env:CUT".into());
        assert!(!file.redact("amqp://user:***@t/Pw#Q?Z:9x@host").contains("Pw#Q"));
        assert!(file.holds_secret("SELECT 's3cr@t/Pw#Q?Z:9x'"));
    }
}
