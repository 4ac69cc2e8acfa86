//! The engine's error type: whose fault a failure is and whether a retry
//! can help, so that a worker decides without reading messages.

use std::error::Error as StdError;
use std::fmt;

use datafusion::error::DataFusionError;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who has to act for a failed operation to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The pipeline file or the input data is wrong: the user fixes it.
    User,
    /// A store or broker failed or could not be reached.
    External,
    /// A bug or a broken invariant in sluice.
    Internal,
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline is configured in a way that cannot work.
    #[error("{0}")]
    Config(String),
    /// The pipeline is configured in a way that cannot work, as an
    /// underlying call found out (a folder that cannot be watched, a store
    /// without credentials).
    #[error("{what}: {cause}")]
    Misconfigured {
        /// What could not be done.
        what: String,
        /// Why.
        cause: Cause,
    },
    /// Object storage failed.
    #[error("object storage: {0}")]
    Storage(#[from] object_store::Error),
    /// Object storage failed at a step that says what it was doing.
    #[error("{what}: {cause}")]
    StorageAt {
        /// What was being done.
        what: String,
        /// The store's error.
        cause: object_store::Error,
    },
    /// Planning or running the SQL failed.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// Arrow could not encode or decode data.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An input object is no longer the version its batch was planned with.
    #[error("input {path} changed since its batch was planned: {detail}")]
    InputChanged {
        /// The object, relative to the source.
        path: String,
        /// What differs.
        detail: String,
    },
    /// Output could not be encoded.
    #[error("writing output: {0}")]
    Output(String),
    /// Something sluice made could not be encoded: output, a task.
    #[error("{what}: {cause}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's error.
        cause: Cause,
    },
    /// A record of the checkpoint log could not be read.
    #[error("checkpoint log record {path} is unreadable: {reason}")]
    CorruptLog {
        /// Object path of the record.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record or snapshot of the checkpoint log is in a format newer
    /// than this sluice reads: a newer sluice wrote it.
    #[error("{}", newer_log(path, *format, written_by.as_deref(), *reads))]
    NewerLog {
        /// Object path of the record or snapshot.
        path: String,
        /// The format it is in.
        format: u32,
        /// The version of the sluice that wrote it, if it says.
        written_by: Option<String>,
        /// The newest format this sluice reads.
        reads: u32,
    },
    /// Another writer appended to the log faster, too often in a row.
    #[error("checkpoint log: gave up appending after {attempts} conflicting writers")]
    LogContention {
        /// How many appends were tried.
        attempts: usize,
    },
    /// The log refused a record because of what it already holds.
    #[error("checkpoint log refused the record: {0}")]
    Refused(String),
    /// The message broker failed or could not be reached.
    #[error("broker: {0}")]
    Broker(String),
    /// A call to the message broker's client failed.
    #[error("broker: {what}: {cause}{}", hint.map(|hint| format!("; {hint}")).unwrap_or_default())]
    BrokerCall {
        /// What was asked of the broker.
        what: String,
        /// The client's error, its secrets masked.
        cause: Cause,
        /// What to check first.
        hint: Option<&'static str>,
    },
    /// A batch set aside more malformed records than `[dead_letter]
    /// max_records` allows: its input does not look like what the pipeline
    /// expects, and trying again reads the same input.
    #[error(
        "more than {max_records} malformed records in this batch ([dead_letter] max_records = {max_records}): \
         the input does not look like the pipeline expects; correct [source] (format, delimiter, schema) or raise \
         [dead_letter] max_records, then run `sluice retry`"
    )]
    TooManyDeadLetters {
        /// The limit passed.
        max_records: u64,
    },
    /// A lookup table (`[tables.NAME]`) is missing, unreadable or does not
    /// fit its schema: the batch does not run against nothing.
    #[error("lookup table `{name}` ([tables.{name}]): {reason}")]
    Table {
        /// The table's name.
        name: String,
        /// What is wrong with it.
        reason: String,
        /// Whether its store failed for a while (another try may read it).
        retryable: bool,
    },
    /// A batch's run panicked: a bug, caught so that the process goes on.
    #[error("the batch's run panicked: {0}")]
    Panicked(String),
}

/// An underlying error, kept whole for the code that looks into it
/// ([`Cause::downcast_ref`]) and shown as a text with its secrets masked.
/// Its `Display` and `Debug` print only that text, and it names no source
/// of its own, so nothing that walks an error's chain (a log line,
/// `anyhow`'s `{:#}`) prints what the mask took out. The variants that hold
/// one print it in their own message and do not also return it as their
/// `source()`, so that a printed chain says it once.
pub struct Cause {
    error: Box<dyn StdError + Send + Sync>,
    shown: String,
}

impl Cause {
    /// `error`, shown as its `Display` says.
    pub fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let error = error.into();
        let shown = error.to_string();
        Cause { error, shown }
    }

    /// `error`, shown as `mask` rewrites its `Display` (to take out a
    /// password or a URL).
    pub fn masked(error: impl Into<Box<dyn StdError + Send + Sync>>, mask: impl FnOnce(&str) -> String) -> Self {
        let error = error.into();
        let shown = mask(&error.to_string());
        Cause { error, shown }
    }

    /// The underlying error, if it is a `T`.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.error.downcast_ref()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cause").field(&self.shown).finish()
    }
}

impl StdError for Cause {}

fn newer_log(path: &str, format: u32, written_by: Option<&str>, reads: u32) -> String {
    let (wrote, run) = match written_by {
        Some(version) => (format!("sluice {version}"), format!("sluice {version} or newer")),
        None => ("a newer sluice".to_string(), format!("a sluice that reads log format {format}")),
    };
    format!(
        "checkpoint log object {path} is in log format {format}, written by {wrote}; this sluice ({}) reads log \
         formats up to {}: run {run} on this pipeline",
        env!("CARGO_PKG_VERSION"),
        reads
    )
}

impl Error {
    /// The error of a caught panic, with what its payload said.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Error {
        let text = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Error::Panicked(text)
    }

    /// Whose fault the error is.
    pub fn domain(&self) -> Domain {
        match self {
            Error::Table { retryable: true, .. } => Domain::External,
            Error::Config(_)
            | Error::Misconfigured { .. }
            | Error::NewerLog { .. }
            | Error::InputChanged { .. }
            | Error::TooManyDeadLetters { .. }
            | Error::Table { .. } => Domain::User,
            Error::StorageAt { cause: object_store::Error::NotFound { .. }, .. } => Domain::Internal,
            Error::Storage(_)
            | Error::StorageAt { .. }
            | Error::LogContention { .. }
            | Error::Broker(_)
            | Error::BrokerCall { .. } => Domain::External,
            Error::DataFusion(e) => match e.find_root() {
                DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Domain::External,
                DataFusionError::Internal(_) => Domain::Internal,
                _ => Domain::User,
            },
            Error::Arrow(_) => Domain::User,
            Error::Output(_)
            | Error::Encode { .. }
            | Error::CorruptLog { .. }
            | Error::Refused(_)
            | Error::Panicked(_) => Domain::Internal,
        }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.domain() == Domain::External
    }

    /// Whether no later attempt at the same batch can succeed either, so
    /// that the batch fails at once instead of after `[workers]
    /// max_attempts`: its input is what it is.
    pub fn fails_every_attempt(&self) -> bool {
        matches!(self, Error::TooManyDeadLetters { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "amqp://guest:hunter2@host refused")
    }

    #[test]
    fn a_masked_cause_keeps_its_error_and_shows_no_secret() {
        let error = Error::BrokerCall {
            what: "cannot connect to amqp://guest:***@host".into(),
            cause: Cause::masked(secret_error(), |text| text.replace("hunter2", "***")),
            hint: Some("is the broker running?"),
        };
        let shown = error.to_string();
        assert_eq!(
            shown,
            "broker: cannot connect to amqp://guest:***@host: amqp://guest:***@host refused; is the broker running?"
        );
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
        let mut chain = Vec::new();
        let mut next: Option<&dyn StdError> = Some(&error);
        while let Some(link) = next {
            chain.push(format!("{link} {link:?}"));
            next = link.source();
        }
        // The cause is in the message, once: not also in the chain below it.
        assert!(chain.len() == 1 && !chain.concat().contains("hunter2"), "{chain:?}");
        let source = Cause::masked(secret_error(), |_| String::new());
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(StdError::source(&source).is_none());
    }

    #[test]
    fn a_missing_object_at_a_known_step_is_a_bug_and_other_store_failures_are_external() {
        let missing = Error::StorageAt {
            what: "committed output a.parquet is neither staged nor published".into(),
            cause: object_store::Error::NotFound { path: "a.parquet".into(), source: "gone".into() },
        };
        assert_eq!(missing.domain(), Domain::Internal);
        let down = Error::StorageAt {
            what: "publishing".into(),
            cause: object_store::Error::Generic { store: "S3", source: "timed out".into() },
        };
        assert_eq!(down.domain(), Domain::External);
        assert!(down.is_retryable());
    }
}
