//! `bench-brokers`: fills a Kafka topic or an AMQP queue with JSON orders,
//! and consumes them with the raw client libraries sluice itself uses
//! (rdkafka, lapin), doing nothing with them: the baseline that
//! `benches/streams.py` sets sluice's records per second beside.
//!
//! ```sh
//! cargo run --release -p sluice-benches --bin bench-brokers -- kafka-produce --topic orders --count 100000
//! cargo run --release -p sluice-benches --bin bench-brokers -- kafka-consume --topic orders --count 100000
//! cargo run --release -p sluice-benches --bin bench-brokers -- amqp-publish --queue orders --count 100000
//! cargo run --release -p sluice-benches --bin bench-brokers -- amqp-consume --queue orders --count 100000
//! ```
//!
//! Each prints one JSON line: `{"records": N, "seconds": S, "per_second": R}`.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Fills and drains brokers for the stream benchmarks.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Kafka bootstrap brokers.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// AMQP broker.
    #[arg(long, global = true, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the topic if it is missing and produces `count` orders to it.
    KafkaProduce {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// The first order id.
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
    /// Reads `count` records of every partition from the beginning.
    KafkaConsume {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
    },
    /// Declares the queue and publishes `count` persistent orders, each with a message id.
    AmqpPublish {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
    /// Consumes and acknowledges `count` messages, 1,000 at a time.
    AmqpConsume {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: u64,
    },
}

/// The JSON order `id`, as the benchmark's pipelines read it.
fn order(id: u64) -> String {
    let country = ["FR", "DE", "US", "JP", "BR", "IN", "ES", "IT"][(id % 8) as usize];
    let status = ["paid", "shipped", "cancelled", "refunded"][(id % 4) as usize];
    format!(
        r#"{{"order_id": {id}, "customer": "customer-{}", "country": "{country}", "amount": {}.{:02}, "status": "{status}"}}"#,
        id % 5000,
        id % 1000,
        id % 100
    )
}

fn report(records: u64, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(r#"{{"records": {records}, "seconds": {seconds:.4}, "per_second": {:.0}}}"#, records as f64 / seconds);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &cli.brokers);
    match cli.command {
        Command::KafkaProduce { topic, count, partitions, first } => {
            let admin: AdminClient<DefaultClientContext> = kafka.create()?;
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
            // An existing topic is used as it is.
            let _ = admin.create_topics([&new], &AdminOptions::new()).await?;
            let producer: FutureProducer = kafka.clone().set("linger.ms", "5").create()?;
            let started = Instant::now();
            let bodies: Vec<(String, String)> = (first..first + count).map(|id| (id.to_string(), order(id))).collect();
            let sends = bodies.iter().map(|(key, body)| {
                let producer = &producer;
                let topic = &topic;
                async move {
                    producer
                        .send(FutureRecord::to(topic).key(key).payload(body), Duration::from_secs(60))
                        .await
                        .map(|_| ())
                        .map_err(|(error, _)| error)
                }
            });
            let mut sending = futures::stream::iter(sends).buffer_unordered(10_000);
            while let Some(sent) = sending.next().await {
                sent?;
            }
            report(count, started);
        }
        Command::KafkaConsume { topic, count } => {
            let consumer: StreamConsumer = kafka
                .clone()
                .set("group.id", "bench-brokers")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "100")
                .create()?;
            let started = Instant::now();
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let mut assignment = TopicPartitionList::new();
            for partition in metadata.topics()[0].partitions() {
                assignment.add_partition_offset(&topic, partition.id(), Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            let mut records = 0;
            let mut bytes = 0usize;
            while records < count {
                let record = consumer.recv().await?;
                bytes += rdkafka::Message::payload(&record).map_or(0, <[u8]>::len);
                records += 1;
            }
            std::hint::black_box(bytes);
            report(records, started);
        }
        Command::AmqpPublish { queue, count, first } => {
            let connection = Connection::connect(&cli.amqp, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let started = Instant::now();
            let mut confirms = Vec::with_capacity(1000);
            for id in first..first + count {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("order-{id}").as_str().into());
                let body = order(id);
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties,
                    )
                    .await?;
                confirms.push(confirm);
                if confirms.len() == 1000 {
                    for confirm in confirms.drain(..) {
                        confirm.await?;
                    }
                }
            }
            for confirm in confirms {
                confirm.await?;
            }
            report(count, started);
        }
        Command::AmqpConsume { queue, count } => {
            let connection = Connection::connect(&cli.amqp, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel.basic_qos(20_000, BasicQosOptions::default()).await?;
            let started = Instant::now();
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut records = 0;
            let mut bytes = 0usize;
            while records < count {
                let Some(delivery) = consumer.next().await else { break };
                let delivery = delivery?;
                bytes += delivery.data.len();
                records += 1;
                if records % 1000 == 0 || records == count {
                    channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await?;
                }
            }
            std::hint::black_box(bytes);
            report(records, started);
        }
    }
    Ok(())
}
