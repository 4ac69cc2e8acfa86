//! The `[source]` and `[sink]` keys of `type = "files"`.

use serde::Deserialize;
use sluice_engine::source::{AfterCommit, OnChange};
use sluice_engine::spec::schema::SchemaSpec;
use sluice_engine::units::HumanDuration;
use toml::Spanned;

/// How input files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Comma-separated values (RFC 4180 quoting, newlines inside quotes).
    Csv,
    /// Newline-delimited JSON: one object a line.
    Json,
    /// Apache Parquet.
    Parquet,
}

impl InputFormat {
    /// The format a glob's extension suggests (`*.csv.gz` is CSV).
    pub fn from_pattern(pattern: &str) -> Option<Self> {
        let lower = super::streamed::Compression::strip(pattern).to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(InputFormat::Csv)
        } else if lower.ends_with(".json") || lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Some(InputFormat::Json)
        } else if lower.ends_with(".parquet") {
            Some(InputFormat::Parquet)
        } else {
            None
        }
    }
}

/// `[source] type = "files"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSourceConfig {
    /// Folder path (relative to the pipeline file) or URL to read from.
    pub url: Spanned<String>,
    /// Glob of the files to read, relative to `url`; `*` stays within one
    /// folder, `**` crosses folders. Names starting with `_` or `.` are
    /// never read.
    #[serde(default = "default_pattern")]
    pub pattern: Spanned<String>,
    /// `csv`, `json` (NDJSON) or `parquet`; default: from the pattern's
    /// extension.
    pub format: Option<Spanned<InputFormat>>,
    /// CSV only: whether the first line names the columns (default true).
    pub header: Option<Spanned<bool>>,
    /// CSV only: the one-character field delimiter (default `,`).
    pub delimiter: Option<Spanned<String>>,
    /// Column names and types in file order; inferred when absent.
    pub schema: Option<Spanned<SchemaSpec>>,
    /// What becomes of a file read before that changes: `append` (default:
    /// one that only grew is read from where it ended, any other change is
    /// read whole), `new_version` (read whole) or `ignore` (never read
    /// again).
    /// Default `append`, and `new_version` when `after_commit` removes the
    /// files (a file at a path read before is then a new file).
    pub on_change: Option<Spanned<OnChange>>,
    /// Inputs last modified longer than this before the newest input seen
    /// are neither planned nor remembered, so the log's memory of files
    /// stays bounded (like Spark's `maxFileAge`). Unset: every file is
    /// remembered.
    pub max_file_age: Option<Spanned<HumanDuration>>,
    /// What becomes of a batch's files once it is committed: `keep`
    /// (default), `delete`, or `move` (below `move_to`, same names).
    pub after_commit: Option<Spanned<AfterCommit>>,
    /// With `after_commit = "move"`: the folder or prefix, on the same store
    /// as `url`, that committed files are moved below.
    pub move_to: Option<Spanned<String>>,
    /// Local folders only: follow symbolic links whose target lies outside
    /// the folder (default false: such a link is skipped with a warning;
    /// links within the folder are always followed).
    pub follow_symlinks: Option<Spanned<bool>>,
}

fn default_pattern() -> Spanned<String> {
    Spanned::new(0..0, "*".to_string())
}

/// How output files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Apache Parquet.
    #[default]
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl OutputFormat {
    /// The file extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
        }
    }
}

/// `[sink] type = "files"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSinkConfig {
    /// Folder path (relative to the pipeline file) or URL to write to.
    pub url: Spanned<String>,
    /// `parquet` (default), `csv` or `json` (NDJSON).
    #[serde(default)]
    pub format: OutputFormat,
    /// Parquet only: `zstd` (default), `snappy`, `gzip`, `lz4`, `brotli`
    /// or `none`.
    pub compression: Option<Spanned<String>>,
    /// Parquet only: the level of `compression`: zstd 1–22 (default 1),
    /// gzip 0–9 (default 6), brotli 0–11 (default 1).
    pub compression_level: Option<Spanned<i64>>,
    /// Columns whose values name hive-style folders (`country=FR/`); they
    /// are left out of the files themselves.
    #[serde(default)]
    pub partition_by: Vec<String>,
}
