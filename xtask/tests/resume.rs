//! A real tuning process killed with SIGKILL mid-trial, then `cargo xtask tune --resume`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tuneforge_agent::store::{SqliteStore, StudyStore};
use tuneforge_agent::tune::{TrialRecord, TuneSummary};

fn xtask() -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("TUNEFORGE_DATA", repo.join("datasets")).env("CI", "1");
    c
}

#[test]
fn a_study_killed_mid_trial_resumes_from_its_checkpoints_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let d = dir.to_str().unwrap();
    // Trials of 600 × 32 rows with a decision every 30 × 32: each trial lasts long enough to be
    // killed in its middle; a checkpoint at every decision.
    let mut child = xtask()
        .args(["tune", "--dataset", "digits", "--strategy", "rl", "--budget", "10s", "--seed", "3"])
        .args(["--trial-steps", "600", "--decision-steps", "30", "--checkpoint-every", "0", "--out", d])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // While it runs, a second process may not touch the study.
    let t = Instant::now();
    while !dir.join("study.sqlite").exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no study.sqlite");
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = xtask().args(["tune", "--resume", d]).output().unwrap();
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(stderr.contains("in use by process"), "{stderr}");

    // Kill it when two trials are complete and a third is running with a checkpoint a few
    // decisions into it (of its 19), far from its end.
    loop {
        assert!(t.elapsed() < Duration::from_secs(120), "the study never reached a third trial's checkpoint");
        std::thread::sleep(Duration::from_millis(20));
        // Never `open`: between `tune` creating the folder and its store, that would create
        // the store, and `tune` would refuse a study that "was created meanwhile".
        let Ok(store) = SqliteStore::open_existing(&dir.join("study.sqlite")) else { continue };
        let Ok(trials) = store.trials() else { continue };
        if trials.iter().filter(|r| r.status == "completed").count() < 2 {
            continue;
        }
        let Some(r) = trials.iter().find(|r| r.status == "running") else { continue };
        if let Ok(Some(ck)) = store.checkpoint(r.id)
            && (3..10).contains(&ck.decisions)
        {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());

    // What the dead process left: completed trials, one running trial and its decisions.
    let store = SqliteStore::open(&dir.join("study.sqlite")).unwrap();
    let before = store.trials().unwrap();
    let completed: Vec<_> = before.iter().filter(|r| r.status == "completed").cloned().collect();
    let running: Vec<u64> = before.iter().filter(|r| r.status == "running").map(|r| r.id).collect();
    assert_eq!(running.len(), 1, "the killed trial is left running by the dead process: {before:?}");
    let running = running[0];
    let ck = store.checkpoint(running).unwrap().unwrap();
    let kept = store.decisions(running).unwrap();
    assert!(kept.len() as u64 >= ck.decisions);
    drop(store);

    let out = xtask().args(["tune", "--resume", d]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");

    let summary: TuneSummary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    // Every trial once, none left running.
    let ids: Vec<u64> = summary.trials.iter().map(|t| t.id).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    // (A trial may fail: the monitor gives up on one whose gradients keep exploding.)
    assert!(summary.trials.iter().all(|t| t.status != "running" && t.status != "paused"), "{:?}", summary.trials);
    // Completed trials are kept as they were, not run again.
    for c in &completed {
        let before: TrialRecord = serde_json::from_str(&c.record).unwrap();
        let after = &summary.trials[c.id as usize];
        assert_eq!(
            (&after.status, after.val_macro_f1, after.reward, after.resumed),
            (&before.status, before.val_macro_f1, before.reward, false)
        );
    }
    // The interrupted trial went on from its last checkpoint: the decisions up to it are
    // the ones recorded before the kill, the next one starts at the checkpoint's step, and
    // it ran to its end.
    let resumed = &summary.trials[running as usize];
    assert!(resumed.resumed, "{resumed:?}");
    let store = SqliteStore::open(&dir.join("study.sqlite")).unwrap();
    let after = store.decisions(running).unwrap();
    assert_eq!(after.iter().map(|d| d.idx).collect::<Vec<_>>(), (0..after.len() as u64).collect::<Vec<_>>());
    assert_eq!(after[..ck.decisions as usize], kept[..ck.decisions as usize]);
    if let Some(next) = after.get(ck.decisions as usize) {
        assert_eq!(next.step, ck.step, "the first decision after the resume starts at the checkpoint");
    }
    if resumed.status == "completed" {
        // The budget is rows: 600 steps of digits' batch 32, whatever batch sizes the policy
        // moved to (the last step may pass it by less than a batch).
        let batch = resumed.final_hparams.batch_size as u64;
        assert!((600 * 32..600 * 32 + batch).contains(&resumed.samples), "{resumed:?}");
        assert_eq!(after.len(), 19, "600 × 32 rows: a first interval then 19 decisions of 30 × 32");
    }
    assert!(summary.resumes >= 1);
    assert!(store.trials().unwrap().iter().all(|r| r.status != "running"));
    // The policy learnt from every finished trial, the interrupted one included, once.
    let policy: serde_json::Value = serde_json::from_str(&store.policy().unwrap().unwrap()).unwrap();
    // Every trial that took a decision and did not fail (an empty episode teaches nothing).
    let learnt = summary.trials.iter().filter(|t| !t.status.starts_with("failed") && t.samples > 30 * 32).count();
    // (The study started untrained: no episodes of its own before.)
    assert_eq!(policy["episodes"].as_u64().unwrap(), learnt as u64);

    // summary.json's test F1 is the one recomputed from predictions.csv.
    let (truth, pred) = tuneforge_agent::run::read_predictions(&dir.join("predictions.csv")).unwrap();
    let mut cm = tuneforge_eval::ConfusionMatrix::new(10).unwrap();
    cm.update(&truth, &pred).unwrap();
    assert_eq!(summary.best.test_macro_f1, cm.report().macro_avg.f1);
}

/// A study started from a policy given with `--policy` (here the shipped digits prior, not
/// the default untrained start), killed before its first trial ended, so before any policy
/// was stored, resumes from that policy: the stored configuration keeps it.
#[test]
fn a_study_killed_in_its_first_trial_resumes_from_the_policy_it_started_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let d = dir.to_str().unwrap();
    let mut child = xtask()
        .args(["tune", "--dataset", "digits", "--strategy", "rl", "--budget", "4s", "--seed", "5"])
        .args(["--policy", "digits", "--trial-steps", "3000", "--decision-steps", "30"])
        .args(["--checkpoint-every", "0", "--out", d])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it at trial 0's first checkpoint (of 99 decisions), before any trial has ended.
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < Duration::from_secs(60), "trial 0 never reached a checkpoint");
        std::thread::sleep(Duration::from_millis(10));
        // Never `open`: between `tune` creating the folder and its store, that would create
        // the store, and `tune` would refuse a study that "was created meanwhile".
        let Ok(store) = SqliteStore::open_existing(&dir.join("study.sqlite")) else { continue };
        let Ok(trials) = store.trials() else { continue };
        assert!(trials.iter().all(|r| r.status == "running"), "a trial ended before the kill: {trials:?}");
        if let Some(r) = trials.first()
            && let Ok(Some(_)) = store.checkpoint(r.id)
        {
            assert!(store.policy().unwrap().is_none(), "no policy is stored before a trial ends");
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success());

    let out = xtask().args(["tune", "--resume", d]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: TuneSummary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary.resumes >= 1 && summary.trials[0].resumed, "{:?}", summary.trials[0]);
    // The policy learnt every finished trial on top of the prior's own episodes.
    let learnt = summary.trials.iter().filter(|t| !t.status.starts_with("failed") && t.samples > 30 * 32).count();
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("policy.json")).unwrap()).unwrap();
    let prior = tuneforge_agent::policy::StudyPolicy::pretrained().episodes;
    assert!(prior > 100);
    assert_eq!(policy["episodes"].as_u64().unwrap(), prior + learnt as u64);
}
