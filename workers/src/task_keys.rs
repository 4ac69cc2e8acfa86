//! The keys that sign tasks: a controller signs each task's body with
//! HMAC-SHA256, and a worker runs a task only if one of its keys made the
//! signature.
//!
//! A key is a secret of at least 16 characters, one a line, from
//! `SLUICE_TASK_KEY` or from key files (`--task-key-file`, a Kubernetes or
//! Docker secret). A controller signs with its first key. A worker accepts
//! any of its keys, which is how keys rotate without a moment when tasks
//! are refused: give workers the new key beside the old, switch the
//! controller to the new one, then take the old one from the workers.
//!
//! A key is known in logs, headers and commit records only by its id: the
//! first 16 hex digits of the HMAC of a fixed text under the key, which
//! tells keys apart and says nothing of the key.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The message header holding a task's signature, hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "sluice-signature";
/// The message header naming the key that signed a task, by its id.
pub const KEY_ID_HEADER: &str = "sluice-key-id";

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// One task key.
#[derive(Clone)]
pub struct TaskKey {
    id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl TaskKey {
    /// The key `secret`, as read from where it is kept.
    fn new(secret: &[u8]) -> Self {
        let id = hex(&mac(secret, b"sluice task key id"))[..16].to_string();
        TaskKey { id, secret: secret.to_vec() }
    }

    /// The key's id: safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signature of `body`, hex.
    pub fn sign(&self, body: &[u8]) -> String {
        hex(&mac(&self.secret, body))
    }

    /// Whether `signature` (hex) is this key's over `body`, compared in
    /// constant time.
    fn verifies(&self, body: &[u8], signature: &str) -> bool {
        let Some(bytes) = unhex(signature) else { return false };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else { return false };
        mac.update(body);
        mac.verify_slice(&bytes).is_ok()
    }
}

fn mac(key: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// Where keys come from: read again on demand, so that a key added to a
/// mounted secret is taken up without a restart.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// The value of `SLUICE_TASK_KEY`, if set.
    pub env: Option<String>,
    /// Key files.
    pub files: Vec<PathBuf>,
}

impl KeySources {
    /// `SLUICE_TASK_KEY` from the environment, and `files`.
    pub fn from_env(files: Vec<PathBuf>) -> Self {
        KeySources { env: std::env::var("SLUICE_TASK_KEY").ok().filter(|v| !v.trim().is_empty()), files }
    }

    /// Whether any key is configured.
    pub fn any(&self) -> bool {
        self.env.is_some() || !self.files.is_empty()
    }

    /// Every key, in order: `SLUICE_TASK_KEY`'s, then each file's. The
    /// error never shows a key.
    pub fn load(&self) -> Result<Vec<TaskKey>, String> {
        let mut keys = Vec::new();
        if let Some(text) = &self.env {
            keys.extend(parse_keys(text, "SLUICE_TASK_KEY")?);
        }
        for file in &self.files {
            keys.extend(read_key_file(file)?);
        }
        Ok(keys)
    }
}

fn read_key_file(path: &Path) -> Result<Vec<TaskKey>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the task key file {}: {e}", path.display()))?;
    let keys = parse_keys(&text, &path.display().to_string())?;
    if keys.is_empty() {
        return Err(format!("the task key file {} holds no key", path.display()));
    }
    Ok(keys)
}

/// The keys in `text`, one a line, blank lines skipped.
fn parse_keys(text: &str, from: &str) -> Result<Vec<TaskKey>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() {
            continue;
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the task key on line {} of {from} is {} characters; a task key needs at least {MIN_KEY_BYTES} \
                 (make one with `openssl rand -hex 32`)",
                n + 1,
                key.len()
            ));
        }
        keys.push(TaskKey::new(key.as_bytes()));
    }
    Ok(keys)
}

/// Why a task's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No signature header.
    Missing,
    /// A signature, and none of the keys made it.
    Bad(String),
}

impl fmt::Display for Unsigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsigned::Missing => write!(
                f,
                "the task is not signed; this worker runs only tasks signed with its task key (give the \
                 controller SLUICE_TASK_KEY or --task-key-file)"
            ),
            Unsigned::Bad(reason) => f.write_str(reason),
        }
    }
}

/// The id of the key in `keys` that made `signature` over `body`.
/// `key_id` is the id the sender named, if any.
pub fn verify(
    keys: &[TaskKey],
    body: &[u8],
    signature: Option<&str>,
    key_id: Option<&str>,
) -> Result<String, Unsigned> {
    let Some(signature) = signature else { return Err(Unsigned::Missing) };
    if let Some(key) = keys.iter().find(|key| key.verifies(body, signature)) {
        return Ok(key.id.clone());
    }
    // The sender's key id is only a hint for the reason: an unknown one is
    // a retired key or a worker not yet given a new one.
    let shown: String = key_id.unwrap_or("").chars().filter(char::is_ascii_alphanumeric).take(16).collect();
    Err(Unsigned::Bad(match key_id {
        Some(_) if !keys.iter().any(|key| key.id == shown) => format!(
            "the task is signed with a key this worker does not hold (key id {shown:?}): a retired key, or a \
             worker not yet given the controller's new key"
        ),
        _ => "the task's signature does not match its body under any of this worker's task keys".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let old = parse_keys("an old key of some length\n", "t").expect("key").remove(0);
        let new = parse_keys("a new key of some length", "t").expect("key").remove(0);
        let body = br#"{"format":"sluice.task.v2"}"#;
        let signature = new.sign(body);
        assert_eq!(
            verify(&[old.clone(), new.clone()], body, Some(&signature), Some(new.id())),
            Ok(new.id().to_string())
        );
        let refused = verify(std::slice::from_ref(&old), body, Some(&signature), Some(new.id())).expect_err("refused");
        assert!(refused.to_string().contains("does not hold"), "{refused}");
        assert!(verify(std::slice::from_ref(&new), b"another body", Some(&signature), Some(new.id())).is_err());
        assert_eq!(verify(std::slice::from_ref(&new), body, None, None), Err(Unsigned::Missing));
        assert!(verify(std::slice::from_ref(&new), body, Some("zz"), None).is_err());
        assert_ne!(old.id(), new.id());
        assert!(!format!("{new:?}").contains("new key"));
    }

    #[test]
    fn short_keys_are_refused_without_being_shown() {
        let error = parse_keys("\nshort-secret\n", "SLUICE_TASK_KEY").expect_err("refused");
        assert!(error.contains("line 2") && !error.contains("short-secret"), "{error}");
        assert_eq!(parse_keys("k1-is-long-enough-ok\n\nk2-is-long-enough-ok\n", "f").expect("keys").len(), 2);
    }
}
