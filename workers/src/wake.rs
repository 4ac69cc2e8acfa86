//! When an idle controller looks at its source again: a watched source
//! (a local folder) wakes it on a change, with a listing every
//! `[trigger] reconcile_interval` as a safety net; any other source is
//! listed every `[trigger] poll_interval`. Between wake-ups the controller
//! sleeps: no timer spins and no thread runs.

use std::time::Duration;

use sluice_engine::source::Watch;
use sluice_engine::spec::PipelineSpec;
use tokio::sync::watch;

/// How long to let a burst of changes settle before listing: a file copied
/// in gives several events.
const SETTLE: Duration = Duration::from_millis(50);

/// The controller's alarm clock.
#[derive(Debug)]
pub(crate) struct Wake {
    watch: Option<Watch>,
    interval: Duration,
    poll: Duration,
}

impl Wake {
    /// Watches the source if `watching` and the source can be watched;
    /// otherwise wakes every poll interval.
    pub(crate) fn new(spec: &PipelineSpec, watching: bool) -> Self {
        let watch = if watching {
            match spec.source.objects().map_or(Ok(None), |source| source.watch()) {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!(
                        pipeline = %spec.name,
                        "listing the source every {} instead: {}",
                        spec.trigger.poll_interval,
                        spec.file.redact(&error.to_string())
                    );
                    None
                }
            }
        } else {
            None
        };
        let interval = match &watch {
            Some(_) => spec.trigger.reconcile_interval.0,
            None => spec.trigger.poll_interval.0,
        };
        if watch.is_some() {
            tracing::debug!(pipeline = %spec.name, "watching the source folder; listing it every {interval:?} anyway");
        }
        Wake { watch, interval, poll: spec.trigger.poll_interval.0 }
    }

    /// Waits for a change of the source, the listing interval, `sooner`,
    /// or `stop`, whichever comes first.
    pub(crate) async fn wait(&mut self, sooner: Option<Duration>, stop: &mut watch::Receiver<bool>) {
        let wait = sooner.map_or(self.interval, |sooner| sooner.min(self.interval));
        match &mut self.watch {
            Some(watch) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                    changed = watch.changes.recv() => {
                        if changed.is_some() {
                            tokio::time::sleep(SETTLE).await;
                            while watch.changes.try_recv().is_ok() {}
                        } else {
                            // The watcher is gone: poll from now on.
                            self.watch = None;
                            self.interval = self.poll;
                        }
                    }
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}
