//! The report of real studies (digits, committed; Fashion-MNIST, from ../shared/datasets):
//! its chart data checked against the study store read with plain SQL, a killed study and
//! bad folders, and the page rendered in headless Chromium (screenshot not blank, DOM with
//! the expected charts and table rows).
//!
//! Chromium: `TUNEFORGE_CHROMIUM` names the binary, else `chromium` on the PATH; .ci/run
//! installs Debian's. Without one the browser test is skipped with a message, except under
//! `CI`, where it fails.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Device;
use tuneforge_agent::data::DataSource;
use tuneforge_agent::env::EnvConfig;
use tuneforge_agent::tune::{Strategy, TuneConfig, tune};
use tuneforge_loader::{DataDirs, GzCache};
use tuneforge_monitor::ProgressMode;
use tuneforge_report::data::{Source, Study};
use tuneforge_report::{Error, LEADERBOARD_ROWS, TRACED_TRIALS, write_report};

fn repo_dirs() -> DataDirs {
    DataDirs::new(vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")])
}

fn shared_dirs() -> DataDirs {
    let dir = std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
    DataDirs::new(vec![dir])
}

fn cache() -> GzCache {
    GzCache::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("tuneforge-gz-cache"))
}

fn config(data: &str, strategy: Strategy, budget_s: f64, budget_steps: u64) -> TuneConfig {
    TuneConfig {
        data: DataSource::parse(data, None).unwrap(),
        model: "mlp:32".into(),
        strategy,
        budget: Duration::from_secs_f64(budget_s),
        max_trials: None,
        enqueued: Vec::new(),
        stop_when: Default::default(),
        trial_timeout: None,
        seed: 3,
        batch_size: 32,
        lr: 3e-3,
        env: EnvConfig { decision_steps: 20, budget_steps, ..EnvConfig::default() },
        checkpoint_every: Duration::ZERO,
        policy: None,
        progress: ProgressMode::Off,
        log_steps_every: 10,
        stop: Default::default(),
        cosine: true,
        val_fraction: 0.2,
    }
}

/// A bench-tune-like folder with two real digits studies, `rl-seed3` and `pbt-seed3`, made
/// once for all tests of this binary (tests copy what they change).
fn bench_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for strategy in [Strategy::Rl, Strategy::Pbt] {
            let out = dir.path().join(format!("{}-seed3", strategy.name()));
            tune(&config("digits", strategy, 3.0, 160), &repo_dirs(), &cache(), &Device::Cpu, &out, &mut |_| {})
                .unwrap();
        }
        dir
    })
    .path()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn load_study(dir: &Path) -> Study {
    match Source::load(dir).unwrap() {
        Source::Study(s) => *s,
        Source::Bench(_) => panic!("{} read as a bench folder", dir.display()),
    }
}

/// The study store read with plain SQL, independently of the agent crate's store code.
struct Sql(rusqlite::Connection);

impl Sql {
    fn open(dir: &Path) -> Sql {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        Sql(rusqlite::Connection::open_with_flags(dir.join("study.sqlite"), flags).unwrap())
    }

    fn count(&self, sql: &str) -> usize {
        self.0.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize
    }

    fn f64s(&self, sql: &str) -> Vec<f64> {
        let mut stmt = self.0.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, f64>(0)).unwrap().map(Result::unwrap).collect()
    }
}

/// A trial's trace from a log thinned to every `LOG_STEPS_EVERY`-th step: its first and last
/// steps, every multiple in between, the last step before each of its decisions, nothing twice, out
/// of order or beyond the trial.
fn thinned_trace_covers(t: &tuneforge_report::data::TrialData) {
    use tuneforge_agent::trial::LOG_STEPS_EVERY;
    let id = t.row.id;
    let steps: Vec<u64> = t.trace.points.iter().map(|p| p.step).collect();
    assert_eq!(steps.first(), Some(&0), "trial {id}: {steps:?}");
    assert_eq!(steps.last(), Some(&(t.record.steps - 1)), "trial {id}: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1] && w[1] - w[0] <= LOG_STEPS_EVERY), "trial {id}: {steps:?}");
    for m in (0..t.record.steps).step_by(LOG_STEPS_EVERY as usize) {
        assert!(steps.binary_search(&m).is_ok(), "trial {id}: step {m} missing from {steps:?}");
    }
    // A decision row counts the steps taken before it: its last step is one less.
    for d in &t.decisions {
        assert!(steps.binary_search(&(d.step - 1)).is_ok(), "trial {id}: decision after {} not in {steps:?}", d.step);
    }
    assert!(steps.len() as u64 <= t.record.steps);
}

#[test]
fn chart_data_agrees_with_the_store() {
    let dir = bench_dir().join("rl-seed3");
    let study = load_study(&dir);
    let sql = Sql::open(&dir);
    assert!(study.complete());
    assert_eq!(study.trials.len(), sql.count("SELECT count(*) FROM trials"));
    assert!(study.trials.len() >= 2, "a 3 s study of 160-step trials runs several: {}", study.trials.len());

    // Best so far: increasing, ends at the best validation F1 of the store, every point an
    // evaluation of the store at its time since the study's creation.
    let best = study.best_so_far();
    let max_val = sql.f64s("SELECT max(macro_f1) FROM evaluations WHERE split = 'validation'")[0];
    assert_eq!(best.last().unwrap().1, max_val);
    assert!(best.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1), "{best:?}");
    let times = sql.f64s(
        "SELECT e.at_unix - s.created_unix FROM evaluations e, study s WHERE e.split = 'validation' ORDER BY e.at_unix",
    );
    for (t, _) in &best {
        assert!(times.iter().any(|x| (x.max(0.0) - t).abs() < 1e-9), "{t} is no evaluation's time");
    }
    assert_eq!(best.first().unwrap().0, times[0].max(0.0), "the first evaluation starts the line");
    // The best model's validation F1 is the summary's (a mid-trial evaluation can be higher).
    let summary = study.summary.as_ref().unwrap();
    assert_eq!(study.best_val_f1(), Some(summary.best.val_macro_f1));
    assert!(summary.best.val_macro_f1 <= max_val);

    // Scatter: one point per trial with both figures, equal to the trial rows.
    let points = study.front_points();
    assert_eq!(
        points.len(),
        sql.count("SELECT count(*) FROM trials WHERE val_macro_f1 IS NOT NULL AND samples_per_s IS NOT NULL")
    );
    for (id, sps, f1) in &points {
        let row = sql.f64s(&format!("SELECT samples_per_s FROM trials WHERE id = {id}"));
        assert_eq!(row, [*sps]);
        let row = sql.f64s(&format!("SELECT val_macro_f1 FROM trials WHERE id = {id}"));
        assert_eq!(row, [*f1]);
    }

    // Traces: the trial's steps as the thinned log keeps them, ending on its final batch
    // size and widths.
    for t in &study.trials {
        let steps = &t.trace.points;
        thinned_trace_covers(t);
        let last = steps.last().unwrap();
        assert_eq!(last.batch_size as usize, t.record.final_hparams.batch_size, "trial {}", t.row.id);
        let widths: Vec<usize> = last.widths.iter().map(|&w| w as usize).collect();
        assert_eq!(widths, t.record.final_hparams.widths, "trial {}", t.row.id);
        assert_eq!(t.decisions.len(), sql.count(&format!("SELECT count(*) FROM decisions WHERE trial = {}", t.row.id)));
        assert_eq!(
            t.evaluations.len(),
            sql.count(&format!("SELECT count(*) FROM evaluations WHERE trial = {} AND split = 'validation'", t.row.id))
        );
    }
    // The best model: its confusion matrix counts the test split's rows.
    let model = study.best.as_ref().unwrap();
    let csv_rows = std::fs::read_to_string(dir.join("predictions.csv")).unwrap().lines().count() - 1;
    assert_eq!(model.confusion.total() as usize, csv_rows);
    let test_f1 = sql.f64s("SELECT macro_f1 FROM evaluations WHERE split = 'test'");
    assert!((model.report.macro_avg.f1 - test_f1[0]).abs() < 1e-9, "{} vs {test_f1:?}", model.report.macro_avg.f1);
}

/// PBT's members train time-sliced and share one event log; each step still goes back to
/// its own trial (the log's run_resume markers).
#[test]
fn pbt_members_get_their_own_steps() {
    let dir = bench_dir().join("pbt-seed3");
    let study = load_study(&dir);
    assert!(study.trials.len() >= 2);
    for t in &study.trials {
        thinned_trace_covers(t);
        // (The final batch size may differ from the last step's: an exploit after a member's
        // last interval sets hyper-parameters it never trained with.)
    }
}

#[test]
fn bench_folder_has_one_row_per_strategy() {
    let Source::Bench(bench) = Source::load(bench_dir()).unwrap() else { panic!("not read as a bench folder") };
    assert_eq!(bench.studies.len(), 2);
    let rows = bench.strategies();
    let names: Vec<&str> = rows.iter().map(|r| r.strategy.as_str()).collect();
    assert_eq!(names, ["pbt", "rl"], "in Strategy::ALL's order");
    for (row, name) in rows.iter().zip(["pbt", "rl"]) {
        let dir = bench_dir().join(format!("{name}-seed3"));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(row.mean_reward, Some((summary["mean_reward"].as_f64().unwrap(), 0.0)));
        assert_eq!(row.test_f1, Some((summary["best"]["test_macro_f1"].as_f64().unwrap(), 0.0)));
        assert_eq!(row.best_val_f1, Some((summary["best"]["val_macro_f1"].as_f64().unwrap(), 0.0)), "{name}");
        assert_eq!(row.trials.0 as usize, Sql::open(&dir).count("SELECT count(*) FROM trials"));
    }
}

/// A study killed mid-way: no summary.json and a torn last event. The report says so and
/// shows what is there.
#[test]
fn a_killed_study_is_reported_as_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("killed");
    copy_dir(&bench_dir().join("rl-seed3"), &dir);
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    // The copied lock names this test process (the study ran in it); a killed one's is gone.
    std::fs::remove_file(dir.join("study.lock")).unwrap();
    let mut log = std::fs::OpenOptions::new().append(true).open(dir.join("events.jsonl")).unwrap();
    std::io::Write::write_all(&mut log, br#"{"event":"step","step":17,"epo"#).unwrap();
    drop(log);

    let written = write_report(&dir).unwrap();
    assert_eq!((written.studies, written.incomplete), (1, 1));
    let html = std::fs::read_to_string(&written.path).unwrap();
    assert!(html.contains("id=\"incomplete\""), "no incomplete banner");
    assert!(html.contains("torn line"), "the torn line is not mentioned");
    assert!(!html.contains("data-chart=\"confusion\""), "no best model without summary.json");
    let study = load_study(&dir);
    assert_eq!(study.trials.len(), Sql::open(&dir).count("SELECT count(*) FROM trials"));
    study.trials.iter().for_each(thinned_trace_covers);
    // The best model it would return now: the best ended trial's final validation F1.
    let ended = Sql::open(&dir).f64s(
        "SELECT max(val_macro_f1) FROM trials WHERE status NOT IN ('running', 'paused') AND status NOT LIKE 'failed%'",
    )[0];
    assert_eq!(study.best_val_f1(), Some(ended));
    assert!(html.contains(&format!("of the best model</th><td class=\"l\">{ended:.4}<")), "overview");
    // Its process is gone: not running, and a watched page would not reload.
    assert!(html.contains("not running: killed or stopped"));
    let watched = tuneforge_report::write_report_refreshing(&dir, Some(7)).unwrap();
    assert_eq!(watched.running, 0);
    assert!(!std::fs::read_to_string(&watched.path).unwrap().contains("http-equiv"));
    // This process's pid in the lock but no lock held (as a pid reused after a kill): not
    // running either.
    std::fs::write(dir.join("study.lock"), std::process::id().to_string()).unwrap();
    assert_eq!(tuneforge_report::write_report_refreshing(&dir, Some(7)).unwrap().running, 0);
    // The same folder as a live process's (this one's pid in its lock, which it holds):
    // running, reloading.
    let holder = std::fs::OpenOptions::new().write(true).open(dir.join("study.lock")).unwrap();
    holder.lock().unwrap();
    let watched = tuneforge_report::write_report_refreshing(&dir, Some(7)).unwrap();
    assert_eq!((watched.incomplete, watched.running), (1, 1));
    let html = std::fs::read_to_string(&watched.path).unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"7\">"));
    assert!(html.contains(&format!("running in process {}", std::process::id())));
    assert!(html.contains("reloads every 7 s"));
    // Without --watch the page does not reload, running or not.
    assert!(!std::fs::read_to_string(write_report(&dir).unwrap().path).unwrap().contains("http-equiv"));
    drop(holder);
}

#[test]
fn folders_that_are_not_studies_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let text = |dir: &Path| match write_report(dir) {
        Err(e) => e.to_string(),
        Ok(w) => panic!("{} gave a report: {w:?}", dir.display()),
    };
    let missing = tmp.path().join("nowhere");
    let e = text(&missing);
    assert!(e.contains("nowhere") && e.contains("no such folder"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = text(&empty);
    assert!(e.contains("empty") && e.contains("no study.sqlite"), "{e}");
    assert!(matches!(write_report(&empty), Err(Error::NotAStudy { .. })));

    let garbage = tmp.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("study.sqlite"), vec![b'x'; 4096]).unwrap();
    let e = text(&garbage);
    assert!(e.contains("garbage/study.sqlite"), "{e}");

    // A study whose summary.json was damaged: named, with line and column.
    let damaged = tmp.path().join("damaged");
    copy_dir(&bench_dir().join("rl-seed3"), &damaged);
    std::fs::write(damaged.join("summary.json"), "{\n  \"dataset\": 3\n}").unwrap();
    let e = text(&damaged);
    assert!(e.contains("summary.json") && e.contains("line 2"), "{e}");
    assert!(!damaged.join("report.html").exists(), "no report is left behind on error");
}

/// A real Fashion-MNIST study (../shared/datasets): the classification report names the
/// classes and the confusion matrix counts the 10 000 test images.
#[test]
fn fashion_mnist_study() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fmnist");
    tune(&config("fashion-mnist", Strategy::Fixed, 4.0, 60), &shared_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {})
        .unwrap();
    let study = load_study(&dir);
    assert_eq!(study.best.as_ref().unwrap().confusion.total(), 10_000);
    let written = write_report(&dir).unwrap();
    let html = std::fs::read_to_string(written.path).unwrap();
    for name in ["0 T-shirt/top", "9 Ankle boot", "fashion-mnist-train"] {
        assert!(html.contains(name), "{name} missing");
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TUNEFORGE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile, offline.
fn run_chromium(bin: &Path, args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Nothing in the page is fetched when it is viewed: no script, stylesheet link, image or
/// font URL; the only URL is SVG's namespace name.
#[test]
fn the_report_is_one_offline_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    copy_dir(&bench_dir().join("rl-seed3"), &dir);
    let html = std::fs::read_to_string(write_report(&dir).unwrap().path).unwrap();
    for needle in ["<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "@font-face"] {
        assert!(!html.contains(needle), "{needle} in the report");
    }
    let urls = html.matches("http").count();
    assert_eq!(urls, html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(), "a URL other than SVG's namespace");
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide chromium (.ci/run installs it)");
        eprintln!("skipping the browser test: no chromium (set TUNEFORGE_CHROMIUM or install Debian's chromium)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    copy_dir(&bench_dir().join("rl-seed3"), &dir);
    let written = write_report(&dir).unwrap();
    let url = format!("file://{}", written.path.display());

    // The DOM after rendering: the charts and table rows the store calls for.
    let sql = Sql::open(&dir);
    let trials = sql.count("SELECT count(*) FROM trials");
    let dom = String::from_utf8(run_chromium(&bin, &["--dump-dom"], &url).stdout).unwrap();
    let charts = dom.matches("<figure class=\"chart\"").count();
    // Progress, front, slices, curves, one trace per shown trial, the confusion matrix.
    assert_eq!(charts, 4 + trials.min(TRACED_TRIALS) + 1, "{trials} trials");
    assert_eq!(dom.matches("<svg").count(), charts, "one SVG per chart");
    assert_eq!(dom.matches("<tr class=\"trial\"").count(), trials.min(LEADERBOARD_ROWS));
    assert_eq!(dom.matches("<tr class=\"class\"").count(), 10, "digits has 10 classes");
    assert_eq!(charts, written.charts);

    // The screenshot is not blank: its pixels vary.
    let png_path = tmp.path().join("report.png");
    run_chromium(&bin, &["--window-size=1100,2400", &format!("--screenshot={}", png_path.display())], &url);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1100, 2400));
    let channels = info.color_type.samples();
    let luma: Vec<f64> =
        buf[..info.buffer_size()]
            .chunks(channels)
            .map(|p| {
                if channels >= 3 {
                    (f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])) / 3.0
                } else {
                    f64::from(p[0])
                }
            })
            .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let variance = luma.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / luma.len() as f64;
    let dark = luma.iter().filter(|&&v| v < 128.0).count() as f64 / luma.len() as f64;
    eprintln!("screenshot: mean luma {mean:.1}, variance {variance:.1}, dark pixels {:.2}%", dark * 100.0);
    assert!(variance > 100.0, "blank page? luma variance {variance}");
    assert!(dark > 0.005, "almost nothing drawn: {:.3}% dark pixels", dark * 100.0);

    // In a narrow window (a laptop's half screen) nothing sticks out of the page: charts
    // shrink to its width, wide tables scroll inside themselves. The page has no script; a
    // copy with one measures the layout into the DOM.
    let measured = tmp.path().join("measured.html");
    let probe = "<script>const w = innerWidth; document.body.setAttribute('data-layout', JSON.stringify({\
        page: document.documentElement.scrollWidth, window: w, \
        wider: [...document.querySelectorAll('svg, table, figure')].filter(e => e.getBoundingClientRect().right > w + 0.5).length, \
        charts: [...document.querySelectorAll('figure.chart svg')].map(e => Math.round(e.getBoundingClientRect().width))}));</script></body>";
    std::fs::write(&measured, std::fs::read_to_string(&written.path).unwrap().replace("</body>", probe)).unwrap();
    for width in [700, 1100] {
        let out = run_chromium(
            &bin,
            &[&format!("--window-size={width},1000"), "--dump-dom"],
            &format!("file://{}", measured.display()),
        );
        let dom = String::from_utf8(out.stdout).unwrap();
        let json = dom
            .split("data-layout=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no layout in {dom:.300}"));
        let layout: serde_json::Value = serde_json::from_str(&json.replace("&quot;", "\"")).unwrap();
        let window = layout["window"].as_u64().unwrap();
        assert!(layout["page"].as_u64().unwrap() <= window, "{width}: the page scrolls sideways: {layout}");
        assert_eq!(layout["wider"], 0, "{width}: {layout}");
        let charts = layout["charts"].as_array().unwrap();
        assert_eq!(charts.len(), written.charts, "{layout}");
        assert!(charts.iter().all(|w| w.as_u64().unwrap() <= window), "{width}: {layout}");
    }
}

/// A study read again and again as its event log grows (`Source::reload`, what `report
/// --watch` does) has, after every piece, the traces and notes of the study read at once.
#[test]
fn a_study_reloaded_as_its_log_grows_equals_one_read_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("growing");
    copy_dir(&bench_dir().join("pbt-seed3"), &dir);
    let log = std::fs::read(dir.join("events.jsonl")).unwrap();
    assert!(log.len() > 10_000, "{} bytes", log.len());
    let mut following = tuneforge_report::data::Following::default();
    // Cuts mid-line and at line ends; the last piece completes the file.
    let cuts = [log.len() / 7, log.len() / 3 + 1, log.len() / 2, log.len() - 3, log.len()];
    for mut cut in cuts {
        // Not just before a `\n`: a whole line without it is an event for a one-off read and
        // not yet for a follower (LogFollower's documented difference).
        if log.get(cut) == Some(&b'\n') {
            cut -= 1;
        }
        std::fs::write(dir.join("events.jsonl"), &log[..cut]).unwrap();
        let once = Source::load(&dir).unwrap();
        let again = Source::reload(&dir, &mut following).unwrap();
        let (once, again) = (&once.studies()[0], &again.studies()[0]);
        assert_eq!(once.notes, again.notes, "cut {cut}");
        assert_eq!(once.trials.len(), again.trials.len());
        for (a, b) in once.trials.iter().zip(&again.trials) {
            assert!(a.trace == b.trace, "cut {cut}: trial {} differs", a.row.id);
        }
        let points: usize = again.trials.iter().map(|t| t.trace.points.len()).sum();
        assert!(points > 0 || cut < log.len() / 5, "cut {cut}: no points");
    }
    // A file replaced by a shorter one is read again from its start.
    std::fs::write(dir.join("events.jsonl"), &log[..log.len() / 3]).unwrap();
    let once = Source::load(&dir).unwrap();
    let again = Source::reload(&dir, &mut following).unwrap();
    for (a, b) in once.studies()[0].trials.iter().zip(&again.studies()[0].trials) {
        assert!(a.trace == b.trace, "after the restart: trial {} differs", a.row.id);
    }
}

/// A kept study's report read again and again as a worker's log grows
/// (`Study::reload_from_store`, what `report --storage … --watch` does) has, after every
/// piece, the traces and notes of the study read at once (`Study::from_store`). The store
/// here is the study's own SQLite file through the same `StudyStore` trait a PostgreSQL
/// study is read by; a second worker folder has no log yet.
#[test]
fn a_kept_study_reloaded_as_its_workers_logs_grow_equals_one_read_at_once() {
    use tuneforge_agent::store::SqliteStore;
    use tuneforge_agent::tune::study_path;
    use tuneforge_report::data::{Following, Kept};
    let tmp = tempfile::tempdir().unwrap();
    let (w1, w2) = (tmp.path().join("w1"), tmp.path().join("w2"));
    copy_dir(&bench_dir().join("pbt-seed3"), &w1);
    std::fs::create_dir(&w2).unwrap();
    let log = std::fs::read(w1.join("events.jsonl")).unwrap();
    let store = SqliteStore::open_existing(&study_path(&w1)).unwrap();
    let kept = Kept { study: "pbt-seed3".into(), target: "sqlite".into(), folders: vec![w1.clone(), w2.clone()] };
    let out = tmp.path().join("report");
    let mut following = Following::default();
    for mut cut in [log.len() / 5, log.len() / 2 + 1, log.len() - 2, log.len()] {
        if log.get(cut) == Some(&b'\n') {
            cut -= 1;
        }
        std::fs::write(w1.join("events.jsonl"), &log[..cut]).unwrap();
        if cut == log.len() {
            // The second worker's log appears, empty: it has logged nothing yet.
            std::fs::write(w2.join("events.jsonl"), b"").unwrap();
        }
        let once = Study::from_store(&out, kept.clone(), &store).unwrap();
        let again = Study::reload_from_store(&out, kept.clone(), &store, &mut following).unwrap();
        assert_eq!(once.notes, again.notes, "cut {cut}");
        assert!(once.notes.iter().any(|n| n.contains("w2") && n.contains("events.jsonl")) == (cut < log.len()));
        assert_eq!(once.trials.len(), again.trials.len());
        for (a, b) in once.trials.iter().zip(&again.trials) {
            assert!(a.trace == b.trace, "cut {cut}: trial {} differs", a.row.id);
        }
        let points: usize = again.trials.iter().map(|t| t.trace.points.len()).sum();
        assert!(points > 0, "cut {cut}: no points");
    }
}

/// The overview gives a study's trial budget beside its wall clock (only when it has one),
/// its early-stopping rule, why it ended, and where it searches.
#[test]
fn the_overview_gives_the_trial_budget_and_the_search_space() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("capped");
    let capped = TuneConfig {
        max_trials: Some(3),
        enqueued: vec!["lr=2e-3,batch=48".parse().unwrap(), "model=mlp:16,8".parse().unwrap()],
        ..config("digits", Strategy::Random, 60.0, 160)
    };
    tune(&capped, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
    let html = std::fs::read_to_string(write_report(&dir).unwrap().path).unwrap();
    assert!(
        html.contains(
            "<td class=\"l\">60 s or 3 trials, whichever ends first; ended because its trial budget was spent</td>"
        ),
        "capped"
    );
    assert!(html.contains("<td class=\"l\">3 (0 unfinished)</td>"), "trials");
    assert!(
        html.contains(
            "starts at lr 0.003, batch 32; bounds: lr 0.00001–1, batch 16–1024, widths 8–2048; enqueued first: \
             lr=0.002,batch=48; model=mlp:16,8</td>"
        ),
        "search space"
    );
    // The slices: three panels (lr, batch, width), a dot per ended trial in each.
    let slices = figure_of(&html, "slices");
    assert_eq!(slices.matches("Validation macro-F1 by ").count(), 3, "{slices}");
    assert_eq!(slices.matches("<circle").count(), 3 * 3, "{slices}");
    let plain = tmp.path().join("plain");
    copy_dir(&bench_dir().join("rl-seed3"), &plain);
    let html = std::fs::read_to_string(write_report(&plain).unwrap().path).unwrap();
    assert!(
        html.contains("budget</th><td class=\"l\">3 s; ended because its wall-clock budget was spent</td>"),
        "not capped"
    );
    // An early-stopping rule, and the study's end by it.
    let dir = tmp.path().join("patience");
    let rule = TuneConfig {
        max_trials: Some(100),
        stop_when: tuneforge_agent::tune::StopWhen { f1: None, patience: Some(2) },
        trial_timeout: Some(std::time::Duration::from_secs(30)),
        ..config("digits", Strategy::Random, 60.0, 160)
    };
    let summary = tune(&rule, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
    let Some(tuneforge_agent::tune::Ended::Patience { best_trial, .. }) = summary.ended else {
        panic!("{:?}", summary.ended)
    };
    let html = std::fs::read_to_string(write_report(&dir).unwrap().path).unwrap();
    let row = format!(
        "<td class=\"l\">60 s or 100 trials, whichever ends first; each trial at most 30 s; until 2 trials without a better one; ended because 2 \
         trials started after the best (trial {best_trial}) ended without beating it</td>"
    );
    assert!(html.contains(&row), "{row}");
}

/// The `<figure>` of the chart `kind` in a report page.
fn figure_of<'a>(html: &'a str, kind: &str) -> &'a str {
    let start = html.find(&format!("data-chart=\"{kind}\"")).unwrap_or_else(|| panic!("no {kind} chart"));
    &html[start..start + html[start..].find("</figure>").unwrap()]
}

/// The slices chart draws every ended trial of a small study once a panel (its thinning of
/// large studies is `keep_best`'s unit test).
#[test]
fn the_slices_chart_draws_every_ended_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("many");
    copy_dir(&bench_dir().join("rl-seed3"), &dir);
    let html = std::fs::read_to_string(write_report(&dir).unwrap().path).unwrap();
    let study = load_study(&dir);
    let count = |completed: bool| {
        study
            .trials
            .iter()
            .filter(|t| !matches!(t.row.status.as_str(), "running" | "paused") && !t.row.status.starts_with("failed"))
            .filter(|t| (t.row.status == "completed") == completed)
            .count()
    };
    let (completed, stopped) = (count(true), count(false));
    let slices = figure_of(&html, "slices");
    // Every trial of a series (completed, stopped) of up to 300, once a panel; of more, 300
    // (`keep_best`). mlp:32 has a width, so three panels a row; the rl policy moved trials,
    // so a second row against where they ended.
    assert!(completed > 5, "{completed} completed, {stopped} stopped");
    let moved = study.trials.iter().filter(|t| t.record.final_hparams.lr != t.record.start.lr).count();
    assert!(moved > 0, "no trial of the rl study changed its learning rate");
    assert_eq!(slices.matches("Validation macro-F1 by ").count(), 6);
    assert_eq!(slices.matches("Validation macro-F1 by learning rate at the end").count(), 1);
    let dots = slices.matches("<circle").count();
    assert_eq!(dots, 6 * (completed.min(300) + stopped.min(300)), "{completed} completed, {stopped} stopped");
}

/// ω² of each grouping of two real studies' completed trials equals statsmodels' one-way
/// ANOVA of the same groups (`scripts/fixtures/importance.py`, values in
/// `tests/fixtures/importance.json`).
#[test]
fn omega_squared_equals_statsmodels_on_real_studies() {
    use tuneforge_report::data::{lr_group, omega_squared};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/importance.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (name, study) in fixture["studies"].as_object().unwrap() {
        let trials = study["trials"].as_array().unwrap();
        let f1: Vec<f64> = trials.iter().map(|t| t["val_macro_f1"].as_f64().unwrap()).collect();
        for key in ["lr", "end_lr", "batch_size", "end_batch_size", "width", "end_width"] {
            let groups: Vec<i64> = trials
                .iter()
                .map(|t| match key {
                    "lr" | "end_lr" => lr_group(t[key].as_f64().unwrap()),
                    _ => t[key].as_i64().unwrap(),
                })
                .collect();
            let values: Vec<(i64, f64)> = groups.into_iter().zip(f1.iter().copied()).collect();
            let got = omega_squared(&values);
            match study["expected"].get(key) {
                Some(want) => {
                    let got = got.unwrap_or_else(|| panic!("{name} {key}: none"));
                    assert_eq!(got.groups as u64, want["groups"].as_u64().unwrap(), "{name} {key}");
                    let want = want["omega2"].as_f64().unwrap();
                    assert!((got.omega2 - want).abs() < 1e-9, "{name} {key}: {} against {want}", got.omega2);
                    checked += 1;
                }
                None => assert!(got.is_none(), "{name} {key}: one group, yet {got:?}"),
            }
        }
    }
    assert_eq!(checked, 12);
}

/// The report's importance table: one row per hyper-parameter of the study's completed
/// trials (read here with plain SQL), its ω² at the start and, where trials moved, at the
/// end; with too few completed trials, of every trial's F1 at its first rung (an asha study
/// of 15 trials); a study with too few of both says so instead.
#[test]
fn the_importance_table_reads_the_completed_trials() {
    // A random study of 12 trials (none stopped early: all complete), the rl study (trials
    // move; how many complete depends on the clock), and one of 3 trials: too few.
    let tmp = tempfile::tempdir().unwrap();
    let twelve = tmp.path().join("twelve");
    let capped = TuneConfig { max_trials: Some(12), ..config("digits", Strategy::Random, 600.0, 160) };
    tune(&capped, &repo_dirs(), &cache(), &Device::Cpu, &twelve, &mut |_| {}).unwrap();
    assert!(importance_is_of_the_store(&twelve) >= 10);
    importance_is_of_the_store(&bench_dir().join("rl-seed3"));
    let few = tmp.path().join("few");
    let capped = TuneConfig { max_trials: Some(3), ..config("digits", Strategy::Random, 600.0, 160) };
    tune(&capped, &repo_dirs(), &cache(), &Device::Cpu, &few, &mut |_| {}).unwrap();
    assert_eq!(importance_is_of_the_store(&few), 3);
    let asha = tmp.path().join("asha");
    let capped = TuneConfig { max_trials: Some(15), ..config("digits", Strategy::Asha, 600.0, 160) };
    tune(&capped, &repo_dirs(), &cache(), &Device::Cpu, &asha, &mut |_| {}).unwrap();
    assert_eq!(importance_is_of_the_store(&asha), 15, "every asha trial reaches its first rung");
}

/// Checks the importance table (or note) of the study in `dir` against ω² computed from its
/// store's completed trials (or, with fewer than 10, every trial's F1 at its first rung);
/// returns how many trials it read (with too few of both, how many completed).
fn importance_is_of_the_store(dir: &Path) -> usize {
    use tuneforge_report::data::{Omega, lr_group, omega_squared};
    let html = std::fs::read_to_string(write_report(dir).unwrap().path).unwrap();
    let sql = Sql::open(dir);
    let mut stmt = sql.0.prepare("SELECT status, record FROM trials ORDER BY id").unwrap();
    let all: Vec<(String, serde_json::Value)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (status, record) = r.unwrap();
            (status, serde_json::from_str(&record).unwrap())
        })
        .collect();
    // (record, the F1 explained)
    let completed: Vec<(&serde_json::Value, f64)> =
        all.iter().filter(|(s, _)| s == "completed").map(|(_, r)| (r, r["val_macro_f1"].as_f64().unwrap())).collect();
    let at_rung: Vec<(&serde_json::Value, f64)> =
        all.iter().filter_map(|(_, r)| Some((r, r["rungs"].as_array()?.first()?.as_f64()?))).collect();
    let (records, first_rung) = if completed.len() >= 10 { (completed, false) } else { (at_rung.clone(), true) };
    let n = records.len();
    if n < 10 {
        let c = all.iter().filter(|(s, _)| s == "completed").count();
        let rung =
            if at_rung.is_empty() { String::new() } else { format!(", and {} at their first rung", at_rung.len()) };
        assert!(
            html.contains(&format!("Importance: {c} completed trials, fewer than the 10 it needs{rung}.")),
            "{rung}"
        );
        assert!(!html.contains("data-table=\"importance\""));
        return c;
    }
    let omega = |key: &dyn Fn(&serde_json::Value) -> i64| -> Option<Omega> {
        let values: Vec<(i64, f64)> = records.iter().map(|&(r, f1)| (key(r), f1)).collect();
        omega_squared(&values)
    };
    let cell = |o: Option<Omega>| {
        o.map_or("<td>–</td><td>–</td>".into(), |o| format!("<td>{:.3}</td><td>{}</td>", o.omega2, o.groups))
    };
    let lr = |at: &'static str| move |r: &serde_json::Value| lr_group(r[at]["lr"].as_f64().unwrap());
    let batch = |at: &'static str| move |r: &serde_json::Value| r[at]["batch_size"].as_i64().unwrap();
    let start_width = |r: &serde_json::Value| -> i64 {
        r["start"]["model"].as_str().unwrap().split_once(':').unwrap().1.split(',').next().unwrap().parse().unwrap()
    };
    let end_width = |r: &serde_json::Value| r["final_hparams"]["widths"][0].as_i64().unwrap();
    let rows = [
        ("learning rate", omega(&lr("start")), omega(&lr("final_hparams"))),
        ("batch size", omega(&batch("start")), omega(&batch("final_hparams"))),
        ("first hidden width", omega(&start_width), omega(&end_width)),
    ];
    let moved = !first_rung && rows.iter().any(|(_, start, end)| start != end);
    let table = &html[html.find("<table data-table=\"importance\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    if first_rung {
        assert!(html.contains(&format!("the {n} trials' validation macro-F1 at their first rung")), "{n}");
    } else {
        assert!(html.contains(&format!("the {n} completed trials' validation macro-F1")));
    }
    assert_eq!(table.contains("<th>ω² at the end</th>"), moved, "{table}");
    for (name, start, end) in rows {
        let end = if moved { cell(end) } else { String::new() };
        let row = format!("<tr><td class=\"l\">{name}</td>{}{end}</tr>", cell(start));
        assert!(table.contains(&row), "{row}\n{table}");
    }
    assert_eq!(table.matches("<tr>").count(), 4, "{table}");
    n
}
