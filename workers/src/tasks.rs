//! Batches as tasks on an AMQP queue: what the controller publishes with
//! `[workers] dispatch`, and what `sluice worker` consumes.
//!
//! A task is one durable, persistent message per batch, its `message_id`
//! the batch id, its body a [`Task`]: the pipeline file as written (its
//! `${env:...}` placeholders unfilled, so no secret travels through the
//! broker; each worker fills them from its own environment) and the batch.
//! Tasks that cannot be read or whose pipeline does not load are rejected
//! into `<queue>.dead`, where they stay for a person to look at.

use std::path::PathBuf;

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde::{Deserialize, Serialize};
use sluice_engine::batch::Batch;
use sluice_engine::spec::PipelineSpec;
use sluice_engine::{Error, Result};

/// What a worker needs to run one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The format of this message: [`Task::FORMAT`].
    pub format: String,
    /// `[pipeline] name`, for logs.
    pub pipeline: String,
    /// The pipeline file's path: relative paths in it are resolved against
    /// its folder, on the worker's machine as on the controller's.
    pub file: PathBuf,
    /// The pipeline file's text, placeholders unfilled.
    pub spec: String,
    /// The batch, as planned in the log.
    pub batch: Batch,
}

impl Task {
    /// The task format this build reads and writes.
    pub const FORMAT: &'static str = "sluice.task.v1";

    /// The task of running `batch` of `spec`.
    pub fn new(spec: &PipelineSpec, batch: Batch) -> Self {
        let file = std::path::absolute(spec.file.path()).unwrap_or_else(|_| spec.file.path().to_path_buf());
        Task {
            format: Self::FORMAT.to_string(),
            pipeline: spec.name.to_string(),
            file,
            spec: spec.file.text().to_string(),
            batch,
        }
    }

    /// Reads a message's body.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let task: Task = serde_json::from_slice(body).map_err(|e| format!("not a sluice task: {e}"))?;
        if task.format != Self::FORMAT {
            return Err(format!("task format {:?}; this sluice reads {:?}", task.format, Self::FORMAT));
        }
        Ok(task)
    }
}

/// A connection to the broker, with the task queue declared.
pub struct TaskQueue {
    connection: Connection,
    channel: Channel,
    queue: String,
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
        let shown = shown_url(url);
        let connection = Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| {
            // The client's message may quote the URL: never its password.
            let said = without_password(&e.to_string(), url);
            Error::Broker(format!(
                "cannot connect to {shown}: {said}; is the broker running? (RabbitMQ: scripts/start-rabbitmq.sh)"
            ))
        })?;
        let channel = connection.create_channel().await.map_err(|e| broker("cannot open a channel", &e))?;
        let dead = dead_queue(queue);
        channel
            .queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .map_err(|e| broker(&format!("cannot declare the queue {dead}"), &e))?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead.as_str().into()));
        channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments).await.map_err(|e| {
            broker(
                &format!(
                    "cannot declare the task queue {queue} (if it exists with other settings, \
                     delete it or choose another [workers] task_queue)"
                ),
                &e,
            )
        })?;
        // Publisher confirms: a task counts as sent once the broker has it.
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| broker("confirm_select", &e))?;
        Ok(TaskQueue { connection, channel, queue: queue.to_string() })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue
    }

    /// Publishes `task` and waits until the broker has it on disk.
    pub async fn publish(&self, task: &Task) -> Result<()> {
        let body = serde_json::to_vec(task).map_err(|e| Error::Broker(format!("cannot encode the task: {e}")))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(task.batch.id.to_string().as_str().into())
            .with_content_type("application/json".into())
            .with_type(Task::FORMAT.into());
        let confirm = self
            .channel
            .basic_publish("".into(), self.queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
            .await
            .map_err(|e| broker("cannot publish a task", &e))?
            .await
            .map_err(|e| broker("the broker did not confirm a task", &e))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(Error::Broker(format!("the broker refused the task of batch {}", task.batch.id)))
        }
    }

    /// Starts consuming, at most `prefetch` unacknowledged tasks at once.
    pub async fn consume(&self, prefetch: u16, tag: &str) -> Result<Consumer> {
        self.channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| broker("basic_qos", &e))?;
        self.channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker(&format!("cannot consume from {}", self.queue), &e))
    }

    /// Stops the consumer `tag`: no task is delivered to it any more.
    pub async fn cancel(&self, tag: &str) -> Result<()> {
        self.channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await
            .map_err(|e| broker("basic_cancel", &e))
    }

    /// Closes the connection; unacknowledged tasks go back to the queue.
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// Where rejected tasks of `queue` go.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

fn broker(what: &str, error: &lapin::Error) -> Error {
    Error::Broker(format!("{what}: {error}"))
}

/// `url` as logs may show it: without its password.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.host_str().is_some_and(|host| !host.is_empty()) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        _ => "(an unreadable broker URL)".to_string(),
    }
}

/// `text` with the password of `url`, as written or percent-decoded, and
/// the whole URL, taken out.
fn without_password(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &shown_url(url));
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password().filter(|p| !p.is_empty())
    {
        text = text.replace(password, "***");
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8()
            && !decoded.is_empty()
        {
            text = text.replace(decoded.as_ref(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(shown_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(shown_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert!(!shown_url("amqp//guest:s3cret@x").contains("s3cret"));
        assert!(!shown_url("amqp:guest:s3cret@x").contains("s3cret"));
        let url = "amqp://guest:s%40cret@127.0.0.1:5672/%2f";
        let said = without_password(&format!("bad uri {url}: user guest, password s@cret"), url);
        assert!(!said.contains("s@cret") && !said.contains("s%40cret"), "{said}");
    }

    #[test]
    fn a_task_of_another_format_is_refused() {
        let body =
            br#"{"format":"sluice.task.v9","pipeline":"p","file":"/p.toml","spec":"","batch":{"id":"x","inputs":[]}}"#;
        let error = Task::from_json(body).expect_err("refused");
        assert!(error.contains("sluice.task.v9"), "{error}");
        assert!(Task::from_json(b"{}").is_err());
    }
}
