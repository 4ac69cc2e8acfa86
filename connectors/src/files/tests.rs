//! The `files` connector's keys: the documented example parses, and a key
//! it does not know is refused with its position.

use sluice_engine::spec::{Diagnostics, PipelineSpec, SpecFile, parse};

use crate::Registry;

fn load(text: &str) -> Result<PipelineSpec, Diagnostics> {
    parse(SpecFile::new("/pipelines/test.toml", text), &Registry)
}

const EXAMPLE: &str = r#"
[pipeline]
name = "orders"
version = 3

[source]
type = "files"
url = "inbox"
pattern = "**/*.csv"
format = "csv"
header = false
delimiter = ";"

[source.schema]
id = "int64"
amount = "decimal(12,2)"

[sink]
type = "files"
url = "file:///data/out"
format = "parquet"
compression = "snappy"
partition_by = ["country", "day"]
"#;

#[test]
fn the_example_parses_with_every_key() {
    let spec = load(EXAMPLE).expect("parses");
    assert_eq!(spec.name.as_str(), "orders");
    assert_eq!(spec.version, 3);
    assert_eq!(spec.checkpoint.url().as_str(), "file:///data/out/_sluice/");
    let source: Vec<(&str, String)> = spec.source.describe();
    assert!(source.contains(&("url", "file:///pipelines/inbox/".to_string())), "{source:?}");
    assert!(source.contains(&("delimiter", "';'".to_string())), "{source:?}");
    let schema = spec.source.declared_schema().expect("declared");
    assert_eq!(schema.field(1).data_type(), &arrow::datatypes::DataType::Decimal128(12, 2));
    let sink = spec.sink.describe();
    assert!(sink.contains(&("compression", "snappy".to_string())), "{sink:?}");
    assert!(sink.contains(&("partition_by", "country, day".to_string())), "{sink:?}");
}

#[test]
fn unknown_keys_of_source_and_sink_are_refused_each_with_its_place() {
    let text = EXAMPLE.replace("header = false", "headers = false").replace("compression", "compresion");
    let problems = load(&text).expect_err("refused");
    let shown: Vec<String> =
        problems.0.iter().map(|p| format!("{}:{}: {}: {}", p.line, p.column, p.key_path, p.message)).collect();
    assert_eq!(
        shown,
        ["11:1: source.headers: unknown key `headers`", "22:1: sink.compresion: unknown key `compresion`"]
    );
    assert_eq!(problems.0[0].hint.as_deref(), Some("did you mean `header`?"));
}

#[test]
fn format_comes_from_the_pattern_when_not_given() {
    let text = EXAMPLE.replace("format = \"csv\"\n", "").replace("header = false\ndelimiter = \";\"\n", "");
    let spec = load(&text).expect("parses");
    assert!(spec.source.describe().contains(&("format", "csv".to_string())));
    let problems = load(&text.replace("**/*.csv", "*")).expect_err("no format");
    assert_eq!(problems.0[0].key_path, "source.format");
}

#[tokio::test]
async fn an_input_rewritten_after_listing_is_reported_as_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("inbox")).expect("inbox");
    std::fs::write(dir.path().join("inbox/a.csv"), "id\n1\n").expect("write");
    let text = "[pipeline]\nname = \"p\"\n[source]\ntype = \"files\"\nurl = \"inbox\"\nformat = \"csv\"\n\
                [sink]\ntype = \"files\"\nurl = \"out\"\n";
    let spec = parse(SpecFile::new(dir.path().join("p.toml"), text), &Registry).expect("parses");
    let source = spec.source.objects().expect("files");
    let inputs = source.discover().await.expect("lists");
    assert_eq!(inputs.len(), 1);
    source.verify(&inputs).await.expect("unchanged so far");

    std::fs::write(dir.path().join("inbox/a.csv"), "id\n2\n").expect("same size, new content");
    let changed = source.verify(&inputs).await.expect_err("rewritten");
    assert!(matches!(changed, sluice_engine::Error::InputChanged { ref path, .. } if path == "a.csv"), "{changed}");
    std::fs::remove_file(dir.path().join("inbox/a.csv")).expect("remove");
    let gone = source.verify(&inputs).await.expect_err("gone");
    assert!(gone.to_string().contains("no longer exists"), "{gone}");
}
