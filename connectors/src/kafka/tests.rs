//! The `kafka` connector's keys: the documented examples parse, and what
//! it does not know or cannot use is refused with its position.

use sluice_engine::spec::{Diagnostics, PipelineSpec, SpecFile, parse};

use crate::Registry;

fn load(text: &str) -> Result<PipelineSpec, Diagnostics> {
    parse(SpecFile::new("/pipelines/test.toml", text), &Registry)
}

fn shown(problems: &Diagnostics) -> Vec<String> {
    problems.0.iter().map(|p| format!("{}:{}: {}: {}", p.line, p.column, p.key_path, p.message)).collect()
}

const SOURCE: &str = r#"
[pipeline]
name = "orders"

[source]
type = "kafka"
brokers = "127.0.0.1:9092,127.0.0.2:9092"
topic = "orders"
group = "sluice-orders"
start = "latest"
format = "json"
options = { "fetch.max.bytes" = "1048576" }

[source.schema]
id = "int64"

[trigger]
max_records = 500
max_wait = "250ms"
max_bytes = "8MiB"

[sink]
type = "files"
url = "out"
"#;

const SINK: &str = r#"
[pipeline]
name = "republish"

[source]
type = "files"
url = "inbox"
pattern = "*.json"

[sink]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "orders.clean"
key = "id"
options = { "compression.type" = "zstd" }

[checkpoint]
url = "state"
"#;

#[test]
fn the_source_example_parses_with_every_key() {
    let spec = load(SOURCE).expect("parses");
    let stream = spec.source.stream().expect("a stream source");
    let lines = stream.describe();
    assert!(lines.contains(&("topics", "orders".to_string())), "{lines:?}");
    assert!(lines.contains(&("start", "latest".to_string())), "{lines:?}");
    assert!(lines.contains(&("option", "fetch.max.bytes = 1048576".to_string())), "{lines:?}");
    let limits = spec.trigger.micro_batch();
    assert_eq!((limits.max_records, limits.max_wait.as_millis(), limits.max_bytes), (500, 250, 8 << 20));
    assert!(spec.source.declared_schema().is_some());
}

#[test]
fn the_sink_example_parses_with_every_key() {
    let spec = load(SINK).expect("parses");
    let lines = spec.sink.describe();
    assert!(lines.contains(&("topic", "orders.clean".to_string())), "{lines:?}");
    assert!(lines.contains(&("key", "id".to_string())), "{lines:?}");
    assert_eq!(spec.checkpoint.url().as_str(), "file:///pipelines/state/");
}

#[test]
fn unknown_and_misplaced_keys_are_refused_each_with_its_place() {
    let text = SOURCE
        .replace("group = ", "groop = ")
        .replace("\"fetch.max.bytes\"", "\"group.id\"")
        .replace("max_records = 500", "max_files_per_batch = 5");
    let problems = load(&text).expect_err("refused");
    assert_eq!(
        shown(&problems),
        ["9:1: source.groop: unknown key `groop`", "18:1: trigger.max_files_per_batch: applies to files sources only"]
    );
    assert_eq!(problems.0[0].hint.as_deref(), Some("did you mean `group`?"));

    let text =
        SOURCE.replace("\"fetch.max.bytes\"", "\"group.id\"").replace("max_records = 500", "max_files_per_batch = 5");
    let shown = shown(&load(&text).expect_err("refused"));
    assert_eq!(
        shown,
        [
            "12:11: source.options: \"group.id\" is set by sluice",
            "18:1: trigger.max_files_per_batch: applies to files sources only",
        ]
    );
}

#[test]
fn topics_brokers_and_formats_are_checked() {
    let problems =
        load(&SOURCE.replace("topic = \"orders\"", "topics = []").replace("9092,", "x,")).expect_err("refused");
    assert_eq!(
        shown(&problems),
        ["7:11: source.brokers: \"127.0.0.1:x\" is not host:port", "8:10: source.topics: names no topic"]
    );
    let both = load(&SOURCE.replace("topic = \"orders\"", "topic = \"a\"\ntopics = [\"b\"]")).expect_err("refused");
    assert_eq!(both.0[0].message, "give `topic` or `topics`, not both");
    let csv =
        load(&SOURCE.replace("format = \"json\"", "format = \"csv\"").replace("[source.schema]\nid = \"int64\"\n", ""))
            .expect_err("refused");
    assert!(csv.0[0].message.contains("csv messages have no header"), "{csv}");
    let raw = load(&SOURCE.replace("format = \"json\"", "format = \"raw\"")).expect_err("refused");
    assert_eq!(raw.0[0].key_path, "source.schema");
}

#[test]
fn a_kafka_sink_needs_a_checkpoint_url_and_a_known_key_column() {
    let problems = load(&SINK.replace("[checkpoint]\nurl = \"state\"\n", "")).expect_err("refused");
    assert!(problems.0[0].message.contains("[checkpoint] url"), "{problems}");
    assert_eq!(
        problems.0[0].hint.as_deref(),
        Some("add [checkpoint] url = \"<a folder or bucket URL>\""),
        "{problems}"
    );
}

/// librdkafka refuses, at client creation, a security protocol or a SASL
/// mechanism it was built without: every one sluice documents is there.
#[test]
fn the_kafka_client_is_built_with_tls_and_sasl_plain_and_scram() {
    use rdkafka::consumer::BaseConsumer;
    let settings: [&[(&str, &str)]; 5] = [
        &[("security.protocol", "ssl")],
        &[("security.protocol", "sasl_ssl"), ("sasl.mechanism", "PLAIN")],
        &[("security.protocol", "sasl_plaintext"), ("sasl.mechanism", "SCRAM-SHA-256")],
        &[("security.protocol", "sasl_ssl"), ("sasl.mechanism", "SCRAM-SHA-512")],
        &[("security.protocol", "ssl"), ("ssl.endpoint.identification.algorithm", "https")],
    ];
    for setting in settings {
        let mut options: std::collections::BTreeMap<String, String> =
            setting.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if options.contains_key("sasl.mechanism") {
            options.insert("sasl.username".into(), "sluice".into());
            options.insert("sasl.password".into(), "not-a-real-password".into());
        }
        let config = super::client_config("127.0.0.1:1", &[("group.id", "g")], &options);
        if let Err(error) = config.create::<BaseConsumer>() {
            panic!("librdkafka refuses {setting:?}: {error}");
        }
    }
    // And a mechanism it has no provider for is refused, so the check above means something.
    let options = [("security.protocol", "sasl_plaintext"), ("sasl.mechanism", "NO-SUCH-MECHANISM")];
    let options = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert!(super::client_config("127.0.0.1:1", &[("group.id", "g")], &options).create::<BaseConsumer>().is_err());
}
