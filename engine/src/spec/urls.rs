//! Broker and queue URLs a pipeline file names, checked without ever
//! showing them (they may hold a password).

/// Checks that `raw` is an AMQP URL; the message never shows the URL,
/// which may hold a password.
pub fn check_broker_url(raw: &str) -> Result<(), String> {
    // A raw `@` in a password ends the user info early: the URL parses, with
    // the rest of the password as its host and path, and is shown that way.
    if raw.split_once("://").is_some_and(|(_, rest)| rest.matches('@').count() > 1) {
        return Err("holds `@` more than once: percent-encode an `@` in the user name or password as %40".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    match url.scheme() {
        "amqp" | "amqps" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "amqp" | "amqps" => Err("names no host".into()),
        other => Err(format!("has the scheme \"{other}\"; only amqp:// and amqps:// brokers can take tasks")),
    }
}

/// `url` as messages and logs may show it: without its password.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.host_str().is_some_and(|host| !host.is_empty()) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        _ => "(an unreadable broker URL)".into(),
    }
}

/// Where `[trigger] notifications` are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationQueue {
    /// S3 event JSON on an AMQP queue: the broker's URL (which may hold a
    /// password) and the queue.
    Amqp {
        /// `amqp://...` or `amqps://...`, up to the virtual host.
        url: String,
        /// The queue's name.
        queue: String,
    },
    /// Event Grid's blob events on an Azure Storage queue of `account`,
    /// reached with the credentials of `[storage]` and the `AZURE_*`
    /// variables.
    AzureQueue {
        /// The storage account.
        account: String,
        /// The queue's name.
        queue: String,
    },
}

impl NotificationQueue {
    /// The longest queue name: Azure's limit of 63, less the `-poison`
    /// that names where messages that are not events go.
    pub const MAX_AZURE_QUEUE: usize = 63 - "-poison".len();

    /// Reads `amqp://HOST/VHOST/QUEUE` (or `amqps://`) or
    /// `azqueue://ACCOUNT/QUEUE`; the message never shows the URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(rest) = raw.strip_prefix("azqueue://") else {
            return split_queue_url(raw).map(|(url, queue)| NotificationQueue::Amqp { url, queue });
        };
        let (account, queue) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| "names no queue: write it as azqueue://ACCOUNT/QUEUE".to_string())?;
        let account_ok =
            (3..=24).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !account_ok {
            return Err(format!(
                "names the storage account \"{account}\": an account name is 3 to 24 lower-case letters and digits"
            ));
        }
        let queue_ok = (3..=Self::MAX_AZURE_QUEUE).contains(&queue.len())
            && queue.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !queue.starts_with('-')
            && !queue.ends_with('-')
            && !queue.contains("--");
        if !queue_ok {
            return Err(format!(
                "names the queue \"{queue}\": a queue name is 3 to {} lower-case letters, digits and single \
                 hyphens, starting and ending with a letter or digit (sluice adds -poison for messages that are \
                 not events)",
                Self::MAX_AZURE_QUEUE
            ));
        }
        Ok(NotificationQueue::AzureQueue { account: account.into(), queue: queue.into() })
    }
}

/// Splits `amqp://HOST/VHOST/QUEUE` (or `amqp://HOST/QUEUE`, on the default
/// virtual host) into the broker's URL and the queue's name; the message
/// never shows the URL, which may hold a password.
pub fn split_queue_url(raw: &str) -> Result<(String, String), String> {
    check_broker_url(raw)?;
    let mut url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    let mut segments: Vec<String> =
        url.path_segments().map(|parts| parts.map(str::to_string).collect()).unwrap_or_default();
    let queue = match segments.pop() {
        Some(queue) if !queue.is_empty() => queue,
        _ => return Err("names no queue: the URL's last path segment is the queue".into()),
    };
    let queue = percent_encoding::percent_decode_str(&queue).decode_utf8_lossy().into_owned();
    url.set_path(&segments.join("/"));
    Ok((url.to_string(), queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_urls_name_a_queue_after_the_virtual_host() {
        let split = |raw| split_queue_url(raw).expect("splits");
        assert_eq!(split("amqp://u:p@h:5672/%2f/events"), ("amqp://u:p@h:5672/%2f".into(), "events".into()));
        assert_eq!(split("amqp://h/events"), ("amqp://h".into(), "events".into()));
        assert_eq!(split("amqp://h/prod/s3.events"), ("amqp://h/prod".into(), "s3.events".into()));
        assert!(split_queue_url("amqp://h/").is_err());
        assert!(split_queue_url("http://h/q").is_err());
    }
}
