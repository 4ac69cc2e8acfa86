//! The real brokers the stream tests talk to: a Kafka-protocol broker at
//! 127.0.0.1:9092 (`SLUICE_TEST_KAFKA`; `scripts/start-kafka.sh` starts
//! Tansu there) and RabbitMQ at 127.0.0.1:5672 (`SLUICE_TEST_AMQP`;
//! `scripts/start-rabbitmq.sh`). Each test makes topics and queues of its
//! own, so that tests running at once and earlier runs never share one.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A name no other test or run uses.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The JSON record of order `id`.
pub(crate) fn order(id: u64) -> String {
    let country = ["FR", "DE", "US", "JP"][(id % 4) as usize];
    format!(r#"{{"id": {id}, "country": "{country}", "amount": {}.25}}"#, id % 100)
}

/// The rows `order(id)` for each of `ids` becomes, as `parquet_rows` shows
/// `SELECT id, country, amount`, sorted.
pub(crate) fn order_rows(ids: impl IntoIterator<Item = u64>) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = ids
        .into_iter()
        .map(|id| {
            let country = ["FR", "DE", "US", "JP"][(id % 4) as usize];
            vec![id.to_string(), country.to_string(), format!("{}.25", id % 100)]
        })
        .collect();
    rows.sort();
    rows
}

/// The Kafka broker.
pub(crate) struct Kafka {
    pub(crate) brokers: String,
    runtime: tokio::runtime::Runtime,
}

impl Kafka {
    /// Fails, saying how to start it, when no broker answers.
    pub(crate) fn new() -> Self {
        let brokers = std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let kafka = Kafka { brokers, runtime: runtime() };
        let consumer: BaseConsumer = kafka.config().create().expect("a kafka client");
        if let Err(error) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
            panic!(
                "these tests need a Kafka broker at {}: {error}\nstart one with scripts/start-kafka.sh",
                kafka.brokers
            );
        }
        kafka
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// A new topic of `partitions` partitions.
    pub(crate) fn topic(&self, test: &str, partitions: i32) -> String {
        let name = unique(&format!("sluice-test-{test}"));
        self.runtime.block_on(async {
            let admin: AdminClient<DefaultClientContext> = self.config().create().expect("admin client");
            let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
            let created = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create_topics");
            for result in created {
                result.unwrap_or_else(|(topic, error)| panic!("cannot create topic {topic}: {error}"));
            }
        });
        name
    }

    /// Produces `bodies`, keyed by their index, and waits until the broker has them all.
    pub(crate) fn produce(&self, topic: &str, bodies: impl IntoIterator<Item = String>) {
        self.runtime.block_on(async {
            let producer: FutureProducer = self.config().set("linger.ms", "5").create().expect("a kafka producer");
            let bodies: Vec<String> = bodies.into_iter().collect();
            let sends = bodies.iter().enumerate().map(|(n, body)| {
                let key = n.to_string();
                let producer = &producer;
                async move {
                    producer
                        .send(FutureRecord::to(topic).key(&key).payload(body), Duration::from_secs(30))
                        .await
                        .map_err(|(error, _)| error)
                        .expect("delivered");
                }
            });
            futures::stream::iter(sends).buffer_unordered(1000).collect::<Vec<()>>().await;
        });
    }

    /// Every record of `topic` as `(sluice-message-id header, value)`.
    pub(crate) fn records(&self, topic: &str) -> Vec<(Option<String>, String)> {
        self.runtime.block_on(async {
            let consumer: StreamConsumer = self
                .config()
                .set("group.id", unique("sluice-test-reader"))
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("a kafka consumer");
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
            let mut assignment = TopicPartitionList::new();
            for partition in metadata.topics()[0].partitions() {
                assignment.add_partition_offset(topic, partition.id(), Offset::Beginning).expect("assign");
            }
            consumer.assign(&assignment).expect("assign");
            let mut records = Vec::new();
            while let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
                let id = record.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|header| header.key == "sluice-message-id")
                        .and_then(|header| header.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                let value = String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned();
                records.push((id, value));
            }
            records
        })
    }

    /// The offsets the consumer group `group` committed, by partition.
    pub(crate) fn group_offsets(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().expect("a kafka consumer");
        let mut wanted = TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(topic, partition);
        }
        let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect()
    }
}

/// RabbitMQ.
pub(crate) struct Rabbit {
    pub(crate) url: String,
    runtime: tokio::runtime::Runtime,
}

impl Rabbit {
    /// Fails, saying how to start it, when the broker does not answer.
    pub(crate) fn new() -> Self {
        let url = std::env::var("SLUICE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let rabbit = Rabbit { url, runtime: runtime() };
        rabbit.runtime.block_on(async {
            if let Err(error) = Connection::connect(&rabbit.url, ConnectionProperties::default()).await {
                panic!("these tests need RabbitMQ at {}: {error}\nstart it with scripts/start-rabbitmq.sh", rabbit.url);
            }
        });
        rabbit
    }

    /// A new durable queue, deleted when the returned guard is dropped.
    pub(crate) fn queue(&self, test: &str) -> TestQueue<'_> {
        let name = unique(&format!("sluice.test.{test}"));
        self.runtime.block_on(async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            channel
                .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
                .await
                .expect("declare");
        });
        TestQueue { rabbit: self, name }
    }

    /// Publishes `(message_id, body)` pairs, persistent, with confirms.
    pub(crate) fn publish(&self, queue: &str, messages: impl IntoIterator<Item = (Option<String>, String)>) {
        self.runtime.block_on(async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
            let mut confirms = Vec::new();
            for (id, body) in messages {
                let mut properties = BasicProperties::default().with_delivery_mode(2);
                if let Some(id) = id {
                    properties = properties.with_message_id(id.as_str().into());
                }
                let confirm = channel
                    .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body.as_bytes(), properties)
                    .await
                    .expect("publish");
                confirms.push(confirm);
            }
            for confirm in confirms {
                assert!(confirm.await.expect("confirmed").is_ack(), "the broker took the message");
            }
        });
    }

    /// Takes every message now in `queue`: `(message_id, body)`.
    pub(crate) fn drain(&self, queue: &str) -> Vec<(Option<String>, String)> {
        self.runtime.block_on(async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            let mut consumer = channel
                .basic_consume(queue.into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .expect("consume");
            let mut taken = Vec::new();
            while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
                let id = delivery.properties.message_id().as_ref().map(ToString::to_string);
                taken.push((id, String::from_utf8_lossy(&delivery.data).into_owned()));
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
            taken
        })
    }

    /// Messages ready in `queue`.
    pub(crate) fn ready(&self, queue: &str) -> u32 {
        self.runtime.block_on(async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            channel.queue_declare(queue.into(), passive, FieldTable::default()).await.expect("declared").message_count()
        })
    }
}

/// A queue of one test, deleted when dropped.
pub(crate) struct TestQueue<'a> {
    rabbit: &'a Rabbit,
    pub(crate) name: String,
}

impl Drop for TestQueue<'_> {
    fn drop(&mut self) {
        let (url, name) = (self.rabbit.url.clone(), self.name.clone());
        self.rabbit.runtime.block_on(async move {
            if let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await
                && let Ok(channel) = connection.create_channel().await
            {
                let _ = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
            }
        });
    }
}

/// A tiny deterministic generator: the seed is printed, and
/// `SLUICE_TEST_SEED` replays a run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
        });
        eprintln!("SLUICE_TEST_SEED={seed}");
        Rng(seed)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Kills `child` with SIGKILL, as a lost machine would end it.
pub(crate) fn kill_9(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Kills `child` with SIGKILL two seconds after now, or as soon as a
/// visible output file appears below `out` if that comes first.
pub(crate) fn kill_9_mid_stream(child: &mut std::process::Child, out: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && crate::common::visible_files(out).is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_9(child);
}

/// Runs `sluice run FILE --until-caught-up` with the failpoint `step`
/// armed, and checks that the process died there.
pub(crate) fn crash_at(pipeline: &str, step: &str) {
    let output = crate::common::sluice()
        .args(["run", pipeline, "--until-caught-up"])
        .env("SLUICE_FAILPOINT", step)
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run survived {step}:\n{}", crate::common::printed(&output));
    assert!(stderr.contains(&format!("failpoint {step} reached")), "{}", crate::common::printed(&output));
}

/// `sluice status FILE --json`.
pub(crate) fn status(pipeline: &str) -> serde_json::Value {
    let output = crate::common::run(&["status", pipeline, "--json"]);
    assert!(output.status.success(), "{}", crate::common::printed(&output));
    serde_json::from_slice(&output.stdout).expect("status json")
}

/// The Parquet sink below `out` holds the order of each of `ids` exactly
/// once, and the log of `pipeline` has nothing left to do.
pub(crate) fn assert_orders_once(out: &std::path::Path, pipeline: &str, ids: std::ops::Range<u64>) {
    let (columns, found) = crate::common::parquet_rows(out);
    let expected = order_rows(ids);
    assert_eq!(columns, ["id", "country", "amount"]);
    assert_eq!(found.len(), expected.len(), "row count");
    assert_eq!(found, expected, "every message exactly once");
    let status = status(pipeline);
    assert_eq!(status["pending_batches"], 0, "{status}");
    assert_eq!(status["failed_batches"], 0, "{status}");
    assert_eq!(status["rows_written"], expected.len(), "{status}");
    assert_eq!(status["lag_unit"], "messages", "{status}");
}
