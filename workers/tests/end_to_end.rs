//! The `sluice` binary on real folders: files in, Parquet out, exactly once.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{PipelineFile, Ran, Workspace, parquet_rows, printed, rows, run, snapshot, visible_files};

/// CSV orders from `inbox/` (id, country, amount) as Parquet in `out/`.
fn orders() -> PipelineFile {
    PipelineFile::orders("orders").text("source", "format", "csv")
}

#[test]
fn csv_becomes_parquet_once_and_only_new_files_are_added() {
    let ws = Workspace::new();
    ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,10.5\n2,DE,20\n");
    ws.write("inbox/b.csv", "id,country,amount\n3,US,30.25\n");

    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in, summary.rows_out), (2, 3, 3), "{summary:?}");
    let (columns, found) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "country", "amount"]);
    assert_eq!(found, rows(&["1|FR|10.5", "2|DE|20.0", "3|US|30.25"]));

    let before = snapshot(&ws.path("out"));
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files), (0, 0), "a rerun does nothing: {summary:?}");
    assert_eq!(snapshot(&ws.path("out")), before, "a rerun leaves the output as it was");

    ws.write("inbox/c.csv", "id,country,amount\n4,JP,40\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files, summary.rows_in, summary.rows_out), (1, 1, 1, 1), "{summary:?}");
    let after = snapshot(&ws.path("out"));
    for (path, state) in &before {
        assert_eq!(after.get(path), Some(state), "{path:?} was not touched");
    }
    assert_eq!(after.len(), before.len() + 1);
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|FR|10.5", "2|DE|20.0", "3|US|30.25", "4|JP|40.0"]));
}

#[test]
fn output_names_come_from_the_batch_id_and_nothing_else_is_visible() {
    let ws = Workspace::new();
    ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    ws.write("inbox/_partial.csv", "id,country,amount\n99,XX,0\n");
    ws.write("inbox/.hidden.csv", "id,country,amount\n98,XX,0\n");
    ws.write("inbox/notes.txt", "not a csv\n");
    ws.run_until_caught_up();

    let files = visible_files(&ws.path("out"));
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().expect("name").to_string_lossy().into_owned();
    assert!(
        name.starts_with("part-")
            && name.ends_with("-0.parquet")
            && name.len() == "part-".len() + 32 + "-0.parquet".len(),
        "{name}"
    );
    let committed: Vec<serde_json::Value> = std::fs::read_dir(ws.path("out/_sluice/log"))
        .expect("log folder")
        .map(|entry| serde_json::from_slice(&std::fs::read(entry.expect("entry").path()).expect("read")).expect("json"))
        .filter(|record: &serde_json::Value| record["kind"] == "committed")
        .collect();
    assert_eq!(committed.len(), 1);
    let batch_id = committed[0]["batch_id"].as_str().expect("batch id");
    assert_eq!(name, format!("part-{batch_id}-0.parquet"), "the output is named from the committed batch id");
    assert_eq!(committed[0]["staged"]["outputs"][0]["path"], name.as_str(), "the commit lists the output");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|FR|1.0"]), "files starting with _ or . and non-matching names are not read");
    assert!(!ws.path("out/_sluice/staging").exists() || visible_files(&ws.path("out/_sluice/staging")).is_empty());
}

#[test]
fn batches_respect_the_file_limit() {
    let ws = Workspace::new();
    ws.pipeline(&orders().set("trigger", "max_files_per_batch", "1").toml());
    for i in 0..3 {
        ws.write(&format!("inbox/{i}.csv"), &format!("id,country,amount\n{i},FR,1\n"));
    }
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files), (3, 3), "{summary:?}");
    assert_eq!(visible_files(&ws.path("out")).len(), 3);
}

#[test]
fn a_file_replaced_with_new_content_is_new_input() {
    let ws = Workspace::new();
    ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    ws.run_until_caught_up();
    // Grown, its first bytes unchanged: an append, of which only the new
    // row is read (`on_change = "append"`, the default).
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n2,DE,2\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files, summary.rows_in), (1, 1, 1), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|FR|1.0", "2|DE|2.0"]), "the appended row, once");

    // Same size, other content: a new version, read whole.
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n2,DE,3\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.files, summary.rows_in), (1, 1, 2), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|FR|1.0", "1|FR|1.0", "2|DE|2.0", "2|DE|3.0"]));
}

#[test]
fn quoted_commas_quotes_newlines_and_utf8_survive() {
    let ws = Workspace::new();
    ws.pipeline(&PipelineFile::files("quoting", "*.csv").toml());
    ws.write(
        "inbox/tricky.csv",
        "id,name,note\n\
         1,\"O'Brien, Pat\",\"said \"\"hi\"\"\"\n\
         2,Zoë Kravitz,\"two\nlines\"\n\
         3,李雷,\"\"\n\
         4,Søren,\"a,b,c\"\n",
    );
    ws.run_until_caught_up();
    let (columns, found) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "name", "note"]);
    let expected: Vec<Vec<String>> = vec![
        vec!["1".into(), "O'Brien, Pat".into(), "said \"hi\"".into()],
        vec!["2".into(), "Zoë Kravitz".into(), "two\nlines".into()],
        vec!["3".into(), "李雷".into(), "".into()],
        vec!["4".into(), "Søren".into(), "a,b,c".into()],
    ];
    assert_eq!(found, expected);
}

#[test]
fn partition_by_writes_hive_folders_without_the_column() {
    let ws = Workspace::new();
    ws.pipeline(&orders().set("sink", "partition_by", r#"["country"]"#).toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n2,DE,2\n3,FR,3\n4,,4\n");
    ws.run_until_caught_up();

    let files = visible_files(&ws.path("out"));
    let folders: Vec<String> = files
        .iter()
        .map(|f| f.parent().expect("folder").file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders, ["country=DE", "country=FR", "country=__HIVE_DEFAULT_PARTITION__"]);
    let (columns, found) = parquet_rows(&ws.path("out"));
    assert_eq!(columns, ["id", "amount", "country"], "the partition column lives in the folder name only");
    assert_eq!(found, rows(&["1|1.0|FR", "2|2.0|DE", "3|3.0|FR", "4|4.0|__HIVE_DEFAULT_PARTITION__"]));
}

#[test]
fn ndjson_through_sql_to_csv() {
    let ws = Workspace::new();
    ws.pipeline(
        &PipelineFile::files("events", "*.json")
            .text(
                "transform",
                "sql",
                "SELECT user, count(*) AS clicks FROM input WHERE kind = 'click' GROUP BY user ORDER BY user",
            )
            .text("sink", "format", "csv")
            .toml(),
    );
    ws.write(
        "inbox/e.json",
        "{\"user\":\"ann\",\"kind\":\"click\"}\n{\"user\":\"bob\",\"kind\":\"view\"}\n\
         {\"user\":\"ann\",\"kind\":\"click\"}\n{\"user\":\"bob\",\"kind\":\"click\"}\n",
    );
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.rows_in, summary.rows_out), (4, 2), "{summary:?}");
    let files = visible_files(&ws.path("out"));
    assert_eq!(files.len(), 1);
    assert!(files[0].to_string_lossy().ends_with("-0.csv"));
    assert_eq!(std::fs::read_to_string(&files[0]).expect("csv"), "user,clicks\nann,2\nbob,1\n");
}

#[test]
fn status_reads_the_log() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n2,DE,2\n");
    ws.run_until_caught_up();
    ws.write("inbox/b.csv", "id,country,amount\n3,US,3\n");

    let output = run(&["status", &pipeline, "--json"]);
    assert!(output.status.success(), "{}", printed(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["pipeline"], "orders");
    assert_eq!(status["committed_batches"], 1);
    assert_eq!(status["pending_batches"], 0);
    assert_eq!(status["new_files"], 1);
    assert_eq!(status["rows_written"], 2);
    assert!(status["last_commit_at"].is_string());

    let output = run(&["status", &pipeline]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("committed_batches  1"), "{text}");
}

#[test]
fn a_batch_that_fails_leaves_nothing_visible_and_a_fixed_input_is_new_input() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        &orders()
            .text("transform", "sql", "SELECT id, country, amount + 1 / (id - 1) AS amount FROM input")
            .set("workers", "max_attempts", "1")
            .toml(),
    );
    ws.write("inbox/bad.csv", "id,country,amount\n1,FR,5\n");
    let output = run(&["run", &pipeline, "--until-caught-up", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Divide by zero"), "the error says what is wrong: {stderr}");
    assert_eq!(Ran::of(&output).failed_batches, 1, "{}", printed(&output));
    assert!(visible_files(&ws.path("out")).is_empty(), "no partial output");

    let output = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!((status["failed_batches"].as_u64(), status["pending_batches"].as_u64()), (Some(1), Some(0)));
    assert_eq!(status["committed_batches"], 0);

    // Fixed in place: the new version is new input, read once. The failed
    // batch, retried, finds its input changed and is abandoned.
    ws.write("inbox/bad.csv", "id,country,amount\n2,FR,5\n");
    let output = run(&["run", &pipeline, "--until-caught-up", "--json"]);
    let ran = Ran::of(&output);
    assert_eq!((ran.batches, ran.files, ran.rows_in, ran.failed_batches), (1, 1, 1, 1), "{ran:?}");
    assert_eq!(output.status.code(), Some(1), "a failed batch waits for a retry: {}", printed(&output));
    let retry = run(&["retry", &pipeline, "--failed"]);
    assert!(retry.status.success(), "{}", printed(&retry));
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.batches, summary.abandoned), (0, 1), "{summary:?}");
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["2|FR|6.0"]));
    let output = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!((status["pending_batches"].as_u64(), status["abandoned_batches"].as_u64()), (Some(0), Some(1)));
}

#[test]
fn environment_values_are_substituted_and_never_printed() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        r#"
[pipeline]
name = "secrets"

[source]
type = "files"
url = "${env:SLUICE_TEST_INBOX}"
format = "csv"
delimiter = "${env:SLUICE_TEST_SECRET}"

[sink]
type = "files"
url = "out"
"#,
    );
    let output = common::sluice()
        .args(["validate", &pipeline])
        .env("SLUICE_TEST_INBOX", ws.path("inbox"))
        .env("SLUICE_TEST_SECRET", "hunter2-very-secret")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let all = printed(&output);
    assert!(!all.contains("hunter2-very-secret"), "the value leaked: {all}");
    assert!(all.contains("source.delimiter") && all.contains("${env:SLUICE_TEST_SECRET}"), "{all}");

    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline).expect("read").replace("delimiter = \"${env:SLUICE_TEST_SECRET}\"\n", ""),
    )
    .expect("write");
    ws.write("inbox/a.csv", "id\n7\n");
    let output = common::sluice()
        .args(["run", &pipeline, "--until-caught-up"])
        .env("SLUICE_TEST_INBOX", ws.path("inbox"))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["7"]));
}

#[test]
fn explain_shows_settings_columns_and_plan() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().text("transform", "sql", "SELECT id FROM input WHERE amount > 1").toml());
    let output = run(&["explain", &pipeline]);
    assert!(output.status.success(), "{}", printed(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in
        ["name = orders", "format = csv", "declared in [source.schema]", "amount Float64", "physical plan:", "Filter"]
    {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }
}

#[test]
fn sigterm_finishes_and_prints_the_summary() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().text("trigger", "poll_interval", "50ms").toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    let child = common::sluice()
        .args(["run", &pipeline])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");

    let deadline = Instant::now() + Duration::from_secs(30);
    while visible_files(&ws.path("out")).is_empty() {
        assert!(Instant::now() < deadline, "the first file was not processed in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    ws.write("inbox/b.csv", "id,country,amount\n2,DE,2\n");
    while visible_files(&ws.path("out")).len() < 2 {
        assert!(Instant::now() < deadline, "a file dropped while running was not processed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("exits");
    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("2 batches, 2 files, 2 rows in, 2 rows out"),
        "{}",
        printed(&output)
    );
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR|1.0", "2|DE|2.0"]));
}

#[test]
fn a_missing_source_folder_is_an_error_that_names_it() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().text("source", "url", "inbox-typo").toml());
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("inbox-typo does not exist"), "{stderr}");
}

#[test]
fn decimal_literals_are_exact() {
    let ws = Workspace::new();
    ws.pipeline(
        &PipelineFile::new("money")
            .text("source", "type", "files")
            .text("source", "url", "inbox")
            .text("source", "format", "csv")
            .schema(&[("id", "int64"), ("price", "decimal(10,2)")])
            .text(
                "transform",
                "sql",
                "SELECT id, 0.1 + 0.2 AS tenths, CAST(price * 1.20 AS DECIMAL(10, 2)) AS gross FROM input",
            )
            .text("sink", "type", "files")
            .text("sink", "url", "out")
            .text("sink", "format", "csv")
            .toml(),
    );
    ws.write("inbox/a.csv", "id,price\n1,0.35\n2,19.99\n");
    ws.run_until_caught_up();
    let files = visible_files(&ws.path("out"));
    let text = std::fs::read_to_string(&files[0]).expect("csv");
    assert_eq!(text, "id,tenths,gross\n1,0.3,0.42\n2,0.3,23.99\n");
}

#[test]
fn file_names_with_url_characters_are_read_as_named() {
    let ws = Workspace::new();
    ws.pipeline(&orders().toml());
    ws.write("inbox/week #1 100%41 ?.csv", "id,country,amount\n1,FR,1\n");
    ws.write("inbox/A.csv", "id,country,amount\n2,DE,2\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (2, 2), "{summary:?}");
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR|1.0", "2|DE|2.0"]));
}

#[test]
fn validate_checks_the_sql_syntax_before_there_is_input() {
    let ws = Workspace::new();
    let inferred = PipelineFile::files("orders", "*.csv").text("source", "format", "csv");
    let pipeline = ws.pipeline(&inferred.clone().text("transform", "sql", "SELEC id FROM input").toml());
    let output = run(&["validate", &pipeline]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("transform.sql: the SQL does not parse"),
        "{}",
        printed(&output)
    );

    let pipeline = ws.pipeline(&inferred.clone().text("transform", "sql", "SELECT id FROM input").toml());
    let output = run(&["validate", &pipeline]);
    assert!(output.status.success(), "{}", printed(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (the SQL parses;"), "{}", printed(&output));

    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    let pipeline = ws.pipeline(&inferred.text("transform", "sql", "SELECT nope FROM input").toml());
    let output = run(&["validate", &pipeline]);
    assert_eq!(output.status.code(), Some(2), "with a file present the SQL is planned: {}", printed(&output));
}

#[test]
fn explain_and_status_never_show_environment_values() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("in box secret-dir")).expect("folder");
    ws.write("in box secret-dir/a.csv", "id,country,amount\n1,FR,1\n");
    let pipeline = ws.pipeline(
        &orders()
            .text("source", "url", "${env:SLUICE_TEST_DIR}")
            .text("transform", "sql", "SELECT id, '${env:SLUICE_TEST_TOKEN}' AS token FROM input")
            .toml(),
    );
    for command in ["explain", "status", "run"] {
        let mut args = vec![command, pipeline.as_str()];
        if command == "run" {
            args.push("--until-caught-up");
        }
        let output = common::sluice()
            .args(&args)
            .env("SLUICE_TEST_DIR", ws.path("in box secret-dir"))
            .env("SLUICE_TEST_TOKEN", "tok-7f3a9c")
            .env("SLUICE_LOG", "debug")
            .output()
            .expect("runs");
        assert!(output.status.success(), "{}", printed(&output));
        let all = printed(&output);
        assert!(!all.contains("tok-7f3a9c"), "{command} printed the token:\n{all}");
        assert!(!all.contains("secret-dir") && !all.contains("secret%2Ddir"), "{command} printed the folder:\n{all}");
    }
    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(found, rows(&["1|tok-7f3a9c"]), "the values were used");
}

/// The orders joined with a lookup table of country names in
/// `reference/`, then `extra` (TOML).
fn with_countries(extra: &str) -> String {
    let file = orders()
        .text("tables.countries", "url", "reference")
        .text("tables.countries", "pattern", "*.csv")
        .text("tables.countries", "format", "csv")
        .schema_of("tables.countries.schema", &[("country", "string"), ("name", "string")])
        .text("transform", "sql", "SELECT id, country, name, amount FROM input LEFT JOIN countries USING (country)");
    format!("{}{extra}", file.toml())
}

/// The `tables` of each commit record in the log, in log order.
fn committed_tables(log: &std::path::Path) -> Vec<serde_json::Value> {
    let mut records: Vec<_> = std::fs::read_dir(log).expect("log").map(|e| e.expect("entry").path()).collect();
    records.sort();
    records
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).expect("read")).expect("json"))
        .filter(|record| record["kind"] == "committed")
        .map(|record| record["tables"].clone())
        .collect()
}

#[test]
fn a_lookup_table_is_joined_and_read_again_when_it_changes() {
    let ws = Workspace::new();
    ws.write("reference/countries.csv", "country,name\nFR,France\nDE,Germany\n");
    let pipeline = ws.pipeline(&with_countries(""));
    let validated = run(&["validate", &pipeline]);
    assert!(validated.status.success(), "{}", printed(&validated));
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,5\n2,JP,7\n");
    // One process throughout: the table read at the first batch is read
    // again when its file changes.
    let mut controller = common::sluice()
        .args(["run", &pipeline])
        .env("SLUICE_LOG", "warn,sluice_engine::lookup=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let wait_for_outputs = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while visible_files(&ws.path("out")).len() < n {
            assert!(Instant::now() < deadline, "timed out waiting for {n} outputs");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for_outputs(1);
    // Each file lands whole: one listed half-written would be a batch of its own.
    ws.land("inbox/b.csv", "id,country,amount\n3,DE,1\n");
    wait_for_outputs(2);
    let new_version = "country,name\nFR,France\nDE,Deutschland\nJP,Japan\n";
    ws.land("reference/countries.csv", new_version);
    ws.land("inbox/c.csv", "id,country,amount\n4,DE,2\n5,JP,3\n");
    wait_for_outputs(3);
    let _ = controller.kill();
    let _ = controller.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut controller.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert_eq!(stderr.matches("lookup table read").count(), 2, "read at the first batch and once changed:\n{stderr}");

    let (_, found) = parquet_rows(&ws.path("out"));
    assert_eq!(
        found,
        rows(&["1|FR|France|5.0", "2|JP||7.0", "3|DE|Germany|1.0", "4|DE|Deutschland|2.0", "5|JP|Japan|3.0"])
    );
    // Each commit names the version of the table it joined with.
    let tables = committed_tables(&ws.path("out/_sluice/log"));
    assert_eq!(tables.len(), 3, "{tables:?}");
    let object = |t: &serde_json::Value| t["countries"][0].clone();
    assert_eq!(object(&tables[0])["path"], "countries.csv");
    assert_eq!(object(&tables[0]), object(&tables[1]), "the same version");
    assert_ne!(object(&tables[1]), object(&tables[2]), "the new version");
    assert_eq!(object(&tables[2])["size"], new_version.len());
}

#[test]
fn a_missing_lookup_table_fails_the_batch_with_its_name() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&with_countries("[workers]\nmax_attempts = 1\n"));
    std::fs::create_dir_all(ws.path("reference")).expect("folder");
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,5\n");
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lookup table `countries` ([tables.countries]): no file at "), "{stderr}");
    assert!(visible_files(&ws.path("out")).is_empty(), "nothing joined against nothing");
    let status = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["failed_batches"], 1, "{status}");

    // A table of a header and no row is no table either.
    ws.write("reference/countries.csv", "country,name\n");
    assert!(run(&["retry", &pipeline, "--failed"]).status.success());
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hold no rows"), "{}", printed(&output));

    // Once the table is there, the batch retried joins with it.
    ws.write("reference/countries.csv", "country,name\nFR,France\n");
    assert!(run(&["retry", &pipeline, "--failed"]).status.success());
    ws.run_until_caught_up();
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR|France|5.0"]));
}

#[test]
fn lookup_tables_are_checked_with_the_pipeline() {
    let ws = Workspace::new();
    ws.write("reference/countries.csv", "country,name\nFR,France\n");
    // The SQL is planned over the table's declared columns.
    let pipeline = ws.pipeline(&with_countries("").replace("SELECT id, country, name,", "SELECT id, country, nom,"));
    let output = run(&["validate", &pipeline]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("transform.sql: the SQL does not plan") && stderr.contains("nom"), "{stderr}");
    // A name the SQL cannot use, and the input's own.
    for (name, place) in [("Countries", "tables.Countries"), ("input", "tables.input")] {
        let text = with_countries("").replace("[tables.countries", &format!("[tables.{name}"));
        let line = 1 + text.lines().position(|l| l == format!("[tables.{name}]")).expect("the table's header");
        let pipeline = ws.pipeline(&text);
        let output = run(&["validate", &pipeline]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
        assert!(stderr.contains(&format!("pipeline.toml:{line}:9: {place}: names a lookup table")), "{stderr}");
    }
}

#[test]
fn the_compression_level_is_the_one_asked_for() {
    // The same compressible rows at zstd 1 and at zstd 19: the same rows
    // back, the higher level in fewer bytes.
    let mut sizes = Vec::new();
    let mut text = String::from("id,country,amount\n");
    for id in 0..20_000 {
        text.push_str(&format!("{id},{},{}.5\n", ["FR", "DE", "JP"][id % 3], id % 1000));
    }
    for level in [1, 19] {
        let ws = Workspace::new();
        ws.write("inbox/a.csv", &text);
        let pipeline = ws.pipeline(
            &orders().text("sink", "compression", "zstd").set("sink", "compression_level", &level.to_string()).toml(),
        );
        let explained = run(&["explain", &pipeline]);
        assert!(String::from_utf8_lossy(&explained.stdout).contains(&format!("compression_level = {level}\n")));
        ws.run_until_caught_up();
        let (_, rows) = parquet_rows(&ws.path("out"));
        assert_eq!(rows.len(), 20_000);
        sizes.push(
            visible_files(&ws.path("out")).iter().map(|f| std::fs::metadata(f).expect("size").len()).sum::<u64>(),
        );
    }
    assert!(sizes[1] < sizes[0], "zstd 19 writes fewer bytes than zstd 1: {sizes:?}");
}

/// The summary `sluice run --json` prints, parsed.
fn run_json(pipeline: &str) -> (Option<i32>, serde_json::Value) {
    let output = run(&["run", pipeline, "--until-caught-up", "--json"]);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", printed(&output)));
    (output.status.code(), report)
}

#[test]
fn run_json_prints_the_summary_as_one_object_with_the_exit_code() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,10.5\nnot-a-number,DE,20\n");
    ws.write("inbox/b.csv", "id,country,amount\n3,US,30.25\n");
    let (code, report) = run_json(&pipeline);
    assert_eq!(code, Some(0), "{report}");
    for (field, value) in [
        ("batches", 1),
        ("files", 2),
        ("rows_in", 3),
        ("rows_out", 2),
        ("dead_letters", 1),
        ("failed_batches", 0),
        ("exit_code", 0),
    ] {
        assert_eq!(report[field], value, "{field}: {report}");
    }
    assert_eq!(report["pipeline"], "orders", "{report}");
    assert!(report["elapsed_s"].as_f64().is_some_and(|s| s >= 0.0), "{report}");

    let (code, report) = run_json(&pipeline);
    assert_eq!((code, report["batches"].as_u64(), report["files"].as_u64()), (Some(0), Some(0), Some(0)), "{report}");
}

#[test]
fn a_run_that_leaves_a_failed_batch_exits_1_and_counts_it() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        &orders()
            .text("transform", "sql", "SELECT id, 1 / (id - 1) AS amount FROM input")
            .set("workers", "max_attempts", "1")
            .toml(),
    );
    ws.write("inbox/bad.csv", "id,country,amount\n1,FR,5\n");
    let (code, report) = run_json(&pipeline);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!((report["failed_batches"].as_u64(), report["exit_code"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["batches"], 0, "{report}");
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_codes() {
    let output = run(&["run", "--no-such-flag", "p.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let output = run(&["run", "/no/such/pipeline.toml", "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    for args in [&["--help"][..], &["run", "--help"]] {
        let output = run(args);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", printed(&output));
        for code in
            ["  0   done", "  1   batches failed", "  2   a bad pipeline file", "  3   a store or broker", "  70  "]
        {
            assert!(help.contains(code), "{args:?} names exit code `{code}`:\n{help}");
        }
    }
}

#[test]
fn a_broker_that_cannot_be_reached_exits_3() {
    let ws = Workspace::new();
    // Nothing listens on port 1: the connection is refused at once.
    let output = common::sluice()
        .args(["worker", "--tasks", "amqp://guest:guest@127.0.0.1:1/%2f", "--insecure-unsigned-tasks"])
        .args(["--idle-timeout", "1s", "--pipelines"])
        .arg(ws.dir.path())
        .output()
        .expect("sluice runs");
    assert_eq!(output.status.code(), Some(3), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to amqp://guest:***@127.0.0.1:1"), "{stderr}");
}

#[test]
fn a_log_a_newer_sluice_wrote_is_refused_with_exit_2_and_the_version_it_needs() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,10.5\n");
    assert_eq!(run(&["run", &pipeline, "--until-caught-up"]).status.code(), Some(0));
    let first = std::fs::read_to_string(ws.path("out/_sluice/log/00000000000000000000.json")).expect("record 0");
    assert!(first.starts_with(r#"{"format":1,"sluice":""#), "{first}");
    ws.write("out/_sluice/log/00000000000000000003.json", r#"{"format":9,"sluice":"9.9.0","kind":"sealed"}"#);
    let output = run(&["status", &pipeline]);
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("written by sluice 9.9.0") && stderr.contains("run sluice 9.9.0 or newer"), "{stderr}");
}

#[test]
fn an_unreadable_log_record_is_an_internal_error_exit_70() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,10.5\n");
    ws.write("out/_sluice/log/00000000000000000000.json", "{ not a record");
    let output = run(&["run", &pipeline, "--until-caught-up"]);
    assert_eq!(output.status.code(), Some(70), "{}", printed(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is unreadable"), "{}", printed(&output));
}

#[test]
fn after_commit_delete_empties_the_inbox_and_a_file_dropped_again_is_new_input() {
    let ws = Workspace::new();
    ws.pipeline(&orders().text("source", "after_commit", "delete").toml());
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    ws.write("inbox/b.csv", "id,country,amount\n2,DE,2\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (2, 2), "{summary:?}");
    assert!(ws.path("inbox").is_dir(), "the inbox stays");
    assert_eq!(visible_files(&ws.path("inbox")), Vec::<std::path::PathBuf>::new(), "its committed files are gone");

    // The same name again, and a first line like the old file's: a new
    // file, read whole.
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n3,US,3\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (1, 2), "{summary:?}");
    assert!(visible_files(&ws.path("inbox")).is_empty());
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["1|FR|1.0", "1|FR|1.0", "2|DE|2.0", "3|US|3.0"]));
}

/// Sets the modification time of a file of `ws` to `hours` from now.
fn modified(ws: &Workspace, path: &str, hours: i64) {
    let (now, shift) = (std::time::SystemTime::now(), Duration::from_secs(3600 * hours.unsigned_abs()));
    let at = if hours >= 0 { now + shift } else { now - shift };
    let file = std::fs::File::options().write(true).open(ws.path(path)).expect("open");
    file.set_modified(at).expect("set the modification time");
}

#[test]
fn max_file_age_leaves_old_files_unread_and_the_log_forgets_old_batches() {
    let ws = Workspace::new();
    let pipeline =
        ws.pipeline(&orders().text("source", "max_file_age", "1h").set("trigger", "max_files_per_batch", "1").toml());
    ws.write("inbox/stale.csv", "id,country,amount\n1,FR,1\n");
    modified(&ws, "inbox/stale.csv", -3);
    ws.write("inbox/a.csv", "id,country,amount\n2,DE,2\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (1, 1), "a file 3 h older than the newest is not read: {summary:?}");

    // A file 2 h newer moves the horizon past a.csv: its committed batch
    // is forgotten by the plan of b.csv, and still counted.
    ws.write("inbox/b.csv", "id,country,amount\n3,US,3\n");
    modified(&ws, "inbox/b.csv", 2);
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (1, 1), "{summary:?}");
    let output = run(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["forgotten_batches"].as_u64(), Some(1), "{status}");
    assert_eq!((status["committed_batches"].as_u64(), status["files_committed"].as_u64()), (Some(2), Some(2)));
    assert_eq!((status["rows_read"].as_u64(), status["new_files"].as_u64()), (Some(2), Some(0)), "{status}");
    let log = std::fs::read_dir(ws.path("out/_sluice/log")).expect("the log").filter_map(Result::ok);
    let forgetting = log
        .map(|entry| std::fs::read_to_string(entry.path()).expect("a record"))
        .filter(|record| record.contains("\"forget_before\"") && record.contains("\"forget\":["))
        .count();
    assert_eq!(forgetting, 1, "one plan record forgot a.csv's batch");

    // Forgotten, a.csv is older than the horizon: not read again, nor is
    // stale.csv touched to look new but still old.
    modified(&ws, "inbox/stale.csv", -1);
    assert_eq!(ws.run_until_caught_up().batches, 0);
    assert_eq!(parquet_rows(&ws.path("out")).1, rows(&["2|DE|2.0", "3|US|3.0"]));
}

#[test]
fn after_commit_move_keeps_the_names_below_move_to() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(
        &orders()
            .text("source", "pattern", "**/*.csv")
            .text("source", "after_commit", "move")
            .text("source", "move_to", "inbox/_done")
            .toml(),
    );
    ws.write("inbox/a.csv", "id,country,amount\n1,FR,1\n");
    ws.write("inbox/2026/b.csv", "id,country,amount\n2,DE,2\n");
    let summary = ws.run_until_caught_up();
    assert_eq!(summary.files, 2, "{summary:?}");
    assert!(visible_files(&ws.path("inbox")).is_empty(), "nothing is left to read");
    assert!(ws.path("inbox/_done/a.csv").is_file() && ws.path("inbox/_done/2026/b.csv").is_file());
    assert_eq!(ws.run_until_caught_up().batches, 0, "the moved files are not read again");
    let explained = run(&["explain", &pipeline]);
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(text.contains("after_commit = move") && text.contains("_done"), "{text}");
}

#[test]
fn committed_batches_are_sealed_into_a_segment_and_no_file_is_read_twice() {
    let ws = Workspace::new();
    let pipeline = ws.pipeline(&orders().set("trigger", "max_files_per_batch", "1").toml());
    for n in 0..1100 {
        ws.write(&format!("inbox/{n:04}.csv"), &format!("id,country,amount\n{n},FR,1\n"));
    }
    // The run seals the first thousand committed batches as it goes: the
    // state a worker loads no longer holds them, and the planner finds
    // their files in the segment.
    assert_eq!(ws.run_until_caught_up().files, 1100);
    assert_eq!(ws.run_until_caught_up().batches, 0, "nothing is new");
    let status = || {
        let output = run(&["status", &pipeline, "--json"]);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("json")
    };
    let sealed = status();
    assert!(sealed["sealed_batches"].as_u64().is_some_and(|n| n >= 1000), "{sealed}");
    assert_eq!((sealed["committed_batches"].as_u64(), sealed["files_committed"].as_u64()), (Some(1100), Some(1100)));
    assert_eq!((sealed["new_files"].as_u64(), sealed["pending_batches"].as_u64()), (Some(0), Some(0)), "{sealed}");
    let segments: Vec<_> = std::fs::read_dir(ws.path("out/_sluice/segments")).expect("segments").collect();
    assert_eq!(segments.len(), 1);

    // A sealed file that grew, and a new one: only they are read, and of
    // the grown one only its new row (`on_change = "append"`), which takes
    // the sealed version's size from the segment.
    ws.write("inbox/0005.csv", "id,country,amount\n5,FR,1\n9005,DE,2\n");
    modified(&ws, "inbox/0005.csv", 1);
    ws.write("inbox/new.csv", "id,country,amount\n9999,US,3\n");
    let summary = ws.run_until_caught_up();
    assert_eq!((summary.files, summary.rows_in), (2, 2), "{summary:?}");

    // Records that both kept snapshots hold go once they are an hour old.
    let records = ws.path("out/_sluice/log");
    let count = || std::fs::read_dir(&records).expect("the log").count();
    let before = count();
    for entry in std::fs::read_dir(&records).expect("the log") {
        let file = std::fs::File::options().write(true).open(entry.expect("entry").path()).expect("open");
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200)).expect("set the time");
    }
    let dry = run(&["vacuum", &pipeline, "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success() && text.contains("would remove checkpoint log object"), "{}", printed(&dry));
    assert!(text.contains("dry run: nothing removed") && count() == before, "{text}");
    let vacuum = run(&["vacuum", &pipeline]);
    let text = String::from_utf8_lossy(&vacuum.stdout);
    assert!(vacuum.status.success(), "{}", printed(&vacuum));
    assert!(count() <= before - 1000, "records before the older kept snapshot are gone: {text}");
    assert!(text.contains(&format!("removed {} checkpoint log objects", before - count())), "{text}");

    assert_eq!(ws.run_until_caught_up().batches, 0, "after vacuum, still nothing is new");
    assert_eq!(status()["committed_batches"].as_u64(), Some(1102));
    let written = parquet_rows(&ws.path("out")).1;
    assert_eq!(written.len(), 1102, "every row once");
    let fives = written.iter().filter(|row| row.first().is_some_and(|id| id == "5")).count();
    assert_eq!(fives, 1, "0005.csv's first row once");
}
