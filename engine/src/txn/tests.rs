//! The steps on a log in memory, two writers sharing it as two workers
//! would.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use super::*;
use crate::batch::{Batch, BatchId, InputObject, PipelineName};
use crate::log::{CheckpointLog, RanBy, Seq};
use crate::model::PartitionStart;
use crate::sink::Staged;

const TERMS: Terms = Terms { lease_for: TimeDelta::seconds(10), max_attempts: 2 };

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
}

fn name() -> PipelineName {
    PipelineName::new("orders").expect("valid")
}

async fn open(store: &Arc<dyn ObjectStore>) -> CheckpointLog {
    CheckpointLog::open_in(store.clone(), Path::from("log"), &name(), 1000).await.expect("opens")
}

fn batch(file: &str) -> Batch {
    let inputs = vec![InputObject { path: file.into(), size: 1, last_modified: at(0), ..InputObject::default() }];
    Batch::of_objects(BatchId::derive(&name(), 1, &inputs), inputs)
}

fn produced(token: &str) -> Produced {
    Produced {
        staged: Staged { token: token.into(), outputs: vec![] },
        rows_in: 3,
        dead_letters: None,
        rows_dead_lettered: 0,
        tables: Default::default(),
    }
}

fn ran_by() -> RanBy {
    RanBy { worker: "w".into(), host: "h".into(), task_key: None }
}

/// Two workers on one log, with one batch planned.
async fn planned() -> (CheckpointLog, CheckpointLog, Batch) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (mut a, mut b) = (open(&store).await, open(&store).await);
    let one = batch("1.csv");
    let planning = plan_files(&mut a, &name(), 1, vec![one.clone()], None, at(0)).await.expect("plans");
    assert_eq!(planning, Planning { batches: 1, planned_by_others: 0 });
    // A step decides on the log as its caller last read it.
    b.refresh().await.expect("reads");
    (a, b, one)
}

#[tokio::test]
async fn a_batch_is_leased_renewed_and_committed_once() {
    let (mut a, mut b, one) = planned().await;
    let leasing = lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    assert_eq!(leasing, Leasing::Leased { attempt: 1, taken_from: None });
    assert_eq!(lease(&mut b, &one.id, "b", TERMS, at(2)).await.expect("reads"), Leasing::Busy { until: at(11) });
    assert_eq!(renew(&mut a, &one.id, "a", 1, TERMS, at(5)).await.expect("renews"), Renewed::Held);
    let token = format!("{}-a", one.id);
    let committing = commit(&mut a, &one, 1, &produced(&token), &ran_by(), at(6)).await.expect("commits");
    assert_eq!(committing, Committing::Committed);
    // A commit the store wrote but reported lost, retried: it is ours.
    let again = commit(&mut a, &one, 1, &produced(&token), &ran_by(), at(6)).await.expect("reads");
    assert_eq!(again, Committing::Committed);
    let other = commit(&mut b, &one, 1, &produced(&format!("{}-b", one.id)), &ran_by(), at(7)).await;
    assert_eq!(other.expect("reads"), Committing::AlreadyCommitted);
    assert_eq!(lease(&mut b, &one.id, "b", TERMS, at(8)).await.expect("reads"), Leasing::Settled(Settled::Committed));
    assert_eq!(renew(&mut a, &one.id, "a", 1, TERMS, at(8)).await.expect("reads"), Renewed::Settled);
}

#[tokio::test]
async fn a_lease_that_ran_out_is_taken_over_and_the_old_attempt_fenced() {
    let (mut a, mut b, one) = planned().await;
    lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    b.refresh().await.expect("reads");
    let taken = lease(&mut b, &one.id, "b", TERMS, at(11)).await.expect("leases");
    assert_eq!(taken, Leasing::Leased { attempt: 2, taken_from: Some("a".into()) });
    assert_eq!(renew(&mut a, &one.id, "a", 1, TERMS, at(12)).await.expect("reads"), Renewed::Lost);
    let late = commit(&mut a, &one, 1, &produced(&format!("{}-a", one.id)), &ran_by(), at(12)).await;
    assert_eq!(late.expect("reads"), Committing::Fenced);
    let failing = fail(&mut a, &one.id, 1, "late", false, TERMS, at(12)).await.expect("reads");
    assert_eq!(failing, Failing::Fenced);
}

#[tokio::test]
async fn the_last_failure_fails_the_batch_until_retry() {
    let (mut a, _, one) = planned().await;
    lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    assert_eq!(
        fail(&mut a, &one.id, 1, "e1", false, TERMS, at(2)).await.expect("fails"),
        Failing::Recorded { gave_up: false }
    );
    assert_eq!(retry(&mut a, &one.id, at(2)).await.expect("reads"), Retrying::NotFailed);
    let second = lease(&mut a, &one.id, "a", TERMS, at(3)).await.expect("leases");
    assert_eq!(second, Leasing::Leased { attempt: 2, taken_from: None });
    assert_eq!(
        fail(&mut a, &one.id, 2, "e2", false, TERMS, at(4)).await.expect("fails"),
        Failing::Recorded { gave_up: true }
    );
    assert_eq!(lease(&mut a, &one.id, "a", TERMS, at(5)).await.expect("reads"), Leasing::Settled(Settled::Closed));
    assert_eq!(retry(&mut a, &one.id, at(6)).await.expect("retries"), Retrying::Retried);
    let fresh = lease(&mut a, &one.id, "a", TERMS, at(7)).await.expect("leases");
    assert_eq!(fresh, Leasing::Leased { attempt: 3, taken_from: None });
    let unknown = BatchId::from_string("nope".into());
    assert_eq!(retry(&mut a, &unknown, at(8)).await.expect("reads"), Retrying::Unknown);
}

#[tokio::test]
async fn a_holder_dead_in_the_last_attempt_fails_the_batch() {
    let (mut a, mut b, one) = planned().await;
    lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    b.refresh().await.expect("reads");
    lease(&mut b, &one.id, "b", TERMS, at(11)).await.expect("takes over");
    a.refresh().await.expect("reads");
    let Leasing::GaveUp { error } = lease(&mut a, &one.id, "c", TERMS, at(30)).await.expect("reads") else {
        panic!("not given up")
    };
    assert!(error.starts_with("attempt 2 ended without recording why"), "{error}");
    assert_eq!(lease(&mut b, &one.id, "b", TERMS, at(31)).await.expect("reads"), Leasing::Settled(Settled::Closed));
}

#[tokio::test]
async fn an_abandoned_batch_settles_with_its_reason() {
    let (mut a, mut b, one) = planned().await;
    lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    assert_eq!(abandon(&mut a, &one.id, "moved", at(2)).await.expect("abandons"), Abandoning::Abandoned);
    assert_eq!(abandon(&mut b, &one.id, "again", at(3)).await.expect("reads"), Abandoning::Abandoned);
    let late = commit(&mut a, &one, 1, &produced(&format!("{}-a", one.id)), &ran_by(), at(3)).await;
    assert_eq!(late.expect("reads"), Committing::Abandoned);
    let settled = lease(&mut b, &one.id, "b", TERMS, at(4)).await.expect("reads");
    assert_eq!(settled, Leasing::Settled(Settled::Abandoned { reason: "moved".into() }));
    let unknown = BatchId::from_string("nope".into());
    assert!(abandon(&mut a, &unknown, "?", at(5)).await.is_err(), "a batch the log does not know");
}

#[tokio::test]
async fn a_cut_is_planned_without_what_another_run_planned_first() {
    let (mut a, mut b, one) = planned().await;
    let planning = plan_files(&mut b, &name(), 1, vec![one.clone(), batch("2.csv")], None, at(1)).await.expect("plans");
    assert_eq!(planning, Planning { batches: 1, planned_by_others: 1 });
    assert!(plan_files(&mut a, &name(), 1, vec![one], None, at(2)).await.is_ok(), "nothing left to plan is no error");
    a.refresh().await.expect("reads");
    assert_eq!(a.state().pending().len(), 2);
}

#[tokio::test]
async fn vacuum_fences_a_lease_that_ran_out_and_keeps_a_live_one() {
    let (mut a, mut b, one) = planned().await;
    lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("leases");
    let token = format!("{}-a", one.id);
    b.refresh().await.expect("reads");
    assert!(!fence(&mut b, &token, "vacuum", at(5)).await.expect("reads"), "a live lease");
    assert!(fence(&mut b, &token, "vacuum", at(11)).await.expect("fences"));
    let late = commit(&mut a, &one, 1, &produced(&token), &ran_by(), at(12)).await;
    assert_eq!(late.expect("reads"), Committing::Fenced);
    // The fence took an attempt: of two allowed, none is left.
    let three = Terms { max_attempts: 3, ..TERMS };
    let next = lease(&mut a, &one.id, "a", three, at(12)).await.expect("leases");
    assert_eq!(next, Leasing::Leased { attempt: 3, taken_from: Some("vacuum".into()) });
    assert!(!fence(&mut b, "other-x", "vacuum", at(13)).await.expect("reads"), "not of this log");
}

#[tokio::test]
async fn a_stream_batch_is_planned_once_and_a_start_recorded() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (mut a, mut b) = (open(&store).await, open(&store).await);
    let range = crate::model::OffsetRange { topic: "t".into(), partition: 0, start: 0, end: 5 };
    let inputs = crate::model::StreamInputs::Kafka { ranges: vec![range.clone()] };
    let one = Batch { id: BatchId::derive_stream(&name(), 1, &inputs), inputs: vec![], stream: Some(inputs) };
    start(&mut a, vec![PartitionStart { topic: "t".into(), partition: 0, offset: 0 }], at(0)).await.expect("starts");
    assert!(plan_stream(&mut a, &name(), 1, &one, at(1)).await.expect("plans"));
    assert!(!plan_stream(&mut b, &name(), 1, &one, at(2)).await.expect("reads"), "planned by another first");
    lease(&mut a, &one.id, "a", TERMS, at(3)).await.expect("leases");
    commit(&mut a, &one, 1, &produced(&format!("{}-a", one.id)), &ran_by(), at(4)).await.expect("commits");
    let committed = a.state().batch(&one.id).and_then(|entry| entry.committed.clone()).expect("committed");
    assert_eq!(committed.source_positions, [range], "the offsets move with the output");
}

#[tokio::test]
async fn batches_another_run_planned_first_are_left_to_it_and_the_rest_planned_in_one_record() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (mut ours, mut theirs) = (open(&store).await, open(&store).await);
    let limits = crate::planner::BatchLimits { max_files: 1, max_bytes: u64::MAX };
    let input = |path: &str| InputObject { path: path.into(), size: 1, ..InputObject::default() };
    let found = vec![input("1.csv"), input("2.csv"), input("3.csv")];
    let batches = crate::planner::plan_new(found.clone(), ours.state(), limits, &name(), 1);

    // The other run planned 2.csv after this one listed the inbox.
    plan_files(&mut theirs, &name(), 1, vec![batches[1].clone()], None, at(0)).await.expect("planned");
    let planning = plan_files(&mut ours, &name(), 1, batches.clone(), None, at(1)).await.expect("planned");
    assert_eq!(planning, Planning { batches: 2, planned_by_others: 1 });

    let pending: Vec<Batch> = ours.state().pending();
    assert_eq!(
        pending.iter().map(|batch| batch.id.clone()).collect::<Vec<_>>(),
        [batches[1].id.clone(), batches[0].id.clone(), batches[2].id.clone()]
    );
    let seq = |batch: &Batch| ours.state().batch(&batch.id).expect("planned").planned_seq;
    assert_eq!((seq(&batches[1]), seq(&batches[0]), seq(&batches[2])), (Seq(0), Seq(1), Seq(1)));
    assert!(crate::planner::plan_new(found, ours.state(), limits, &name(), 1).is_empty(), "nothing planned twice");
}

#[tokio::test]
async fn a_commit_of_a_batch_the_log_never_planned_is_refused_outright() {
    let (mut a, _, _) = planned().await;
    let stray = batch("never-planned.csv");
    let committing = commit(&mut a, &stray, 1, &produced("t"), &ran_by(), at(1)).await.expect("reads");
    assert!(matches!(&committing, Committing::Refused(why) if why.contains("NotPlanned")), "{committing:?}");
}

#[tokio::test]
async fn an_attempt_whose_batch_another_committed_and_sealed_finds_it_committed() {
    let (mut a, mut b, one) = planned().await;
    assert!(matches!(lease(&mut a, &one.id, "a", TERMS, at(1)).await.expect("reads"), Leasing::Leased { .. }));
    // a stalls; b takes the batch over once the lease ran out, commits it
    // and seals it.
    b.refresh().await.expect("reads");
    assert!(matches!(lease(&mut b, &one.id, "b", TERMS, at(20)).await.expect("reads"), Leasing::Leased { .. }));
    let committed = commit(&mut b, &one, 2, &produced("b-t"), &ran_by(), at(21)).await.expect("reads");
    assert_eq!(committed, Committing::Committed);
    assert_eq!(seal(&mut b, vec![one.id.clone()], at(22)).await.expect("seals"), 1);
    let late = commit(&mut a, &one, 1, &produced("a-t"), &ran_by(), at(23)).await.expect("reads");
    assert_eq!(late, Committing::AlreadyCommitted, "its output is not the committed one");
}
