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
