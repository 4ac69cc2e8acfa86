//! Event Grid's blob events on an Azure Storage queue:
//! `[trigger] notifications = "azqueue://ACCOUNT/QUEUE"`.
//!
//! Azure Blob Storage announces each blob written as a
//! `Microsoft.Storage.BlobCreated` event; an Event Grid subscription with
//! a Storage Queue endpoint puts each event on a queue, as a message whose
//! text is the event's JSON (Base64-encoded, as Event Grid writes it, or
//! plain). The queue service has no push, so the feed takes messages with
//! Get Messages, waiting longer between empty answers (up to
//! [`MAX_IDLE_WAIT`]). A message stays invisible to other readers while its
//! objects are planned, and is deleted once they are; handed back, it is
//! made visible again at once. A message that is not an event is moved to
//! `QUEUE-poison`, as Azure Functions does, and the next listing finds any
//! object it was about.
//!
//! Credentials: the account key or a SAS token from `[storage]`
//! (`azure_storage_account_key`, `azure_storage_sas_key`) or the `AZURE_*`
//! variables of the same names; with `azure_storage_use_emulator`
//! (`AZURE_STORAGE_USE_EMULATOR=true`), Azurite's queue service at
//! `AZURITE_QUEUE_STORAGE_URL` (default `http://127.0.0.1:10001`) with its
//! well-known key. Requests are signed with Shared Key; neither the key nor
//! a SAS token appears in an error or a log line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use object_store::azure::AzureConfigKey;
use serde::Deserialize;
use sha2::Sha256;
use sluice_engine::storage::StorageOptions;
use sluice_engine::{Error, Result};
use tokio::sync::mpsc;
use url::Url;

pub use super::blob_event::parse_blob_event;
use super::{Delivery, Notice};

/// Messages taken per request, the service's most.
const BATCH: u32 = 32;
/// How long a taken message stays invisible to other readers: time enough
/// to plan its objects. One not settled by then (its controller died) is
/// delivered again.
const VISIBILITY: Duration = Duration::from_secs(300);
/// The first wait after an empty answer, doubled after each until
/// [`MAX_IDLE_WAIT`].
const MIN_IDLE_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two looks at an empty queue.
pub const MAX_IDLE_WAIT: Duration = Duration::from_secs(2);
/// Notices taken and not yet settled, at most: past this, the feed waits
/// for the controller (as an AMQP prefetch does).
const MAX_PENDING: usize = 1000;
/// The longest wait before trying again after the service failed.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The queue service's API version the requests are written for.
const API_VERSION: &str = "2021-08-06";
/// Azurite's account key: public, the same on every machine.
const EMULATOR_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests prove who sends them.
#[derive(Clone)]
enum Credential {
    /// Shared Key: the account key, decoded.
    Key(Vec<u8>),
    /// A SAS token's query pairs.
    Sas(Vec<(String, String)>),
}

/// One queue of one storage account, and the HTTP client that reaches it.
#[derive(Clone)]
pub struct AzureQueue {
    client: reqwest::Client,
    account: String,
    /// `https://ACCOUNT.queue.core.windows.net/QUEUE`, or the emulator's
    /// `http://127.0.0.1:10001/ACCOUNT/QUEUE`.
    queue_url: Url,
    /// The same for `QUEUE-poison`.
    poison_url: Url,
    name: String,
    credential: Credential,
}

impl std::fmt::Debug for AzureQueue {
    /// Without the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureQueue").field("queue_url", &self.queue_url.as_str()).finish_non_exhaustive()
    }
}

impl AzureQueue {
    /// The queue `name` of `account`, with the Azure settings of `storage`
    /// over those of the `AZURE_*` variables.
    pub fn new(account: &str, name: &str, storage: &StorageOptions) -> Result<Self> {
        // `[storage]` wins over the environment, as for the blobs: the
        // credential of the first of the two that gives one.
        let environment: Vec<(AzureConfigKey, String)> = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .filter(|(key, _)| key.starts_with("AZURE_"))
            .filter_map(|(key, value)| Some((key.to_ascii_lowercase().parse().ok()?, value)))
            .collect();
        let file: Vec<(AzureConfigKey, String)> =
            storage.of::<AzureConfigKey>().map(|(key, value)| (key, value.to_string())).collect();
        let in_ = |settings: &[(AzureConfigKey, String)], wanted: AzureConfigKey| {
            settings.iter().rev().find(|(key, _)| *key == wanted).map(|(_, v)| v.clone())
        };
        let setting = |wanted: AzureConfigKey| in_(&file, wanted).or_else(|| in_(&environment, wanted));
        let emulator = setting(AzureConfigKey::UseEmulator).is_some_and(|v| matches!(v.as_str(), "true" | "1"));
        let config = |why: String| Error::Config(format!("notifications from azqueue://{account}/{name}: {why}"));
        let given = |settings: &[(AzureConfigKey, String)]| {
            (in_(settings, AzureConfigKey::AccessKey), in_(settings, AzureConfigKey::SasKey))
        };
        let credentials = match given(&file) {
            (None, None) => given(&environment),
            from_file => from_file,
        };
        let credential = match credentials {
            (Some(key), _) => {
                Credential::Key(BASE64.decode(key.trim()).map_err(|_| config("the account key is not Base64".into()))?)
            }
            (None, Some(sas)) => Credential::Sas(
                url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes()).into_owned().collect(),
            ),
            (None, None) if emulator => Credential::Key(BASE64.decode(EMULATOR_KEY).expect("the emulator's key")),
            (None, None) => {
                return Err(config(
                    "no credentials: set azure_storage_account_key or azure_storage_sas_key in [storage] (or \
                     AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_KEY), or AZURE_STORAGE_USE_EMULATOR=true for \
                     Azurite"
                        .into(),
                ));
            }
        };
        let base = match emulator {
            true => {
                let root = std::env::var("AZURITE_QUEUE_STORAGE_URL").unwrap_or("http://127.0.0.1:10001".into());
                format!("{}/{account}/", root.trim_end_matches('/'))
            }
            false => format!("https://{account}.queue.core.windows.net/"),
        };
        let base = Url::parse(&base).map_err(|e| config(format!("the queue service's address: {e}")))?;
        let join = |queue: &str| base.join(queue).map_err(|e| config(format!("the queue's address: {e}")));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| config(format!("an HTTP client: {e}")))?;
        Ok(AzureQueue {
            client,
            account: account.into(),
            queue_url: join(name)?,
            poison_url: join(&format!("{name}-poison"))?,
            name: name.into(),
            credential,
        })
    }

    /// Sends `method` to `url` (below the queue service) with `query`, a
    /// body, signed; the answer's status and body.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(reqwest::StatusCode, String)> {
        let (status, _, text) = self.send_with_headers(method, url, query, body).await?;
        Ok((status, text))
    }

    async fn send_with_headers(
        &self,
        method: reqwest::Method,
        url: &Url,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String)> {
        let mut url = url.clone();
        url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        if let Credential::Sas(pairs) = &self.credential {
            url.query_pairs_mut().extend_pairs(pairs.iter());
        }
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let length = body.as_ref().map_or(0, String::len);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Content-Length", length.to_string());
        match &self.credential {
            Credential::Key(key) => {
                let content_type = if body.is_some() { "application/xml" } else { "" };
                let signature = sign(key, &self.account, method.as_str(), &url, length, content_type, &date);
                request = request.header("Authorization", format!("SharedKey {}:{signature}", self.account));
                if body.is_some() {
                    request = request.header("Content-Type", content_type);
                }
            }
            Credential::Sas(_) => {
                if body.is_some() {
                    request = request.header("Content-Type", "application/xml");
                }
            }
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        // The URL may hold a SAS token: errors never show it.
        let shown = |e: reqwest::Error| Error::BrokerCall {
            what: format!("the Azure queue {}", self.name),
            cause: sluice_engine::Cause::new(e.without_url()),
            hint: None,
        };
        let response = request.send().await.map_err(shown)?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(shown)?;
        Ok((status, headers, text))
    }

    /// Takes up to [`BATCH`] messages, each invisible to others for
    /// [`VISIBILITY`].
    async fn receive(&self) -> Result<Vec<QueueMessage>> {
        let url = below(&self.queue_url, &["messages"]);
        let query = [("numofmessages", BATCH.to_string()), ("visibilitytimeout", VISIBILITY.as_secs().to_string())];
        let (status, body) = self.send(reqwest::Method::GET, &url, &query, None).await?;
        if !status.is_success() {
            return Err(self.refused("Get Messages", status, &body));
        }
        let list: QueueMessagesList = quick_xml::de::from_str(&body).map_err(|e| Error::BrokerCall {
            what: format!("the Azure queue {} answered what is not a message list", self.name),
            cause: sluice_engine::Cause::new(e),
            hint: None,
        })?;
        Ok(list.messages)
    }

    /// Deletes a message taken with `receipt`.
    async fn delete(&self, id: &str, receipt: &str) -> Result<()> {
        let url = below(&self.queue_url, &["messages", id]);
        let (status, body) = self.send(reqwest::Method::DELETE, &url, &[("popreceipt", receipt.into())], None).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(self.refused("Delete Message", status, &body)),
        }
    }

    /// Makes a message taken with `receipt` visible again at once.
    async fn release(&self, id: &str, receipt: &str, text: &str) -> Result<()> {
        let url = below(&self.queue_url, &["messages", id]);
        let query = [("popreceipt", receipt.to_string()), ("visibilitytimeout", "0".to_string())];
        let (status, body) = self.send(reqwest::Method::PUT, &url, &query, Some(message_body(text))).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(self.refused("Update Message", status, &body)),
        }
    }

    /// Puts `text` on `QUEUE-poison` (creating it if missing), then deletes
    /// the message from the queue.
    async fn poison(&self, message: &QueueMessage) -> Result<()> {
        let (status, body) = self.send(reqwest::Method::PUT, &self.poison_url, &[], None).await?;
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            return Err(self.refused("Create Queue (the poison queue)", status, &body));
        }
        let url = below(&self.poison_url, &["messages"]);
        let (status, body) = self.send(reqwest::Method::POST, &url, &[], Some(message_body(&message.text))).await?;
        if !status.is_success() {
            return Err(self.refused("Put Message (the poison queue)", status, &body));
        }
        self.delete(&message.id, &message.receipt).await
    }

    /// Creates the queue (nothing if it exists).
    pub async fn create(&self) -> Result<()> {
        let (status, body) = self.send(reqwest::Method::PUT, &self.queue_url, &[], None).await?;
        match status.is_success() || status == reqwest::StatusCode::CONFLICT {
            true => Ok(()),
            false => Err(self.refused("Create Queue", status, &body)),
        }
    }

    /// Puts a message with `text` on the queue, as Event Grid does.
    pub async fn put(&self, text: &str) -> Result<()> {
        let url = below(&self.queue_url, &["messages"]);
        let (status, body) = self.send(reqwest::Method::POST, &url, &[], Some(message_body(text))).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(self.refused("Put Message", status, &body)),
        }
    }

    /// How many messages the queue (or, with `poison`, `QUEUE-poison`)
    /// holds, as the service counts them; 0 for a queue that does not exist.
    pub async fn approximate_count(&self, poison: bool) -> Result<u64> {
        let queue = if poison { &self.poison_url } else { &self.queue_url };
        let mut url = queue.clone();
        url.query_pairs_mut().append_pair("comp", "metadata");
        let (status, headers, body) = self.send_with_headers(reqwest::Method::GET, &url, &[], None).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(0);
        }
        if !status.is_success() {
            return Err(self.refused("Get Queue Metadata", status, &body));
        }
        let count = headers.get("x-ms-approximate-messages-count").and_then(|v| v.to_str().ok());
        count.and_then(|v| v.parse().ok()).ok_or_else(|| self.refused("Get Queue Metadata", status, "no count"))
    }

    fn refused(&self, what: &str, status: reqwest::StatusCode, body: &str) -> Error {
        let code = body.split("<Code>").nth(1).and_then(|rest| rest.split("</Code>").next()).unwrap_or("");
        Error::Broker(format!("the Azure queue {} refused {what}: HTTP {status} {code}", self.name))
    }
}

/// The Shared Key signature of a request to the queue service (the string
/// to sign of API versions 2015-02-21 and later).
fn sign(key: &[u8], account: &str, method: &str, url: &Url, length: usize, content_type: &str, date: &str) -> String {
    let length = if length == 0 { String::new() } else { length.to_string() };
    let headers = format!("x-ms-date:{date}\nx-ms-version:{API_VERSION}\n");
    let mut resource = format!("/{account}{}", url.path());
    let mut pairs: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned())).collect();
    pairs.sort();
    for (key, value) in pairs {
        resource.push_str(&format!("\n{key}:{value}"));
    }
    let to_sign = format!("{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{headers}{resource}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// `url` with `segments` added to its path, each percent-encoded.
fn below(url: &Url, segments: &[&str]) -> Url {
    let mut url = url.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.extend(segments);
    }
    url
}

fn message_body(text: &str) -> String {
    format!("<QueueMessage><MessageText>{}</MessageText></QueueMessage>", quick_xml::escape::escape(text))
}

#[derive(Deserialize)]
struct QueueMessagesList {
    #[serde(rename = "QueueMessage", default)]
    messages: Vec<QueueMessage>,
}

#[derive(Deserialize, Clone)]
struct QueueMessage {
    #[serde(rename = "MessageId")]
    id: String,
    #[serde(rename = "PopReceipt")]
    receipt: String,
    #[serde(rename = "MessageText", default)]
    text: String,
}

/// A message taken from an Azure queue, to delete once its objects are
/// planned or to hand back.
pub(super) struct Receipt {
    queue: AzureQueue,
    message: QueueMessage,
}

#[async_trait::async_trait]
impl Delivery for Receipt {
    /// Deletes the message.
    async fn ack(self: Box<Self>) -> Result<(), String> {
        self.queue.delete(&self.message.id, &self.message.receipt).await.map_err(|e| e.to_string())
    }

    /// Makes the message visible again.
    async fn requeue(self: Box<Self>) -> Result<(), String> {
        self.queue.release(&self.message.id, &self.message.receipt, &self.message.text).await.map_err(|e| e.to_string())
    }
}

/// Reads the queue for ever, keeping each event's notice in `pending` and
/// signalling `wake`.
pub(super) async fn poll(queue: AzureQueue, pending: Arc<Mutex<Vec<Notice>>>, wake: mpsc::Sender<()>) {
    tracing::debug!(queue = queue.name, "reading blob events from an Azure Storage queue");
    let mut idle = MIN_IDLE_WAIT;
    let mut failures = 0u32;
    loop {
        let messages = match queue.receive().await {
            Ok(messages) => {
                failures = 0;
                messages
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(
                    queue = queue.name,
                    "blob events stopped, relying on listings until they come back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(500u64 << failures.min(6)).min(MAX_RETRY_WAIT)).await;
                let _ = wake.try_send(());
                continue;
            }
        };
        if messages.is_empty() {
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(MAX_IDLE_WAIT);
            continue;
        }
        if pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len() >= MAX_PENDING {
            // The controller has not taken what came: these go back at
            // once, and none is taken until it has.
            for message in messages {
                let _ = queue.release(&message.id, &message.receipt, &message.text).await;
            }
            let _ = wake.try_send(());
            tokio::time::sleep(MAX_IDLE_WAIT).await;
            continue;
        }
        idle = MIN_IDLE_WAIT;
        for message in messages {
            match parse_blob_event(&message.text) {
                Ok(objects) => {
                    let delivery: Box<dyn Delivery> = Box::new(Receipt { queue: queue.clone(), message });
                    pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Notice { objects, delivery });
                }
                Err(reason) => {
                    let shown: String = message.text.chars().take(200).collect();
                    tracing::warn!(
                        queue = queue.name,
                        body = %shown,
                        "a message on the notification queue is not a blob event, moved to {}-poison: {reason}",
                        queue.name
                    );
                    if let Err(error) = queue.poison(&message).await {
                        tracing::warn!(
                            queue = queue.name,
                            "cannot move it to the poison queue (it comes again): {error}"
                        );
                    }
                }
            }
        }
        let _ = wake.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_signed_with_the_canonical_resource_and_sorted_query() {
        // The signature a separate implementation of Shared Key (checked
        // against Azurite) gives for Azurite's account and key.
        let url = Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/events/messages?visibilitytimeout=300&numofmessages=32",
        )
        .expect("url");
        let key = BASE64.decode(EMULATOR_KEY).expect("key");
        let signature = sign(&key, "devstoreaccount1", "GET", &url, 0, "", "Wed, 02 Dec 2026 05:00:00 GMT");
        assert_eq!(signature, "6I09ddL22gRKMYwUAew5Ri7usBV66pptBWSh9VUgEn8=");
    }
}
