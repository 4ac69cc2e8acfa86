//! Reading a pipeline file into a [`PipelineSpec`]: every problem
//! collected, each with `FILE:LINE:COL` and its key path.

use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostics, SpecFile};
use super::keys::{collect, component, locate_key};
use super::parts::{check_source_kind, lookup_tables, storage_options};
use super::pipeline::{ConnectorRegistry, Dispatch, PipelineSpec};
use super::raw::{RawValue, parse_table, substitute_env, unknown_keys};
use super::sections::*;
use super::urls::{NotificationQueue, check_broker_url};
use crate::batch::PipelineName;
use crate::units::HumanDuration;

/// Reads, checks and builds the pipeline in `file`.
pub fn parse(file: SpecFile, registry: &dyn ConnectorRegistry) -> Result<PipelineSpec, Diagnostics> {
    let file = Arc::new(file);
    let mut root = match DeTable::parse(file.text()) {
        Ok(root) => root.into_inner(),
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            return Err(Diagnostics(vec![file.diagnostic(span, "", error.message(), None)]));
        }
    };
    let mut problems = unknown_keys(&file, "", &root, SECTIONS);
    problems.extend(substitute_env(&file, &mut root, ""));

    let section = |name: &str| -> Option<RawValue<'_>> { root.get(name).cloned() };
    let empty = || Spanned::new(0..0, DeValue::Table(DeTable::new()));
    if let Some(storage) = section("storage") {
        match storage_options(&file, &storage) {
            Ok(options) => file.set_storage(options),
            Err(found) => problems.extend(found),
        }
    }

    let pipeline: Option<PipelineSection> = match section("pipeline") {
        Some(value) => collect(parse_table(&file, "pipeline", &value), &mut problems),
        None => {
            problems.0.push(file.diagnostic(
                0..0,
                "pipeline",
                "missing table [pipeline]",
                Some("start the file with [pipeline] and name = \"my_pipeline\"".into()),
            ));
            None
        }
    };
    let name = pipeline.as_ref().and_then(|p| {
        PipelineName::new(p.name.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(p.name.span(), "pipeline.name", message, None)))
            .ok()
    });
    if let Some(p) = &pipeline
        && *p.version.get_ref() == 0
    {
        problems.0.push(file.diagnostic(p.version.span(), "pipeline.version", "must be 1 or more", None));
    }

    let trigger: Option<TriggerSpec> =
        collect(parse_table(&file, "trigger", &section("trigger").unwrap_or_else(empty)), &mut problems);
    if let Some(trigger) = &trigger {
        let floors = [
            (
                "trigger.poll_interval",
                trigger.poll_interval.0,
                MIN_POLL_INTERVAL,
                "an idle controller lists the source this often; \"1s\" is the default",
            ),
            (
                "trigger.reconcile_interval",
                trigger.reconcile_interval.0,
                MIN_RECONCILE_INTERVAL,
                "a watched folder is listed this often anyway; \"60s\" is the default",
            ),
            (
                "trigger.max_wait",
                trigger.max_wait.0,
                MIN_MAX_WAIT,
                "a micro-batch stays open this long after its first message; \"1s\" is the default",
            ),
        ];
        for (path, value, floor, hint) in floors {
            if value < floor {
                problems.0.push(file.diagnostic(
                    locate_key(file.text(), path),
                    path,
                    format!("must be at least {}", HumanDuration(floor)),
                    Some(hint.into()),
                ));
            }
        }
        if let Some(url) = &trigger.notifications
            && let Err(message) = NotificationQueue::parse(url.get_ref())
        {
            problems.0.push(
                file.diagnostic(
                    url.span(),
                    "trigger.notifications",
                    message,
                    Some(
                        "write it as amqp://USER:PASSWORD@HOST:5672/%2f/QUEUE (the password as ${env:NAME}) for S3 \
                     events on a broker, or azqueue://ACCOUNT/QUEUE for Event Grid's events on an Azure Storage \
                     queue"
                            .into(),
                    ),
                ),
            );
        }
        if trigger.max_files_per_batch == 0 {
            problems.0.push(file.diagnostic(
                locate_key(file.text(), "trigger.max_files_per_batch"),
                "trigger.max_files_per_batch",
                "must be 1 or more",
                None,
            ));
        }
        if trigger.max_bytes_per_batch.0 == 0 {
            problems.0.push(file.diagnostic(
                locate_key(file.text(), "trigger.max_bytes_per_batch"),
                "trigger.max_bytes_per_batch",
                "must be more than 0 bytes",
                None,
            ));
        }
        let zero_stream_limits = [("max_records", trigger.max_records == 0), ("max_bytes", trigger.max_bytes.0 == 0)];
        for (key, zero) in zero_stream_limits {
            if zero {
                let path = format!("trigger.{key}");
                problems.0.push(file.diagnostic(locate_key(file.text(), &path), &path, "must be more than 0", None));
            }
        }
    }
    let transform: Option<TransformSection> =
        collect(parse_table(&file, "transform", &section("transform").unwrap_or_else(empty)), &mut problems);
    if let Some(sql) = transform.as_ref().and_then(|t| t.sql.as_ref())
        && let Err(message) = crate::sql::check_depth(sql.get_ref())
    {
        problems.0.push(file.diagnostic(
            sql.span(),
            "transform.sql",
            message,
            Some("split the chain into parts, e.g. with parentheses or a subquery".into()),
        ));
    }
    let checkpoint: Option<CheckpointSection> =
        collect(parse_table(&file, "checkpoint", &section("checkpoint").unwrap_or_else(empty)), &mut problems);
    let workers: Option<WorkersSection> =
        collect(parse_table(&file, "workers", &section("workers").unwrap_or_else(empty)), &mut problems);
    let concurrency = match workers.as_ref().and_then(|w| w.concurrency.as_ref()) {
        Some(c) if *c.get_ref() == 0 => {
            problems.0.push(file.diagnostic(c.span(), "workers.concurrency", "must be 1 or more", None));
            1
        }
        Some(c) => *c.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let max_attempts = match workers.as_ref().and_then(|w| w.max_attempts.as_ref()) {
        Some(n) if *n.get_ref() == 0 => {
            problems.0.push(file.diagnostic(n.span(), "workers.max_attempts", "must be 1 or more", None));
            1
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_MAX_ATTEMPTS,
    };
    let lease_timeout = match workers.as_ref().and_then(|w| w.lease_timeout.as_ref()) {
        Some(lease) if lease.get_ref().0 < MIN_LEASE_TIMEOUT => {
            problems.0.push(file.diagnostic(
                lease.span(),
                "workers.lease_timeout",
                format!("must be at least {}", HumanDuration(MIN_LEASE_TIMEOUT)),
                Some("a lease is renewed every third of it; \"30s\" is the default".into()),
            ));
            DEFAULT_LEASE_TIMEOUT
        }
        Some(lease) => lease.get_ref().0,
        None => DEFAULT_LEASE_TIMEOUT,
    };
    let dispatch = workers.as_ref().and_then(|w| {
        let url = w.dispatch.as_ref()?;
        if let Err(message) = check_broker_url(url.get_ref()) {
            problems.0.push(file.diagnostic(
                url.span(),
                "workers.dispatch",
                message,
                Some("write it as amqp://USER:PASSWORD@HOST:5672/%2f, the password as ${env:NAME}".into()),
            ));
        }
        let queue = match &w.task_queue {
            Some(queue) if queue.get_ref().trim().is_empty() => {
                problems.0.push(file.diagnostic(queue.span(), "workers.task_queue", "is empty", None));
                DEFAULT_TASK_QUEUE.to_string()
            }
            Some(queue) => queue.get_ref().clone(),
            None => DEFAULT_TASK_QUEUE.to_string(),
        };
        Some(Dispatch { url: url.get_ref().clone(), queue })
    });
    if let Some(w) = &workers
        && w.dispatch.is_none()
        && let Some(queue) = &w.task_queue
    {
        problems.0.push(file.diagnostic(
            queue.span(),
            "workers.task_queue",
            "has no effect without [workers] dispatch",
            Some("add dispatch = \"amqp://...\" to hand batches to `sluice worker`s, or remove task_queue".into()),
        ));
    }
    let dead_letter: Option<DeadLetterSection> =
        collect(parse_table(&file, "dead_letter", &section("dead_letter").unwrap_or_else(empty)), &mut problems);

    let explicit_checkpoint = checkpoint.as_ref().and_then(|c| c.url.as_ref()).and_then(|url| {
        file.location(url.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(url.span(), "checkpoint.url", message, None)))
            .ok()
    });
    let source_component = component(&file, "source", section("source"), &mut problems);
    let stream = source_component.as_ref().is_some_and(|c| registry.is_stream(c.kind()));
    let source = source_component.and_then(|c| collect(registry.source(&c), &mut problems));
    let sink = component(&file, "sink", section("sink"), &mut problems)
        .and_then(|c| collect(registry.sink(&c, explicit_checkpoint.as_ref()), &mut problems));
    let tables = lookup_tables(&file, section("tables"), registry, &mut problems);
    let trigger_keys: Vec<String> = match section("trigger").as_ref().map(|value| value.get_ref()) {
        Some(DeValue::Table(table)) => table.iter().map(|(key, _)| key.get_ref().to_string()).collect(),
        _ => Vec::new(),
    };
    problems.extend(check_source_kind(&file, stream, &trigger_keys, dispatch.is_some()));

    let checkpoint_location = match checkpoint.as_ref().and_then(|c| c.url.as_ref()) {
        Some(_) => explicit_checkpoint,
        None => sink.as_ref().and_then(|sink| {
            let default = sink.default_checkpoint();
            if default.is_none() {
                problems.0.push(file.diagnostic(
                    0..0,
                    "checkpoint.url",
                    "this sink has no folder to keep the checkpoint log in",
                    Some("add [checkpoint] url = \"<a folder or bucket URL>\"".into()),
                ));
            }
            default
        }),
    };

    let dead_letter_max_records = dead_letter
        .as_ref()
        .and_then(|d| d.max_records.as_ref())
        .map_or(DEFAULT_DEAD_LETTER_MAX_RECORDS, |max| *max.get_ref());
    let dead_letter_location = match dead_letter.as_ref().and_then(|d| d.url.as_ref()) {
        Some(url) => file
            .location(url.get_ref())
            .map_err(|message| problems.0.push(file.diagnostic(url.span(), "dead_letter.url", message, None)))
            .ok(),
        None => checkpoint_location.as_ref().map(|checkpoint| checkpoint.join("dead_letters")),
    };
    let dead_letters = dead_letter_location.as_ref().and_then(|location| {
        registry
            .dead_letters(location)
            .map_err(|message| {
                problems.0.push(file.diagnostic(
                    locate_key(file.text(), "dead_letter.url"),
                    "dead_letter.url",
                    message,
                    None,
                ))
            })
            .ok()
    });

    if !problems.is_empty() {
        problems.0.sort_by_key(|problem| (problem.line, problem.column));
        return Err(problems);
    }
    let (
        Some(pipeline),
        Some(name),
        Some(trigger),
        Some(transform),
        Some(source),
        Some(sink),
        Some(checkpoint),
        Some(dead_letter),
        Some(dead_letters),
    ) = (pipeline, name, trigger, transform, source, sink, checkpoint_location, dead_letter_location, dead_letters)
    else {
        unreachable!("every missing part was reported as a problem");
    };
    let (sql, sql_span) = match transform.sql {
        Some(sql) => (Some(sql.get_ref().clone()), sql.span()),
        None => (None, locate_key(file.text(), "transform")),
    };
    Ok(PipelineSpec {
        file,
        name,
        version: *pipeline.version.get_ref(),
        source,
        trigger,
        sql,
        sink,
        checkpoint,
        concurrency,
        max_attempts,
        lease_timeout,
        dispatch,
        dead_letter,
        dead_letter_max_records,
        dead_letters,
        tables,
        sql_span,
    })
}
