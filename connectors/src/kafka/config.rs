//! The `[source]` and `[sink]` keys of `type = "kafka"`.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_engine::spec::schema::SchemaSpec;
use toml::Spanned;

use crate::formats::messages::MessageFormat;

/// Where a pipeline whose log has no position for a partition begins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest record the broker still has.
    #[default]
    Earliest,
    /// The end of the partition: only records produced from then on.
    Latest,
}

/// `[source] type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`, several separated by commas.
    pub brokers: Spanned<String>,
    /// The topic to read (or `topics`).
    pub topic: Option<Spanned<String>>,
    /// The topics to read (or `topic`).
    pub topics: Option<Spanned<Vec<String>>>,
    /// The consumer group whose offsets are committed after each batch,
    /// for monitoring tools; positions themselves live in the checkpoint
    /// log. Default `sluice-<first topic>`.
    pub group: Option<Spanned<String>>,
    /// Where a pipeline with no log yet begins: `earliest` (default) or
    /// `latest`.
    pub start: Option<Spanned<StartPosition>>,
    /// How each record's value is read: `json` (default), `csv` or `raw`.
    pub format: Option<Spanned<MessageFormat>>,
    /// `format = "csv"` only: the field delimiter (default `,`).
    pub delimiter: Option<Spanned<String>>,
    /// Column names and types; inferred from the first micro-batch when
    /// absent (json only).
    pub schema: Option<Spanned<SchemaSpec>>,
    /// Further librdkafka consumer settings, as librdkafka names them
    /// (`"fetch.max.bytes" = "10485760"`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[sink] type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`, several separated by commas.
    pub brokers: Spanned<String>,
    /// The topic each row is produced to, as a JSON object.
    pub topic: Spanned<String>,
    /// The column whose value (as text) is each record's key, which picks
    /// its partition; without it records are spread over the partitions.
    pub key: Option<Spanned<String>>,
    /// Further librdkafka producer settings, as librdkafka names them
    /// (`"compression.type" = "zstd"`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}
