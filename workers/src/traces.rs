//! OpenTelemetry traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, sluice's spans (`batch`,
//! `plan`, `read`, `transform`, `write`, `commit`, `publish`, and a
//! controller's `dispatch` and `task`) are exported over OTLP/HTTP, with
//! their fields (`pipeline`, `batch_id`, `attempt`, ...) as attributes.
//! `OTEL_EXPORTER_OTLP_PROTOCOL` chooses `http/protobuf` (the default) or
//! `http/json`; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name
//! the process (`sluice` by default), and `OTEL_EXPORTER_OTLP_HEADERS`
//! adds headers (a collector's token). Without an endpoint nothing is
//! exported and nothing is built.
//!
//! Only spans are exported, never log events: a log line may name what the
//! stderr writer redacts, and a span's fields are ids and counts. A task
//! dispatched to a `sluice worker` carries the W3C `traceparent` of the
//! controller's `task` span in an AMQP header, so that the worker's
//! `batch` span is its child: the controller's plan and the worker's batch
//! are one trace.

use std::collections::HashMap;

#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};

    /// Whether the environment asks for traces.
    pub(super) fn wanted() -> bool {
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
    }

    /// The exporting layer and the provider to flush at exit; `None` when
    /// no endpoint is set or the exporter cannot be built (said on stderr).
    pub(super) fn layer<S>() -> Option<(Box<dyn Layer<S> + Send + Sync>, SdkTracerProvider)>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        if !wanted() {
            return None;
        }
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/json") => Protocol::HttpJson,
            _ => Protocol::HttpBinary,
        };
        let exporter = match SpanExporter::builder().with_http().with_protocol(protocol).build() {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("sluice: traces are not exported: the OTLP exporter cannot be built: {error}");
                return None;
            }
        };
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("sluice");
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = provider.tracer("sluice");
        // sluice's own spans, at info and above; no event (log line).
        let ours = Targets::new()
            .with_target("sluice_workers", LevelFilter::INFO)
            .with_target("sluice_engine", LevelFilter::INFO)
            .with_target("sluice_connectors", LevelFilter::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(ours)
            .with_filter(filter_fn(|metadata| metadata.is_span()));
        Some((Box::new(layer), provider))
    }

    /// The W3C trace context of the current span, as headers.
    pub(super) fn current_context() -> HashMap<String, String> {
        let mut headers = HashMap::new();
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        headers
    }

    /// Makes `span` a child of the span the headers name.
    pub(super) fn set_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
        let context = TraceContextPropagator::new().extract(headers);
        let _ = span.set_parent(context);
    }
}

/// What must outlive the command for its traces to reach the collector.
#[derive(Default)]
pub struct Exporting {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Exporting {
    /// Sends the spans still buffered; called once the command is done.
    pub fn flush(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            if let Err(error) = provider.force_flush() {
                eprintln!("sluice: some trace spans were not exported: {error}");
            }
            let _ = provider.shutdown();
        }
    }
}

/// The layer that exports traces, if the environment asks for them.
pub(crate) fn layer<S>() -> (Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>, Exporting)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    #[cfg(feature = "otel")]
    if let Some((layer, provider)) = otel::layer::<S>() {
        return (Some(layer), Exporting { provider: Some(provider) });
    }
    (None, Exporting::default())
}

/// The trace context of the current span, to send with a task: W3C
/// `traceparent` (and `tracestate`); empty when traces are not exported.
pub fn current_context() -> HashMap<String, String> {
    #[cfg(feature = "otel")]
    if otel::wanted() {
        return otel::current_context();
    }
    HashMap::new()
}

/// Makes `span` a child of the span a task's `headers` name.
pub fn set_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
    #[cfg(feature = "otel")]
    if !headers.is_empty() && otel::wanted() {
        otel::set_parent(span, headers);
    }
    let _ = (span, headers);
}
