//! The exit codes of `sluice`, each saying what the caller does next, and
//! the one place an error is given its code.

use std::fmt;
use std::process::ExitCode;

use sluice_engine::error::Domain;

/// How a command ended, as its exit code tells a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `0`: done.
    Done,
    /// `1`: batches failed and wait for `sluice retry` (or tests failed).
    BatchesFailed,
    /// `2`: a bad pipeline file or a bad command line; fix it first.
    Usage,
    /// `3`: a store or broker was unavailable; trying later may succeed.
    Unavailable,
    /// `70`: a bug in sluice (EX_SOFTWARE).
    Internal,
}

/// The text `--help` ends with.
pub const HELP: &str = "Exit codes:\n  \
    0   done\n  \
    1   batches failed and wait for `sluice retry` (`sluice status` shows why); for `sluice test`, a test failed\n  \
    2   a bad pipeline file or command line: fix it, then run again\n  \
    3   a store or broker was unavailable: run again later\n  \
    70  an internal error in sluice: please report it";

impl Exit {
    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::BatchesFailed => 1,
            Exit::Usage => 2,
            Exit::Unavailable => 3,
            Exit::Internal => 70,
        }
    }

    /// The code of an engine error, from whose fault it is.
    pub fn of_engine(error: &sluice_engine::Error) -> Exit {
        match error.domain() {
            Domain::User => Exit::Usage,
            Domain::External => Exit::Unavailable,
            Domain::Internal => Exit::Internal,
        }
    }

    /// The code of an error a command returned: the first cause in its
    /// chain that sluice knows decides; anything unknown is a bug.
    pub fn of(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if let Some(shown) = cause.downcast_ref::<Shown>() {
                return shown.exit;
            }
            if let Some(engine) = cause.downcast_ref::<sluice_engine::Error>() {
                return Exit::of_engine(engine);
            }
            if cause.is::<object_store::Error>() || cause.is::<std::io::Error>() {
                return Exit::Unavailable;
            }
        }
        Exit::Internal
    }
}

/// An exit code is shown as its number.
impl serde::Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// An error as it may be shown (secrets redacted from its text), with the
/// exit code its cause had: what a command returns once the message of an
/// error has been made safe to print.
#[derive(Debug)]
pub struct Shown {
    /// The code of the error before it was redacted.
    pub exit: Exit,
    /// Its text, redacted.
    pub message: String,
}

impl Shown {
    /// The engine error `error`, its text passed through `redact`.
    pub fn engine(error: &sluice_engine::Error, redact: impl Fn(&str) -> String) -> Shown {
        Shown { exit: Exit::of_engine(error), message: redact(&error.to_string()) }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Shown {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_has_its_code() {
        let bad = sluice_engine::Error::Config("no such key".into());
        assert_eq!(Exit::of_engine(&bad), Exit::Usage);
        let down = sluice_engine::Error::LogContention { attempts: 5 };
        assert_eq!(Exit::of_engine(&down), Exit::Unavailable);
        let bug = sluice_engine::Error::Panicked("index out of bounds".into());
        assert_eq!(Exit::of_engine(&bug), Exit::Internal);
        let codes: Vec<u8> =
            [Exit::Done, Exit::BatchesFailed, Exit::Usage, Exit::Unavailable, Exit::Internal].map(Exit::code).into();
        assert_eq!(codes, [0, 1, 2, 3, 70]);
    }

    #[test]
    fn the_cause_decides_through_context_and_redaction() {
        let store = object_store::Error::NotFound { path: "in/a.csv".into(), source: "gone".into() };
        let wrapped = anyhow::Error::new(sluice_engine::Error::Storage(store)).context("pipeline orders");
        assert_eq!(Exit::of(&wrapped), Exit::Unavailable);
        let shown =
            Shown::engine(&sluice_engine::Error::Config("secret=hunter2".into()), |t| t.replace("hunter2", "***"));
        assert_eq!(shown.to_string(), "secret=***");
        assert_eq!(Exit::of(&anyhow::Error::new(shown).context("pipeline orders")), Exit::Usage);
        assert_eq!(Exit::of(&anyhow::anyhow!("the command panicked")), Exit::Internal);
    }
}
