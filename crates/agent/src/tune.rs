//! A tuning study in one process: trials of the same [`Env`] under one strategy and one
//! wall-clock budget, the best model kept and tested once.
//!
//! Strategies here: `fixed` (the defaults, no actions), `random` (random initial learning
//! rate, batch size and widths, no actions), `rl` (REINFORCE acting every decision interval,
//! learning across the study's trials) and `rl-no-width` (the same without the width
//! action). Not yet here (issue 6): ASHA, PBT, the SQLite study store and `--resume`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tuneforge_loader::{DataDirs, GzCache};
use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};

use crate::data::DataSource;
use crate::env::{Action, Env, EnvConfig, Move};
use crate::policy::{Policy, Reinforce};
use crate::run::{Run, RunConfig, write_atomic, write_predictions};
use crate::{Error, Result};

/// How a study chooses what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Defaults, no actions.
    Fixed,
    /// Random initial configuration, no actions.
    Random,
    /// REINFORCE acting during each trial.
    Rl,
    /// REINFORCE without the width action.
    RlNoWidth,
}

impl std::str::FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed" => Ok(Strategy::Fixed),
            "random" => Ok(Strategy::Random),
            "rl" => Ok(Strategy::Rl),
            "rl-no-width" => Ok(Strategy::RlNoWidth),
            other => Err(Error::Config {
                what: "strategy",
                why: format!(
                    "{other:?}: expected fixed, random, rl or rl-no-width (asha and pbt are not implemented yet)"
                ),
            }),
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
    /// Wall-clock budget: no trial starts after it is spent.
    pub budget: Duration,
    /// Seed of everything.
    pub seed: u64,
    /// Starting batch size and learning rate.
    pub batch_size: usize,
    /// Starting learning rate.
    pub lr: f64,
    /// The environment (decision interval, λ, bounds, steps per trial).
    pub env: EnvConfig,
}

/// One trial's record.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRecord {
    /// 0-based trial number.
    pub id: usize,
    /// `completed` or `failed: …`.
    pub status: String,
    /// Final validation macro-F1.
    pub val_macro_f1: f64,
    /// Mean training samples/s.
    pub samples_per_s: f64,
    /// Decisions taken (non-`keep` actions applied).
    pub decisions: usize,
    /// Sum of rewards.
    pub reward: f64,
    /// Always `false` here (no resume yet).
    pub resumed: bool,
    /// Learning rate, batch size and hidden widths at the end of the trial.
    pub final_hparams: Hparams,
}

/// A configuration at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Hparams {
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Hidden widths.
    pub widths: Vec<usize>,
}

/// The best trial, tested once.
#[derive(Debug, Clone, Serialize)]
pub struct Best {
    /// Trial id.
    pub trial: usize,
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
#[derive(Debug, Clone, Serialize)]
pub struct TuneSummary {
    /// Dataset.
    pub dataset: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Budget in seconds.
    pub budget_s: f64,
    /// Seed.
    pub seed: u64,
    /// Wall time used.
    pub wall_s: f64,
    /// Every trial.
    pub trials: Vec<TrialRecord>,
    /// The best trial.
    pub best: Best,
}

/// Runs a study and writes `summary.json`, `model.safetensors` (+ spec), `predictions.csv`
/// and, for `rl`, `policy.json` to `out`. `on_trial` sees each finished trial.
pub fn tune(
    config: &TuneConfig,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    on_trial: &mut dyn FnMut(&TrialRecord),
) -> Result<TuneSummary> {
    let start = Instant::now();
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut policy = Reinforce::new(0.05);
    let mut trials = Vec::new();
    let mut best: Option<(f64, usize, Run)> = None;
    while trials.is_empty() || start.elapsed() < config.budget {
        let id = trials.len();
        let (mut lr, mut batch, mut model) = (config.lr, config.batch_size, config.model.clone());
        if config.strategy == Strategy::Random {
            lr = 10f64.powf(rng.random_range(-4.0..-2.0));
            batch = [16, 32, 64, 128][rng.random_range(0..4)];
            if let Some(widths) = model.strip_prefix("mlp:") {
                let f = [0.5, 1.0, 2.0][rng.random_range(0..3)];
                let scaled: Vec<String> = widths
                    .split(',')
                    .filter_map(|w| w.trim().parse::<f64>().ok())
                    .map(|w| ((w * f).round().max(8.0) as usize).to_string())
                    .collect();
                model = format!("mlp:{}", scaled.join(","));
            }
        }
        let run_config = RunConfig {
            data: config.data.clone(),
            model,
            epochs: 1,
            batch_size: batch,
            optimizer: OptimizerConfig::Adam(AdamConfig { lr, ..Default::default() }),
            schedule: ScheduleConfig::Constant,
            seed: config.seed.wrapping_add(id as u64),
            clip_norm: None,
            val_fraction: 0.2,
            snapshot_every: 100,
            inject_nan_at: None,
        };
        let run = Run::new(run_config, dirs, cache, device)?;
        let mut env = Env::new(run, config.env.clone())?;
        let mut episode = Vec::new();
        let (mut reward, mut decisions, mut sps_sum, mut intervals) = (0.0, 0, 0.0, 0);
        let mut status = "completed".to_string();
        while !env.done() {
            let obs = env.observe().clone();
            let mut action = match config.strategy {
                Strategy::Fixed | Strategy::Random => Action::KEEP,
                Strategy::Rl | Strategy::RlNoWidth => policy.act(&obs, &mut rng),
            };
            if config.strategy == Strategy::RlNoWidth {
                action.width = Move::Keep;
            }
            match env.step(action) {
                Ok(t) => {
                    reward += t.reward;
                    sps_sum += t.samples_per_s;
                    intervals += 1;
                    if t.applied != Action::KEEP {
                        decisions += 1;
                    }
                    episode.push((obs, action, t.reward));
                }
                Err(e) => {
                    status = format!("failed: {e}");
                    break;
                }
            }
        }
        if matches!(config.strategy, Strategy::Rl | Strategy::RlNoWidth) {
            policy.update(&episode);
        }
        let val_f1 = env.observe().val_f1;
        let run = env.into_run();
        let record = TrialRecord {
            id,
            status,
            val_macro_f1: val_f1,
            samples_per_s: if intervals > 0 { sps_sum / intervals as f64 } else { 0.0 },
            decisions,
            reward,
            resumed: false,
            final_hparams: Hparams {
                lr: run.learning_rate(),
                batch_size: run.batch_size(),
                widths: run.model().spec().hidden_widths(),
            },
        };
        on_trial(&record);
        if record.status == "completed" && best.as_ref().is_none_or(|(f, _, _)| val_f1 > *f) {
            best = Some((val_f1, id, run));
        }
        trials.push(record);
    }
    let (val_f1, trial, run) = best.ok_or_else(|| Error::Config { what: "study", why: "every trial failed".into() })?;
    let test = run.evaluate(&*run.data().test)?;
    let model_path = out.join("model.safetensors");
    run.model().save(&model_path)?;
    run.write_pipeline(&out.join("prep.json"))?;
    let predictions_path = out.join("predictions.csv");
    write_predictions(&predictions_path, &test)?;
    if matches!(config.strategy, Strategy::Rl | Strategy::RlNoWidth) {
        let json = serde_json::to_string_pretty(&policy).expect("policy serialises");
        write_atomic(&out.join("policy.json"), json.as_bytes())?;
    }
    let summary = TuneSummary {
        dataset: config.data.to_string(),
        strategy: config.strategy,
        budget_s: config.budget.as_secs_f64(),
        seed: config.seed,
        wall_s: start.elapsed().as_secs_f64(),
        trials,
        best: Best {
            trial,
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
