//! Pipelines whose source, sink and checkpoint log live in a bucket of a
//! real S3-compatible server: 127.0.0.1:9000 (`SLUICE_TEST_S3`), where
//! `scripts/start-s3.sh` starts moto with the bucket `sluice-test`. Each
//! test works below a prefix of its own. The notification test also needs
//! RabbitMQ (`scripts/start-rabbitmq.sh`).

mod brokers;
mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokers::{Rabbit, Rng, kill_9, unique};
use common::{Workspace, parquet_rows, printed, sluice};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const BUCKET: &str = "sluice-test";

/// The S3 server, and a prefix of the bucket for one test.
struct S3 {
    endpoint: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl S3 {
    /// Fails, saying how to start it, when the server does not answer.
    fn new(test: &str) -> Self {
        let endpoint = std::env::var("SLUICE_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("an S3 client");
        let s3 = S3 { endpoint, store: Arc::new(store), prefix: unique(test), runtime: brokers::runtime() };
        let listed = s3.runtime.block_on(async {
            let list = s3.store.list(Some(&ObjectPath::from("none")));
            tokio::time::timeout(Duration::from_secs(10), list.try_collect::<Vec<_>>()).await
        });
        match listed {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!(
                "these tests need an S3 server at {} with the bucket {BUCKET}: {error}\n\
                 start it with scripts/start-s3.sh",
                s3.endpoint
            ),
            Err(_) => panic!("no answer from an S3 server at {}\nstart it with scripts/start-s3.sh", s3.endpoint),
        }
        s3
    }

    /// `s3://sluice-test/<prefix>/<below>`.
    fn url(&self, below: &str) -> String {
        format!("s3://{BUCKET}/{}/{below}", self.prefix)
    }

    /// The key of `below` in the bucket.
    fn key(&self, below: &str) -> String {
        format!("{}/{below}", self.prefix)
    }

    fn put(&self, below: &str, bytes: Vec<u8>) {
        let path = ObjectPath::from(self.key(below));
        self.runtime.block_on(self.store.put(&path, PutPayload::from(bytes))).expect("upload");
    }

    /// Copies every object below `below` to the folder `to`, keeping the
    /// names (`_sluice/...` included).
    fn download(&self, below: &str, to: &Path) -> usize {
        let root = ObjectPath::from(self.key(below));
        self.runtime.block_on(async {
            let listed: Vec<_> = self.store.list(Some(&root)).try_collect().await.expect("list");
            for meta in &listed {
                let relative: Vec<String> =
                    meta.location.prefix_match(&root).expect("below").map(|p| p.as_ref().to_string()).collect();
                let local = to.join(relative.join("/"));
                std::fs::create_dir_all(local.parent().expect("parent")).expect("folders");
                let bytes = self.store.get(&meta.location).await.expect("get").bytes().await.expect("bytes");
                std::fs::write(&local, &bytes).expect("write");
            }
            listed.len()
        })
    }

    /// How many objects below `below` a reader of the sink sees (none
    /// below a name starting with `_`).
    fn visible(&self, below: &str) -> usize {
        let root = ObjectPath::from(self.key(below));
        self.runtime.block_on(async {
            let listed: Vec<_> = self.store.list(Some(&root)).try_collect().await.expect("list");
            listed
                .iter()
                .filter(|meta| {
                    meta.location
                        .prefix_match(&root)
                        .is_some_and(|mut parts| parts.all(|p| !p.as_ref().starts_with('_')))
                })
                .count()
        })
    }

    /// The standard AWS variables that point a client at the server.
    fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

/// CSV file `n` of `rows` orders: ids `n * 1000 ..`.
fn orders_csv(n: u64, rows: u64) -> Vec<u8> {
    let mut text = String::from("id,country,amount\n");
    for id in n * 1000..n * 1000 + rows {
        text.push_str(&format!("{id},{},{}.25\n", ["FR", "DE", "US", "JP"][(id % 4) as usize], id % 100));
    }
    text.into_bytes()
}

/// The rows of `files` files of `rows` orders each, as `parquet_rows`
/// shows them, sorted.
fn expected_rows(files: std::ops::Range<u64>, rows: u64) -> Vec<Vec<String>> {
    brokers::order_rows(files.flat_map(|n| n * 1000..n * 1000 + rows))
}

const SCHEMA: &str = "[source.schema]\nid = \"int64\"\ncountry = \"string\"\namount = \"float64\"\n";

/// The orders pipeline with source, sink and log in the bucket.
fn pipeline(s3: &S3, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"bucket_orders\"\n\n{extra}\n\n\
         [source]\ntype = \"files\"\nurl = \"{}\"\npattern = \"*.csv\"\n\n{SCHEMA}\n\
         [transform]\nsql = \"SELECT id, country, amount FROM input\"\n\n\
         [sink]\ntype = \"files\"\nurl = \"{}\"\n\n\
         [checkpoint]\nurl = \"{}\"\n",
        s3.url("in"),
        s3.url("out"),
        s3.url("checkpoint"),
    )
}

fn start(s3: &S3, pipeline: &str) -> Child {
    sluice()
        .args(["run", pipeline])
        .envs(s3.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice starts")
}

/// Downloads the sink and checks that it holds `expected` exactly once,
/// and that the log has nothing left to do.
fn assert_exactly_once(s3: &S3, pipeline: &str, expected: &[Vec<String>]) {
    let local = tempfile::tempdir().expect("tempdir");
    s3.download("out", local.path());
    let (columns, found) = parquet_rows(local.path());
    assert_eq!(columns, ["id", "country", "amount"]);
    assert_eq!(found.len(), expected.len(), "row count");
    assert_eq!(found, expected, "every row exactly once");
    let output = sluice().args(["status", pipeline, "--json"]).envs(s3.env()).output().expect("status");
    assert!(output.status.success(), "{}", printed(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status json");
    assert_eq!(status["pending_batches"], 0, "{status}");
    assert_eq!(status["failed_batches"], 0, "{status}");
    assert_eq!(status["rows_written"], expected.len(), "{status}");
}

#[test]
fn two_controllers_racing_on_a_bucket_killed_four_times_land_every_row_once() {
    let s3 = S3::new("race");
    let ws = Workspace::new();
    let pipeline =
        // A killed attempt counts toward max_attempts: eight kills may land
        // on one batch's attempts, which must not fail it.
        ws.pipeline(&pipeline(
            &s3,
            "[trigger]\nmax_files_per_batch = 1\n\n[workers]\nlease_timeout = \"1s\"\nmax_attempts = 40\n",
        ));
    let mut rng = Rng::new();
    let rows = 400;
    let mut files = 0;
    for round in 0..4 {
        // New files land while the controllers run and die.
        for _ in 0..6 {
            s3.put(&format!("in/orders-{files:03}.csv"), orders_csv(files, rows));
            files += 1;
        }
        let mut children = vec![start(&s3, &pipeline), start(&s3, &pipeline)];
        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        for child in &mut children {
            kill_9(child);
        }
        eprintln!("round {round}: {files} files in, {} outputs visible", s3.visible("out"));
    }
    let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(s3.env()).output().expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    assert_exactly_once(&s3, &pipeline, &expected_rows(0..files, rows));

    // The log lives in the bucket too, with its put-if-absent check.
    let local = tempfile::tempdir().expect("tempdir");
    s3.download("checkpoint", local.path());
    assert!(local.path().join("put-if-absent-check").is_file());
    assert!(local.path().join("log/00000000000000000000.json").is_file());
}

#[test]
fn a_file_announced_only_by_a_notification_is_processed_without_a_listing() {
    let s3 = S3::new("notified");
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("bucket-events");
    let ws = Workspace::new();
    // Credentials in [storage] this time, the secret from the environment;
    // no listing but the one at start for an hour.
    let storage = format!(
        "[storage]\naws_endpoint = \"{}\"\naws_allow_http = true\naws_region = \"us-east-1\"\n\
         aws_access_key_id = \"test\"\naws_secret_access_key = \"${{env:SLUICE_TEST_S3_SECRET}}\"\n\n\
         [trigger]\nnotifications = \"{}/{}\"\nreconcile_interval = \"1h\"\n",
        s3.endpoint, rabbit.url, queue.name
    );
    let pipeline = ws.pipeline(&pipeline(&s3, &storage));

    s3.put("in/before.csv", orders_csv(0, 50));
    let mut controller = sluice()
        .args(["run", &pipeline])
        .env("SLUICE_TEST_S3_SECRET", "test")
        // Each listing and each look-up of notified objects is logged.
        .env("SLUICE_LOG", "warn,sluice_workers::wake=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    wait_for(|| s3.visible("out") == 1, "the file there at start, found by the first listing");

    // Written after the listing: only the event tells.
    s3.put("in/after.csv", orders_csv(1, 50));
    let event = |key: &str| {
        format!(
            r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
                "s3":{{"bucket":{{"name":"{BUCKET}"}},"object":{{"key":"{key}","size":1}}}}}}]}}"#
        )
    };
    rabbit.publish(
        &queue.name,
        [
            (None, "not an event".to_string()),
            (None, event(&s3.key("elsewhere/x.csv"))),
            (None, event(&s3.key("in/after.csv"))),
            // The same event twice, and the old file's again: nothing twice.
            (None, event(&s3.key("in/after.csv"))),
            (None, event(&s3.key("in/before.csv"))),
        ],
    );
    wait_for(|| s3.visible("out") == 2, "the notified file's output");
    wait_for(|| rabbit.ready(&queue.name) == 0, "every notification settled");
    std::thread::sleep(Duration::from_millis(500));
    kill_9(&mut controller);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut controller.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.matches("listed the source").count(), 1, "one listing, at start:\n{stderr}");
    assert!(stderr.contains("looked up notified objects"), "{stderr}");

    let expected: Vec<Vec<String>> = expected_rows(0..2, 50);
    let local = tempfile::tempdir().expect("tempdir");
    s3.download("out", local.path());
    let (_, found) = parquet_rows(local.path());
    assert_eq!(found, expected, "each file's rows exactly once");
    assert_eq!(s3.visible("out"), 2, "the duplicate events added nothing");
}

#[test]
fn a_store_that_cannot_create_only_if_absent_is_refused_for_the_log() {
    let s3 = S3::new("no-conditional");
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&pipeline(&s3, "[storage]\naws_conditional_put = \"disabled\"\n"));
    s3.put("in/a.csv", orders_csv(0, 5));
    let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(s3.env()).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", printed(&output));
    assert!(stderr.contains("the checkpoint log cannot live at s3://"), "{}", printed(&output));
    assert!(stderr.contains("put-if-absent"), "{}", printed(&output));
    assert_eq!(s3.visible("out"), 0, "nothing was written");
}

#[test]
fn a_gzip_csv_larger_than_a_segment_streams_in_and_a_large_output_goes_up_in_parts() {
    let s3 = S3::new("large");
    let ws = Workspace::new();
    // About 20 MB of CSV, gzip-compressed in the bucket; written out as
    // uncompressed CSV of about the same size, which the sink uploads as
    // a multipart upload.
    let rows = 240_000u64;
    let mut body = String::new();
    for id in 0..rows {
        let note = if id % 50_000 == 3 { "x".to_string() } else { format!("{}.25", id % 100) };
        body.push_str(&format!("{id},{},{note}\n", ["FR", "DE", "US", "JP"][(id % 4) as usize]));
    }
    let text = format!("id,country,amount\n{}", body.repeat(4));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, text.as_bytes()).expect("gzip");
    s3.put("in/orders.csv.gz", gzip.finish().expect("gzip"));
    let spec = pipeline(&s3, "")
        .replace("pattern = \"*.csv\"", "pattern = \"*.csv.gz\"")
        .replace("[sink]\ntype = \"files\"\n", "[sink]\ntype = \"files\"\nformat = \"csv\"\n");
    let pipeline = ws.pipeline(&spec);
    let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(s3.env()).output().expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    let bad = 4 * rows.div_ceil(50_000);

    assert!(
        summary.contains(&format!("{} rows in, {} rows out, {bad} dead letters", 4 * rows, 4 * rows - bad)),
        "{summary}"
    );

    let local = tempfile::tempdir().expect("tempdir");
    s3.download("out", local.path());
    let written: Vec<_> = common::visible_files(local.path());
    assert_eq!(written.len(), 1, "{written:?}");
    let csv = std::fs::read_to_string(&written[0]).expect("csv");
    assert!(csv.len() > 10 << 20, "large enough for a multipart upload: {} bytes", csv.len());
    assert_eq!(csv.lines().count() as u64, 1 + 4 * rows - bad, "a header and every good row");
}

/// Waits up to 30 s for `done`.
fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workers_take_their_pipeline_files_from_a_bucket() {
    use common::tasks::{TestQueue, broker, controller, finish, wait_for_tasks, worker};
    let s3 = S3::new("pipelines");
    let queue = TestQueue::new("s3-pipelines");
    let ws = Workspace::new();
    let dispatch = format!("[workers]\ndispatch = \"{}\"\ntask_queue = \"{}\"\n", broker(), queue.0);
    // The operator keeps the same file beside the controller and in the
    // bucket the workers read their pipelines from.
    let text = pipeline(&s3, &dispatch);
    let path = ws.pipeline(&text);
    s3.put("pipelines/bucket_orders.toml", text.into_bytes());
    s3.put("pipelines/notes.txt", b"[pipeline]\nname = \"not-a-pipeline-file\"\n".to_vec());
    s3.put("in/a.csv", orders_csv(0, 20));
    s3.put("in/b.csv", orders_csv(1, 20));
    let controller = controller(&path).envs(s3.env()).spawn().expect("controller");
    wait_for_tasks(&queue.0, 1);
    let mut command = worker(&queue.0, "2s", Path::new(&s3.url("pipelines")));
    command.envs(s3.env());
    let (status, said) = finish(command.spawn().expect("worker"), Duration::from_secs(120));
    assert!(status.success(), "{said}");
    assert!(said.contains("\"pipelines\":1"), "one pipeline file in the bucket: {said}");
    assert!(said.contains(" 0 rejected"), "{said}");
    let (status, said) = finish(controller, Duration::from_secs(60));
    assert!(status.success(), "{said}");
    assert_exactly_once(&s3, &path, &expected_rows(0..2, 20));
}
