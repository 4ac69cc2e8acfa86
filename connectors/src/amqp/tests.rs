//! The `amqp` connector's keys: the documented examples parse, and what it
//! does not know or cannot use is refused with its position, never showing
//! a password.

use sluice_engine::spec::{Diagnostics, PipelineSpec, SpecFile, parse};

use crate::Registry;

fn load(text: &str) -> Result<PipelineSpec, Diagnostics> {
    parse(SpecFile::new("/pipelines/test.toml", text), &Registry)
}

const EXAMPLE: &str = r#"
[pipeline]
name = "orders"

[source]
type = "amqp"
url = "amqp://guest:s3cret@127.0.0.1:5672/%2f"
queue = "orders"
format = "csv"
delimiter = ";"

[source.schema]
id = "int64"
country = "string"

[sink]
type = "amqp"
url = "amqp://guest:s3cret@127.0.0.1:5672/%2f"
exchange = "clean"
routing_key = "orders.clean"

[checkpoint]
url = "state"
"#;

#[test]
fn the_example_parses_with_every_key() {
    let spec = load(EXAMPLE).expect("parses");
    let source = spec.source.describe();
    assert!(source.contains(&("queue", "orders".to_string())), "{source:?}");
    assert!(source.contains(&("url", "amqp://guest:***@127.0.0.1:5672/%2f".to_string())), "{source:?}");
    assert!(source.contains(&("delimiter", "';'".to_string())), "{source:?}");
    let sink = spec.sink.describe();
    assert!(sink.contains(&("exchange", "clean".to_string())), "{sink:?}");
    assert!(!format!("{:?}", spec.sink).contains("s3cret"), "no password in Debug");
}

#[test]
fn unknown_keys_and_bad_urls_are_refused_each_with_its_place() {
    let text = EXAMPLE.replacen("queue = ", "queu = ", 1).replace("routing_key", "routing").replacen(
        "amqp://guest:s3cret@",
        "http://guest:s3cret@",
        1,
    );
    let problems = load(&text).expect_err("refused");
    let shown: Vec<String> =
        problems.0.iter().map(|p| format!("{}:{}: {}: {}", p.line, p.column, p.key_path, p.message)).collect();
    assert_eq!(shown, ["8:1: source.queu: unknown key `queu`", "20:1: sink.routing: unknown key `routing`"]);
    let text = EXAMPLE.replacen("amqp://guest:s3cret@", "http://guest:s3cret@", 1);
    let problems = load(&text).expect_err("refused");
    assert_eq!(problems.0[0].key_path, "source.url");
    assert!(problems.0[0].message.contains("\"http\""), "{problems}");
    assert!(!problems.to_string().contains("s3cret"), "{problems}");
}

#[test]
fn stream_settings_and_dispatch_are_checked_against_the_source_kind() {
    let text = format!("{EXAMPLE}\n[trigger]\nmax_files_per_batch = 3\n\n[workers]\ndispatch = \"amqp://127.0.0.1\"\n");
    let problems = load(&text).expect_err("refused");
    let paths: Vec<&str> = problems.0.iter().map(|p| p.key_path.as_str()).collect();
    assert_eq!(paths, ["trigger.max_files_per_batch", "workers.dispatch"], "{problems}");
    let files = "[pipeline]\nname = \"f\"\n[source]\ntype = \"files\"\nurl = \"in\"\nformat = \"csv\"\n\
                 [trigger]\nmax_records = 5\n[sink]\ntype = \"files\"\nurl = \"out\"\n";
    let problems = load(files).expect_err("refused");
    assert_eq!(problems.0[0].key_path, "trigger.max_records");
    assert_eq!(problems.0[0].message, "applies to kafka and amqp sources only");
}

#[test]
fn urls_are_shown_without_their_password() {
    assert_eq!(super::shown("amqp://guest:s3cret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
    assert_eq!(super::shown("amqp://127.0.0.1"), "amqp://127.0.0.1");
    assert!(!super::shown("amqp//guest:s3cret@x").contains("s3cret"));
    assert!(!super::shown("amqp:guest:s3cret@x").contains("s3cret"));
    let url = "amqp://guest:s%40cret@127.0.0.1:5672/%2f";
    let said = super::without_secrets(&format!("bad uri {url}: user guest, password s@cret"), url);
    assert!(!said.contains("s@cret") && !said.contains("s%40cret"), "{said}");
}

#[tokio::test]
async fn a_broker_that_is_not_there_is_an_external_error_without_the_password() {
    let url = "amqp://guest:s3cret@127.0.0.1:1/%2f";
    let error = super::connect(url).await.expect_err("nothing listens on port 1");
    assert_eq!(error.domain(), sluice_engine::error::Domain::External);
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("cannot connect to amqp://guest:***@127.0.0.1:1/%2f"), "{shown}");
    assert!(shown.contains("scripts/start-rabbitmq.sh") && !shown.contains("s3cret"), "{shown}");
}
