//! Azure Event Grid's `BlobCreated` events, as a queue's messages carry
//! them: which blobs were written.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::ObjectEvent;

/// One Event Grid event, in the Event Grid schema (`eventType`) or as a
/// CloudEvent (`type`).
#[derive(Deserialize)]
struct BlobEvent {
    #[serde(rename = "eventType", alias = "type")]
    event_type: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    data: BlobEventData,
}

#[derive(Deserialize, Default)]
struct BlobEventData {
    /// The operation: `PutBlob`, `PutBlockList`, `CopyBlob`, or on a Data
    /// Lake account `CreateFile` (empty, before the data) and
    /// `FlushWithClose` (the data written).
    #[serde(default)]
    api: String,
}

/// The blobs written that a message names: `Microsoft.Storage.BlobCreated`
/// events, one or a JSON array of them, the text plain or Base64. Other
/// events (deletions, the subscription's validation) name none; anything
/// that is not an event is an error.
pub fn parse_blob_event(text: &str) -> Result<Vec<ObjectEvent>, String> {
    let trimmed = text.trim();
    let decoded;
    let json = match trimmed.starts_with(['{', '[']) {
        true => trimmed,
        false => {
            let bytes = BASE64.decode(trimmed).map_err(|_| "neither JSON nor Base64".to_string())?;
            decoded = String::from_utf8(bytes).map_err(|_| "Base64 of what is not UTF-8".to_string())?;
            decoded.as_str()
        }
    };
    let events: Vec<BlobEvent> = match json.trim_start().starts_with('[') {
        true => serde_json::from_str(json),
        false => serde_json::from_str(json).map(|event| vec![event]),
    }
    .map_err(|e| format!("not Event Grid event JSON: {e}"))?;
    let mut objects = Vec::new();
    for event in events {
        // A Data Lake file is announced when created, empty, and again
        // when its data is flushed: only the second is new data.
        if event.event_type != "Microsoft.Storage.BlobCreated" || event.data.api == "CreateFile" {
            continue;
        }
        // /blobServices/default/containers/CONTAINER/blobs/NAME
        let rest = event
            .subject
            .strip_prefix("/blobServices/default/containers/")
            .ok_or_else(|| format!("a BlobCreated event whose subject is not a blob's: {:?}", event.subject))?;
        let (container, name) = rest
            .split_once("/blobs/")
            .filter(|(container, name)| !container.is_empty() && !name.is_empty())
            .ok_or_else(|| format!("a BlobCreated event whose subject names no blob: {:?}", event.subject))?;
        objects.push(ObjectEvent { bucket: container.into(), key: name.into() });
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = r#"{"topic":"/subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/drops",
        "subject":"/blobServices/default/containers/in/blobs/day 1/a.csv","eventType":"Microsoft.Storage.BlobCreated",
        "id":"1","data":{"api":"PutBlob","url":"https://drops.blob.core.windows.net/in/day%201/a.csv"},
        "dataVersion":"","metadataVersion":"1","eventTime":"2026-12-02T05:00:00Z"}"#;

    #[test]
    fn created_blobs_are_read_from_event_grid_events_plain_or_base64() {
        let expected = vec![ObjectEvent { bucket: "in".into(), key: "day 1/a.csv".into() }];
        assert_eq!(parse_blob_event(CREATED), Ok(expected.clone()));
        assert_eq!(parse_blob_event(&BASE64.encode(CREATED)), Ok(expected.clone()));
        let cloud = r#"{"specversion":"1.0","type":"Microsoft.Storage.BlobCreated","source":"/x",
            "subject":"/blobServices/default/containers/in/blobs/day 1/a.csv","id":"2","data":{}}"#;
        assert_eq!(parse_blob_event(cloud), Ok(expected));
        let deleted = CREATED.replace("BlobCreated", "BlobDeleted");
        assert_eq!(parse_blob_event(&format!("[{deleted}]")), Ok(Vec::new()));
        let created_empty = CREATED.replace(r#""api":"PutBlob""#, r#""api":"CreateFile""#);
        assert_eq!(parse_blob_event(&created_empty), Ok(Vec::new()), "a Data Lake file not yet flushed");
    }

    #[test]
    fn what_is_not_an_event_is_an_error() {
        assert!(parse_blob_event("hello").is_err());
        assert!(parse_blob_event(r#"{"Records":[]}"#).is_err());
        let elsewhere = CREATED.replace("/blobServices/default/containers/in/blobs/", "/elsewhere/");
        assert!(parse_blob_event(&elsewhere).is_err());
    }
}
