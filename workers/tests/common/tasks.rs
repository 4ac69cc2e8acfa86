//! Helpers for the tests of `[workers] dispatch` and `sluice worker`,
//! against the real RabbitMQ at 127.0.0.1:5672 (guest/guest) or at
//! `SLUICE_TEST_AMQP`. `scripts/test.sh` starts it if it is down; by hand:
//! `scripts/start-rabbitmq.sh`.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sluice_workers::tasks::{REASON_HEADER, TaskQueue, dead_queue};

use super::{printed, sluice};

/// The task key the tests' controllers and workers share.
pub(crate) const TASK_KEY: &str = "a-test-task-key-0123456789abcdef";

pub(crate) fn broker() -> String {
    std::env::var("SLUICE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A queue of this test's own, so that tests running at once and earlier
/// runs never share tasks; deleted when dropped.
pub(crate) struct TestQueue(pub(crate) String);

impl TestQueue {
    pub(crate) fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let name = format!("sluice.test.{test}.{}.{nanos}", std::process::id());
        // Fail early, and say how to start the broker.
        runtime().block_on(async {
            if let Err(error) = TaskQueue::connect(&broker(), &name).await {
                panic!("these tests need RabbitMQ at {}: {error}\nstart it with scripts/start-rabbitmq.sh", broker());
            }
        });
        TestQueue(name)
    }

    /// Messages ready in `queue`.
    pub(crate) fn ready(queue: &str) -> u32 {
        runtime().block_on(async {
            let connection = Connection::connect(&broker(), ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.expect("declared");
            declared.message_count()
        })
    }

    /// Publishes `body` to this queue as a task, with `headers` and
    /// `message_id`.
    pub(crate) fn publish(&self, body: &[u8], headers: &[(&str, &str)], message_id: &str) {
        runtime().block_on(async {
            let connection = Connection::connect(&broker(), ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            channel.confirm_select(Default::default()).await.expect("confirms");
            let mut table = FieldTable::default();
            for (name, value) in headers {
                table.insert((*name).into(), AMQPValue::LongString((*value).into()));
            }
            let properties =
                BasicProperties::default().with_message_id(message_id.into()).with_delivery_mode(2).with_headers(table);
            channel
                .basic_publish("".into(), self.0.as_str().into(), BasicPublishOptions::default(), body, properties)
                .await
                .expect("publish")
                .await
                .expect("confirm");
        });
    }

    /// Every message in the dead queue, taken out: its message id, its
    /// `sluice-refused` reason and its body.
    pub(crate) fn take_dead(&self) -> Vec<(String, String, Vec<u8>)> {
        runtime().block_on(async {
            let connection = Connection::connect(&broker(), ConnectionProperties::default()).await.expect("connect");
            let channel = connection.create_channel().await.expect("channel");
            let mut found = Vec::new();
            let dead = dead_queue(&self.0);
            let options = BasicGetOptions { no_ack: true };
            while let Some(message) = channel.basic_get(dead.as_str().into(), options).await.expect("get") {
                let properties = &message.delivery.properties;
                let id = properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
                let reason = properties
                    .headers()
                    .as_ref()
                    .and_then(|headers| match headers.inner().get(&ShortString::from(REASON_HEADER)) {
                        Some(AMQPValue::LongString(text)) => {
                            Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                found.push((id, reason, message.delivery.data.clone()));
            }
            found
        })
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        runtime().block_on(async {
            if let Ok(connection) = Connection::connect(&broker(), ConnectionProperties::default()).await
                && let Ok(channel) = connection.create_channel().await
            {
                for queue in [self.0.clone(), dead_queue(&self.0)] {
                    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                }
            }
        });
    }
}

/// Waits until `n` tasks are ready in `queue`, so that workers started
/// next do not idle out before the controller has sent them.
pub(crate) fn wait_for_tasks(queue: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TestQueue::ready(queue) < n {
        assert!(Instant::now() < deadline, "the controller did not send {n} tasks to {queue}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sluice worker` on `queue`, running the pipelines of the folder
/// `pipelines` with the tests' task key.
pub(crate) fn worker(queue: &str, idle: &str, pipelines: &Path) -> Command {
    worker_at(&broker(), queue, idle, pipelines)
}

/// [`worker`], of the broker at `url`.
pub(crate) fn worker_at(url: &str, queue: &str, idle: &str, pipelines: &Path) -> Command {
    let mut command = sluice();
    command.args(["worker", "--tasks", url, "--queue", queue, "--idle-timeout", idle]);
    command.arg("--pipelines").arg(pipelines);
    command.env("SLUICE_TASK_KEY", TASK_KEY);
    command.env("SLUICE_LOG", "info");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// `sluice run PIPELINE --until-caught-up`, signing its tasks with the
/// tests' task key.
pub(crate) fn controller(pipeline: &str) -> Command {
    let mut command = sluice();
    command.args(["run", pipeline, "--until-caught-up"]).env("SLUICE_TASK_KEY", TASK_KEY);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `limit`; its exit status and output.
pub(crate) fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}:\n{}", printed(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    (status, printed(&output))
}
