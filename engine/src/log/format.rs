//! The log's format version. Every record and snapshot names the layout
//! it is written in and the sluice that wrote it:
//!
//! ```text
//! {"format":1,"sluice":"0.1.0","kind":"planned","batch_id":...}
//! ```
//!
//! A reader refuses a format newer than its own, saying which sluice wrote
//! it, rather than guess at fields it does not know. A record without a
//! format is format 1: the layout of every log written before formats
//! were named.
//!
//! Format 2 is a snapshot of a log that has forgotten batches
//! (`[source] max_file_age`): a reader of format 1 would take the files of
//! those batches for new ones. Everything else is still written as
//! format 1, which every sluice reads the same way (a format-1 reader
//! ignores the fields records gained, and so forgets nothing).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The newest format this sluice reads.
pub const FORMAT: u32 = 3;

/// The format of records, and of snapshots of a log that forgot nothing.
pub(super) const FIRST_FORMAT: u32 = 1;

/// The format of a snapshot of a log that has forgotten batches.
pub(super) const FORGETTING_FORMAT: u32 = 2;

/// The format of a `sealed` record, of a segment, and of a snapshot of a
/// log that has sealed batches.
pub(super) const SEALING_FORMAT: u32 = 3;

/// This sluice's version, as written beside the format.
pub const WRITTEN_BY: &str = env!("CARGO_PKG_VERSION");

/// What a record or snapshot says of its own format; the rest of it is
/// read only once the format is known to be one this sluice reads.
#[derive(Debug, Deserialize)]
struct Stamp {
    #[serde(default = "first_format")]
    format: u32,
    #[serde(default)]
    sluice: Option<String>,
}

fn first_format() -> u32 {
    1
}

/// A record or snapshot as written: its stamp, then its fields.
#[derive(Serialize)]
pub(super) struct Stamped<'a, T> {
    format: u32,
    sluice: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` with this sluice's stamp, in format 1.
#[cfg(test)]
pub(super) fn stamped<T: Serialize>(body: &T) -> Stamped<'_, T> {
    stamped_as(FIRST_FORMAT, body)
}

/// `body` with this sluice's stamp, in `format`.
pub(super) fn stamped_as<T: Serialize>(format: u32, body: &T) -> Stamped<'_, T> {
    Stamped { format, sluice: WRITTEN_BY, body }
}

/// Reads the object at `path` (a record or a snapshot) as a `T`, once its
/// stamp says this sluice can.
pub(super) fn read<T: serde::de::DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T> {
    let corrupt = |e: serde_json::Error| Error::CorruptLog { path: path.to_string(), reason: e.to_string() };
    let stamp: Stamp = serde_json::from_slice(bytes).map_err(corrupt)?;
    if stamp.format > FORMAT {
        return Err(Error::NewerLog {
            path: path.to_string(),
            format: stamp.format,
            written_by: stamp.sluice,
            reads: FORMAT,
        });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Body {
        Note { text: String },
    }

    #[test]
    fn a_stamp_comes_first_and_reads_back() {
        let body = Body::Note { text: "hi".into() };
        let json = serde_json::to_string(&stamped(&body)).expect("encodes");
        assert_eq!(json, format!(r#"{{"format":1,"sluice":"{WRITTEN_BY}","kind":"note","text":"hi"}}"#));
        assert_eq!(read::<Body>("log/0.json", json.as_bytes()).expect("reads"), body);
    }

    #[test]
    fn what_has_no_stamp_is_format_one() {
        let read = read::<Body>("log/0.json", br#"{"kind":"note","text":"old"}"#).expect("reads");
        assert_eq!(read, Body::Note { text: "old".into() });
    }

    #[test]
    fn a_newer_format_is_refused_with_the_sluice_that_wrote_it() {
        let newer = br#"{"format":4,"sluice":"0.9.0","kind":"note","text":"new","more":[1]}"#;
        let error = read::<Body>("ck/log/00000000000000000007.json", newer).expect_err("newer");
        assert!(matches!(&error, Error::NewerLog { format: 4, written_by: Some(by), .. } if by == "0.9.0"));
        assert_eq!(error.domain(), crate::error::Domain::User);
        assert_eq!(
            error.to_string(),
            format!(
                "checkpoint log object ck/log/00000000000000000007.json is in log format 4, written by sluice 0.9.0; \
                 this sluice ({WRITTEN_BY}) reads log formats up to 3: run sluice 0.9.0 or newer on this pipeline"
            )
        );
        let unsigned = read::<Body>("p", br#"{"format":5,"kind":"note","text":""}"#).expect_err("newer");
        assert_eq!(
            unsigned.to_string(),
            format!(
                "checkpoint log object p is in log format 5, written by a newer sluice; this sluice ({WRITTEN_BY}) \
                 reads log formats up to 3: run a sluice that reads log format 5 on this pipeline"
            )
        );
    }

    #[test]
    fn an_unreadable_object_is_corrupt_not_newer() {
        let error = read::<Body>("p", b"{not json").expect_err("corrupt");
        assert!(matches!(error, Error::CorruptLog { .. }));
    }
}
