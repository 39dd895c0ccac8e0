//! One training run: data → prep → model → optimiser → eval, with no decisions in it.
//!
//! `cargo xtask train` executes a [`Run`] as configured; the agent (later) wraps the same
//! run and changes its learning rate, batch size and hidden widths between steps through
//! [`Run::set_learning_rate`], [`Run::set_batch_size`] and [`Run::resize_hidden`]. One
//! loop, used by both.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tuneforge_eval::{ClassificationReport, ConfusionMatrix};
use tuneforge_loader::{Batch, DataDirs, Dataset, GzCache, Loader, LoaderConfig};
use tuneforge_model::{Model, ModelSpec, WidenOptions, argmax};
use tuneforge_optim::{Optimizer, OptimizerConfig, Schedule, ScheduleConfig, clip_grad_norm};

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
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's steps (weighted by rows).
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
    /// Epochs trained.
    pub epochs: usize,
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
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("config", &self.config).field("epoch", &self.epoch).finish()
    }
}

impl Run {
    /// Prepares the data and builds the model and optimiser.
    pub fn new(config: RunConfig, dirs: &DataDirs, cache: &GzCache, device: &Device) -> Result<Run> {
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
        let data = prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?;
        let classes = data.train.num_classes();
        let spec = ModelSpec::preset(&config.model, &data.sample_shape, classes)?;
        // An MLP takes flat rows; the CNN takes [1, 28, 28] images.
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
        })
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
    /// once).
    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(Error::Config { what: "batch size", why: "it must be at least 1".into() });
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
        Ok(())
    }

    fn to_input(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let mut shape = vec![batch.len()];
        shape.extend_from_slice(&self.model.spec().input);
        let x = Tensor::from_slice(&batch.features, shape, &self.device)?;
        let y = Tensor::from_slice(&batch.labels, batch.len(), &self.device)?;
        Ok((x, y))
    }

    /// One optimiser step on the next batch.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let t = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        self.loader.next_batch_into(self.batch_size, &mut batch)?;
        let (x, y) = self.to_input(&batch)?;
        let logits = self.model.forward_train(&x)?;
        let loss = Model::loss(&logits, &y)?;
        let mut grads = loss.backward()?;
        let grad_norm = match self.config.clip_norm {
            Some(max) => {
                let vars = self.model.vars();
                Some(clip_grad_norm(&mut grads, vars.iter().map(|(_, v)| v), max)?)
            }
            None => None,
        };
        let lr = self.schedule.next_lr();
        self.optimizer.set_learning_rate(lr);
        self.optimizer.step(&grads)?;
        let loss_value = loss.to_scalar::<f32>()?;
        let step = self.schedule.step() - 1;
        if !loss_value.is_finite() {
            return Err(Error::Diverged { epoch: self.epoch, step, loss: loss_value });
        }
        let seconds = t.elapsed().as_secs_f64();
        self.train_seconds += seconds;
        self.train_samples += batch.len() as u64;
        let stats = StepStats {
            step,
            loss: loss_value,
            batch_size: batch.len(),
            lr,
            grad_norm,
            seconds,
            end_of_epoch: batch.end_of_epoch,
        };
        self.batch = batch;
        Ok(stats)
    }

    /// Trains until the current epoch ends; evaluates on the validation split if any.
    pub fn train_epoch(&mut self, on_event: &mut dyn FnMut(RunEvent<'_>)) -> Result<EpochStats> {
        let (t0, s0) = (self.train_seconds, self.train_samples);
        let (mut loss_sum, mut rows) = (0f64, 0usize);
        loop {
            let s = self.train_step()?;
            loss_sum += s.loss as f64 * s.batch_size as f64;
            rows += s.batch_size;
            on_event(RunEvent::Step { epoch: self.epoch, stats: &s });
            if s.end_of_epoch {
                break;
            }
        }
        let secs = self.train_seconds - t0;
        let val = match &self.data.val {
            Some(v) => Some(self.evaluate(&**v)?),
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

    /// Evaluation-mode metrics of the current model on `dataset` (same scaling as training).
    pub fn evaluate(&self, dataset: &dyn Dataset) -> Result<Evaluation> {
        let classes = dataset.num_classes();
        let mut cm = ConfusionMatrix::new(classes)?;
        let (mut predictions, mut labels) = (Vec::with_capacity(dataset.len()), Vec::with_capacity(dataset.len()));
        let mut loss_sum = 0f64;
        let chunk = 1000;
        let f = dataset.feature_len();
        let mut batch = Batch { feature_shape: dataset.feature_shape().to_vec(), ..Batch::default() };
        for start in (0..dataset.len()).step_by(chunk) {
            let end = (start + chunk).min(dataset.len());
            batch.features.resize((end - start) * f, 0.0);
            dataset.read_rows(start, end, &mut batch.features)?;
            self.data.scale.apply(&mut batch.features);
            batch.labels.clear();
            batch.labels.extend((start..end).map(|r| dataset.label(r)));
            let (x, y) = self.to_input(&batch)?;
            let logits = self.model.forward(&x)?;
            loss_sum += Model::loss(&logits, &y)?.to_scalar::<f32>()? as f64 * (end - start) as f64;
            let pred = argmax(&logits)?;
            cm.update(&batch.labels, &pred)?;
            predictions.extend_from_slice(&pred);
            labels.extend_from_slice(&batch.labels);
        }
        Ok(Evaluation { report: cm.report(), loss: loss_sum / dataset.len().max(1) as f64, predictions, labels })
    }
}

/// Trains `config` to the end, evaluates once on the test split and writes to `out`:
/// `summary.json`, `predictions.csv` (`index,label,predicted` over the test split),
/// `model.safetensors` (+ `model.safetensors.json`, the spec), `optimizer/` (optimiser and
/// schedule state) and, for CSV data, `prep.json` (the fitted preprocessing).
pub fn train(
    config: RunConfig,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Summary> {
    let t = Instant::now();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut run = Run::new(config.clone(), dirs, cache, device)?;
    let train_rows = run.data.train.len();
    on_event(RunEvent::Started {
        train_rows,
        steps_per_epoch: train_rows.div_ceil(run.batch_size),
        parameters: run.model.parameter_count(),
    });
    let mut history = Vec::new();
    for _ in 0..config.epochs {
        history.push(run.train_epoch(on_event)?);
    }
    let test = run.evaluate(&*run.data.test)?;

    run.model.save(&out.join("model.safetensors"))?;
    let ck = tuneforge_optim::Checkpoint::capture(&*run.optimizer, Some(&run.schedule))?;
    ck.save(&out.join("optimizer"))?;
    if let Some(p) = &run.data.pipeline {
        write_atomic(&out.join("prep.json"), p.to_json()?.as_bytes())?;
    }
    let mut csv = String::from("index,label,predicted\n");
    for (i, (l, p)) in test.labels.iter().zip(&test.predictions).enumerate() {
        csv.push_str(&format!("{i},{l},{p}\n"));
    }
    write_atomic(&out.join("predictions.csv"), csv.as_bytes())?;
    let summary = Summary {
        test_accuracy: test.report.accuracy,
        test_macro_f1: test.report.macro_avg.f1,
        test_loss: test.loss,
        epochs: config.epochs,
        samples_per_s: run.samples_per_s(),
        wall_seconds: t.elapsed().as_secs_f64(),
        parameters: run.model.parameter_count(),
        model: run.model.spec().clone(),
        config,
        history,
        test_report: test.report,
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let err = |source| Error::Io { path: path.to_path_buf(), source };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
