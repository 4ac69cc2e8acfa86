//! A log state built record by record, for the decisions' tests.

use chrono::{DateTime, TimeDelta, Utc};

use crate::batch::{BatchId, InputObject, PipelineName};
use crate::log::{Committed, Failed, Leased, LogState, Planned, Record};
use crate::sink::Staged;

pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
}

pub(crate) fn id() -> BatchId {
    BatchId::from_string("b1".into())
}

/// The commit of `batch_id` by attempt `attempt`, staged as `token`.
pub(crate) fn committed(batch_id: BatchId, attempt: u32, token: &str) -> Record {
    Record::Committed(Committed {
        batch_id,
        attempt,
        staged: Staged { token: token.into(), outputs: vec![] },
        rows_in: 1,
        dead_letters: None,
        rows_dead_lettered: 0,
        source_positions: vec![],
        ran_by: None,
        tables: Default::default(),
        at: at(1),
    })
}

pub(crate) struct Log(pub(crate) LogState);

impl Log {
    pub(crate) fn planned() -> Self {
        let mut log = Log(LogState::default());
        log.push(Record::Planned(Planned {
            batch_id: id(),
            pipeline: PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![InputObject { path: "1.csv".into(), size: 1, last_modified: at(0), ..InputObject::default() }],
            stream: None,
            at: at(0),
        }));
        log
    }

    pub(crate) fn push(&mut self, record: Record) -> &mut Self {
        let seq = self.0.next_seq();
        self.0.apply(seq, record);
        self
    }

    pub(crate) fn lease(&mut self, attempt: u32, owner: &str, from: i64, until: i64) -> &mut Self {
        self.push(Record::Leased(Leased {
            batch_id: id(),
            attempt,
            owner: owner.into(),
            expires: at(until),
            at: at(from),
        }))
    }

    pub(crate) fn commit(&mut self, attempt: u32, token: &str) -> &mut Self {
        self.push(committed(id(), attempt, token))
    }

    pub(crate) fn fail(&mut self, attempt: u32, gave_up: bool) -> &mut Self {
        self.push(Record::Failed(Failed { batch_id: id(), attempt, error: "e".into(), gave_up, at: at(1) }))
    }
}
