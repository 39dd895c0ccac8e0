//! Repository hygiene checks that run under `cargo test` (as rust-analyzer's tidy does).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The first command of the first ```sh block after `heading` in README.md.
fn readme_command(readme: &str, heading: &str) -> String {
    let after = &readme[readme.find(heading).unwrap_or_else(|| panic!("README lacks {heading:?}"))..];
    let block = &after[after.find("```sh\n").expect("a sh block") + 6..];
    block.lines().next().expect("a command").trim().to_string()
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = read("README.md");
    let test_cmd = readme_command(&readme, "Tests:");
    let ci = read(".ci/run");
    let last = ci.lines().rev().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap();
    assert_eq!(last.trim(), test_cmd, ".ci/run must end with README's test command");
    assert!(ci.contains("set -euo pipefail"));
    let main_cmd = readme_command(&readme, "Main job");
    assert!(main_cmd.starts_with("cargo xtask "), "{main_cmd}");
}

#[test]
fn committed_datasets_match_their_recorded_checksums() {
    // datasets/README.md lists `sha256  file`; recompute with the `sha256sum` tool if
    // present, else skip this half (the CSV tests still check contents).
    let readme = read("datasets/README.md");
    let mut checked = 0;
    for line in readme.lines() {
        let mut parts = line.trim().trim_matches('`').split_whitespace();
        let (Some(hash), Some(file)) = (parts.next(), parts.next()) else { continue };
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let out = std::process::Command::new("sha256sum").arg(repo().join("datasets").join(file)).output();
        let Ok(out) = out else { return };
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(got.starts_with(hash), "datasets/{file}: sha256 {got} but README says {hash}");
        checked += 1;
    }
    assert!(checked >= 2, "datasets/README.md should list a sha256 for each committed file");
}

#[test]
fn every_crate_opens_with_a_doc_comment() {
    for entry in std::fs::read_dir(repo().join("crates")).unwrap() {
        let lib = entry.unwrap().path().join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).unwrap();
        assert!(text.starts_with("//! `tuneforge-"), "{} must open with a //! doc naming the crate", lib.display());
    }
}
