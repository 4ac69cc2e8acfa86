//! Logs to standard error, with every value that came from the
//! environment replaced by its `${env:NAME}`: whichever crate logs a SQL
//! literal or a URL at debug level, no secret reaches the log.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use sluice_engine::spec::SpecFile;
use tracing_subscriber::EnvFilter;

/// The pipeline files whose environment values are redacted from the logs.
static REDACT_WITH: Mutex<Vec<Arc<SpecFile>>> = Mutex::new(Vec::new());

/// Starts logging to standard error, filtered by `SLUICE_LOG`
/// (default `warn,sluice=info`).
pub fn init() {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn,sluice=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .init();
}

/// Redacts the environment values of `file` from every log line from now on.
pub fn redact_with(file: Arc<SpecFile>) {
    REDACT_WITH.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(file);
}

struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let files = REDACT_WITH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.is_empty() {
            io::stderr().write_all(buf)?;
        } else {
            let mut text = String::from_utf8_lossy(buf).into_owned();
            for file in files.iter() {
                text = file.redact(&text);
            }
            io::stderr().write_all(text.as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
