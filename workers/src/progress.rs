//! The progress bar of `sluice run --until-caught-up` on a terminal:
//! batches done of the batches known, rows per second, and the time left.
//! Not a terminal, no bar: logs and the summary line stay clean.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::logging;

/// A progress bar, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A bar on standard error if `show`.
    pub fn new(show: bool) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("[{bar:32}] {pos}/{len} batches  {msg}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            logging::show_progress(bar.clone());
            bar
        });
        Progress { bar, started: Instant::now() }
    }

    /// The work as now known: batches done so far, and still to do.
    pub fn set_work(&self, done: u64, to_do: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(done + to_do);
            bar.set_position(done);
        }
    }

    /// One more batch done; `rows` read so far.
    pub fn batch_done(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{:.0} rows/s", rows as f64 / seconds));
        }
    }
}

/// The bar leaves the screen with the run, before the summary line.
impl Drop for Progress {
    fn drop(&mut self) {
        if self.bar.is_some() {
            logging::hide_progress();
        }
    }
}
