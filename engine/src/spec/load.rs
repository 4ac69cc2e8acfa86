//! Reading a pipeline file from disk, and what identifies one.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, Diagnostics, SpecFile};
use super::parse::parse;
use super::pipeline::{ConnectorRegistry, PipelineSpec};

/// Reads, checks and builds the pipeline in the file at `path`.
pub fn load(path: &Path, registry: &dyn ConnectorRegistry) -> Result<PipelineSpec, Diagnostics> {
    parse(SpecFile::new(path, read(path)?), registry)
}

/// `[pipeline] name` as written in `text`, read without substituting
/// anything: how a worker tells which pipeline a file holds.
pub fn pipeline_name(text: &str) -> Option<String> {
    let root = DeTable::parse(text).ok()?.into_inner();
    match root.get("pipeline")?.get_ref() {
        DeValue::Table(table) => match table.get("name")?.get_ref() {
            DeValue::String(name) => Some(name.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The hex SHA-256 of a pipeline file's text: what a task names, so that
/// a worker runs a batch only with the file it was planned with.
pub fn text_sha256(text: &str) -> String {
    crate::batch::tail_digest(text.as_bytes())
}

/// The text of the pipeline file at `path`: a regular file of at most
/// [`MAX_PIPELINE_FILE_BYTES`], in UTF-8.
pub fn read(path: &Path) -> Result<String, Diagnostics> {
    let unreadable = |message: String, hint: Option<String>| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            key_path: String::new(),
            message,
            hint,
        }])
    };
    // The metadata comes first so that a device, a FIFO or a directory is
    // never opened: reading `/dev/zero` grows without end and opening a
    // FIFO blocks until something writes to it.
    let metadata =
        std::fs::metadata(path).map_err(|e| unreadable(format!("cannot read the pipeline file: {e}"), None))?;
    if !metadata.is_file() {
        return Err(unreadable(
            format!("{} is not a regular file; a pipeline file must be a regular file", path.display()),
            Some("name the .toml file itself, not a directory, device or pipe".into()),
        ));
    }
    if metadata.len() > MAX_PIPELINE_FILE_BYTES {
        return Err(unreadable(
            format!(
                "{} is {} bytes; a pipeline file may be at most 1 MiB ({MAX_PIPELINE_FILE_BYTES} bytes)",
                path.display(),
                metadata.len()
            ),
            None,
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            // The file may have grown since its metadata was read: one byte
            // past the limit is enough to tell.
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PIPELINE_FILE_BYTES + 1), &mut bytes)
        })
        .map_err(|e| unreadable(format!("cannot read the pipeline file: {e}"), None))?;
    if bytes.len() as u64 > MAX_PIPELINE_FILE_BYTES {
        return Err(unreadable(
            format!("{} is over 1 MiB; a pipeline file may be at most 1 MiB", path.display()),
            None,
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        // Point at the first byte that is not UTF-8, counted as the
        // diagnostics count: lines, then characters.
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).unwrap_or_default();
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: valid.matches('\n').count() + 1,
            column: valid[line_start..].chars().count() + 1,
            key_path: String::new(),
            message: "the pipeline file is not valid UTF-8".into(),
            hint: Some("save it as UTF-8 text".into()),
        }])
    })?;
    Ok(text)
}

/// The largest pipeline file `load` reads: far more than any pipeline
/// needs, small enough that a wrong path cannot fill memory.
pub const MAX_PIPELINE_FILE_BYTES: u64 = 1 << 20;
