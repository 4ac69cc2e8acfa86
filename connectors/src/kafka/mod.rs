//! `type = "kafka"`: a topic as a stream source, and as a sink.
//!
//! The source reads partitions by assigning them and seeking to the
//! positions in the checkpoint log, never through a consumer group's
//! rebalances, so no rebalance can skip or repeat a record; the group's
//! offsets are committed after each batch for monitoring tools only. The
//! sink produces one JSON record a row with an idempotent producer, after
//! the batch's commit, each with a stable `sluice-message-id` header.

mod config;
mod reader;
mod sink;
mod source;

use std::collections::BTreeMap;

pub use config::{KafkaSinkConfig, KafkaSourceConfig, StartPosition};
use rdkafka::ClientConfig;
pub(crate) use sink::sink;
use sluice_engine::Error;
use sluice_engine::spec::{Component, Diagnostic};
pub use source::KafkaSource;

/// The header that carries each produced record's stable id.
pub const MESSAGE_ID_HEADER: &str = "sluice-message-id";

/// librdkafka settings sluice sets itself: an `options` table may not
/// change them.
const RESERVED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
];

/// Checks `brokers`: `host:port`, several separated by commas.
fn check_brokers(component: &Component<'_>, brokers: &str) -> Option<Diagnostic> {
    let bad = brokers.split(',').map(str::trim).find(|broker| {
        let (host, port) = broker.rsplit_once(':').unwrap_or((broker, ""));
        host.is_empty() || port.parse::<u16>().is_err()
    });
    bad.map(|broker| {
        component.error(
            "brokers",
            format!("\"{broker}\" is not host:port"),
            Some("for example brokers = \"127.0.0.1:9092\", several separated by commas".into()),
        )
    })
}

/// Problems with the `options` table: keys sluice sets itself.
fn check_options(component: &Component<'_>, options: &BTreeMap<String, String>) -> Vec<Diagnostic> {
    options
        .keys()
        .filter(|key| RESERVED_OPTIONS.contains(&key.as_str()))
        .map(|key| {
            component.error(
                "options",
                format!("\"{key}\" is set by sluice"),
                Some("brokers, group and the positions in the checkpoint log decide it; remove it".into()),
            )
        })
        .collect()
}

/// A librdkafka configuration for `brokers`: `defaults` first, then the
/// user's `options`, which may change them.
fn client_config(brokers: &str, defaults: &[(&str, &str)], options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("client.id", "sluice");
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// How `sluice explain` shows an `options` setting: a value that may be a
/// credential is masked even when it was written in the file as it is.
fn shown_option(key: &str, value: &str) -> String {
    let secret = ["password", "secret", "token", "jaas", "credential"].iter().any(|word| key.contains(word));
    format!("{key} = {}", if secret { "***" } else { value })
}

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a blocking client call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> sluice_engine::Result<T> + Send + 'static,
) -> sluice_engine::Result<T> {
    tokio::task::spawn_blocking(call).await.map_err(|e| Error::BrokerCall {
        what: "kafka client call".into(),
        cause: sluice_engine::Cause::new(e),
        hint: None,
    })?
}

/// A client error as the engine's: a broker that can be retried.
fn broker_error(brokers: &str, what: &str, error: rdkafka::error::KafkaError) -> Error {
    Error::BrokerCall {
        what: format!("kafka {brokers}: {what}"),
        cause: sluice_engine::Cause::new(error),
        hint: Some("is the broker running? (locally: scripts/start-kafka.sh)"),
    }
}

#[cfg(test)]
mod tests;
