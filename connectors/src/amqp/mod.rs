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
use sluice_engine::spec::{Component, Diagnostic};
use sluice_engine::{Cause, Error};
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

/// `url` as messages and logs may show it: without its password.
pub fn shown(url: &str) -> String {
    sluice_engine::spec::shown_url(url)
}

/// The environment variable naming a PEM file of the CA certificates that
/// `amqps://` brokers' certificates are checked against (a private CA);
/// without it, the well-known public roots.
pub const CA_FILE_ENV: &str = "SLUICE_AMQP_CA_FILE";

/// What to check first when the broker cannot be reached.
const START_HINT: &str = "is the broker running? (RabbitMQ: scripts/start-rabbitmq.sh)";

/// Connects to the broker at `url`, `amqp://` or `amqps://`, and opens a
/// channel, within [`CONNECT_TIMEOUT`]. With `SLUICE_AMQP_CA_FILE`, a TLS
/// broker must present a certificate signed by one of that file's CAs. No
/// error shows the URL's password.
pub async fn connect(url: &str) -> Result<(Connection, Channel), Error> {
    let cannot = |cause: Cause| Error::BrokerCall {
        what: format!("cannot connect to {}", shown(url)),
        cause,
        hint: Some(START_HINT),
    };
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if let Some(path) = std::env::var_os(CA_FILE_ENV).filter(|path| !path.is_empty()) {
        let pem = std::fs::read_to_string(&path).map_err(|e| Error::Misconfigured {
            what: format!("cannot read the CA file {} ({CA_FILE_ENV})", std::path::Path::new(&path).display()),
            cause: Cause::new(e),
        })?;
        tls.cert_chain = Some(pem);
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| cannot(Cause::new(e)))?;
    // The client can wait for ever on a connection that failed under it.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let connection = Connection::connect_with_config(url, ConnectionProperties::default(), tls, runtime)
            .await
            .map_err(|e| cannot(Cause::masked(e, |text| without_secrets(text, url))))?;
        let channel = connection.create_channel().await.map_err(|e| broker_error(url, "cannot open a channel", e))?;
        Ok((connection, channel))
    });
    match connected.await {
        Ok(connected) => connected,
        Err(elapsed) => {
            Err(cannot(Cause::masked(elapsed, |_| format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))))
        }
    }
}

/// How long connecting and opening a channel may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to `url` and makes sure `queue` exists: an existing queue is
/// used as it is (whatever its arguments), a missing one is declared
/// durable.
pub(crate) async fn open_queue(url: &str, queue: &str) -> Result<(Connection, Channel), Error> {
    let (connection, channel) = connect(url).await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    // A passive declare of a missing queue closes its channel: it gets
    // one of its own.
    let probe = connection.create_channel().await.map_err(|e| broker_error(url, "cannot open a channel", e))?;
    if probe.queue_declare(queue.into(), passive, FieldTable::default()).await.is_err() {
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .map_err(|e| broker_error(url, &format!("cannot declare the queue {queue}"), e))?;
    } else {
        let _ = probe.close(200, "done".into()).await;
    }
    Ok((connection, channel))
}

/// A client error of the broker at `url` as the engine's, without the
/// URL's password.
pub fn broker_error(url: &str, what: &str, error: lapin::Error) -> Error {
    Error::BrokerCall {
        what: format!("{} {what}", shown(url)),
        cause: Cause::masked(error, |text| without_secrets(text, url)),
        hint: None,
    }
}

/// `text` with the password of `url`, as written or percent-decoded, and
/// the whole URL, taken out.
pub fn without_secrets(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &shown(url));
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password().filter(|p| !p.is_empty())
    {
        text = text.replace(password, "***");
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8()
            && !decoded.is_empty()
        {
            text = text.replace(decoded.as_ref(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests;
