//! `cargo xtask report DIR [--watch SECS]`: the HTML report of a study or bench-tune folder,
//! once or kept up to date while the study runs; `cargo xtask report --storage postgres://...
//! --study NAME --worker-dir DIR...`: the report of a study kept in PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tuneforge_agent::store::StudyStore;
use tuneforge_report::data::{Following, Kept, Study};
use tuneforge_report::{Error, Watcher, Written};

use crate::tune::{Storage, parse_storage};

/// `cargo xtask report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A `cargo xtask tune --out` or `bench-tune --out` folder; report.html is written into
    /// it. With `--storage postgres://...`: the folder to write report.html into (default
    /// runs/NAME, NAME being --study).
    #[arg(value_name = "DIR", required_unless_present = "storage")]
    pub dir: Option<PathBuf>,
    /// Draw a study kept in PostgreSQL (postgres://USER[:PASSWORD]@HOST:PORT/DB, with
    /// --study) instead of a folder: its trials, decisions and evaluations from the
    /// database, per-step traces and the best model from its workers' folders
    /// (--worker-dir). With --watch: rewritten until a worker's summary.json covers every
    /// trial (the study ended), or Ctrl-C. sqlite://DIR/study.sqlite is the same as DIR.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// The study's name in the database (with --storage postgres://...).
    #[arg(long, value_name = "NAME", requires = "storage")]
    pub study: Option<String>,
    /// A worker's --out folder (its events.jsonl and, once it ended, summary.json and
    /// predictions.csv); repeat for each worker whose steps should be drawn.
    #[arg(long = "worker-dir", value_name = "DIR", requires = "storage")]
    pub worker_dirs: Vec<PathBuf>,
    /// Rewrite report.html every SECS seconds while a study in DIR runs (the page then
    /// reloads itself in the browser at the same pace); ends by itself once no process runs
    /// a study there any more, after writing the final report. Waits for DIR to hold a study
    /// if it does not yet (start it beside `cargo xtask tune`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub watch: Option<u32>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let dir = match args.storage.as_deref().map(parse_storage).transpose()? {
        Some(Storage::Postgres(url)) => return kept_study(args, &url),
        Some(Storage::Sqlite(dir)) => {
            if args.dir.as_ref().is_some_and(|d| d != &dir) {
                bail!("DIR and --storage name different study folders");
            }
            if args.study.is_some() || !args.worker_dirs.is_empty() {
                bail!(
                    "--study and --worker-dir are for a study kept in PostgreSQL; a SQLite study folder holds one study and its events"
                );
            }
            dir
        }
        None => args.dir.clone().context("DIR is needed")?,
    };
    let Some(every) = args.watch else {
        let written = tuneforge_report::write_report(&dir).with_context(|| cannot(&dir))?;
        outln!("wrote {}", describe(&written));
        return Ok(());
    };
    watch(&dir, every)
}

/// The report of a study kept in PostgreSQL.
fn kept_study(args: &ReportArgs, url: &str) -> anyhow::Result<()> {
    let Some(name) = &args.study else {
        bail!("--storage postgres://... needs --study NAME (a database holds many studies)");
    };
    let place = crate::study::Where::database(url, name);
    let store = crate::study::open_pg(&place)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(name));
    for folder in &args.worker_dirs {
        if !folder.is_dir() {
            bail!("--worker-dir {}: no such folder", folder.display());
        }
    }
    let kept = Kept { study: name.clone(), target: store.target().to_string(), folders: args.worker_dirs.clone() };
    let what = || format!("cannot write the report of study {name} in {}", store.target());
    if store.study()?.is_none() {
        bail!("no study named {name:?} in {}", store.target());
    }
    let (mut failures, mut following) = (0, Following::default());
    loop {
        // Each look reads the database anew, and what the workers appended to their logs.
        let written = Study::reload_from_store(&dir, kept.clone(), &*store, &mut following)
            .and_then(|study| tuneforge_report::write_study_report_refreshing(&dir, study, args.watch))
            .with_context(what);
        let Some(every) = args.watch else {
            outln!("wrote {}", describe(&written?));
            return Ok(());
        };
        match written {
            Ok(written) if written.incomplete == 0 => {
                outln!("wrote {}: finished", describe(&written));
                return Ok(());
            }
            Ok(written) => {
                failures = 0;
                outln!("wrote {}; again in {every} s (Ctrl-C to stop)", describe(&written));
            }
            Err(e) if failures < 4 => {
                failures += 1;
                tracing::warn!(error = format!("{e:#}"), "report not written; trying again in {every} s");
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_secs(u64::from(every)));
    }
}

fn cannot(dir: &Path) -> String {
    format!("cannot write the report of {}", dir.display())
}

/// One line on what a report holds.
fn describe(written: &Written) -> String {
    let studies = if written.studies == 1 { "study" } else { "studies" };
    let mut line = format!(
        "{} ({:.1} KiB, {} charts, {} {studies}, {} trials",
        written.path.display(),
        written.bytes as f64 / 1024.0,
        written.charts,
        written.studies,
        written.trials,
    );
    if let Some(best) = written.best {
        line += &format!(", best val macro-F1 {best:.4}");
    }
    match (written.incomplete, written.running) {
        (0, _) => {}
        (n, _) if n == written.kept => {
            line += ", incomplete: no worker's summary.json covers every trial; workers may still run"
        }
        (n, 0) => line += &format!(", {n} incomplete and not running: killed or stopped"),
        (n, r) if n == r => line += &format!(", {r} running"),
        (n, r) => line += &format!(", {r} running, {} incomplete and not running", n - r),
    }
    line + ")"
}

/// Rewrites the report every `every` seconds until no study in the folder runs. A bench-tune
/// folder is between two studies for a moment: it ends only when two looks in a row find
/// nothing running. A folder with no study yet is waited for; another failed write is
/// retried (a study being created can be unreadable for a moment), five in a row end the
/// watch.
fn watch(dir: &Path, every: u32) -> anyhow::Result<()> {
    let pause = Duration::from_secs(u64::from(every));
    let (mut idle_looks, mut failures, mut waiting_said) = (0, 0, false);
    let mut wrote_once = false;
    // Each rewrite parses only the events logged since the last one.
    let mut watcher = Watcher::new(dir);
    loop {
        match watcher.write(Some(every)).with_context(|| cannot(dir)) {
            Ok(written) => {
                wrote_once = true;
                failures = 0;
                let bench = !tuneforge_agent::tune::study_path(dir).is_file();
                idle_looks = if written.running == 0 { idle_looks + 1 } else { 0 };
                if idle_looks >= if bench { 2 } else { 1 } {
                    let how = match written.incomplete {
                        0 => "finished".to_string(),
                        _ => format!(
                            "no longer running (killed or stopped; `cargo xtask tune --resume {}` continues it)",
                            dir.display()
                        ),
                    };
                    outln!("wrote {}: {how}", describe(&written));
                    return Ok(());
                }
                outln!("wrote {}; again in {every} s", describe(&written));
            }
            Err(e) if !wrote_once && is_not_a_study(&e) => {
                if !waiting_said {
                    outln!("waiting for a study in {} ({}); Ctrl-C to stop", dir.display(), e.root_cause());
                    waiting_said = true;
                }
            }
            Err(e) if failures < 4 => {
                failures += 1;
                tracing::warn!(error = format!("{e:#}"), "report not written; trying again in {every} s");
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(pause);
    }
}

fn is_not_a_study(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Error>(), Some(Error::NotAStudy { .. }))
}
