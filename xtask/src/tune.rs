//! `cargo xtask tune`: a tuning study — trials of one training run under a strategy and a
//! wall-clock budget, the best model tested once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tuneforge_agent::data::DataSource;
use tuneforge_agent::env::{Bounds, EnvConfig};
use tuneforge_agent::tune::{Strategy, TuneConfig, tune};
use tuneforge_loader::{DataDirs, GzCache};

use crate::DataArgs;

/// Tune a network while it trains and report the best model's test metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// digits, fashion-mnist, biopsy, or csv:PATH (with --label).
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Label column of a csv: dataset.
    #[arg(long)]
    pub label: Option<String>,
    /// Starting architecture: mlp:W1,W2,... or seed-cnn (default: seed-cnn for
    /// fashion-mnist, mlp:64 for tables).
    #[arg(long)]
    pub model: Option<String>,
    /// fixed (defaults, no actions), random (random start, no actions), rl (REINFORCE acting
    /// mid-run, learning across trials) or rl-no-width (rl without the width action).
    #[arg(long, default_value = "rl")]
    pub strategy: String,
    /// Wall-clock budget, e.g. 90s or 10m; no trial starts after it (default 60s).
    #[arg(long, default_value = "60s")]
    pub budget: String,
    /// Weight of the throughput term of the reward: Δ val macro-F1 + λ·ln(samples/s ÷ ref).
    #[arg(long, default_value_t = 0.02)]
    pub lambda: f64,
    /// Optimiser steps between decisions (default: 30 for tables, 100 for images).
    #[arg(long)]
    pub decision_steps: Option<usize>,
    /// Optimiser steps per trial (default: 300 for tables, 1500 for images).
    #[arg(long)]
    pub trial_steps: Option<u64>,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory.
    #[arg(long, default_value = "runs/tune")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Parses `90s`, `10m`, `1h` or a plain number of seconds.
pub fn parse_budget(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = t.find(|c: char| c.is_ascii_alphabetic()).map_or((t, "s"), |i| (&t[..i], &t[i..]));
    let n: f64 = num.trim().parse().with_context(|| format!("--budget {text}: expected e.g. 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("--budget {text}: unit must be s, m or h"),
    };
    if !secs.is_finite() || secs <= 0.0 {
        bail!("--budget {text}: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The study `args` describe, with the per-dataset defaults filled in.
pub fn config(args: &TuneArgs) -> anyhow::Result<TuneConfig> {
    let data = DataSource::parse(&args.dataset, args.label.as_deref())?;
    let images = matches!(&data, DataSource::Known(n) if n.starts_with("fashion-mnist"));
    let strategy: Strategy = args.strategy.parse()?;
    let config = TuneConfig {
        data,
        model: args.model.clone().unwrap_or_else(|| if images { "seed-cnn" } else { "mlp:64" }.into()),
        strategy,
        budget: parse_budget(&args.budget)?,
        seed: args.seed,
        batch_size: if images { 128 } else { 32 },
        lr: if images { 1e-3 } else { 3e-3 },
        env: EnvConfig {
            decision_steps: args.decision_steps.unwrap_or(if images { 100 } else { 30 }),
            lambda: args.lambda,
            bounds: Bounds::default(),
            budget_steps: args.trial_steps.unwrap_or(if images { 1500 } else { 300 }),
        },
    };
    Ok(config)
}

pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let device = crate::train::parse_device(&args.device)?;
    let dirs = DataDirs::resolve(args.data.data_dir.as_deref());
    let cache = args.data.cache_dir.clone().map(GzCache::new).unwrap_or_else(GzCache::default_location);
    eprintln!(
        "tuning {} ({}) with {:?} for {:?}; writing to {}",
        config.data,
        config.model,
        config.strategy,
        config.budget,
        args.out.display()
    );
    let summary = tune(&config, &dirs, &cache, &device, &args.out, &mut |t| {
        eprintln!(
            "trial {:>3}: val macro-F1 {:.4}, {:>8.0} samples/s, {} decisions, reward {:+.3}, lr {:.2e}, batch {}, widths {:?}",
            t.id,
            t.val_macro_f1,
            t.samples_per_s,
            t.decisions,
            t.reward,
            t.final_hparams.lr,
            t.final_hparams.batch_size,
            t.final_hparams.widths
        );
    })?;
    println!(
        "\n{:>5} {:>10} {:>12} {:>10} {:>9} {:>9} {:>6}  widths",
        "trial", "status", "val F1", "samples/s", "reward", "lr", "batch"
    );
    let mut order: Vec<_> = summary.trials.iter().collect();
    order.sort_by(|a, b| b.val_macro_f1.total_cmp(&a.val_macro_f1));
    for t in order.iter().take(10) {
        let status = if t.status == "completed" { "completed" } else { "failed" };
        println!(
            "{:>5} {:>10} {:>12.4} {:>10.0} {:>+9.3} {:>9.2e} {:>6}  {:?}",
            t.id,
            status,
            t.val_macro_f1,
            t.samples_per_s,
            t.reward,
            t.final_hparams.lr,
            t.final_hparams.batch_size,
            t.final_hparams.widths
        );
    }
    println!(
        "\nbest: trial {} — val macro-F1 {:.4}, test macro-F1 {:.4}, test accuracy {:.4}; {} trials in {:.1} s; wrote {}",
        summary.best.trial,
        summary.best.val_macro_f1,
        summary.best.test_macro_f1,
        summary.best.test_accuracy,
        summary.trials.len(),
        summary.wall_s,
        args.out.join("summary.json").display()
    );
    Ok(())
}
