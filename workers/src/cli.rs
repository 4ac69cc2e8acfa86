//! The `sluice` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// sluice: ETL on ephemeral workers. Reads new files as Arrow, transforms
/// them with SQL, writes Parquet, and records what it did in a checkpoint
/// log so that every rerun is safe.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true, after_help = crate::exit::HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines on standard error look: `text`, or `json` (one object
    /// a line, with the batch's span fields). Default: text on a terminal,
    /// JSON otherwise. `SLUICE_LOG` filters them (default
    /// `warn,sluice=info`).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files: keys, types, URLs, and that the SQL plans.
    ///
    /// Prints every problem as FILE:LINE:COL: key.path: message, and exits
    /// 2 if there is any.
    #[command(after_help = crate::exit::HELP)]
    Validate {
        /// Pipeline files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run a pipeline's tests: its transform over fixtures, compared with
    /// what is expected, without touching its source, sink or log.
    ///
    /// Tests are [[test]] tables in the pipeline file or in NAME.test.toml
    /// beside it: a `name`; `input` (text in the source's format: a file's
    /// content, or for a kafka or amqp source one message a line) or
    /// `input_file`; `expected` (CSV with a header) or `expected_file`;
    /// optionally `order` ("any", the default, or "exact") and
    /// `dead_letters` (how many input records must be rejected). Expected
    /// values are read as the output column's type (10.50 matches 10.5 in
    /// a decimal or float column; an empty field is a null). A failed test
    /// prints the rows expected and not produced (-) and produced and not
    /// expected (+). Exits 1 if a test fails, 2 if a file has a problem,
    /// which is printed as FILE:LINE:COL: key.path: message.
    #[command(after_help = crate::exit::HELP)]
    Test {
        /// Pipeline files whose tests to run.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the pipeline as sluice understands it: the resolved settings,
    /// the input's columns and the DataFusion plan of the transform.
    #[command(after_help = crate::exit::HELP)]
    Explain {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Run the pipeline: plan new input into batches, run them, commit.
    ///
    /// Without --until-caught-up, keeps looking at the source until SIGINT
    /// or SIGTERM: a local folder is watched, a bucket with [trigger]
    /// notifications is told of new objects by its S3 events on an AMQP
    /// queue (and listed every reconcile_interval), any other source is
    /// listed every poll_interval. The batches in hand are finished before
    /// it exits (a second signal exits at once, and the next run redoes
    /// those batches). Sources, sinks and the log may be local folders or
    /// s3://, gs:// and az:// URLs. A kafka or amqp source is read
    /// in micro-batches ([trigger] max_records, max_wait, max_bytes), each
    /// acknowledged to the broker once it is committed.
    #[command(after_help = crate::exit::HELP)]
    Run {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Process everything pending, then exit: for cron, CI, a Lambda or
        /// a Kubernetes Job. A Kafka source stops at the high watermarks
        /// read at start, an AMQP source once its queue has no ready
        /// message. On a terminal, a progress bar shows the batches done,
        /// rows per second and the time left (files sources).
        #[arg(long)]
        until_caught_up: bool,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics while it
        /// runs: batches committed and failed, rows read, written and
        /// dead-lettered, bytes read, batch durations, pending batches and
        /// the files behind, labelled by pipeline.
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<SocketAddr>,
        /// With [workers] dispatch: a file holding the task key that signs
        /// each task (its first line), instead of SLUICE_TASK_KEY.
        #[arg(long, value_name = "FILE")]
        task_key_file: Option<PathBuf>,
        /// Print the summary at the end as one JSON object on standard
        /// output instead of a line: pipeline, batches, files, messages,
        /// rows_in, rows_out, dead_letters, failed_batches (waiting for
        /// `sluice retry`), handed_back, abandoned, duplicates, elapsed_s
        /// and exit_code.
        #[arg(long)]
        json: bool,
    },
    /// Take batches from a task queue and run them: an ephemeral worker.
    ///
    /// A controller whose pipeline has [workers] dispatch = "amqp://..."
    /// publishes one task per batch; any number of `sluice worker`s, on any
    /// machines that reach the broker and the pipeline's storage, run them.
    /// A task names a pipeline, the SHA-256 of its file and a batch, and is
    /// signed with the task key. The worker runs it only if the signature
    /// is made by one of its keys, the pipeline is one of the files in
    /// --pipelines with that SHA-256, and that pipeline's own log planned
    /// the batch with the same inputs; any other task goes to
    /// `<queue>.dead`, the reason in its `sluice-refused` header. Settings,
    /// storage and ${env:NAME} values all come from this worker's files and
    /// environment, never from a task. A task is acknowledged once its
    /// batch is committed; a worker killed mid-batch leaves the task to
    /// another, which takes the batch over when the lease runs out. Exits
    /// 0 after --idle-timeout without a task: run it from a KEDA ScaledJob
    /// (deploy/ has one) and no worker exists while the queue is empty.
    #[command(after_help = crate::exit::HELP)]
    Worker {
        /// The folder (or s3://, gs://, az:// prefix) of the pipeline files
        /// this worker may run: the same files the controller runs. Read
        /// again when a task names one it does not have.
        #[arg(long, env = "SLUICE_PIPELINES", value_name = "DIR_OR_URL")]
        pipelines: String,
        /// A file holding task keys, one a line (a Kubernetes or Docker
        /// secret); may be given more than once. With SLUICE_TASK_KEY, the
        /// keys a task's signature may be made with: give workers a new key
        /// beside the old before switching the controller to it. Read again
        /// when a task is signed with a key the worker does not know.
        #[arg(long, value_name = "FILE")]
        task_key_file: Vec<PathBuf>,
        /// Run tasks that carry no signature (signed ones are still
        /// checked). Only for a broker no one else can publish to.
        #[arg(long)]
        insecure_unsigned_tasks: bool,
        /// The broker, as amqp://USER:PASSWORD@HOST:PORT/VHOST (vhost `/`
        /// is `%2f`), or amqps:// for TLS, its certificate checked against
        /// the CAs of the PEM file SLUICE_AMQP_CA_FILE when set. Read from
        /// SLUICE_TASKS when not given, so that the password stays off the
        /// command line.
        #[arg(long, env = "SLUICE_TASKS", value_name = "URL", hide_env_values = true)]
        tasks: String,
        /// The task queue, as the pipelines' [workers] task_queue names it.
        #[arg(long, default_value = sluice_engine::spec::DEFAULT_TASK_QUEUE, value_name = "NAME")]
        queue: String,
        /// Exit after this long without a task, e.g. 30s, 5m.
        #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
        idle_timeout: std::time::Duration,
        /// Tasks held and run at once.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        prefetch: u16,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics while it
        /// runs, as `sluice run` does.
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Plan failed batches again, once their cause is fixed.
    ///
    /// A batch whose attempts all ended in an error ([workers]
    /// max_attempts) is failed: it blocks nothing, and waits in the log
    /// until retried. `sluice status` lists the failed batches and their
    /// errors. The next `sluice run` runs the retried batches.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["batch", "failed"])))]
    #[command(after_help = crate::exit::HELP)]
    Retry {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The id of one failed batch, as `sluice status` shows it.
        #[arg(long, value_name = "ID")]
        batch: Option<String>,
        /// Every failed batch.
        #[arg(long)]
        failed: bool,
    },
    /// Remove the staged files of attempts that never committed, and the
    /// checkpoint log's objects that no reader needs.
    ///
    /// A crash between writing a batch's files and committing it leaves
    /// them below `_sluice/staging/` of the sink (and of the dead letters),
    /// where no reader sees them. Vacuum removes them, finishes publishing
    /// any committed batch whose files were not yet moved into place, and
    /// keeps the files of attempts whose worker still holds the lease.
    ///
    /// It also removes log records that both kept snapshots already hold,
    /// snapshots older than those two, and segments the log no longer
    /// names (a seal that lost a race, history older than max_file_age),
    /// once they are an hour old. It is safe to run beside running
    /// controllers and workers.
    #[command(after_help = crate::exit::HELP)]
    Vacuum {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// List what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what the checkpoint log says: committed, pending, running and
    /// failed batches, dead letters, new files not yet planned, rows read
    /// and written.
    #[command(after_help = crate::exit::HELP)]
    Status {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; write it as 30s, 5m or 1h"))
}
