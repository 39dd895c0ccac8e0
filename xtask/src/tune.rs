//! `cargo xtask tune`: a tuning study — trials of one training run under a strategy and a
//! wall-clock budget, the best model tested once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tuneforge_agent::data::DataSource;
use tuneforge_agent::env::{Bounds, EnvConfig};
use tuneforge_agent::policy::StudyPolicy;
use tuneforge_agent::store::PostgresStore;
use tuneforge_agent::store::postgres::PgOptions;
use tuneforge_agent::tune::{
    Ended, Enqueued, Extension, Output, StopWhen, Strategy, TrialRecord, TuneConfig, TuneSummary, WorkerOptions,
    resume, study_path, tune, work,
};
use tuneforge_monitor::ProgressMode;

use crate::{DataArgs, TextArgs};

/// Tune a network while it trains and report the best model's test metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// digits, fashion-mnist, biopsy, csv:PATH (with --label), or a text dataset:
    /// jsonl:PATH, csv:PATH --text COLUMN.
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Label column of a csv: dataset (jsonl: the label field, default "label").
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
    /// Starting architecture: mlp:W1,W2,..., seed-cnn, text-bag:D,H... or text-cnn:D,C,H...
    /// (default: seed-cnn for fashion-mnist, text-bag for text, mlp:64 for tables).
    #[arg(long)]
    pub model: Option<String>,
    /// fixed (defaults, no actions), random (random starts, no actions), asha (successive
    /// halving over random starts, η = 3), pbt (population of 4, exploit/explore every 2
    /// decision intervals), pb2 (pbt whose explore step chooses the learning rate and batch
    /// size with a Gaussian process of every round's F1 gain, as Ray Tune's PB2), rl (an
    /// actor–critic acting mid-run, learning after every decision), rl-no-width (rl without
    /// the width action) or tpe (Optuna's default sampler, a tree-structured Parzen
    /// estimator, choosing each start from the trials before it after 10 random ones; no
    /// actions; rl's rung stopping; each setting modelled on its own, as Optuna's default) or
    /// tpe-multivariate (tpe with one joint density over all settings, Optuna's
    /// multivariate=True). With PostgreSQL storage every strategy but pbt and pb2.
    #[arg(long, default_value = "rl")]
    pub strategy: String,
    /// Wall-clock budget, e.g. 90s or 10m: no trial starts after it and running trials stop
    /// at their next decision point (default 60s). With --resume: the study's new budget, a
    /// total (the time already used counts against it), e.g. a finished 60-s study resumed
    /// with --budget 5m runs about 4 minutes more.
    #[arg(long)]
    pub budget: Option<String>,
    /// Weight of the throughput term of each decision's reward: Δ val macro-F1 +
    /// λ·ln(samples/s ÷ ref). Default: 0.01 ÷ decisions per trial (0.0014 for 800-step trials
    /// deciding every 100 steps), so a trial's speed counts the same whatever its length, a
    /// doubling worth ≈ 0.35 points of its final F1 (about what the extra trials are worth).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Optimiser steps between decisions, at the default batch size like `--trial-steps`
    /// (default: 30 for tables, 50 for text, 200 for images: about ½ epoch of
    /// Fashion-MNIST).
    #[arg(long)]
    pub decision_steps: Option<usize>,
    /// A trial's budget, in optimiser steps at the default batch size (32 for tables and
    /// text, 128 for images): `trial steps × that batch` training rows, whatever batch size
    /// the trial uses (default: 300 for tables, 600 for text, 5000 for images: about 12
    /// epochs of Fashion-MNIST's 54,000 training rows). `--decision-steps` is counted the same way.
    #[arg(long)]
    pub trial_steps: Option<u64>,
    /// A time limit of each trial, e.g. 30s or 2m: a trial that has run this long (its own
    /// wall-clock time, across pauses and resumes) stops at its next decision point, as
    /// `stopped`, its validation macro-F1 counted — so that a slow configuration (a tiny
    /// batch, very wide layers) costs at most this much. Default: none, a trial runs its rows.
    /// With --resume: a new limit, or `off` to remove it (for the trials run from then on).
    #[arg(long, value_name = "DURATION|off")]
    pub trial_timeout: Option<String>,
    /// The study's learning rate: the first trial's for rl and rl-no-width, every trial's
    /// for fixed, and the middle of the sampled starts (log-uniform over a decade either
    /// side, within --lr-range) for random, asha, pbt and rl's later trials (default: 1e-3
    /// for images, 3e-3 for tables and text; with --lr-range alone, its geometric middle
    /// when the default is outside it).
    #[arg(long, value_name = "RATE")]
    pub lr: Option<f64>,
    /// The study's batch size, as --lr: sampled starts take it ×¼, ×½, ×1 or ×2, within
    /// --batch-range (default: 128 for images, 32 for tables and text). It does not change a
    /// trial's budget in rows (see --trial-steps).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// The learning rates a trial may start at or be moved to by rl, pbt or a sampled start,
    /// LO:HI (default 1e-5:1; LO = HI fixes the rate).
    #[arg(long, value_name = "LO:HI")]
    pub lr_range: Option<String>,
    /// The batch sizes a trial may start at or be moved to, LO:HI (default 16:1024).
    #[arg(long, value_name = "LO:HI")]
    pub batch_range: Option<String>,
    /// The widths (units, channels, hidden sizes) a trial's hidden layers may start at or
    /// be moved to, LO:HI (default 8:2048); the starting --model's widths must be inside
    /// (those in its name, mlp:W,..., text-bag:D,H,..., text-cnn:D,C,...; seed-cnn's 32
    /// channels and 64 dense units).
    #[arg(long, value_name = "LO:HI")]
    pub width_range: Option<String>,
    /// A trial start to run before the strategy's own, as Optuna's enqueue_trial: any of
    /// lr=RATE, batch=N, model=PRESET, e.g. --enqueue lr=3e-3,batch=64,model=mlp:128,64
    /// (what is left out is the study's --lr, --batch-size or --model), or best:DIR, where
    /// the best trial of the finished study in DIR ended. Repeat it for several: trial 0
    /// takes the first. Each must be inside the ranges; they count against --max-trials.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub enqueue: Vec<String>,
    /// Check the study's settings against its data as a run would (the data read, the
    /// model built, the ranges and enqueued starts checked) and print what it would train
    /// on; nothing is created.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
    /// Learning-rate schedule of each trial: cosine (annealed to 0 over the trial's steps;
    /// actions scale its base rate) or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Fraction of the training rows held out for validation (default: 0.1 for images,
    /// 0.2 for tables and text).
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory: study.sqlite, events.jsonl, summary.json, model.safetensors,
    /// predictions.csv. If the default holds a study already, runs/tune-2, -3, ... is used.
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// Continue the study in DIR (killed or finished) with its own settings; the other
    /// study flags are then not allowed, but --budget and --max-trials (new totals: a
    /// finished study given more runs on), --stop-at, --patience and --trial-timeout.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dataset", "label", "text_field", "keep_headers", "model", "strategy", "lambda", "decision_steps", "trial_steps", "seed", "policy", "checkpoint_every", "schedule", "val_fraction", "lr", "batch_size", "lr_range", "batch_range", "width_range", "enqueue"])]
    pub resume: Option<PathBuf>,
    /// For rl and rl-no-width: start from this saved policy (the policy.json of an earlier
    /// study), or `digits` for the prior shipped with tuneforge (what a digits study learnt;
    /// see crates/agent/policies/README.md) [default: untrained, a policy that has learnt
    /// nothing and keeps each setting with p ≈ 0.87]
    #[arg(long, value_name = "FILE|digits|untrained")]
    pub policy: Option<PathBuf>,
    /// Seconds between checkpoints of a running trial into study.sqlite (0: every decision).
    #[arg(long, default_value_t = 10.0)]
    pub checkpoint_every: f64,
    /// Progress of each trial: auto (a bar on a terminal, plain lines under CI), bar, plain
    /// or off (default: auto for images and text, off for tables, whose trials last a
    /// second).
    #[arg(long)]
    pub progress: Option<String>,
    /// What is printed as trials end: all (a line per trial), best (a line for each trial
    /// that beats the best so far and each failed one, and every 10 s how many ended) or none
    /// (default: all for images and text, best for tables, whose trials end ~100 a second).
    #[arg(long, value_name = "auto|all|best|none")]
    pub trial_lines: Option<String>,
    /// Optimiser steps between two step events in events.jsonl (1: every step, as `train`
    /// logs; a step another event follows or an anomaly fired on is always logged). The
    /// default keeps a 60-s digits study's log near 20 MB instead of ~150 MB.
    #[arg(long, default_value_t = tuneforge_agent::trial::LOG_STEPS_EVERY, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub log_steps_every: u64,
    /// Where the study is kept: sqlite://DIR/study.sqlite (the default, DIR being --out: one
    /// process per study) or postgres://USER[:PASSWORD]@HOST:PORT/DB (many workers, on many
    /// machines, sharing the study named by --study; see docs/scaling-out.md).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// The study's name in a PostgreSQL database: the first worker creates it with the other
    /// flags, later ones join it (its stored settings win).
    #[arg(long, value_name = "NAME")]
    pub study: Option<String>,
    /// With PostgreSQL storage: this worker's name, unique among the study's live workers
    /// (default: HOST:PID:XXXX, XXXX random). A worker restarted under the same name takes its
    /// unfinished trial over at once.
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// A trial budget besides the wall clock: no trial starts once N have (failed ones
    /// included); the study ends at whichever of --budget and --max-trials is spent first
    /// (give a long --budget, e.g. 24h, for the trial count alone). With --resume: the
    /// study's new trial budget, a total as --budget. With PostgreSQL storage, set by the
    /// worker that creates the study.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_trials: Option<u64>,
    /// Early stopping: the study ends once a trial reaches a validation macro-F1 of at least
    /// F1 (above 0, at most 1), as a spent budget ends it (Ray Tune's `stop`, Optuna's
    /// `study.stop()` from a callback); that trial stops at the decision point where it
    /// reached it. With --resume: a new value, or `off` to remove it.
    /// With PostgreSQL storage, set by the worker that creates the study.
    #[arg(long, value_name = "F1|off")]
    pub stop_at: Option<String>,
    /// Early stopping: the study ends once N trials started after the best one have ended
    /// without beating it — for fixed, random, rl and rl-no-width, which run one trial at a
    /// time, N trials in a row without a new best
    /// (Ray Tune's ExperimentPlateauStopper). With --resume: a new value, or `off`.
    /// With PostgreSQL storage, set by the worker that creates the study.
    #[arg(long, value_name = "N|off")]
    pub patience: Option<String>,
    /// With PostgreSQL storage: seconds without a write from a trial's worker after which
    /// another worker takes the trial over from its last checkpoint.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub heartbeat_timeout: f64,
    /// With PostgreSQL storage: seconds a store operation is retried (with backoff) while the
    /// server cannot be reached, before the worker gives up.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub retry_for: f64,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Where a study is kept (`--storage`).
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// `sqlite://DIR/study.sqlite`: the study folder DIR.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`: the URL as given.
    Postgres(String),
}

/// Parses `--storage` (see [`TuneArgs::storage`]).
pub fn parse_storage(url: &str) -> anyhow::Result<Storage> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = Path::new(path);
        if path.file_name().is_none_or(|n| n != "study.sqlite") {
            bail!(
                "--storage {url}: a SQLite study store is DIR/study.sqlite (the study folder's), e.g. sqlite://runs/tune/study.sqlite"
            );
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        return Ok(Storage::Sqlite(dir.to_path_buf()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Storage::Postgres(url.to_string()));
    }
    bail!(
        "--storage {}: expected sqlite://DIR/study.sqlite or postgres://USER@HOST:PORT/DB",
        tuneforge_agent::store::postgres::redact_url(url)
    )
}

/// Seconds from a flag, as a `Duration`.
pub fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(s) {
        Ok(d) if s > 0.0 => Ok(d),
        _ => bail!("{flag} {s}: must be a positive number of seconds"),
    }
}

/// Parses `90s`, `10m`, `1h` or a plain number of seconds
/// ([`tuneforge_agent::tune::parse_budget`], with the flag named in the message).
pub fn parse_budget(text: &str) -> anyhow::Result<Duration> {
    parse_duration("--budget", text)
}

/// A duration flag's value (`--budget`, `--trial-timeout`), as [`parse_budget`].
fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    tuneforge_agent::tune::parse_budget(text).map_err(|e| match e {
        tuneforge_agent::Error::Config { why, .. } => anyhow::anyhow!("{flag} {text}: {why}"),
        other => anyhow::Error::new(other).context(format!("{flag} {text}")),
    })
}

const DEFAULT_OUT: &str = "runs/tune";
/// `--budget` of a new study when none is given.
const DEFAULT_BUDGET: &str = "60s";

/// The study settings that depend on the kind of data (see the flags' docs).
struct Defaults {
    model: &'static str,
    batch_size: usize,
    lr: f64,
    decision_steps: usize,
    trial_steps: u64,
    val_fraction: f64,
    /// Trials long enough for a progress bar.
    slow: bool,
}

fn defaults(data: &DataSource) -> Defaults {
    match data {
        DataSource::Known(n) if n.starts_with("fashion-mnist") => Defaults {
            model: "seed-cnn",
            batch_size: 128,
            lr: 1e-3,
            decision_steps: 200,
            trial_steps: 5000,
            val_fraction: 0.1,
            slow: true,
        },
        DataSource::Text { .. } => Defaults {
            model: "text-bag:64,64",
            batch_size: 32,
            lr: 3e-3,
            decision_steps: 50,
            trial_steps: 600,
            val_fraction: 0.2,
            slow: true,
        },
        _ => Defaults {
            model: "mlp:64",
            batch_size: 32,
            lr: 3e-3,
            decision_steps: 30,
            trial_steps: 300,
            val_fraction: 0.2,
            slow: false,
        },
    }
}

fn progress(args: &TuneArgs, slow: bool) -> anyhow::Result<ProgressMode> {
    Ok(match args.progress.as_deref() {
        None if slow => ProgressMode::Auto,
        None => ProgressMode::Off,
        Some("auto") => ProgressMode::Auto,
        Some("bar") => ProgressMode::Bar,
        Some("plain") => ProgressMode::Plain,
        Some("off") => ProgressMode::Off,
        Some(other) => bail!("--progress {other}: expected auto, bar, plain or off"),
    })
}

/// The study `args` describe, with the per-dataset defaults filled in.
pub fn config(args: &TuneArgs) -> anyhow::Result<TuneConfig> {
    let data = args.text.apply(DataSource::parse(&args.dataset, args.label.as_deref())?)?;
    let d = defaults(&data);
    let strategy: Strategy = args.strategy.parse()?;
    let policy = match &args.policy {
        Some(path) if path.as_os_str() == "untrained" => Some(StudyPolicy::untrained()),
        Some(path) if path.as_os_str() == "digits" => Some(StudyPolicy::pretrained()),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--policy {}", path.display()))?;
            let p: StudyPolicy = serde_json::from_str(&text)
                .with_context(|| format!("--policy {}: not a policy.json written by tune", path.display()))?;
            if let Err(why) = p.validate() {
                bail!("--policy {}: {why}", path.display());
            }
            Some(p.for_new_study())
        }
        None => None,
    };
    // try_: `Duration::from_secs_f64` panics beyond u64::MAX seconds (e.g. 1e20).
    let Ok(checkpoint_every) = Duration::try_from_secs_f64(args.checkpoint_every) else {
        bail!("--checkpoint-every {}: must be a number of seconds >= 0", args.checkpoint_every);
    };
    let decision_steps = args.decision_steps.unwrap_or(d.decision_steps);
    let budget_steps = args.trial_steps.unwrap_or(d.trial_steps);
    let model = args.model.clone().unwrap_or_else(|| d.model.into());
    let space = search_space(args, &d, &model)?;
    let config = TuneConfig {
        data,
        model,
        strategy,
        budget: parse_budget(args.budget.as_deref().unwrap_or(DEFAULT_BUDGET))?,
        max_trials: args.max_trials,
        trial_timeout: args.trial_timeout.as_deref().map(parse_trial_timeout).transpose()?.flatten(),
        stop_when: StopWhen {
            f1: args.stop_at.as_deref().map(parse_stop_at).transpose()?.flatten(),
            patience: args.patience.as_deref().map(parse_patience).transpose()?.flatten(),
        },
        enqueued: args
            .enqueue
            .iter()
            .map(|e| match e.strip_prefix("best:") {
                Some(dir) => Enqueued::best_of(Path::new(dir)).with_context(|| format!("--enqueue {e}")),
                None => e.parse().with_context(|| format!("--enqueue {e}")),
            })
            .collect::<anyhow::Result<_>>()?,
        seed: args.seed,
        batch_size: space.batch_size,
        lr: space.lr,
        env: EnvConfig {
            decision_steps,
            lambda: args.lambda.unwrap_or_else(|| EnvConfig::default_lambda(decision_steps, budget_steps)),
            bounds: space.bounds,
            budget_steps,
            unit_batch: Some(d.batch_size),
        },
        checkpoint_every,
        policy,
        progress: progress(args, d.slow)?,
        log_steps_every: args.log_steps_every,
        stop: Default::default(),
        cosine: match args.schedule.as_str() {
            "cosine" => true,
            "constant" => false,
            other => bail!("--schedule {other}: expected cosine or constant"),
        },
        val_fraction: match args.val_fraction {
            None => d.val_fraction,
            Some(f) if (0.01..0.9).contains(&f) => f,
            Some(f) => bail!("--val-fraction {f}: must be in [0.01, 0.9)"),
        },
    };
    Ok(config)
}

/// Where a study searches: its learning rate and batch size and the action bounds.
#[derive(Debug, PartialEq)]
struct SearchSpace {
    lr: f64,
    batch_size: usize,
    bounds: Bounds,
}

/// `LO:HI` of `--{flag}`, both parsed by `parse` and checked by `ok` (what it says on
/// failure: `must`), LO ≤ HI.
fn range<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    text: &str,
    ok: impl Fn(T) -> bool,
    must: &str,
) -> anyhow::Result<(T, T)> {
    let Some((lo, hi)) = text.split_once(':') else {
        bail!(
            "--{flag} {text}: expected LO:HI, e.g. --{flag} {}",
            if flag == "lr-range" { "1e-4:1e-2" } else { "32:256" }
        );
    };
    let parse = |s: &str| -> anyhow::Result<T> {
        match s.trim().parse::<T>() {
            Ok(v) if ok(v) => Ok(v),
            _ => bail!("--{flag} {text}: {s:?} {must}"),
        }
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        bail!("--{flag} {text}: LO ({lo}) is above HI ({hi})");
    }
    Ok((lo, hi))
}

fn search_space(args: &TuneArgs, d: &Defaults, model: &str) -> anyhow::Result<SearchSpace> {
    let mut bounds = Bounds::default();
    if let Some(text) = &args.lr_range {
        bounds.lr = range("lr-range", text, |r: f64| r.is_finite() && r > 0.0, "must be a rate > 0")?;
    }
    if let Some(text) = &args.batch_range {
        bounds.batch = range("batch-range", text, |b: usize| b >= 1, "must be a batch size >= 1")?;
    }
    if let Some(text) = &args.width_range {
        bounds.width = range("width-range", text, |w: usize| w >= 1, "must be a width >= 1")?;
    }
    let inside = |v: f64, (lo, hi): (f64, f64)| lo <= v && v <= hi;
    let lr = match args.lr {
        Some(r) if !(r.is_finite() && r > 0.0) => bail!("--lr {r}: must be a rate > 0"),
        Some(r) if !inside(r, bounds.lr) => {
            bail!("--lr {r} is outside --lr-range {}:{}", bounds.lr.0, bounds.lr.1)
        }
        Some(r) => r,
        None if inside(d.lr, bounds.lr) => d.lr,
        None => (bounds.lr.0 * bounds.lr.1).sqrt().clamp(bounds.lr.0, bounds.lr.1),
    };
    let (lo, hi) = bounds.batch;
    let batch_size = match args.batch_size.map(|b| usize::try_from(b).unwrap_or(usize::MAX)) {
        Some(b) if !(lo..=hi).contains(&b) => bail!("--batch-size {b} is outside --batch-range {lo}:{hi}"),
        Some(b) => b,
        None => d.batch_size.clamp(lo, hi),
    };
    // The starting architecture's own widths (seed-cnn's channels and units included).
    let (lo, hi) = bounds.width;
    if let Some(w) = tuneforge_agent::tune::model_widths(model).into_iter().find(|w| !(lo..=hi).contains(w)) {
        bail!(
            "the starting model {model} has a width of {w}, outside --width-range {lo}:{hi}: give a --model whose \
             widths are inside it"
        );
    }
    Ok(SearchSpace { lr, batch_size, bounds })
}

/// `--out`, or the first of runs/tune, runs/tune-2, ... without a study when it is the default.
fn out_dir(args: &TuneArgs) -> PathBuf {
    if args.out != Path::new(DEFAULT_OUT) {
        return args.out.clone();
    }
    (1..)
        .map(|i| if i == 1 { args.out.clone() } else { PathBuf::from(format!("{DEFAULT_OUT}-{i}")) })
        .find(|d| !study_path(d).exists())
        .expect("some directory is free")
}

/// What `tune` prints as trials end (`--trial-lines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialLines {
    /// A line per trial.
    All,
    /// A line per new best or failed trial, and a count every [`TrialPrinter::STATUS_EVERY`].
    Best,
    /// Nothing.
    None,
}

impl TrialLines {
    /// `--trial-lines`; `slow` says whether the dataset's trials are long (images, text).
    pub fn parse(flag: Option<&str>, slow: bool) -> anyhow::Result<TrialLines> {
        Ok(match flag {
            None | Some("auto") if slow => TrialLines::All,
            None | Some("auto") => TrialLines::Best,
            Some("all") => TrialLines::All,
            Some("best") => TrialLines::Best,
            Some("none") => TrialLines::None,
            Some(other) => bail!("--trial-lines {other}: expected auto, all, best or none"),
        })
    }
}

/// Prints the trials a study ends, on stderr, as [`TrialLines`] says.
#[derive(Debug)]
pub struct TrialPrinter {
    mode: TrialLines,
    /// The best validation macro-F1 of an ended, not failed trial so far, and its trial.
    best: Option<(f64, u64)>,
    /// Trials ended in this process, and since the last count.
    ended: u64,
    since: u64,
    started: Instant,
    last_count: Instant,
}

impl TrialPrinter {
    /// Time between two counts in [`TrialLines::Best`].
    pub const STATUS_EVERY: Duration = Duration::from_secs(10);

    /// A printer whose best so far is `best` (a resumed study's: see [`best_recorded`]).
    pub fn new(mode: TrialLines, best: Option<(f64, u64)>) -> TrialPrinter {
        let now = Instant::now();
        TrialPrinter { mode, best, ended: 0, since: 0, started: now, last_count: now }
    }

    /// Notes the ended trial `t` and returns what to print for it (lines without their
    /// `\n`; the count comes due at `now`).
    pub fn lines(&mut self, t: &TrialRecord, now: Instant) -> Vec<String> {
        let failed = t.status.starts_with("failed");
        let new_best = !failed && self.best.is_none_or(|(b, _)| t.val_macro_f1 > b);
        if new_best {
            self.best = Some((t.val_macro_f1, t.id));
        }
        self.ended += 1;
        self.since += 1;
        let mut out = Vec::new();
        if self.mode == TrialLines::All || (self.mode == TrialLines::Best && (new_best || failed)) {
            out.push(trial_line(t, new_best));
        }
        let since_count = now.saturating_duration_since(self.last_count);
        if self.mode == TrialLines::Best && since_count >= Self::STATUS_EVERY {
            out.push(format!(
                "[{:.0} s] {} trials ended ({} in the last {:.0} s){}",
                now.saturating_duration_since(self.started).as_secs_f64(),
                self.ended,
                self.since,
                since_count.as_secs_f64(),
                self.best
                    .map(|(f1, id)| format!("; best so far: trial {id}, val macro-F1 {f1:.4}"))
                    .unwrap_or_default()
            ));
            self.since = 0;
            self.last_count = now;
        }
        out
    }

    /// Prints [`TrialPrinter::lines`] for `t` now.
    pub fn print(&mut self, t: &TrialRecord) {
        for line in self.lines(t, Instant::now()) {
            errln!("{line}");
        }
    }
}

/// The best finished trial of the study in `dir` ([`crate::study::best_of`]): where a
/// resumed study's [`TrialPrinter`] starts. `None` when there is none or the store cannot be
/// read (then `resume` says why).
pub fn best_recorded(dir: &Path) -> Option<(f64, u64)> {
    use tuneforge_agent::store::StudyStore;
    let store = tuneforge_agent::store::SqliteStore::open_existing(&study_path(dir)).ok()?;
    crate::study::best_of(&store.trials().ok()?).map(|b| (b.val_macro_f1, b.trial))
}

fn trial_line(t: &TrialRecord, new_best: bool) -> String {
    format!(
        "trial {:>3} {:<9}: val macro-F1 {:.4}, {:>8.0} samples/s, {} decision{}, reward {:+.3}, lr {:.2e}, batch {}, widths {:?}{}{}",
        t.id,
        t.status.split(':').next().unwrap_or(""),
        t.val_macro_f1,
        t.samples_per_s,
        t.decisions,
        if t.decisions == 1 { "" } else { "s" },
        t.reward,
        t.final_hparams.lr,
        t.final_hparams.batch_size,
        t.final_hparams.widths,
        if t.resumed { " (resumed)" } else { "" },
        if new_best { " (best so far)" } else { "" }
    )
}

/// Ctrl-C (or SIGTERM) once: the study ends as if its budget were spent — the running trial
/// stops at its next decision point, the best model is tested, the outputs are written —
/// and the process then exits with 130; twice: it exits at once, the study resumable from
/// its checkpoints. `again` says how the study continues.
pub fn stop_on_interrupt(again: String) {
    on_interrupt(
        "the running trial stops at its next decision point, then the best model is tested and the outputs written"
            .into(),
        format!("{again} continues the study from its checkpoints"),
    );
}

/// Installs the Ctrl-C (and SIGTERM) handler: the first asks the work to stop
/// ([`tuneforge_agent::tune::request_stop`]) and says `first` (what happens now); the second
/// exits at once with 130, saying `second` (what is kept).
pub fn on_interrupt(first: String, second: String) {
    let installed = ctrlc::set_handler(move || {
        if tuneforge_agent::tune::stop_requested() {
            errln!("\ninterrupted again: exiting now ({second})");
            std::process::exit(130);
        }
        tuneforge_agent::tune::request_stop();
        errln!("\ninterrupted: {first} (Ctrl-C again exits at once)");
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "no Ctrl-C handler: an interrupt ends the process at once");
    }
}

/// `" or N trials"` for a study's start line when it has a trial budget.
fn trials_at_most(max_trials: Option<u64>) -> String {
    max_trials.map_or_else(String::new, |n| format!(" or {n} trial{}", if n == 1 { "" } else { "s" }))
}

/// `", until val macro-F1 ≥ F1 or N trials without a better one"` for a study's start line
/// when it has an early-stopping rule.
fn stops_early(stop_when: &StopWhen) -> String {
    if stop_when.is_none() { String::new() } else { format!(", {stop_when}") }
}

/// `", each trial at most 30s"` for a study's start line when its trials have a time limit.
fn trial_limit(timeout: Option<Duration>) -> String {
    timeout.map_or_else(String::new, |t| format!(", each trial at most {t:?}"))
}

/// `--stop-at F1|off` (`off`: `None`).
pub fn parse_stop_at(text: &str) -> anyhow::Result<Option<f64>> {
    if text == "off" {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(f1) if f1 > 0.0 && f1 <= 1.0 => Ok(Some(f1)),
        _ => bail!("--stop-at {text}: a validation macro-F1 above 0 and at most 1 (e.g. 0.97), or off"),
    }
}

/// `--trial-timeout DURATION|off` (`off`: `None`).
pub fn parse_trial_timeout(text: &str) -> anyhow::Result<Option<Duration>> {
    if text == "off" {
        return Ok(None);
    }
    parse_duration("--trial-timeout", text).map(Some)
}

/// `--patience N|off` (`off`: `None`).
pub fn parse_patience(text: &str) -> anyhow::Result<Option<u64>> {
    if text == "off" {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => bail!("--patience {text}: a number of trials, at least 1, or off"),
    }
}

/// `tune --dry-run`: the study's settings checked against its data as a run would, and what
/// it would train on; nothing is created, no store opened.
fn dry_run(args: &TuneArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let plan = tuneforge_agent::tune::plan(&config, &args.data.dirs(), &args.data.cache())?;
    let b = &config.env.bounds;
    // (PostgreSQL: the study is found or created in the database, not in --out.)
    let out = out_dir(args);
    if args.storage.is_none() && study_path(&out).exists() {
        bail!("{} already holds a study: continue it with --resume, or choose another --out", out.display());
    }
    outln!(
        "would tune {} ({}) with {} for {:?}{}{}{}{}",
        config.data,
        config.model,
        config.strategy,
        config.budget,
        trials_at_most(config.max_trials),
        stops_early(&config.stop_when),
        trial_limit(config.trial_timeout),
        if args.storage.is_none() { format!(", writing to {}", out.display()) } else { String::new() }
    );
    outln!(
        "data: {} training rows, {} validation, {} test; {} classes; samples of shape {:?}",
        plan.train_rows,
        plan.val_rows,
        plan.test_rows,
        plan.classes,
        plan.sample_shape
    );
    outln!("starting model: {}, {} parameters", config.model, plan.parameters);
    outln!(
        "each trial: {} training rows ({} steps at batch {}), a decision every {} steps",
        plan.rows_per_trial,
        config.env.budget_steps,
        config.env.unit_batch.unwrap_or(config.batch_size),
        config.env.decision_steps
    );
    outln!(
        "search space: starts at lr {}, batch {}; bounds: lr {}:{}, batch {}:{}, widths {}:{}",
        config.lr,
        config.batch_size,
        b.lr.0,
        b.lr.1,
        b.batch.0,
        b.batch.1,
        b.width.0,
        b.width.1
    );
    for (i, e) in config.enqueued.iter().enumerate() {
        outln!("enqueued trial {i}: {e}");
    }
    outln!("nothing written (--dry-run)");
    Ok(())
}

/// `` `cargo xtask tune --resume DIR` ``, quoted for messages.
fn resume_command(dir: &Path) -> String {
    format!("`cargo xtask tune --resume {}`", dir.display())
}

/// After a study ended: if it was interrupted, says so and how it continues, and exits 130.
fn exit_if_interrupted(summary: &TuneSummary, again: &str) {
    if tuneforge_agent::tune::stop_requested() {
        errln!(
            "interrupted after {:.1} s of the study's {:.1} s budget: {again} runs what is left of it",
            summary.wall_s,
            summary.budget_s
        );
        std::process::exit(130);
    }
}

pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    if args.dry_run {
        return dry_run(args);
    }
    let storage = args.storage.as_deref().map(parse_storage).transpose()?;
    if let Some(Storage::Postgres(url)) = &storage {
        return run_worker(args, url);
    }
    if args.study.is_some() || args.worker.is_some() {
        bail!("--study and --worker need --storage postgres://... (a SQLite store holds one study)");
    }
    let mut args = args.clone();
    if let Some(Storage::Sqlite(dir)) = storage {
        if let Some(resume) = &args.resume {
            if resume != &dir {
                bail!("--resume {} and --storage name different study folders", resume.display());
            }
        } else if args.out != Path::new(DEFAULT_OUT) && args.out != dir {
            bail!("--out {} and --storage name different study folders", args.out.display());
        } else {
            args.out = dir;
        }
    }
    let args = &args;
    let device = crate::train::parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let (summary, out) = match &args.resume {
        Some(dir) => {
            let change = Extension {
                budget: args.budget.as_deref().map(parse_budget).transpose()?,
                max_trials: args.max_trials,
                stop_at: args.stop_at.as_deref().map(parse_stop_at).transpose()?,
                patience: args.patience.as_deref().map(parse_patience).transpose()?,
                trial_timeout: args.trial_timeout.as_deref().map(parse_trial_timeout).transpose()?,
            };
            let config = if change != Extension::default() {
                let (before, after) = tuneforge_agent::tune::extend(dir, &change)?;
                errln!(
                    "{}: budget {:?}{}{}{} (was {:?}{}{}{})",
                    dir.display(),
                    after.budget,
                    trials_at_most(after.max_trials),
                    stops_early(&after.stop_when),
                    trial_limit(after.trial_timeout),
                    before.budget,
                    trials_at_most(before.max_trials),
                    stops_early(&before.stop_when),
                    trial_limit(before.trial_timeout)
                );
                after
            } else {
                tuneforge_agent::tune::study_config(dir, ProgressMode::Off)?
            };
            let slow = defaults(&config.data).slow;
            errln!(
                "resuming {} ({}, {}, budget {:?}{}{}{}, seed {})",
                dir.display(),
                config.data,
                config.strategy,
                config.budget,
                trials_at_most(config.max_trials),
                stops_early(&config.stop_when),
                trial_limit(config.trial_timeout),
                config.seed
            );
            let mut printer =
                TrialPrinter::new(TrialLines::parse(args.trial_lines.as_deref(), slow)?, best_recorded(dir));
            stop_on_interrupt(resume_command(dir));
            let output = Output {
                progress: progress(args, slow)?,
                log_steps_every: args.log_steps_every,
                stop: Default::default(),
            };
            let summary =
                resume(dir, &dirs, &cache, &device, output, &mut |t| printer.print(t)).map_err(|e| stopped(e, dir))?;
            (summary, dir.clone())
        }
        None => {
            let config = config(args)?;
            let lines = TrialLines::parse(args.trial_lines.as_deref(), defaults(&config.data).slow)?;
            let out = out_dir(args);
            errln!(
                "tuning {} ({}) with {} for {:?}{}{}{}{}; writing to {} (continue it with --resume {}; \
                 follow it live with: cargo xtask report {} --watch 10)",
                config.data,
                config.model,
                config.strategy,
                config.budget,
                trials_at_most(config.max_trials),
                stops_early(&config.stop_when),
                trial_limit(config.trial_timeout),
                match config.enqueued.len() {
                    0 => String::new(),
                    1 => ", the enqueued start first".into(),
                    n => format!(", {n} enqueued starts first"),
                },
                out.display(),
                out.display(),
                out.display()
            );
            let mut printer = TrialPrinter::new(lines, None);
            stop_on_interrupt(resume_command(&out));
            let summary = tune(&config, &dirs, &cache, &device, &out, &mut |t| printer.print(t)).map_err(|e| {
                if tuneforge_agent::tune::study_path(&out).exists() {
                    stopped(e, &out)
                } else {
                    // Refused before the study was created (data, model): the line above said
                    // "writing to".
                    anyhow::Error::new(e).context(format!("no study was created in {}", out.display()))
                }
            })?;
            (summary, out)
        }
    };
    print_leaderboard(&summary, &out);
    exit_if_interrupted(&summary, &resume_command(&out));
    Ok(())
}

/// One worker of a study kept in PostgreSQL.
fn run_worker(args: &TuneArgs, url: &str) -> anyhow::Result<()> {
    let Some(study) = args.study.as_deref() else {
        bail!("--storage postgres://... needs --study NAME (a database holds many studies)");
    };
    if args.resume.is_some() {
        bail!("--resume is for a SQLite study folder; a PostgreSQL study is continued by starting workers on it again");
    }
    let config = config(args)?;
    let lines = TrialLines::parse(args.trial_lines.as_deref(), defaults(&config.data).slow)?;
    let mut options = PgOptions {
        heartbeat_timeout: seconds("--heartbeat-timeout", args.heartbeat_timeout)?,
        retry_for: seconds("--retry-for", args.retry_for)?,
        ..PgOptions::default()
    };
    if let Some(worker) = &args.worker {
        options.worker = worker.clone();
    }
    let out = if args.out == Path::new(DEFAULT_OUT) {
        let name: String = format!("{study}-{}", options.worker)
            .chars()
            .map(|c| if c.is_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        PathBuf::from("runs").join(name)
    } else {
        args.out.clone()
    };
    let device = crate::train::parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let worker = options.worker.clone();
    let mut store = PostgresStore::open(url, study, options)?;
    errln!(
        "worker {worker} on study {study} at {} ({}, {}, {:?}{}{}{}); writing to {}",
        store.target(),
        config.data,
        config.strategy,
        config.budget,
        trials_at_most(config.max_trials),
        stops_early(&config.stop_when),
        trial_limit(config.trial_timeout),
        out.display()
    );
    // The trial budget travels in `config.max_trials` (`WorkerOptions::max_trials` is for a
    // library caller that keeps it apart).
    let worker_options = WorkerOptions::default();
    let mut printer = TrialPrinter::new(lines, None);
    stop_on_interrupt("a worker started on it again".into());
    let summary = work(&config, &mut store, &worker_options, &dirs, &cache, &device, &out, &mut |t| printer.print(t))?;
    print_leaderboard(&summary, &out);
    exit_if_interrupted(&summary, "a worker started on it again");
    Ok(())
}

/// A study that stopped because it could not write its files (a full or read-only disk)
/// keeps what it recorded: the error says how to continue it.
fn stopped(e: tuneforge_agent::Error, dir: &Path) -> anyhow::Error {
    if e.ends_only_the_trial() || !tuneforge_agent::tune::study_path(dir).exists() {
        return e.into();
    }
    anyhow::Error::new(e).context(format!(
        "the study in {} stopped; what it recorded is kept: once the cause below is fixed, continue it with \
         `cargo xtask tune --resume {}`",
        dir.display(),
        dir.display()
    ))
}

fn print_leaderboard(summary: &TuneSummary, out: &Path) {
    outln!(
        "\n{:>5} {:>11} {:>10} {:>9} {:>6}  {:<16} {:>9} {:>10} {:>8}",
        "trial",
        "strategy",
        "status",
        "lr",
        "batch",
        "widths",
        "val F1",
        "samples/s",
        "reward"
    );
    let mut order: Vec<_> = summary.trials.iter().collect();
    order.sort_by(|a, b| b.val_macro_f1.total_cmp(&a.val_macro_f1));
    for t in order.iter().take(10) {
        outln!(
            "{:>5} {:>11} {:>10} {:>9.2e} {:>6}  {:<16} {:>9.4} {:>10.0} {:>+8.3}",
            t.id,
            summary.strategy.name(),
            t.status.split(':').next().unwrap_or(""),
            t.final_hparams.lr,
            t.final_hparams.batch_size,
            format!("{:?}", t.final_hparams.widths),
            t.val_macro_f1,
            t.samples_per_s,
            t.reward
        );
    }
    if summary.trials.len() > 10 {
        outln!("  ... {} more trials in {}", summary.trials.len() - 10, out.join("summary.json").display());
    }
    outln!(
        "\nbest: trial {} — val macro-F1 {:.4}, test macro-F1 {:.4}, test accuracy {:.4}; {} trials in {:.1} s, \
         mean reward {:+.4}, agent overhead {:.3}% of wall time (study store {:.2}%{}); wrote {} \
         (charts: cargo xtask report {}; the model on new rows: cargo xtask predict --model {} --dataset ...)",
        summary.best.trial,
        summary.best.val_macro_f1,
        summary.best.test_macro_f1,
        summary.best.test_accuracy,
        summary.trials.len(),
        summary.wall_s,
        summary.mean_reward,
        100.0 * summary.agent_overhead,
        100.0 * summary.store_seconds / summary.wall_s.max(1e-9),
        summary
            .worker_store_seconds
            .map(|s| format!("; this worker's claims, lookups and merges {s:.1} s"))
            .unwrap_or_default(),
        out.display(),
        out.display(),
        out.display()
    );
    // (An interrupted study says so, and how it continues, as the process exits.)
    if let Some(ended) = summary.ended.as_ref().filter(|e| **e != Ended::Interrupted) {
        outln!("the study ended because {ended}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, status: &str, f1: f64) -> TrialRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "val_macro_f1": f1, "samples_per_s": 1000.0, "decisions": 2,
            "reward": 0.5, "resumed": false,
            "start": {"model": "mlp:64", "lr": 0.003, "batch_size": 32, "seed": id},
            "final_hparams": {"lr": 0.003, "batch_size": 32, "widths": [64]},
            "steps": 300, "agent_seconds": 0.0
        }))
        .unwrap()
    }

    #[test]
    fn best_prints_new_bests_and_failures_and_a_count_every_ten_seconds() {
        let mut p = TrialPrinter::new(TrialLines::Best, Some((0.90, 3)));
        let t0 = p.started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Below the resumed study's best: nothing; above it: a line marked best.
        assert!(p.lines(&record(4, "completed", 0.85), at(1)).is_empty());
        let l = p.lines(&record(5, "stopped", 0.95), at(2));
        assert_eq!(l.len(), 1);
        assert!(
            l[0].starts_with("trial   5 stopped  : val macro-F1 0.9500") && l[0].ends_with("(best so far)"),
            "{l:?}"
        );
        // A tie is not a new best; a failed trial is always shown, never as best.
        assert!(p.lines(&record(6, "completed", 0.95), at(3)).is_empty());
        let l = p.lines(&record(7, "failed: NaN loss", 0.99), at(4));
        assert!(l.len() == 1 && l[0].starts_with("trial   7 failed   :") && !l[0].contains("best"), "{l:?}");
        // The count comes with the first trial ending 10 s after the last one (or the start).
        let l = p.lines(&record(8, "completed", 0.10), at(12));
        assert_eq!(l, ["[12 s] 5 trials ended (5 in the last 12 s); best so far: trial 5, val macro-F1 0.9500"]);
        assert!(p.lines(&record(9, "completed", 0.10), at(21)).is_empty());
        let l = p.lines(&record(10, "completed", 0.10), at(22));
        assert_eq!(l, ["[22 s] 7 trials ended (2 in the last 10 s); best so far: trial 5, val macro-F1 0.9500"]);
    }

    #[test]
    fn all_prints_every_trial_and_none_nothing() {
        let mut all = TrialPrinter::new(TrialLines::All, None);
        let mut none = TrialPrinter::new(TrialLines::None, None);
        let t0 = all.started + Duration::from_secs(30);
        for (id, f1) in [(0, 0.5), (1, 0.4), (2, 0.6)] {
            let l = all.lines(&record(id, "completed", f1), t0);
            assert_eq!(l.len(), 1, "{l:?}");
            assert_eq!(l[0].ends_with("(best so far)"), id != 1, "{l:?}");
            assert!(none.lines(&record(id, "completed", f1), t0).is_empty());
        }
    }

    #[test]
    fn trial_lines_defaults_by_dataset_and_refuses_others() {
        assert_eq!(TrialLines::parse(None, true).unwrap(), TrialLines::All);
        assert_eq!(TrialLines::parse(None, false).unwrap(), TrialLines::Best);
        assert_eq!(TrialLines::parse(Some("auto"), false).unwrap(), TrialLines::Best);
        assert_eq!(TrialLines::parse(Some("none"), true).unwrap(), TrialLines::None);
        let e = TrialLines::parse(Some("some"), true).unwrap_err().to_string();
        assert_eq!(e, "--trial-lines some: expected auto, all, best or none");
    }
}
