//! Every example in pipelines/ validates as it stands.

mod common;

use std::path::PathBuf;

#[test]
fn every_example_pipeline_validates() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("pipelines/ exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(!files.is_empty(), "pipelines/ has examples");
    for path in files {
        let output = common::run(&["validate", path.to_str().expect("utf-8")]);
        assert!(output.status.success(), "{} does not validate:\n{}", path.display(), common::printed(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(": ok"), "{}", common::printed(&output));
    }
}

/// The example pipelines' files.
fn examples() -> Vec<String> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .expect("pipelines/ exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| path.to_str().expect("utf-8").to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_pipeline_carries_tests_and_they_pass() {
    let files = examples();
    let mut args = vec!["test"];
    args.extend(files.iter().map(String::as_str));
    let output = common::run(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", common::printed(&output));
    assert!(!stdout.contains("no tests"), "every example has tests: {stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    let passed = stdout.lines().filter(|line| line.starts_with("ok ")).count();
    assert!(passed >= files.len(), "at least one test a file: {stdout}");
}

/// The quickstart pipeline beside a test file of `tests` (a sibling
/// `quickstart.test.toml`), in a folder of its own.
fn quickstart_with_tests(tests: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let text = std::fs::read_to_string(examples.join("quickstart.toml")).expect("quickstart");
    // The pipeline without its own tests, its inbox where it was.
    let text = text
        .split("\n[[test]]")
        .next()
        .expect("text")
        .replace("url = \"quickstart/inbox\"", &format!("url = \"{}\"", examples.join("quickstart/inbox").display()));
    std::fs::write(dir.path().join("quickstart.toml"), text).expect("pipeline");
    std::fs::write(dir.path().join("quickstart.test.toml"), tests).expect("tests");
    let path = dir.path().join("quickstart.toml").to_str().expect("utf-8").to_string();
    (dir, path)
}

const HEADER: &str = "order_id,customer,country,amount,status,ordered_at,note";
const OUT_HEADER: &str = "order_id,customer,country,amount,amount_with_vat,ordered_at,note";

#[test]
fn a_broken_expectation_fails_with_a_row_level_diff() {
    let tests = format!(
        "[[test]]\nname = \"vat\"\ninput = \"\"\"\n{HEADER}\n1,Ada,FR,10.50,shipped,2026-11-01T10:00:00,\n\
         2,Bob,DE,3.00,cancelled,2026-11-01T11:00:00,\n\"\"\"\n\
         expected = \"\"\"\n{OUT_HEADER}\n1,Ada,FR,10.5,12.00,2026-11-01T10:00:00,\n\"\"\"\n\n\
         [[test]]\nname = \"passes\"\ninput = \"\"\"\n{HEADER}\n1,Ada,FR,10.50,shipped,2026-11-01T10:00:00,x\n\"\"\"\n\
         expected = \"\"\"\n{OUT_HEADER}\n1,Ada,FR,10.5,12.6,2026-11-01 10:00:00,x\n\"\"\"\n"
    );
    let (_dir, path) = quickstart_with_tests(&tests);
    let output = common::run(&["test", &path]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", common::printed(&output));
    assert!(stdout.contains("FAILED  vat (") && stdout.contains("quickstart.test.toml:1:1)"), "{stdout}");
    // 10.5 matches 10.50 in a decimal column; the VAT does not.
    assert!(stdout.contains("  - 1,Ada,FR,10.50,12.00,2026-11-01T10:00:00,\n"), "{stdout}");
    assert!(stdout.contains("  + 1,Ada,FR,10.50,12.60,2026-11-01T10:00:00,\n"), "{stdout}");
    // A timestamp written with a space is the same instant.
    assert!(stdout.contains("ok      passes ("), "{stdout}");
    assert!(stdout.contains("sluice test: 1 passed, 1 failed"), "{stdout}");
}

#[test]
fn problems_in_a_test_file_are_refused_with_their_place() {
    let tests = "[[test]]\nname = \"x\"\ninput_file = \"missing.csv\"\nexpected = \"a\"\norder = \"sorted\"\n\n\
                 [[test]]\nname = \"x\"\ninput = \"a\"\n";
    let (_dir, path) = quickstart_with_tests(tests);
    let output = common::run(&["test", &path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", common::printed(&output));
    for expected in [
        "quickstart.test.toml:3:14: test.input_file: cannot read ",
        "quickstart.test.toml:5:9: test.order: is \"sorted\"; write \"any\" or \"exact\"",
        "quickstart.test.toml:7:1: test.expected: missing",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{}", common::printed(&output));
    }
    let unknown = quickstart_with_tests("[[test]]\nname = \"x\"\ninput = \"a\"\nexpect = \"b\"\n");
    let output = common::run(&["test", &unknown.1]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", common::printed(&output));
    assert!(stderr.contains("quickstart.test.toml:4:1: test: unknown field `expect`"), "{}", common::printed(&output));
}

#[test]
fn a_test_file_named_by_itself_stands_for_its_pipeline() {
    let tests = format!(
        "[[test]]\nname = \"exact order\"\norder = \"exact\"\ninput = \"\"\"\n{HEADER}\n\
         2,Bob,DE,3.00,paid,2026-11-01T11:00:00,\n1,Ada,FR,10.50,paid,2026-11-01T10:00:00,\n\"\"\"\n\
         expected = \"\"\"\n{OUT_HEADER}\n1,Ada,FR,10.50,12.60,2026-11-01T10:00:00,\n\
         2,Bob,DE,3.00,3.60,2026-11-01T11:00:00,\n\"\"\"\n"
    );
    let (dir, path) = quickstart_with_tests(&tests);
    let sibling = dir.path().join("quickstart.test.toml");
    let output = common::run(&["test", &path, sibling.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", common::printed(&output));
    assert_eq!(stdout.matches("FAILED  exact order").count(), 1, "run once: {stdout}");
    assert!(stdout.contains("not in the expected order"), "{stdout}");
    assert!(stdout.contains("    row 1, expected: 1,Ada,FR,10.50,12.60,2026-11-01T10:00:00,\n"), "{stdout}");
    assert!(stdout.contains("    row 1, produced: 2,Bob,DE,3.00,3.60,2026-11-01T11:00:00,\n"), "{stdout}");
}
