//! The engine's error type: whose fault a failure is and whether a retry
//! can help, so that a worker decides without reading messages.

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
    /// Object storage failed.
    #[error("object storage: {0}")]
    Storage(#[from] object_store::Error),
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
    /// A record of the checkpoint log could not be read.
    #[error("checkpoint log record {path} is unreadable: {reason}")]
    CorruptLog {
        /// Object path of the record.
        path: String,
        /// What is wrong with it.
        reason: String,
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

impl Error {
    /// Whose fault the error is.
    pub fn domain(&self) -> Domain {
        match self {
            Error::Table { retryable: true, .. } => Domain::External,
            Error::Config(_) | Error::InputChanged { .. } | Error::TooManyDeadLetters { .. } | Error::Table { .. } => {
                Domain::User
            }
            Error::Storage(_) | Error::LogContention { .. } | Error::Broker(_) => Domain::External,
            Error::DataFusion(e) => match e.find_root() {
                DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Domain::External,
                DataFusionError::Internal(_) => Domain::Internal,
                _ => Domain::User,
            },
            Error::Arrow(_) => Domain::User,
            Error::Output(_) | Error::CorruptLog { .. } | Error::Refused(_) | Error::Panicked(_) => Domain::Internal,
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
