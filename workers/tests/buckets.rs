//! Pipelines whose source, sink and checkpoint log live in a bucket of
//! each object store sluice names: S3 (moto on 127.0.0.1:9000,
//! `scripts/start-bucket.sh`), Google Cloud Storage (fake-gcs-server behind
//! its XML-API front on 127.0.0.1:4443, `scripts/start-gcs.sh`) and Azure
//! Blob Storage (Azurite on 127.0.0.1:10000 and its queues on :10001,
//! `scripts/start-azurite.sh`). The same scenarios run on each store; a
//! few are the store's own. Each test works below a prefix of its own. The
//! S3 notification test also needs RabbitMQ (`scripts/start-rabbitmq.sh`).

mod brokers;
mod common;
mod store;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use brokers::{Rng, kill_9};
use common::{Ran, Workspace, parquet_rows, printed, sluice};
use store::{BUCKET, Bucket, Kind};

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
fn pipeline(bucket: &Bucket, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"bucket_orders\"\n\n{extra}\n\n\
         [source]\ntype = \"files\"\nurl = \"{}\"\npattern = \"*.csv\"\n\n{SCHEMA}\n\
         [transform]\nsql = \"SELECT id, country, amount FROM input\"\n\n\
         [sink]\ntype = \"files\"\nurl = \"{}\"\n\n\
         [checkpoint]\nurl = \"{}\"\n",
        bucket.url("in"),
        bucket.url("out"),
        bucket.url("checkpoint"),
    )
}

fn start(bucket: &Bucket, pipeline: &str) -> Child {
    sluice()
        .args(["run", pipeline])
        .envs(bucket.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice starts")
}

/// Downloads the sink and checks that it holds `expected` exactly once,
/// and that the log has nothing left to do.
fn assert_exactly_once(bucket: &Bucket, pipeline: &str, expected: &[Vec<String>]) {
    let local = tempfile::tempdir().expect("tempdir");
    bucket.download("out", local.path());
    let (columns, found) = parquet_rows(local.path());
    assert_eq!(columns, ["id", "country", "amount"]);
    assert_eq!(found.len(), expected.len(), "row count");
    assert_eq!(found, expected, "every row exactly once");
    let output = sluice().args(["status", pipeline, "--json"]).envs(bucket.env()).output().expect("status");
    assert!(output.status.success(), "{}", printed(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status json");
    assert_eq!(status["pending_batches"], 0, "{status}");
    assert_eq!(status["failed_batches"], 0, "{status}");
    assert_eq!(status["rows_written"], expected.len(), "{status}");
}

/// Two controllers race on the bucket and are killed with -9, four
/// rounds while files land; a catch-up run then leaves every row once.
fn two_controllers_racing_on_a_bucket_killed_four_times_land_every_row_once(kind: Kind) {
    let bucket = Bucket::new(kind, "race");
    let ws = Workspace::new();
    let pipeline =
        // A killed attempt counts toward max_attempts: eight kills may land
        // on one batch's attempts, which must not fail it.
        ws.pipeline(&pipeline(
            &bucket,
            "[trigger]\nmax_files_per_batch = 1\n\n[workers]\nlease_timeout = \"1s\"\nmax_attempts = 40\n",
        ));
    let mut rng = Rng::new();
    let rows = 400;
    let mut files = 0;
    for round in 0..4 {
        // New files land while the controllers run and die.
        for _ in 0..6 {
            bucket.put(&format!("in/orders-{files:03}.csv"), orders_csv(files, rows));
            files += 1;
        }
        let mut children = vec![start(&bucket, &pipeline), start(&bucket, &pipeline)];
        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        for child in &mut children {
            kill_9(child);
        }
        eprintln!("round {round}: {files} files in, {} outputs visible", bucket.visible("out"));
    }
    let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(bucket.env()).output().expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    assert_exactly_once(&bucket, &pipeline, &expected_rows(0..files, rows));

    // The log lives in the bucket too, with its put-if-absent check.
    let local = tempfile::tempdir().expect("tempdir");
    bucket.download("checkpoint", local.path());
    assert!(local.path().join("put-if-absent-check").is_file());
    assert!(local.path().join("log/00000000000000000000.json").is_file());
}

/// A gzip CSV of about 20 MB is read as a stream; its CSV output goes up
/// in parts.
fn a_gzip_csv_larger_than_a_segment_streams_in_and_a_large_output_goes_up_in_parts(kind: Kind) {
    let bucket = Bucket::new(kind, "large");
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
    bucket.put("in/orders.csv.gz", gzip.finish().expect("gzip"));
    let spec = pipeline(&bucket, "")
        .replace("pattern = \"*.csv\"", "pattern = \"*.csv.gz\"")
        .replace("[sink]\ntype = \"files\"\n", "[sink]\ntype = \"files\"\nformat = \"csv\"\n");
    let pipeline = ws.pipeline(&spec);
    let output =
        sluice().args(["run", &pipeline, "--until-caught-up", "--json"]).envs(bucket.env()).output().expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    let bad = 4 * rows.div_ceil(50_000);
    let ran = Ran::of(&output);
    assert_eq!(ran.rows(), (4 * rows, 4 * rows - bad, bad), "{ran:?}");

    let local = tempfile::tempdir().expect("tempdir");
    bucket.download("out", local.path());
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

/// Credentials in `[storage]`, the secret from the environment and no
/// variable of the store set: the run works and shows no secret.
fn credentials_from_the_storage_table_with_a_secret_from_the_environment(kind: Kind) {
    let bucket = Bucket::new(kind, "storage-table");
    let ws = Workspace::new();
    let (storage, secret) = bucket.storage_table("SLUICE_TEST_STORE_SECRET");
    let pipeline = ws.pipeline(&pipeline(&bucket, &storage));
    bucket.put("in/a.csv", orders_csv(0, 30));
    bucket.put("in/b.csv", orders_csv(1, 30));
    let run = |args: &[&str]| {
        let mut command = sluice();
        for variable in STORE_VARIABLES {
            command.env_remove(variable);
        }
        command.args(args).env("SLUICE_TEST_STORE_SECRET", &secret).env("SLUICE_LOG", "info").output().expect("runs")
    };
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert!(output.status.success(), "{}", printed(&output));
    let status = run(&["status", &pipeline]);
    assert!(status.status.success(), "{}", printed(&status));
    for shown in [&output, &status] {
        assert!(!printed(shown).contains(&secret), "the secret is shown: {}", printed(shown));
    }
    let local = tempfile::tempdir().expect("tempdir");
    bucket.download("out", local.path());
    assert_eq!(parquet_rows(local.path()).1, expected_rows(0..2, 30));
}

/// A lookup table in the bucket joins each batch, and a new version of it
/// is read by the next batch of the same process.
fn a_lookup_table_in_the_bucket_is_joined_and_read_again_once_replaced(kind: Kind) {
    let bucket = Bucket::new(kind, "lookup");
    let ws = Workspace::new();
    let tables = format!(
        "[tables.names]\nurl = \"{}\"\npattern = \"*.csv\"\nformat = \"csv\"\n\n\
         [tables.names.schema]\ncountry = \"string\"\nname = \"string\"\n",
        bucket.url("reference")
    );
    let spec = pipeline(&bucket, &tables).replace(
        "sql = \"SELECT id, country, amount FROM input\"",
        "sql = \"SELECT id, name, amount FROM input LEFT JOIN names USING (country)\"",
    );
    let pipeline = ws.pipeline(&spec);
    bucket.put("reference/names.csv", b"country,name\nFR,France\n".to_vec());
    bucket.put("in/a.csv", b"id,country,amount\n1,FR,1.5\n".to_vec());
    let mut controller = start(&bucket, &pipeline);
    wait_for(|| bucket.visible("out") == 1, "the first batch");
    bucket.put("reference/names.csv", b"country,name\nFR,la France\n".to_vec());
    bucket.put("in/b.csv", b"id,country,amount\n2,FR,2.5\n".to_vec());
    wait_for(|| bucket.visible("out") == 2, "the second batch");
    kill_9(&mut controller);
    let local = tempfile::tempdir().expect("tempdir");
    bucket.download("out", local.path());
    let (columns, found) = parquet_rows(local.path());
    assert_eq!(columns, ["id", "name", "amount"]);
    assert_eq!(found, [["1", "France", "1.5"], ["2", "la France", "2.5"]]);
}

/// The variables through which a store could find credentials other than
/// those of `[storage]`.
const STORE_VARIABLES: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
];

/// `after_commit = "move"` in the bucket, killed between a commit and
/// its move: the next run moves what is left, and every row is written once.
fn after_commit_moves_committed_files_out_of_the_inbox_even_after_a_kill(kind: Kind) {
    let bucket = Bucket::new(kind, "after-commit");
    let ws = Workspace::new();
    let spec = pipeline(&bucket, "[trigger]\nmax_files_per_batch = 1\n").replace(
        "pattern = \"*.csv\"",
        &format!("pattern = \"*.csv\"\nafter_commit = \"move\"\nmove_to = \"{}\"", bucket.url("done")),
    );
    let pipeline = ws.pipeline(&spec);
    for n in 0..3 {
        bucket.put(&format!("in/orders-{n}.csv"), orders_csv(n, 20));
    }
    let run = |failpoint: Option<&str>| {
        let mut command = sluice();
        command.args(["run", &pipeline, "--until-caught-up"]).envs(bucket.env());
        if let Some(failpoint) = failpoint {
            command.env("SLUICE_FAILPOINT", failpoint);
        }
        command.output().expect("runs")
    };
    let crashed = run(Some("after_commit:2"));
    assert!(!crashed.status.success(), "the failpoint ends the run: {}", printed(&crashed));
    assert!(bucket.visible("in") > 0, "killed before every file was moved");
    let output = run(None);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(bucket.visible("in"), 0, "the inbox is empty");
    assert_eq!(bucket.visible("done"), 3, "each file moved once, under its name");
    assert_exactly_once(&bucket, &pipeline, &expected_rows(0..3, 20));
}

/// The tests every store runs.
macro_rules! every_store_runs {
    ($kind:expr) => {
        #[test]
        fn after_commit_moves_committed_files_out_of_the_inbox_even_after_a_kill() {
            super::after_commit_moves_committed_files_out_of_the_inbox_even_after_a_kill($kind);
        }

        #[test]
        fn two_controllers_racing_on_a_bucket_killed_four_times_land_every_row_once() {
            super::two_controllers_racing_on_a_bucket_killed_four_times_land_every_row_once($kind);
        }

        #[test]
        fn a_gzip_csv_larger_than_a_segment_streams_in_and_a_large_output_goes_up_in_parts() {
            super::a_gzip_csv_larger_than_a_segment_streams_in_and_a_large_output_goes_up_in_parts($kind);
        }

        #[test]
        fn credentials_from_the_storage_table_with_a_secret_from_the_environment() {
            super::credentials_from_the_storage_table_with_a_secret_from_the_environment($kind);
        }

        #[test]
        fn a_lookup_table_in_the_bucket_is_joined_and_read_again_once_replaced() {
            super::a_lookup_table_in_the_bucket_is_joined_and_read_again_once_replaced($kind);
        }
    };
}

mod s3 {
    use super::*;
    use brokers::Rabbit;

    every_store_runs!(Kind::S3);

    #[test]
    fn a_file_announced_only_by_a_notification_is_processed_without_a_listing() {
        let bucket = Bucket::new(Kind::S3, "notified");
        let rabbit = Rabbit::new();
        let queue = rabbit.queue("bucket-events");
        let ws = Workspace::new();
        // Credentials in [storage] this time, the secret from the environment;
        // no listing but the one at start for an hour.
        let (storage, secret) = bucket.storage_table("SLUICE_TEST_S3_SECRET");
        let storage = format!(
            "{storage}\n[trigger]\nnotifications = \"{}/{}\"\nreconcile_interval = \"1h\"\n",
            rabbit.url, queue.name
        );
        let pipeline = ws.pipeline(&pipeline(&bucket, &storage));

        bucket.put("in/before.csv", orders_csv(0, 50));
        let mut controller = sluice()
            .args(["run", &pipeline])
            .env("SLUICE_TEST_S3_SECRET", &secret)
            // Each listing and each look-up of notified objects is logged.
            .env("SLUICE_LOG", "warn,sluice_workers::wake=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        wait_for(|| bucket.visible("out") == 1, "the file there at start, found by the first listing");

        // Written after the listing: only the event tells.
        bucket.put("in/after.csv", orders_csv(1, 50));
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
                (None, event(&bucket.key("elsewhere/x.csv"))),
                (None, event(&bucket.key("in/after.csv"))),
                // The same event twice, and the old file's again: nothing twice.
                (None, event(&bucket.key("in/after.csv"))),
                (None, event(&bucket.key("in/before.csv"))),
            ],
        );
        wait_for(|| bucket.visible("out") == 2, "the notified file's output");
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
        bucket.download("out", local.path());
        let (_, found) = parquet_rows(local.path());
        assert_eq!(found, expected, "each file's rows exactly once");
        assert_eq!(bucket.visible("out"), 2, "the duplicate events added nothing");
    }

    #[test]
    fn a_store_that_cannot_create_only_if_absent_is_refused_for_the_log() {
        let bucket = Bucket::new(Kind::S3, "no-conditional");
        let ws = Workspace::new();
        let pipeline = ws.pipeline(&pipeline(&bucket, "[storage]\naws_conditional_put = \"disabled\"\n"));
        bucket.put("in/a.csv", orders_csv(0, 5));
        let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(bucket.env()).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}", printed(&output));
        assert!(stderr.contains("the checkpoint log cannot live at s3://"), "{}", printed(&output));
        assert!(stderr.contains("put-if-absent"), "{}", printed(&output));
        assert_eq!(bucket.visible("out"), 0, "nothing was written");
    }

    #[test]
    fn workers_take_their_pipeline_files_from_a_bucket() {
        use common::tasks::{TestQueue, broker, controller, finish, wait_for_tasks, worker};
        let bucket = Bucket::new(Kind::S3, "pipelines");
        let queue = TestQueue::new("s3-pipelines");
        let ws = Workspace::new();
        let dispatch = format!("[workers]\ndispatch = \"{}\"\ntask_queue = \"{}\"\n", broker(), queue.0);
        // The operator keeps the same file beside the controller and in the
        // bucket the workers read their pipelines from.
        let text = pipeline(&bucket, &dispatch);
        let path = ws.pipeline(&text);
        bucket.put("pipelines/bucket_orders.toml", text.into_bytes());
        bucket.put("pipelines/notes.txt", b"[pipeline]\nname = \"not-a-pipeline-file\"\n".to_vec());
        bucket.put("in/a.csv", orders_csv(0, 20));
        bucket.put("in/b.csv", orders_csv(1, 20));
        let controller = controller(&path).envs(bucket.env()).spawn().expect("controller");
        wait_for_tasks(&queue.0, 1);
        let mut command = worker(&queue.0, "2s", Path::new(&bucket.url("pipelines")));
        command.envs(bucket.env());
        let (status, said) = finish(command.spawn().expect("worker"), Duration::from_secs(120));
        assert!(status.success(), "{said}");
        assert!(said.contains("\"pipelines\":1"), "one pipeline file in the bucket: {said}");
        assert!(said.contains(" 0 rejected"), "{said}");
        let (status, said) = finish(controller, Duration::from_secs(60));
        assert!(status.success(), "{said}");
        assert_exactly_once(&bucket, &path, &expected_rows(0..2, 20));
    }
}

mod gcs {
    use super::*;

    every_store_runs!(Kind::Gcs);

    /// The front of the emulator serves a bucket named
    /// `*-ignores-preconditions` as a store that accepts every create.
    #[test]
    fn a_bucket_that_ignores_the_generation_precondition_is_refused_for_the_log() {
        let bucket = Bucket::new(Kind::Gcs, "no-conditional");
        let ws = Workspace::new();
        let checkpoint = bucket.url("checkpoint");
        let spec = pipeline(&bucket, "")
            .replace(&checkpoint, &checkpoint.replace(BUCKET, &format!("{BUCKET}-ignores-preconditions")));
        let pipeline = ws.pipeline(&spec);
        bucket.put("in/a.csv", orders_csv(0, 5));
        let output = sluice().args(["run", &pipeline, "--until-caught-up"]).envs(bucket.env()).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}", printed(&output));
        assert!(stderr.contains("the checkpoint log cannot live at gs://"), "{}", printed(&output));
        assert!(stderr.contains("it accepted a second create of the same object"), "{}", printed(&output));
        assert_eq!(bucket.visible("out"), 0, "nothing was written");
    }
}

mod azure {
    use sluice_connectors::notifications::azqueue::AzureQueue;
    use sluice_engine::storage::StorageOptions;

    use super::*;

    every_store_runs!(Kind::Azure);

    /// An Event Grid `BlobCreated` event as an Event Grid subscription
    /// puts it on a Storage queue: the event's JSON, Base64-encoded.
    fn blob_created(container: &str, name: &str) -> String {
        use base64::Engine;
        let event = format!(
            r#"{{"topic":"/subscriptions/0/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/{account}",
                "subject":"/blobServices/default/containers/{container}/blobs/{name}",
                "eventType":"Microsoft.Storage.BlobCreated","id":"{name}","eventTime":"2026-12-02T05:00:00Z",
                "data":{{"api":"PutBlob","blobType":"BlockBlob","url":"http://127.0.0.1:10000/{account}/{container}/{name}"}},
                "dataVersion":"","metadataVersion":"1"}}"#,
            account = store::AZURITE_ACCOUNT
        );
        base64::engine::general_purpose::STANDARD.encode(event)
    }

    /// A client of a new queue of Azurite's, its name, and the storage
    /// settings that reach it.
    fn new_queue(bucket: &Bucket) -> (AzureQueue, String, StorageOptions) {
        let name = format!("events-{}", bucket.prefix.rsplit('-').next().expect("a number"));
        let name: String = name.chars().take(40).collect();
        let options = StorageOptions::new(vec![("azure_storage_use_emulator".into(), "true".into())]).expect("options");
        let queue = AzureQueue::new(store::AZURITE_ACCOUNT, &name, &options).expect("a queue client");
        bucket.runtime.block_on(queue.create()).expect("create the queue (is Azurite's queue service up?)");
        (queue, name, options)
    }

    /// A notice handed back (its objects could not be planned) is
    /// delivered again at once, not after the message's visibility
    /// timeout; one acknowledged is deleted.
    #[test]
    fn a_notice_handed_back_comes_again_at_once_and_one_acknowledged_is_gone() {
        use sluice_connectors::notifications::NotificationFeed;
        use sluice_engine::spec::NotificationQueue;
        let bucket = Bucket::new(Kind::Azure, "requeued");
        let (queue, name, options) = new_queue(&bucket);
        bucket.runtime.block_on(queue.put(&blob_created(BUCKET, "in/a.csv"))).expect("put");
        let source = || NotificationQueue::AzureQueue { account: store::AZURITE_ACCOUNT.into(), queue: name.clone() };
        let take_one = |feed: &NotificationFeed| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut notices = feed.take();
                if let Some(notice) = notices.pop() {
                    assert!(notices.is_empty(), "one message, one notice");
                    return notice;
                }
                assert!(Instant::now() < deadline, "no notice within 10 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        // The feeds read the queue on the runtime's threads.
        let _runtime = bucket.runtime.enter();
        let (feed, watch) = NotificationFeed::start(source(), &options).expect("a feed");
        let notice = take_one(&feed);
        assert_eq!(notice.objects[0].key, "in/a.csv");
        // The first reader stops before the message is handed back: still
        // polling, it could take the message again itself, for 5 minutes.
        drop(watch);
        drop(feed);
        bucket.runtime.block_on(notice.requeue());
        // A second reader gets it again, long before the 5 minutes a taken
        // message stays invisible.
        let (feed, _watch) = NotificationFeed::start(source(), &options).expect("a feed");
        let notice = take_one(&feed);
        assert_eq!(notice.objects[0].key, "in/a.csv");
        bucket.runtime.block_on(notice.ack());
        assert_eq!(bucket.runtime.block_on(queue.approximate_count(false)).expect("count"), 0, "deleted");
    }

    #[test]
    fn a_blob_announced_only_by_an_event_on_a_storage_queue_is_processed_without_a_listing() {
        let bucket = Bucket::new(Kind::Azure, "notified");
        let (queue, name, _) = new_queue(&bucket);
        let count = |poison: bool| bucket.runtime.block_on(queue.approximate_count(poison)).expect("count");
        let ws = Workspace::new();
        let trigger = format!(
            "[trigger]\nnotifications = \"azqueue://{}/{name}\"\nreconcile_interval = \"1h\"\n",
            store::AZURITE_ACCOUNT
        );
        let pipeline = ws.pipeline(&pipeline(&bucket, &trigger));

        bucket.put("in/before.csv", orders_csv(0, 50));
        let mut controller = sluice()
            .args(["run", &pipeline])
            .envs(bucket.env())
            // Each listing and each look-up of notified objects is logged.
            .env("SLUICE_LOG", "warn,sluice_workers::wake=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        wait_for(|| bucket.visible("out") == 1, "the blob there at start, found by the first listing");

        // Written after the listing: only the event tells.
        bucket.put("in/after.csv", orders_csv(1, 50));
        let after = bucket.key("in/after.csv");
        for text in [
            "not an event".to_string(),
            blob_created(BUCKET, &bucket.key("elsewhere/x.csv")),
            blob_created("another-container", &after),
            blob_created(BUCKET, &after),
            // The same event twice (once as plain JSON), and the old blob's
            // again: nothing twice.
            blob_created(BUCKET, &after),
            String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, blob_created(BUCKET, &after))
                    .expect("base64"),
            )
            .expect("utf-8"),
            blob_created(BUCKET, &bucket.key("in/before.csv")),
            r#"{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","subject":"","data":{}}"#.to_string(),
        ] {
            bucket.runtime.block_on(queue.put(&text)).expect("put a message");
        }
        wait_for(|| bucket.visible("out") == 2, "the notified blob's output");
        wait_for(|| count(false) == 0, "every message settled: deleted from the queue");
        assert_eq!(count(true), 1, "the message that is not an event is kept in {name}-poison");
        std::thread::sleep(Duration::from_millis(500));
        kill_9(&mut controller);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut controller.stderr.take().expect("stderr"), &mut stderr).expect("read");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.matches("listed the source").count(), 1, "one listing, at start:\n{stderr}");
        assert!(stderr.contains("looked up notified objects"), "{stderr}");
        assert!(stderr.contains("is not a blob event, moved to"), "{stderr}");
        assert!(!stderr.contains(store::AZURITE_KEY), "{stderr}");

        let local = tempfile::tempdir().expect("tempdir");
        bucket.download("out", local.path());
        let (_, found) = parquet_rows(local.path());
        assert_eq!(found, expected_rows(0..2, 50), "each blob's rows exactly once");
        assert_eq!(bucket.visible("out"), 2, "the duplicate events added nothing");
    }
}
