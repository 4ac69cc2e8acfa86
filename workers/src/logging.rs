//! Logs to standard error, as text or as JSON lines, with every value that
//! came from the environment replaced by its `${env:NAME}`: whichever crate
//! logs a SQL literal or a URL at debug level, no secret reaches the log.
//!
//! In JSON, each line carries the fields of the spans it was written in:
//! every line written while a batch runs names its `batch_id`, `attempt`
//! and `worker`.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use sluice_engine::spec::SpecFile;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, with the fields of its spans.
    Json,
}

impl LogFormat {
    /// Text on a terminal, JSON otherwise (a log collector, a file).
    pub fn detect() -> Self {
        if io::stderr().is_terminal() { LogFormat::Text } else { LogFormat::Json }
    }
}

/// Crates whose debug lines can show a derived form of a secret: at most
/// their `info` lines are written.
const QUIET_TARGETS: [&str; 2] = ["datafusion=info", "sqlparser=info"];

/// The pipeline files whose environment values are redacted from the logs.
static REDACT_WITH: Mutex<Vec<Arc<SpecFile>>> = Mutex::new(Vec::new());
/// The progress bar on screen, if any: log lines are written around it.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Starts logging to standard error in `format`, filtered by `SLUICE_LOG`
/// (default `warn,sluice=info`).
pub fn init(format: LogFormat) -> crate::traces::Exporting {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn,sluice=info"));
    // DataFusion and its SQL parser log plans and tokens at debug level,
    // after constants are folded: `upper('${env:X}')` would show as the
    // upper-cased secret, which no redaction recognises. Their debug lines
    // are never written, whatever `SLUICE_LOG` asks for.
    let filter = QUIET_TARGETS.iter().fold(filter, |filter, target| match target.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    });
    let lines = tracing_subscriber::fmt::layer().with_writer(|| RedactingStderr).with_target(false);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => lines.with_ansi(io::stderr().is_terminal()).with_filter(filter).boxed(),
        LogFormat::Json => lines.json().with_current_span(false).with_span_list(true).with_filter(filter).boxed(),
    };
    // The log lines' filter is theirs alone: spans are exported (with
    // OTEL_EXPORTER_OTLP_ENDPOINT) whatever SLUICE_LOG says.
    let (traces, exporting) = crate::traces::layer::<Registry>();
    let layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = std::iter::once(lines).chain(traces).collect();
    tracing_subscriber::registry().with(layers).init();
    exporting
}

/// Redacts the environment values of `file` from every log line from now on.
pub fn redact_with(file: Arc<SpecFile>) {
    REDACT_WITH.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(file);
}

/// Shows `bar` below the log lines until [`hide_progress`].
pub fn show_progress(bar: ProgressBar) {
    *PROGRESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bar);
}

/// Takes the progress bar off the screen.
pub fn hide_progress() {
    if let Some(bar) = PROGRESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
        bar.finish_and_clear();
    }
}

struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = {
            let files = REDACT_WITH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut text = String::from_utf8_lossy(buf).into_owned();
            for file in files.iter() {
                text = file.redact(&text);
            }
            text
        };
        let progress = PROGRESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match progress {
            Some(bar) => bar.suspend(|| io::stderr().write_all(text.as_bytes()))?,
            None => io::stderr().write_all(text.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
