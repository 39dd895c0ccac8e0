//! Sudden death: real `cargo xtask tune` processes killed with SIGKILL at random moments,
//! again and again; after every kill, everything on disk is complete (never torn) and nothing
//! recorded is lost, and `--resume` goes on. Then a full disk and a read-only one: a clear
//! error, the previous state intact, and a resume once the disk is usable again.
//!
//! `TUNEFORGE_KILLS` sets the number of kills (default 50, about 40 s). The disk tests mount
//! a small tmpfs (root only; .ci/run runs as root): skipped with a message where `mount` is
//! refused.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::{Rng, SeedableRng};
use tuneforge_agent::store::{SqliteStore, StudyStore};
use tuneforge_agent::tune::TuneSummary;

fn xtask() -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("TUNEFORGE_DATA", repo.join("datasets")).env("CI", "1");
    c
}

/// A new digits study in `dir`: short trials, a checkpoint at every decision.
fn start(dir: &Path, strategy: &str, budget: &str, seed: u64) -> Child {
    xtask()
        .args(["tune", "--dataset", "digits", "--strategy", strategy, "--budget", budget])
        .args(["--seed", &seed.to_string(), "--trial-steps", "200", "--decision-steps", "20"])
        .args(["--checkpoint-every", "0", "--out", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn resume(dir: &Path) -> Child {
    xtask()
        .args(["tune", "--resume", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What [`check`] found in a study folder.
#[derive(Debug, Default)]
struct Found {
    /// Files or records that were not complete: must stay 0.
    torn: Vec<String>,
    /// events.jsonl ended in a torn line (expected after a kill: the log is append-only and
    /// the next open cuts it off; readers skip it).
    torn_log_tail: bool,
    /// Temporary files of an interrupted write-then-rename.
    temp_files: usize,
    /// Checkpoints decoded (weights + optimiser state).
    checkpoints: usize,
    /// Finished trials' records, by id.
    finished: BTreeMap<u64, String>,
}

/// Reads everything a study writes and decodes it fully.
fn check(dir: &Path) -> Found {
    let mut found = Found::default();
    let mut torn = |what: String| found.torn.push(what);
    let db = dir.join("study.sqlite");
    if db.exists() {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        if integrity != "ok" {
            torn(format!("study.sqlite: integrity_check: {integrity}"));
        }
        drop(conn);
        match SqliteStore::open_existing(&db) {
            Err(e) => torn(format!("study.sqlite: {e}")),
            Ok(store) => {
                for t in store.trials().unwrap() {
                    if serde_json::from_str::<serde_json::Value>(&t.record).is_err() {
                        torn(format!("trial {}: record", t.id));
                    }
                    if !matches!(t.status.as_str(), "running" | "paused") {
                        found.finished.insert(t.id, t.record.clone());
                    }
                    if let Some(ck) = store.checkpoint(t.id).unwrap() {
                        let origin = Path::new("checkpoint");
                        if let Err(e) = tuneforge_model::Model::from_safetensors(&ck.model, origin, &Device::Cpu) {
                            torn(format!("trial {}: checkpoint weights: {e}", t.id));
                        }
                        if let Err(e) = tuneforge_optim::Checkpoint::from_bytes(&ck.optimizer, origin) {
                            torn(format!("trial {}: checkpoint optimiser: {e}", t.id));
                        }
                        if serde_json::from_str::<serde_json::Value>(&ck.state).is_err() {
                            torn(format!("trial {}: checkpoint state", t.id));
                        }
                        found.checkpoints += 1;
                    }
                }
            }
        }
    }
    let summary = dir.join("summary.json");
    if summary.exists()
        && let Err(e) = serde_json::from_slice::<TuneSummary>(&std::fs::read(&summary).unwrap())
    {
        torn(format!("summary.json: {e}"));
    }
    let model = dir.join("model.safetensors");
    if model.exists()
        && let Err(e) = tuneforge_model::Model::load(&model, &Device::Cpu)
    {
        torn(format!("model.safetensors: {e}"));
    }
    let predictions = dir.join("predictions.csv");
    if predictions.exists()
        && let Err(e) = tuneforge_agent::run::read_predictions(&predictions)
    {
        torn(format!("predictions.csv: {e}"));
    }
    let manifest = dir.join("predictor.json");
    if manifest.exists()
        && let Err(e) = serde_json::from_slice::<tuneforge_agent::predict::Manifest>(&std::fs::read(&manifest).unwrap())
    {
        torn(format!("predictor.json: {e}"));
    }
    let policy = dir.join("policy.json");
    if policy.exists() {
        match serde_json::from_slice::<tuneforge_agent::policy::StudyPolicy>(&std::fs::read(&policy).unwrap()) {
            Ok(p) if p.validate().is_ok() => {}
            other => torn(format!("policy.json: {other:?}")),
        }
    }
    let events = dir.join("events.jsonl");
    if events.exists() {
        match tuneforge_monitor::read_log(&events) {
            Ok(log) => found.torn_log_tail = log.torn_tail.is_some(),
            Err(e) => torn(format!("events.jsonl: {e}")),
        }
    }
    found.temp_files = std::fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).count()
        })
        .unwrap_or(0);
    found
}

/// Every finished trial of `before` is still there, unchanged.
fn nothing_lost(before: &BTreeMap<u64, String>, after: &BTreeMap<u64, String>, context: &str) {
    for (id, record) in before {
        assert_eq!(after.get(id), Some(record), "{context}: finished trial {id} changed or vanished");
    }
}

#[test]
fn fifty_random_kills_leave_nothing_torn_and_every_study_resumes() {
    let kills_wanted: usize = std::env::var("TUNEFORGE_KILLS").map_or(50, |v| v.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let strategies = ["rl", "asha", "pbt", "random", "pb2"];
    let t0 = Instant::now();
    let (mut kills, mut resumes, mut finished_runs, mut torn_tails, mut temp_files, mut checkpoints) =
        (0, 0, 0, 0, 0, 0);
    let mut studies: Vec<PathBuf> = Vec::new();
    let mut finished: BTreeMap<PathBuf, BTreeMap<u64, String>> = BTreeMap::new();
    while kills < kills_wanted {
        assert!(t0.elapsed() < Duration::from_secs(600), "kill loop over its time bound after {kills} kills");
        let current = studies.last().filter(|d| !d.join("summary.json").exists()).cloned();
        let (dir, child) = match current {
            Some(dir) => {
                resumes += 1;
                let child = resume(&dir);
                (dir, child)
            }
            None => {
                let n = studies.len();
                let dir = tmp.path().join(format!("study-{n}-{}", strategies[n % strategies.len()]));
                let child = start(&dir, strategies[n % strategies.len()], "4s", n as u64);
                studies.push(dir.clone());
                (dir, child)
            }
        };
        let mut child = child;
        // Random moments: from start-up (data preparation, store creation) to mid-trial.
        std::thread::sleep(Duration::from_millis(rng.random_range(30..1500)));
        match child.try_wait().unwrap() {
            Some(_) => {
                let (ok, stderr) = stderr_of(child);
                assert!(ok, "{} exited with an error before the kill:\n{stderr}", dir.display());
                finished_runs += 1;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let found = check(&dir);
        assert!(found.torn.is_empty(), "after kill {kills} of {}: torn: {:?}", dir.display(), found.torn);
        let before = finished.entry(dir.clone()).or_default();
        nothing_lost(before, &found.finished, &format!("after kill {kills} of {}", dir.display()));
        *before = found.finished;
        torn_tails += usize::from(found.torn_log_tail);
        temp_files += found.temp_files;
        checkpoints += found.checkpoints;
    }
    // Every study the kills left unfinished resumes to its end.
    for dir in &studies {
        if !dir.join("summary.json").exists() {
            resumes += 1;
            let (ok, stderr) = stderr_of(resume(dir));
            assert!(ok, "--resume {} failed:\n{stderr}", dir.display());
        }
        let found = check(dir);
        assert!(found.torn.is_empty(), "{}: {:?}", dir.display(), found.torn);
        assert_eq!(found.temp_files, 0, "{}: temporary files left after a clean end", dir.display());
        nothing_lost(&finished[dir], &found.finished, &format!("final resume of {}", dir.display()));
        let summary: TuneSummary = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        let ids: Vec<u64> = summary.trials.iter().map(|t| t.id).collect();
        assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{}: every trial once", dir.display());
        assert!(summary.trials.iter().all(|t| t.status != "running" && t.status != "paused"));
        // The finished folder is a model `predict` can load.
        if let Err(e) = tuneforge_agent::predict::Predictor::load(dir, &Device::Cpu) {
            panic!("{}: the study's model does not load for predict: {e}", dir.display());
        }
    }
    eprintln!(
        "kill test: {kills} kills, {resumes} resumes, {finished_runs} runs ended before their kill, {} studies, \
         {checkpoints} checkpoints decoded after kills, {torn_tails} torn event-log tails (repaired on resume), \
         {temp_files} temporary files seen after kills, 0 torn files, {:.0} s",
        studies.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// A tmpfs of `size` mounted on a new folder, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                // Not root, or a sandbox without CAP_SYS_ADMIN: nothing to test with here.
                eprintln!("SKIPPED the disk tests: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(&self.dir).output().unwrap();
        assert!(out.status.success(), "remount {options}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The bytes of every file in `dir`, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn a_full_disk_and_a_read_only_disk_are_clear_errors_that_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(tmp.path().join("disk"), "3m") else { return };
    let dir = fs.dir.join("study");

    // Full disk: the event log and the store grow until a write fails.
    let t = Instant::now();
    let (ok, stderr) = stderr_of(start(&dir, "rl", "12s", 1));
    assert!(!ok, "a 12 s study fitted in 3 MiB?");
    eprintln!("full disk after {:.1} s:\n{stderr}", t.elapsed().as_secs_f64());
    assert!(stderr.contains("No space left on device") || stderr.contains("disk is full"), "{stderr}");
    assert!(stderr.contains(dir.to_str().unwrap()), "the error names no file of the study: {stderr}");
    assert!(stderr.contains("--resume"), "the error does not say how to continue: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let found = check(&dir);
    assert!(found.torn.is_empty(), "after the full disk: {:?}", found.torn);
    assert!(found.checkpoints + found.finished.len() > 0, "nothing was recorded before the disk filled: {found:?}");

    // With room again, the study resumes and ends; what was finished is kept.
    fs.remount("size=256m");
    let (ok, stderr) = stderr_of(resume(&dir));
    assert!(ok, "resume after freeing space: {stderr}");
    let after = check(&dir);
    assert!(after.torn.is_empty(), "{:?}", after.torn);
    nothing_lost(&found.finished, &after.finished, "resume after a full disk");
    assert!(dir.join("summary.json").exists());

    // Read-only disk: a killed study cannot be resumed; the error says so and changes nothing.
    let dir2 = fs.dir.join("study2");
    let mut child = start(&dir2, "rl", "6s", 2);
    let t = Instant::now();
    while check(&dir2).checkpoints == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = snapshot(&dir2);
    fs.remount("ro");
    let (ok, stderr) = stderr_of(resume(&dir2));
    assert!(!ok, "resumed on a read-only disk?");
    eprintln!("read-only disk:\n{stderr}");
    assert!(stderr.contains("Read-only file system") || stderr.contains("readonly"), "{stderr}");
    assert!(stderr.contains(dir2.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(snapshot(&dir2), before, "a failed resume changed the study");
    fs.remount("rw");
    let (ok, stderr) = stderr_of(resume(&dir2));
    assert!(ok, "resume once writable again: {stderr}");
    assert!(check(&dir2).torn.is_empty());
}
