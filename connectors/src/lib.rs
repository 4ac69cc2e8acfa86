//! The connectors of sluice: the sources and sinks a pipeline file names
//! by `type`, each in a module of its own, registered in one list.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod files;
mod formats;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod notifications;
#[cfg(any(feature = "kafka", feature = "amqp"))]
mod outbox;

use std::sync::Arc;

#[cfg(any(feature = "kafka", feature = "amqp"))]
pub use formats::messages::MessageFormat;
use sluice_engine::sink::Sink;
use sluice_engine::source::SourceConnector;
use sluice_engine::spec::{Component, ConnectorRegistry, Diagnostics};
use sluice_engine::storage::StorageLocation;

/// Makes a sink from its table, the checkpoint's location given for an
/// outbox.
type MakeSink = fn(&Component<'_>, Option<&StorageLocation>) -> Result<Arc<dyn Sink>, Diagnostics>;

/// One connector: its `type`, whether it is a stream, and how its source
/// and sink are made from their tables.
struct Connector {
    kind: &'static str,
    stream: bool,
    source: fn(&Component<'_>) -> Result<SourceConnector, Diagnostics>,
    sink: MakeSink,
}

/// Every connector of this build, by `type`. The type lists, the stream
/// kinds and the registry's answers all come from here.
const CONNECTORS: &[Connector] = &[
    Connector {
        kind: "files",
        stream: false,
        source: |component| Ok(SourceConnector::Objects(Arc::new(files::FilesSource::from_component(component)?))),
        sink: |component, _| Ok(Arc::new(files::FilesSink::from_component(component)?)),
    },
    #[cfg(feature = "kafka")]
    Connector {
        kind: "kafka",
        stream: true,
        source: |component| Ok(SourceConnector::Stream(Arc::new(kafka::KafkaSource::from_component(component)?))),
        sink: kafka::sink,
    },
    #[cfg(feature = "amqp")]
    Connector {
        kind: "amqp",
        stream: true,
        source: |component| Ok(SourceConnector::Stream(Arc::new(amqp::AmqpSource::from_component(component)?))),
        sink: amqp::sink,
    },
];

/// The connectors this build leaves out, with the cargo feature that has
/// each: a pipeline naming one is told so, not that the type is unknown.
const NOT_BUILT: &[(&str, &str)] = &[
    #[cfg(not(feature = "kafka"))]
    ("kafka", "kafka"),
    #[cfg(not(feature = "amqp"))]
    ("amqp", "amqp"),
];

/// The connector types, as written in `[source] type` and `[sink] type`:
/// every connector is both.
pub fn types() -> Vec<&'static str> {
    CONNECTORS.iter().map(|connector| connector.kind).collect()
}

fn connector(component: &Component<'_>) -> Result<&'static Connector, Diagnostics> {
    let kind = component.kind();
    if let Some(connector) = CONNECTORS.iter().find(|connector| connector.kind == kind) {
        return Ok(connector);
    }
    Err(match NOT_BUILT.iter().find(|(left_out, _)| *left_out == kind) {
        Some((_, feature)) => component.not_built(feature),
        None => component.unknown_kind(&types()),
    })
}

/// Every connector sluice has, by `type`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

impl ConnectorRegistry for Registry {
    fn source(&self, component: &Component<'_>) -> Result<SourceConnector, Diagnostics> {
        (connector(component)?.source)(component)
    }

    fn sink(
        &self,
        component: &Component<'_>,
        checkpoint: Option<&StorageLocation>,
    ) -> Result<Arc<dyn Sink>, Diagnostics> {
        (connector(component)?.sink)(component, checkpoint)
    }

    fn is_stream(&self, kind: &str) -> bool {
        CONNECTORS.iter().any(|connector| connector.kind == kind && connector.stream)
    }

    fn table(&self, component: &Component<'_>) -> Result<Arc<dyn sluice_engine::source::Source>, Diagnostics> {
        let table = files::FilesSource::from_component(component)?;
        if sluice_engine::source::Source::after_commit(&table) != sluice_engine::source::AfterCommit::Keep {
            let message =
                "applies to [source] only: a lookup table's files are read again when they change, never removed";
            return Err(Diagnostics(vec![component.error("after_commit", message, Some("remove it".into()))]));
        }
        if sluice_engine::source::Source::max_file_age(&table).is_some() {
            let message = "applies to [source] only: a lookup table is read whole, whatever the age of its files";
            return Err(Diagnostics(vec![component.error("max_file_age", message, Some("remove it".into()))]));
        }
        Ok(Arc::new(table))
    }

    fn dead_letters(&self, location: &StorageLocation) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(files::FilesSink::ndjson(location.clone()).map_err(|e| e.to_string())?))
    }
}
