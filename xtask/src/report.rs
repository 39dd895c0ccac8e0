//! `cargo xtask report DIR [--watch SECS]`: the HTML report of a study or bench-tune folder,
//! once or kept up to date while the study runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tuneforge_report::{Error, Watcher, Written};

/// `cargo xtask report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A `cargo xtask tune --out` or `bench-tune --out` folder; report.html is written into it.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Rewrite report.html every SECS seconds while a study in DIR runs (the page then
    /// reloads itself in the browser at the same pace); ends by itself once no process runs
    /// a study there any more, after writing the final report. Waits for DIR to hold a study
    /// if it does not yet (start it beside `cargo xtask tune`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub watch: Option<u32>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let Some(every) = args.watch else {
        let written = tuneforge_report::write_report(&args.dir).with_context(|| cannot(args))?;
        println!("wrote {}", describe(&written));
        return Ok(());
    };
    watch(args, every)
}

fn cannot(args: &ReportArgs) -> String {
    format!("cannot write the report of {}", args.dir.display())
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
fn watch(args: &ReportArgs, every: u32) -> anyhow::Result<()> {
    let pause = Duration::from_secs(u64::from(every));
    let (mut idle_looks, mut failures, mut waiting_said) = (0, 0, false);
    let mut wrote_once = false;
    // Each rewrite parses only the events logged since the last one.
    let mut watcher = Watcher::new(&args.dir);
    loop {
        match watcher.write(Some(every)).with_context(|| cannot(args)) {
            Ok(written) => {
                wrote_once = true;
                failures = 0;
                let bench = !tuneforge_agent::tune::study_path(&args.dir).is_file();
                idle_looks = if written.running == 0 { idle_looks + 1 } else { 0 };
                if idle_looks >= if bench { 2 } else { 1 } {
                    let how = match written.incomplete {
                        0 => "finished".to_string(),
                        _ => format!(
                            "no longer running (killed or stopped; `cargo xtask tune --resume {}` continues it)",
                            args.dir.display()
                        ),
                    };
                    println!("wrote {}: {how}", describe(&written));
                    return Ok(());
                }
                println!("wrote {}; again in {every} s", describe(&written));
            }
            Err(e) if !wrote_once && is_not_a_study(&e) => {
                if !waiting_said {
                    println!("waiting for a study in {} ({}); Ctrl-C to stop", args.dir.display(), e.root_cause());
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
