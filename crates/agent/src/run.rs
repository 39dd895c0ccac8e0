//! One training run: data → prep → model → optimiser → eval, with no decisions in it.
//!
//! `cargo xtask train` executes a [`Run`] as configured; the agent (later) wraps the same
//! run and changes its learning rate, batch size and hidden widths between steps through
//! [`Run::scale_learning_rate`], [`Run::set_batch_size`] and [`Run::resize_hidden`]. One
//! loop, used by both.
//!
//! # Monitoring and recovery
//!
//! A run built by [`Run::new`] has no monitor: a non-finite loss (or gradient norm) stops it
//! with [`Error::Diverged`]. [`Run::with_monitor`] attaches a [`tuneforge_monitor::Monitor`]
//! (what [`train`] always does, logging to `events.jsonl`): every optimiser step is reported
//! to it with [`StepFacts`], and when its recovery policy answers [`Recovery::RollBack`] the
//! run restores its last in-memory snapshot (the model's weights and running statistics and
//! the optimiser's moments), multiplies the learning rate by the policy's factor (0.5 by
//! default) and goes on; the monitor logs the anomaly and the rollback. A snapshot is a copy
//! of the variables and the optimiser state, taken when the monitor is attached and then
//! every [`RunConfig::snapshot_every`] steps. Step numbers keep increasing across a rollback
//! (they count work done), and the data order is not rewound.
//!
//! A step whose loss or gradient norm is not finite is never applied: the optimiser update
//! is skipped, so neither the weights nor the optimiser's moments ever hold NaN.
//!
//! [`RunConfig::inject_nan_at`] is a fault-injection option for tests: it poisons one step's
//! loss with NaN (loss × NaN before the backward pass, so the gradients are NaN too — a NaN
//! put in the weights would not do: ReLU turns NaN into 0 and the loss can stay finite).

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tuneforge_eval::{ClassificationReport, ConfusionMatrix};
use tuneforge_loader::{Batch, DataDirs, Dataset, GzCache, Loader, LoaderConfig, Scale};
use tuneforge_model::{Model, ModelSpec, WidenOptions, argmax};
use tuneforge_monitor::{Monitor, MonitorConfig, Outcome, Recovery, Rollback, RunSummary, StepFacts, Telemetry};
use tuneforge_optim::{
    Optimizer, OptimizerConfig, OptimizerState, Schedule, ScheduleConfig, clip_grad_norm, grad_norm,
};

use crate::data::{DataSource, Prepared, prepare};
use crate::{Error, Result};

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The data.
    pub data: DataSource,
    /// A model preset: `seed-cnn` or `mlp:W1,W2,...`.
    pub model: String,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per optimiser step.
    pub batch_size: usize,
    /// Optimiser and its hyper-parameters (the learning rate is the schedule's base).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule, stepped once per optimiser step. A cosine schedule with
    /// `total_steps: 0` spans the whole run (`epochs × ⌈train rows / batch size⌉`).
    pub schedule: ScheduleConfig,
    /// Seed of the split, initial weights, shuffling and dropout.
    pub seed: u64,
    /// Clip gradients to this global L2 norm.
    pub clip_norm: Option<f64>,
    /// Fraction of the training rows held out for validation (0 = none).
    pub val_fraction: f64,
    /// With a monitor attached ([`Run::with_monitor`]), take an in-memory snapshot for
    /// rollback after every this many steps (0: only the one taken when the monitor is
    /// attached). Default 100: for a 784-256-10 MLP a snapshot copies about 2.4 MB
    /// (weights and two Adam moments), well under 1% of 100 training steps.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Fault injection, meant for tests of recovery: make the loss of this global step
    /// (0-based) NaN, by multiplying it by NaN before the backward pass, so that its
    /// gradients are NaN too. With a monitor the run rolls back and goes on; without one it
    /// stops with [`Error::Diverged`]. `None` (the default) in any real run.
    #[serde(default)]
    pub inject_nan_at: Option<u64>,
    /// Early stopping ([`train`]): end the run once this many epochs in a row have not
    /// beaten the best validation macro-F1 so far, and test and write the model (and
    /// optimiser state) of the best epoch, not the last. Needs a validation split
    /// (`val_fraction` > 0); at least 1. `None`: every epoch, the last one written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
}

fn default_snapshot_every() -> u64 {
    100
}

/// Something worth showing while a run trains.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RunEvent<'a> {
    /// Training is about to start.
    Started {
        /// Training rows.
        train_rows: usize,
        /// Optimiser steps per epoch at the current batch size.
        steps_per_epoch: usize,
        /// Trainable parameters.
        parameters: usize,
    },
    /// An optimiser step finished.
    Step {
        /// Epoch (0-based).
        epoch: usize,
        /// The step's result.
        stats: &'a StepStats,
    },
    /// An epoch finished.
    Epoch {
        /// The epoch's result.
        stats: &'a EpochStats,
    },
}

/// One optimiser step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepStats {
    /// Global step index (0-based).
    pub step: u64,
    /// Mean cross-entropy of the batch.
    pub loss: f32,
    /// Rows in the batch.
    pub batch_size: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient L2 norm before clipping (computed only when clipping).
    pub grad_norm: Option<f64>,
    /// Wall time of the step (batch assembly, forward, backward, update).
    pub seconds: f64,
    /// `true` if this batch ended its epoch.
    pub end_of_epoch: bool,
    /// `Some(s)` if the step diverged and the run rolled back to its snapshot taken after
    /// step `s` (see [`Run::with_monitor`]); the step's loss is then not a training loss.
    pub rolled_back_to: Option<u64>,
    /// Anomalies the monitor found in this step (0 without a monitor).
    pub anomalies: u32,
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's steps (weighted by rows; steps that were rolled
    /// back are left out).
    pub train_loss: f64,
    /// Training rows per second of training time.
    pub samples_per_s: f64,
    /// Validation metrics, if the run has a validation split.
    pub val: Option<Evaluation>,
}

/// Metrics of the model on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Accuracy, per-class and averaged precision/recall/F1.
    pub report: ClassificationReport,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Predicted class per row.
    #[serde(skip)]
    pub predictions: Vec<u32>,
    /// True class per row.
    #[serde(skip)]
    pub labels: Vec<u32>,
}

/// What `train` writes to `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Macro-averaged F1 on the test split.
    pub test_macro_f1: f64,
    /// Mean cross-entropy on the test split.
    pub test_loss: f64,
    /// Epochs trained (fewer than [`RunConfig::epochs`] when the run was stopped by
    /// [`tune::request_stop`](crate::tune::request_stop), i.e. Ctrl-C in `cargo xtask train`,
    /// or by the handle given to [`train_until`], or by early stopping).
    pub epochs: usize,
    /// With [`RunConfig::patience`]: the epoch (0-based) whose model was tested and written,
    /// the one with the best validation macro-F1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// Training rows per second of training time (all epochs).
    pub samples_per_s: f64,
    /// Wall time of the whole run, data preparation included.
    pub wall_seconds: f64,
    /// Trainable parameters of the final model.
    pub parameters: usize,
    /// The final model's spec.
    pub model: ModelSpec,
    /// The run's configuration.
    pub config: RunConfig,
    /// Per-epoch figures.
    pub history: Vec<EpochStats>,
    /// Per-class metrics on the test split.
    pub test_report: ClassificationReport,
    /// Anomalies the monitor flagged (see `events.jsonl`).
    pub anomalies: u64,
    /// Rollbacks to an in-memory snapshot.
    pub rollbacks: u64,
    /// Wall time spent taking in-memory snapshots (included in training time).
    pub snapshot_seconds: f64,
}

/// A training run in progress.
pub struct Run {
    config: RunConfig,
    data: Prepared,
    device: Device,
    model: Model,
    optimizer: Box<dyn Optimizer>,
    schedule: Schedule,
    loader: Loader,
    batch: Batch,
    batch_size: usize,
    epoch: usize,
    train_seconds: f64,
    train_samples: u64,
    widths: Vec<u32>,
    monitor: Option<Monitor>,
    snapshot: Option<Snapshot>,
    snapshot_seconds: f64,
    /// The GPU's name, memory and step timer, on a CUDA device.
    #[cfg(feature = "cuda")]
    gpu: Option<tuneforge_monitor::GpuProbe>,
}

/// The state a rollback restores: a deep copy of the model (weights, running statistics,
/// spec) and of the optimiser's state, taken after step `step`.
struct Snapshot {
    step: u64,
    model: Model,
    optimizer: OptimizerState,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("config", &self.config)
            .field("epoch", &self.epoch)
            .field("monitor", &self.monitor.is_some())
            .finish()
    }
}

impl Run {
    /// Prepares the data and builds the model and optimiser.
    pub fn new(config: RunConfig, dirs: &DataDirs, cache: &GzCache, device: &Device) -> Result<Run> {
        Self::check_config(&config)?;
        let data = prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?;
        Self::with_data(config, data, device)
    }

    fn check_config(config: &RunConfig) -> Result<()> {
        if config.batch_size == 0 {
            return Err(Error::Config { what: "batch size", why: "it must be at least 1".into() });
        }
        if !(0.0..0.9).contains(&config.val_fraction) {
            return Err(Error::Config {
                what: "validation fraction",
                why: format!("{} is outside [0, 0.9)", config.val_fraction),
            });
        }
        config.optimizer.validate()?;
        match config.patience {
            Some(0) => {
                return Err(Error::Config { what: "patience", why: "0 epochs: it must be at least 1".into() });
            }
            Some(p) if config.val_fraction == 0.0 => {
                return Err(Error::Config {
                    what: "patience",
                    why: format!(
                        "{p} epochs without a better validation F1 needs a validation split (val_fraction > 0)"
                    ),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Builds the model and optimiser over data already prepared (e.g. once for all the
    /// trials of a study, so that they share one validation split); `config.data` and
    /// `config.val_fraction` are then only descriptive, `config.seed` seeds the weights
    /// and the shuffling.
    pub fn with_data(config: RunConfig, data: Prepared, device: &Device) -> Result<Run> {
        Self::check_config(&config)?;
        let spec = model_spec(&config.model, &data)?;
        let model = spec.init_seeded(device, config.seed)?;
        let optimizer = config.optimizer.build(model.vars())?;
        // A cosine schedule with `total_steps: 0` spans the whole run.
        let schedule_config = match config.schedule {
            ScheduleConfig::Cosine { total_steps: 0, warmup_steps, min_lr } => ScheduleConfig::Cosine {
                total_steps: (config.epochs * data.train.len().div_ceil(config.batch_size)) as u64,
                warmup_steps,
                min_lr,
            },
            ref other => other.clone(),
        };
        let schedule = Schedule::new(schedule_config, config.optimizer.lr())?;
        let loader_cfg = LoaderConfig { seed: config.seed, scale: data.scale, ..LoaderConfig::default() };
        let loader = Loader::new(data.train.clone(), loader_cfg)?;
        let widths = hidden_widths(&model);
        Ok(Run {
            batch_size: config.batch_size,
            config,
            data,
            device: device.clone(),
            model,
            optimizer,
            schedule,
            loader,
            batch: Batch::default(),
            epoch: 0,
            train_seconds: 0.0,
            train_samples: 0,
            widths,
            monitor: None,
            snapshot: None,
            snapshot_seconds: 0.0,
            #[cfg(feature = "cuda")]
            gpu: tuneforge_monitor::GpuProbe::for_device(device)?,
        })
    }

    /// Attaches `monitor`: from now on every step is reported to it, a snapshot is kept every
    /// [`RunConfig::snapshot_every`] steps, and its rollbacks are carried out (see the
    /// [module docs](self)). Takes the first snapshot now (reported as
    /// `snapshot_taken(last step)`, `0` before any step). End with [`Run::finish_monitor`].
    pub fn with_monitor(mut self, monitor: Monitor) -> Result<Run> {
        self.monitor = Some(monitor);
        self.take_snapshot(self.schedule.step().saturating_sub(1))?;
        Ok(self)
    }

    /// The attached monitor, e.g. to record agent decisions.
    pub fn monitor_mut(&mut self) -> Option<&mut Monitor> {
        self.monitor.as_mut()
    }

    /// Detaches the monitor and ends its log with `outcome` (`run_end`, fsync). `None` when
    /// no monitor is attached (or it was already finished by a failed recovery).
    pub fn finish_monitor(&mut self, outcome: Outcome) -> Result<Option<RunSummary>> {
        self.snapshot = None;
        match self.monitor.take() {
            Some(m) => Ok(Some(m.finish(outcome)?)),
            None => Ok(None),
        }
    }

    /// The global step the next [`Run::train_step`] takes (0-based; it keeps counting
    /// across rollbacks).
    pub fn step(&self) -> u64 {
        self.schedule.step()
    }

    /// Wall time spent taking snapshots so far.
    pub fn snapshot_seconds(&self) -> f64 {
        self.snapshot_seconds
    }

    /// The configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The data splits.
    pub fn data(&self) -> &Prepared {
        &self.data
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.optimizer
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The current batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Training rows per second of training time so far.
    pub fn samples_per_s(&self) -> f64 {
        if self.train_seconds > 0.0 { self.train_samples as f64 / self.train_seconds } else { 0.0 }
    }

    /// Changes the batch size from the next step on (the epoch still visits every row
    /// once). The learning-rate schedule is re-timed to match
    /// ([`Schedule::retime`](tuneforge_optim::Schedule::retime) by old ÷ new batch size),
    /// so it keeps its course in training rows: after the batch doubles a step moves a
    /// cosine twice as far, and it still ends with the data rather than half-way down. The
    /// step count ([`Run::step`]) is not changed.
    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(Error::Config { what: "batch size", why: "it must be at least 1".into() });
        }
        if batch_size != self.batch_size {
            self.schedule.retime(self.batch_size as f64 / batch_size as f64)?;
        }
        self.batch_size = batch_size;
        Ok(())
    }

    /// Multiplies the learning rate (the schedule's base, so the schedule's shape is
    /// kept) by `factor`.
    pub fn scale_learning_rate(&mut self, factor: f64) -> Result<()> {
        self.schedule.scale_base_lr(factor)?;
        Ok(())
    }

    /// The schedule's base learning rate (what [`Run::scale_learning_rate`] scales).
    pub fn base_learning_rate(&self) -> f64 {
        self.schedule.base_lr()
    }

    /// The learning rate the next step will use.
    pub fn learning_rate(&self) -> f64 {
        self.schedule.lr()
    }

    /// Sets hidden layer `layer` (an index into the spec's layers) to `width` units:
    /// widening is function-preserving, narrowing drops the least important units; the
    /// optimiser's state follows.
    pub fn resize_hidden(&mut self, layer: usize, width: usize, options: WidenOptions) -> Result<()> {
        let current = self.model.spec().layers.get(layer).and_then(|l| l.width()).unwrap_or(0);
        let changes = if width >= current {
            self.model.widen(layer, width, options)?
        } else {
            self.model.narrow(layer, width)?
        };
        for c in changes {
            self.optimizer.remap(&c.name, c.var, c.axis, &c.sources, &c.scale)?;
        }
        self.widths = hidden_widths(&self.model);
        Ok(())
    }

    /// Takes a rollback snapshot of the state now (no-op without a monitor). An agent calls
    /// it where it may checkpoint (every decision), so that the run it checkpoints and the
    /// run restored from that checkpoint — which takes its first snapshot there — roll back
    /// to the same step.
    pub fn snapshot_now(&mut self) -> Result<()> {
        self.take_snapshot(self.schedule.step().saturating_sub(1))
    }

    /// Copies the model and optimiser state as the snapshot of `step`, kept if the monitor
    /// accepts it. No-op without a monitor.
    fn take_snapshot(&mut self, step: u64) -> Result<()> {
        let Some(monitor) = &mut self.monitor else { return Ok(()) };
        let t = Instant::now();
        let snapshot =
            Snapshot { step, model: self.model.to_device(&self.device)?, optimizer: self.optimizer.state()? };
        if monitor.snapshot_taken(step) {
            self.snapshot = Some(snapshot);
        }
        let seconds = t.elapsed().as_secs_f64();
        self.snapshot_seconds += seconds;
        self.train_seconds += seconds;
        Ok(())
    }

    /// Restores the snapshot of `to_step`: a fresh deep copy of its model (the snapshot stays
    /// intact for a later rollback) and a new optimiser over it loaded with its state.
    fn restore_snapshot(&mut self, to_step: u64) -> Result<bool> {
        let Some(snap) = self.snapshot.as_ref().filter(|s| s.step == to_step) else { return Ok(false) };
        let model = snap.model.to_device(&self.device)?;
        let mut optimizer = self.config.optimizer.build(model.vars())?;
        optimizer.load_state(&snap.optimizer)?;
        self.model = model;
        self.optimizer = optimizer;
        self.widths = hidden_widths(&self.model);
        Ok(true)
    }

    /// Stops after a divergence that is not recovered from: ends the monitor's log as
    /// aborted (an error doing so is logged; the divergence is the error returned).
    fn diverged(&mut self, step: u64, loss: f32) -> Error {
        if let Err(e) = self.finish_monitor(Outcome::Aborted) {
            tracing::error!(error = %e, "closing the event log of an aborted run");
        }
        Error::Diverged { epoch: self.epoch, step, loss }
    }

    /// One optimiser step on the next batch.
    ///
    /// A step whose loss or gradient norm is not finite is not applied. Without a monitor it
    /// is [`Error::Diverged`]; with one, the monitor's recovery policy decides: roll back
    /// (the returned stats say so in `rolled_back_to`) or give up ([`Error::Diverged`], the
    /// log ended as aborted).
    pub fn train_step(&mut self) -> Result<StepStats> {
        // On a rayon worker: the step's many parallel kernels (matrix products, element-wise
        // passes, the optimiser) then fork from inside the pool instead of each being handed
        // over from this thread and waking it again at the end — one hand-over per step.
        // Measured with `cargo xtask bench-step` (docs/benchmarks.md, "one hand-over per step").
        // A tiny step stays on this thread: there the hand-over itself would cost more.
        let hop = self.model.hands_over(self.batch_size);
        tuneforge_model::on_pool(hop, || self.step_on_pool())
    }

    fn step_on_pool(&mut self) -> Result<StepStats> {
        let t = Instant::now();
        let step = self.schedule.step();
        self.gpu_begin_step()?;
        let mut batch = std::mem::take(&mut self.batch);
        self.loader.next_batch_into(self.batch_size, &mut batch)?;
        let (x, y) = to_input(&self.model, &self.device, &batch)?;
        let logits = self.model.forward_train(&x)?;
        let mut loss = Model::loss(&logits, &y)?;
        if self.config.inject_nan_at == Some(step) {
            tracing::warn!(step, "fault injection (inject_nan_at): this step's loss is multiplied by NaN");
            loss = (loss * f64::NAN)?;
        }
        let loss_value = loss.to_scalar::<f32>()?;
        let mut grads = self.model.backward(&loss)?;
        // The monitor watches the gradient norm (NaN, explosions): computed whenever there is
        // one, one pass over the gradients.
        let grad_norm = {
            let vars = self.model.vars();
            let vars = vars.iter().map(|(_, v)| v);
            match self.config.clip_norm {
                Some(max) => Some(clip_grad_norm(&mut grads, vars, max)?),
                None if self.monitor.is_some() => Some(grad_norm(&grads, vars)?),
                None => None,
            }
        };
        let lr = self.schedule.next_lr();
        let finite = loss_value.is_finite() && grad_norm.is_none_or(f64::is_finite);
        if finite {
            self.optimizer.set_learning_rate(lr);
            self.optimizer.step(&grads)?;
        }
        let device_seconds = self.gpu_end_step(step)?;
        let seconds = t.elapsed().as_secs_f64();
        self.train_seconds += seconds;
        self.train_samples += batch.len() as u64;
        let end_of_epoch = batch.end_of_epoch;
        let batch_len = batch.len();
        self.batch = batch;
        let mut anomalies = 0u32;
        let rolled_back_to = match self.monitor.as_mut() {
            None if finite => None,
            None => return Err(self.diverged(step, loss_value)),
            Some(monitor) => {
                let facts = StepFacts {
                    step,
                    epoch: self.epoch as u32,
                    loss: f64::from(loss_value),
                    samples: batch_len as u64,
                    seconds,
                    grad_norm,
                    lr,
                    batch_size: self.batch_size as u32,
                    widths: self.widths.clone(),
                    device_seconds,
                };
                let outcome = monitor.step(facts)?;
                anomalies = outcome.anomalies.len() as u32;
                match outcome.recovery {
                    Some(Recovery::RollBack { to_step, lr_factor, cause }) => {
                        if !self.restore_snapshot(to_step)? {
                            // The policy's last good snapshot is the one kept: cannot happen.
                            tracing::error!(step, to_step, "no snapshot of the step to roll back to");
                            return Err(self.diverged(step, loss_value));
                        }
                        let lr_before = self.schedule.lr();
                        self.scale_learning_rate(lr_factor)?;
                        let lr_after = self.schedule.lr();
                        if let Some(m) = self.monitor.as_mut() {
                            m.rolled_back(Rollback { step, to_step, lr_before, lr_after, cause })?;
                        }
                        Some(to_step)
                    }
                    Some(Recovery::Abort { .. }) => return Err(self.diverged(step, loss_value)),
                    // Recovery disabled: a non-finite step was not applied, but the run
                    // cannot go on as if nothing happened.
                    None if !finite => return Err(self.diverged(step, loss_value)),
                    None => {
                        let every = self.config.snapshot_every;
                        if every > 0 && (step + 1).is_multiple_of(every) {
                            self.take_snapshot(step)?;
                        }
                        None
                    }
                }
            }
        };
        Ok(StepStats {
            step,
            loss: loss_value,
            batch_size: batch_len,
            lr,
            grad_norm,
            seconds,
            end_of_epoch,
            rolled_back_to,
            anomalies,
        })
    }

    /// With a monitor on a CUDA device: marks the step's start on the device's stream.
    fn gpu_begin_step(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let (Some(gpu), Some(_)) = (&self.gpu, &self.monitor) {
            gpu.begin_step()?;
        }
        Ok(())
    }

    /// With a monitor on a CUDA device: the step's GPU time (waits for the device), and
    /// every 100 steps the device's memory for the monitor. `None` otherwise.
    fn gpu_end_step(&mut self, step: u64) -> Result<Option<f64>> {
        #[cfg(feature = "cuda")]
        if let (Some(gpu), Some(monitor)) = (&self.gpu, &mut self.monitor) {
            let seconds = gpu.end_step()?;
            if step.is_multiple_of(100) {
                monitor.set_gpu(gpu.memory()?);
            }
            return Ok(Some(seconds));
        }
        let _ = step;
        Ok(None)
    }

    /// `cpu`, or `cuda:N (name)` for a GPU: the run's device for logs and telemetry.
    pub fn device_label(&self) -> String {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.gpu {
            return format!("cuda:{} ({})", gpu.info().ordinal, gpu.info().name);
        }
        format!("{:?}", self.device.location()).to_lowercase()
    }

    /// Trains until the current epoch ends; evaluates on the validation split if any.
    pub fn train_epoch(&mut self, on_event: &mut dyn FnMut(RunEvent<'_>)) -> Result<EpochStats> {
        let (t0, s0) = (self.train_seconds, self.train_samples);
        let (mut loss_sum, mut rows) = (0f64, 0usize);
        loop {
            let s = self.train_step()?;
            if s.rolled_back_to.is_none() {
                loss_sum += s.loss as f64 * s.batch_size as f64;
                rows += s.batch_size;
            }
            on_event(RunEvent::Step { epoch: self.epoch, stats: &s });
            if s.end_of_epoch {
                break;
            }
        }
        let secs = self.train_seconds - t0;
        if let Some(m) = &mut self.monitor {
            m.end_epoch()?;
        }
        let val = match &self.data.val {
            Some(v) => {
                let t = Instant::now();
                let e = self.evaluate(&**v)?;
                self.log_evaluation(&e, self.epoch as u32, t.elapsed().as_secs_f64())?;
                Some(e)
            }
            None => None,
        };
        let stats = EpochStats {
            epoch: self.epoch,
            train_loss: loss_sum / rows.max(1) as f64,
            samples_per_s: (self.train_samples - s0) as f64 / secs.max(1e-9),
            val,
        };
        self.epoch += 1;
        on_event(RunEvent::Epoch { stats: &stats });
        Ok(stats)
    }

    /// Tells the monitor, if any, about an evaluation taken after the last step.
    pub(crate) fn log_evaluation(&mut self, e: &Evaluation, epoch: u32, seconds: f64) -> Result<()> {
        let step = self.schedule.step().saturating_sub(1);
        if let Some(m) = &mut self.monitor {
            m.evaluation(tuneforge_monitor::Evaluation {
                step,
                epoch,
                accuracy: e.report.accuracy,
                macro_f1: e.report.macro_avg.f1,
                loss: Some(e.loss),
                seconds,
            })?;
        }
        Ok(())
    }

    /// Evaluation-mode metrics of the current model on `dataset` (same scaling as training).
    pub fn evaluate(&self, dataset: &dyn Dataset) -> Result<Evaluation> {
        // One hand-over to rayon's pool for the whole loop rather than one per chunk.
        let (model, device, scale) = (&self.model, &self.device, &self.data.scale);
        tuneforge_model::on_pool(model.hands_over(EVAL_CHUNK), || evaluate(model, device, scale, dataset))
    }
}

/// Rows per forward pass of [`Run::evaluate`].
const EVAL_CHUNK: usize = 1000;

/// `batch` as the model's input tensor (features in the model's input shape) and labels.
fn to_input(model: &Model, device: &Device, batch: &Batch) -> Result<(Tensor, Tensor)> {
    let mut shape = vec![batch.len()];
    shape.extend_from_slice(&model.spec().input);
    let x = if device.is_cpu() && batch.features.len() >= 1 << 16 {
        // Copied by rayon's threads (`Tensor::from_slice` copies on one).
        use rayon::prelude::*;
        let mut v = Vec::with_capacity(batch.features.len());
        batch.features.par_iter().copied().collect_into_vec(&mut v);
        Tensor::from_vec(v, shape, device)?
    } else {
        Tensor::from_slice(&batch.features, shape, device)?
    };
    let y = Tensor::from_slice(&batch.labels, batch.len(), device)?;
    Ok((x, y))
}

/// [`Run::evaluate`] on this thread.
fn evaluate(model: &Model, device: &Device, scale: &Scale, dataset: &dyn Dataset) -> Result<Evaluation> {
    let classes = dataset.num_classes();
    let mut cm = ConfusionMatrix::new(classes)?;
    let (mut predictions, mut labels) = (Vec::with_capacity(dataset.len()), Vec::with_capacity(dataset.len()));
    let mut loss_sum = 0f64;
    let f = dataset.feature_len();
    let mut batch = Batch { feature_shape: dataset.feature_shape().to_vec(), ..Batch::default() };
    for start in (0..dataset.len()).step_by(EVAL_CHUNK) {
        let end = (start + EVAL_CHUNK).min(dataset.len());
        batch.features.resize((end - start) * f, 0.0);
        dataset.read_rows(start, end, &mut batch.features)?;
        scale.apply(&mut batch.features);
        batch.labels.clear();
        batch.labels.extend((start..end).map(|r| dataset.label(r)));
        let (x, y) = to_input(model, device, &batch)?;
        let logits = model.forward(&x)?;
        loss_sum += Model::loss(&logits, &y)?.to_scalar::<f32>()? as f64 * (end - start) as f64;
        let pred = argmax(&logits)?;
        cm.update(&batch.labels, &pred)?;
        predictions.extend_from_slice(&pred);
        labels.extend_from_slice(&batch.labels);
    }
    Ok(Evaluation { report: cm.report(), loss: loss_sum / dataset.len().max(1) as f64, predictions, labels })
}

/// Trains `config` to the end, evaluates once on the test split and writes to `out`:
/// `summary.json`, `predictions.csv` (`index,label,predicted` over the test split),
/// `model.safetensors` (+ `model.safetensors.json`, the spec), `optimizer/` (optimiser and
/// schedule state), `events.jsonl` (the monitor's event log), `predictor.json` (what
/// [`predict`](crate::predict) needs: input kind, classes, label column) and, for CSV and
/// text data, `prep.json` (the fitted preprocessing).
///
/// The run is monitored ([`Run::with_monitor`]) with `monitor`, whose defaults are filled
/// in: `log` is `out/events.jsonl` (replaced if it exists; a path given is appended to),
/// `total_steps` and the `attributes` (dataset, model, seed, ...) come from `config`, and
/// OpenTelemetry export is on when the standard `OTEL_*` variables are set and the monitor is
/// built with `otlp`. `MonitorConfig::default()` shows no progress. The log holds one
/// `evaluation` per epoch on the validation split (when there is one) and a last one on the
/// test split, followed by `checkpoint` and `run_end`.
///
/// Ctrl-C ([`tune::request_stop`](crate::tune::request_stop)) ends the run after the current
/// epoch, tested and written as if it were the last; [`train_until`] also takes a handle that
/// ends this run alone.
pub fn train(
    config: RunConfig,
    monitor: MonitorConfig,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Summary> {
    train_until(config, monitor, dirs, cache, device, out, &crate::tune::Stop::default(), on_event)
}

/// [`train`], ended early — after the epoch during which it is asked, the model tested and
/// written as if that epoch were the last ([`Summary::epochs`] says how many ran) — when
/// `stop` is [`request`](crate::tune::Stop::request)ed (from another thread, or from
/// `on_event`), or when every run of the process is ([`tune::request_stop`](crate::tune::request_stop)).
/// Other runs of the process go on.
///
/// ```
/// use candle_core::Device;
/// use tuneforge_agent::data::DataSource;
/// use tuneforge_agent::run::{RunConfig, RunEvent, train_until};
/// use tuneforge_agent::tune::Stop;
/// use tuneforge_loader::{DataDirs, GzCache};
/// use tuneforge_monitor::MonitorConfig;
/// use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};
///
/// # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
/// let dirs = DataDirs::new(vec![root.join("datasets")]); // where digits.csv is
/// let (cache, out) = (GzCache::default_location(), tempfile::tempdir().unwrap());
/// let config = RunConfig {
///     data: DataSource::parse("digits", None)?,
///     model: "mlp:64".into(),
///     epochs: 200,
///     batch_size: 32,
///     optimizer: OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..Default::default() }),
///     schedule: ScheduleConfig::Constant,
///     seed: 0,
///     clip_norm: None,
///     val_fraction: 0.2,
///     snapshot_every: 100,
///     inject_nan_at: None,
///     patience: None,
/// };
/// // Stopped from outside: once an epoch's training loss is below 0.1.
/// let stop = Stop::default();
/// let summary = train_until(config, MonitorConfig::default(), &dirs, &cache, &Device::Cpu, out.path(), &stop, &mut |event| {
///     if matches!(event, RunEvent::Epoch { stats } if stats.train_loss < 0.1) {
///         stop.request();
///     }
/// })?;
/// assert!(summary.epochs < 200 && summary.test_accuracy > 0.9);
/// # Ok::<(), tuneforge_agent::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn train_until(
    config: RunConfig,
    mut monitor: MonitorConfig,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    stop: &crate::tune::Stop,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Summary> {
    let t = Instant::now();
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    let run = Run::new(config.clone(), dirs, cache, device)?;
    let train_rows = run.data.train.len();
    let steps_per_epoch = train_rows.div_ceil(run.batch_size);
    on_event(RunEvent::Started { train_rows, steps_per_epoch, parameters: run.model.parameter_count() });
    if monitor.log.is_none() {
        let log = out.join("events.jsonl");
        match std::fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: log, source: e }),
            _ => {}
        }
        monitor.log = Some(log);
    }
    monitor.total_steps = monitor.total_steps.or(Some((config.epochs * steps_per_epoch) as u64));
    let attributes = [
        ("data", config.data.to_string()),
        ("model", config.model.clone()),
        ("epochs", config.epochs.to_string()),
        ("batch_size", config.batch_size.to_string()),
        ("optimizer", config.optimizer.kind().to_string()),
        ("lr", config.optimizer.lr().to_string()),
        ("seed", config.seed.to_string()),
        ("device", run.device_label()),
        ("inject_nan_at", config.inject_nan_at.map_or_else(|| "none".into(), |s| s.to_string())),
    ];
    for (k, v) in attributes {
        monitor.attributes.entry(k.to_string()).or_insert(v);
    }
    let telemetry = Telemetry::from_env(&monitor.run)?;
    let mut run = run.with_monitor(Monitor::new(monitor, telemetry)?)?;
    match train_monitored(&mut run, config, out, stop, on_event, t) {
        Ok(summary) => Ok(summary),
        Err(e) => {
            // Recovery giving up has already closed the log; anything else closes it here.
            if let Err(close) = run.finish_monitor(Outcome::Aborted) {
                tracing::error!(error = %close, "closing the event log of a failed run");
            }
            Err(e)
        }
    }
}

fn train_monitored(
    run: &mut Run,
    config: RunConfig,
    out: &Path,
    stop: &crate::tune::Stop,
    on_event: &mut dyn FnMut(RunEvent<'_>),
    t: Instant,
) -> Result<Summary> {
    let mut history = Vec::new();
    // Early stopping: the best epoch so far, its validation macro-F1 and its state.
    let mut best: Option<(usize, f64, RunCheckpoint)> = None;
    for epoch in 0..config.epochs {
        let stats = run.train_epoch(on_event)?;
        let f1 = stats.val.as_ref().map(|v| v.report.macro_avg.f1);
        history.push(stats);
        if let (Some(patience), Some(f1)) = (config.patience, f1) {
            match &best {
                Some((_, b, _)) if f1 <= *b => {}
                _ => best = Some((epoch, f1, run.checkpoint()?)),
            }
            if best.as_ref().is_some_and(|(e, _, _)| epoch - e >= patience) {
                tracing::info!(epoch, patience, "early stopping: no better validation macro-F1");
                break;
            }
        }
        // Ctrl-C (`tune::request_stop`) or this run's handle: it ends with the epochs done.
        if stop.requested() {
            break;
        }
    }
    // Over every epoch trained, before a restore takes the counters back.
    let samples_per_s = run.samples_per_s();
    let best_epoch = match best {
        Some((epoch, _, ck)) => {
            if epoch + 1 != history.len() {
                run.restore(&ck, Path::new("the best epoch's state (early stopping)"))?;
            }
            Some(epoch)
        }
        None => None,
    };
    let t_test = Instant::now();
    let test = run.evaluate(&*run.data.test)?;
    // The epoch of the model tested: the best with early stopping, else the last trained
    // (fewer than `config.epochs` when stopped).
    let last_epoch = best_epoch.unwrap_or(history.len().saturating_sub(1)) as u32;
    run.log_evaluation(&test, last_epoch, t_test.elapsed().as_secs_f64())?;

    let model_path = out.join("model.safetensors");
    run.model.save(&model_path)?;
    let ck = tuneforge_optim::Checkpoint::capture(&*run.optimizer, Some(&run.schedule))?;
    ck.save(&out.join("optimizer"))?;
    let last_step = run.schedule.step().saturating_sub(1);
    if let Some(m) = run.monitor_mut() {
        m.checkpoint(last_step, Some(&model_path))?;
    }
    run.write_predictor(out)?;
    write_predictions(&out.join("predictions.csv"), &test)?;
    let monitored = run.finish_monitor(Outcome::Completed)?;
    let summary = Summary {
        test_accuracy: test.report.accuracy,
        test_macro_f1: test.report.macro_avg.f1,
        test_loss: test.loss,
        epochs: history.len(),
        best_epoch,
        samples_per_s,
        wall_seconds: t.elapsed().as_secs_f64(),
        parameters: run.model.parameter_count(),
        model: run.model.spec().clone(),
        config,
        history,
        test_report: test.report,
        anomalies: monitored.as_ref().map_or(0, |m| m.anomalies),
        rollbacks: monitored.as_ref().map_or(0, |m| m.rollbacks),
        snapshot_seconds: run.snapshot_seconds,
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// The model a run of `model` (a preset: `mlp:W1,W2,...`, `seed-cnn`, or for text data
/// `text-bag`, `text-bag-max`, `text-cnn`) builds over `data`: an MLP takes flat rows, the
/// CNN [1, 28, 28] images, text models token ids. Errors are the preset's (an unknown name,
/// or one that cannot take these samples), e.g. to refuse a model before anything is trained:
///
/// ```
/// use tuneforge_agent::data::{DataSource, prepare};
/// use tuneforge_agent::run::model_spec;
/// use tuneforge_loader::{DataDirs, GzCache};
///
/// # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
/// let dirs = DataDirs::new(vec![root.join("datasets")]); // where digits.csv is
/// let data = prepare(&DataSource::parse("digits", None)?, &dirs, &GzCache::default_location(), 0.0, 0)?;
/// assert_eq!(model_spec("mlp:32", &data)?.hidden_widths(), vec![32]);
/// let err = model_spec("seed-cnn", &data).unwrap_err().to_string();
/// assert!(err.contains("28x28"), "{err}");
/// # Ok::<(), tuneforge_agent::Error>(())
/// ```
pub fn model_spec(model: &str, data: &Prepared) -> Result<ModelSpec> {
    let classes = data.train.num_classes();
    Ok(match &data.text {
        Some(text) => ModelSpec::text_preset(model, text.max_len(), text.vocab_size(), classes)?,
        None => ModelSpec::preset(model, &data.sample_shape, classes)?,
    })
}

fn hidden_widths(model: &Model) -> Vec<u32> {
    model.spec().hidden_widths().into_iter().map(|w| w as u32).collect()
}

/// Where a run stands, saved beside its weights and optimiser state in a [`RunCheckpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCursor {
    /// Batch size of the next step.
    pub batch_size: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// The sampler's epoch and position: the next batch starts there.
    pub sampler_epoch: u64,
    /// Rows of that epoch already drawn.
    pub sampler_position: usize,
    /// Training time so far.
    pub train_seconds: f64,
    /// Training rows so far.
    pub train_samples: u64,
    /// The monitor's detector statistics and rollback memory, when a monitor was attached
    /// (`None` in checkpoints written before they were saved: the resumed monitor starts
    /// cold, and its warm-up may flag steps the uninterrupted run would not have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<tuneforge_monitor::MonitorState>,
}

/// Everything needed to continue a run exactly where it was: weights (with the model's
/// spec, so widths changed mid-run come back), optimiser moments, schedule (step and
/// learning rate), batch size and the position in the seeded data order.
#[derive(Debug, Clone)]
pub struct RunCheckpoint {
    /// Position and counters.
    pub cursor: RunCursor,
    /// [`Model::to_safetensors`] bytes.
    pub model: Vec<u8>,
    /// [`tuneforge_optim::Checkpoint::to_bytes`] bytes (optimiser and schedule).
    pub optimizer: Vec<u8>,
}

impl Run {
    /// Captures the run's state (see [`RunCheckpoint`]).
    pub fn checkpoint(&self) -> Result<RunCheckpoint> {
        Ok(RunCheckpoint {
            cursor: RunCursor {
                batch_size: self.batch_size,
                epoch: self.epoch,
                sampler_epoch: self.loader.epoch(),
                sampler_position: self.loader.position(),
                train_seconds: self.train_seconds,
                train_samples: self.train_samples,
                monitor: self.monitor.as_ref().map(Monitor::state),
            },
            model: self.model.to_safetensors(Path::new("checkpoint"))?,
            optimizer: tuneforge_optim::Checkpoint::capture(&*self.optimizer, Some(&self.schedule))?.to_bytes()?,
        })
    }

    /// Continues from `checkpoint` (taken from a run over the same data): the model, the
    /// optimiser and its schedule, the batch size and the data position are replaced;
    /// `origin` names the checkpoint in errors. A monitor, if attached, takes a new snapshot.
    pub fn restore(&mut self, checkpoint: &RunCheckpoint, origin: &Path) -> Result<()> {
        let model = Model::from_safetensors(&checkpoint.model, origin, &self.device)?;
        let ck = tuneforge_optim::Checkpoint::from_bytes(&checkpoint.optimizer, origin)?;
        let mut optimizer = ck.optimizer.config.build(model.vars())?;
        let schedule = ck.restore(optimizer.as_mut())?.ok_or_else(|| Error::Config {
            what: "checkpoint",
            why: format!("{}: no learning-rate schedule in it", origin.display()),
        })?;
        let c = &checkpoint.cursor;
        self.check_batch(c.batch_size)?;
        self.loader.sampler().seek(c.sampler_epoch, c.sampler_position)?;
        self.epoch = c.epoch;
        self.train_seconds = c.train_seconds;
        self.train_samples = c.train_samples;
        // Before `install`, whose snapshot the restored rollback memory then accepts as the
        // uninterrupted run did (see `Run::snapshot_now`).
        if let (Some(monitor), Some(state)) = (self.monitor.as_mut(), c.monitor.clone()) {
            monitor.restore_state(state)?;
        }
        self.install(model, optimizer, schedule, c.batch_size)
    }

    /// Population-based training's exploit: takes `other`'s weights (a deep copy, whatever
    /// its widths), optimiser state, learning rate and schedule position, and batch size.
    /// This run's data order and counters (its step count included) are kept.
    pub fn copy_from(&mut self, other: &Run) -> Result<()> {
        let model = other.model.to_device(&self.device)?;
        let state = other.optimizer.state()?;
        let mut optimizer = state.config.build(model.vars())?;
        optimizer.load_state(&state)?;
        let mut schedule = other.schedule.clone();
        schedule.renumber(self.schedule.step());
        self.install(model, optimizer, schedule, other.batch_size)
    }

    /// Replaces the model, optimiser, schedule and batch size; the old rollback snapshot no
    /// longer applies, so a monitored run takes a new one.
    fn install(
        &mut self,
        model: Model,
        optimizer: Box<dyn Optimizer>,
        schedule: Schedule,
        batch_size: usize,
    ) -> Result<()> {
        self.model = model;
        self.optimizer = optimizer;
        self.schedule = schedule;
        self.batch_size = batch_size;
        self.widths = hidden_widths(&self.model);
        self.snapshot = None;
        if self.monitor.is_some() {
            self.take_snapshot(self.schedule.step().saturating_sub(1))?;
        }
        Ok(())
    }

    fn check_batch(&self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(Error::Config { what: "batch size", why: "it must be at least 1".into() });
        }
        Ok(())
    }

    /// Writes what [`Predictor::load`](crate::predict::Predictor::load) needs besides the
    /// model to `dir`: `prep.json` (CSV and text data) and `predictor.json`.
    pub fn write_predictor(&self, dir: &Path) -> Result<()> {
        self.write_pipeline(&dir.join(crate::predict::PREP))?;
        crate::predict::Manifest::of(&self.config.data, &self.data).write(dir)
    }

    /// Writes the preprocessing fitted on the training rows (CSV data: the table pipeline;
    /// text data: the cleaning steps and the vocabulary) to `path` as JSON; does nothing for
    /// data without one.
    pub fn write_pipeline(&self, path: &Path) -> Result<()> {
        if let Some(p) = &self.data.pipeline {
            write_atomic(path, p.to_json()?.as_bytes())?;
        }
        if let Some(t) = &self.data.text {
            write_atomic(path, t.to_json()?.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes `evaluation`'s predictions as `index,label,predicted` lines (row order of the
/// evaluated dataset).
pub fn write_predictions(path: &Path, evaluation: &Evaluation) -> Result<()> {
    write_atomic(path, predictions_csv(&evaluation.labels, &evaluation.predictions).as_bytes())
}

/// The text [`write_predictions`] writes: a header, then `index,label,predicted` per row (as
/// many rows as the shorter slice).
pub fn predictions_csv(labels: &[u32], predicted: &[u32]) -> String {
    let mut csv = String::from("index,label,predicted\n");
    for (i, (l, p)) in labels.iter().zip(predicted).enumerate() {
        csv.push_str(&format!("{i},{l},{p}\n"));
    }
    csv
}

/// Reads a file written by [`write_predictions`]: the labels and the predictions, in row
/// order. A malformed line is an error naming the file and the line.
pub fn read_predictions(path: &Path) -> Result<(Vec<u32>, Vec<u32>)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_predictions(path, &text)
}

/// [`read_predictions`] on text already in memory; `path` only names it in errors.
pub fn parse_predictions(path: &Path, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let bad = |line: usize, why: String| Error::Config {
        what: "predictions file",
        why: format!("{}:{line}: {why}", path.display()),
    };
    let mut lines = text.lines();
    if lines.next() != Some("index,label,predicted") {
        return Err(bad(1, "the header must be index,label,predicted".into()));
    }
    let (mut labels, mut predicted) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let parse = |f: &str| f.trim().parse::<u32>().map_err(|e| bad(i + 2, format!("{f:?}: {e}")));
        match fields.as_slice() {
            [index, label, pred] if parse(index)? as usize == i => {
                labels.push(parse(label)?);
                predicted.push(parse(pred)?);
            }
            [_, _, _] => return Err(bad(i + 2, format!("index {:?}, expected {i}", fields[0]))),
            _ => return Err(bad(i + 2, format!("{} fields, expected 3", fields.len()))),
        }
    }
    Ok((labels, predicted))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename
/// ([`tuneforge_loader::atomic::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tuneforge_loader::atomic::write_atomic(path, bytes).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}
