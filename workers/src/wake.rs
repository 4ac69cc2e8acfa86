//! When an idle controller looks at its source again, and how: a watched
//! source (a local folder) wakes it on a change, with a listing every
//! `[trigger] reconcile_interval` as a safety net; a source with
//! `[trigger] notifications` wakes it when a bucket notification arrives,
//! and only the objects the notifications name are looked at, with a
//! listing at start and every `reconcile_interval`; any other source is
//! listed every `[trigger] poll_interval`. Between wake-ups the controller
//! sleeps: no timer spins and no thread runs.

use std::time::{Duration, Instant};

use sluice_connectors::notifications::{Notice, NotificationFeed};
use sluice_engine::Result;
use sluice_engine::batch::InputObject;
use sluice_engine::source::{Source, Watch};
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
    /// Bucket notifications, when the pipeline reads them.
    feed: Option<NotificationFeed>,
    /// When the source was last listed.
    listed_at: Option<Instant>,
    reconcile: Duration,
}

/// What a look at the source found.
#[derive(Debug)]
pub(crate) struct Found {
    /// The input objects, all of them (a listing) or those notified.
    pub(crate) inputs: Vec<InputObject>,
    /// The notifications they came from, to settle once planned.
    pub(crate) notices: Vec<Notice>,
}

impl Wake {
    /// Watches the source if `watching` and the source can be watched;
    /// otherwise wakes every poll interval.
    pub(crate) fn new(spec: &PipelineSpec, watching: bool) -> Result<Self> {
        let reconcile = spec.trigger.reconcile_interval.0;
        if let Some(queue) = spec.trigger.notification_queue().filter(|_| watching) {
            tracing::debug!(pipeline = %spec.name, "reading bucket notifications; listing every {reconcile:?}");
            let (feed, watch) = NotificationFeed::start(queue, &spec.file.storage())?;
            let poll = spec.trigger.poll_interval.0;
            return Ok(Wake {
                watch: Some(watch),
                interval: reconcile,
                poll,
                feed: Some(feed),
                listed_at: None,
                reconcile,
            });
        }
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
        Ok(Wake { watch, interval, poll: spec.trigger.poll_interval.0, feed: None, listed_at: None, reconcile })
    }

    /// Looks at the source: lists it, unless bucket notifications are read
    /// and no listing is due, in which case only the objects they name are
    /// looked up. A listing also settles the notifications that came.
    pub(crate) async fn discover(&mut self, source: &dyn Source) -> Result<Found> {
        let Some(feed) = &self.feed else {
            return Ok(Found { inputs: source.discover().await?, notices: Vec::new() });
        };
        let notices = feed.take();
        let listing_due = self.listed_at.is_none_or(|at| at.elapsed() >= self.reconcile);
        let found = match listing_due {
            true => source.discover().await,
            false => lookup_all(source, &notices).await,
        };
        match found {
            Ok(inputs) => {
                if listing_due {
                    self.listed_at = Some(Instant::now());
                    tracing::debug!(objects = inputs.len(), "listed the source");
                } else {
                    tracing::debug!(notices = notices.len(), objects = inputs.len(), "looked up notified objects");
                }
                Ok(Found { inputs, notices })
            }
            Err(error) => {
                settle(notices, false).await;
                Err(error)
            }
        }
    }

    /// Acknowledges the notifications of a look whose inputs are planned
    /// (`planned`), or hands them back to be delivered again.
    pub(crate) async fn settle(&self, found: Found, planned: bool) {
        settle(found.notices, planned).await;
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

/// The input objects that `notices` name, as they are now.
async fn lookup_all(source: &dyn Source, notices: &[Notice]) -> Result<Vec<InputObject>> {
    let mut inputs = Vec::new();
    for object in notices.iter().flat_map(|notice| &notice.objects) {
        match source.lookup(&object.bucket, &object.key).await? {
            Some(input) => inputs.push(input),
            None => tracing::debug!(bucket = object.bucket, key = object.key, "notified object is not input"),
        }
    }
    Ok(inputs)
}

async fn settle(notices: Vec<Notice>, planned: bool) {
    for notice in notices {
        match planned {
            true => notice.ack().await,
            false => notice.requeue().await,
        }
    }
}
