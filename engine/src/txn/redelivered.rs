//! A stream's recovery, as pure functions of the log: AMQP messages the
//! broker delivered again, the batches that held them, and batches a
//! crash left planned that nobody runs any more.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::batch::BatchId;
use crate::log::{BatchEntry, LogState};
use crate::model::Message;

/// A micro-batch without the messages a commit already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// The messages still to write.
    pub messages: Vec<Message>,
    /// Redelivered messages left out: a commit holds them already.
    pub duplicates: u64,
}

/// Leaves out redelivered messages whose id is in a committed batch, and
/// the second of two messages with one id.
pub fn drop_redeliveries(state: &LogState, messages: Vec<Message>) -> Fresh {
    let before = messages.len();
    let mut seen = HashSet::new();
    let messages: Vec<Message> = messages
        .into_iter()
        .filter(|message| match message.origin.message_id() {
            Some(id) => !state.is_committed_message(id) && seen.insert(id.to_string()),
            None => true,
        })
        .collect();
    Fresh { duplicates: (before - messages.len()) as u64, messages }
}

/// The pending batches that hold some of `messages`: the broker delivered
/// their messages again, so the run that read them is gone (or cut off
/// from the broker), and each is abandoned before these are planned.
pub fn batches_redelivered(state: &LogState, messages: &[Message]) -> BTreeSet<BatchId> {
    messages
        .iter()
        .filter_map(|message| message.origin.message_id())
        .filter_map(|id| state.unsettled_batch_of(id))
        .filter(|entry| entry.is_pending())
        .map(|entry| entry.planned.batch_id.clone())
        .collect()
}

/// Whether an AMQP batch a crash left planned is nobody's any more: no
/// live lease, and not planned so recently (within `grace`) that its
/// lease may not be written yet. Its messages were never acknowledged,
/// so the broker delivers them again, and it is abandoned.
pub fn is_orphaned(entry: &BatchEntry, now: DateTime<Utc>, grace: TimeDelta) -> bool {
    entry.is_pending() && entry.live_lease(now).is_none() && (entry.lease.is_some() || entry.planned.at + grace <= now)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::log::{Planned, Record};
    use crate::model::{Origin, StreamInputs};
    use crate::txn::testing::{Log, at, committed};

    fn message(id: &str) -> Message {
        Message {
            payload: Bytes::from_static(b"{}"),
            origin: Origin::Amqp { queue: "q".into(), message_id: Some(id.into()) },
        }
    }

    fn amqp_batch(log: &mut Log, batch: &str, ids: &[&str], planned_at: i64) {
        let inputs = StreamInputs::of(&ids.iter().map(|id| message(id)).collect::<Vec<_>>()).expect("messages");
        log.push(Record::Planned(Planned {
            batch_id: BatchId::from_string(batch.into()),
            pipeline: crate::batch::PipelineName::new("p").expect("valid"),
            version: 1,
            inputs: vec![],
            stream: Some(inputs),
            at: at(planned_at),
        }));
    }

    #[test]
    fn redeliveries_of_committed_messages_and_repeats_are_left_out() {
        let mut log = Log(LogState::default());
        amqp_batch(&mut log, "a", &["m1"], 0);
        log.push(Record::Leased(crate::log::Leased {
            batch_id: BatchId::from_string("a".into()),
            attempt: 1,
            owner: "w".into(),
            expires: at(60),
            at: at(0),
        }));
        log.push(committed(BatchId::from_string("a".into()), 1, "a-x"));
        let fresh = drop_redeliveries(&log.0, vec![message("m1"), message("m2"), message("m2")]);
        assert_eq!(fresh.messages, [message("m2")]);
        assert_eq!(fresh.duplicates, 2);
    }

    #[test]
    fn a_pending_batch_holding_redelivered_messages_is_named() {
        let mut log = Log(LogState::default());
        amqp_batch(&mut log, "a", &["m1", "m2"], 0);
        let held = batches_redelivered(&log.0, &[message("m2"), message("m3")]);
        assert_eq!(held.into_iter().collect::<Vec<_>>(), [BatchId::from_string("a".into())]);
        assert!(batches_redelivered(&log.0, &[message("m3")]).is_empty());
    }

    #[test]
    fn a_batch_planned_just_now_or_leased_live_is_not_orphaned() {
        let mut log = Log(LogState::default());
        amqp_batch(&mut log, "a", &["m1"], 0);
        let grace = TimeDelta::seconds(30);
        let entry = |log: &Log| log.0.batch(&BatchId::from_string("a".into())).cloned().expect("planned");
        assert!(!is_orphaned(&entry(&log), at(10), grace), "its lease may not be written yet");
        assert!(is_orphaned(&entry(&log), at(30), grace));
        log.push(Record::Leased(crate::log::Leased {
            batch_id: BatchId::from_string("a".into()),
            attempt: 1,
            owner: "w".into(),
            expires: at(50),
            at: at(20),
        }));
        assert!(!is_orphaned(&entry(&log), at(40), grace), "a live lease");
        assert!(is_orphaned(&entry(&log), at(50), grace), "its lease ran out");
    }
}
