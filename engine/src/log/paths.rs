//! Every object path of the checkpoint log comes from [`LogPaths`].

use object_store::path::Path;

use super::Seq;

/// The object paths of one pipeline's log, below its checkpoint location:
///
/// ```text
/// <checkpoint>/log/00000000000000000000.json   record 0
/// <checkpoint>/log/00000000000000000001.json   record 1
/// <checkpoint>/snapshots/00000000000000001000.json   the state after records 0..999
/// <checkpoint>/segments/<hash>.json                  inputs of sealed batches
/// ```
#[derive(Debug, Clone)]
pub struct LogPaths {
    root: Path,
}

impl LogPaths {
    /// The log below `root`.
    pub fn new(root: Path) -> Self {
        LogPaths { root }
    }

    /// The folder of the numbered records.
    pub fn records(&self) -> Path {
        self.root.clone().join("log")
    }

    /// The record numbered `seq`.
    pub fn record(&self, seq: Seq) -> Path {
        self.records().join(format!("{:020}.json", seq.0))
    }

    /// The folder of snapshots.
    pub fn snapshots(&self) -> Path {
        self.root.clone().join("snapshots")
    }

    /// The snapshot of the state after the records before `next`.
    pub fn snapshot(&self, next: Seq) -> Path {
        self.snapshots().join(format!("{:020}.json", next.0))
    }

    /// The folder of segments.
    pub fn segments(&self) -> Path {
        self.root.clone().join("segments")
    }

    /// The segment called `name`.
    pub fn segment(&self, name: &str) -> Path {
        self.segments().join(name)
    }

    /// The number of a record's or a snapshot's path, if it is one.
    pub fn parse_record(&self, path: &Path) -> Option<Seq> {
        let name = path.filename()?;
        let digits = name.strip_suffix(".json")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_round_trip() {
        let paths = LogPaths::new(Path::from("out/_sluice"));
        let path = paths.record(Seq(42));
        assert_eq!(path.as_ref(), "out/_sluice/log/00000000000000000042.json");
        assert_eq!(paths.parse_record(&path), Some(Seq(42)));
        assert_eq!(paths.parse_record(&Path::from("out/_sluice/log/tmp.json")), None);
    }
}
