//! Many workers, one study, on a real PostgreSQL server (`TUNEFORGE_PG_URL`, started by
//! .ci/run through .ci/postgres.sh): three `cargo xtask tune` workers with one killed by
//! SIGKILL mid-trial, two workers across a server restart, and bad URLs through the CLI.
//! Without the variable the tests print why and pass, except under CI, where they fail.
//!
//! The tests share the server and one of them restarts it: they take a lock in turn.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERVER: Mutex<()> = Mutex::new(());

fn url() -> Option<String> {
    match std::env::var("TUNEFORGE_PG_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("TUNEFORGE_PG_URL is not set under CI: .ci/run starts a PostgreSQL server and sets it")
        }
        Err(_) => {
            eprintln!("skipped: TUNEFORGE_PG_URL is not set (source .ci/postgres.sh to start a server)");
            None
        }
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn xtask() -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("TUNEFORGE_DATA", repo.join("datasets")).env("CI", "1").env("RUST_LOG", "warn,tuneforge_agent=info");
    c
}

/// Steps per trial and between decisions of [`worker`]'s trials.
const TRIAL_STEPS: i64 = 600;
const DECISION_STEPS: i64 = 20;

/// One worker of `study`: random digits trials of [`TRIAL_STEPS`] steps, a decision (and
/// checkpoint) every [`DECISION_STEPS`]; its stderr goes to `dir/NAME.log`.
fn worker(url: &str, study: &str, name: &str, dir: &Path, trials: u64, heartbeat_s: &str) -> Child {
    worker_with(url, study, name, dir, trials, heartbeat_s, &["--strategy", "random"])
}

fn worker_with(url: &str, study: &str, name: &str, dir: &Path, trials: u64, heartbeat_s: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    xtask()
        .args(["tune", "--storage", url, "--study", study, "--worker", name])
        .args(["--dataset", "digits", "--budget", "900s", "--seed", "3"])
        .args(args)
        .args(["--max-trials", &trials.to_string(), "--trial-steps", &TRIAL_STEPS.to_string()])
        .args(["--decision-steps", &DECISION_STEPS.to_string()])
        .args(["--checkpoint-every", "0", "--heartbeat-timeout", heartbeat_s, "--retry-for", "120"])
        .args(["--out", dir.join(name).to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_ok(child: &mut Child, dir: &Path, name: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            assert!(status.success(), "worker {name} failed:\n{log}");
            return;
        }
        if t.elapsed() > limit {
            child.kill().ok();
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            panic!("worker {name} still running after {limit:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// (id, status, worker, resumed) of every trial of the study.
fn trials(db: &mut postgres::Client, study: &str) -> Vec<(i64, String, String, bool)> {
    db.query("SELECT id, status, worker, resumed FROM trials WHERE study = $1 ORDER BY id", &[&study])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path.join("summary.json")).unwrap()).unwrap()
}

fn export(url: &str, study: &str, dir: &Path) -> serde_json::Value {
    let file = dir.join(format!("{study}.json"));
    let out = xtask()
        .args(["study", "export", "--storage", url, "--study", study, "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// Decisions per trial: one after each interval of [`worker`]'s trials but the first.
const DECISIONS: i64 = TRIAL_STEPS / DECISION_STEPS - 1;

/// Every trial id 0..n appears once, completed, with all its decisions once.
fn check_complete(db: &mut postgres::Client, study: &str, n: u64) {
    let rows = trials(db, study);
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids, (0..n as i64).collect::<Vec<_>>(), "trial ids");
    for (id, status, _, _) in &rows {
        assert_eq!(status, "completed", "trial {id}");
        let idx: Vec<i64> = db
            .query("SELECT idx FROM decisions WHERE study = $1 AND trial = $2 ORDER BY idx", &[&study, id])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(idx, (0..DECISIONS).collect::<Vec<_>>(), "decisions of trial {id}");
    }
}

#[test]
fn three_workers_share_a_study_and_one_killed_mid_trial_is_taken_over() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let n = 24;
    let mut db = client(&url);

    // The same budget of trials with one worker, for the wall-time comparison.
    let solo = unique("solo");
    let t = Instant::now();
    let mut w = worker(&url, &solo, "solo", dir.path(), n, "3");
    wait_ok(&mut w, dir.path(), "solo", Duration::from_secs(600));
    let solo_wall = t.elapsed();
    check_complete(&mut db, &solo, n);

    let study = unique("three");
    let t = Instant::now();
    let mut w0 = worker(&url, &study, "w0", dir.path(), n, "3");
    let mut others = [worker(&url, &study, "w1", dir.path(), n, "3"), worker(&url, &study, "w2", dir.path(), n, "3")];
    // Kill w0 while it runs a trial that has a checkpoint: frozen first (SIGSTOP), then checked
    // in the store, then killed; thawed and tried again if it was between trials.
    let at_kill = "SELECT t.id, c.decisions FROM trials t JOIN checkpoints c ON c.study = t.study AND c.trial = t.id \
                   WHERE t.study = $1 AND t.worker = 'w0' AND t.status = 'running' AND c.decisions >= 2";
    let pid = w0.id().to_string();
    let (victim, checkpointed) = loop {
        assert!(t.elapsed() < Duration::from_secs(300), "w0 never had a checkpointed running trial");
        assert!(w0.try_wait().unwrap().is_none(), "w0 ended before it could be killed");
        if db.query_opt(at_kill, &[&study]).unwrap().is_some() {
            Command::new("kill").args(["-STOP", &pid]).status().unwrap();
            if let Some(row) = db.query_opt(at_kill, &[&study]).unwrap() {
                w0.kill().unwrap(); // SIGKILL
                w0.wait().unwrap();
                break (row.get::<_, i64>(0), row.get::<_, i64>(1));
            }
            Command::new("kill").args(["-CONT", &pid]).status().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("killed w0 in trial {victim} after its checkpoint at decision {checkpointed}");
    for (i, w) in others.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("w{}", i + 1), Duration::from_secs(600));
    }
    let wall = t.elapsed();

    // Every trial id once, completed, each decision once: the budget allowed n trials.
    check_complete(&mut db, &study, n);
    let rows = trials(&mut db, &study);
    assert_eq!(rows.len() as u64, n);
    let workers: BTreeSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert!(workers.contains("w1") && workers.contains("w2"), "both live workers ran trials: {workers:?}");
    // The killed worker's trial was finished by another from its checkpoint: the decisions
    // up to it are w0's, the rest another worker's, and it is marked resumed.
    let (_, _, owner, resumed) = rows.iter().find(|r| r.0 == victim).unwrap();
    assert!(*resumed && owner != "w0", "trial {victim}: owner {owner}, resumed {resumed}");
    let by: Vec<String> = db
        .query("SELECT worker FROM decisions WHERE study = $1 AND trial = $2 ORDER BY idx", &[&study, &victim])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let kept = by.iter().take_while(|w| *w == "w0").count() as i64;
    assert!(kept >= checkpointed, "w0's decisions up to its checkpoint are kept: {by:?}");
    assert!(by[kept as usize..].iter().all(|w| w == owner), "the rest is the taker's: {by:?}");
    let attempts: i32 =
        db.query_one("SELECT attempts FROM trials WHERE study = $1 AND id = $2", &[&study, &victim]).unwrap().get(0);
    assert_eq!(attempts, 2);

    // A trial's result depends only on the study seed and its id (random draws are derived
    // from them, and a checkpoint continues a run exactly): the same trials as one worker's,
    // the killed one included.
    let f1 = |db: &mut postgres::Client, study: &str| -> Vec<(i64, Option<f64>)> {
        db.query("SELECT id, val_macro_f1 FROM trials WHERE study = $1 ORDER BY id", &[&study])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(f1(&mut db, &study), f1(&mut db, &solo), "validation macro-F1 per trial, 3 workers vs 1");

    // The best trial every worker reports is the study's, as `study export` finds it.
    let exported = export(&url, &study, dir.path());
    assert_eq!(exported["trials"].as_array().unwrap().len() as u64, n);
    // The workers' trial budget, kept in the studies row, is the study's.
    assert_eq!(exported["max_trials"].as_u64(), Some(n));
    let show = xtask().args(["study", "show", "--storage", &url, "--study", &study]).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.lines().next().unwrap().ends_with(&format!(", {n}/{n} trials")), "{show}");
    for name in ["w1", "w2"] {
        let s = summary(&dir.path().join(name));
        assert_eq!(s["best"]["trial"], exported["best"]["trial"], "{name}");
        assert_eq!(s["best"]["val_macro_f1"], exported["best"]["val_macro_f1"], "{name}");
        assert_eq!(s["trials"].as_array().unwrap().len() as u64, n, "{name}");
    }
    report_of_the_study(&url, &study, dir.path(), victim, &exported);
    eprintln!(
        "figures: {n} trials ({TRIAL_STEPS} steps each); 3 workers, one SIGKILLed: {:.1} s; 1 worker: {:.1} s",
        wall.as_secs_f64(),
        solo_wall.as_secs_f64()
    );
}

/// `cargo xtask report --storage URL --study NAME --worker-dir ...` of the three-worker study:
/// every trial and the study's best, complete (the surviving workers' summaries cover every
/// trial); the killed worker's trial drawn from both workers' logs, joined where the taker
/// resumed it: every 10th step once, in order, up to its last.
fn report_of_the_study(url: &str, study: &str, dir: &Path, victim: i64, exported: &serde_json::Value) {
    use tuneforge_agent::store::PostgresStore;
    use tuneforge_agent::store::postgres::PgOptions;
    use tuneforge_report::data::{Kept, Study};
    let out_dir = dir.join("report");
    let folders: Vec<std::path::PathBuf> = ["w0", "w1", "w2"].iter().map(|w| dir.join(w)).collect();
    let mut cmd = xtask();
    cmd.args(["report", out_dir.to_str().unwrap(), "--storage", url, "--study", study]);
    for f in &folders {
        cmd.arg("--worker-dir").arg(f);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("report: {stdout}");
    let n = exported["trials"].as_array().unwrap().len();
    let best = exported["best"]["val_macro_f1"].as_f64().unwrap();
    assert!(stdout.contains(&format!("1 study, {n} trials, best val macro-F1 {best:.4})")), "{stdout}");
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(
        html.contains(&format!("Study <code>{study}</code> in <code>")) && !html.contains("Incomplete"),
        "{stdout}"
    );
    assert!(
        html.contains(&format!(
            " s or {n} trials, whichever ends first; ended because its trial budget was spent</td>"
        )),
        "the trial budget"
    );

    let store =
        PostgresStore::open(url, study, PgOptions { worker: "report-test".into(), ..PgOptions::default() }).unwrap();
    let kept = Kept { study: study.into(), target: store.target().into(), folders };
    // The database named as `target` names it: without a password.
    assert!(html.contains(&format!("in <code>{}</code>", store.target())), "{}", store.target());
    let s = Study::from_store(&out_dir, kept, &store).unwrap();
    assert_eq!(s.trials.len(), n);
    assert_eq!(s.best.as_ref().map(|b| b.trial as i64), exported["best"]["trial"].as_i64());
    for t in &s.trials {
        let steps: Vec<u64> = t.trace.points.iter().map(|p| p.step).collect();
        let id = t.row.id;
        assert_eq!(steps.first(), Some(&0), "trial {id}: {steps:?}");
        assert_eq!(steps.last(), Some(&(t.record.steps - 1)), "trial {id}: {steps:?}");
        assert!(steps.windows(2).all(|w| w[0] < w[1] && w[1] - w[0] <= 10), "trial {id}: {steps:?}");
    }
    // The victim's trace has steps from both logs: w0's before the kill, the taker's after.
    let in_log = |w: &str| -> bool {
        let log = std::fs::read_to_string(dir.join(w).join("events.jsonl")).unwrap();
        log.contains(&format!("\"run\":\"trial-{victim}\""))
    };
    assert!(in_log("w0") && (in_log("w1") || in_log("w2")), "trial {victim} in w0's log and a taker's");
    // With the killed worker's folder only (no summary.json): incomplete, said so.
    let out = xtask()
        .args(["report", dir.join("partial").to_str().unwrap(), "--storage", url, "--study", study, "--worker-dir"])
        .arg(dir.join("w0"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("incomplete: no worker's summary.json covers every trial"), "{stdout}");
    let html = std::fs::read_to_string(dir.join("partial/report.html")).unwrap();
    assert!(html.contains("<b>Incomplete:</b> no worker's <code>summary.json</code> covers every trial of"));
    // Watched: the complete study's report is written once and the watch ends; the partial
    // one's page reloads itself, and the watch goes on (until Ctrl-C; killed here).
    let out = xtask()
        .args(["report", dir.join("watched").to_str().unwrap(), "--storage", url, "--study", study, "--watch", "1"])
        .args(["--worker-dir", dir.join("w1").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.lines().count() == 1 && stdout.contains("): finished"), "{stdout}");
    assert!(!std::fs::read_to_string(dir.join("watched/report.html")).unwrap().contains("http-equiv"));
    let mut watch = xtask()
        .args(["report", dir.join("partial").to_str().unwrap(), "--storage", url, "--study", study, "--watch", "1"])
        .args(["--worker-dir", dir.join("w0").to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        assert!(line.ends_with("; again in 1 s (Ctrl-C to stop)"), "{line}");
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    let html = std::fs::read_to_string(dir.join("partial/report.html")).unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"1\">"));
    // Without worker folders: the trials, no traces, a note saying why.
    let bare = Study::from_store(
        &out_dir,
        Kept { study: study.into(), target: store.target().into(), folders: vec![] },
        &store,
    )
    .unwrap();
    assert_eq!(bare.trials.len(), n);
    assert!(bare.trials.iter().all(|t| t.trace.points.is_empty()) && bare.best.is_none());
    assert!(bare.notes.iter().any(|n| n.contains("no worker folders given")), "{:?}", bare.notes);
}

#[test]
fn rl_workers_merge_every_trial_into_one_policy() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("rl");
    let n = 8;
    // p1 creates the study from the shipped digits prior; p2, given no --policy, joins it
    // and starts from the study's policy too.
    let mut p1 = worker_with(&url, &study, "p1", dir.path(), n, "30", &["--strategy", "rl", "--policy", "digits"]);
    let mut db = client(&url);
    let t = Instant::now();
    while db.query_opt("SELECT 1 FROM studies WHERE name = $1", &[&study]).unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "p1 never created the study");
        if p1.try_wait().unwrap().is_some() {
            panic!("p1 exited early: {}", std::fs::read_to_string(dir.path().join("p1.log")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ws = [p1, worker_with(&url, &study, "p2", dir.path(), n, "30", &["--strategy", "rl"])];
    for (i, w) in ws.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("p{}", i + 1), Duration::from_secs(600));
    }
    let rows = trials(&mut db, &study);
    assert_eq!(rows.len() as u64, n);
    let finished = rows.iter().filter(|r| r.1 == "completed" || r.1 == "stopped").count() as i64;
    let by: BTreeSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(by.len(), 2, "both workers ran trials: {by:?}");
    // One update per finished trial, whichever worker finished it: none overwritten.
    let updates: i64 = db.query_one("SELECT updates FROM policy WHERE study = $1", &[&study]).unwrap().get(0);
    assert_eq!(updates, finished);
    // Both workers end with the study's policy.
    let stored: serde_json::Value = serde_json::from_str(
        &db.query_one("SELECT state FROM policy WHERE study = $1", &[&study]).unwrap().get::<_, String>(0),
    )
    .unwrap();
    for name in ["p1", "p2"] {
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name).join("policy.json")).unwrap()).unwrap();
        assert_eq!(saved, stored, "{name}");
    }
    // Every update went on from the prior the study started with, p2's first included (each
    // trial of 600 steps takes decisions every 20 before its first rung at 66).
    let prior = tuneforge_agent::policy::StudyPolicy::pretrained().episodes;
    assert_eq!(stored["episodes"].as_i64().unwrap(), prior as i64 + finished);
}

/// `--patience` across workers: each checks the study's trials before it claims one, so
/// the study ends where its trials (in the order they ended) first met the rule, give or
/// take the one trial the other worker had claimed.
#[test]
fn workers_end_a_study_at_its_patience() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("patience");
    let args = ["--strategy", "random", "--patience", "4"];
    let mut ws: Vec<Child> =
        ["p1", "p2"].iter().map(|w| worker_with(&url, &study, w, dir.path(), 200, "30", &args)).collect();
    for (i, w) in ws.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("p{}", i + 1), Duration::from_secs(600));
    }
    let mut db = client(&url);
    let rows: Vec<(i64, String, f64, f64)> = db
        .query(
            "SELECT id, status, coalesce(val_macro_f1, 'NaN'), ended_unix FROM trials WHERE study = $1 ORDER BY ended_unix, id",
            &[&study],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    // Replay the ends: the best (highest F1, the earlier on ties) and the trials after it.
    let mut met = None;
    for k in 1..=rows.len() {
        let ended = &rows[..k];
        let best = ended
            .iter()
            .filter(|r| r.1 == "completed" && !r.2.is_nan())
            .fold(None::<&(i64, String, f64, f64)>, |b, r| if b.is_none_or(|b| r.2 > b.2) { Some(r) } else { b });
        if let Some(b) = best
            && ended.iter().filter(|r| r.0 > b.0).count() >= 4
        {
            met = Some(k);
            break;
        }
    }
    let met = met.unwrap_or_else(|| panic!("the rule was never met: {rows:?}"));
    assert!(rows.len() <= met + 1 && rows.len() < 200, "{} trials, met after {met}", rows.len());
    // Trials end at their end, but the one the other worker was running when the rule was met
    // may stop at a decision point once its worker read that.
    assert!(rows[..met].iter().all(|r| r.1 == "completed" || r.1.starts_with("failed")), "{rows:?}");
    assert!(
        rows[met..].iter().all(|r| r.1 == "completed" || r.1 == "stopped" || r.1.starts_with("failed")),
        "{rows:?}"
    );
    for name in ["p1", "p2"] {
        let s = summary(&dir.path().join(name));
        assert_eq!(s["ended"]["why"], "patience", "{name}: {}", s["ended"]);
        assert!(s["ended"]["trials_after"].as_u64().unwrap() >= 4, "{name}");
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(log.contains("until 4 trials without a better one"), "{log}");
    }
}

/// `--stop-at` across workers: once one worker's trial reaches the F1, a trial running on
/// another stops at its next decision point (its worker reads the rule while it trains),
/// not at its end. Trial 0 is slow and poor (lr 1e-5, 8 units: far from the F1 in its
/// 30,000 steps); trial 1, started once trial 0 runs, reaches it within a few hundred.
#[test]
fn a_trial_running_on_another_worker_stops_once_the_study_reaches_stop_at() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("stop-at");
    let steps = 30_000;
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        xtask()
            .args(["tune", "--storage", &url, "--study", &study, "--worker", name])
            .args(["--dataset", "digits", "--budget", "900s", "--seed", "3", "--strategy", "random"])
            .args(["--enqueue", "lr=1e-5,model=mlp:8", "--enqueue", "lr=3e-3", "--stop-at", "0.95"])
            .args(["--max-trials", "50", "--trial-steps", &steps.to_string(), "--decision-steps", "200"])
            .args(["--checkpoint-every", "0", "--heartbeat-timeout", "30", "--retry-for", "120"])
            .args(["--out", dir.path().join(name).to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut slow = spawn("slow");
    let mut db = client(&url);
    let t = Instant::now();
    // (The first worker on a fresh server creates the tables.)
    while db
        .query_opt("SELECT 1 FROM trials WHERE study = $1 AND id = 0 AND status = 'running'", &[&study])
        .ok()
        .flatten()
        .is_none()
    {
        assert!(t.elapsed() < Duration::from_secs(60), "trial 0 never ran");
        assert!(slow.try_wait().unwrap().is_none(), "the first worker exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ws = [slow, spawn("fast")];
    for (w, name) in ws.iter_mut().zip(["slow", "fast"]) {
        wait_ok(w, dir.path(), name, Duration::from_secs(300));
    }
    let rows: Vec<(i64, String, String, f64)> = db
        .query("SELECT id, status, worker, val_macro_f1 FROM trials WHERE study = $1 ORDER BY id", &[&study])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("stopped", "fast"), "{rows:?}");
    assert!(rows[1].3 >= 0.95 && rows[0].3 < 0.95, "{rows:?}");
    // Trial 0 stopped short of its rows, on the worker that ran it.
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("stopped", "slow"), "{rows:?}");
    let record: serde_json::Value = serde_json::from_str(
        &db.query_one("SELECT record FROM trials WHERE study = $1 AND id = 0", &[&study]).unwrap().get::<_, String>(0),
    )
    .unwrap();
    assert!(record["steps"].as_u64().unwrap() < steps, "{record}");
    for name in ["slow", "fast"] {
        assert_eq!(summary(&dir.path().join(name))["ended"]["why"], "f1_reached", "{name}");
    }
}

/// `tpe` on PostgreSQL: one worker draws exactly the starts of a single-process `tpe` study
/// (it reads every trial ended before each claim from the server, where the single process
/// has them in memory); two workers share a study, each drawing from both workers' trials.
#[test]
fn tpe_workers_draw_starts_from_every_ended_trial() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let n = 14;
    let args = ["--strategy", "tpe"];
    // The reference: the same study in one process with SQLite storage.
    let local = dir.path().join("local");
    let out = xtask()
        .args(["tune", "--dataset", "digits", "--budget", "900s", "--seed", "3", "--strategy", "tpe"])
        .args(["--max-trials", &n.to_string(), "--trial-steps", &TRIAL_STEPS.to_string()])
        .args(["--decision-steps", &DECISION_STEPS.to_string(), "--checkpoint-every", "0"])
        .args(["--out", local.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let starts = |s: &serde_json::Value| -> Vec<(u64, serde_json::Value, String)> {
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["id"].as_u64().unwrap(), t["start"].clone(), t["status"].as_str().unwrap().to_string()))
            .collect()
    };
    let reference = starts(&summary(&local));
    assert_eq!(reference.len() as u64, n);
    // tpe's own starts (from trial 10 on) and rung stops are part of what is compared.
    assert!(reference.iter().any(|t| t.2 == "stopped"), "{reference:?}");
    let study = unique("tpe-one");
    let mut one = worker_with(&url, &study, "one", dir.path(), n, "30", &args);
    wait_ok(&mut one, dir.path(), "one", Duration::from_secs(600));
    assert_eq!(starts(&summary(&dir.path().join("one"))), reference);

    // Two workers, the second joining once the first has ended 10 trials: its first start is
    // drawn from the first worker's trials, not at random (as with nothing read).
    let study = unique("tpe-two");
    let n = 24;
    let mut t1 = worker_with(&url, &study, "t1", dir.path(), n, "30", &args);
    let mut db = client(&url);
    let t = Instant::now();
    loop {
        let ended: i64 = db
            .query_one(
                "SELECT count(*) FROM trials WHERE study = $1 AND status NOT IN ('running', 'paused')",
                &[&study],
            )
            .map_or(0, |r| r.get(0));
        if ended >= 10 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "t1 ended {ended} trials");
        assert!(t1.try_wait().unwrap().is_none(), "t1 exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ws = [t1, worker_with(&url, &study, "t2", dir.path(), n, "30", &args)];
    for (i, w) in ws.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("t{}", i + 1), Duration::from_secs(600));
    }
    let rows = trials(&mut db, &study);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), (0..n as i64).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r.1 == "completed" || r.1 == "stopped" || r.1.starts_with("failed")), "{rows:?}");
    let first = rows.iter().find(|r| r.2 == "t2").unwrap_or_else(|| panic!("t2 ran no trial: {rows:?}")).0 as usize;
    assert!(first >= 10, "{rows:?}");
    // Random draws of the same seed (they do not depend on the trials' length).
    let random = dir.path().join("random");
    let out = xtask()
        .args(["tune", "--dataset", "digits", "--budget", "900s", "--seed", "3", "--strategy", "random"])
        .args(["--max-trials", &n.to_string(), "--trial-steps", "40", "--decision-steps", "20"])
        .args(["--out", random.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = export(&url, &study, dir.path());
    let lr = |s: &serde_json::Value, id: usize| s["trials"][id]["start"]["lr"].as_f64().unwrap();
    assert_eq!(lr(&summary(&random), 3), lr(&summary(&dir.path().join("t1")), 3), "random draws as tpe's first");
    assert_ne!(lr(&summary(&random), first), lr(&summary(&dir.path().join("t2")), first), "trial {first}");
    for name in ["t1", "t2"] {
        let s = summary(&dir.path().join(name));
        assert_eq!(s["best"]["trial"], exported["best"]["trial"], "{name}");
        assert_eq!(starts(&s).len() as u64, n, "{name}");
    }
}

#[test]
fn asha_workers_promote_each_others_paused_trials() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("asha");
    let n = 15;
    let mut ws: Vec<Child> = ["a1", "a2", "a3"]
        .iter()
        .map(|w| worker_with(&url, &study, w, dir.path(), n, "30", &["--strategy", "asha"]))
        .collect();
    for (i, w) in ws.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("a{}", i + 1), Duration::from_secs(600));
    }
    let exported = export(&url, &study, dir.path());
    let trials = exported["trials"].as_array().unwrap();
    let ids: Vec<u64> = trials.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..n).collect::<Vec<_>>());
    let mut promoted = 0;
    for t in trials {
        let status = t["status"].as_str().unwrap();
        let record: serde_json::Value = serde_json::from_str(t["record"].as_str().unwrap()).unwrap();
        let rungs = record["rungs"].as_array().map_or(0, |r| r.len());
        // Nothing is left running or paused; a trial that reached the last rung completed.
        match status {
            "completed" => assert_eq!(rungs, 3, "trial {}", t["id"]),
            "stopped" => assert!(rungs < 3, "trial {}", t["id"]),
            s => assert!(s.starts_with("failed"), "trial {}: {s}", t["id"]),
        }
        promoted += usize::from(rungs >= 2);
        // Every decision once, however many workers trained the trial.
        let idx: Vec<u64> =
            t["decisions_rows"].as_array().unwrap().iter().map(|d| d["idx"].as_u64().unwrap()).collect();
        assert_eq!(idx, (0..idx.len() as u64).collect::<Vec<_>>(), "trial {}", t["id"]);
    }
    assert!(promoted > 0, "some paused trial was promoted");
    for name in ["a1", "a2", "a3"] {
        assert_eq!(summary(&dir.path().join(name))["best"]["trial"], exported["best"]["trial"], "{name}");
    }
}

#[test]
fn workers_ride_out_a_server_restart() {
    let Some(url) = url() else { return };
    let (Ok(data), Ok(bin)) = (std::env::var("TUNEFORGE_PG_DATA"), std::env::var("TUNEFORGE_PG_BIN")) else {
        assert!(std::env::var_os("CI").is_none(), "TUNEFORGE_PG_DATA and TUNEFORGE_PG_BIN are set by .ci/postgres.sh");
        eprintln!("skipped: TUNEFORGE_PG_DATA/TUNEFORGE_PG_BIN not set (the server cannot be restarted)");
        return;
    };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    // The server started here must not inherit this process's open files (a build lock held
    // through `flock cargo test` would stay locked while the server runs): bash closes every
    // descriptor above 2 before it runs pg_ctl.
    let pg_ctl = |args: &str| {
        let ok = Command::new("bash")
            .arg("-c")
            .arg(r#"for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec su postgres -c "$0""#)
            .arg(format!("{bin}/pg_ctl -D {data} -l {data}/server.log -w {args}"))
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl {args}");
    };
    let dir = tempfile::tempdir().unwrap();
    let study = unique("restart");
    let n = 10;
    let mut ws = [worker(&url, &study, "r1", dir.path(), n, "60"), worker(&url, &study, "r2", dir.path(), n, "60")];
    let mut db = client(&url);
    let t = Instant::now();
    loop {
        let done: i64 = db
            .query_one("SELECT count(*) FROM trials WHERE study = $1 AND status = 'completed'", &[&study])
            .unwrap()
            .get(0);
        if done >= 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "no trial completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(db);
    pg_ctl("-m fast stop");
    std::thread::sleep(Duration::from_secs(3));
    pg_ctl("start");
    for (i, w) in ws.iter_mut().enumerate() {
        wait_ok(w, dir.path(), &format!("r{}", i + 1), Duration::from_secs(600));
    }
    let mut db = client(&url);
    check_complete(&mut db, &study, n);
    let logs: String =
        ["r1", "r2"].iter().map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap()).collect();
    assert!(logs.contains("retrying"), "the workers saw the server go away:\n{logs}");
}

#[test]
fn bad_urls_and_strategies_give_clear_errors() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let run = |args: &[&str]| {
        let t = Instant::now();
        let out = xtask().args(args).output().unwrap();
        assert!(t.elapsed() < Duration::from_secs(30), "{args:?} took {:?}", t.elapsed());
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let tune = ["tune", "--dataset", "digits", "--study", "bad", "--storage"];
    let (ok, err) = run(&[&tune[..], &["postgres://me:secret@127.0.0.1:1/db"]].concat());
    assert!(!ok && err.contains("127.0.0.1:1") && !err.contains("secret"), "{err}");
    let wrong = format!("postgres://postgres:wrong-one@{}", url.split_once('@').unwrap().1);
    let (ok, err) = run(&[&tune[..], &[wrong.as_str()]].concat());
    assert!(!ok && err.contains("password") && !err.contains("wrong-one"), "{err}");
    let (ok, err) = run(&[&tune[..], &[url.as_str(), "--strategy", "pbt"]].concat());
    assert!(!ok && err.contains("pbt cannot be shared"), "{err}");
    let (ok, err) = run(&[&tune[..], &[url.as_str(), "--strategy", "pb2"]].concat());
    assert!(!ok && err.contains("pb2 cannot be shared"), "{err}");
    let (ok, err) = run(&["tune", "--storage", &url]);
    assert!(!ok && err.contains("--study"), "{err}");
    // A model that cannot take the data: refused before the study row is written.
    let study = unique("cnn-on-digits");
    let (ok, err) = run(&["tune", "--dataset", "digits", "--model", "seed-cnn", "--study", &study, "--storage", &url]);
    assert!(!ok && err.contains("the starting model seed-cnn cannot train on digits"), "{err}");
    let rows = client(&url).query("SELECT name FROM studies WHERE name = $1", &[&study]).unwrap();
    assert!(rows.is_empty(), "the study was created");
    // Once a worker has created it, one joining with that model takes the stored settings.
    let dir = tempfile::tempdir().unwrap();
    let mut first = worker(&url, &study, "first", dir.path(), 2, "30");
    wait_ok(&mut first, dir.path(), "first", Duration::from_secs(120));
    let mut joining = worker_with(&url, &study, "joining", dir.path(), 2, "30", &["--model", "seed-cnn"]);
    wait_ok(&mut joining, dir.path(), "joining", Duration::from_secs(120));
    let config: String =
        client(&url).query_one("SELECT config FROM studies WHERE name = $1", &[&study]).unwrap().get(0);
    assert!(config.contains("\"model\":\"mlp:64\""), "{config}");
    let (ok, err) = run(&["study", "list", "--storage", "mysql://x@y/z"]);
    assert!(!ok && err.contains("expected sqlite://"), "{err}");
    let (ok, err) = run(&["study", "list", "--storage", &url]);
    assert!(ok, "{err}");
}

#[test]
fn a_worker_run_again_under_its_name_leaves_the_finished_study_as_it_was() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("again");
    let n = 3;
    let snapshot = |db: &mut postgres::Client| -> Vec<(i64, String, String, i64, i64)> {
        db.query(
            "SELECT id, status, record, decisions, (SELECT count(*) FROM decisions d WHERE d.study = t.study \
             AND d.trial = t.id) FROM trials t WHERE study = $1 ORDER BY id",
            &[&study],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    };
    let mut first = worker(&url, &study, "w", dir.path(), n, "30");
    wait_ok(&mut first, dir.path(), "w", Duration::from_secs(300));
    let mut db = client(&url);
    let before = snapshot(&mut db);
    assert_eq!(before.len() as u64, n);
    // The same command again (say, to get the outputs once more): the study is done, and
    // its first trial must not be claimed again as new (it was, and was overwritten).
    let mut again = worker(&url, &study, "w", dir.path(), n, "30");
    wait_ok(&mut again, dir.path(), "w", Duration::from_secs(300));
    assert_eq!(snapshot(&mut db), before);
    assert_eq!(summary(&dir.path().join("w"))["trials"].as_array().unwrap().len() as u64, n);
}

/// Ctrl-C on a worker stops it alone: its running trial ends as `stopped` (or completes at
/// that decision point), it writes the study so far and exits 130; the worker that goes on
/// finishes the study's trial budget.
#[test]
fn an_interrupted_worker_stops_alone_and_the_other_finishes() {
    let Some(url) = url() else { return };
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let study = unique("interrupt");
    let n = 12;
    let mut db = client(&url);
    let mut a = worker(&url, &study, "a", dir.path(), n, "30");
    let mut b = worker(&url, &study, "b", dir.path(), n, "30");
    // Interrupted once `a` has ended a trial and runs another.
    let t = Instant::now();
    let busy = "SELECT count(*) FROM trials WHERE study = $1 AND worker = 'a' AND status = 'running'";
    let ended = "SELECT count(*) FROM trials WHERE study = $1 AND worker = 'a' AND status <> 'running'";
    loop {
        assert!(t.elapsed() < Duration::from_secs(120), "worker a never ran a second trial");
        assert!(a.try_wait().unwrap().is_none(), "worker a ended before it could be interrupted");
        // 0 until the first worker has created the schema.
        let count =
            |sql: &str, db: &mut postgres::Client| db.query_one(sql, &[&study]).map_or(0, |r| r.get::<_, i64>(0));
        if count(ended, &mut db) >= 1 && count(busy, &mut db) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-INT", &a.id().to_string()]).status().unwrap().success());
    let status = a.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted after") && log.contains("a worker started on it again"), "{log}");
    let stopped_at = summary(&dir.path().join("a"))["trials"].as_array().unwrap().len() as u64;
    assert!(stopped_at < n, "a's summary: {stopped_at} trials");
    wait_ok(&mut b, dir.path(), "b", Duration::from_secs(300));
    // Every trial ended; none is left running for a dead worker.
    let rows = trials(&mut db, &study);
    assert_eq!(rows.len() as u64, n);
    assert!(rows.iter().all(|r| r.1 == "completed" || r.1 == "stopped"), "{rows:?}");
    assert!(rows.iter().any(|r| r.2 == "a") && rows.iter().any(|r| r.2 == "b"), "{rows:?}");
    assert_eq!(summary(&dir.path().join("b"))["trials"].as_array().unwrap().len() as u64, n);
}
