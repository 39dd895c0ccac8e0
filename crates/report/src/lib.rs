//! `tuneforge-report`: one self-contained HTML file that shows a study — how each strategy
//! progressed, what the agent did to the learning rate, batch size and widths, where the
//! validation-F1/throughput trade-off lies, and how good the best model is.
//!
//! [`write_report`] reads a `cargo xtask tune` output folder (or a `bench-tune` folder of
//! such studies) and writes `report.html` into it: inline CSS and SVG charts drawn by
//! plotters, no script, nothing fetched when it is viewed, so it can be attached to a pull
//! request. It reads a study that is still running or was killed too (from the study store
//! and the event log; a torn last line of the log is skipped) and says that it is incomplete:
//! running (in which process) or not (killed or stopped). [`write_report_refreshing`] makes
//! the page of a running study reload itself, for a report rewritten while the study goes on
//! (`cargo xtask report DIR --watch SECS`). A study kept in PostgreSQL, whose workers each
//! have a folder of their own, is read with [`data::Study::from_store`] and written with
//! [`write_study_report`].
//!
//! The charts: best validation macro-F1 so far against wall time (one line per study);
//! validation macro-F1 against training samples/s for every trial, with the Pareto front;
//! validation macro-F1 against each ended trial's starting learning rate, batch size and
//! first hidden width, and where it ended when trials moved (`rl`, `pbt`, `pb2`; a study page); training loss and validation macro-F1 of the best trials; per trial, learning rate,
//! batch size and hidden widths over the steps with anomaly and rollback markers; the best
//! model's confusion matrix as a heat map. The tables: how much each hyper-parameter alone
//! explains of the completed trials' validation macro-F1 (or, with fewer than 10, of every trial's at its
//! first rung; ω², [`data::omega_squared`]), a leaderboard, the study's
//! configuration, the best model's classification report and, for bench-tune folders, each
//! strategy's mean ± sd. [`data`] holds the figures behind them, for tests and other tools.
//!
//! A two-second study on the committed digits, then its report:
//!
//! ```
//! use std::time::Duration;
//! use candle_core::Device;
//! use tuneforge_agent::data::DataSource;
//! use tuneforge_agent::env::EnvConfig;
//! use tuneforge_agent::tune::{Strategy, TuneConfig, tune};
//! use tuneforge_loader::{DataDirs, GzCache};
//! use tuneforge_monitor::ProgressMode;
//!
//! # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! let dirs = DataDirs::new(vec![root.join("datasets")]); // where digits.csv is
//! let out = tempfile::tempdir().unwrap();
//! let study = TuneConfig {
//!     data: DataSource::parse("digits", None)?,
//!     model: "mlp:64".into(),
//!     strategy: Strategy::Rl,
//!     budget: Duration::from_secs(2),
//!     max_trials: None,
//!     enqueued: Vec::new(),
//!     stop_when: Default::default(),
//!     trial_timeout: None,
//!     seed: 0,
//!     batch_size: 32,
//!     lr: 3e-3,
//!     env: EnvConfig { decision_steps: 30, budget_steps: 300, ..EnvConfig::default() },
//!     checkpoint_every: Duration::from_secs(10),
//!     policy: None,
//!     progress: ProgressMode::Off,
//!     log_steps_every: 10,
//!     stop: Default::default(),
//!     cosine: true,
//!     val_fraction: 0.2,
//! };
//! tune(&study, &dirs, &GzCache::default_location(), &Device::Cpu, out.path(), &mut |_| {})?;
//!
//! let written = tuneforge_report::write_report(out.path())?;
//! assert_eq!(written.path, out.path().join("report.html"));
//! println!("{} charts, {} bytes", written.charts, written.bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chart;
pub mod data;
mod error;
mod html;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::data::Source;
pub use crate::error::{Error, Result};
pub use crate::html::{BENCH_LEADERBOARD_ROWS, LEADERBOARD_ROWS, TRACED_TRIALS};

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// `DIR/report.html`.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Charts in it.
    pub charts: usize,
    /// Studies it covers.
    pub studies: usize,
    /// Of which without `summary.json` (running or killed).
    pub incomplete: usize,
    /// Of which a live process runs now (a study kept in a database: incomplete).
    pub running: usize,
    /// Of the incomplete ones, those kept in a database ([`Study::from_store`](data::Study::from_store)): whether
    /// workers run them is not known.
    pub kept: usize,
    /// Trials of all its studies.
    pub trials: usize,
    /// The best of its studies' [`Study::best_val_f1`](data::Study::best_val_f1).
    pub best: Option<f64>,
}

/// The report of `source` as one HTML document; `generated` is the time shown in it.
pub fn render(source: &Source, generated: SystemTime) -> Result<String> {
    render_refreshing(source, generated, None)
}

/// [`render`], and while a study of `source` runs, a page that a browser reloads every
/// `refresh` seconds (for a report rewritten as the study goes, as `cargo xtask report
/// --watch` does). Without a running study the page is [`render`]'s.
pub fn render_refreshing(source: &Source, generated: SystemTime, refresh: Option<u32>) -> Result<String> {
    html::page(source, &humantime::format_rfc3339_seconds(generated).to_string(), refresh)
}

/// Reads the study (or bench-tune) folder `dir` and writes `dir/report.html` through a
/// synced temporary file and a rename (the agent's `write_atomic`), so a report being
/// viewed is never half-written.
pub fn write_report(dir: &Path) -> Result<Written> {
    write_report_refreshing(dir, None)
}

/// [`write_report`] with [`render_refreshing`]'s page.
pub fn write_report_refreshing(dir: &Path, refresh: Option<u32>) -> Result<Written> {
    write_source(dir, &Source::load(dir)?, refresh)
}

/// Writes the report of `study` (e.g. one kept in PostgreSQL, read with
/// [`Study::from_store`](data::Study::from_store)) to `dir/report.html`, creating `dir`, as
/// [`write_report`] does.
pub fn write_study_report(dir: &Path, study: data::Study) -> Result<Written> {
    write_study_report_refreshing(dir, study, None)
}

/// [`write_study_report`] with [`render_refreshing`]'s page: a study kept in a database
/// counts as running while it is incomplete (whether its workers still run is not known).
pub fn write_study_report_refreshing(dir: &Path, study: data::Study, refresh: Option<u32>) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    write_source(dir, &Source::Study(Box::new(study)), refresh)
}

/// Writes the report of one folder again and again while its studies run (`cargo xtask
/// report --watch`): each [`write`](Self::write) reads the study store anew and only the
/// events appended to each event log since the last write.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    following: data::Following,
}

impl Watcher {
    /// A watcher of the study (or bench-tune) folder `dir`; nothing is read yet.
    pub fn new(dir: &Path) -> Watcher {
        Watcher { dir: dir.to_path_buf(), following: data::Following::default() }
    }

    /// [`write_report_refreshing`] of the folder as it is now.
    pub fn write(&mut self, refresh: Option<u32>) -> Result<Written> {
        let source = Source::reload(&self.dir, &mut self.following)?;
        write_source(&self.dir, &source, refresh)
    }
}

fn write_source(dir: &Path, source: &Source, refresh: Option<u32>) -> Result<Written> {
    let page = render_refreshing(source, SystemTime::now(), refresh)?;
    let path = dir.join("report.html");
    tuneforge_agent::run::write_atomic(&path, page.as_bytes())?;
    let studies = source.studies();
    Ok(Written {
        path,
        bytes: page.len() as u64,
        charts: page.matches("<figure class=\"chart\"").count(),
        studies: studies.len(),
        incomplete: studies.iter().filter(|s| !s.complete()).count(),
        running: studies.iter().filter(|s| s.running()).count(),
        kept: studies.iter().filter(|s| !s.complete() && s.kept.is_some()).count(),
        best: studies.iter().flat_map(|s| s.best_val_f1()).max_by(f64::total_cmp),
        trials: studies.iter().map(|s| s.trials.len()).sum(),
    })
}
