//! The unit of work: a batch of input objects with a deterministic id.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::messages::StreamInputs;

/// The name of a pipeline: `[a-z0-9_-]+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipelineName(String);

impl PipelineName {
    /// Checks the name's characters.
    pub fn new(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(PipelineName(name.to_string()))
        } else {
            Err(format!("\"{name}\" is not a pipeline name; use lower-case letters, digits, `_` and `-`"))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One object of the source, as listed: enough to tell a new object or a
/// changed one from one already processed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    /// Path relative to the source location, with `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's entity tag, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: DateTime<Utc>,
    /// Where reading begins: 0 for the whole object; for the appended part
    /// of an object that grew after an earlier version was planned, that
    /// version's size, so that only the new bytes are read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start: u64,
    /// The SHA-256 (hex) of the object's last [`TAIL_BYTES`] bytes (all of
    /// them when it is smaller), as planned: what tells a later version
    /// that only grew from one that was rewritten. `None` when the source
    /// cannot append (compressed or Parquet input, another `on_change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_sha256: Option<String>,
}

/// An entity tag's value, without the quotes and the weak marker (`W/`)
/// that some answers of a store wrap it in and others do not: Azure lists
/// a blob's tag as `0x8D…` and answers a HEAD with `"0x8D…"`. Two tags
/// name the same version when their values are equal.
pub fn etag_value(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(etag)
}

/// How many bytes at an object's end [`InputObject::tail_sha256`] covers.
pub const TAIL_BYTES: u64 = 4096;

/// The hex SHA-256 of `bytes`, as [`InputObject::tail_sha256`] holds it.
pub fn tail_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What identifies one version of one input object: a file replaced with
/// different content has a new key, and is new input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputKey {
    path: String,
    size: u64,
    version: String,
}

impl InputObject {
    /// The key that tells this version of the object from others. The
    /// entity tag counts by its value ([`etag_value`]), so a version
    /// listed and the same version looked up by name have one key.
    pub fn key(&self) -> InputKey {
        let version = match &self.etag {
            Some(etag) => etag_value(etag).to_string(),
            None => self.last_modified.to_rfc3339(),
        };
        InputKey { path: self.path.clone(), size: self.size, version }
    }

    /// The entity tag as the store gave it when this input was planned,
    /// or the modification time where it gave none.
    fn version_as_planned(&self) -> String {
        match &self.etag {
            Some(etag) => etag.clone(),
            None => self.last_modified.to_rfc3339(),
        }
    }

    /// The bytes of the object its [`InputObject::tail_sha256`] covers.
    pub fn tail_range(&self) -> std::ops::Range<u64> {
        self.size.saturating_sub(TAIL_BYTES)..self.size
    }

    /// Whether only a part of the object is read: it grew, and what came
    /// before `start` was planned already.
    pub fn is_appended_part(&self) -> bool {
        self.start > 0
    }
}

/// A batch's id: a hash of the pipeline's name and version and of the
/// batch's exact inputs, so that planning the same work twice gives the
/// same id, and outputs named from it are overwritten, not duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(String);

impl BatchId {
    /// The id of a batch of `inputs` of pipeline `name` at `version`.
    pub fn derive(name: &PipelineName, version: u32, inputs: &[InputObject]) -> Self {
        // The appended part of an object and the whole object of the same
        // version are different batches; a whole object hashes as it always
        // has, so the ids of logs written before appends existed hold.
        // The entity tag is hashed as the store gave it, as it always
        // was, so that ids do not depend on how tags are compared.
        let mut keys: Vec<(&str, u64, String, u64)> = inputs
            .iter()
            .map(|input| (input.path.as_str(), input.size, input.version_as_planned(), input.start))
            .collect();
        keys.sort();
        let mut hasher = Sha256::new();
        hasher.update(b"sluice-batch-v1\0");
        hasher.update(name.as_str().as_bytes());
        hasher.update(format!("\0{version}\0").as_bytes());
        for (path, size, version, start) in &keys {
            hasher.update(path.as_bytes());
            hasher.update(format!("\0{size}\0").as_bytes());
            hasher.update(version.as_bytes());
            hasher.update(b"\0");
            if *start > 0 {
                hasher.update(format!("from {start}\0").as_bytes());
            }
        }
        Self::from_digest(hasher)
    }

    /// The id of a stream batch of pipeline `name` at `version`: a hash of
    /// its offset ranges (or of its message ids and nonce).
    pub fn derive_stream(name: &PipelineName, version: u32, inputs: &StreamInputs) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"sluice-stream-batch-v1\0");
        hasher.update(name.as_str().as_bytes());
        hasher.update(format!("\0{version}\0").as_bytes());
        match inputs {
            StreamInputs::Kafka { ranges } => {
                for range in ranges {
                    hasher.update(
                        format!("{}\0{}\0{}\0{}\0", range.topic, range.partition, range.start, range.end).as_bytes(),
                    );
                }
            }
            StreamInputs::Amqp { queue, messages, message_ids, nonce } => {
                hasher.update(format!("{queue}\0{messages}\0{nonce}\0").as_bytes());
                for id in message_ids {
                    hasher.update(id.as_bytes());
                    hasher.update(b"\0");
                }
            }
        }
        Self::from_digest(hasher)
    }

    fn from_digest(hasher: Sha256) -> Self {
        let digest = hasher.finalize();
        BatchId(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Wraps an id read back from the log or typed by a user.
    pub fn from_string(id: String) -> Self {
        BatchId(id)
    }

    /// The id as text: 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A batch: the inputs one worker processes together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The batch's id.
    pub id: BatchId,
    /// Its input objects, in the order they are read; none for a stream.
    pub inputs: Vec<InputObject>,
    /// The messages of a stream batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamInputs>,
}

impl Batch {
    /// A batch of input objects.
    pub fn of_objects(id: BatchId, inputs: Vec<InputObject>) -> Self {
        Batch { id, inputs, stream: None }
    }

    /// What the batch reads, for logs: its files, or its ranges or messages.
    pub fn describe_inputs(&self) -> String {
        match &self.stream {
            Some(stream) => stream.describe(),
            None => self.inputs.iter().map(|input| input.path.as_str()).collect::<Vec<_>>().join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, size: u64, etag: &str) -> InputObject {
        InputObject { path: path.into(), size, etag: Some(etag.into()), ..InputObject::default() }
    }

    #[test]
    fn batch_ids_depend_on_exact_inputs_only() {
        let name = PipelineName::new("orders").expect("valid");
        let a = [input("a.csv", 10, "1"), input("b.csv", 20, "2")];
        let swapped = [a[1].clone(), a[0].clone()];
        assert_eq!(BatchId::derive(&name, 1, &a), BatchId::derive(&name, 1, &swapped));
        assert_ne!(BatchId::derive(&name, 1, &a), BatchId::derive(&name, 2, &a));
        let changed = [input("a.csv", 10, "9"), input("b.csv", 20, "2")];
        assert_ne!(BatchId::derive(&name, 1, &a), BatchId::derive(&name, 1, &changed));
        assert_eq!(BatchId::derive(&name, 1, &a).as_str().len(), 32);
        let appended = [InputObject { start: 5, ..a[0].clone() }, a[1].clone()];
        assert_ne!(BatchId::derive(&name, 1, &a), BatchId::derive(&name, 1, &appended), "a part is not the whole");
        assert_eq!(BatchId::derive(&name, 1, &appended), BatchId::derive(&name, 1, &appended.clone()));
    }

    #[test]
    fn inputs_of_older_logs_load_and_whole_inputs_keep_their_ids() {
        let old = r#"{"path":"a.csv","size":10,"etag":"1","last_modified":"1970-01-01T00:00:00Z"}"#;
        let input: InputObject = serde_json::from_str(old).expect("an older log's input loads");
        assert_eq!((input.start, input.tail_sha256.as_deref()), (0, None));
        assert_eq!(serde_json::to_string(&input).expect("encodes"), old, "a whole input is written as before");
        let name = PipelineName::new("orders").expect("valid");
        assert_eq!(BatchId::derive(&name, 1, &[input]).as_str(), "3982304f1cdd7743dde251f9e96cac66");
    }

    #[test]
    fn a_version_listed_and_the_same_version_looked_up_by_name_have_one_key() {
        // Azure lists `0x8D…` and answers a HEAD with `"0x8D…"`.
        assert_eq!(etag_value("\"0x8DC1\""), "0x8DC1");
        assert_eq!(etag_value("0x8DC1"), "0x8DC1");
        assert_eq!(etag_value("W/\"abc\""), "abc");
        assert_eq!(etag_value("\""), "\"", "a lone quote is its own value");
        assert_eq!(input("a.csv", 10, "\"0x8DC1\"").key(), input("a.csv", 10, "0x8DC1").key());
        assert_ne!(input("a.csv", 10, "\"0x8DC1\"").key(), input("a.csv", 10, "0x8DC2").key());
        // Ids hash the tag as the store gave it, as before.
        let name = PipelineName::new("orders").expect("valid");
        let quoted = [input("a.csv", 10, "\"1\"")];
        assert_ne!(BatchId::derive(&name, 1, &quoted), BatchId::derive(&name, 1, &[input("a.csv", 10, "1")]));
    }

    #[test]
    fn pipeline_names_are_checked() {
        assert!(PipelineName::new("orders_v2-eu").is_ok());
        assert!(PipelineName::new("Orders").is_err());
        assert!(PipelineName::new("").is_err());
        assert!(PipelineName::new("a b").is_err());
    }
}
