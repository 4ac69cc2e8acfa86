//! AMQP in and out, against a real RabbitMQ: every message lands in the
//! Parquet sink exactly once, whether `sluice run` is killed with -9 or
//! crashes at any step of the commit protocol; messages are acknowledged
//! only after their batch's commit, and redeliveries of committed ones are
//! recognised by their `message_id`.
//!
//! The broker is the one at 127.0.0.1:5672, guest/guest (or
//! `SLUICE_TEST_AMQP`); `scripts/test.sh` starts it if it is down, by
//! hand: `scripts/start-rabbitmq.sh`.

mod brokers;
mod common;

use std::process::Stdio;
use std::time::Duration;

use brokers::{Rabbit, Rng, assert_orders_once, crash_at, kill_9, kill_9_mid_stream, order, order_rows, status};
use common::{ORDERS, PipelineFile, Ran, Workspace, parquet_rows, printed, sluice, visible_files};

/// A pipeline from `queue` into Parquet, in micro-batches of `max_records`.
fn pipeline(rabbit: &Rabbit, queue: &str, max_records: usize) -> PipelineFile {
    PipelineFile::stream_orders("amqp-orders", "amqp", max_records)
        .text("source", "url", &rabbit.url)
        .text("source", "queue", queue)
}

fn publish_orders(rabbit: &Rabbit, queue: &str, ids: std::ops::Range<u64>) {
    rabbit.publish(queue, ids.map(|id| (Some(format!("order-{id}")), order(id))));
}

fn assert_exactly_once(ws: &Workspace, pipeline: &str, ids: std::ops::Range<u64>) {
    assert_orders_once(&ws.path("out"), pipeline, ids);
    assert_eq!(status(pipeline)["lag"], 0, "nothing ready in the queue");
}

#[test]
fn killed_with_minus_9_two_seconds_in_then_caught_up_every_message_lands_once() {
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("kill9");
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(&rabbit, &queue.name, 1000).toml());
    publish_orders(&rabbit, &queue.name, 0..12_000);

    let mut running = sluice().args(["run", &path]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("runs");
    // Killed two seconds in, or sooner: once its first batch is committed,
    // so that the kill comes mid-stream.
    kill_9_mid_stream(&mut running, &ws.path("out"));
    eprintln!("{} rows were committed when the run was killed", parquet_rows(&ws.path("out")).1.len());

    publish_orders(&rabbit, &queue.name, 12_000..20_000);
    ws.run_until_caught_up();
    assert_exactly_once(&ws, &path, 0..20_000);
    assert_eq!(rabbit.ready(&queue.name), 0, "every message acknowledged");
}

#[test]
fn a_crash_at_any_step_of_the_commit_loses_and_repeats_nothing() {
    let rabbit = Rabbit::new();
    for step in ["after_plan", "after_lease", "during_sink_write", "after_sink_write", "after_commit", "during_publish"]
    {
        let queue = rabbit.queue(step);
        let ws = Workspace::new();
        let path = ws.pipeline(&pipeline(&rabbit, &queue.name, 700).toml());
        publish_orders(&rabbit, &queue.name, 0..2_000);
        crash_at(&path, step);
        publish_orders(&rabbit, &queue.name, 2_000..2_500);
        let summary = ws.run_until_caught_up();
        if matches!(step, "after_commit" | "during_publish") {
            // Committed, never acknowledged: the broker delivers the batch
            // again, and the log knows its ids. (The batch holds 700, or
            // fewer when max_wait closed it first on a loaded machine.)
            assert!((1..=700).contains(&summary.duplicates), "{step}: {summary:?}");
        }
        assert_exactly_once(&ws, &path, 0..2_500);
    }
}

#[test]
fn runs_killed_at_random_moments_keep_every_message_once() {
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("random-kills");
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(&rabbit, &queue.name, 400).toml());
    let mut rng = Rng::new();
    let mut published = 0;
    for _ in 0..4 {
        publish_orders(&rabbit, &queue.name, published..published + 3_000);
        published += 3_000;
        let mut child =
            sluice().args(["run", &path]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("runs");
        std::thread::sleep(Duration::from_millis(200 + rng.below(1500)));
        kill_9(&mut child);
    }
    ws.run_until_caught_up();
    assert_exactly_once(&ws, &path, 0..published);
}

#[test]
fn malformed_messages_go_to_the_dead_letters_with_their_message_id() {
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("dead-letters");
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(&rabbit, &queue.name, 1000).toml());
    let mut messages: Vec<(Option<String>, String)> =
        (0..10).map(|id| (Some(format!("order-{id}")), order(id))).collect();
    messages.push((Some("bad-1".into()), "{not json".into()));
    messages.push((None, r#"{"id": 1.5}"#.into()));
    rabbit.publish(&queue.name, messages);
    let output = sluice().args(["run", &path, "--until-caught-up", "--json"]).output().expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    let ran = Ran::of(&output);
    assert_eq!(ran.dead_letters, 2, "{ran:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without a message_id"), "a message without an id is only at least once:\n{stderr}");
    assert_eq!(parquet_rows(&ws.path("out")).1, order_rows(0..10));

    let files = visible_files(&ws.path("out/_sluice/dead_letters"));
    let text = std::fs::read_to_string(&files[0]).expect("dead letters");
    let letters: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(letters.len(), 2, "{text}");
    assert_eq!(letters[0]["message_id"], "bad-1");
    assert_eq!(letters[0]["raw"], "{not json");
    assert_eq!(letters[0]["source"], queue.name.as_str());
    assert!(letters[1].get("message_id").is_none(), "{text}");
    assert!(letters[1]["error"].as_str().expect("error").contains("1.5"), "{text}");
}

#[test]
fn an_amqp_sink_publishes_each_row_after_the_commit_with_a_stable_id() {
    let rabbit = Rabbit::new();
    let input = rabbit.queue("sink-in");
    let output = rabbit.queue("sink-out");
    let ws = Workspace::new();
    let file = PipelineFile::new("amqp-to-amqp")
        .text("source", "type", "amqp")
        .text("source", "url", &rabbit.url)
        .text("source", "queue", &input.name)
        .schema(ORDERS)
        .text("transform", "sql", "SELECT id, upper(country) AS country FROM input WHERE amount > 10")
        .text("sink", "type", "amqp")
        .text("sink", "url", &rabbit.url)
        .text("sink", "routing_key", &output.name)
        .text("checkpoint", "url", "state");
    let path = ws.pipeline(&file.toml());
    publish_orders(&rabbit, &input.name, 0..300);
    // Committed and sent, then killed before noting it was sent or
    // acknowledging the input: the next run sends the rows again with the
    // same ids, and writes no input message twice.
    crash_at(&path, "during_publish");
    ws.run_until_caught_up();
    let published = rabbit.drain(&output.name);
    let expected: Vec<u64> = (0..300).filter(|id| id % 100 >= 10).collect();
    assert_eq!(published.len(), expected.len() * 2, "at least once");
    let mut by_id = std::collections::BTreeMap::new();
    for (id, body) in published {
        let id = id.expect("each message carries its id");
        let row: serde_json::Value = serde_json::from_str(&body).expect("a JSON row");
        assert_eq!(by_id.insert(id, row.clone()).unwrap_or_else(|| row.clone()), row, "a repeated id is the same row");
    }
    let mut ids: Vec<u64> = by_id.values().map(|row| row["id"].as_u64().expect("id")).collect();
    ids.sort();
    assert_eq!(ids, expected, "one id a row");
    assert_eq!(rabbit.ready(&input.name), 0);
}

#[test]
fn a_broker_that_does_not_answer_is_named_with_how_to_start_it() {
    let ws = Workspace::new();
    let path = ws.pipeline(
        &pipeline(&Rabbit::new(), "nowhere", 10).text("source", "url", "amqp://guest:guest@127.0.0.1:1/%2f").toml(),
    );
    let output = sluice().args(["run", &path, "--until-caught-up"]).output().expect("runs");
    assert!(!output.status.success(), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to amqp://guest:***@127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("scripts/start-rabbitmq.sh"), "{stderr}");
    assert!(!stderr.contains("guest:guest"), "no password in errors: {stderr}");
}

#[test]
fn a_batch_that_keeps_failing_gives_its_messages_back_to_the_queue() {
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("failing");
    let ws = Workspace::new();
    let good = pipeline(&rabbit, &queue.name, 1000).set("workers", "max_attempts", "1");
    let failing =
        good.clone().text("transform", "sql", "SELECT id, CAST(country AS INT) AS country, amount FROM input");
    let path = ws.pipeline(&failing.toml());
    publish_orders(&rabbit, &queue.name, 0..300);
    let output = common::run(&["run", &path, "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(1), "a failed batch fails the run:\n{}", printed(&output));
    assert_eq!(rabbit.ready(&queue.name), 300, "nothing acknowledged, nothing lost");
    assert!(parquet_rows(&ws.path("out")).1.is_empty());

    ws.pipeline(&good.toml());
    let retried = common::run(&["retry", &path, "--failed"]);
    assert!(retried.status.success(), "{}", printed(&retried));
    ws.run_until_caught_up();
    assert_exactly_once(&ws, &path, 0..300);
}

#[test]
fn a_message_published_twice_with_one_id_is_written_once() {
    let rabbit = Rabbit::new();
    let queue = rabbit.queue("twice");
    let ws = Workspace::new();
    let path = ws.pipeline(&pipeline(&rabbit, &queue.name, 1000).toml());
    // A publisher that retried: the same id twice, in one micro-batch and
    // across two runs.
    let messages: Vec<(Option<String>, String)> =
        [0, 1, 1, 2].into_iter().map(|id| (Some(format!("order-{id}")), order(id))).collect();
    rabbit.publish(&queue.name, messages);
    let first = ws.run_until_caught_up();
    assert_eq!(first.duplicates, 1, "{first:?}");
    rabbit.publish(&queue.name, [(Some("order-2".to_string()), order(2)), (Some("order-3".to_string()), order(3))]);
    ws.run_until_caught_up();
    assert_exactly_once(&ws, &path, 0..4);
}
