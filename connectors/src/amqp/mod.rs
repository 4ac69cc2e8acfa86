//! `type = "amqp"`: a queue as a stream source, and an exchange as a sink
//! (RabbitMQ and other AMQP 0.9.1 brokers).
//!
//! The source consumes with manual acknowledgements and acknowledges a
//! micro-batch only once its commit record exists; a redelivered message
//! whose `message_id` is in a committed batch is recognised and
//! acknowledged without being written again. The sink publishes one JSON
//! message a row after the batch's commit, with publisher confirms and a
//! stable `message_id`.

mod config;
mod sink;
mod source;

pub use config::{AmqpSinkConfig, AmqpSourceConfig};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
pub(crate) use sink::sink;
use sluice_engine::Error;
use sluice_engine::spec::{Component, Diagnostic};
pub use source::AmqpSource;

/// Checks that `url` is an AMQP URL; the problem never shows the URL,
/// which may hold a password.
fn check_url(component: &Component<'_>, url: &str) -> Option<Diagnostic> {
    let problem = match url::Url::parse(url) {
        Err(e) => format!("is not a valid URL: {e}"),
        Ok(parsed) if !matches!(parsed.scheme(), "amqp" | "amqps") => {
            format!("has the scheme \"{}\"; write amqp:// or amqps://", parsed.scheme())
        }
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => "names no host".into(),
        Ok(_) => return None,
    };
    Some(component.error(
        "url",
        problem,
        Some("write it as amqp://USER:PASSWORD@HOST:5672/%2f, the password as ${env:NAME}".into()),
    ))
}

/// `url` without its password, for messages.
pub(crate) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unreadable AMQP URL)".into(),
    }
}

/// The environment variable naming a PEM file of the CA certificates that
/// `amqps://` brokers' certificates are checked against (a private CA);
/// without it, the well-known public roots.
pub const CA_FILE_ENV: &str = "SLUICE_AMQP_CA_FILE";

/// Connects to the broker at `url`, `amqp://` or `amqps://`. With
/// `SLUICE_AMQP_CA_FILE`, a TLS broker must present a certificate signed
/// by one of that file's CAs. The error never holds the URL's password.
pub async fn connect_broker(url: &str) -> Result<Connection, String> {
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if let Some(path) = std::env::var_os(CA_FILE_ENV).filter(|path| !path.is_empty()) {
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            format!("cannot read the CA file {} ({CA_FILE_ENV}): {e}", std::path::Path::new(&path).display())
        })?;
        tls.cert_chain = Some(pem);
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    Connection::connect_with_config(url, ConnectionProperties::default(), tls, runtime)
        .await
        .map_err(|e| without_secrets(&e.to_string(), url))
}

/// How long connecting and opening a channel may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to `url` and opens a channel.
async fn connect(url: &str) -> Result<(Connection, Channel), Error> {
    let refused = |reason: String| {
        Error::Broker(format!(
            "cannot connect to {}: {reason}; is the broker running? (RabbitMQ: scripts/start-rabbitmq.sh)",
            shown(url)
        ))
    };
    // The client can wait for ever on a connection that failed under it.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let connection = connect_broker(url).await.map_err(refused)?;
        let channel = connection.create_channel().await.map_err(|e| broker(url, "cannot open a channel", &e))?;
        Ok((connection, channel))
    });
    connected.await.unwrap_or_else(|_| Err(refused(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))))
}

/// Connects to `url` and makes sure `queue` exists: an existing queue is
/// used as it is (whatever its arguments), a missing one is declared
/// durable.
pub(crate) async fn open_queue(url: &str, queue: &str) -> Result<(Connection, Channel), Error> {
    let (connection, channel) = connect(url).await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    // A passive declare of a missing queue closes its channel: it gets
    // one of its own.
    let probe = connection.create_channel().await.map_err(|e| broker(url, "cannot open a channel", &e))?;
    if probe.queue_declare(queue.into(), passive, FieldTable::default()).await.is_err() {
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .map_err(|e| broker(url, &format!("cannot declare the queue {queue}"), &e))?;
    } else {
        let _ = probe.close(200, "done".into()).await;
    }
    Ok((connection, channel))
}

/// An AMQP error as the engine's, without the URL's password.
fn broker(url: &str, what: &str, error: &lapin::Error) -> Error {
    Error::Broker(format!("{} {what}: {}", shown(url), without_secrets(&error.to_string(), url)))
}

/// `text` without the URL or its password.
fn without_secrets(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &shown(url));
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password().filter(|p| !p.is_empty())
    {
        text = text.replace(password, "***");
    }
    text
}

#[cfg(test)]
mod tests;
