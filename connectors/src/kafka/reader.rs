//! Reading assigned Kafka partitions into micro-batches, and reading a
//! planned batch's exact ranges again.
//!
//! Reading until caught up stops each partition at the high watermark
//! read at start. Some brokers report a watermark below their newest
//! record, so a partition that has reached it goes on taking the records
//! that were already there when the run started (by their timestamps)
//! until a fetch comes back empty; the first record produced after the
//! start ends it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use sluice_engine::stream::{
    Message, MicroBatchLimits, OffsetRange, Origin, PartitionKey, PartitionStart, Positions, StreamReader,
};
use sluice_engine::{Error, Result};

use super::broker_error;

/// How long without a record before a partition read until caught up
/// counts as read to its end (fetches come back empty after 100 ms).
const IDLE: Duration = Duration::from_millis(300);
/// How long a read may go without a record before the broker counts as
/// gone (while reading a range again, or short of the end when reading
/// until caught up).
const STALL: Duration = Duration::from_secs(30);
/// Client errors in a row after which reading gives up.
const MAX_ERRORS: u32 = 50;

/// Where a read until caught up ends.
#[derive(Debug)]
pub(super) struct Until {
    /// The high watermark of each partition, read at start.
    targets: BTreeMap<PartitionKey, i64>,
    /// Partitions read to their end.
    done: BTreeSet<PartitionKey>,
    /// When each partition last gave a record (or the reader opened).
    heard: BTreeMap<PartitionKey, Instant>,
    /// When the run started, in milliseconds since the epoch.
    started_ms: i64,
}

impl Until {
    pub(super) fn new(targets: BTreeMap<PartitionKey, i64>) -> Self {
        let started_ms = chrono::Utc::now().timestamp_millis();
        let heard = targets.keys().map(|key| (key.clone(), Instant::now())).collect();
        Until { targets, done: BTreeSet::new(), heard, started_ms }
    }

    /// Whether a record at `offset` with `timestamp` of `key` is past the
    /// end: beyond the watermark read at start, and produced since.
    fn is_past_end(&self, key: &PartitionKey, offset: i64, timestamp: Timestamp) -> bool {
        let beyond = self.targets.get(key).is_none_or(|target| offset >= *target);
        let produced_since = timestamp.to_millis().is_some_and(|at| at >= self.started_ms);
        beyond && produced_since
    }
}

/// How often a reader that follows a topic looks for partitions added to it.
const NEW_PARTITIONS_EVERY: Duration = Duration::from_secs(60);

/// An open reader of assigned partitions.
pub(super) struct KafkaReader {
    consumer: Arc<StreamConsumer>,
    brokers: String,
    topics: Vec<String>,
    /// The next offset to take, by partition.
    next: BTreeMap<PartitionKey, i64>,
    starts: Vec<PartitionStart>,
    until: Option<Until>,
    /// The partitions and next offsets of the micro-batch handed out last.
    handed_out: Vec<(PartitionKey, i64)>,
    /// When the topics' partitions were last listed.
    listed: Instant,
}

impl KafkaReader {
    pub(super) fn new(
        consumer: Arc<StreamConsumer>,
        brokers: String,
        topics: Vec<String>,
        next: BTreeMap<PartitionKey, i64>,
        starts: Vec<PartitionStart>,
        until: Option<Until>,
    ) -> Self {
        KafkaReader { consumer, brokers, topics, next, starts, until, handed_out: Vec::new(), listed: Instant::now() }
    }

    fn caught_up(&self) -> bool {
        self.until.as_ref().is_some_and(|until| self.next.keys().all(|key| until.done.contains(key)))
    }

    /// Marks the partitions read to their end: at or past the watermark
    /// read at start, and quiet for a moment. The consumer's own fetch
    /// position counts too: it passes offsets that hold no record
    /// (transaction markers, compacted records). A partition that stays
    /// short of its watermark for long (an open transaction holds it back)
    /// ends there: the next run reads on from the log's position.
    fn mark_read_to_end(&mut self) {
        let Some(until) = &mut self.until else { return };
        let fetched = self.consumer.position().unwrap_or_default();
        let mut ended = TopicPartitionList::new();
        for (key, next) in &self.next {
            if until.done.contains(key) {
                continue;
            }
            let at = fetch_position(&fetched, key).map_or(*next, |position| position.max(*next));
            let quiet = until.heard.get(key).map_or(IDLE, Instant::elapsed);
            let target = until.targets.get(key).copied().unwrap_or(at);
            let reached = at >= target && quiet >= IDLE;
            if !reached && quiet >= STALL {
                tracing::warn!(
                    "{key}: no record for {}s at offset {at}, short of the high watermark {target} read at start                      (an open transaction?): the next run reads on from here",
                    STALL.as_secs()
                );
            }
            if reached || quiet >= STALL {
                until.done.insert(key.clone());
                let _ = ended.add_partition(&key.topic, key.partition);
            }
        }
        // What a partition read to its end still fetches is of no use.
        if ended.count() > 0 {
            let _ = self.consumer.pause(&ended);
        }
    }

    /// A reader that follows its topics assigns the partitions added to
    /// them since it last looked, from their oldest record.
    async fn assign_new_partitions(&mut self) -> Result<()> {
        if self.until.is_some() || self.listed.elapsed() < NEW_PARTITIONS_EVERY {
            return Ok(());
        }
        self.listed = Instant::now();
        let (consumer, topics, brokers) = (self.consumer.clone(), self.topics.clone(), self.brokers.clone());
        let known: BTreeSet<PartitionKey> = self.next.keys().cloned().collect();
        let added = super::blocking(move || {
            let mut added = BTreeMap::new();
            for topic in &topics {
                let metadata = consumer
                    .fetch_metadata(Some(topic), super::REQUEST_TIMEOUT)
                    .map_err(|e| broker_error(&brokers, "cannot read the topic's metadata", e))?;
                for described in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for partition in described.partitions() {
                        let key = PartitionKey { topic: topic.clone(), partition: partition.id() };
                        if !known.contains(&key) {
                            let (low, _) = consumer
                                .fetch_watermarks(topic, partition.id(), super::REQUEST_TIMEOUT)
                                .map_err(|e| broker_error(&brokers, "cannot read the offsets", e))?;
                            added.insert(key, low);
                        }
                    }
                }
            }
            Ok(added)
        })
        .await?;
        if added.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for (key, low) in &added {
            tracing::info!("{key} was added to the topic: reading it from offset {low}");
            assignment
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(*low))
                .map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))?;
        }
        self.consumer
            .incremental_assign(&assignment)
            .map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))?;
        self.next.extend(added);
        Ok(())
    }
}

#[async_trait]
impl StreamReader for KafkaReader {
    async fn next(&mut self, limits: &MicroBatchLimits) -> Result<Option<Vec<Message>>> {
        self.assign_new_partitions().await?;
        let mut batch: Vec<Message> = Vec::new();
        let mut bytes = 0u64;
        let mut closes_at: Option<Instant> = None;
        let mut errors = 0;
        // Reading until caught up looks this often at which partitions have
        // gone quiet.
        let tick = IDLE / 3;
        let mut looked: Option<Instant> = None;
        loop {
            if self.until.is_some() && looked.is_none_or(|at| at.elapsed() >= tick) {
                looked = Some(Instant::now());
                self.mark_read_to_end();
            }
            if self.caught_up() {
                break;
            }
            let wait = match (closes_at, &self.until) {
                (Some(at), None) => Some(at.saturating_duration_since(Instant::now())),
                (Some(at), Some(_)) => Some(at.saturating_duration_since(Instant::now()).min(tick)),
                (None, Some(_)) => Some(tick),
                (None, None) => None,
            };
            let received = match wait {
                Some(wait) => tokio::time::timeout(wait, self.consumer.recv()).await.ok(),
                None => Some(self.consumer.recv().await),
            };
            let record = match received {
                None => {
                    if closes_at.is_some_and(|at| Instant::now() >= at) {
                        break;
                    }
                    continue;
                }
                Some(Err(error)) => {
                    errors += 1;
                    if errors >= MAX_ERRORS {
                        return Err(broker_error(&self.brokers, "cannot read", error));
                    }
                    tracing::warn!("kafka {}: {error}; reading on", self.brokers);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Some(Ok(record)) => record,
            };
            errors = 0;
            let key = PartitionKey { topic: record.topic().to_string(), partition: record.partition() };
            let offset = record.offset();
            let Some(next) = self.next.get_mut(&key) else { continue };
            if offset < *next || self.until.as_ref().is_some_and(|until| until.done.contains(&key)) {
                // Fetched before the reader was moved, or past the end.
                continue;
            }
            if let Some(until) = &mut self.until {
                until.heard.insert(key.clone(), Instant::now());
                if until.is_past_end(&key, offset, record.timestamp()) {
                    until.done.insert(key);
                    continue;
                }
            }
            if offset > *next {
                tracing::warn!(
                    "offsets {}..{offset} of {key} are no longer on the broker (retention or compaction): \
                     reading on from {offset}",
                    *next
                );
            }
            *next = offset + 1;
            let payload = Bytes::copy_from_slice(record.payload().unwrap_or_default());
            bytes += payload.len() as u64;
            batch.push(Message {
                payload,
                origin: Origin::Kafka { topic: key.topic, partition: key.partition, offset },
            });
            closes_at.get_or_insert_with(|| Instant::now() + limits.max_wait);
            if batch.len() >= limits.max_records || bytes >= limits.max_bytes {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let mut handed_out: BTreeMap<PartitionKey, i64> = BTreeMap::new();
        for message in &batch {
            if let Origin::Kafka { topic, partition, offset } = &message.origin {
                handed_out.insert(PartitionKey { topic: topic.clone(), partition: *partition }, offset + 1);
            }
        }
        self.handed_out = handed_out.into_iter().collect();
        Ok(Some(batch))
    }

    fn starts(&self) -> Vec<PartitionStart> {
        self.starts.clone()
    }

    async fn settle(&mut self) -> Result<()> {
        // Group offsets are for monitoring tools only: a commit that fails
        // is logged and changes nothing.
        let mut offsets = TopicPartitionList::new();
        for (key, next) in std::mem::take(&mut self.handed_out) {
            if offsets.add_partition_offset(&key.topic, key.partition, Offset::Offset(next)).is_err() {
                return Ok(());
            }
        }
        if offsets.count() > 0
            && let Err(error) = self.consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::debug!("kafka {}: group offsets not committed: {error}", self.brokers);
        }
        Ok(())
    }

    async fn release(&mut self, positions: &Positions) -> Result<()> {
        self.handed_out.clear();
        let mut assignment = TopicPartitionList::new();
        for (key, next) in &mut self.next {
            if let Some(position) = positions.get(key) {
                *next = *position;
            }
            assignment
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(*next))
                .map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))?;
        }
        self.consumer.assign(&assignment).map_err(|e| broker_error(&self.brokers, "cannot assign partitions", e))
    }
}

/// The consumer's fetch position of `key` in `fetched`
/// (`Consumer::position`), when it has one.
fn fetch_position(fetched: &TopicPartitionList, key: &PartitionKey) -> Option<i64> {
    match fetched.find_partition(&key.topic, key.partition)?.offset() {
        Offset::Offset(position) => Some(position),
        _ => None,
    }
}

/// Where each of `partitions` really ends, from the high watermark each
/// reported: some brokers report one below their newest record, so the
/// records after it are read until a fetch comes back empty or one was
/// produced since `since_ms`. The end is the offset after the last older
/// record (or the first newer one's).
pub(super) async fn find_ends(
    consumer: &StreamConsumer,
    brokers: &str,
    partitions: &BTreeMap<PartitionKey, i64>,
    since_ms: i64,
) -> Result<BTreeMap<PartitionKey, i64>> {
    let mut ends = partitions.clone();
    if ends.is_empty() {
        return Ok(ends);
    }
    let mut assignment = TopicPartitionList::new();
    for (key, watermark) in &ends {
        assignment
            .add_partition_offset(&key.topic, key.partition, Offset::Offset(*watermark))
            .map_err(|e| broker_error(brokers, "cannot assign partitions", e))?;
    }
    consumer.assign(&assignment).map_err(|e| broker_error(brokers, "cannot assign partitions", e))?;
    let mut found: BTreeSet<PartitionKey> = BTreeSet::new();
    while found.len() < ends.len() {
        let Ok(received) = tokio::time::timeout(IDLE, consumer.recv()).await else { break };
        let Ok(record) = received else { continue };
        let key = PartitionKey { topic: record.topic().to_string(), partition: record.partition() };
        let Some(end) = ends.get_mut(&key) else { continue };
        if found.contains(&key) || record.offset() < *end {
            continue;
        }
        if record.timestamp().to_millis().is_some_and(|at| at >= since_ms) {
            found.insert(key);
        } else {
            *end = record.offset() + 1;
        }
    }
    Ok(ends)
}

/// Reads exactly the records of `ranges` again, in partition and offset
/// order.
pub(super) async fn read_ranges(
    consumer: Arc<StreamConsumer>,
    brokers: &str,
    ranges: &[OffsetRange],
) -> Result<Vec<Message>> {
    let mut assignment = TopicPartitionList::new();
    let mut next: BTreeMap<PartitionKey, (i64, i64)> = BTreeMap::new();
    for range in ranges.iter().filter(|range| range.start < range.end) {
        assignment
            .add_partition_offset(&range.topic, range.partition, Offset::Offset(range.start))
            .map_err(|e| broker_error(brokers, "cannot assign partitions", e))?;
        next.insert(range.key(), (range.start, range.end));
    }
    consumer.assign(&assignment).map_err(|e| broker_error(brokers, "cannot assign partitions", e))?;
    let mut messages = Vec::new();
    let mut errors = 0;
    while next.values().any(|(at, end)| at < end) {
        let record = match tokio::time::timeout(STALL, consumer.recv()).await {
            Err(_) => {
                // Offsets that hold no record (transaction markers) are
                // passed by the consumer's own position.
                let fetched = consumer.position().unwrap_or_default();
                let mut stuck = Vec::new();
                for (key, (at, end)) in &mut next {
                    if let Some(position) = fetch_position(&fetched, key) {
                        *at = (*at).max(position);
                    }
                    if at < end {
                        stuck.push(format!("{key} at {at} of ..{end}"));
                    }
                }
                if stuck.is_empty() {
                    break;
                }
                return Err(Error::Broker(format!(
                    "kafka {brokers}: no record for {}s while reading a planned batch again ({}); \
                     were the records deleted (retention)?",
                    STALL.as_secs(),
                    stuck.join(", ")
                )));
            }
            Ok(Err(error)) => {
                errors += 1;
                if errors >= MAX_ERRORS {
                    return Err(broker_error(brokers, "cannot read", error));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Ok(record)) => record,
        };
        errors = 0;
        let key = PartitionKey { topic: record.topic().to_string(), partition: record.partition() };
        let offset = record.offset();
        let Some((at, end)) = next.get_mut(&key) else { continue };
        if offset < *at || offset >= *end {
            if offset >= *end {
                *at = *end;
            }
            continue;
        }
        *at = offset + 1;
        messages.push(Message {
            payload: Bytes::copy_from_slice(record.payload().unwrap_or_default()),
            origin: Origin::Kafka { topic: key.topic, partition: key.partition, offset },
        });
    }
    messages.sort_by(|a, b| match (&a.origin, &b.origin) {
        (
            Origin::Kafka { topic: ta, partition: pa, offset: oa },
            Origin::Kafka { topic: tb, partition: pb, offset: ob },
        ) => (ta, pa, oa).cmp(&(tb, pb, ob)),
        _ => std::cmp::Ordering::Equal,
    });
    Ok(messages)
}
