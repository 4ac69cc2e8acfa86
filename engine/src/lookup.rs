//! Lookup tables: `[tables.NAME]`, reference data (country names, price
//! lists, customer tiers) registered beside `input` for the SQL, so that
//! a transform can `JOIN countries USING (country)`.
//!
//! A table is a folder or bucket prefix of files, read as a files source
//! reads its input (`url`, `pattern`, `format`, `[tables.NAME.schema]`).
//! It is listed for every batch and read again only when its objects
//! changed: a process keeps the rows of the version it read last, keyed by
//! the objects' paths, sizes, entity tags and modification times. A table
//! that lists no object, holds no row, cannot be read, or holds a record
//! that does not fit its schema, fails the batch with the table's name: a
//! join never runs against nothing. The version each batch used is recorded in its commit.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

pub use crate::model::{TableObject, TableVersions};
use crate::source::Source;
use crate::{Error, Result};

/// One `[tables.NAME]`.
#[derive(Clone)]
pub struct LookupTable {
    /// The name the SQL knows it by.
    pub name: String,
    /// Its files, read as a files source reads them.
    pub source: Arc<dyn Source>,
}

impl std::fmt::Debug for LookupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupTable").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A table's rows as last read, and the objects (with their modification
/// times) they were read from.
type Cached = (Vec<(TableObject, i64)>, Arc<MemTable>);

/// The rows of each table as last read in this process, by the table's
/// location and name.
static CACHE: LazyLock<Mutex<HashMap<String, Cached>>> = LazyLock::new(Mutex::default);

/// Registers every table in `ctx` under its name, reading the ones whose
/// objects changed since this process last read them, and returns the
/// version of each.
pub async fn register_all(tables: &[LookupTable], ctx: &SessionContext) -> Result<TableVersions> {
    let mut versions = TableVersions::new();
    for table in tables {
        let (version, rows) = current(table, ctx).await?;
        ctx.register_table(table.name.as_str(), rows)?;
        versions.insert(table.name.clone(), version);
    }
    Ok(versions)
}

/// The table's current version and rows: from the cache when its listing
/// is the one read last.
async fn current(table: &LookupTable, ctx: &SessionContext) -> Result<(Vec<TableObject>, Arc<MemTable>)> {
    let failed = |why: String| Error::Table { name: table.name.clone(), reason: why, retryable: false };
    // A store that fails for a while is tried again as any read is.
    let failed_by = |error: Error| Error::Table {
        name: table.name.clone(),
        retryable: error.is_retryable(),
        reason: error.to_string(),
    };
    let mut listed = table.source.discover().await.map_err(failed_by)?;
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    if listed.is_empty() {
        return Err(failed(format!(
            "no file at {} matches its pattern; a join would run against nothing",
            location_of(table.source.as_ref())
        )));
    }
    let version: Vec<TableObject> = listed.iter().map(TableObject::of).collect();
    // Rows are shared only between tables read the same way (location,
    // pattern, format, schema) from the same objects; the modification
    // times tell a rewrite apart where a store gives no entity tag.
    let key = format!("{}\0{:?}", table.name, table.source.describe());
    let seen: Vec<(TableObject, i64)> =
        listed.iter().map(|input| (TableObject::of(input), input.last_modified.timestamp_micros())).collect();
    if let Some((cached, rows)) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && *cached == seen
    {
        return Ok((version, rows.clone()));
    }
    let input = table.source.read(&ctx.state(), &listed).await.map_err(failed_by)?;
    let frame = ctx.read_table(input.table).map_err(|e| failed_by(e.into()))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| failed_by(e.into()))?;
    let rejected = input.tally.take_rejected();
    input.tally.finish().await.map_err(|e| failed(e.to_string()))?;
    if input.tally.rejected() > 0 {
        let first = rejected.first().map(|r| format!(": {} {}", r.source, r.error)).unwrap_or_default();
        return Err(failed(format!(
            "{} record(s) do not fit its schema{first}; reference data is read whole or not at all",
            input.tally.rejected()
        )));
    }
    if batches.iter().all(|batch| batch.num_rows() == 0) {
        return Err(failed(format!(
            "its files at {} hold no rows; a join would run against nothing",
            location_of(table.source.as_ref())
        )));
    }
    let rows = Arc::new(MemTable::try_new(schema, vec![batches]).map_err(|e| failed(e.to_string()))?);
    tracing::debug!(table = table.name, objects = version.len(), "lookup table read");
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (seen, rows.clone()));
    Ok((version, rows))
}

/// The `url` a source describes itself by.
fn location_of(source: &dyn Source) -> String {
    source.describe().into_iter().find(|(key, _)| *key == "url").map(|(_, url)| url).unwrap_or_default()
}
