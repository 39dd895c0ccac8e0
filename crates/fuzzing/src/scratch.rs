//! A per-process scratch folder for targets whose parser reads files (IDX, `.gz`).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Writes `bytes` to `name` in this process's scratch folder and returns its path. The
/// folder (`tuneforge-fuzz-*` in the temp dir) is created once per process and outlives
/// it (a static is never dropped); each name is overwritten by every call, so a fuzzing
/// run of millions of inputs holds only a few small files.
pub(crate) fn write(name: &str, bytes: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        tempfile::Builder::new().prefix("tuneforge-fuzz-").tempdir().expect("a scratch folder in the temp dir")
    });
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write scratch file {}: {e}", path.display()));
    path
}
