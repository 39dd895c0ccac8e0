//! Files written whole or not at all: a temporary file beside the target, synced, then
//! renamed over it. The crates that write outputs (model weights, optimiser checkpoints,
//! summaries, predictions, reports) share these two functions.

use std::io::Write;
use std::path::Path;

/// A temporary file in `path`'s folder, named `.tmp-…` (what a study's `--resume` clears away
/// if a killed process left it), to be synced and persisted over `path`. Created with mode
/// 0666 less the umask, as `File::create` would: the file it becomes is as readable as any
/// other the user writes (a temporary file's default, 0600, would make model folders and
/// reports unreadable to a group they are shared with).
pub fn temp_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir)
}

/// Writes `bytes` to `path` through [`temp_beside`], synced, then renamed: a reader sees the
/// old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Files written through a temporary file get the mode a plain `File::create` gives
    /// (0666 less the umask), not a temporary file's 0600.
    #[test]
    #[cfg(target_os = "linux")]
    fn an_atomic_write_has_the_mode_of_a_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap().trim();
        let umask = u32::from_str_radix(umask, 8).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("summary.json");
        write_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let plain = tmp.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        assert_eq!(mode, 0o666 & !umask, "umask {umask:o}");
        assert_eq!(mode, std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        // Written again: replaced whole, no temporary file left.
        write_atomic(&path, b"[1]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }
}
