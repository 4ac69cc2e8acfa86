//! Every file in tests/invalid/ is a pipeline that `sluice validate` must
//! refuse. Its first lines say what must be printed:
//! `# error: LINE:COL: key.path: message` (the file's path is put in
//! front), `# error: key.path: message` (position not pinned), or
//! `# error: hint: ...` / any other text that must appear.

mod common;

use std::path::PathBuf;

#[test]
fn every_invalid_pipeline_is_refused_with_its_errors() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("tests/invalid exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus is in place");

    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        let expected: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# error: ")).collect();
        assert!(!expected.is_empty(), "{} names no expected error", path.display());

        let shown = path.to_str().expect("utf-8 path");
        let output = common::sluice()
            .args(["validate", shown])
            .env_remove("SLUICE_TEST_SURELY_UNSET")
            .output()
            .expect("sluice runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(2) {
            failures.push(format!("{shown}: expected exit 2\n{}", common::printed(&output)));
            continue;
        }
        for want in expected {
            let positioned = want.split(':').take(2).all(|part| part.trim().parse::<u32>().is_ok());
            let needle = if positioned { format!("{shown}:{want}") } else { want.to_string() };
            if !stderr.contains(&needle) {
                failures.push(format!("{shown}: missing `{needle}` in:\n{stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
