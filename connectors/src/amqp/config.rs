//! The `[source]` and `[sink]` keys of `type = "amqp"`.

use serde::Deserialize;
use sluice_engine::spec::schema::SchemaSpec;
use toml::Spanned;

use crate::formats::messages::MessageFormat;

/// `[source] type = "amqp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// The broker, `amqp://USER:PASSWORD@HOST:PORT/VHOST` (vhost `/` is
    /// `%2f`); write the password as `${env:NAME}`.
    pub url: Spanned<String>,
    /// The queue to consume; declared durable if it does not exist.
    pub queue: Spanned<String>,
    /// How each message's body is read: `json` (default), `csv` or `raw`.
    pub format: Option<Spanned<MessageFormat>>,
    /// `format = "csv"` only: the field delimiter (default `,`).
    pub delimiter: Option<Spanned<String>>,
    /// Column names and types; inferred from the first micro-batch when
    /// absent (json only).
    pub schema: Option<Spanned<SchemaSpec>>,
}

/// `[sink] type = "amqp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// The broker, as for the source.
    pub url: Spanned<String>,
    /// The exchange to publish to; `""` (default) is the default exchange,
    /// where `routing_key` names a queue, declared durable if missing.
    #[serde(default)]
    pub exchange: String,
    /// Each message's routing key.
    pub routing_key: Spanned<String>,
}
