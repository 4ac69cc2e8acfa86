//! The connectors of sluice: the sources and sinks a pipeline file names
//! by `type`, each in a module of its own, registered in one list.

pub mod amqp;
pub mod files;
mod formats;
pub mod kafka;
pub mod notifications;
mod outbox;

use std::sync::Arc;

pub use formats::messages::MessageFormat;
use sluice_engine::sink::Sink;
use sluice_engine::source::SourceConnector;
use sluice_engine::spec::{Component, ConnectorRegistry, Diagnostics};
use sluice_engine::storage::StorageLocation;

/// The source types, as written in `[source] type`.
pub const SOURCE_TYPES: &[&str] = &["files", "kafka", "amqp"];
/// The sink types, as written in `[sink] type`.
pub const SINK_TYPES: &[&str] = &["files", "kafka", "amqp"];

/// Every connector sluice has, by `type`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

impl ConnectorRegistry for Registry {
    fn source(&self, component: &Component<'_>) -> Result<SourceConnector, Diagnostics> {
        Ok(match component.kind() {
            "files" => SourceConnector::Objects(Arc::new(files::FilesSource::from_component(component)?)),
            "kafka" => SourceConnector::Stream(Arc::new(kafka::KafkaSource::from_component(component)?)),
            "amqp" => SourceConnector::Stream(Arc::new(amqp::AmqpSource::from_component(component)?)),
            _ => return Err(component.unknown_kind(SOURCE_TYPES)),
        })
    }

    fn sink(
        &self,
        component: &Component<'_>,
        checkpoint: Option<&StorageLocation>,
    ) -> Result<Arc<dyn Sink>, Diagnostics> {
        Ok(match component.kind() {
            "files" => Arc::new(files::FilesSink::from_component(component)?),
            "kafka" => kafka::sink(component, checkpoint)?,
            "amqp" => amqp::sink(component, checkpoint)?,
            _ => return Err(component.unknown_kind(SINK_TYPES)),
        })
    }

    fn is_stream(&self, kind: &str) -> bool {
        matches!(kind, "kafka" | "amqp")
    }

    fn table(&self, component: &Component<'_>) -> Result<Arc<dyn sluice_engine::source::Source>, Diagnostics> {
        Ok(Arc::new(files::FilesSource::from_component(component)?))
    }

    fn dead_letters(&self, location: &StorageLocation) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(files::FilesSink::ndjson(location.clone()).map_err(|e| e.to_string())?))
    }
}
