//! A tuning study: trials of one [`Env`](crate::env::Env) under one strategy and one wall-clock budget,
//! recorded in a [`SqliteStore`] so that a study killed at any moment (`kill -9` included)
//! continues with [`resume`]; the best model is tested once at the end.
//!
//! # Strategies (same environment, same budget accounting)
//!
//! | strategy | what it does |
//! |---|---|
//! | `fixed` | the default configuration, no actions |
//! | `random` | random initial learning rate, batch size and (MLP) widths, no actions |
//! | `asha` | asynchronous successive halving (Li et al., 2020, "A System for Massively Parallel Hyperparameter Tuning"), η = 3, rungs at ⅑, ⅓ and all of a trial's steps; random starts; a paused trial is promoted, from its checkpoint, when it is in the top ⅓ of its rung |
//! | `pbt` | population-based training (Jaderberg et al., 2017) with 4 members time-sliced in one process: each trains 2 decision intervals in turn, then the worst copies the best's weights, optimiser state, learning rate and batch size (exploit) and multiplies learning rate and batch size by 0.8 or 1.2 (explore) |
//! | `pb2` | population-based bandits (Parker-Holder et al., 2020; Ray Tune's `PB2`): `pbt`, but the explore step chooses the learning rate and batch size within the random starts' ranges with a time-varying Gaussian process fitted to every member's F1 gain per round ([`crate::pb2`]) |
//! | `rl` | the [`StudyPolicy`] ([`ActorCritic`](crate::policy::ActorCritic), one-step actor–critic) acts at every decision point and learns after every decision; its state is kept in the study; it starts from [`StudyPolicy::untrained`] unless [`TuneConfig::policy`] says otherwise (e.g. [`StudyPolicy::pretrained`], the digits prior). The first trial starts at the study's configuration, the others at random starts as `asha`'s; a trial not in the top ⅓ of the trials that reached ⅑ or ⅓ of their rows before it stops there ([`rung_stops`]) |
//! | `rl-no-width` | `rl` with the width action disabled, to show what live restructuring is worth |
//! | `tpe` | the tree-structured Parzen estimator ([`crate::tpe`], Optuna's default sampler): the first [`tpe::STARTUP_TRIALS`](crate::tpe::STARTUP_TRIALS) trials start as `random`'s, each later one where the trials before it say is most promising (learning rate, batch size, widths, each on its own); no actions; `rl`'s rung stopping, as Optuna's TPE with a pruner |
//! | `tpe-multivariate` | `tpe` with one joint density over the learning rate, batch size and widths (Optuna's `multivariate=True`): settings that went well together are drawn together |
//!
//! The budget is wall-clock time: no trial starts, and no ASHA promotion or PBT round
//! begins, once it is spent, and trials still running then are stopped at their next
//! decision point (status `stopped`, their final validation macro-F1 added to their reward
//! as for completed ones). A trial budget ([`TuneConfig::max_trials`]) may be set besides:
//! once that many trials have started, none starts; those running go on to their end (ASHA
//! keeps promoting paused trials while any is in its rung's top third, then ends the rest as
//! `stopped`), and the study ends at whichever budget is spent first. With a wall clock long
//! enough for the trial budget, a `fixed`, `random`, `asha` or `pbt` study run twice with one
//! build on one machine has the same trials with the same validation F1, however busy the
//! machine was (`rl` and `rl-no-width` learn from throughput too, so theirs differ).
//! An early-stopping rule ([`TuneConfig::stop_when`], [`StopWhen`]) may end the study
//! sooner, as a spent budget does: once a trial ends at or above a validation macro-F1, or
//! once N trials started after the best have ended without beating it; the summary says
//! what ended the study ([`TuneSummary::ended`]). A trial time limit
//! ([`TuneConfig::trial_timeout`]) stops a trial that has run that long (its own time, across
//! pauses and resumes) at its next decision point, as `stopped` — pruning on time, so that
//! a slow configuration costs at most that much. A trial's reward counts its first interval from the untrained
//! model's F1 ([`crate::env::Env::start_reward`]), so a strategy's starting configuration
//! is rewarded like any decision. The study's reward is the mean of its trials' rewards.
//!
//! # Resuming
//!
//! Everything is in `DIR/study.sqlite` (see [`crate::store`]): the study's configuration,
//! every trial, decision and evaluation, the policy after each trial, and a checkpoint of
//! each trial that may continue (running, paused by ASHA, or the best so far). A running
//! trial is checkpointed at a decision point whenever [`TuneConfig::checkpoint_every`] has
//! passed. [`resume`] takes an exclusive lock on `DIR/study.lock` (a study run by a live
//! process is refused); a trial left `running` is then known to belong to a dead process and
//! is continued from its checkpoint — weights, optimiser moments, schedule, batch size, data
//! position, the environment's state and the episode so far — with the decisions recorded
//! after that checkpoint deleted; it is marked `resumed`. Random draws are derived from
//! (seed, trial, decision), so nothing random needs saving. Completed trials are kept and not
//! run again; the wall time already used counts against the budget.
//!
//! # Many workers
//!
//! [`work`] runs one of many workers sharing a study kept in PostgreSQL
//! ([`PostgresStore`](crate::store::PostgresStore)): trials are claimed atomically, a dead
//! worker's trial is taken over from its checkpoint, and the `rl` policy's updates are merged
//! (see [`worker`] and docs/scaling-out.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tuneforge_loader::{DataDirs, GzCache};
use tuneforge_monitor::ProgressMode;
use tuneforge_optim::ScheduleConfig;

use crate::data::{DataSource, Prepared, prepare};
use crate::env::{Action, EnvConfig, Move};
use crate::policy::{Policy, StudyPolicy};
use crate::run::{Run, RunCheckpoint, write_atomic, write_predictions};
use crate::store::{EvaluationRow, SqliteStore, StudyRow, StudyStore, TrialRow};
use crate::trial::{Trial, TrialContext, TrialStart, rng_for, unix_now};
use crate::{Error, Result};

pub use crate::trial::{Hparams, TrialRecord};
pub use worker::{WorkerOptions, work};

pub mod worker;

/// How a study chooses what to do (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Defaults, no actions.
    Fixed,
    /// Random initial configuration, no actions.
    Random,
    /// Asynchronous successive halving over random starts.
    Asha,
    /// Population-based training, 4 members.
    Pbt,
    /// Population-based bandits ([`crate::pb2`]): `pbt` with a Gaussian-process explore step.
    Pb2,
    /// REINFORCE acting during each trial.
    Rl,
    /// REINFORCE without the width action.
    RlNoWidth,
    /// Starts drawn by a tree-structured Parzen estimator ([`crate::tpe`], Optuna's default
    /// sampler) from the trials before, no actions, `rl`'s rung stopping.
    Tpe,
    /// `tpe` with a joint density over all dimensions (Optuna's `multivariate=True`).
    TpeMultivariate,
}

impl Strategy {
    /// Every strategy, in the order of the docs.
    pub const ALL: [Strategy; 9] = [
        Strategy::Fixed,
        Strategy::Random,
        Strategy::Asha,
        Strategy::Pbt,
        Strategy::Pb2,
        Strategy::Rl,
        Strategy::RlNoWidth,
        Strategy::Tpe,
        Strategy::TpeMultivariate,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed => "fixed",
            Strategy::Random => "random",
            Strategy::Asha => "asha",
            Strategy::Pbt => "pbt",
            Strategy::Pb2 => "pb2",
            Strategy::Rl => "rl",
            Strategy::RlNoWidth => "rl-no-width",
            Strategy::Tpe => "tpe",
            Strategy::TpeMultivariate => "tpe-multivariate",
        }
    }

    /// The tree-structured Parzen estimator's mode, for `tpe` and `tpe-multivariate`.
    pub fn tpe_mode(self) -> Option<crate::tpe::Mode> {
        match self {
            Strategy::Tpe => Some(crate::tpe::Mode::Independent),
            Strategy::TpeMultivariate => Some(crate::tpe::Mode::Multivariate),
            _ => None,
        }
    }

    fn learns(self) -> bool {
        matches!(self, Strategy::Rl | Strategy::RlNoWidth)
    }

    /// Whether a trial not in the top third of the trials before it at ⅑ or ⅓ of its rows
    /// stops there ([`rung_stops`]).
    fn stops_at_rungs(self) -> bool {
        self.learns() || self.tpe_mode().is_some()
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Strategy::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| Error::Config {
            what: "strategy",
            why: format!(
                "{s:?}: expected one of fixed, random, asha, pbt, pb2, rl, rl-no-width, tpe, tpe-multivariate"
            ),
        })
    }
}

/// A trial start given by the user, run before any sampled one (Optuna's `enqueue_trial`):
/// what is `None` is the study's own ([`TuneConfig::model`], [`TuneConfig::lr`],
/// [`TuneConfig::batch_size`]), not sampled. Parsed from `lr=3e-3,batch=64,model=mlp:128,64`
/// (any of the three keys, in any order; a model's widths may hold commas).
///
/// ```
/// use tuneforge_agent::tune::Enqueued;
/// let e: Enqueued = "model=mlp:128,64,lr=3e-3".parse()?;
/// assert_eq!((e.model.as_deref(), e.lr, e.batch_size), (Some("mlp:128,64"), Some(3e-3), None));
/// assert!("lr=fast".parse::<Enqueued>().is_err());
/// # Ok::<(), tuneforge_agent::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enqueued {
    /// The architecture preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// The batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

impl std::str::FromStr for Enqueued {
    type Err = Error;
    fn from_str(text: &str) -> Result<Enqueued> {
        let bad = |why: String| Error::Config { what: "enqueued trial", why: format!("{text:?}: {why}") };
        // Split at the commas that start a `key=`: the others belong to a model's widths.
        let mut pairs: Vec<String> = Vec::new();
        for piece in text.split(',') {
            match pairs.last_mut() {
                Some(last) if !piece.contains('=') => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => pairs.push(piece.to_string()),
            }
        }
        let mut e = Enqueued::default();
        for pair in &pairs {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad("expected KEY=VALUE pairs: lr=3e-3,batch=64,model=mlp:128".into()));
            };
            let (key, value) = (key.trim(), value.trim());
            let twice = match key {
                "lr" => {
                    e.lr.replace(value.parse().map_err(|_| bad(format!("lr {value:?} is not a number")))?).is_some()
                }
                "batch" | "batch_size" => e
                    .batch_size
                    .replace(value.parse().map_err(|_| bad(format!("batch {value:?} is not a whole number")))?)
                    .is_some(),
                "model" => e.model.replace(value.to_string()).is_some(),
                other => return Err(bad(format!("unknown key {other:?}: expected lr, batch or model"))),
            };
            if twice {
                return Err(bad(format!("{key} given twice")));
            }
        }
        if e == Enqueued::default() {
            return Err(bad("empty: give at least one of lr, batch, model".into()));
        }
        Ok(e)
    }
}

impl Enqueued {
    /// Where the best trial of the finished study in `dir` ended (from its `summary.json`):
    /// its learning rate and batch size, and for the presets named with their widths (`mlp`,
    /// `text-bag`, `text-bag-max`, `text-cnn`) its widths (`seed-cnn` as it started) — to
    /// start a new study there (Optuna's `enqueue_trial(old.best_params)`).
    pub fn best_of(dir: &Path) -> Result<Enqueued> {
        let path = dir.join("summary.json");
        let bad = |why: String| Error::Config { what: "enqueued trial", why: format!("best:{}: {why}", dir.display()) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("{}: {e} (a finished study's folder is needed)", path.display())))?;
        let summary: TuneSummary =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: not a tune summary: {e}", path.display())))?;
        let best = summary.trials.iter().find(|t| t.id == summary.best.trial).ok_or_else(|| {
            bad(format!("{}: the best trial {} is not among its trials", path.display(), summary.best.trial))
        })?;
        let end = &best.final_hparams;
        Ok(Enqueued {
            model: Some(ended_model(&best.start.model, &end.widths)),
            lr: Some(end.lr),
            batch_size: Some(end.batch_size),
        })
    }
}

/// The preset of a model that started as `start` and ended with hidden `widths` (every
/// parametric layer's but the output's, as [`ModelSpec::hidden_widths`](tuneforge_model::ModelSpec::hidden_widths)
/// lists them, which is the order the presets name them in: `mlp:H1,...`, `text-bag:D,H1,...`,
/// `text-cnn:D,C,H1,...`); a preset without widths in its name (`seed-cnn`) as it started.
fn ended_model(start: &str, widths: &[usize]) -> String {
    let kind = start.split_once(':').map_or(start, |(kind, _)| kind);
    match kind {
        "mlp" | "text-bag" | "text-bag-max" | "text-cnn" if !widths.is_empty() => {
            format!("{kind}:{}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
        }
        _ => start.to_string(),
    }
}

impl std::fmt::Display for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(lr) = self.lr {
            parts.push(format!("lr={lr}"));
        }
        if let Some(b) = self.batch_size {
            parts.push(format!("batch={b}"));
        }
        if let Some(m) = &self.model {
            parts.push(format!("model={m}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// Early stopping of a whole study, besides its budgets: Ray Tune's experiment-level
/// `stop` and `ExperimentPlateauStopper`, Optuna's `study.stop()` called from a callback.
/// Either rule, once met, ends the study as a spent budget does: no trial starts, and trials
/// still running (`pbt`'s members, `asha`'s paused ones) are stopped at their next decision
/// point. Both are checked as trials end; a trial also stops at the first decision point
/// where its validation macro-F1 reaches [`StopWhen::f1`] (it need not train to its end for
/// the study to end). With PostgreSQL storage a worker reads the rule before it claims a
/// trial and, while its trial trains, at most once a second: a trial running on another
/// worker stops at its next decision point after its worker has read the rule met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopWhen {
    /// Ends the study once a trial has reached a validation macro-F1 of at least this
    /// (0 < F1 ≤ 1): the trial stops at that decision point, as `stopped`, and the study ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Ends the study once this many trials started after the best one have ended without
    /// beating it (failed ones included; ≥ 1). For the strategies that run one trial at a
    /// time, this many trials in a row without a new best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u64>,
}

impl StopWhen {
    /// No rule: the budgets alone end the study.
    pub fn is_none(&self) -> bool {
        self.f1.is_none() && self.patience.is_none()
    }

    /// Refuses an F1 outside (0, 1] and a patience of 0.
    pub fn check(&self) -> Result<()> {
        if let Some(f1) = self.f1
            && !(f1 > 0.0 && f1 <= 1.0)
        {
            return Err(Error::Config {
                what: "stop_at",
                why: format!("{f1}: a validation macro-F1 to stop at must be above 0 and at most 1"),
            });
        }
        if self.patience == Some(0) {
            return Err(Error::Config {
                what: "patience",
                why: "0: the best trial needs at least 1 trial after it to be judged".into(),
            });
        }
        Ok(())
    }

    /// Whether the study ends, given its best trial so far (`(val macro-F1, id)`, failed
    /// trials never) and how many trials with a greater id have ended (failed ones included).
    pub fn met(&self, best: Option<(f64, u64)>, ended_after_best: u64) -> Option<Ended> {
        let (f1, id) = best?;
        if self.f1.is_some_and(|target| f1 >= target) {
            return Some(Ended::F1Reached { trial: id, val_macro_f1: f1 });
        }
        self.patience
            .filter(|&p| ended_after_best >= p)
            .map(|_| Ended::Patience { best_trial: id, trials_after: ended_after_best })
    }
}

impl std::fmt::Display for StopWhen {
    /// `until val macro-F1 ≥ 0.97 or 20 trials without a better one` (empty without a rule).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(f1) = self.f1 {
            parts.push(format!("val macro-F1 ≥ {f1}"));
        }
        if let Some(p) = self.patience {
            parts.push(format!("{p} trial{} without a better one", if p == 1 { "" } else { "s" }));
        }
        if !parts.is_empty() {
            write!(f, "until {}", parts.join(" or "))?;
        }
        Ok(())
    }
}

/// Why a study ended (`summary.json`'s `ended`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Ended {
    /// The wall-clock budget ([`TuneConfig::budget`]) was spent.
    Budget,
    /// The trial budget ([`TuneConfig::max_trials`]) was spent.
    MaxTrials,
    /// A trial reached [`StopWhen::f1`].
    F1Reached {
        /// The trial.
        trial: u64,
        /// Its validation macro-F1.
        val_macro_f1: f64,
    },
    /// [`StopWhen::patience`] trials ended after the best without beating it.
    Patience {
        /// The best trial.
        best_trial: u64,
        /// Trials started after it that had ended.
        trials_after: u64,
    },
    /// Stopped by Ctrl-C or [`Stop::request`]: [`resume`] runs on.
    Interrupted,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Budget => f.write_str("its wall-clock budget was spent"),
            Ended::MaxTrials => f.write_str("its trial budget was spent"),
            Ended::F1Reached { trial, val_macro_f1 } => {
                write!(f, "trial {trial} reached val macro-F1 {val_macro_f1:.4}, at least the F1 to stop at")
            }
            Ended::Patience { best_trial, trials_after } => {
                write!(f, "{trials_after} trials started after the best (trial {best_trial}) ended without beating it")
            }
            Ended::Interrupted => f.write_str("it was interrupted"),
        }
    }
}

/// A study's settings.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    /// The data.
    pub data: DataSource,
    /// Starting architecture preset.
    pub model: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Wall-clock budget (see the module docs).
    pub budget: Duration,
    /// A trial budget besides the wall clock: no trial starts once this many have (failed
    /// ones included; ASHA promotions and a resumed trial are not new trials). The study
    /// ends at whichever budget is spent first. `None`: the wall clock alone. At least 1.
    /// For a PostgreSQL study, [`WorkerOptions::max_trials`] of the worker that creates it.
    pub max_trials: Option<u64>,
    /// Trial starts run first, in order (trial 0 takes the first), before any the strategy
    /// samples; each inside the bounds of [`EnvConfig::bounds`]. They count against
    /// `max_trials`. Empty: the strategy's own starts only.
    pub enqueued: Vec<Enqueued>,
    /// Early stopping of the study besides its budgets (none by default).
    pub stop_when: StopWhen,
    /// A time limit of each trial: a trial that has run this long (its own wall-clock time,
    /// [`TrialRecord::seconds`], across pauses and resumes) stops at its next decision point,
    /// as `stopped`, its validation macro-F1 counted as a budget's end counts it. `None`:
    /// trials run their rows (`EnvConfig::budget_steps`) whatever it takes.
    pub trial_timeout: Option<Duration>,
    /// Seed of everything.
    pub seed: u64,
    /// Starting batch size.
    pub batch_size: usize,
    /// Starting learning rate.
    pub lr: f64,
    /// The environment (decision interval, λ, bounds, steps per trial). Its `unit_batch`,
    /// if `None`, is `batch_size`: every trial's budget is `budget_steps × batch_size`
    /// training rows, whatever batch size a strategy starts it with or moves it to.
    pub env: EnvConfig,
    /// Minimum time between two checkpoints of a running trial (zero: every decision).
    pub checkpoint_every: Duration,
    /// For `rl` and `rl-no-width`: the policy to start from (a saved `policy.json`, or the
    /// shipped digits prior [`StudyPolicy::pretrained`]); `None` learns from nothing
    /// ([`StudyPolicy::untrained`]). A resumed study continues with its own.
    pub policy: Option<StudyPolicy>,
    /// Progress view of each trial's monitor.
    pub progress: ProgressMode,
    /// Optimiser steps between two step events in `events.jsonl` (≥ 1; a step another event
    /// follows, or a detector fired on, is logged too: see
    /// [`MonitorConfig::log_steps_every`](tuneforge_monitor::MonitorConfig::log_steps_every)).
    /// Like `progress`, this process's output only, not part of the stored study: default
    /// [`LOG_STEPS_EVERY`](crate::trial::LOG_STEPS_EVERY).
    pub log_steps_every: u64,
    /// Ends this study early when [`Stop::request`]ed (from another thread), as Ctrl-C
    /// ([`request_stop`]) ends every study of the process. Not part of the stored study.
    /// `Stop::default()` is a handle no one else holds; a clone of the config shares it.
    pub stop: Stop,
    /// Anneal each trial's learning rate along a cosine over its steps (to 0 at its last
    /// step), instead of keeping it constant. Actions and PBT scale the base rate, keeping
    /// the shape.
    pub cosine: bool,
    /// Fraction of the training rows held out for validation (seeded, stratified; one
    /// split for the whole study).
    pub val_fraction: f64,
}

/// What a process shows and logs of a study it runs, besides the study itself (not kept in
/// the store): [`TuneConfig::progress`] and [`TuneConfig::log_steps_every`]. A
/// [`ProgressMode`] alone is that progress and the default thinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Progress view of each trial's monitor.
    pub progress: ProgressMode,
    /// Steps between two logged step events.
    pub log_steps_every: u64,
    /// What ends the study early besides Ctrl-C ([`TuneConfig::stop`]).
    pub stop: Stop,
}

impl From<ProgressMode> for Output {
    fn from(progress: ProgressMode) -> Output {
        Output { progress, log_steps_every: crate::trial::LOG_STEPS_EVERY, stop: Stop::default() }
    }
}

/// The part of [`TuneConfig`] kept in the store (the study's identity).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    data: DataSource,
    model: String,
    strategy: Strategy,
    budget_s: f64,
    /// Absent in studies stored before trial budgets (and in those without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_trials: Option<u64>,
    /// Absent in studies stored before enqueued starts (and in those without any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    enqueued: Vec<Enqueued>,
    /// Absent in studies stored before early stopping (and in those without it).
    #[serde(default, skip_serializing_if = "StopWhen::is_none")]
    stop_when: StopWhen,
    /// Absent in studies stored before trial time limits (and in those without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_timeout_s: Option<f64>,
    seed: u64,
    batch_size: usize,
    lr: f64,
    env: EnvConfig,
    checkpoint_every_s: f64,
    cosine: bool,
    val_fraction: f64,
    /// The policy a learning strategy started from, kept so that a study resumed before
    /// its first trial ended, and a worker joining it, start where it did. Absent for the
    /// other strategies, and in studies stored before it was kept (then the digits prior,
    /// their default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<StudyPolicy>,
}

impl TuneConfig {
    /// The policy a learning strategy starts from: [`TuneConfig::policy`], else
    /// [`StudyPolicy::untrained`].
    pub fn starting_policy(&self) -> StudyPolicy {
        self.policy.clone().unwrap_or_else(StudyPolicy::untrained)
    }

    fn spec(&self) -> Spec {
        Spec {
            data: self.data.clone(),
            model: self.model.clone(),
            strategy: self.strategy,
            budget_s: self.budget.as_secs_f64(),
            max_trials: self.max_trials,
            enqueued: self.enqueued.clone(),
            stop_when: self.stop_when,
            trial_timeout_s: self.trial_timeout.map(|t| t.as_secs_f64()),
            seed: self.seed,
            batch_size: self.batch_size,
            lr: self.lr,
            env: self.env.clone(),
            checkpoint_every_s: self.checkpoint_every.as_secs_f64(),
            cosine: self.cosine,
            val_fraction: self.val_fraction,
            policy: self.strategy.learns().then(|| self.starting_policy()),
        }
    }

    /// The config a stored spec describes; refuses what would make a study panic or
    /// misbehave later: durations no `Duration` holds and action bounds out of order
    /// (`clamp` panics on them). Both were found by fuzzing `parse_study_config`.
    fn from_spec(spec: Spec, output: Output) -> Result<TuneConfig> {
        let bad = |why: String| Error::Config { what: "study config", why };
        let seconds = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| bad(format!("{name} {s}: not a duration in seconds")))
        };
        let b = &spec.env.bounds;
        if !(b.lr.0 > 0.0 && b.lr.0 <= b.lr.1 && b.lr.1.is_finite() && b.batch.0 <= b.batch.1 && b.width.0 <= b.width.1)
        {
            return Err(bad(format!("action bounds {b:?}: each range must be ordered, learning rates positive")));
        }
        let trial_timeout = spec.trial_timeout_s.map(|s| seconds("trial_timeout_s", s)).transpose()?;
        check_limits(spec.max_trials, trial_timeout, &spec.stop_when).map_err(|e| match e {
            Error::Config { what, why } => bad(format!("{what} {why}")),
            other => other,
        })?;
        let policy = match spec.policy {
            Some(p) => {
                p.validate().map_err(|why| bad(format!("starting policy: {why}")))?;
                Some(p)
            }
            None => spec.strategy.learns().then(StudyPolicy::pretrained),
        };
        check_enqueued(&spec.enqueued, &spec.env.bounds).map_err(|e| match e {
            Error::Config { why, .. } => bad(why),
            other => other,
        })?;
        Ok(TuneConfig {
            data: spec.data,
            model: spec.model,
            strategy: spec.strategy,
            budget: seconds("budget_s", spec.budget_s)?,
            max_trials: spec.max_trials,
            enqueued: spec.enqueued,
            stop_when: spec.stop_when,
            trial_timeout,
            seed: spec.seed,
            batch_size: spec.batch_size,
            lr: spec.lr,
            env: spec.env,
            checkpoint_every: seconds("checkpoint_every_s", spec.checkpoint_every_s)?,
            policy,
            progress: output.progress,
            log_steps_every: output.log_steps_every,
            stop: output.stop,
            cosine: spec.cosine,
            val_fraction: spec.val_fraction,
        })
    }
}

/// The best trial, tested once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    /// Trial id.
    pub trial: u64,
    /// Its validation macro-F1.
    pub val_macro_f1: f64,
    /// Test macro-F1.
    pub test_macro_f1: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// The saved model.
    pub model_path: PathBuf,
    /// The test predictions (`index,label,predicted`).
    pub predictions_path: PathBuf,
}

/// What `tune` writes to `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneSummary {
    /// Dataset.
    pub dataset: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Budget in seconds.
    pub budget_s: f64,
    /// Seed.
    pub seed: u64,
    /// Wall time used, over every process that worked on the study.
    pub wall_s: f64,
    /// Mean reward of the trials.
    pub mean_reward: f64,
    /// Seconds of agent work (observation, policy, update) over all trials.
    pub agent_seconds: f64,
    /// `agent_seconds / wall_s`.
    pub agent_overhead: f64,
    /// Seconds spent writing the study store during trials (decisions, evaluations,
    /// checkpoints), over all trials.
    pub store_seconds: f64,
    /// PostgreSQL workers: seconds this worker spent in the study store besides its trials'
    /// writes (`store_seconds`): claims, policy loads and merges, rung lookups, best-trial
    /// checks and checkpoint deletions. Of this worker only, over its own wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_store_seconds: Option<f64>,
    /// Trials continued from their checkpoint by [`resume`] (cut short by a crash and taken
    /// up again); a study stopped between trials and resumed has none.
    pub resumes: u64,
    /// Why the study ended (absent in summaries written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// The study store.
    pub study_path: PathBuf,
    /// Every trial, by id.
    pub trials: Vec<TrialRecord>,
    /// The best trial.
    pub best: Best,
}

/// The file of a study in `dir`.
pub fn study_path(dir: &Path) -> PathBuf {
    dir.join("study.sqlite")
}

/// Runs a new study in `out` (refused if `out` already holds one: continue it with
/// [`resume`]) and writes `study.sqlite`, `events.jsonl`, `summary.json`,
/// `model.safetensors` (+ spec), `predictor.json`, `prep.json` (CSV and text data), `predictions.csv` and, for the
/// learning strategies, `policy.json`. `on_trial` sees each finished trial.
pub fn tune(
    config: &TuneConfig,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    on_trial: &mut dyn FnMut(&TrialRecord),
) -> Result<TuneSummary> {
    let path = study_path(out);
    if path.exists() {
        return Err(Error::Config {
            what: "study",
            why: format!("{} already holds a study: continue it with --resume, or choose another --out", out.display()),
        });
    }
    // The data first: a study is not created for data that cannot be read, or a model that
    // cannot take it (it would fail every trial).
    let data = checked_data(config, dirs, cache)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    let lock = StudyLock::acquire(out)?;
    if path.exists() {
        return Err(Error::Config { what: "study", why: format!("{} was created meanwhile", out.display()) });
    }
    let mut store = SqliteStore::open(&path)?;
    store.create_study(&StudyRow {
        config: study_config_json(config),
        strategy: config.strategy.name().into(),
        dataset: config.data.to_string(),
        seed: config.seed,
        budget_s: config.budget.as_secs_f64(),
        elapsed_s: 0.0,
        created_unix: unix_now(),
    })?;
    drive(config, data, &mut store, device, out, 0.0, on_trial, &lock)
}

/// The settings [`tune`] checks before it creates a study, and the data prepared.
fn checked_data(config: &TuneConfig, dirs: &DataDirs, cache: &GzCache) -> Result<Prepared> {
    check_limits(config.max_trials, config.trial_timeout, &config.stop_when)?;
    check_enqueued(&config.enqueued, &config.env.bounds)?;
    let data = prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?;
    check_model(config, &data)?;
    Ok(data)
}

/// What a study of `config` would train on, found as [`tune`] finds it before it creates
/// the study (the same checks, the same errors) and nothing written: `tune --dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Training rows (the validation split held out).
    pub train_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
    /// Test rows.
    pub test_rows: usize,
    /// Classes.
    pub classes: usize,
    /// One sample's shape as the model sees it.
    pub sample_shape: Vec<usize>,
    /// Trainable parameters of the starting model.
    pub parameters: usize,
    /// Training rows each trial gets (`budget_steps × unit batch`), whatever its batch size.
    pub rows_per_trial: u64,
}

/// Checks `config` against its data as [`tune`] would and says what the study would train
/// on, without creating anything.
///
/// ```
/// use std::time::Duration;
/// use tuneforge_agent::data::DataSource;
/// use tuneforge_agent::env::EnvConfig;
/// use tuneforge_agent::tune::{Strategy, TuneConfig, plan};
/// use tuneforge_loader::{DataDirs, GzCache};
///
/// # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
/// let dirs = DataDirs::new(vec![root.join("datasets")]); // where digits.csv is
/// let config = TuneConfig {
///     data: DataSource::parse("digits", None)?,
///     model: "mlp:64".into(),
///     strategy: Strategy::Random,
///     budget: Duration::from_secs(60),
///     max_trials: None,
///     enqueued: Vec::new(),
///     stop_when: Default::default(),
///     trial_timeout: None,
///     seed: 0,
///     batch_size: 32,
///     lr: 3e-3,
///     env: EnvConfig { budget_steps: 300, ..EnvConfig::default() },
///     checkpoint_every: Duration::from_secs(10),
///     policy: None,
///     progress: Default::default(),
///     log_steps_every: 10,
///     stop: Default::default(),
///     cosine: true,
///     val_fraction: 0.2,
/// };
/// let p = plan(&config, &dirs, &GzCache::default_location())?;
/// assert_eq!((p.classes, p.rows_per_trial), (10, 300 * 32));
/// assert!(p.parameters > 64 * 10 && p.val_rows > 0);
/// # Ok::<(), tuneforge_agent::Error>(())
/// ```
pub fn plan(config: &TuneConfig, dirs: &DataDirs, cache: &GzCache) -> Result<Plan> {
    let data = checked_data(config, dirs, cache)?;
    Ok(Plan {
        train_rows: data.train.len(),
        val_rows: data.val.as_ref().map_or(0, |v| v.len()),
        test_rows: data.test.len(),
        classes: data.train.num_classes(),
        sample_shape: data.sample_shape.clone(),
        parameters: crate::run::model_spec(&config.model, &data)?.parameter_count()?,
        rows_per_trial: config.env.budget_steps * config.env.unit_batch.unwrap_or(config.batch_size) as u64,
    })
}

/// The configuration of the study in `dir`. Refused, as by [`resume`], while another
/// process runs the study (it may be creating it).
pub fn study_config(dir: &Path, output: impl Into<Output>) -> Result<TuneConfig> {
    if study_path(dir).exists() {
        // A study being created or run by another process may not have its row yet: say
        // that it is in use rather than that it is broken (the lock is released at once).
        drop(StudyLock::acquire(dir)?);
    }
    read_study_config(dir, output.into())
}

/// [`study_config`] for a caller that holds the study's lock.
fn read_study_config(dir: &Path, output: Output) -> Result<TuneConfig> {
    let path = study_path(dir);
    if !path.exists() {
        return Err(Error::Config {
            what: "study",
            why: format!("{} does not exist: nothing to resume", path.display()),
        });
    }
    let store = SqliteStore::open(&path)?;
    let row = store
        .study()?
        .ok_or_else(|| Error::Config { what: "study", why: format!("{}: no study row", path.display()) })?;
    parse_study_config(&row.config, output).map_err(|e| match e {
        Error::Config { why, .. } => {
            Error::Config { what: "study", why: format!("{}: study config: {why}", path.display()) }
        }
        other => other,
    })
}

/// Reads a study's configuration as stored in its store (the JSON of the study row's
/// `config` column; see [`study_config_json`]). Errors are [`Error::Config`] with `what` =
/// `"study config"`.
pub fn parse_study_config(json: &str, output: impl Into<Output>) -> Result<TuneConfig> {
    let spec: Spec =
        serde_json::from_str(json).map_err(|e| Error::Config { what: "study config", why: e.to_string() })?;
    TuneConfig::from_spec(spec, output.into())
}

/// The JSON a study's configuration is stored as (everything but the progress view; for a
/// learning strategy the starting policy too); [`parse_study_config`] reads it back.
pub fn study_config_json(config: &TuneConfig) -> String {
    serde_json::to_string(&config.spec()).expect("spec serialises")
}

/// Parses a wall-clock budget: `90s`, `10m`, `1h` or a plain number of seconds. Errors are
/// [`Error::Config`] with `what` = `"budget"` and `why` saying what is wrong.
pub fn parse_budget(text: &str) -> Result<Duration> {
    let bad = |why: &str| Error::Config { what: "budget", why: why.to_string() };
    let t = text.trim();
    let (num, unit) = t.find(|c: char| c.is_ascii_alphabetic()).map_or((t, "s"), |i| (&t[..i], &t[i..]));
    let n: f64 = num.trim().parse().map_err(|_| bad("expected e.g. 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad("unit must be s, m or h")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad("must be positive"));
    }
    // Found by fuzzing: beyond u64::MAX seconds `Duration::from_secs_f64` panics, and below
    // half a nanosecond a positive number became a zero budget.
    let budget = Duration::try_from_secs_f64(secs).map_err(|_| bad("too long (at most 2^64 seconds)"))?;
    if budget.is_zero() {
        return Err(bad("must be positive (at least a nanosecond)"));
    }
    Ok(budget)
}

/// Continues the study in `dir` (see the module docs) and writes the same outputs as
/// [`tune`]. A finished study is only re-tested and its outputs rewritten.
pub fn resume(
    dir: &Path,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    output: impl Into<Output>,
    on_trial: &mut dyn FnMut(&TrialRecord),
) -> Result<TuneSummary> {
    let lock = StudyLock::acquire(dir)?;
    remove_stale_temp_files(dir);
    let config = read_study_config(dir, output.into())?;
    let mut store = SqliteStore::open(&study_path(dir))?;
    let elapsed = store.study()?.map_or(0.0, |s| s.elapsed_s);
    let data = prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?;
    drive(&config, data, &mut store, device, dir, elapsed, on_trial, &lock)
}

/// Refuses a starting model (the study's, or an enqueued trial's) that cannot be built over
/// the prepared data (a study of it would fail trial by trial until its budget ends), with
/// the preset's reason.
pub(crate) fn check_model(config: &TuneConfig, data: &Prepared) -> Result<()> {
    let enqueued = config
        .enqueued
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((format!(" of enqueued trial {i}"), e.model.as_ref()?)));
    for (whose, model) in std::iter::once((String::new(), &config.model)).chain(enqueued) {
        crate::run::model_spec(model, data).map_err(|e| Error::Config {
            what: "model",
            why: format!("the starting model {model}{whose} cannot train on {}: {e}", config.data),
        })?;
    }
    Ok(())
}

/// Refuses an enqueued start outside the study's bounds (a learning rate, a batch size, a
/// width named in its model) — what every sampled start and every move is kept inside.
pub(crate) fn check_enqueued(enqueued: &[Enqueued], bounds: &crate::env::Bounds) -> Result<()> {
    for (i, e) in enqueued.iter().enumerate() {
        let bad = |why: String| Error::Config { what: "enqueued trial", why: format!("{i} ({e}): {why}") };
        if let Some(lr) = e.lr
            && !(lr > 0.0 && lr.is_finite() && lr >= bounds.lr.0 && lr <= bounds.lr.1)
        {
            return Err(bad(format!("lr {lr} is outside the learning-rate bounds {}:{}", bounds.lr.0, bounds.lr.1)));
        }
        if let Some(b) = e.batch_size
            && !(bounds.batch.0..=bounds.batch.1).contains(&b)
        {
            return Err(bad(format!(
                "batch {b} is outside the batch-size bounds {}:{}",
                bounds.batch.0, bounds.batch.1
            )));
        }
        let widths = e.model.as_deref().map(model_widths).unwrap_or_default();
        if let Some(w) = widths.into_iter().find(|w| !(bounds.width.0..=bounds.width.1).contains(w)) {
            return Err(bad(format!("width {w} is outside the width bounds {}:{}", bounds.width.0, bounds.width.1)));
        }
    }
    Ok(())
}

/// The widths a starting model has, as the width bounds apply to them: those in its name
/// (`mlp:W,...`, `text-bag:D,H,...`, `text-cnn:D,C,...`), or seed-cnn's 32 channels and 64
/// dense units.
pub fn model_widths(model: &str) -> Vec<usize> {
    match model.split_once(':') {
        _ if model == "seed-cnn" => tuneforge_model::ModelSpec::seed_cnn(10).hidden_widths(),
        Some((_, widths)) => widths.split(',').filter_map(|w| w.trim().parse::<usize>().ok()).collect(),
        None => Vec::new(),
    }
}

/// Refuses a trial budget of 0, a trial time limit of 0 and an early-stopping rule
/// [`StopWhen::check`] refuses: a new study's, a worker's, a stored one's or a changed one's.
pub(crate) fn check_limits(
    max_trials: Option<u64>,
    trial_timeout: Option<Duration>,
    stop_when: &StopWhen,
) -> Result<()> {
    if max_trials == Some(0) {
        return Err(Error::Config { what: "max_trials", why: "0: a study runs at least one trial".into() });
    }
    if trial_timeout.is_some_and(|t| t.is_zero()) {
        return Err(Error::Config { what: "trial_timeout", why: "0: a trial needs time to train".into() });
    }
    stop_when.check()
}

/// New settings for a stored study ([`extend`]): each `None` keeps what the study has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Extension {
    /// A new wall-clock budget, a total (the time already used counts against it).
    pub budget: Option<Duration>,
    /// A new trial budget, a total (the trials already run count against it).
    pub max_trials: Option<u64>,
    /// A new [`StopWhen::f1`] (`Some(None)` removes it).
    pub stop_at: Option<Option<f64>>,
    /// A new [`StopWhen::patience`] (`Some(None)` removes it).
    pub patience: Option<Option<u64>>,
    /// A new [`TuneConfig::trial_timeout`] (`Some(None)` removes it): trials started or
    /// continued after the change have it (a trial's time already run counts against it).
    pub trial_timeout: Option<Option<Duration>>,
}

/// Gives the study in `dir` a new wall-clock budget, trial budget, early-stopping rule or
/// trial time limit — budgets are totals, the time and trials already used included, as
/// [`TuneConfig::budget`] and [`TuneConfig::max_trials`] are — kept in its store, so that
/// [`resume`] runs on to them. Returns the configuration before and after. Refused while
/// another process runs the study, for a trial budget or time limit of 0 and for a rule
/// [`StopWhen::check`] refuses.
///
/// A finished study extended and resumed starts new trials (`rl` with the policy it learnt);
/// a budget below what was used, or a rule the study already meets, ends it again at once.
pub fn extend(dir: &Path, change: &Extension) -> Result<(TuneConfig, TuneConfig)> {
    let _lock = StudyLock::acquire(dir)?;
    let before = read_study_config(dir, Output::from(ProgressMode::Off))?;
    let mut after = before.clone();
    after.budget = change.budget.unwrap_or(before.budget);
    after.max_trials = change.max_trials.or(before.max_trials);
    after.stop_when.f1 = change.stop_at.unwrap_or(before.stop_when.f1);
    after.stop_when.patience = change.patience.unwrap_or(before.stop_when.patience);
    after.trial_timeout = change.trial_timeout.unwrap_or(before.trial_timeout);
    check_limits(after.max_trials, after.trial_timeout, &after.stop_when)?;
    let mut store = SqliteStore::open(&study_path(dir))?;
    store.set_config(&study_config_json(&after), after.budget.as_secs_f64())?;
    Ok((before, after))
}

/// Deletes what a killed process left of its write-then-rename files in `dir` (names
/// starting with `.tmp-`, as `write_atomic` makes them, or holding `.tmp-<pid>`): the caller
/// holds the study's lock, so no live process is writing them. Never fails: a file that
/// cannot be removed is logged and left.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".tmp-") && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed a killed process's temporary file"),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a temporary file")
                }
            }
        }
    }
}

/// An exclusive `flock` on `DIR/study.lock`, released when the process ends however it
/// ends; holds the owner's pid for the error message of a second process.
#[derive(Debug)]
struct StudyLock {
    _file: std::fs::File,
}

impl StudyLock {
    fn acquire(dir: &Path) -> Result<StudyLock> {
        use std::io::{Read, Seek, Write};
        let path = dir.join("study.lock");
        let io = |source| Error::Io { path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let mut owner = String::new();
                file.read_to_string(&mut owner).ok();
                return Err(Error::Config {
                    what: "study",
                    why: format!(
                        "{} is in use by process {} (a tune or --resume of it is running)",
                        dir.display(),
                        owner.trim()
                    ),
                });
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StudyLock { _file: file })
    }
}

/// The process running the study in `dir` now — a `tune`, `--resume` or PostgreSQL worker
/// holding its `study.lock` — or `None` when no live process does (the study finished, was
/// killed, or was never started here). Reads the pid the lock's holder wrote, without touching
/// the lock itself, so a starting `--resume` is never refused because someone looked. On
/// Linux the kernel's table of locks (`/proc/locks`) says whether a process holds the lock on
/// that file, which is exact; elsewhere, or when that table cannot be read, whether the
/// process is alive (not a zombie): a pid reused by an unrelated process after a kill then
/// reads as running.
pub fn study_process(dir: &Path) -> Option<u32> {
    let path = dir.join("study.lock");
    let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
    #[cfg(target_os = "linux")]
    if let Some(held) = flock_held(&path, pid) {
        return held.then_some(pid);
    }
    #[cfg(unix)]
    {
        let pid_t = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)?;
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let exists =
            unsafe { libc::kill(pid_t, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A killed process its parent has not waited for yet (a zombie) still exists.
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
            .is_some_and(|state| matches!(state, 'Z' | 'X'));
        (exists && !zombie).then_some(pid)
    }
    #[cfg(not(unix))]
    {
        Some(pid)
    }
}

/// Whether process `pid` holds a `flock` on the file at `path`; `None` when neither its
/// open files nor the kernel's lock table can be read. First from the process's own open
/// files: the one that is `path` (same device and inode) and its `/proc/PID/fdinfo` entry,
/// which lists the locks held through it (exact, and unaffected by other processes' locks);
/// a process that is gone holds nothing. When those cannot be read (another user's process),
/// from `/proc/locks`: a granted `flock` on the file's inode, and its device or the holder
/// `pid` (a file on an overlay can show the device of the layer below).
#[cfg(target_os = "linux")]
fn flock_held(path: &Path, pid: u32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    if let Some(held) = flock_held_through_fds(&meta, pid) {
        return Some(held);
    }
    let device = format!("{:02x}:{:02x}", libc::major(meta.dev()), libc::minor(meta.dev()));
    // The kernel writes /proc/locks a page per read(2), walking its lock list anew from the
    // entry's index each time: locks taken or released by others between two reads shift
    // the list, and an entry can be skipped (seen in CI while Chromium ran beside). A lock
    // is held if any of a few reads lists it; not held only if none does.
    for _ in 0..4 {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        if locks_list(&locks, &device, meta.ino(), pid) {
            return Some(true);
        }
    }
    Some(false)
}

/// [`flock_held`] from the open files of `pid`: `None` when they cannot be listed for
/// another reason than the process being gone.
#[cfg(target_os = "linux")]
fn flock_held_through_fds(meta: &std::fs::Metadata, pid: u32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    for fd in fds.flatten() {
        // The link's target, followed: the same file has the same device and inode.
        let Ok(target) = std::fs::metadata(fd.path()) else { continue };
        if (target.dev(), target.ino()) != (meta.dev(), meta.ino()) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok()?;
        if fdinfo_lists_flock(&info) {
            return Some(true);
        }
    }
    Some(false)
}

/// Whether a `/proc/PID/fdinfo/FD` text lists a `flock` held through that descriptor: a
/// line such as `lock:\t1: FLOCK  ADVISORY  WRITE 4242 fe:00:10011578 0 EOF`.
#[cfg(any(target_os = "linux", test))]
fn fdinfo_lists_flock(info: &str) -> bool {
    info.lines().any(|line| {
        line.strip_prefix("lock:").is_some_and(|rest| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            matches!(f[..], [_, "FLOCK", ..])
        })
    })
}

/// [`flock_held`] on the text of `/proc/locks`: lines such as
/// `1: FLOCK  ADVISORY  WRITE 4242 fe:00:10011578 0 EOF` (a waiter's has `->` after the
/// number and is not a holder).
#[cfg(any(target_os = "linux", test))]
fn locks_list(table: &str, device: &str, inode: u64, pid: u32) -> bool {
    table.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, kind, _, _, holder, place, ..] = f[..] else { return false };
        let Some((dev, ino)) = place.rsplit_once(':') else { return false };
        kind == "FLOCK" && ino.parse() == Ok(inode) && (dev == device || holder.parse() == Ok(pid))
    })
}

/// Set by [`request_stop`].
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every study running in this process (and any started after) to end as if its budget
/// were spent: no trial starts, running trials stop at their next decision point (status
/// `stopped`), and the study ends as usual — best model tested, outputs written, the wall
/// time used recorded, so that [`resume`] later runs what is left of the budget. For a
/// Ctrl-C handler (`cargo xtask tune` installs one); a worker of a PostgreSQL study ([`work`])
/// stops alone, the study's other workers go on.
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// A handle that ends one study early ([`TuneConfig::stop`], [`Output::stop`]): after
/// [`request`](Self::request), from any thread, the study ends as [`request_stop`] ends every
/// study of the process — no new trial, running trials `stopped` at their next decision
/// point, the best model tested, outputs written, the wall time used recorded (so that
/// [`resume`] runs what is left of the budget). Other studies of the process go on.
///
/// ```
/// use tuneforge_agent::tune::Stop;
///
/// let stop = Stop::default();
/// let held_by_the_study = stop.clone();
/// assert!(!held_by_the_study.requested());
/// stop.request();
/// assert!(held_by_the_study.requested() && !Stop::default().requested());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

/// Two handles are equal when they are the same handle (clones of one another).
impl PartialEq for Stop {
    fn eq(&self, other: &Stop) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Stop {}

impl Stop {
    /// Asks the studies holding this handle (or a clone of it) to end.
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this handle was [`request`](Self::request)ed, or every study was
    /// ([`request_stop`]).
    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) || stop_requested()
    }
}

/// Wall time of the study: what earlier processes used plus this one's.
struct Clock {
    offset: f64,
    start: Instant,
}

impl Clock {
    fn elapsed(&self) -> f64 {
        self.offset + self.start.elapsed().as_secs_f64()
    }
}

/// The study's state besides the store.
struct State<'a> {
    config: &'a TuneConfig,
    policy: StudyPolicy,
    best: Option<(f64, u64)>,
    records: BTreeMap<u64, TrialRecord>,
    next_id: u64,
    on_trial: &'a mut dyn FnMut(&TrialRecord),
    budget_s: f64,
    /// Ended trials (in `records`) whose id is greater than the best's: what
    /// [`StopWhen::patience`] counts.
    ended_after_best: u64,
    /// The early-stopping rule ([`TuneConfig::stop_when`]) as first met: the study ends
    /// (trials still running then may end better than the best, and that does not restart
    /// it).
    converged: Option<Ended>,
}

impl State<'_> {
    fn over(&self, ctx: &TrialContext<'_>) -> bool {
        (ctx.elapsed)() >= self.budget_s || self.config.stop.requested() || self.converged.is_some()
    }

    /// Checks the early-stopping rule against the trials ended so far, unless it was met.
    fn check_converged(&mut self) {
        if self.converged.is_none() {
            self.converged = self.config.stop_when.met(self.best, self.ended_after_best);
        }
    }

    /// Counts [`State::ended_after_best`] again from `records` (the best changed, or the
    /// records were read from the store).
    fn recount(&mut self) {
        self.ended_after_best = match self.best {
            Some((_, best)) => self.records.range(best + 1..).count() as u64,
            None => 0,
        };
    }

    /// Why the study ends, once its loop has ended.
    fn ended(&self) -> Ended {
        if self.config.stop.requested() {
            Ended::Interrupted
        } else if let Some(e) = &self.converged {
            e.clone()
        } else if self.config.max_trials.is_some_and(|m| self.records.len() as u64 >= m) {
            Ended::MaxTrials
        } else {
            Ended::Budget
        }
    }

    /// Whether `trial` has run for its time limit ([`TuneConfig::trial_timeout`]).
    fn timed_out(&self, trial: &Trial) -> bool {
        self.config.trial_timeout.is_some_and(|t| trial.tally.seconds >= t.as_secs_f64())
    }

    /// Whether `trial`'s validation macro-F1 has reached the F1 to stop the study at
    /// ([`StopWhen::f1`]): the trial ends there and, once recorded, so does the study.
    fn reached_target(&self, trial: &Trial) -> bool {
        self.config.stop_when.f1.is_some_and(|target| trial.env.observe().val_f1 >= target)
    }

    /// Whether `trial` stops at this decision point, before its end: its time is up or it
    /// reached the F1 to stop at.
    fn ends_early(&self, trial: &Trial) -> bool {
        self.timed_out(trial) || self.reached_target(trial)
    }

    /// Whether the trial budget ([`TuneConfig::max_trials`]) lets another trial start.
    fn may_start(&self) -> bool {
        self.config.max_trials.is_none_or(|m| self.next_id < m)
    }

    /// The starting configuration of trial `id`.
    fn sample_start(&self, id: u64) -> TrialStart {
        let c = self.config;
        // Enqueued starts first (the draws of later trials do not depend on them).
        if let Some(e) = usize::try_from(id).ok().and_then(|i| c.enqueued.get(i)) {
            return TrialStart {
                model: e.model.clone().unwrap_or_else(|| c.model.clone()),
                lr: e.lr.unwrap_or(c.lr),
                batch_size: e.batch_size.unwrap_or(c.batch_size),
                seed: c.seed + id,
            };
        }
        let mut start = TrialStart { model: c.model.clone(), lr: c.lr, batch_size: c.batch_size, seed: c.seed + id };
        // `rl` and `rl-no-width` keep the study's defaults for their first trial.
        let sampled = match c.strategy {
            Strategy::Random | Strategy::Asha | Strategy::Pbt | Strategy::Pb2 => true,
            Strategy::Tpe | Strategy::TpeMultivariate
                if id >= crate::tpe::STARTUP_TRIALS
                    && self.records.values().any(|r| !r.status.starts_with("failed")) =>
            {
                return self.tpe_start(id);
            }
            Strategy::Tpe | Strategy::TpeMultivariate => true,
            Strategy::Rl | Strategy::RlNoWidth => id > 0,
            Strategy::Fixed => false,
        };
        if sampled {
            let mut rng = rng_for(c.seed, id, 0, 2);
            start.lr = sample_lr(c.lr, c.env.bounds.lr, &mut rng);
            start.batch_size = sample_batch(c.batch_size, c.env.bounds.batch, &mut rng);
            // Presets with widths (`mlp:W,...`, `text-bag:D,H,...`, `text-cnn:D,C,...`).
            let models = StartSpace::models(c);
            if !models.is_empty() {
                start.model = models[rng.random_range(0..models.len())].clone();
            }
        }
        start
    }

    /// The start of trial `id` of a `tpe` or `tpe-multivariate` study: the estimator's
    /// suggestion from the trials ended so far, over the choices a random start has.
    fn tpe_start(&self, id: u64) -> TrialStart {
        let c = self.config;
        let space = StartSpace::of(c);
        let observations: Vec<crate::tpe::Observation> = self
            .records
            .values()
            .map(|r| {
                let stage = match r.status.as_str() {
                    "completed" => 3,
                    s if s.starts_with("failed") => -1,
                    _ => r.rungs.len() as i32,
                };
                let f1 = if r.val_macro_f1.is_finite() { r.val_macro_f1 } else { f64::NEG_INFINITY };
                crate::tpe::Observation {
                    number: r.id,
                    log_lr: (r.start.lr / c.lr).log10(),
                    batch: space.batches.iter().position(|&b| b == r.start.batch_size),
                    width: space.models.iter().position(|m| *m == r.start.model),
                    score: (stage, f1),
                }
            })
            .collect();
        let mut rng = rng_for(c.seed, id, 0, 2);
        let mode = c.strategy.tpe_mode().unwrap_or(crate::tpe::Mode::Independent);
        let s = crate::tpe::suggest(&space.tpe(), &observations, mode, &mut rng);
        TrialStart {
            model: space.models.get(s.width).cloned().unwrap_or_else(|| c.model.clone()),
            lr: (c.lr * 10f64.powf(s.log_lr)).clamp(c.env.bounds.lr.0, c.env.bounds.lr.1),
            batch_size: space.batches.get(s.batch).copied().unwrap_or(c.batch_size),
            seed: c.seed + id,
        }
    }

    /// The action at the current decision point of `trial` (timed into its tally).
    fn choose(&mut self, trial: &mut Trial) -> (Action, f64) {
        let t = Instant::now();
        let action = if self.config.strategy.learns() {
            let mut rng = rng_for(self.config.seed, trial.id, trial.tally.rows, 1);
            // What the policy has learnt by now: the study's state after the last finished
            // trial plus this trial's decisions so far (identical after a resume).
            let mut live = self.policy.with_open_episode(&trial.tally.episode, trial.env.observe());
            let mut a = live.act(trial.env.observe(), &mut rng);
            if self.config.strategy == Strategy::RlNoWidth {
                a.width = Move::Keep;
            }
            a
        } else {
            Action::KEEP
        };
        (action, t.elapsed().as_secs_f64())
    }

    /// Ends `trial` (policy update, best model kept, record).
    fn end(&mut self, ctx: &mut TrialContext<'_>, trial: &mut Trial) -> Result<()> {
        let policy = if self.config.strategy.learns() {
            let t = Instant::now();
            // A trial stopped before its end bootstraps from its last state.
            let stopped_at = (!trial.env.done()).then(|| trial.env.observe());
            self.policy.learn_episode(&trial.tally.episode, stopped_at);
            trial.tally.agent_seconds += t.elapsed().as_secs_f64();
            Some(serde_json::to_string(&self.policy).expect("policy serialises"))
        } else {
            None
        };
        let f1 = trial.env.observe().val_f1;
        let keep = self.beats_best(f1);
        let row = ctx.finish(trial, policy.as_deref(), keep)?;
        if keep {
            self.set_best(ctx, f1, trial.id)?;
        }
        self.push(trial.record(&row.status));
        Ok(())
    }

    fn beats_best(&self, f1: f64) -> bool {
        self.best.is_none_or(|(b, _)| f1 > b)
    }

    /// Makes trial `id` (whose checkpoint is kept) the best, deleting the former best's
    /// checkpoint.
    fn set_best(&mut self, ctx: &mut TrialContext<'_>, f1: f64, id: u64) -> Result<()> {
        if let Some((_, old)) = self.best {
            ctx.store.delete_checkpoint(old)?;
        }
        self.best = Some((f1, id));
        self.recount();
        Ok(())
    }

    /// Records `trial` as failed by `error`, or, when the error is the study's own (it cannot
    /// write its files), returns it: the study stops and the trial stays resumable.
    fn fail(&mut self, ctx: &mut TrialContext<'_>, trial: &mut Trial, error: Error) -> Result<()> {
        if !error.ends_only_the_trial() {
            return Err(error);
        }
        tracing::warn!(trial = trial.id, error = %error, "trial failed");
        let row = ctx.fail(trial, &error)?;
        self.push(trial.record(&row.status));
        Ok(())
    }

    fn push(&mut self, record: TrialRecord) {
        (self.on_trial)(&record);
        if self.best.is_some_and(|(_, best)| record.id > best) {
            self.ended_after_best += 1;
        }
        self.check_converged();
        self.records.insert(record.id, record);
    }

    /// Trains `trial` until its episode ends, `until` steps are taken, or the budget is
    /// spent; `false` if it failed (and was recorded so).
    fn train(&mut self, ctx: &mut TrialContext<'_>, trial: &mut Trial, until: Option<u64>) -> Result<bool> {
        while !trial.env.done()
            && until.is_none_or(|u| trial.env.steps() < u)
            && !self.over(ctx)
            && !self.ends_early(trial)
        {
            let (action, secs) = self.choose(trial);
            if let Err(e) = ctx.step(trial, action, secs) {
                self.fail(ctx, trial, e)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// As [`State::train`] to the trial's end, recording its validation macro-F1 at each of
    /// ASHA's rungs and returning early (the trial to end as `stopped`) where
    /// [`rung_stops`] says so against the finished trials.
    fn train_with_rungs(&mut self, ctx: &mut TrialContext<'_>, trial: &mut Trial) -> Result<bool> {
        let targets = rungs(ctx.env.budget_steps);
        while trial.tally.rungs.len() < targets.len() - 1 {
            let k = trial.tally.rungs.len();
            if !self.train(ctx, trial, Some(targets[k]))? {
                return Ok(false);
            }
            if trial.env.steps() < targets[k] {
                return Ok(true); // the budget is spent, or the trial stops early
            }
            let f1 = trial.env.observe().val_f1;
            trial.tally.rungs.push(f1);
            let earlier: Vec<f64> = self.records.values().filter_map(|r| r.rungs.get(k).copied()).collect();
            if rung_stops(&earlier, f1) {
                tracing::debug!(trial = trial.id, rung = k, f1, "stopped at a rung");
                return Ok(true);
            }
        }
        self.train(ctx, trial, None)
    }

    fn start(&mut self, ctx: &mut TrialContext<'_>) -> Result<Option<Trial>> {
        let id = self.next_id;
        self.next_id += 1;
        // (Choosing a `tpe` start is the agent's work.)
        let t = Instant::now();
        let start = self.sample_start(id);
        let choosing = t.elapsed().as_secs_f64();
        match ctx.start(id, start.clone()) {
            Ok(mut t) => {
                t.tally.agent_seconds += choosing;
                Ok(Some(t))
            }
            Err(e) if !e.ends_only_the_trial() => Err(e),
            Err(e) => {
                // Could not even train its first interval: recorded as failed, the study goes on.
                tracing::warn!(trial = id, error = %e, "trial failed to start");
                let record = TrialRecord::unstarted(id, &start, &format!("failed: {e}"));
                let now = unix_now();
                let row = TrialRow {
                    id,
                    status: record.status.clone(),
                    config: serde_json::to_string(&start).expect("start serialises"),
                    record: serde_json::to_string(&record).expect("record serialises"),
                    val_macro_f1: None,
                    samples_per_s: None,
                    reward: 0.0,
                    decisions: 0,
                    resumed: false,
                    started_unix: now,
                    updated_unix: now,
                    ended_unix: Some(now),
                    pid: std::process::id(),
                };
                ctx.store.finish_trial(&row, None, (ctx.elapsed)())?;
                self.push(record);
                Ok(None)
            }
        }
    }
}

/// The choices of a sampled start ([`sample_lr`], [`sample_batch`], the widths ×½, ×1, ×2),
/// as the `tpe` strategy searches them.
struct StartSpace {
    /// The learning rate's exponent range (log10 of its factor to the study's rate).
    log_lr: (f64, f64),
    /// The batch sizes.
    batches: Vec<usize>,
    /// The models (the study's widths ×½, ×1, ×2, cut to the bounds); empty for a model
    /// without widths in its name.
    models: Vec<String>,
}

impl StartSpace {
    fn of(c: &TuneConfig) -> StartSpace {
        let b = &c.env.bounds;
        let (lo, hi) = lr_exponents(c.lr, b.lr);
        let mut batches: Vec<usize> =
            batch_exponents(c.batch_size, b.batch).into_iter().map(|k| scaled_batch(c.batch_size, k)).collect();
        if batches.is_empty() {
            batches.push(c.batch_size.clamp(b.batch.0, b.batch.1));
        }
        StartSpace {
            log_lr: if lo < hi { (lo, hi) } else { (lo.min(hi), lo.min(hi)) },
            batches,
            models: Self::models(c),
        }
    }

    /// The study's model with its widths ×½, ×1 and ×2, cut to the bounds (empty for a model
    /// without widths in its name).
    fn models(c: &TuneConfig) -> Vec<String> {
        let Some((kind, widths)) = c.model.split_once(':') else { return Vec::new() };
        [0.5, 1.0, 2.0]
            .iter()
            .map(|f| {
                let scaled: Vec<String> = widths
                    .split(',')
                    .filter_map(|w| w.trim().parse::<f64>().ok())
                    .map(|w| (((w * f).round() as usize).clamp(c.env.bounds.width.0, c.env.bounds.width.1)).to_string())
                    .collect();
                format!("{kind}:{}", scaled.join(","))
            })
            .collect()
    }

    fn tpe(&self) -> crate::tpe::Space {
        crate::tpe::Space { log_lr: self.log_lr, batches: self.batches.len(), widths: self.models.len() }
    }
}

/// A sampled start's learning rate: log-uniform over a decade either side of the study's
/// rate `lr`, cut to the `bounds` (when they cut the decade, the draw spreads over what is
/// left rather than piling up at the bound). When they do not cut it (the default bounds
/// with the default rates), the same draw as before bounds could be set.
fn sample_lr(lr: f64, bounds: (f64, f64), rng: &mut impl Rng) -> f64 {
    let (lo, hi) = lr_exponents(lr, bounds);
    let exponent = if lo < hi {
        rng.random_range(lo..hi)
    } else {
        // One rate left (or `lr` outside the bounds): no choice, but the draw is taken so
        // that the widths drawn next are those of any other study with this seed.
        let _: f64 = rng.random();
        lo.min(hi)
    };
    (lr * 10f64.powf(exponent)).clamp(bounds.0, bounds.1)
}

/// A sampled start's batch size: the study's `batch` ×¼, ×½, ×1 or ×2, drawn among those
/// inside the `bounds` (all four: the same draw as before bounds could be set); none inside:
/// the nearest bound. Tables' default (32, bounds 16–1024) leaves three: 16, 32 and 64 a
/// third each, where the clamp before gave 16 half the time (8 and 16 both became 16).
fn sample_batch(batch: usize, bounds: (usize, usize), rng: &mut impl Rng) -> usize {
    let inside = batch_exponents(batch, bounds);
    let k = match inside.len() {
        4 | 0 => rng.random_range(-2i32..=1),
        n => inside[rng.random_range(0..n)],
    };
    scaled_batch(batch, k).clamp(bounds.0, bounds.1)
}

/// The range of a sampled start's learning-rate exponent (log10 of its factor to `lr`): a
/// decade either side, cut to the `bounds` (`lo > hi` when `lr` is outside them).
fn lr_exponents(lr: f64, bounds: (f64, f64)) -> (f64, f64) {
    ((bounds.0 / lr).log10().max(-1.0), (bounds.1 / lr).log10().min(1.0))
}

/// `batch × 2^k`.
fn scaled_batch(batch: usize, k: i32) -> usize {
    (batch as f64 * 2f64.powi(k)) as usize
}

/// The `k` in −2..=1 whose `batch × 2^k` is inside the `bounds`.
fn batch_exponents(batch: usize, bounds: (usize, usize)) -> Vec<i32> {
    (-2..=1).filter(|&k| (bounds.0..=bounds.1).contains(&scaled_batch(batch, k))).collect()
}

#[allow(clippy::too_many_arguments)]
fn drive(
    config: &TuneConfig,
    data: Prepared,
    store: &mut SqliteStore,
    device: &Device,
    out: &Path,
    offset_s: f64,
    on_trial: &mut dyn FnMut(&TrialRecord),
    _lock: &StudyLock,
) -> Result<TuneSummary> {
    let clock = Clock { offset: offset_s, start: Instant::now() };
    let elapsed = || clock.elapsed();
    let events = out.join("events.jsonl");
    let rows = store.trials()?;
    let resumed_before = rows.iter().filter(|r| r.resumed).count() as u64;
    let policy: StudyPolicy = match store.policy()? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::Config { what: "study store", why: format!("policy state: {e}") })?,
        None => config.starting_policy(),
    };
    policy.validate().map_err(|why| Error::Config { what: "policy", why })?;
    let mut st = State {
        config,
        policy,
        best: None,
        records: BTreeMap::new(),
        next_id: rows.iter().map(|r| r.id + 1).max().unwrap_or(0),
        on_trial,
        budget_s: config.budget.as_secs_f64(),
        ended_after_best: 0,
        converged: None,
    };
    let mut unfinished = Vec::new();
    for row in rows {
        match row.status.as_str() {
            "running" | "paused" => unfinished.push(row),
            _ => {
                let record: TrialRecord = serde_json::from_str(&row.record).map_err(|e| Error::Config {
                    what: "study store",
                    why: format!("trial {}: record: {e}", row.id),
                })?;
                if !record.status.starts_with("failed") && st.beats_best(record.val_macro_f1) {
                    st.best = Some((record.val_macro_f1, record.id));
                }
                st.records.insert(record.id, record);
            }
        }
    }
    st.recount();
    st.check_converged();
    let env = EnvConfig { unit_batch: config.env.unit_batch.or(Some(config.batch_size)), ..config.env.clone() };
    let mut ctx = TrialContext {
        data: &data,
        source: &config.data,
        device,
        env: &env,
        events: &events,
        progress: config.progress,
        log_steps_every: config.log_steps_every,
        checkpoint_every: config.checkpoint_every,
        schedule: if config.cosine {
            ScheduleConfig::Cosine { total_steps: config.env.budget_steps, warmup_steps: 0, min_lr: 0.0 }
        } else {
            ScheduleConfig::Constant
        },
        val_fraction: config.val_fraction,
        store,
        elapsed: &elapsed,
    };
    match config.strategy {
        Strategy::Asha => asha(&mut ctx, &mut st, unfinished)?,
        Strategy::Pbt | Strategy::Pb2 => pbt(&mut ctx, &mut st, unfinished)?,
        _ => sequential(&mut ctx, &mut st, unfinished)?,
    }
    ctx.store.set_elapsed(elapsed())?;
    finalize(&mut ctx, &st, out, resumed_before, &elapsed)
}

/// fixed, random, rl, rl-no-width: one trial after another; `rl` and `rl-no-width` stop a
/// trial at a rung where it is not in the top third ([`rung_stops`]).
fn sequential(ctx: &mut TrialContext<'_>, st: &mut State<'_>, unfinished: Vec<TrialRow>) -> Result<()> {
    let mut pending: Vec<Trial> = Vec::new();
    for row in unfinished {
        pending.push(ctx.restore(&row, true)?);
    }
    loop {
        let mut trial = match pending.pop() {
            Some(t) => t,
            None if !st.records.is_empty() && st.over(ctx) || !st.may_start() => break,
            None => match st.start(ctx)? {
                Some(t) => t,
                None => continue,
            },
        };
        let trained = if st.config.strategy.stops_at_rungs() {
            st.train_with_rungs(ctx, &mut trial)?
        } else {
            st.train(ctx, &mut trial, None)?
        };
        if trained {
            st.end(ctx, &mut trial)?;
        }
        if st.over(ctx) && pending.is_empty() {
            break;
        }
    }
    Ok(())
}

/// ASHA's reduction factor: a third of a rung goes on (`asha`, its workers, `rl`'s rungs).
const ETA: usize = 3;

/// ASHA's rungs for a trial of `steps` steps: ⅑, ⅓ and all of them (η = 3).
fn rungs(steps: u64) -> [u64; 3] {
    [(steps / 9).max(1), (steps / 3).max(1), steps]
}

/// Trials that must have reached a rung before `rl` stops any trial there.
pub const RUNG_WARMUP: usize = 5;

/// `rl`'s rung stopping: whether a trial whose validation macro-F1 at a rung is `f1` stops
/// there, `earlier` being the F1 of every trial that reached that rung before it. It stops
/// when at least [`RUNG_WARMUP`] did and a third or more of them (η = 3, as `asha`) were
/// better. ASHA pauses such a trial and may promote it later; `rl` runs one trial at a time
/// and decides at once, like Optuna's pruners.
pub fn rung_stops(earlier: &[f64], f1: f64) -> bool {
    let better = earlier.iter().filter(|&&e| e > f1).count();
    earlier.len() >= RUNG_WARMUP && better * ETA >= earlier.len()
}

/// A paused trial ended as `stopped` (its final validation macro-F1 added to its reward), as
/// ASHA ends the trials still paused when its budget is spent: its record and its row.
fn stop_paused(row: TrialRow) -> Result<(TrialRecord, TrialRow)> {
    let mut record: TrialRecord = serde_json::from_str(&row.record)
        .map_err(|e| Error::Config { what: "study store", why: format!("trial {}: record: {e}", row.id) })?;
    record.status = "stopped".into();
    record.reward += record.val_macro_f1;
    let row = TrialRow {
        status: record.status.clone(),
        record: serde_json::to_string(&record).expect("record serialises"),
        reward: record.reward,
        updated_unix: unix_now(),
        ended_unix: Some(unix_now()),
        ..row
    };
    Ok((record, row))
}

/// Asynchronous successive halving, η = 3 (see the module docs).
fn asha(ctx: &mut TrialContext<'_>, st: &mut State<'_>, unfinished: Vec<TrialRow>) -> Result<()> {
    let targets = rungs(ctx.env.budget_steps);
    // Rung results of every trial (finished or paused), and which are paused.
    let mut reached: BTreeMap<u64, Vec<f64>> = st.records.iter().map(|(id, r)| (*id, r.rungs.clone())).collect();
    let mut paused: BTreeMap<u64, TrialRow> = BTreeMap::new();
    let mut running = None;
    for row in unfinished {
        let record: TrialRecord = serde_json::from_str(&row.record)
            .map_err(|e| Error::Config { what: "study store", why: format!("trial {}: record: {e}", row.id) })?;
        reached.insert(row.id, record.rungs);
        if row.status == "paused" {
            paused.insert(row.id, row);
        } else {
            running = Some(ctx.restore(&row, true)?);
        }
    }
    loop {
        let mut trial = match running.take() {
            Some(t) => t,
            None if st.over(ctx) && (!st.records.is_empty() || !paused.is_empty()) => break,
            None => {
                // Promote the best paused trial in the top 1/η of the highest rung that has one.
                let mut promote = None;
                for k in (0..targets.len() - 1).rev() {
                    let mut at: Vec<(u64, f64)> =
                        reached.iter().filter_map(|(id, r)| r.get(k).map(|f| (*id, *f))).collect();
                    at.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    let top = at.len() / ETA;
                    if let Some((id, _)) =
                        at[..top].iter().find(|(id, _)| paused.contains_key(id) && reached[id].len() == k + 1)
                    {
                        promote = Some(*id);
                        break;
                    }
                }
                match promote {
                    None if !st.may_start() => break,
                    Some(id) => {
                        let row = paused.remove(&id).expect("a paused trial");
                        match ctx.restore(&row, false) {
                            Ok(t) => t,
                            Err(e) if !e.ends_only_the_trial() => return Err(e),
                            Err(e) => {
                                tracing::warn!(trial = id, error = %e, "could not restore a paused trial");
                                reached.remove(&id);
                                continue;
                            }
                        }
                    }
                    None => match st.start(ctx)? {
                        Some(t) => t,
                        None => continue,
                    },
                }
            }
        };
        let rung = trial.tally.rungs.len().min(targets.len() - 1);
        if !st.train(ctx, &mut trial, Some(targets[rung]))? {
            reached.remove(&trial.id);
            continue;
        }
        if trial.env.steps() >= targets[rung] {
            trial.tally.rungs.push(trial.env.observe().val_f1);
            reached.insert(trial.id, trial.tally.rungs.clone());
        }
        if trial.env.done() || st.over(ctx) || st.ends_early(&trial) {
            st.end(ctx, &mut trial)?;
        } else {
            ctx.checkpoint(&mut trial, "paused")?;
            trial.env.run_mut().finish_monitor(tuneforge_monitor::Outcome::Stopped)?;
            paused.insert(trial.id, trial.row("paused"));
        }
    }
    // Trials still paused when the budget is spent end as stopped, from their rows.
    for (id, row) in paused {
        let (record, row) = stop_paused(row)?;
        if st.beats_best(record.val_macro_f1) {
            st.set_best(ctx, record.val_macro_f1, id)?;
        } else {
            ctx.store.delete_checkpoint(id)?;
        }
        ctx.store.finish_trial(&row, None, (ctx.elapsed)())?;
        st.push(record);
    }
    Ok(())
}

/// Population-based training: members per generation, decision intervals per round.
const PBT_POPULATION: usize = 4;
const PBT_READY: usize = 2;

/// The `pb2` search space: the random starts' learning rates and batch sizes
/// ([`StartSpace`]), each on a log scale mapped to `[0, 1]`.
struct Pb2Space {
    /// The study's learning rate.
    lr: f64,
    /// The learning rate's exponent range (log10 of its factor to `lr`).
    log_lr: (f64, f64),
    /// log2 of the smallest and largest batch size.
    log2_batch: (f64, f64),
    bounds: crate::env::Bounds,
}

impl Pb2Space {
    fn of(c: &TuneConfig) -> Pb2Space {
        let s = StartSpace::of(c);
        let (lo, hi) = s.batches.iter().fold((usize::MAX, 0), |(lo, hi), &b| (lo.min(b), hi.max(b)));
        Pb2Space {
            lr: c.lr,
            log_lr: s.log_lr,
            log2_batch: ((lo as f64).log2(), (hi as f64).log2()),
            bounds: c.env.bounds.clone(),
        }
    }

    /// A member's settings in `[0, 1]²` (0.5 along a dimension with one value).
    fn normalise(&self, lr: f64, batch: usize) -> [f64; 2] {
        let unit = |v: f64, (lo, hi): (f64, f64)| if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
        [unit((lr / self.lr).log10(), self.log_lr), unit((batch as f64).log2(), self.log2_batch)]
    }

    /// The learning rate and batch size at `x` (inside the bounds).
    fn settings(&self, x: [f64; 2]) -> (f64, usize) {
        let at = |u: f64, (lo, hi): (f64, f64)| lo + u.clamp(0.0, 1.0) * (hi - lo);
        let lr = (self.lr * 10f64.powf(at(x[0], self.log_lr))).clamp(self.bounds.lr.0, self.bounds.lr.1);
        let batch =
            (2f64.powf(at(x[1], self.log2_batch)).round() as usize).clamp(self.bounds.batch.0, self.bounds.batch.1);
        (lr, batch)
    }

    fn of_member(&self, m: &Trial) -> [f64; 2] {
        self.normalise(m.env.run().base_learning_rate(), m.env.run().batch_size())
    }
}

/// Population-based training, and bandits (`pb2`) (see the module docs).
fn pbt(ctx: &mut TrialContext<'_>, st: &mut State<'_>, unfinished: Vec<TrialRow>) -> Result<()> {
    let pb2 = (st.config.strategy == Strategy::Pb2).then(|| Pb2Space::of(st.config));
    let mut members = Vec::new();
    for row in unfinished {
        members.push(ctx.restore(&row, true)?);
    }
    loop {
        if members.is_empty() {
            if st.over(ctx) && !st.records.is_empty() || !st.may_start() {
                break;
            }
            for _ in 0..PBT_POPULATION {
                if !st.may_start() {
                    break;
                }
                if let Some(t) = st.start(ctx)? {
                    members.push(t);
                }
            }
            if members.is_empty() {
                continue;
            }
        }
        // pb2: a round begins for each member still training (an exploited member's began
        // when it took the best's state).
        if let Some(space) = &pb2 {
            for m in &mut members {
                if m.tally.pb2.open.is_none() && !m.env.done() && !st.ends_early(m) {
                    let o = m.env.observe();
                    m.tally.pb2.open =
                        Some(crate::pb2::Round { t: o.budget_used, x: space.of_member(m), gain: o.val_f1 });
                }
            }
        }
        // One round: each member trains PBT_READY intervals.
        let mut i = 0;
        while i < members.len() {
            let until = members[i].env.steps() + (PBT_READY * ctx.env.decision_steps) as u64;
            if st.train(ctx, &mut members[i], Some(until))? {
                i += 1;
            } else {
                members.remove(i);
            }
        }
        if pb2.is_some() {
            for m in &mut members {
                if let Some(open) = m.tally.pb2.open.take() {
                    let gain = m.env.observe().val_f1 - open.gain;
                    m.tally.pb2.done.push(crate::pb2::Round { gain, ..open });
                }
            }
        }
        // A member at the F1 to stop at ends the study: the generation ends with it.
        if st.over(ctx)
            || members.iter().any(|m| st.reached_target(m))
            || members.iter().all(|m| m.env.done() || st.timed_out(m))
        {
            for mut m in members.drain(..) {
                st.end(ctx, &mut m)?;
            }
            continue;
        }
        // Exploit and explore: the worst member takes the best's state, then perturbs it.
        let order: Vec<usize> = {
            let mut o: Vec<usize> = (0..members.len()).collect();
            o.sort_by(|&a, &b| members[b].env.observe().val_f1.total_cmp(&members[a].env.observe().val_f1));
            o
        };
        if let (Some(&best), Some(&worst)) = (order.first(), order.last())
            && best != worst
            && members[worst].env.observe().val_f1 < members[best].env.observe().val_f1
        {
            let t = Instant::now();
            // pb2 learns from every round: the members' and the earlier generations'.
            let pb2_inputs = pb2.as_ref().map(|space| {
                let rounds: Vec<crate::pb2::Round> = st
                    .records
                    .values()
                    .flat_map(|r| r.pb2_rounds.iter().copied())
                    .chain(members.iter().flat_map(|m| m.tally.pb2.done.iter().copied()))
                    .collect();
                let pending: Vec<[f64; 2]> =
                    (0..members.len()).filter(|&i| i != worst).map(|i| space.of_member(&members[i])).collect();
                (space, rounds, pending)
            });
            let (b, w) = if best < worst {
                let (lo, hi) = members.split_at_mut(worst);
                (&lo[best], &mut hi[0])
            } else {
                let (lo, hi) = members.split_at_mut(best);
                (&hi[0], &mut lo[worst])
            };
            w.env.run_mut().copy_from(b.env.run())?;
            let mut rng = rng_for(st.config.seed, w.id, w.tally.rows, 3);
            let lr = w.env.run().base_learning_rate();
            if let Some((space, rounds, pending)) = pb2_inputs {
                // pb2: where the process of the rounds so far says a round from the best's
                // state and time gains most; that round begins now.
                let from = b.env.observe();
                let x = crate::pb2::suggest(&rounds, &pending, from.budget_used, &mut rng);
                let (new_lr, batch) = space.settings(x);
                w.env.run_mut().scale_learning_rate(new_lr / lr.max(1e-30))?;
                w.env.run_mut().set_batch_size(batch)?;
                w.tally.pb2.open =
                    Some(crate::pb2::Round { t: from.budget_used, x: space.of_member(w), gain: from.val_f1 });
                tracing::debug!(from = b.id, to = w.id, lr = new_lr, batch, rounds = rounds.len(), "pb2 exploit");
            } else {
                let f_lr = if rng.random_bool(0.5) { 0.8 } else { 1.2 };
                let f_batch = if rng.random_bool(0.5) { 0.8 } else { 1.2 };
                let bounds = &ctx.env.bounds;
                w.env.run_mut().scale_learning_rate((lr * f_lr).clamp(bounds.lr.0, bounds.lr.1) / lr.max(1e-30))?;
                let batch = ((w.env.run().batch_size() as f64 * f_batch).round() as usize)
                    .clamp(bounds.batch.0, bounds.batch.1);
                w.env.run_mut().set_batch_size(batch)?;
                tracing::debug!(from = b.id, to = w.id, f_lr, f_batch, "pbt exploit");
            }
            w.tally.exploits += 1;
            w.tally.agent_seconds += t.elapsed().as_secs_f64();
        }
        for m in &mut members {
            ctx.checkpoint(m, "running")?;
        }
    }
    Ok(())
}

/// Tests the best trial once and writes the outputs.
fn finalize(
    ctx: &mut TrialContext<'_>,
    st: &State<'_>,
    out: &Path,
    resumed_before: u64,
    elapsed: &dyn Fn() -> f64,
) -> Result<TuneSummary> {
    let (val_f1, best_id) = st.best.ok_or_else(|| Error::Config { what: "study", why: "every trial failed".into() })?;
    let record = st.records.get(&best_id).ok_or_else(|| Error::Config {
        what: "study store",
        why: format!("the best trial ({best_id}) has no finished record"),
    })?;
    let ck = ctx.store.checkpoint(best_id)?.ok_or_else(|| Error::Config {
        what: "study store",
        why: format!("the best trial ({best_id}) has no checkpoint"),
    })?;
    let origin = format!("study.sqlite, checkpoint of trial {best_id}");
    let state: serde_json::Value = serde_json::from_str(&ck.state)
        .map_err(|e| Error::Config { what: "study store", why: format!("{origin}: {e}") })?;
    let cursor = serde_json::from_value(state["cursor"].clone())
        .map_err(|e| Error::Config { what: "study store", why: format!("{origin}: {e}") })?;
    let run =
        best_run(ctx, &record.start, &RunCheckpoint { cursor, model: ck.model, optimizer: ck.optimizer }, &origin)?;
    let test = run.evaluate(&*run.data().test)?;
    ctx.store.add_evaluation(&EvaluationRow {
        trial: best_id,
        idx: ck.decisions,
        step: ck.step,
        split: "test".into(),
        macro_f1: test.report.macro_avg.f1,
        accuracy: test.report.accuracy,
        loss: test.loss,
        at_unix: unix_now(),
    })?;
    let model_path = out.join("model.safetensors");
    run.model().save(&model_path)?;
    run.write_predictor(out)?;
    let predictions_path = out.join("predictions.csv");
    write_predictions(&predictions_path, &test)?;
    if st.config.strategy.learns() {
        let json = serde_json::to_string_pretty(&st.policy).expect("policy serialises");
        write_atomic(&out.join("policy.json"), json.as_bytes())?;
    }
    let ended = st.ended();
    let trials: Vec<TrialRecord> = st.records.values().cloned().collect();
    let wall_s = elapsed();
    // The time of this test and these writes is used too: stored, so that a resume (whose
    // clock starts from the stored time) never reports less wall time than this summary.
    ctx.store.set_elapsed(wall_s)?;
    let agent_seconds: f64 = trials.iter().map(|t| t.agent_seconds).sum();
    let resumes = trials.iter().filter(|t| t.resumed).count() as u64;
    let summary = TuneSummary {
        dataset: st.config.data.to_string(),
        strategy: st.config.strategy,
        budget_s: st.config.budget.as_secs_f64(),
        seed: st.config.seed,
        wall_s,
        mean_reward: trials.iter().map(|t| t.reward).sum::<f64>() / trials.len().max(1) as f64,
        agent_seconds,
        agent_overhead: agent_seconds / wall_s.max(1e-9),
        store_seconds: trials.iter().map(|t| t.store_seconds).sum(),
        worker_store_seconds: None,
        resumes: resumes.max(resumed_before),
        ended: Some(ended),
        study_path: study_path(out),
        trials,
        best: Best {
            trial: best_id,
            val_macro_f1: val_f1,
            test_macro_f1: test.report.macro_avg.f1,
            test_accuracy: test.report.accuracy,
            model_path,
            predictions_path,
        },
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

fn best_run(ctx: &TrialContext<'_>, start: &TrialStart, ck: &RunCheckpoint, origin: &str) -> Result<Run> {
    let mut run = Run::with_data(ctx.run_config(start), ctx.data.clone(), ctx.device)?;
    run.restore(ck, Path::new(origin))?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_rates_spread_over_the_bounds_and_keep_the_old_draws_inside_them() {
        let draws = |lr: f64, bounds: (f64, f64)| -> Vec<f64> {
            (0..2000).map(|id| sample_lr(lr, bounds, &mut rng_for(7, id, 0, 2))).collect()
        };
        // Bounds wider than a decade either side: the draws of the formula used before
        // bounds could be set, bit for bit.
        let old: Vec<f64> = (0..2000)
            .map(|id| (1e-3 * 10f64.powf(rng_for(7, id, 0, 2).random_range(-1.0..1.0))).clamp(1e-5, 1.0))
            .collect();
        assert_eq!(draws(1e-3, (1e-5, 1.0)), old);
        // Bounds that cut the decade: every draw inside, none piled up on a bound, both ends
        // of what is left reached, and log-uniform (about half below the geometric middle).
        let cut = draws(3e-3, (1e-3, 1e-2));
        assert!(cut.iter().all(|&r| (1e-3..=1e-2).contains(&r)));
        assert!(cut.iter().all(|&r| r != 1e-3 && r != 1e-2));
        let (min, max) = cut.iter().fold((1.0f64, 0.0f64), |(a, b), &r| (a.min(r), b.max(r)));
        assert!(min < 1.1e-3 && max > 0.9e-2, "{min} {max}");
        let below = cut.iter().filter(|&&r| r < (1e-3f64 * 1e-2).sqrt()).count();
        assert!((900..1100).contains(&below), "{below} of 2000 below the middle");
        // One rate allowed: that rate; outside the bounds: the nearest bound.
        assert!(draws(1e-3, (1e-3, 1e-3)).iter().all(|&r| r == 1e-3));
        assert!(draws(10.0, (1e-5, 1.0)).iter().all(|&r| r == 1.0));
        assert!(draws(1e-7, (1e-5, 1.0)).iter().all(|&r| r == 1e-5));
    }

    #[test]
    fn sampled_batch_sizes_are_those_inside_the_bounds() {
        let count = |batch: usize, bounds: (usize, usize)| -> BTreeMap<usize, usize> {
            let mut seen = BTreeMap::new();
            for id in 0..4000 {
                *seen.entry(sample_batch(batch, bounds, &mut rng_for(7, id, 0, 2))).or_insert(0) += 1;
            }
            seen
        };
        // All four inside: the old draw, bit for bit.
        for id in 0..500 {
            let old = ((128.0 * 2f64.powi(rng_for(7, id, 0, 2).random_range(-2i32..=1))) as usize).clamp(16, 1024);
            assert_eq!(sample_batch(128, (16, 1024), &mut rng_for(7, id, 0, 2)), old);
        }
        let all = count(128, (16, 1024));
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), [32, 64, 128, 256]);
        // Two inside: those two, about half each (not 3 in 4 on the bound).
        let two = count(32, (32, 64));
        assert_eq!(two.keys().copied().collect::<Vec<_>>(), [32, 64]);
        assert!((1800..2200).contains(&two[&64]), "{two:?}");
        // None inside (the study's batch far from the bounds): the nearest bound.
        assert_eq!(count(1024, (16, 64)).keys().copied().collect::<Vec<_>>(), [64]);
    }

    /// The preset a best trial is enqueued with builds, through the model crate's own
    /// parsers, a model with the widths the trial ended with.
    #[test]
    fn an_ended_model_has_the_widths_the_trial_ended_with() {
        use tuneforge_model::ModelSpec;
        let text = |name: &str| ModelSpec::text_preset(name, 40, 1000, 2).unwrap();
        for (start, ended) in [
            ("mlp:64", vec![96]),
            ("mlp:64,32", vec![48, 8]),
            ("text-bag:64,64", vec![64, 96]),
            ("text-bag", vec![64, 32]),
            ("text-bag-max:32,16,16", vec![32, 24, 8]),
            ("text-cnn", vec![64, 192]),
            ("text-cnn:64,128,32", vec![64, 96, 48]),
        ] {
            // (The widths the started model has: what the trial's widths replace.)
            let spec =
                if start.starts_with("mlp") { ModelSpec::preset(start, &[64], 10).unwrap() } else { text(start) };
            assert_eq!(spec.hidden_widths().len(), ended.len(), "{start}");
            let name = ended_model(start, &ended);
            let spec =
                if start.starts_with("mlp") { ModelSpec::preset(&name, &[64], 10).unwrap() } else { text(&name) };
            assert_eq!(spec.hidden_widths(), ended, "{start} -> {name}");
        }
        // No widths in its name: as it started.
        assert_eq!(ended_model("seed-cnn", &[32, 64, 128]), "seed-cnn");
    }

    #[test]
    fn a_lock_is_held_when_the_table_lists_a_flock_on_its_inode() {
        // As Linux 6.x prints it; the second flock waits (`->`) and holds nothing.
        let table = "1: POSIX  ADVISORY  WRITE 77 fe:00:500 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fe:00:10011578 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 99 fe:00:600 0 EOF\n";
        assert!(locks_list(table, "fe:00", 10011578, 4242));
        // The device differs (an overlay) but the holder is the pid in the file.
        assert!(locks_list(table, "00:2f", 10011578, 4242));
        assert!(!locks_list(table, "00:2f", 10011578, 4243));
        // Another inode, a POSIX lock, a waiter: not held.
        assert!(!locks_list(table, "fe:00", 10011579, 4242));
        assert!(!locks_list(table, "fe:00", 500, 77));
        assert!(!locks_list(table, "fe:00", 600, 99));
        assert!(!locks_list("", "fe:00", 10011578, 4242));
        assert!(!locks_list("garbage\n1:\n", "fe:00", 10011578, 4242));
    }

    #[test]
    fn an_fdinfo_text_lists_a_flock_held_through_it() {
        let info = "pos:\t0\nflags:\t0100002\nmnt_id:\t31\nino:\t10011578\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 4242 fe:00:10011578 0 EOF\n";
        assert!(fdinfo_lists_flock(info));
        assert!(!fdinfo_lists_flock("pos:\t0\nflags:\t0100002\n"));
        assert!(!fdinfo_lists_flock("lock:\t1: POSIX  ADVISORY  WRITE 4242 fe:00:10011578 0 EOF\n"));
        assert!(!fdinfo_lists_flock("lock:\n"));
    }

    /// This process's own lock, through its open files: held while locked, not after, and
    /// a process that is gone holds nothing.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_lock_this_process_holds_is_found_through_its_open_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("study.lock");
        let file = std::fs::File::create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let me = std::process::id();
        assert_eq!(flock_held_through_fds(&meta, me), Some(false));
        file.lock().unwrap();
        assert_eq!(flock_held_through_fds(&meta, me), Some(true));
        assert_eq!(flock_held(&path, me), Some(true));
        file.unlock().unwrap();
        assert_eq!(flock_held_through_fds(&meta, me), Some(false));
        // A child that has exited and been waited for: its pid is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(flock_held_through_fds(&meta, pid), Some(false));
    }
}
