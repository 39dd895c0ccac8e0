//! `tuneforge-agent`: one training run (data → prep → model → optim → eval), and — as the
//! agent issue lands — the run wrapped as a reinforcement-learning environment whose
//! actions change the learning rate, batch size and hidden widths mid-run, the policies
//! and baselines, and the study store.
//!
//! Today this crate holds the [`run`] module: [`run::Run`] is a training run with the
//! knobs the agent will turn ([`run::Run::set_batch_size`],
//! [`run::Run::scale_learning_rate`], [`run::Run::resize_hidden`]) and [`run::train`] runs
//! one to the end and writes its summary, predictions, model and optimiser state — what
//! `cargo xtask train` does. A run can carry a `tuneforge_monitor::Monitor`
//! ([`run::Run::with_monitor`]; [`run::train`] always does): every step is reported to it,
//! its event log is `events.jsonl`, and on a NaN or exploding gradient the run rolls back
//! to an in-memory snapshot with half the learning rate and goes on. Data preparation
//! ([`data`]) splits datasets without a test split 80/20 (seeded, stratified) and fits
//! preprocessing on the training rows only.
//!
//! ```no_run
//! use candle_core::Device;
//! use tuneforge_agent::data::DataSource;
//! use tuneforge_agent::run::{RunConfig, train};
//! use tuneforge_loader::{DataDirs, GzCache};
//! use tuneforge_monitor::MonitorConfig;
//! use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};
//!
//! let config = RunConfig {
//!     data: DataSource::parse("digits", None)?,
//!     model: "mlp:64".into(),
//!     epochs: 5,
//!     batch_size: 32,
//!     optimizer: OptimizerConfig::Adam(AdamConfig { lr: 1e-3, ..Default::default() }),
//!     schedule: ScheduleConfig::Constant,
//!     seed: 0,
//!     clip_norm: None,
//!     val_fraction: 0.0,
//!     snapshot_every: 100,
//!     inject_nan_at: None,
//! };
//! let dirs = DataDirs::resolve(None);
//! let (cache, out) = (GzCache::default_location(), std::path::Path::new("runs/digits"));
//! let summary = train(config, MonitorConfig::default(), &dirs, &cache, &Device::Cpu, out, &mut |_| {})?;
//! println!("test accuracy {:.4}", summary.test_accuracy);
//! # Ok::<(), tuneforge_agent::Error>(())
//! ```

pub mod data;
pub mod env;
mod error;
pub mod policy;
pub mod run;
pub mod store;
pub mod trial;
pub mod tune;

pub use crate::error::{Error, Result};
