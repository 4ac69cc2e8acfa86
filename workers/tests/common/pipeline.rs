//! Pipeline files for the tests, built from the parts they share instead
//! of copied whole: a `files` source reading `inbox/` and a `files` sink
//! writing `out/`, then what each test sets.

/// A pipeline file, table by table in the order the parts were given.
#[derive(Debug, Clone)]
pub(crate) struct PipelineFile {
    tables: Vec<(String, Vec<(String, String)>)>,
}

/// The orders' columns: `id` int64, `country` string, `amount` float64.
pub(crate) const ORDERS: &[(&str, &str)] = &[("id", "int64"), ("country", "string"), ("amount", "float64")];

impl PipelineFile {
    /// Pipeline `name`, with nothing else set yet.
    pub(crate) fn new(name: &str) -> Self {
        PipelineFile { tables: Vec::new() }.text("pipeline", "name", name)
    }

    /// Pipeline `name` reading the files of `inbox/` that match `pattern`,
    /// written as Parquet to `out/`.
    pub(crate) fn files(name: &str, pattern: &str) -> Self {
        PipelineFile::new(name)
            .text("source", "type", "files")
            .text("source", "url", "inbox")
            .text("source", "pattern", pattern)
            .text("sink", "type", "files")
            .text("sink", "url", "out")
    }

    /// `inbox/*.csv` with columns `id` int64, `country` string and `amount`
    /// float64, as Parquet in `out/`: the orders most tests use.
    pub(crate) fn orders(name: &str) -> Self {
        PipelineFile::files(name, "*.csv").schema(ORDERS)
    }

    /// Orders as JSON messages from a stream source of type `kind` (its
    /// address still to set), in micro-batches of up to `max_records`
    /// closed after 200 ms, as Parquet in `out/`; leases of one second.
    pub(crate) fn stream_orders(name: &str, kind: &str, max_records: usize) -> Self {
        PipelineFile::new(name)
            .text("source", "type", kind)
            .text("source", "format", "json")
            .schema(ORDERS)
            .set("trigger", "max_records", &max_records.to_string())
            .text("trigger", "max_wait", "200ms")
            .text("transform", "sql", "SELECT id, country, amount FROM input")
            .text("sink", "type", "files")
            .text("sink", "url", "out")
            .text("workers", "lease_timeout", "1s")
    }

    /// `[workers] dispatch`: batches handed out as tasks on `queue` of the
    /// broker at `broker`.
    pub(crate) fn dispatch_to(self, broker: &str, queue: &str) -> Self {
        self.text("workers", "dispatch", broker).text("workers", "task_queue", queue)
    }

    /// `[source.schema]`: the columns in file order.
    pub(crate) fn schema(self, columns: &[(&str, &str)]) -> Self {
        self.schema_of("source.schema", columns)
    }

    /// The schema table `table` (`tables.NAME.schema`): the columns in
    /// file order.
    pub(crate) fn schema_of(mut self, table: &str, columns: &[(&str, &str)]) -> Self {
        for (column, kind) in columns {
            self = self.text(table, column, kind);
        }
        self
    }

    /// Sets `table.key` to `value`, written as TOML (`2`, `"1s"`,
    /// `["country"]`); the table is added after the others if missing.
    pub(crate) fn set(mut self, table: &str, key: &str, value: &str) -> Self {
        let at = match self.tables.iter().position(|(name, _)| name == table) {
            Some(at) => at,
            None => {
                self.tables.push((table.to_string(), Vec::new()));
                self.tables.len() - 1
            }
        };
        let keys = &mut self.tables[at].1;
        match keys.iter_mut().find(|(name, _)| name == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => keys.push((key.to_string(), value.to_string())),
        }
        self
    }

    /// Sets `table.key` to the string `value`.
    pub(crate) fn text(self, table: &str, key: &str, value: &str) -> Self {
        let quoted = serde_json::to_string(value).expect("a string");
        self.set(table, key, &quoted)
    }

    /// The file's text.
    pub(crate) fn toml(&self) -> String {
        let mut text = String::new();
        for (table, keys) in &self.tables {
            text.push_str(&format!("[{table}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text
    }
}

#[test]
fn a_pipeline_file_is_its_tables_in_order_each_key_once() {
    let file =
        PipelineFile::orders("o").set("trigger", "max_files_per_batch", "2").set("trigger", "max_files_per_batch", "3");
    assert_eq!(
        file.toml(),
        "[pipeline]\nname = \"o\"\n\n[source]\ntype = \"files\"\nurl = \"inbox\"\npattern = \"*.csv\"\n\n\
         [sink]\ntype = \"files\"\nurl = \"out\"\n\n[source.schema]\nid = \"int64\"\ncountry = \"string\"\n\
         amount = \"float64\"\n\n[trigger]\nmax_files_per_batch = 3\n\n"
    );
}
