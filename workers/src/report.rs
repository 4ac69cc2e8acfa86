//! What `sluice run` prints when it ends: one line for people, or with
//! `--json` one object for schedulers and scripts.

use std::path::Path;

use serde::Serialize;

use crate::exit::Exit;
use crate::run::RunSummary;

/// The end of one `sluice run`, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The pipeline's `[pipeline] name`.
    pub pipeline: String,
    /// Batches this run committed.
    pub batches: u64,
    /// Input files in those batches (0 for a stream source).
    pub files: u64,
    /// Stream messages in those batches (0 for a files source).
    pub messages: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Malformed records set aside as dead letters.
    pub dead_letters: u64,
    /// Batches of the log that wait for `sluice retry`, at the end.
    pub failed_batches: u64,
    /// Stream batches that failed and handed their messages back to the
    /// queue instead.
    pub handed_back: u64,
    /// Batches given up because their inputs changed before they ran.
    pub abandoned: u64,
    /// Redelivered messages recognised as committed already.
    pub duplicates: u64,
    /// Seconds from start to end.
    pub elapsed_s: f64,
    /// How the run ended: any failed batch is exit code 1. Shown as the
    /// number, `exit_code`.
    #[serde(rename = "exit_code")]
    pub exit: Exit,
}

impl RunReport {
    /// The report of `summary`, for the pipeline `pipeline`.
    pub fn new(pipeline: &str, summary: &RunSummary, elapsed_s: f64) -> RunReport {
        let failed_batches = summary.failed_in_log;
        let handed_back = summary.failed.saturating_sub(summary.failed_in_log);
        let exit = if failed_batches > 0 || handed_back > 0 { Exit::BatchesFailed } else { Exit::Done };
        RunReport {
            pipeline: pipeline.to_string(),
            batches: summary.batches,
            files: summary.files,
            messages: summary.messages,
            rows_in: summary.rows_in,
            rows_out: summary.rows_out,
            dead_letters: summary.rows_dead_lettered,
            failed_batches,
            handed_back,
            abandoned: summary.abandoned,
            duplicates: summary.duplicates,
            elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
            exit,
        }
    }

    /// The one line for people; `path` is the pipeline file, for the
    /// `sluice retry` it suggests. `stream` says whether the inputs are
    /// messages or files.
    pub fn to_text(&self, path: &Path, stream: bool) -> String {
        let (inputs, unit) = if stream { (self.messages, "messages") } else { (self.files, "files") };
        let mut line = format!(
            "sluice: {}: {} batches, {inputs} {unit}, {} rows in, {} rows out, {} dead letters in {:.2}s",
            self.pipeline, self.batches, self.rows_in, self.rows_out, self.dead_letters, self.elapsed_s
        );
        if self.duplicates > 0 {
            line.push_str(&format!(
                "; {} redelivered messages were in committed batches already (not written again)",
                self.duplicates
            ));
        }
        if self.abandoned > 0 {
            line.push_str(&format!("; {} batches abandoned (inputs changed, planned again)", self.abandoned));
        }
        if self.failed_batches > 0 {
            line.push_str(&format!(
                "; {} batches failed and wait for `sluice retry {} --failed` (`sluice status` shows why)",
                self.failed_batches,
                path.display()
            ));
        }
        if self.handed_back > 0 {
            line.push_str(&format!(
                "; {} batches failed and handed their messages back to the queue (the log shows why)",
                self.handed_back
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        RunSummary { batches: 2, files: 3, rows_in: 10, rows_out: 9, rows_dead_lettered: 1, ..RunSummary::default() }
    }

    #[test]
    fn a_clean_run_is_done_and_says_so_in_one_line() {
        let report = RunReport::new("orders", &summary(), 1.50049);
        assert_eq!(report.exit, Exit::Done);
        assert_eq!(
            report.to_text(Path::new("p.toml"), false),
            "sluice: orders: 2 batches, 3 files, 10 rows in, 9 rows out, 1 dead letters in 1.50s"
        );
        let json = serde_json::to_value(&report).expect("a report is JSON");
        assert_eq!(json["pipeline"], "orders");
        assert_eq!(json["dead_letters"], 1);
        assert_eq!(json["elapsed_s"], 1.5);
        assert_eq!(json["exit_code"], 0);
    }

    #[test]
    fn failed_batches_are_exit_code_one_and_named_in_the_line() {
        let failed = RunSummary { failed: 3, failed_in_log: 2, ..summary() };
        let report = RunReport::new("orders", &failed, 0.5);
        assert_eq!((report.failed_batches, report.handed_back, report.exit.code()), (2, 1, 1));
        let line = report.to_text(Path::new("p.toml"), true);
        assert!(line.starts_with("sluice: orders: 2 batches, 0 messages,"), "{line}");
        assert!(line.contains("2 batches failed and wait for `sluice retry p.toml --failed`"), "{line}");
        assert!(line.contains("1 batches failed and handed their messages back"), "{line}");
    }
}
