//! `cargo xtask bench-tune`: the nightly comparison of tuning strategies — one `tune` study
//! per strategy and seed, in this process, aggregated per strategy (mean ± sample standard
//! deviation over the seeds), written as JSON and as a section of docs/benchmarks.md, and
//! optionally checked against an earlier JSON for regressions.
//!
//! Per study: the best trial's validation macro-F1 and its test macro-F1, and the mean over
//! the study's trials (failed ones included) of training samples/s and of reward.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use tuneforge_agent::tune::{Strategy, TuneSummary, tune};

use crate::DataArgs;
use crate::tune::{self, TuneArgs};

const BEGIN: &str = "<!-- bench-tune:begin -->";
const END: &str = "<!-- bench-tune:end -->";

/// Compare tuning strategies: one study per strategy and seed, mean ± sd per strategy.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchTuneArgs {
    /// digits, fashion-mnist, biopsy, csv:PATH (with --label), or a text dataset:
    /// jsonl:PATH, csv:PATH --text COLUMN.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Label column of a csv: or jsonl: dataset.
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub text: crate::TextArgs,
    /// Starting architecture (default: as `cargo xtask tune`).
    #[arg(long)]
    pub model: Option<String>,
    /// Wall-clock budget of each study, e.g. 90s or 4m.
    #[arg(long, default_value = "4m")]
    pub budget: String,
    /// Number of seeds: each strategy runs with seeds 0..N.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub seeds: u64,
    /// Comma-separated strategies, each as `cargo xtask tune --strategy` takes it.
    #[arg(long, value_delimiter = ',', default_value = "fixed,random,asha,pbt,rl,rl-no-width")]
    pub strategies: Vec<String>,
    /// Weight of the throughput term of each decision's reward (as `cargo xtask tune
    /// --lambda`; default: tune's, 0.01 ÷ decisions per trial).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Optimiser steps per trial (as `cargo xtask tune --trial-steps`; default: tune's).
    #[arg(long)]
    pub trial_steps: Option<u64>,
    /// Optimiser steps between decisions (as `cargo xtask tune --decision-steps`).
    #[arg(long)]
    pub decision_steps: Option<usize>,
    /// Output directory; each study writes to DIR/<strategy>-seed<k>, which must not hold an
    /// earlier study.
    #[arg(long, value_name = "DIR", default_value = "runs/bench-tune")]
    pub out: PathBuf,
    /// Where the results go (default: docs/bench-results/tune-<YYYY-MM-DD>.json, today in UTC).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Markdown file whose section between `<!-- bench-tune:begin -->` and
    /// `<!-- bench-tune:end -->` is replaced (the markers and section are appended if absent).
    #[arg(long, value_name = "PATH", default_value = "docs/benchmarks.md")]
    pub doc: PathBuf,
    /// An earlier bench-tune JSON (same dataset, model, budget, lambda and device) to check
    /// for regressions; exits non-zero after writing everything if any metric regressed.
    ///
    /// For each strategy in both files and each of best val macro-F1, test macro-F1,
    /// samples/s and reward (all higher-is-better), a metric regressed when
    /// now.mean < prev.mean - max(noise, floor), where noise = 2·sqrt(prev.sd²/prev.n +
    /// now.sd²/now.n) and floor = 0.005 for F1 and reward, 2% of prev.mean for samples/s.
    #[arg(long, value_name = "PREV.json")]
    pub compare: Option<PathBuf>,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Check the flags, the --compare file, --doc and the output directories, print the
    /// studies that would run, and exit without running them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// What `bench-tune` writes to `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// UTC date of the run, YYYY-MM-DD.
    pub date: String,
    /// The command line, with the binary shown as `cargo xtask`.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// The dataset, as the studies name it.
    pub dataset: String,
    /// The starting architecture.
    pub model: String,
    /// Budget of each study, seconds.
    pub budget_s: f64,
    /// Optimiser steps per trial.
    #[serde(default)]
    pub trial_steps: u64,
    /// Optimiser steps between decisions.
    #[serde(default)]
    pub decision_steps: usize,
    /// λ of the reward.
    pub lambda: f64,
    /// cpu or cuda[:N].
    pub device: String,
    /// Seeds per strategy (0..seeds).
    pub seeds: u64,
    /// One entry per study, in the order they ran.
    pub runs: Vec<RunResult>,
    /// One entry per strategy, in `--strategies` order.
    pub aggregates: Vec<Aggregate>,
    /// The `--compare` file, if any.
    #[serde(default)]
    pub compared_with: Option<PathBuf>,
    /// Metrics flagged against it.
    #[serde(default)]
    pub regressions: Vec<Regression>,
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// The first `model name` of /proc/cpuinfo, if readable.
    pub cpu: Option<String>,
}

/// One study's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// As given in `--strategies`.
    pub strategy: String,
    /// The study's seed.
    pub seed: u64,
    /// Validation macro-F1 of the best trial.
    pub best_val_macro_f1: f64,
    /// Test macro-F1 of the best trial.
    pub test_macro_f1: f64,
    /// Mean over the study's trials of training samples/s.
    pub samples_per_s: f64,
    /// Mean over the study's trials of the summed reward.
    pub reward: f64,
    /// Mean reward over the trials that ran to their end (`completed`): strategies that stop
    /// trials early (`asha`, `rl`'s rungs) have a truncated reward in the others. `None`
    /// when no trial completed, and in files written before it was measured.
    #[serde(default)]
    pub completed_reward: Option<f64>,
    /// Number of trials.
    pub trials: usize,
    /// Wall time of the study, seconds.
    pub wall_s: f64,
    /// The study's output directory.
    pub out: PathBuf,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator; 0 for one value).
    pub sd: f64,
}

/// One strategy over its seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    /// As given in `--strategies`.
    pub strategy: String,
    /// Number of studies (seeds).
    pub n: usize,
    /// See [`RunResult`].
    pub best_val_macro_f1: Stat,
    /// See [`RunResult`].
    pub test_macro_f1: Stat,
    /// See [`RunResult`].
    pub samples_per_s: Stat,
    /// See [`RunResult`].
    pub reward: Stat,
    /// See [`RunResult`]; over the seeds that completed a trial, `None` if none did.
    #[serde(default)]
    pub completed_reward: Option<Stat>,
    /// See [`RunResult`].
    pub trials: Stat,
}

/// A metric that fell by more than the noise allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// Strategy.
    pub strategy: String,
    /// Metric, as the table heads it.
    pub metric: String,
    /// Mean in the earlier file.
    pub prev_mean: f64,
    /// Mean now.
    pub now_mean: f64,
    /// The largest drop tolerated: max(noise, floor).
    pub allowed_drop: f64,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = COLUMNS.iter().find(|c| c.name == self.metric).map_or(4, |c| c.decimals);
        write!(
            f,
            "{} {}: {:.d$} -> {:.d$} (fell {:.d$}, more than the {:.d$} allowed)",
            self.strategy,
            self.metric,
            self.prev_mean,
            self.now_mean,
            self.prev_mean - self.now_mean,
            self.allowed_drop,
        )
    }
}

/// The smallest drop that counts as a regression, whatever the noise.
#[derive(Clone, Copy)]
enum Floor {
    Absolute(f64),
    FractionOfPrev(f64),
}

/// A column of the table; compared when it has a floor and both files have it.
struct Column {
    name: &'static str,
    get: fn(&Aggregate) -> Option<Stat>,
    decimals: usize,
    floor: Option<Floor>,
}

const COLUMNS: [Column; 6] = [
    Column {
        name: "best val macro-F1",
        get: |a| Some(a.best_val_macro_f1),
        decimals: 4,
        floor: Some(Floor::Absolute(0.005)),
    },
    Column { name: "test macro-F1", get: |a| Some(a.test_macro_f1), decimals: 4, floor: Some(Floor::Absolute(0.005)) },
    Column { name: "samples/s", get: |a| Some(a.samples_per_s), decimals: 0, floor: Some(Floor::FractionOfPrev(0.02)) },
    Column { name: "reward", get: |a| Some(a.reward), decimals: 4, floor: Some(Floor::Absolute(0.005)) },
    Column {
        name: "completed-trial reward",
        get: |a| a.completed_reward,
        decimals: 4,
        floor: Some(Floor::Absolute(0.005)),
    },
    Column { name: "trials", get: |a| Some(a.trials), decimals: 1, floor: None },
];

const RULE: &str = "a metric is flagged when now.mean < prev.mean − max(2·√(prev.sd²/prev.n + now.sd²/now.n), \
                    floor), floor 0.005 for F1 and reward and 2% of prev.mean for samples/s";

/// Runs every study, writes `--json` and `--doc`, then fails if `--compare` flagged a metric.
pub fn run(args: &BenchTuneArgs) -> anyhow::Result<()> {
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut strategies: Vec<&str> = Vec::new();
    for s in args.strategies.iter().map(|s| s.trim()) {
        s.parse::<Strategy>().with_context(|| format!("--strategies: {s:?}"))?;
        if strategies.contains(&s) {
            bail!("--strategies: {s} is listed twice");
        }
        strategies.push(s);
    }
    if strategies.is_empty() {
        bail!("--strategies: none given");
    }
    // Every study's configuration first, so that a bad flag fails before hours of running.
    let base = base_tune_args(args)?;
    let mut studies = Vec::new();
    for &strategy in &strategies {
        for seed in 0..args.seeds {
            let mut t = base.clone();
            t.strategy = strategy.to_string();
            t.seed = seed;
            t.out = args.out.join(format!("{strategy}-seed{seed}"));
            let config = tune::config(&t)?;
            studies.push((strategy, seed, t.out, config));
        }
    }
    // `tune` refuses a directory that holds a study; say so now rather than hours in.
    for (_, _, out, _) in &studies {
        if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!("{} holds an earlier study: remove {} or choose another --out", out.display(), args.out.display());
        }
    }
    let first = &studies[0].3;
    let (dataset, model, budget_s) = (first.data.to_string(), first.model.clone(), first.budget.as_secs_f64());
    let (trial_steps, decision_steps, lambda) = (first.env.budget_steps, first.env.decision_steps, first.env.lambda);
    let prev = match &args.compare {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--compare {}", path.display()))?;
            let prev: Report = serde_json::from_str(&text)
                .with_context(|| format!("--compare {}: not a bench-tune JSON", path.display()))?;
            let setup = |r: &Report| {
                format!(
                    "{}, {}, {} s, λ {}, {}, trials of {} steps, decisions every {}",
                    r.dataset, r.model, r.budget_s, r.lambda, r.device, r.trial_steps, r.decision_steps
                )
            };
            let now = format!(
                "{dataset}, {model}, {budget_s} s, λ {lambda}, {}, trials of {trial_steps} steps, decisions every {decision_steps}",
                args.device
            );
            if setup(&prev) != now {
                bail!(
                    "--compare {}: measured on {}, this run is {now}: compare like with like",
                    path.display(),
                    setup(&prev)
                );
            }
            Some(prev)
        }
    };
    replace_section(&read_doc(&args.doc)?, "").with_context(|| format!("--doc {}", args.doc.display()))?;
    let date = utc_date(SystemTime::now());
    let json_path = args.json.clone().unwrap_or_else(|| PathBuf::from(format!("docs/bench-results/tune-{date}.json")));

    let this_machine = machine();
    if let Some(prev) = prev.as_ref().filter(|p| p.machine != this_machine) {
        errln!(
            "warning: --compare file measured on {}, this is {}: samples/s may differ for that reason alone",
            describe(&prev.machine),
            describe(&this_machine)
        );
    }

    let device = crate::train::parse_device(&args.device)?;
    if args.dry_run {
        for (strategy, seed, out, config) in &studies {
            outln!("{strategy} seed {seed}: {:?} into {}", config.budget, out.display());
        }
        let compared = args.compare.as_ref().map_or(String::new(), |p| format!(", comparable with {}", p.display()));
        outln!(
            "dry run: {} studies, {:.0} min in all; {dataset}, {model}, λ {lambda}, trials of {trial_steps} steps, \
             decisions every {decision_steps}{compared}; nothing run",
            studies.len(),
            budget_s * studies.len() as f64 / 60.0
        );
        return Ok(());
    }
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let total = studies.len();
    let mut runs = Vec::new();
    crate::tune::stop_on_interrupt("`cargo xtask tune --resume DIR` of the interrupted study".into());
    for (i, (strategy, seed, out, config)) in studies.iter().enumerate() {
        errln!("[{}/{total}] {strategy} seed {seed}: tuning for {:?} into {}", i + 1, config.budget, out.display());
        let summary = tune(config, &dirs, &cache, &device, out, &mut |_| {})
            .with_context(|| format!("study {strategy} seed {seed}"))?;
        if tuneforge_agent::tune::stop_requested() {
            // A study cut short would skew the comparison: no report.
            errln!(
                "interrupted in study {} of {total} ({strategy} seed {seed}, {:.1} s of {:.1} s): no bench report written",
                i + 1,
                summary.wall_s,
                summary.budget_s
            );
            std::process::exit(130);
        }
        let r = run_result(strategy, *seed, out, &summary);
        outln!(
            "[{}/{total}] {strategy} seed {seed}: best val macro-F1 {:.4}, test macro-F1 {:.4}, {:.0} samples/s, \
             reward {:+.4}, {} trials, {:.1} s",
            i + 1,
            r.best_val_macro_f1,
            r.test_macro_f1,
            r.samples_per_s,
            r.reward,
            r.trials,
            r.wall_s
        );
        runs.push(r);
    }
    let aggregates = strategies
        .iter()
        .map(|s| aggregate(s, &runs.iter().filter(|r| r.strategy == *s).cloned().collect::<Vec<_>>()))
        .collect();
    let mut report = Report {
        date,
        command: command_line(),
        machine: this_machine,
        dataset,
        model,
        budget_s,
        trial_steps,
        decision_steps,
        lambda,
        device: args.device.clone(),
        seeds: args.seeds,
        runs,
        aggregates,
        compared_with: args.compare.clone(),
        regressions: Vec::new(),
    };
    if let Some(prev) = &prev {
        report.regressions = compare(prev, &report);
    }

    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&json_path, json.as_bytes())?;
    let section = section(&report, prev.as_ref(), &json_path);
    // Read again: the doc may have been edited while the studies ran.
    let doc =
        replace_section(&read_doc(&args.doc)?, &section).with_context(|| format!("--doc {}", args.doc.display()))?;
    write_atomic(&args.doc, doc.as_bytes())?;
    outln!("\n{}", table(&report));
    outln!(
        "wrote {} and the bench-tune section of {} (charts: cargo xtask report {})",
        json_path.display(),
        args.doc.display(),
        args.out.display()
    );
    if let Some(path) = &args.compare {
        if report.regressions.is_empty() {
            outln!("no regression against {}", path.display());
        }
        for r in &report.regressions {
            outln!("REGRESSED {r}");
        }
    }
    if !report.regressions.is_empty() {
        bail!("{} metrics regressed", report.regressions.len());
    }
    Ok(())
}

/// `cargo xtask tune`'s arguments with bench-tune's shared flags; flags `tune` gains later
/// take their defaults.
fn base_tune_args(args: &BenchTuneArgs) -> anyhow::Result<TuneArgs> {
    let mut argv: Vec<OsString> = vec!["tune".into()];
    let mut flag = |name: &str, value: Option<OsString>| {
        if let Some(v) = value {
            // `--flag=value`, so that a value starting with '-' is not taken for a flag.
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(v);
            argv.push(arg);
        }
    };
    flag("dataset", Some(args.dataset.clone().into()));
    flag("label", args.label.clone().map(Into::into));
    flag("text-field", args.text.text_field.clone().map(Into::into));
    flag("model", args.model.clone().map(Into::into));
    flag("budget", Some(args.budget.clone().into()));
    flag("lambda", args.lambda.map(|l| l.to_string().into()));
    flag("trial-steps", args.trial_steps.map(|n| n.to_string().into()));
    flag("decision-steps", args.decision_steps.map(|n| n.to_string().into()));
    // Per-trial progress would drown the one line per study.
    flag("progress", Some("off".into()));
    flag("device", Some(args.device.clone().into()));
    flag("data-dir", args.data.data_dir.clone().map(Into::into));
    flag("cache-dir", args.data.cache_dir.clone().map(Into::into));
    if args.text.keep_headers {
        argv.push("--keep-headers".into());
    }
    let matches = TuneArgs::augment_args(clap::Command::new("tune")).try_get_matches_from(argv)?;
    Ok(TuneArgs::from_arg_matches(&matches)?)
}

fn run_result(strategy: &str, seed: u64, out: &Path, s: &TuneSummary) -> RunResult {
    let per_trial =
        |f: fn(&tuneforge_agent::tune::TrialRecord) -> f64| mean_sd(&s.trials.iter().map(f).collect::<Vec<_>>()).mean;
    RunResult {
        strategy: strategy.to_string(),
        seed,
        best_val_macro_f1: s.best.val_macro_f1,
        test_macro_f1: s.best.test_macro_f1,
        samples_per_s: per_trial(|t| t.samples_per_s),
        reward: per_trial(|t| t.reward),
        completed_reward: {
            let done: Vec<f64> = s.trials.iter().filter(|t| t.status == "completed").map(|t| t.reward).collect();
            (!done.is_empty()).then(|| mean_sd(&done).mean)
        },
        trials: s.trials.len(),
        wall_s: s.wall_s,
        out: out.to_path_buf(),
    }
}

fn aggregate(strategy: &str, runs: &[RunResult]) -> Aggregate {
    let stat = |f: fn(&RunResult) -> f64| mean_sd(&runs.iter().map(f).collect::<Vec<_>>());
    Aggregate {
        strategy: strategy.to_string(),
        n: runs.len(),
        best_val_macro_f1: stat(|r| r.best_val_macro_f1),
        test_macro_f1: stat(|r| r.test_macro_f1),
        samples_per_s: stat(|r| r.samples_per_s),
        reward: stat(|r| r.reward),
        completed_reward: {
            let done: Vec<f64> = runs.iter().filter_map(|r| r.completed_reward).collect();
            (!done.is_empty()).then(|| mean_sd(&done))
        },
        trials: stat(|r| r.trials as f64),
    }
}

/// Mean and sample standard deviation (n - 1; 0 when n = 1) of a non-empty slice.
fn mean_sd(xs: &[f64]) -> Stat {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    Stat { mean, sd }
}

/// The metrics of `now` that fell by more than the noise allows against `prev`, for the
/// strategies in both (the rule is [`RULE`]).
pub fn compare(prev: &Report, now: &Report) -> Vec<Regression> {
    let mut flags = Vec::new();
    for a in &now.aggregates {
        let Some(p) = prev.aggregates.iter().find(|p| p.strategy == a.strategy) else { continue };
        for c in &COLUMNS {
            let (Some(floor), Some(sp), Some(sn)) = (c.floor, (c.get)(p), (c.get)(a)) else { continue };
            let noise = 2.0 * (sp.sd.powi(2) / p.n as f64 + sn.sd.powi(2) / a.n as f64).sqrt();
            let floor = match floor {
                Floor::Absolute(x) => x,
                Floor::FractionOfPrev(f) => f * sp.mean.abs(),
            };
            let allowed_drop = noise.max(floor);
            if sn.mean < sp.mean - allowed_drop {
                flags.push(Regression {
                    strategy: a.strategy.clone(),
                    metric: c.name.to_string(),
                    prev_mean: sp.mean,
                    now_mean: sn.mean,
                    allowed_drop,
                });
            }
        }
    }
    flags
}

/// The markdown table, rows by mean reward, best first.
fn table(report: &Report) -> String {
    let mut rows: Vec<&Aggregate> = report.aggregates.iter().collect();
    rows.sort_by(|a, b| b.reward.mean.total_cmp(&a.reward.mean));
    let mut s = String::from("| strategy |");
    for c in &COLUMNS {
        s += &format!(" {} |", c.name);
    }
    s += "\n|---|";
    s += &"---:|".repeat(COLUMNS.len());
    for a in rows {
        s += &format!("\n| {} |", a.strategy);
        for c in &COLUMNS {
            match (c.get)(a) {
                Some(Stat { mean, sd }) => s += &format!(" {mean:.d$} ± {sd:.d$} |", d = c.decimals),
                None => s += " – |",
            }
        }
    }
    s
}

/// The docs section between the markers.
fn section(report: &Report, prev: Option<&Report>, json_path: &Path) -> String {
    let mut s = String::from("## Tuning strategies (bench-tune)\n\n");
    let _ = writeln!(
        s,
        "`{}`, {}, {}. {}, starting model {}, {} s budget per study, trials of {} steps with a decision \
         every {} (steps of the study's batch size: a trial gets those training rows whatever batch \
         size it runs at), device {}, seeds 0–{} ({} studies per strategy); raw results in `{}`.\n",
        report.command,
        report.date,
        describe(&report.machine),
        report.dataset,
        report.model,
        report.budget_s,
        report.trial_steps,
        report.decision_steps,
        report.device,
        report.seeds - 1,
        report.seeds,
        json_path.display()
    );
    let _ = writeln!(
        s,
        "Each cell is the mean ± sample standard deviation over the seeds of a study's figure: its best \
         trial's validation macro-F1 and that trial's test macro-F1, and the mean over its trials of \
         training samples/s, of reward (per trial: the first interval's F1 gain over the untrained model, then \
         per decision Δ val macro-F1 + λ·ln(throughput gain), λ = {:.3e}, and the final val macro-F1; then \
         the same over the trials that ran to their end only, since a trial stopped early — by `asha` or \
         `rl`'s rungs — has a truncated reward) and the number of trials. Rows by mean reward.\n",
        report.lambda
    );
    s += &table(report);
    s += "\n";
    if let (Some(prev), Some(path)) = (prev, &report.compared_with) {
        let _ = write!(s, "\nCompared with `{}` ({}): {RULE}. ", path.display(), prev.date);
        if prev.machine != report.machine {
            let _ =
                write!(s, "It was measured on {}, so samples/s differ for that reason too. ", describe(&prev.machine));
        }
        if report.regressions.is_empty() {
            s += "No regression.\n";
        } else {
            s += "Regressed:\n\n";
            for r in &report.regressions {
                let _ = writeln!(s, "- {r}");
            }
        }
        let missing: Vec<&str> = (prev.aggregates.iter().map(|a| &a.strategy))
            .chain(report.aggregates.iter().map(|a| &a.strategy))
            .filter(|name| {
                let has = |r: &Report| r.aggregates.iter().any(|a| &a.strategy == *name);
                !(has(prev) && has(report))
            })
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let _ = writeln!(s, "\nNot compared (in one file only): {}.", missing.join(", "));
        }
    }
    s
}

/// `doc` with the text between the bench-tune markers replaced by `section`, or with the
/// markers and `section` appended if it has neither.
fn replace_section(doc: &str, section: &str) -> anyhow::Result<String> {
    let body =
        format!("{BEGIN}\n{}{}{END}", section, if section.is_empty() || section.ends_with('\n') { "" } else { "\n" });
    match (doc.find(BEGIN), doc.find(END)) {
        (None, None) => {
            let sep = if doc.is_empty() || doc.ends_with("\n\n") {
                ""
            } else if doc.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{doc}{sep}{body}\n"))
        }
        (Some(b), Some(e)) if b < e && doc.matches(BEGIN).count() == 1 && doc.matches(END).count() == 1 => {
            Ok(format!("{}{body}{}", &doc[..b], &doc[e + END.len()..]))
        }
        _ => bail!("expected one {BEGIN} before one {END}, or neither"),
    }
}

/// The doc's text; empty if it does not exist yet.
fn read_doc(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("--doc {}", path.display())),
    }
}

/// The command line, with the binary shown as `cargo xtask` and arguments quoted for a shell.
fn command_line() -> String {
    let quote = |a: String| {
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
        if !a.is_empty() && a.chars().all(plain) { a } else { format!("'{}'", a.replace('\'', r"'\''")) }
    };
    std::iter::once("cargo xtask".to_string()).chain(std::env::args().skip(1).map(quote)).collect::<Vec<_>>().join(" ")
}

/// `2 cores (AMD EPYC)`.
fn describe(m: &Machine) -> String {
    match &m.cpu {
        Some(cpu) => format!("{} cores ({cpu})", m.cores),
        None => format!("{} cores", m.cores),
    }
}

fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    Machine { cores, cpu }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tuneforge_agent::run::write_atomic(path, bytes)?;
    Ok(())
}

/// `t`'s date in UTC as YYYY-MM-DD.
fn utc_date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// (year, month, day) in the proleptic Gregorian calendar of the day `days` days after
/// 1970-01-01: Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>), which counts
/// in 400-year eras starting on 0000-03-01 so that the leap day is the last of its year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097); // 146097 days per 400 years
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text flags reach every study (they were dropped before: a bench of
    /// `--keep-headers` studies ran on bodies only).
    #[test]
    fn text_flags_are_passed_to_each_study() {
        use clap::{Args, FromArgMatches};
        let argv = ["bench-tune", "--dataset", "jsonl:mail.jsonl", "--text-field", "body", "--keep-headers"];
        let matches = BenchTuneArgs::augment_args(clap::Command::new("bench-tune")).try_get_matches_from(argv).unwrap();
        let args = BenchTuneArgs::from_arg_matches(&matches).unwrap();
        let tune = base_tune_args(&args).unwrap();
        assert_eq!(tune.text.text_field.as_deref(), Some("body"));
        assert!(tune.text.keep_headers);
        let plain = ["bench-tune", "--dataset", "digits"];
        let matches =
            BenchTuneArgs::augment_args(clap::Command::new("bench-tune")).try_get_matches_from(plain).unwrap();
        let tune = base_tune_args(&BenchTuneArgs::from_arg_matches(&matches).unwrap()).unwrap();
        assert!(tune.text.text_field.is_none() && !tune.text.keep_headers);
    }

    fn agg(strategy: &str, n: usize, mean: f64, sd: f64, sps: f64) -> Aggregate {
        let s = Stat { mean, sd };
        Aggregate {
            strategy: strategy.into(),
            n,
            best_val_macro_f1: s,
            test_macro_f1: s,
            samples_per_s: Stat { mean: sps, sd: 0.0 },
            reward: s,
            completed_reward: Some(s),
            trials: Stat { mean: 10.0, sd: 0.0 },
        }
    }

    fn report(aggregates: Vec<Aggregate>) -> Report {
        Report {
            date: "2026-11-28".into(),
            command: "cargo xtask bench-tune".into(),
            machine: Machine { cores: 2, cpu: None },
            dataset: "digits".into(),
            model: "mlp:64".into(),
            budget_s: 3.0,
            trial_steps: 300,
            decision_steps: 30,
            lambda: 0.02,
            device: "cpu".into(),
            seeds: 2,
            runs: Vec::new(),
            aggregates,
            compared_with: None,
            regressions: Vec::new(),
        }
    }

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[0.7]), Stat { mean: 0.7, sd: 0.0 });
        let s = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{s:?}");
        assert_eq!(mean_sd(&[1.0, 3.0]), Stat { mean: 2.0, sd: 2f64.sqrt() });
    }

    #[test]
    fn civil_dates_across_leap_years_and_the_epoch() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_088, (2024, 12, 31)),
            (20_785, (2026, 11, 28)),
            (47_541, (2100, 3, 1)),
        ] {
            assert_eq!(civil_from_days(days), date, "{days}");
        }
        assert_eq!(utc_date(UNIX_EPOCH + std::time::Duration::from_secs(20_785 * 86_400 + 86_399)), "2026-11-28");
        assert_eq!(utc_date(UNIX_EPOCH - std::time::Duration::from_secs(1)), "1969-12-31");
    }

    #[test]
    fn the_section_replaces_only_the_text_between_the_markers() {
        let doc = format!("# B\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n");
        let new = replace_section(&doc, "## T\n\nnew\n").unwrap();
        assert_eq!(new, format!("# B\n\nbefore\n\n{BEGIN}\n## T\n\nnew\n{END}\n\nafter\n"));
        // Idempotent, and appended with a blank line when absent.
        assert_eq!(replace_section(&new, "## T\n\nnew\n").unwrap(), new);
        assert_eq!(replace_section("# B\ntext\n", "S").unwrap(), format!("# B\ntext\n\n{BEGIN}\nS\n{END}\n"));
        assert_eq!(replace_section("", "S\n").unwrap(), format!("{BEGIN}\nS\n{END}\n"));
        for bad in [format!("{END}\n{BEGIN}\n"), format!("{BEGIN}\n"), format!("{BEGIN}{END}{BEGIN}{END}")] {
            assert!(replace_section(&bad, "S").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_report_compared_with_itself_has_no_regression() {
        let r = report(vec![agg("fixed", 3, 0.9, 0.02, 1000.0), agg("rl", 1, 0.5, 0.0, 10.0)]);
        assert_eq!(compare(&r, &r), Vec::new());
    }

    #[test]
    fn drops_beyond_the_noise_or_the_floor_are_flagged() {
        let prev = report(vec![
            agg("fixed", 3, 0.90, 0.03, 1000.0),
            agg("rl", 3, 0.90, 0.0, 1000.0),
            agg("pbt", 3, 0.9, 0.0, 1.0),
        ]);
        // fixed: noise 2·√(2·0.03²/3) ≈ 0.049 hides a 0.04 drop; rl: sd 0, floor 0.005 flags a
        // 0.006 drop of each F1/reward metric and 2% flags 1000 -> 979 samples/s.
        let now = report(vec![
            agg("fixed", 3, 0.86, 0.03, 990.0),
            agg("rl", 3, 0.894, 0.0, 979.0),
            agg("asha", 3, 0.0, 0.0, 0.0),
        ]);
        let flags = compare(&prev, &now);
        let names: Vec<String> = flags.iter().map(|f| format!("{} {}", f.strategy, f.metric)).collect();
        assert_eq!(
            names,
            ["rl best val macro-F1", "rl test macro-F1", "rl samples/s", "rl reward", "rl completed-trial reward"]
        );
        assert!((flags[0].allowed_drop - 0.005).abs() < 1e-12);
        assert!((flags[2].allowed_drop - 20.0).abs() < 1e-9);
        assert!(flags[1].to_string().starts_with("rl test macro-F1: 0.9000 -> 0.8940"), "{}", flags[1]);
        // Just within the floor: not flagged.
        let now = report(vec![agg("rl", 3, 0.896, 0.0, 981.0)]);
        assert_eq!(compare(&prev, &now), Vec::new());
        // A file written before the completed-trial reward was measured: that column is not
        // compared, the others are.
        let mut old = prev.clone();
        old.aggregates.iter_mut().for_each(|a| a.completed_reward = None);
        let now = report(vec![agg("rl", 3, 0.5, 0.0, 1000.0)]);
        let names: Vec<String> = compare(&old, &now).iter().map(|f| f.metric.clone()).collect();
        assert_eq!(names, ["best val macro-F1", "test macro-F1", "reward"]);
    }

    #[test]
    fn the_section_states_the_comparison_and_its_flags() {
        let mut prev = report(vec![agg("fixed", 2, 0.9, 0.0, 100.0), agg("pbt", 2, 0.9, 0.0, 100.0)]);
        prev.machine.cores = 4;
        let mut now = report(vec![agg("fixed", 2, 0.5, 0.0, 100.0)]);
        now.compared_with = Some("prev.json".into());
        now.regressions = compare(&prev, &now);
        let s = section(&now, Some(&prev), Path::new("now.json"));
        assert!(
            s.starts_with("## Tuning strategies (bench-tune)\n\n`cargo xtask bench-tune`, 2026-11-28, 2 cores. digits")
        );
        assert!(s.contains("Compared with `prev.json` (2026-11-28): a metric is flagged when"), "{s}");
        assert!(s.contains("It was measured on 4 cores"), "{s}");
        assert!(s.contains("Regressed:\n\n- fixed best val macro-F1: 0.9000 -> 0.5000"), "{s}");
        assert!(s.contains("Not compared (in one file only): pbt."), "{s}");
        assert!(!section(&now, None, Path::new("now.json")).contains("Compared with"));
    }

    #[test]
    fn the_table_has_mean_and_sd_cells_sorted_by_reward() {
        let mut fixed = agg("fixed", 2, 0.5, 0.25, 1234.4);
        fixed.reward = Stat { mean: -0.01, sd: 0.0 };
        fixed.completed_reward = None;
        let r = report(vec![fixed, agg("rl", 2, 0.91234, 0.01, 99.6)]);
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| strategy | best val macro-F1 | test macro-F1 | samples/s | reward | completed-trial reward | trials |"
        );
        assert_eq!(
            lines[2],
            "| rl | 0.9123 ± 0.0100 | 0.9123 ± 0.0100 | 100 ± 0 | 0.9123 ± 0.0100 | 0.9123 ± 0.0100 | 10.0 ± 0.0 |"
        );
        assert!(
            lines[3].starts_with("| fixed | 0.5000 ± 0.2500 | 0.5000 ± 0.2500 | 1234 ± 0 | -0.0100 ± 0.0000 | – |")
        );
    }
}
