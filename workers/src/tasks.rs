//! Batches as tasks on an AMQP queue: what the controller publishes with
//! `[workers] dispatch`, and what `sluice worker` consumes.
//!
//! A task is one durable, persistent message per batch, its `message_id`
//! the batch id, its body a [`Task`]: the pipeline's name, the SHA-256 of
//! its file as the controller loaded it, and the batch. It carries no
//! pipeline text, no location and no setting: a worker runs only the
//! pipelines an operator gave it (`--pipelines`), and only a batch its
//! own copy's log has planned with the same inputs. The body is signed
//! with HMAC-SHA256 under the task key (see [`crate::task_keys`]).
//! Tasks a worker refuses go to `<queue>.dead`, the reason in the
//! [`REASON_HEADER`] header, where they stay for a person to look at.

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde::{Deserialize, Serialize};
use sluice_connectors::amqp;
use sluice_engine::batch::{Batch, PipelineName};
use sluice_engine::spec::{PipelineSpec, text_sha256};
use sluice_engine::{Cause, Error, Result};

use crate::task_keys::{KEY_ID_HEADER, SIGNATURE_HEADER, TaskKey};

/// The header of a refused task in the dead queue that says why.
pub const REASON_HEADER: &str = "sluice-refused";
/// The W3C trace context headers a task may carry (traces.rs).
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// What a worker needs to run one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The format of this message: [`Task::FORMAT`].
    pub format: String,
    /// `[pipeline] name`.
    pub pipeline: String,
    /// The hex SHA-256 of the pipeline file's text as the controller
    /// loaded it.
    pub sha256: String,
    /// The batch, as planned in the log.
    pub batch: Batch,
}

impl Task {
    /// The task format this build reads and writes.
    pub const FORMAT: &'static str = "sluice.task.v2";
    /// The format of earlier versions, which carried the pipeline's text.
    pub const FORMAT_WITH_TEXT: &'static str = "sluice.task.v1";

    /// The task of running `batch` of `spec`.
    pub fn new(spec: &PipelineSpec, batch: Batch) -> Self {
        Task {
            format: Self::FORMAT.to_string(),
            pipeline: spec.name.to_string(),
            sha256: text_sha256(spec.file.text()),
            batch,
        }
    }

    /// Reads a message's body. The reason it gives for a body that is
    /// not a task never quotes the body.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let format = serde_json::from_slice::<Format>(body)
            .map_err(|e| format!("not a sluice task: {}", without_quotes(&e.to_string())))?
            .format;
        if format == Self::FORMAT_WITH_TEXT {
            return Err(format!(
                "the task carries its pipeline's text (format {format}), which no worker runs any more: a worker \
                 runs only the pipelines of its --pipelines folder; upgrade the controller that sent it"
            ));
        }
        if format != Self::FORMAT {
            let shown: String = format.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
            return Err(format!("task format {shown:?}; this sluice reads {:?}", Self::FORMAT));
        }
        let task: Task = serde_json::from_slice(body)
            .map_err(|e| format!("not a sluice task: {}", without_quotes(&e.to_string())))?;
        // Checked as the pipeline file's name is, without quoting it back.
        if task.pipeline.len() > 64 || PipelineName::new(&task.pipeline).is_err() {
            return Err("the task names no valid pipeline ([a-z0-9_-]+)".into());
        }
        if task.sha256.len() != 64 || !task.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the task's sha256 is not a hex SHA-256".into());
        }
        let id = task.batch.id.to_string();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("the task's batch id is not a batch id".into());
        }
        Ok(task)
    }
}

/// A parser's message about a body, without the text it quotes from it
/// (a forged body may hold anything).
fn without_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '`' | '"' => {
                quoted = !quoted;
                if quoted {
                    out.push_str("`…`");
                }
            }
            c if !quoted => out.push(c),
            _ => {}
        }
    }
    out
}

/// A connection to the broker, with the task queue declared.
pub struct TaskQueue {
    connection: Connection,
    channel: Channel,
    queue: String,
    url: String,
}

impl std::fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueue").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl TaskQueue {
    /// Connects to `url` and declares `queue` (durable, rejected tasks
    /// going to `<queue>.dead`) if it is missing.
    pub async fn connect(url: &str, queue: &str) -> Result<Self> {
        let (connection, channel) = amqp::connect(url).await?;
        let broker = |what: &str, e| amqp::broker_error(url, what, e);
        let dead = dead_queue(queue);
        channel
            .queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .map_err(|e| broker(&format!("cannot declare the queue {dead}"), e))?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead.as_str().into()));
        channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments).await.map_err(|e| {
            broker(
                &format!(
                    "cannot declare the task queue {queue} (if it exists with other settings, \
                     delete it or choose another [workers] task_queue)"
                ),
                e,
            )
        })?;
        // Publisher confirms: a task counts as sent once the broker has it.
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| broker("confirm_select", e))?;
        Ok(TaskQueue { connection, channel, queue: queue.to_string(), url: url.to_string() })
    }

    fn broker(&self, what: &str, error: lapin::Error) -> Error {
        amqp::broker_error(&self.url, what, error)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue
    }

    /// Publishes `task`, signed with `key` when there is one, with the
    /// current span's trace context, and waits
    /// until the broker has it on disk.
    pub async fn publish(&self, task: &Task, key: Option<&TaskKey>) -> Result<()> {
        let body = serde_json::to_vec(task)
            .map_err(|e| Error::Encode { what: "cannot encode the task".into(), cause: Cause::new(e) })?;
        let mut headers = FieldTable::default();
        if let Some(key) = key {
            headers.insert(SIGNATURE_HEADER.into(), AMQPValue::LongString(key.sign(&body).into()));
            headers.insert(KEY_ID_HEADER.into(), AMQPValue::LongString(key.id().into()));
        }
        // The trace the worker's batch joins: not signed, and used for
        // nothing but linking spans.
        for (name, value) in crate::traces::current_context() {
            if TRACE_HEADERS.contains(&name.as_str()) {
                headers.insert(name.as_str().into(), AMQPValue::LongString(value.as_str().into()));
            }
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(task.batch.id.to_string().as_str().into())
            .with_content_type("application/json".into())
            .with_type(Task::FORMAT.into())
            .with_headers(headers);
        self.send(&self.queue, &body, properties).await
    }

    async fn send(&self, queue: &str, body: &[u8], properties: BasicProperties) -> Result<()> {
        let confirm = self
            .channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties)
            .await
            .map_err(|e| self.broker("cannot publish a task", e))?
            .await
            .map_err(|e| self.broker("the broker did not confirm a task", e))?;
        if confirm.is_ack() { Ok(()) } else { Err(Error::Broker(format!("the broker refused a message to {queue}"))) }
    }

    /// Moves a refused task to the dead queue with `reason` in its
    /// [`REASON_HEADER`] header, then acknowledges it: it is never handed
    /// out again. If the dead queue cannot take it, the task is rejected
    /// and the broker dead-letters it without the header.
    pub async fn refuse(&self, delivery: &Delivery, reason: &str) {
        let mut properties = delivery.properties.clone();
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        properties = properties.with_headers(headers);
        match self.send(&dead_queue(&self.queue), &delivery.data, properties).await {
            Ok(()) => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(error) => {
                tracing::warn!("cannot move the task to {}, rejecting it: {error}", dead_queue(&self.queue));
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            }
        }
    }

    /// Starts consuming, at most `prefetch` unacknowledged tasks at once.
    pub async fn consume(&self, prefetch: u16, tag: &str) -> Result<Consumer> {
        self.channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| self.broker("basic_qos", e))?;
        self.channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.broker(&format!("cannot consume from {}", self.queue), e))
    }

    /// Stops the consumer `tag`: no task is delivered to it any more.
    pub async fn cancel(&self, tag: &str) -> Result<()> {
        self.channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await
            .map_err(|e| self.broker("basic_cancel", e))
    }

    /// Closes the connection; unacknowledged tasks go back to the queue.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// The text of header `name` of `delivery`, if it is a string.
pub fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a str> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str()),
        _ => None,
    }
}

/// The trace context a task carries, for its batch's span.
pub fn trace_context(delivery: &Delivery) -> std::collections::HashMap<String, String> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| Some((name.to_string(), header(delivery, name)?.chars().take(512).collect())))
        .collect()
}

/// Where rejected tasks of `queue` go.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// `url` as logs may show it: without its password.
pub fn shown_url(url: &str) -> String {
    amqp::shown(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_of_another_format_is_refused() {
        let body =
            br#"{"format":"sluice.task.v9","pipeline":"p","file":"/p.toml","spec":"","batch":{"id":"x","inputs":[]}}"#;
        let error = Task::from_json(body).expect_err("refused");
        assert!(error.contains("sluice.task.v9"), "{error}");
        assert!(Task::from_json(b"{}").is_err());
        let with_text = br#"{"format":"sluice.task.v1","pipeline":"p","spec":"x","batch":{"id":"x","inputs":[]}}"#;
        assert!(Task::from_json(with_text).expect_err("refused").contains("--pipelines"));
        let sha = "a".repeat(64);
        let extra = format!(
            r#"{{"format":"sluice.task.v2","pipeline":"p","sha256":"{sha}","batch":{{"id":"x","inputs":[]}},"spec":"x"}}"#
        );
        assert!(Task::from_json(extra.as_bytes()).expect_err("refused").contains("unknown field"));
        let good = format!(
            r#"{{"format":"sluice.task.v2","pipeline":"p","sha256":"{sha}","batch":{{"id":"x","inputs":[]}}}}"#
        );
        assert_eq!(Task::from_json(good.as_bytes()).expect("a task").pipeline, "p");
        let bad_name = good.replace(r#""p""#, r#""../etc""#);
        assert!(Task::from_json(bad_name.as_bytes()).is_err());
        let bad_id = good.replace(r#""id":"x""#, r#""id":"x\nforged log line""#);
        assert!(Task::from_json(bad_id.as_bytes()).expect_err("refused").contains("batch id"));
    }
}
