//! Prometheus metrics, labelled by `pipeline`, served on `--metrics-addr`.
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `sluice_batches_committed_total` | counter | batches this process committed |
//! | `sluice_batches_failed_total` | counter | batches that used up their attempts |
//! | `sluice_attempts_failed_total` | counter | attempts that ended in an error |
//! | `sluice_rows_read_total` | counter | rows read by committed batches, dead letters included |
//! | `sluice_rows_written_total` | counter | rows written by committed batches |
//! | `sluice_rows_dead_lettered_total` | counter | malformed records set aside |
//! | `sluice_bytes_read_total` | counter | input bytes of committed batches |
//! | `sluice_batch_duration_seconds` | histogram | lease to publish, per committed batch |
//! | `sluice_pending_batches` | gauge | batches planned and not yet committed or failed |
//! | `sluice_source_lag` | gauge | input files not yet committed (pending, running or failed batches) |
//!
//! Without `--metrics-addr` no recorder is installed and every call here
//! costs next to nothing.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Batch durations, in seconds, that the histogram's buckets end at.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Serves the metrics at `http://<addr>/metrics` from now on.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full("sluice_batch_duration_seconds".into()), DURATION_BUCKETS)?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    describe_counter!("sluice_batches_committed_total", "Batches committed by this process.");
    describe_counter!(
        "sluice_batches_failed_total",
        "Batches that used up their attempts and wait for `sluice retry`."
    );
    describe_counter!("sluice_attempts_failed_total", "Attempts at a batch that ended in an error.");
    describe_counter!("sluice_rows_read_total", "Rows read by committed batches, dead letters included.");
    describe_counter!("sluice_rows_written_total", "Rows written to the sink by committed batches.");
    describe_counter!("sluice_rows_dead_lettered_total", "Malformed records written to the dead letters.");
    describe_counter!("sluice_bytes_read_total", "Bytes of the input files of committed batches.");
    describe_histogram!("sluice_batch_duration_seconds", "Time from a batch's lease to its publish.");
    describe_counter!("sluice_tasks_refused_total", "Tasks `sluice worker` refused into the dead queue.");
    describe_gauge!("sluice_pending_batches", "Batches planned and not yet committed or failed.");
    describe_gauge!("sluice_source_lag", "Input files found and not yet committed.");
    Ok(())
}

/// Shows every counter of `pipeline` from the start, at 0, so that a rate
/// or an alert on failures has a series before the first one.
pub fn register(pipeline: &str) {
    let label = [("pipeline", pipeline.to_string())];
    for name in [
        "sluice_batches_committed_total",
        "sluice_batches_failed_total",
        "sluice_attempts_failed_total",
        "sluice_rows_read_total",
        "sluice_rows_written_total",
        "sluice_rows_dead_lettered_total",
        "sluice_bytes_read_total",
    ] {
        counter!(name, &label).increment(0);
    }
}

/// What one committed batch adds.
#[derive(Debug, Clone, Copy)]
pub struct CommittedBatch {
    /// Rows read, dead letters included.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Malformed records.
    pub rows_dead_lettered: u64,
    /// Input bytes.
    pub bytes_in: u64,
    /// Lease to publish.
    pub duration: Duration,
}

/// Counts a committed batch of `pipeline`.
pub fn committed(pipeline: &str, batch: CommittedBatch) {
    let label = [("pipeline", pipeline.to_string())];
    histogram!("sluice_batch_duration_seconds", &label).record(batch.duration.as_secs_f64());
    counter!("sluice_rows_read_total", &label).increment(batch.rows_in);
    counter!("sluice_rows_written_total", &label).increment(batch.rows_out);
    counter!("sluice_rows_dead_lettered_total", &label).increment(batch.rows_dead_lettered);
    counter!("sluice_bytes_read_total", &label).increment(batch.bytes_in);
    counter!("sluice_batches_committed_total", &label).increment(1);
}

/// Counts an attempt that ended in an error; `gave_up` when it was the
/// batch's last.
pub fn attempt_failed(pipeline: &str, gave_up: bool) {
    let label = [("pipeline", pipeline.to_string())];
    counter!("sluice_attempts_failed_total", &label).increment(1);
    if gave_up {
        counter!("sluice_batches_failed_total", &label).increment(1);
    }
}

/// Counts a task refused into the dead queue (not labelled by pipeline:
/// a refused task's pipeline name is whatever its sender wrote).
pub fn task_refused() {
    counter!("sluice_tasks_refused_total").increment(1);
}

/// Sets the backlog: batches pending and input files behind.
pub fn backlog(pipeline: &str, pending_batches: usize, files_behind: usize) {
    let label = [("pipeline", pipeline.to_string())];
    gauge!("sluice_pending_batches", &label).set(pending_batches as f64);
    gauge!("sluice_source_lag", &label).set(files_behind as f64);
}
