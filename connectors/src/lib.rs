//! The connectors of sluice: the sources and sinks a pipeline file names
//! by `type`, each in a module of its own, registered in one list.

pub mod files;

use std::sync::Arc;

use sluice_engine::sink::Sink;
use sluice_engine::source::Source;
use sluice_engine::spec::{Component, ConnectorRegistry, Diagnostics};
use sluice_engine::storage::StorageLocation;

/// The source types, as written in `[source] type`.
pub const SOURCE_TYPES: &[&str] = &["files"];
/// The sink types, as written in `[sink] type`.
pub const SINK_TYPES: &[&str] = &["files"];

/// Every connector sluice has, by `type`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

impl ConnectorRegistry for Registry {
    fn source(&self, component: &Component<'_>) -> Result<Arc<dyn Source>, Diagnostics> {
        match component.kind() {
            "files" => Ok(Arc::new(files::FilesSource::from_component(component)?)),
            _ => Err(component.unknown_kind(SOURCE_TYPES)),
        }
    }

    fn sink(&self, component: &Component<'_>) -> Result<Arc<dyn Sink>, Diagnostics> {
        match component.kind() {
            "files" => Ok(Arc::new(files::FilesSink::from_component(component)?)),
            _ => Err(component.unknown_kind(SINK_TYPES)),
        }
    }

    fn dead_letters(&self, location: &StorageLocation) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(files::FilesSink::ndjson(location.clone()).map_err(|e| e.to_string())?))
    }
}
