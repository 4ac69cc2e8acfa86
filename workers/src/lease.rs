//! A lease held while an attempt runs: renewed every third of its span,
//! and a flag raised if another worker takes the batch over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use sluice_engine::batch::Batch;
use sluice_engine::log::CheckpointLog;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::txn::{self, Renewed, Terms};
use tokio::sync::Mutex;
use tracing::Instrument;

/// Renews the lease every third of its span while the attempt runs, and
/// raises `fenced` if the log refuses a renewal.
pub(crate) struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub(crate) fn start(
        spec: &PipelineSpec,
        log: Arc<Mutex<CheckpointLog>>,
        batch: &Batch,
        owner: &str,
        attempt: u32,
        fenced: Arc<AtomicBool>,
    ) -> Self {
        let terms = Terms::of(spec);
        let every = spec.lease_timeout / 3;
        let (batch_id, owner) = (batch.id.clone(), owner.to_string());
        let logged_in = tracing::Span::current();
        Renewal(tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    let mut log = log.lock().await;
                    match txn::renew(&mut log, &batch_id, &owner, attempt, terms, Utc::now()).await {
                        Ok(Renewed::Held) => {}
                        Ok(Renewed::Lost) => {
                            tracing::warn!(%batch_id, attempt, "lost the lease to another worker");
                            fenced.store(true, Ordering::SeqCst);
                            return;
                        }
                        Ok(Renewed::Settled) => return,
                        // The next renewal may get through; if none does, the
                        // lease runs out and the commit is refused.
                        Err(error) => tracing::warn!(%batch_id, attempt, "cannot renew the lease: {error}"),
                    }
                }
            }
            .instrument(logged_in),
        ))
    }

    pub(crate) fn stop(self) {
        self.0.abort();
    }
}
