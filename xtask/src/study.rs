//! `cargo xtask study list|show|export --storage URL`: look at studies without running a
//! worker (SQLite study folders and PostgreSQL databases alike).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tuneforge_agent::store::postgres::{PgOptions, StudyListing};
use tuneforge_agent::store::{DecisionRow, EvaluationRow, PostgresStore, SqliteStore, StudyRow, StudyStore, TrialRow};
use tuneforge_agent::tune::{TrialRecord, study_path};

use crate::tune::{Storage, parse_storage};

/// See the studies of a store.
#[derive(Debug, clap::Args)]
pub struct StudyArgs {
    #[command(subcommand)]
    pub command: StudyCommand,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum StudyCommand {
    /// One line per study: strategy, dataset, trials, open trials, best validation macro-F1.
    /// DIR may also be a folder of study folders (runs/, a bench-tune --out): one line for
    /// each study found up to three levels down.
    List(Where),
    /// A study and its trials.
    Show(Where),
    /// A study as JSON (study row, trials with their decisions and evaluations, policy,
    /// best trial; not the checkpoints' bytes), to --out or stdout.
    Export {
        #[command(flatten)]
        place: Where,
        /// Write the JSON here (atomically) instead of to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Which store and study.
#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    /// A `tune --out` folder (the same as --storage sqlite://DIR/study.sqlite).
    #[arg(value_name = "DIR", required_unless_present = "storage", conflicts_with = "storage")]
    pub dir: Option<PathBuf>,
    /// sqlite://DIR/study.sqlite or postgres://USER[:PASSWORD]@HOST:PORT/DB.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// The study (needed for show and export with PostgreSQL storage).
    #[arg(long, value_name = "NAME")]
    pub study: Option<String>,
}

/// A study as `export` writes it.
#[derive(Debug, Serialize)]
pub struct Export {
    /// The study's name.
    pub name: String,
    /// The study row.
    pub study: StudyRow,
    /// Every trial, by id.
    pub trials: Vec<ExportedTrial>,
    /// The policy's latest state (JSON), if any.
    pub policy: Option<serde_json::Value>,
    /// The best finished trial: highest validation macro-F1 among completed and stopped
    /// trials, ties to the one that ended first.
    pub best: Option<BestTrial>,
    /// The study's trial budget, if it has one (a PostgreSQL study keeps it beside its
    /// config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<u64>,
}

/// One trial with its rows.
#[derive(Debug, Serialize)]
pub struct ExportedTrial {
    /// The trial row.
    #[serde(flatten)]
    pub trial: TrialRow,
    /// Its decisions.
    pub decisions_rows: Vec<DecisionRow>,
    /// Its evaluations.
    pub evaluations: Vec<EvaluationRow>,
}

impl ExportedTrial {
    /// Its record (start, hyper-parameters now, rungs, ...); `None` if it cannot be read.
    pub fn record(&self) -> Option<TrialRecord> {
        serde_json::from_str(&self.trial.record).ok()
    }
}

/// The best trial.
#[derive(Debug, Serialize)]
pub struct BestTrial {
    /// Its id.
    pub trial: u64,
    /// Its validation macro-F1.
    pub val_macro_f1: f64,
}

/// The best finished trial of `trials` (see [`Export::best`]).
pub fn best_of(trials: &[TrialRow]) -> Option<BestTrial> {
    trials
        .iter()
        .filter(|t| t.status == "completed" || t.status == "stopped")
        .filter_map(|t| t.val_macro_f1.filter(|f| !f.is_nan()).map(|f| (t, f)))
        .min_by(|(a, fa), (b, fb)| {
            fb.total_cmp(fa)
                .then(a.ended_unix.unwrap_or(f64::INFINITY).total_cmp(&b.ended_unix.unwrap_or(f64::INFINITY)))
                .then(a.id.cmp(&b.id))
        })
        .map(|(t, f)| BestTrial { trial: t.id, val_macro_f1: f })
}

/// An opened store and the study's name.
enum Opened {
    Sqlite(String, SqliteStore),
    Postgres(String, Box<PostgresStore>),
}

impl Opened {
    fn parts(&self) -> (&str, &dyn StudyStore) {
        match self {
            Opened::Sqlite(name, s) => (name, s),
            Opened::Postgres(name, s) => (name, &**s),
        }
    }
}

impl Where {
    /// The store of a study kept in a database.
    pub fn database(url: &str, study: &str) -> Where {
        Where { dir: None, storage: Some(url.to_string()), study: Some(study.to_string()) }
    }

    fn storage(&self) -> anyhow::Result<Storage> {
        match (&self.dir, &self.storage) {
            (Some(dir), _) => Ok(Storage::Sqlite(dir.clone())),
            (None, Some(url)) => parse_storage(url),
            (None, None) => bail!("give a study folder (DIR) or --storage URL"),
        }
    }
}

fn open(place: &Where, need_study: bool) -> anyhow::Result<Opened> {
    match place.storage()? {
        Storage::Sqlite(dir) => {
            let store = SqliteStore::open_existing(&dir.join("study.sqlite"))?;
            let name = place.study.clone().unwrap_or_else(|| dir.display().to_string());
            Ok(Opened::Sqlite(name, store))
        }
        Storage::Postgres(url) => {
            let name = match (&place.study, need_study) {
                (Some(s), _) => s.clone(),
                (None, false) => "-".into(),
                (None, true) => {
                    bail!("--study NAME is needed with --storage postgres://... (a database holds many studies)")
                }
            };
            let options = PgOptions {
                worker: format!("study-cli:{}", std::process::id()),
                retry_for: Duration::from_secs(10),
                ..PgOptions::default()
            };
            Ok(Opened::Postgres(name.clone(), Box::new(PostgresStore::open(&url, &name, options)?)))
        }
    }
}

/// The PostgreSQL store of `place` (whose storage is a postgres:// URL), opened to read.
pub fn open_pg(place: &Where) -> anyhow::Result<Box<PostgresStore>> {
    match open(place, true)? {
        Opened::Postgres(_, store) => Ok(store),
        Opened::Sqlite(..) => bail!("--storage {}: not a PostgreSQL URL", place_name(place)),
    }
}

/// The study `place` names, exported.
pub fn export(place: &Where) -> anyhow::Result<Export> {
    let opened = open(place, true)?;
    let (name, store) = opened.parts();
    let name = name.to_string();
    let study = store.study()?.with_context(|| format!("no study named {name:?} in {}", place_name(place)))?;
    let rows = store.trials()?;
    let best = best_of(&rows);
    let max_trials = store.max_trials()?;
    let mut trials = Vec::new();
    for trial in rows {
        trials.push(ExportedTrial {
            decisions_rows: store.decisions(trial.id)?,
            evaluations: store.evaluations(trial.id)?,
            trial,
        });
    }
    let policy = match store.policy()? {
        Some(json) => Some(serde_json::from_str(&json).context("the stored policy state is not JSON")?),
        None => None,
    };
    Ok(Export { name, study, trials, policy, best, max_trials })
}

/// The listing of the SQLite study in `store`.
fn listing(name: String, store: &SqliteStore) -> anyhow::Result<StudyListing> {
    let study = store.study()?.with_context(|| format!("{name}: no study row"))?;
    let trials = store.trials()?;
    Ok(StudyListing {
        name,
        study,
        max_trials: store.max_trials()?,
        trials: trials.len() as u64,
        open: trials.iter().filter(|t| t.status == "running" || t.status == "paused").count() as u64,
        best: best_of(&trials).map(|b| (b.trial, b.val_macro_f1)),
    })
}

/// The study folders (holding a `study.sqlite`) in `dir`, up to three levels down (`runs/`,
/// `runs/bench/`, `runs/bench/rl-seed0/`), by path. Unreadable folders are passed over.
fn study_folders(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            // Links followed (a bench folder of linked studies); the depth bounds a loop.
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if study_path(&path).is_file() {
                out.push(path);
            } else if depth > 1 {
                walk(&path, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 3, &mut out);
    out.sort();
    out
}

fn place_name(place: &Where) -> String {
    match (&place.dir, &place.storage) {
        (Some(dir), _) => dir.display().to_string(),
        (None, Some(url)) => tuneforge_agent::store::postgres::redact_url(url),
        (None, None) => "-".into(),
    }
}

pub fn run(args: &StudyArgs) -> anyhow::Result<()> {
    match &args.command {
        StudyCommand::List(place) => {
            let listings: Vec<StudyListing> = match &place.dir {
                // A folder of study folders (runs/, a bench-tune --out): each of them.
                Some(dir) if !study_path(dir).exists() && dir.is_dir() => {
                    let found = study_folders(dir);
                    if found.is_empty() {
                        bail!(
                            "{}: not a study folder, and no study folder inside it (up to 3 levels down)",
                            dir.display()
                        );
                    }
                    let mut listings = Vec::new();
                    for folder in found {
                        let store = SqliteStore::open_existing(&study_path(&folder));
                        match store.map_err(anyhow::Error::from).and_then(|s| listing(folder.display().to_string(), &s))
                        {
                            Ok(l) => listings.push(l),
                            Err(e) => errln!("skipped {}: {e:#}", folder.display()),
                        }
                    }
                    listings
                }
                _ => match open(place, false)? {
                    Opened::Postgres(_, pg) => pg.list_studies()?,
                    Opened::Sqlite(name, store) => vec![listing(name, &store)?],
                },
            };
            // Columns as wide as their longest entry (paths of study folders, dataset names).
            let name_w = listings.iter().map(|l| l.name.chars().count()).max().unwrap_or(0).max(24);
            let data_w = listings.iter().map(|l| l.study.dataset.chars().count()).max().unwrap_or(0).max(14);
            outln!(
                "{:<name_w$} {:>11} {:<data_w$} {:>7} {:>5} {:>10} {:>10} {:>12}",
                "study",
                "strategy",
                "dataset",
                "trials",
                "open",
                "budget s",
                "elapsed s",
                "best val F1"
            );
            for l in &listings {
                let trials = match l.max_trials {
                    Some(m) => format!("{}/{m}", l.trials),
                    None => l.trials.to_string(),
                };
                outln!(
                    "{:<name_w$} {:>11} {:<data_w$} {:>7} {:>5} {:>10.1} {:>10.1} {:>12}",
                    l.name,
                    l.study.strategy,
                    l.study.dataset,
                    trials,
                    l.open,
                    l.study.budget_s,
                    l.study.elapsed_s,
                    l.best.map_or("-".into(), |(id, f)| format!("{f:.4} (#{id})"))
                );
            }
            if listings.is_empty() {
                outln!("(no studies in {})", place_name(place));
            }
        }
        StudyCommand::Show(place) => {
            let e = export(place)?;
            outln!(
                "study {}: {} on {}, seed {}, budget {:.1} s, elapsed {:.1} s, {} trials",
                e.name,
                e.study.strategy,
                e.study.dataset,
                e.study.seed,
                e.study.budget_s,
                e.study.elapsed_s,
                match e.max_trials {
                    Some(m) => format!("{}/{m}", e.trials.len()),
                    None => e.trials.len().to_string(),
                }
            );
            outln!(
                "{:>5} {:<10} {:>9} {:>9} {:>9} {:>7} {:>8} {:>7}  {:>8} {:>5} {}",
                "trial",
                "status",
                "val F1",
                "reward",
                "decisions",
                "rows",
                "resumed",
                "pid",
                "lr",
                "batch",
                "widths (now, or at the end)"
            );
            for t in &e.trials {
                let record = t.record();
                let hparams = record.as_ref().map(|r| &r.final_hparams);
                outln!(
                    "{:>5} {:<10} {:>9} {:>+9.3} {:>9} {:>7} {:>8} {:>7}  {:>8} {:>5} {}",
                    t.trial.id,
                    t.trial.status.split(':').next().unwrap_or(""),
                    t.trial.val_macro_f1.map_or("-".into(), |f| format!("{f:.4}")),
                    t.trial.reward,
                    t.trial.decisions,
                    t.decisions_rows.len(),
                    if t.trial.resumed { "yes" } else { "no" },
                    t.trial.pid,
                    hparams.map_or("-".into(), |h| format!("{:.2e}", h.lr)),
                    hparams.map_or("-".into(), |h| h.batch_size.to_string()),
                    hparams.map_or("-".into(), |h| format!("{:?}", h.widths)),
                );
            }
            match &e.best {
                Some(b) => {
                    let record = e.trials.iter().find(|t| t.trial.id == b.trial).and_then(ExportedTrial::record);
                    let how = record.map_or(String::new(), |r| {
                        let (start, end) = (&r.start, &r.final_hparams);
                        format!(
                            ": lr {}, batch {}, widths {:?} at its end (started as {} at lr {}, batch {})",
                            end.lr, end.batch_size, end.widths, start.model, start.lr, start.batch_size
                        )
                    });
                    outln!("best: trial {} (val macro-F1 {:.4}){how}", b.trial, b.val_macro_f1)
                }
                None => outln!("best: none yet (no finished trial)"),
            }
        }
        StudyCommand::Export { place, out: file } => {
            let e = export(place)?;
            let json = serde_json::to_string_pretty(&e)?;
            match file {
                Some(path) => tuneforge_agent::run::write_atomic(path, json.as_bytes())?,
                None => outln!("{json}"),
            }
        }
    }
    Ok(())
}
