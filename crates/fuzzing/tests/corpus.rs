//! Every committed fuzz input through its target: the seed corpora (`fuzz/corpus/<target>/`)
//! and the minimised inputs of the crashes found (`fuzz/regressions/<target>/`). A crash
//! that comes back fails here, on stable Rust, under `cargo test`.
//!
//! `cargo test -p tuneforge-fuzzing --test corpus -- --ignored write_seeds` rewrites the
//! generated seeds (models, checkpoints, pipelines, policies, configs) from the current
//! code.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tuneforge_fuzzing::{TARGETS, Verdict};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_passes_its_target() {
    let mut total = 0;
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed inputs");
        let mut accepted = 0;
        for path in seeds.iter().chain(&files(&fuzz_dir().join("regressions").join(name))) {
            let data = std::fs::read(path).unwrap();
            // A panic names the target and the file.
            let verdict = std::panic::catch_unwind(|| target(&data))
                .unwrap_or_else(|_| panic!("{name}: {} broke an invariant (see the message above)", path.display()));
            accepted += usize::from(verdict == Verdict::Accepted);
            total += 1;
        }
        assert!(accepted > 0, "{name}: no seed is accepted, so its invariants are never checked");
    }
    assert!(total >= 2 * TARGETS.len());
}

#[test]
fn no_committed_input_is_large() {
    for dir in ["corpus", "regressions"] {
        for (name, _) in TARGETS {
            for path in files(&fuzz_dir().join(dir).join(name)) {
                let len = std::fs::metadata(&path).unwrap().len();
                assert!(len < 20_000, "{}: {len} bytes; keep committed fuzz inputs small", path.display());
            }
        }
    }
}

/// Writes the seeds made by the code itself into `fuzz/corpus/`. Run by hand after a format
/// change; the hand-written seeds are left alone.
#[test]
#[ignore]
fn write_seeds() {
    seeds::write_all(&fuzz_dir().join("corpus"));
}

mod seeds;
