//! `cargo xtask train`: one training run without tuning — the baseline a user compares
//! the tuner against.

use std::path::PathBuf;

use anyhow::{Context, bail};
use candle_core::Device;
use tuneforge_agent::data::DataSource;
use tuneforge_agent::run::{RunConfig, RunEvent, train};
use tuneforge_monitor::{MonitorConfig, ProgressMode};
use tuneforge_optim::{AdamConfig, AdamWConfig, OptimizerConfig, ScheduleConfig, SgdConfig};

use crate::{DataArgs, TextArgs};

/// Train one model on one dataset and report test accuracy and macro-F1.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// fashion-mnist, digits, biopsy, csv:PATH (with --label), or a text dataset:
    /// jsonl:PATH, csv:PATH --text COLUMN.
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Label column of a csv: dataset (jsonl: the label field, default "label").
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
    /// seed-cnn, or mlp:W1,W2,... (hidden widths); for text text-bag:D,H... or
    /// text-cnn:D,C,H... (embedding dimension, channels, hidden widths).
    #[arg(long, default_value = "mlp:256")]
    pub model: String,
    /// Passes over the training rows.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Rows per optimiser step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// adam, adamw or sgd.
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// constant, cosine[:WARMUP_STEPS], step:STEPS:GAMMA, exp:GAMMA or article:BETA
    /// (α(t+1) = α(t)/(1+β^t)); stepped once per optimiser step.
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Fraction of the training rows held out for validation (reported per epoch).
    #[arg(long, default_value_t = 0.0)]
    pub val_fraction: f64,
    /// Seed of the split, initial weights, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory (summary.json, predictions.csv, model, optimiser state, and
    /// events.jsonl: the monitor's event log, replaced by each run).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Keep an in-memory snapshot (weights + optimiser state) every this many steps; on a
    /// NaN or exploding gradient the run rolls back to the last one with half the learning
    /// rate (0: only the snapshot taken before the first step).
    #[arg(long, default_value_t = 100)]
    pub snapshot_every: u64,
    /// Fault injection, for tests of recovery: make the loss (and so the gradients) of
    /// global step STEP (0-based) NaN. The run logs the anomaly and the rollback in
    /// events.jsonl and goes on.
    #[arg(long, value_name = "STEP")]
    pub inject_nan_at: Option<u64>,
    /// Early stopping: end once N epochs in a row have not beaten the best validation
    /// macro-F1, and test and write the best epoch's model (needs --val-fraction > 0).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub patience: Option<u64>,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn parse_schedule(text: &str) -> anyhow::Result<ScheduleConfig> {
    let parts: Vec<&str> = text.split(':').collect();
    let num = |s: &str| s.parse::<f64>().with_context(|| format!("--schedule {text}: {s:?} is not a number"));
    Ok(match parts[..] {
        ["constant"] => ScheduleConfig::Constant,
        ["cosine"] => ScheduleConfig::Cosine { total_steps: 0, warmup_steps: 0, min_lr: 0.0 },
        ["cosine", w] => ScheduleConfig::Cosine { total_steps: 0, warmup_steps: num(w)? as u64, min_lr: 0.0 },
        ["step", n, g] => ScheduleConfig::Step { step_size: num(n)? as u64, gamma: num(g)? },
        ["exp", g] => ScheduleConfig::Exponential { gamma: num(g)? },
        ["article", b] => ScheduleConfig::ArticleDecay { beta: num(b)? },
        _ => {
            bail!("--schedule {text}: expected constant, cosine[:WARMUP], step:STEPS:GAMMA, exp:GAMMA or article:BETA")
        }
    })
}

pub fn parse_optimizer(kind: &str, lr: f64, momentum: f64, weight_decay: f64) -> anyhow::Result<OptimizerConfig> {
    Ok(match kind {
        "adam" => OptimizerConfig::Adam(AdamConfig { lr, weight_decay, ..Default::default() }),
        "adamw" => OptimizerConfig::AdamW(AdamWConfig { lr, weight_decay, ..Default::default() }),
        "sgd" => OptimizerConfig::Sgd(SgdConfig { lr, momentum, weight_decay, ..Default::default() }),
        other => bail!("--optimizer {other}: expected adam, adamw or sgd"),
    })
}

pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        t if t == "cuda" || t.starts_with("cuda:") => {
            let n = t.strip_prefix("cuda").and_then(|r| r.strip_prefix(':')).unwrap_or("0");
            let n: usize = n.parse().with_context(|| format!("--device {t}: bad ordinal"))?;
            if !cfg!(feature = "cuda") {
                bail!(
                    "--device {t}: this binary was built without CUDA; build it with `--features cuda` \
                     (../shared/CUDA.md, or `cargo xtask gpu-bundle`)"
                );
            }
            // candle attaches a backtrace to driver errors; the driver's words are enough.
            let without_backtrace = |e: candle_core::Error| match e {
                candle_core::Error::WithBacktrace { inner, .. } => *inner,
                e => e,
            };
            Device::new_cuda(n).map_err(without_backtrace).with_context(|| {
                format!(
                    "--device {t}: cannot open GPU {n} (is there an NVIDIA driver and a GPU with that \
                     ordinal? `nvidia-smi` lists them)"
                )
            })
        }
        other => bail!("--device {other}: expected cpu or cuda[:N]"),
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    if let (Some(p), 0.0) = (args.patience, args.val_fraction) {
        bail!("--patience {p} compares validation F1 between epochs: add a validation split, e.g. --val-fraction 0.1");
    }
    let config = RunConfig {
        data: args.text.apply(DataSource::parse(&args.dataset, args.label.as_deref())?)?,
        model: args.model.clone(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: parse_optimizer(&args.optimizer, args.lr, args.momentum, args.weight_decay)?,
        schedule: parse_schedule(&args.schedule)?,
        seed: args.seed,
        clip_norm: args.clip_norm,
        val_fraction: args.val_fraction,
        snapshot_every: args.snapshot_every,
        inject_nan_at: args.inject_nan_at,
        patience: args.patience.map(|p| usize::try_from(p).unwrap_or(usize::MAX)),
    };
    let device = parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    // The monitor draws the progress: a bar on a terminal, plain lines under CI or when stderr
    // is not a terminal; anomalies, rollbacks, epochs and evaluations are printed as they come.
    let monitor = MonitorConfig {
        run: args.out.file_name().map_or_else(|| "train".into(), |n| n.to_string_lossy().into_owned()),
        progress: ProgressMode::Auto,
        ..MonitorConfig::default()
    };
    crate::tune::on_interrupt(
        "training stops at the end of this epoch, then the model is tested and the outputs written".into(),
        "nothing of this run is written".into(),
    );
    let summary = train(config, monitor, &dirs, &cache, &device, &args.out, &mut |ev| {
        if let RunEvent::Started { train_rows, steps_per_epoch, parameters } = ev {
            errln!("training on {train_rows} rows, {steps_per_epoch} steps/epoch, {parameters} parameters");
        }
    })?;
    // Per-epoch figures once the progress view is done (printing during a bar would tear it).
    for e in &summary.history {
        let val = e
            .val
            .as_ref()
            .map(|v| format!(", val acc {:.4}, val macro-F1 {:.4}", v.report.accuracy, v.report.macro_avg.f1))
            .unwrap_or_default();
        errln!(
            "epoch {}/{}: train loss {:.4}, {:.0} samples/s{val}",
            e.epoch + 1,
            args.epochs,
            e.train_loss,
            e.samples_per_s
        );
    }
    if let Some(best) = summary.best_epoch {
        let f1 = summary.history[best].val.as_ref().map_or(f64::NAN, |v| v.report.macro_avg.f1);
        let why = if summary.epochs < args.epochs && !tuneforge_agent::tune::stop_requested() {
            format!("stopped early: no better validation macro-F1 in the last {} epochs; ", summary.epochs - best - 1)
        } else {
            String::new()
        };
        errln!("{why}the model tested and written is epoch {}'s (val macro-F1 {f1:.4})", best + 1);
    }
    outln!(
        "test accuracy {:.4}, test macro-F1 {:.4}, {:.0} samples/s, {:.1} s, {} anomalies, {} rollbacks; wrote {}",
        summary.test_accuracy,
        summary.test_macro_f1,
        summary.samples_per_s,
        summary.wall_seconds,
        summary.anomalies,
        summary.rollbacks,
        args.out.join("summary.json").display()
    );
    if tuneforge_agent::tune::stop_requested() {
        errln!(
            "interrupted after {} of {} epochs: the outputs are those of the model then",
            summary.epochs,
            args.epochs
        );
        std::process::exit(130);
    }
    Ok(())
}
