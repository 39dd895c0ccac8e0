//! What a report shows, read from a study folder: the study store (`study.sqlite`: trials,
//! decisions, evaluations), the event log (`events.jsonl`: every step's loss, learning rate,
//! batch size and widths, anomalies and rollbacks), `summary.json` (present once the study
//! finished) and the best model's test predictions (`predictions.csv`).
//!
//! Everything here is plain data, computed before any drawing, so that tests can check it
//! against the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tuneforge_agent::store::{DecisionRow, EvaluationRow, SqliteStore, StudyRow, StudyStore, TrialRow};
use tuneforge_agent::trial::TrialRecord;
use tuneforge_agent::tune::{TuneSummary, study_path};
use tuneforge_eval::{ClassificationReport, ConfusionMatrix};
use tuneforge_monitor::{Event, LogFollower, TornTail};

use crate::error::{Error, Result};

/// A folder a report can be made of.
#[derive(Debug)]
pub enum Source {
    /// One `cargo xtask tune` study.
    Study(Box<Study>),
    /// A `cargo xtask bench-tune` folder: one study per strategy and seed.
    Bench(Bench),
}

impl Source {
    /// Reads `dir`: a study if it holds `study.sqlite`, a bench-tune folder if its
    /// sub-folders do; anything else is [`Error::NotAStudy`].
    pub fn load(dir: &Path) -> Result<Source> {
        Source::read(dir, None)
    }

    /// [`load`](Self::load) for a folder read again and again while its studies run:
    /// `following` keeps each study's event log position and traces between calls, so only
    /// the events appended since the last call are parsed.
    pub fn reload(dir: &Path, following: &mut Following) -> Result<Source> {
        Source::read(dir, Some(following))
    }

    fn read(dir: &Path, mut following: Option<&mut Following>) -> Result<Source> {
        let mut study = |d: &Path| Study::read(d, following.as_deref_mut());
        let not_a_study = |why: String| Error::NotAStudy { path: dir.to_path_buf(), why };
        if !dir.is_dir() {
            return Err(not_a_study("no such folder".into()));
        }
        if study_path(dir).is_file() {
            return Ok(Source::Study(Box::new(study(dir)?)));
        }
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let subdirs: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| study_path(p).is_file()).collect();
        if subdirs.is_empty() {
            return Err(not_a_study(
                "no study.sqlite in it or in its sub-folders: give the --out folder of `cargo xtask tune` or `bench-tune`"
                    .into(),
            ));
        }
        let mut studies = subdirs.iter().map(|d| study(d)).collect::<Result<Vec<_>>>()?;
        studies.sort_by(|a, b| (strategy_rank(&a.row.strategy), &a.dir).cmp(&(strategy_rank(&b.row.strategy), &b.dir)));
        Ok(Source::Bench(Bench { dir: dir.to_path_buf(), studies }))
    }

    /// Every study of the folder.
    pub fn studies(&self) -> Vec<&Study> {
        match self {
            Source::Study(s) => vec![s.as_ref()],
            Source::Bench(b) => b.studies.iter().collect(),
        }
    }
}

/// The event logs of a folder's studies, followed across [`Source::reload`]s (or of a kept
/// study's worker folders, across [`Study::reload_from_store`]s).
#[derive(Debug, Default)]
pub struct Following {
    logs: BTreeMap<PathBuf, TraceFollower>,
}

impl Following {
    /// The traces of `dir/events.jsonl`: read at once without `following`, else by the
    /// follower of `dir` it keeps (made on first use). Notes say what is missing or torn.
    fn traces(following: Option<&mut Following>, dir: &Path, notes: &mut Vec<String>) -> Result<BTreeMap<u64, Trace>> {
        match following {
            Some(f) => f.logs.entry(dir.to_path_buf()).or_insert_with(|| TraceFollower::new(dir)).update(notes),
            None => read_traces(&dir.join("events.jsonl"), notes),
        }
    }
}

/// A bench-tune folder.
#[derive(Debug)]
pub struct Bench {
    /// The folder.
    pub dir: PathBuf,
    /// Its studies, by strategy (in [`Strategy::ALL`](tuneforge_agent::tune::Strategy::ALL)'s
    /// order), then folder name.
    pub studies: Vec<Study>,
}

/// One study, as far as it got.
#[derive(Debug)]
pub struct Study {
    /// The folder.
    pub dir: PathBuf,
    /// The study row: configuration, strategy, dataset, seed, budget, elapsed time.
    pub row: StudyRow,
    /// The study's configuration, parsed.
    pub config: serde_json::Value,
    /// Its trials, by id.
    pub trials: Vec<TrialData>,
    /// `summary.json`, once the study finished.
    pub summary: Option<TuneSummary>,
    /// The best model's test results, when `summary.json` and `predictions.csv` are there.
    pub best: Option<BestModel>,
    /// What could not be read fully (a torn last line of the event log, a missing file).
    pub notes: Vec<String>,
    /// The live process running the study when it was read (see
    /// [`study_process`](tuneforge_agent::tune::study_process)); `None` once it finished or
    /// was killed.
    pub process: Option<u32>,
    /// Where the study is kept when not in its folder's `study.sqlite` (see
    /// [`Study::from_store`]).
    pub kept: Option<Kept>,
}

/// A study kept in a database, and the folders its steps were read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The study's name in the database.
    pub study: String,
    /// The database, without password (`postgres://USER@HOST:PORT/DB`).
    pub target: String,
    /// Its workers' `--out` folders.
    pub folders: Vec<PathBuf>,
}

/// One trial: its store rows and its per-step trace from the event log.
#[derive(Debug)]
pub struct TrialData {
    /// The trial row.
    pub row: TrialRow,
    /// Its record (start, final hyper-parameters, steps), parsed from the row.
    pub record: TrialRecord,
    /// Its decisions, in order.
    pub decisions: Vec<DecisionRow>,
    /// Its validation evaluations, in order.
    pub evaluations: Vec<EvaluationRow>,
    /// Its steps, anomalies and rollbacks from the event log.
    pub trace: Trace,
}

impl TrialData {
    /// The first hidden width its model's name gives (`mlp:W,...`, `text-bag:D,...`); `None`
    /// for a name without widths (seed-cnn's first "width" is its channels).
    pub fn first_width(&self) -> Option<usize> {
        let (_, widths) = self.record.start.model.split_once(':')?;
        widths.split(',').next()?.trim().parse().ok()
    }

    /// Its first hidden width at its end (or now), for a model with [`first_width`](Self::first_width).
    pub fn end_first_width(&self) -> Option<usize> {
        self.first_width().and(self.record.final_hparams.widths.first().copied())
    }
}

/// A trial's steps as the event log has them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Trace {
    /// One point per optimiser step, in step order.
    pub points: Vec<TracePoint>,
    /// Steps where a detector fired, with the anomaly's kind.
    pub anomalies: Vec<(u64, String)>,
    /// Steps where the run rolled back to a snapshot.
    pub rollbacks: Vec<u64>,
}

/// One optimiser step.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePoint {
    /// Step number.
    pub step: u64,
    /// Training loss of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Batch size.
    pub batch_size: u32,
    /// Hidden widths.
    pub widths: Vec<u32>,
}

/// The best model's test results.
#[derive(Debug)]
pub struct BestModel {
    /// The trial it came from.
    pub trial: u64,
    /// Its validation macro-F1.
    pub val_macro_f1: f64,
    /// Per-class precision, recall, F1 on the test split.
    pub report: ClassificationReport,
    /// Its confusion matrix on the test split.
    pub confusion: ConfusionMatrix,
}

impl Study {
    /// Reads the study in `dir` (which holds `study.sqlite`).
    pub fn load(dir: &Path) -> Result<Study> {
        Study::read(dir, None)
    }

    /// [`load`](Self::load), with the traces followed by `following` when given (only the
    /// events appended since its last read are parsed).
    fn read(dir: &Path, following: Option<&mut Following>) -> Result<Study> {
        // Before the reading: a study that ends while it is read is then reported as running
        // once more, never as killed.
        let process = tuneforge_agent::tune::study_process(dir);
        let store = SqliteStore::open_existing(&study_path(dir))?;
        let mut notes = Vec::new();
        let traces = Following::traces(following, dir, &mut notes)?;
        let summary = read_summary(dir)?;
        let mut study =
            Study::assemble(dir, &store, &study_path(dir), traces, summary.map(|s| (s, dir.to_path_buf())))?;
        study.notes.splice(0..0, notes);
        study.process = process;
        Ok(study)
    }

    /// A study kept in a store of its own (a PostgreSQL database: `store`, where `kept`
    /// says), with the per-step traces of the `events.jsonl` in each of `kept.folders` (its
    /// workers' `--out` folders: a trial one worker took over from another is joined at the
    /// step its checkpoint had reached) and the best model of the `summary.json` there that
    /// covers every trial of the store (the last worker to end writes one). `dir` is where
    /// its report goes. [`running`](Self::running) while incomplete: the store does not say
    /// whether workers still run.
    pub fn from_store(dir: &Path, kept: Kept, store: &dyn StudyStore) -> Result<Study> {
        Study::read_store(dir, kept, store, None)
    }

    /// [`from_store`](Self::from_store) for a study read again and again while its workers
    /// run (`report --storage … --watch`): `following` keeps each worker folder's event log
    /// position and traces between calls, so only the events appended since the last call
    /// are parsed (the store and the summaries are read anew).
    pub fn reload_from_store(
        dir: &Path,
        kept: Kept,
        store: &dyn StudyStore,
        following: &mut Following,
    ) -> Result<Study> {
        Study::read_store(dir, kept, store, Some(following))
    }

    fn read_store(
        dir: &Path,
        kept: Kept,
        store: &dyn StudyStore,
        mut following: Option<&mut Following>,
    ) -> Result<Study> {
        let mut notes = Vec::new();
        let mut pieces = Vec::new();
        let mut summaries = Vec::new();
        let folders = &kept.folders;
        for folder in folders {
            let mut folder_notes = Vec::new();
            pieces.push(Following::traces(following.as_deref_mut(), folder, &mut folder_notes)?);
            notes.extend(folder_notes.into_iter().map(|n| format!("{}: {n}", folder.display())));
            if let Some(summary) = read_summary(folder)? {
                summaries.push((summary, folder.clone()));
            }
        }
        if folders.is_empty() {
            notes.push("no worker folders given (--worker-dir): no per-step traces, no best model".into());
        }
        let trials = store.trials()?.len();
        // The summary of the worker that ended last holds every trial; one written while
        // other workers went on holds fewer.
        summaries.sort_by_key(|(s, _)| std::cmp::Reverse(s.trials.len()));
        let summary = summaries.into_iter().next().filter(|(s, folder)| {
            let whole = s.trials.len() == trials;
            if !whole {
                notes.push(format!(
                    "{}: summary.json covers {} of the study's {trials} trials (written while other workers went on): \
                     not used; no best model yet",
                    folder.display(),
                    s.trials.len()
                ));
            }
            whole
        });
        let what = PathBuf::from(format!("study {} in {}", kept.study, kept.target));
        let mut study = Study::assemble(dir, store, &what, merge_traces(pieces), summary)?;
        study.notes.splice(0..0, notes);
        study.kept = Some(kept);
        Ok(study)
    }

    /// The study of `store` (`what` names it in errors) with `traces` and `summary` (and the
    /// folder holding it and `predictions.csv`).
    fn assemble(
        dir: &Path,
        store: &dyn StudyStore,
        what: &Path,
        mut traces: BTreeMap<u64, Trace>,
        summary: Option<(TuneSummary, PathBuf)>,
    ) -> Result<Study> {
        let row = store.study()?.ok_or_else(|| Error::NotAStudy {
            path: what.to_path_buf(),
            why: "the store holds no study yet (created, then stopped before its first write?)".into(),
        })?;
        let mut config: serde_json::Value = serde_json::from_str(&row.config)
            .map_err(|e| Error::Malformed { path: what.to_path_buf(), why: format!("study.config: {e}") })?;
        // A PostgreSQL study keeps its trial budget beside its config.
        if let (Some(object), Some(max)) = (config.as_object_mut(), store.max_trials()?) {
            object.entry("max_trials").or_insert(max.into());
        }
        let mut notes = Vec::new();
        let mut trials = Vec::new();
        for trial in store.trials()? {
            let record: TrialRecord = serde_json::from_str(&trial.record).map_err(|e| Error::Malformed {
                path: what.to_path_buf(),
                why: format!("trials.record of trial {}: {e}", trial.id),
            })?;
            let decisions = store.decisions(trial.id)?;
            let evaluations = store.evaluations(trial.id)?.into_iter().filter(|e| e.split != "test").collect();
            let trace = traces.remove(&trial.id).unwrap_or_default();
            trials.push(TrialData { row: trial, record, decisions, evaluations, trace });
        }
        let best = match &summary {
            Some((s, folder)) => {
                let path = folder.join("predictions.csv");
                if path.is_file() {
                    let (labels, predicted) = tuneforge_agent::run::read_predictions(&path)?;
                    Some(best_model(&path, s.best.trial, s.best.val_macro_f1, &labels, &predicted)?)
                } else {
                    notes.push("predictions.csv is missing: no classification report".into());
                    None
                }
            }
            None => None,
        };
        let summary = summary.map(|(s, _)| s);
        Ok(Study { dir: dir.to_path_buf(), row, config, trials, summary, best, notes, process: None, kept: None })
    }

    /// The folder's name (`rl-seed0` in a bench-tune folder).
    pub fn name(&self) -> String {
        if let Some(kept) = &self.kept {
            return kept.study.clone();
        }
        self.dir.file_name().map_or_else(|| self.dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// `false` while `summary.json` is missing: the study is running, or was killed.
    pub fn complete(&self) -> bool {
        self.summary.is_some()
    }

    /// `true` while it is unfinished and a live process runs it; for a study kept in a
    /// database ([`Study::from_store`]), while it is unfinished (its workers are not known).
    pub fn running(&self) -> bool {
        !self.complete() && (self.process.is_some() || self.kept.is_some())
    }

    /// The best trial's validation macro-F1: summary.json's once the study finished, else
    /// the best final one of its ended trials (what the study would return now; failed
    /// trials count as the study counts them, not at all). `None` before a trial ended.
    pub fn best_val_f1(&self) -> Option<f64> {
        if let Some(summary) = &self.summary {
            return Some(summary.best.val_macro_f1);
        }
        self.trials
            .iter()
            .filter(|t| {
                !matches!(t.row.status.as_str(), "running" | "paused") && !t.record.status.starts_with("failed")
            })
            .map(|t| t.record.val_macro_f1)
            .filter(|f| f.is_finite())
            .max_by(f64::total_cmp)
    }

    /// Trials that are not finished (`running` or `paused`).
    pub fn unfinished(&self) -> usize {
        self.trials.iter().filter(|t| matches!(t.row.status.as_str(), "running" | "paused")).count()
    }

    /// The best validation macro-F1 seen so far against seconds since the study was created:
    /// one point per validation evaluation that improved on all earlier ones, in time order.
    pub fn best_so_far(&self) -> Vec<(f64, f64)> {
        let mut evals: Vec<(f64, f64)> = self
            .trials
            .iter()
            .flat_map(|t| t.evaluations.iter())
            .filter(|e| e.macro_f1.is_finite() && e.at_unix.is_finite())
            .map(|e| ((e.at_unix - self.row.created_unix).max(0.0), e.macro_f1))
            .collect();
        evals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<(f64, f64)> = Vec::new();
        for (t, f1) in evals {
            if out.last().is_none_or(|&(_, best)| f1 > best) {
                out.push((t, f1));
            }
        }
        out
    }

    /// How much each hyper-parameter alone explains of the completed trials' validation
    /// macro-F1 ([`omega_squared`] over its groups: learning rates by [`lr_group`], batch sizes
    /// and first hidden widths by value), at the trials' start and at their end; `None` where
    /// it is not defined (one group, or too few trials).
    ///
    /// With fewer than [`MIN_IMPORTANCE_TRIALS`] completed trials — a short study whose
    /// strategy stops most trials at a rung (`asha`, `rl`, `tpe`) — the validation macro-F1
    /// every trial had at its first rung (⅑ of its rows: the same budget for all) instead,
    /// grouped by the starting values only ([`Basis::FirstRung`]; `end` is `None`: where the
    /// trial's settings were at that rung is not recorded). Empty when neither has enough.
    pub fn importances(&self) -> Vec<Importance> {
        let mut basis = Basis::Completed;
        let mut scored: Vec<(&TrialData, f64)> = self
            .trials
            .iter()
            .filter(|t| t.row.status == "completed" && t.record.val_macro_f1.is_finite())
            .map(|t| (t, t.record.val_macro_f1))
            .collect();
        if scored.len() < MIN_IMPORTANCE_TRIALS {
            basis = Basis::FirstRung;
            scored = self
                .trials
                .iter()
                .filter_map(|t| Some((t, t.record.rungs.first().copied().filter(|f| f.is_finite())?)))
                .collect();
        }
        if scored.len() < MIN_IMPORTANCE_TRIALS {
            return Vec::new();
        }
        let completed: Vec<&TrialData> = scored.iter().map(|(t, _)| *t).collect();
        let width = |t: &TrialData| t.first_width().map(|w| w as i64);
        let end_width = |t: &TrialData| t.end_first_width().map(|w| w as i64);
        type Key<'a> = &'a dyn Fn(&TrialData) -> Option<i64>;
        let params: [(&'static str, Key<'_>, Key<'_>); 3] = [
            ("learning rate", &|t| Some(lr_group(t.record.start.lr)), &|t| Some(lr_group(t.record.final_hparams.lr))),
            ("batch size", &|t| Some(t.record.start.batch_size as i64), &|t| {
                Some(t.record.final_hparams.batch_size as i64)
            }),
            ("first hidden width", &width, &end_width),
        ];
        let of = |key: Key<'_>| -> Option<Omega> {
            let values: Vec<(i64, f64)> = scored.iter().map(|&(t, f1)| Some((key(t)?, f1))).collect::<Option<_>>()?;
            omega_squared(&values)
        };
        params
            .into_iter()
            .filter(|(_, start, _)| completed.iter().all(|t| start(t).is_some()))
            .map(|(parameter, start, end)| Importance {
                parameter,
                trials: completed.len(),
                basis,
                start: of(start),
                end: if basis == Basis::Completed { of(end) } else { None },
            })
            .collect()
    }

    /// Trials with a finite validation macro-F1 and throughput, as `(trial id, samples/s, F1)`.
    pub fn front_points(&self) -> Vec<(u64, f64, f64)> {
        self.trials
            .iter()
            .filter_map(|t| match (t.row.samples_per_s, t.row.val_macro_f1) {
                (Some(s), Some(f)) if s.is_finite() && f.is_finite() => Some((t.row.id, s, f)),
                _ => None,
            })
            .collect()
    }

    /// The trials drawn in detail: the `k` best by validation macro-F1 (ties: lower id).
    pub fn shown_trials(&self, k: usize) -> Vec<&TrialData> {
        let mut trials: Vec<&TrialData> = self.trials.iter().collect();
        trials.sort_by(|a, b| {
            let f = |t: &TrialData| t.row.val_macro_f1.filter(|v| v.is_finite()).unwrap_or(f64::NEG_INFINITY);
            f(b).total_cmp(&f(a)).then(a.row.id.cmp(&b.row.id))
        });
        trials.truncate(k);
        trials
    }
}

/// Indices of the points not dominated by another (higher on both coordinates, or equal on
/// one and higher on the other): the Pareto front when both are to be maximised, in order of
/// increasing first coordinate.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    // Highest x first; among equal x, highest y first.
    order.sort_by(|&a, &b| points[b].0.total_cmp(&points[a].0).then(points[b].1.total_cmp(&points[a].1)));
    let mut front = Vec::new();
    let mut best_y = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best_y {
            best_y = points[i].1;
            front.push(i);
        }
    }
    front.reverse();
    front
}

/// The fewest trials [`Study::importances`] reads (completed ones, or ones at their first rung).
pub const MIN_IMPORTANCE_TRIALS: usize = 10;

/// Which validation macro-F1 [`Study::importances`] explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The completed trials' final one.
    Completed,
    /// Every trial's at its first rung (⅑ of its rows), with too few completed trials.
    FirstRung,
}

/// One hyper-parameter's share of the variance of the completed trials' validation
/// macro-F1 ([`Study::importances`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    /// `learning rate`, `batch size` or `first hidden width`.
    pub parameter: &'static str,
    /// Trials read.
    pub trials: usize,
    /// Which F1 of theirs.
    pub basis: Basis,
    /// Grouped by its value at the trial's start.
    pub start: Option<Omega>,
    /// Grouped by its value at the trial's end.
    pub end: Option<Omega>,
}

/// ω² of a one-way analysis of variance, and its number of groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Omega {
    /// ω² = (SS_between − (k − 1)·MS_within) / (SS_total + MS_within), at least 0.
    pub omega2: f64,
    /// Groups (k).
    pub groups: usize,
}

/// The group of a learning rate: its quarter-decade, ⌊4·log10(lr)⌋ (1e-3 ≤ lr < 1.78e-3 is
/// −12).
pub fn lr_group(lr: f64) -> i64 {
    (lr.log10() * 4.0).floor() as i64
}

/// How much of the variance of the values a grouping explains: ω² (Hays) of a one-way
/// analysis of variance of `(group, value)` pairs — the share of the variance explained by
/// the groups, less what as many groups of pure noise would explain (η², SS_between ÷
/// SS_total, grows with every group added). Clamped at 0. `None` with fewer than two groups,
/// no more values than groups, or values that do not vary.
///
/// ```
/// use tuneforge_report::data::omega_squared;
/// // Two groups far apart, little spread within: nearly all of the variance is the groups'.
/// let values = [(0, 0.50), (0, 0.52), (0, 0.51), (1, 0.90), (1, 0.91), (1, 0.89)];
/// let w = omega_squared(&values).unwrap();
/// assert!(w.omega2 > 0.99 && w.groups == 2);
/// // One group: nothing to tell apart.
/// assert!(omega_squared(&[(7, 0.5), (7, 0.6), (7, 0.7)]).is_none());
/// ```
pub fn omega_squared(values: &[(i64, f64)]) -> Option<Omega> {
    let n = values.len();
    let mut groups: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for &(g, v) in values {
        let e = groups.entry(g).or_default();
        e.0 += v;
        e.1 += 1;
    }
    let k = groups.len();
    if k < 2 || n <= k {
        return None;
    }
    let mean = values.iter().map(|v| v.1).sum::<f64>() / n as f64;
    let total: f64 = values.iter().map(|v| (v.1 - mean).powi(2)).sum();
    let group_mean = |g: &i64| groups[g].0 / groups[g].1 as f64;
    let between: f64 = groups.values().map(|&(sum, m)| m as f64 * (sum / m as f64 - mean).powi(2)).sum();
    let within: f64 = values.iter().map(|(g, v)| (v - group_mean(g)).powi(2)).sum();
    let ms_within = within / (n - k) as f64;
    if total <= 0.0 {
        return None;
    }
    let omega2 = ((between - (k - 1) as f64 * ms_within) / (total + ms_within)).max(0.0);
    Some(Omega { omega2, groups: k })
}

/// Mean and sample standard deviation (0 for one value); `None` when empty.
pub fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((mean, sd))
}

/// One strategy of a bench-tune folder, over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyRow {
    /// The strategy.
    pub strategy: String,
    /// Studies of it (finished or not).
    pub studies: usize,
    /// Of which finished.
    pub finished: usize,
    /// Mean reward of the trials (finished studies): mean and sd over the studies.
    pub mean_reward: Option<(f64, f64)>,
    /// Validation macro-F1 of the best trial: summary.json's for finished studies, the best
    /// evaluation so far (from the store) for the others.
    pub best_val_f1: Option<(f64, f64)>,
    /// Test macro-F1 of the best model (finished studies).
    pub test_f1: Option<(f64, f64)>,
    /// Trials per study.
    pub trials: (f64, f64),
}

impl Bench {
    /// Per-strategy mean ± sd, strategies in the order `cargo xtask tune --help` lists them
    /// ([`Strategy::ALL`](tuneforge_agent::tune::Strategy::ALL)'s order; others after, by name).
    pub fn strategies(&self) -> Vec<StrategyRow> {
        let mut groups: BTreeMap<(usize, String), Vec<&Study>> = BTreeMap::new();
        for s in &self.studies {
            groups.entry((strategy_rank(&s.row.strategy), s.row.strategy.clone())).or_default().push(s);
        }
        groups
            .into_iter()
            .map(|((_, strategy), studies)| (strategy, studies))
            .map(|(strategy, studies)| {
                let finished: Vec<&TuneSummary> = studies.iter().filter_map(|s| s.summary.as_ref()).collect();
                let best_val: Vec<f64> = studies.iter().filter_map(|s| s.best_val_f1()).collect();
                let trials: Vec<f64> = studies.iter().map(|s| s.trials.len() as f64).collect();
                StrategyRow {
                    strategy,
                    studies: studies.len(),
                    finished: finished.len(),
                    mean_reward: mean_sd(&finished.iter().map(|s| s.mean_reward).collect::<Vec<_>>()),
                    best_val_f1: mean_sd(&best_val),
                    test_f1: mean_sd(&finished.iter().map(|s| s.best.test_macro_f1).collect::<Vec<_>>()),
                    trials: mean_sd(&trials).unwrap_or((0.0, 0.0)),
                }
            })
            .collect()
    }
}

/// Position of a strategy in [`Strategy::ALL`](tuneforge_agent::tune::Strategy::ALL).
pub(crate) fn strategy_rank(name: &str) -> usize {
    use tuneforge_agent::tune::Strategy;
    name.parse::<Strategy>().ok().and_then(|s| Strategy::ALL.iter().position(|&a| a == s)).unwrap_or(usize::MAX)
}

/// Per-trial traces built from a study's events in file order: `run_start`/`run_resume`
/// name the trial the following events belong to; a step at or before the trace's last one
/// (a resume from a checkpoint, a rollback) replaces what came after it.
#[derive(Debug, Default, Clone)]
struct TraceBuilder {
    current: Option<u64>,
    traces: BTreeMap<u64, Trace>,
}

impl TraceBuilder {
    /// Adds one event.
    fn apply(&mut self, event: Event) {
        let trial_of = |run: &str| run.strip_prefix("trial-").and_then(|id| id.parse::<u64>().ok());
        match event {
            Event::RunStart(e) => self.current = trial_of(&e.run),
            Event::RunResume(e) => self.current = trial_of(&e.run),
            Event::Step(e) => {
                let Some(id) = self.current else { return };
                let trace = self.traces.entry(id).or_default();
                if trace.points.last().is_some_and(|p| p.step >= e.step) {
                    trace.points.retain(|p| p.step < e.step);
                    trace.anomalies.retain(|a| a.0 < e.step);
                    trace.rollbacks.retain(|&r| r < e.step);
                }
                trace.points.push(TracePoint {
                    step: e.step,
                    loss: e.loss,
                    lr: e.lr,
                    batch_size: e.batch_size,
                    widths: e.widths,
                });
            }
            Event::Anomaly(e) => {
                if let Some(id) = self.current {
                    self.traces.entry(id).or_default().anomalies.push((e.step, e.kind.as_str().to_string()));
                }
            }
            Event::Rollback(e) => {
                if let Some(id) = self.current {
                    self.traces.entry(id).or_default().rollbacks.push(e.step);
                }
            }
            _ => {}
        }
    }
}

/// A study's event log followed as it grows ([`LogFollower`]), with the traces of what it
/// has read: a report rewritten while the study runs parses each line once.
#[derive(Debug)]
struct TraceFollower {
    log: LogFollower,
    built: TraceBuilder,
}

impl TraceFollower {
    /// A follower of `dir/events.jsonl` that has read nothing yet.
    fn new(dir: &Path) -> TraceFollower {
        TraceFollower { log: LogFollower::new(dir.join("events.jsonl")), built: TraceBuilder::default() }
    }

    /// Reads what was appended since the last call and returns the traces; notes say what
    /// is missing or unfinished, as for a study read at once.
    fn update(&mut self, notes: &mut Vec<String>) -> Result<BTreeMap<u64, Trace>> {
        if !self.log.path().is_file() {
            notes.push("events.jsonl is missing: no per-step traces".into());
            return Ok(BTreeMap::new());
        }
        let follow = self.log.read_new()?;
        if follow.restarted {
            self.built = TraceBuilder::default();
        }
        for event in follow.events {
            self.built.apply(event);
        }
        if let Some(torn) = self.log.pending() {
            notes.push(torn_note(torn));
        }
        Ok(self.built.traces.clone())
    }
}

fn torn_note(torn: &TornTail) -> String {
    format!(
        "events.jsonl ends in a torn line (line {}, {} bytes; the study was killed while writing it, \
         or is writing it now): ignored",
        torn.line, torn.bytes
    )
}

/// `dir/summary.json`, `None` when there is none.
fn read_summary(dir: &Path) -> Result<Option<TuneSummary>> {
    let path = dir.join("summary.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            path: path.clone(),
            why: format!("line {}, column {}: {e}", e.line(), e.column()),
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// The traces of one study from several event logs (its workers'): a trial found in more
/// than one is joined in the order its pieces start (a worker taking a trial over resumes
/// it from a checkpoint at or after where the first started), each piece replacing what
/// the ones before it held from its first step on, as a resume within one log does.
fn merge_traces(pieces: Vec<BTreeMap<u64, Trace>>) -> BTreeMap<u64, Trace> {
    let mut by_trial: BTreeMap<u64, Vec<Trace>> = BTreeMap::new();
    for piece in pieces {
        for (id, trace) in piece {
            by_trial.entry(id).or_default().push(trace);
        }
    }
    by_trial
        .into_iter()
        .map(|(id, mut traces)| {
            let span = |t: &Trace| (t.points.first().map(|p| p.step), t.points.last().map(|p| p.step));
            traces.sort_by_key(span);
            let mut merged = Trace::default();
            for t in traces {
                if let Some(from) = t.points.first().map(|p| p.step) {
                    merged.points.retain(|p| p.step < from);
                    merged.anomalies.retain(|a| a.0 < from);
                    merged.rollbacks.retain(|&r| r < from);
                }
                merged.points.extend(t.points);
                merged.anomalies.extend(t.anomalies);
                merged.rollbacks.extend(t.rollbacks);
            }
            (id, merged)
        })
        .collect()
}

fn read_traces(path: &Path, notes: &mut Vec<String>) -> Result<BTreeMap<u64, Trace>> {
    if !path.is_file() {
        notes.push("events.jsonl is missing: no per-step traces".into());
        return Ok(BTreeMap::new());
    }
    let log = tuneforge_monitor::read_log(path)?;
    if let Some(torn) = &log.torn_tail {
        notes.push(torn_note(torn));
    }
    let mut built = TraceBuilder::default();
    for event in log.events {
        built.apply(event);
    }
    Ok(built.traces)
}

/// The classification report and confusion matrix of the test predictions.
fn best_model(path: &Path, trial: u64, val_macro_f1: f64, labels: &[u32], predicted: &[u32]) -> Result<BestModel> {
    let classes = labels.iter().chain(predicted).copied().max().map_or(0, |m| m as usize + 1);
    let malformed = |e: tuneforge_eval::Error| Error::Malformed { path: path.to_path_buf(), why: e.to_string() };
    let mut confusion = ConfusionMatrix::new(classes.max(1)).map_err(malformed)?;
    confusion.update(labels, predicted).map_err(malformed)?;
    Ok(BestModel { trial, val_macro_f1, report: confusion.report(), confusion })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where ω² is not defined, none; where the groups are noise, about 0 (η² would not be);
    /// learning rates group by quarter-decade.
    #[test]
    fn omega_squared_edge_cases_and_lr_groups() {
        // One value per group (n = k), one group, values that do not vary, nothing.
        assert_eq!(omega_squared(&[(0, 0.1), (1, 0.2), (2, 0.3)]), None);
        assert_eq!(omega_squared(&[(5, 0.1), (5, 0.2), (5, 0.3)]), None);
        assert_eq!(omega_squared(&[(0, 0.5), (0, 0.5), (1, 0.5), (1, 0.5)]), None);
        assert_eq!(omega_squared(&[]), None);
        // 50 groups of 4 over a value that does not depend on them: η² ≈ 0.25, ω² ≈ 0.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let values: Vec<(i64, f64)> = (0..200).map(|i| (i % 50, noise())).collect();
        let w = omega_squared(&values).unwrap();
        let mean = values.iter().map(|v| v.1).sum::<f64>() / 200.0;
        let total: f64 = values.iter().map(|v| (v.1 - mean).powi(2)).sum();
        let between: f64 = (0..50)
            .map(|g| {
                let m = values.iter().filter(|v| v.0 == g).map(|v| v.1).sum::<f64>() / 4.0;
                4.0 * (m - mean).powi(2)
            })
            .sum();
        // (Deterministic draws: η² 0.311, ω² 0.085 here; η²'s expected value is (k − 1)/(n − 1) = 0.25.)
        assert!(w.omega2 < 0.12 && between / total > 0.2 && w.groups == 50, "{w:?}, η² {}", between / total);
        // A group shifted far from the rest explains most of the variance.
        let shifted: Vec<(i64, f64)> =
            values.iter().map(|&(g, v)| (g.min(1), v + if g == 0 { 10.0 } else { 0.0 })).collect();
        assert!(omega_squared(&shifted).unwrap().omega2 > 0.9);
        assert_eq!((lr_group(1e-3), lr_group(1.7e-3), lr_group(1.8e-3), lr_group(9.9e-4)), (-12, -12, -11, -13));
    }

    /// Brute force: a point is on the front if no other point dominates it.
    fn front_by_brute_force(points: &[(f64, f64)]) -> Vec<usize> {
        let dominates = |a: (f64, f64), b: (f64, f64)| a.0 >= b.0 && a.1 >= b.1 && (a.0 > b.0 || a.1 > b.1);
        let mut front: Vec<usize> = (0..points.len())
            .filter(|&i| !(0..points.len()).any(|j| j != i && dominates(points[j], points[i])))
            .collect();
        // Duplicates of a front point: the sweep keeps one of them.
        front.dedup_by(|a, b| points[*a] == points[*b]);
        front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
        front
    }

    #[test]
    fn pareto_front_matches_brute_force() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 100.0
        };
        for n in [0, 1, 2, 5, 30, 200] {
            let points: Vec<(f64, f64)> = (0..n).map(|_| (next(), next())).collect();
            let front = pareto_front(&points);
            let expected = front_by_brute_force(&points);
            let coords = |idx: &[usize]| idx.iter().map(|&i| points[i]).collect::<Vec<_>>();
            assert_eq!(coords(&front), coords(&expected), "n = {n}");
        }
    }

    fn trace(steps: std::ops::RangeInclusive<u64>, loss: f64, anomalies: &[u64]) -> Trace {
        Trace {
            points: steps.map(|step| TracePoint { step, loss, lr: 0.1, batch_size: 32, widths: vec![64] }).collect(),
            anomalies: anomalies.iter().map(|&s| (s, "nan_loss".to_string())).collect(),
            rollbacks: Vec::new(),
        }
    }

    #[test]
    fn a_trial_taken_over_is_joined_where_the_taker_resumed_in_any_folder_order() {
        // Trial 1: worker A to step 50 (an anomaly at 45), then B from its checkpoint at 30.
        // Trial 2 in A only, trial 3 in B only.
        let a = BTreeMap::from([(1, trace(0..=50, 1.0, &[20, 45])), (2, trace(0..=9, 1.0, &[]))]);
        let b = BTreeMap::from([(1, trace(30..=80, 2.0, &[70])), (3, trace(0..=5, 2.0, &[]))]);
        for pieces in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
            let merged = merge_traces(pieces);
            assert_eq!(merged.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
            let t = &merged[&1];
            assert_eq!(t.points.iter().map(|p| p.step).collect::<Vec<_>>(), (0..=80).collect::<Vec<_>>());
            assert!(t.points.iter().all(|p| p.loss == if p.step < 30 { 1.0 } else { 2.0 }));
            assert_eq!(t.anomalies.iter().map(|a| a.0).collect::<Vec<_>>(), [20, 70]);
            assert_eq!(merged[&2], a[&2]);
            assert_eq!(merged[&3], b[&3]);
        }
    }

    #[test]
    fn mean_sd_is_the_sample_standard_deviation() {
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(mean_sd(&[3.0]), Some((3.0, 0.0)));
        // numpy: np.std([1, 2, 3, 4], ddof=1) = 1.2909944487358056
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m, 2.5);
        assert!((sd - 1.290_994_448_735_805_6).abs() < 1e-15);
    }
}
