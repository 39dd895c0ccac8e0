//! `tuneforge-agent`: a training run (data → prep → model → optim → eval → monitor), the run
//! as a reinforcement-learning environment whose actions change the learning rate, batch
//! size and hidden widths mid-run, the policies and baselines, and the study store.
//!
//! - [`run`] — [`run::Run`], one training loop with the knobs the agent turns
//!   ([`run::Run::set_batch_size`], [`run::Run::scale_learning_rate`],
//!   [`run::Run::resize_hidden`]), exact checkpoints ([`run::Run::checkpoint`],
//!   [`run::Run::restore`]) and [`run::train`] (what `cargo xtask train` does). A run can
//!   carry a `tuneforge_monitor::Monitor`: every step is reported to it, its log is
//!   `events.jsonl`, and on a NaN or exploding gradient the run rolls back to an in-memory
//!   snapshot with half the learning rate and goes on.
//! - [`data`] — splits (datasets without a test split get a seeded, stratified 80/20 split)
//!   and preprocessing fitted on the training rows only: a table pipeline for CSV data, a
//!   text pipeline and vocabulary for text (`jsonl:PATH`, or a CSV text column), whose
//!   token ids feed the text models (`text-bag`, `text-cnn`).
//! - [`env`](mod@env) — [`env::Env`], the run as an environment (observation, factored bounded actions,
//!   reward Δ validation macro-F1 + λ·ln(throughput gain)).
//! - [`policy`] — [`policy::ActorCritic`] (one-step actor–critic with factored heads, the `rl` strategies' policy), [`policy::Reinforce`] (REINFORCE with a baseline, the earlier one) and [`policy::Fixed`].
//! - [`store`] — the [`store::StudyStore`] trait, its SQLite implementation, and
//!   [`store::PostgresStore`], where many workers on many machines share a study (atomic
//!   trial claims, heartbeats, takeover of a dead worker's trial, merged policy updates).
//!   The PostgreSQL client is the sync `postgres` crate, which runs `tokio-postgres` on a
//!   current-thread runtime inside each connection; this crate creates none of its own.
//! - [`predict`] — [`predict::Predictor`]: a model that `train` or `tune` wrote, with its
//!   fitted preprocessing and classes (`predictor.json`), applied to new rows (`cargo xtask
//!   predict`).
//! - [`tpe`] — the tree-structured Parzen estimator that chooses the `tpe` and
//!   `tpe-multivariate` strategies' starts.
//! - [`pb2`] — population-based bandits' explore step.
//! - [`trial`] and [`tune`]: a study under `fixed`, `random`, `asha`, `pbt`, `pb2`, `rl`,
//!   `rl-no-width`, `tpe` or `tpe-multivariate` within a wall-clock budget, resumable after `kill -9`
//!   ([`tune::tune`], [`tune::resume`]; `cargo xtask tune`); [`tune::work`] is one worker of
//!   a study shared through PostgreSQL (`cargo xtask tune --storage postgres://...`).
//!
//! Training one run to the end, then a two-second `rl` study, on the committed digits:
//!
//! ```
//! use std::time::Duration;
//! use candle_core::Device;
//! use tuneforge_agent::data::DataSource;
//! use tuneforge_agent::env::EnvConfig;
//! use tuneforge_agent::run::{RunConfig, train};
//! use tuneforge_agent::tune::{Strategy, TuneConfig, tune};
//! use tuneforge_loader::{DataDirs, GzCache};
//! use tuneforge_monitor::{MonitorConfig, ProgressMode};
//! use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};
//!
//! # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! let dirs = DataDirs::new(vec![root.join("datasets")]); // where digits.csv is
//! let (cache, out) = (GzCache::default_location(), tempfile::tempdir().unwrap());
//! let config = RunConfig {
//!     data: DataSource::parse("digits", None)?,
//!     model: "mlp:64".into(),
//!     epochs: 3,
//!     batch_size: 32,
//!     optimizer: OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..Default::default() }),
//!     schedule: ScheduleConfig::Constant,
//!     seed: 0,
//!     clip_norm: None,
//!     val_fraction: 0.0,
//!     snapshot_every: 100,
//!     inject_nan_at: None,
//!     patience: None,
//! };
//! let run_dir = out.path().join("train");
//! let summary = train(config, MonitorConfig::default(), &dirs, &cache, &Device::Cpu, &run_dir, &mut |_| {})?;
//! assert!(summary.test_accuracy > 0.9);
//!
//! let study = TuneConfig {
//!     data: DataSource::parse("digits", None)?,
//!     model: "mlp:64".into(),
//!     strategy: Strategy::Rl,
//!     budget: Duration::from_secs(2),
//!     max_trials: None,
//!     enqueued: Vec::new(),
//!     stop_when: Default::default(),
//!     trial_timeout: None,
//!     seed: 0,
//!     batch_size: 32,
//!     lr: 3e-3,
//!     env: EnvConfig { decision_steps: 30, budget_steps: 300, ..EnvConfig::default() },
//!     checkpoint_every: Duration::from_secs(10),
//!     policy: None,
//!     progress: ProgressMode::Off,
//!     log_steps_every: 10,
//!     stop: Default::default(),
//!     cosine: true,
//!     val_fraction: 0.2,
//! };
//! let summary = tune(&study, &dirs, &cache, &Device::Cpu, &out.path().join("tune"), &mut |_| {})?;
//! println!("{} trials, best test macro-F1 {:.4}", summary.trials.len(), summary.best.test_macro_f1);
//! # Ok::<(), tuneforge_agent::Error>(())
//! ```

pub mod data;
pub mod env;
mod error;
pub mod pb2;
pub mod policy;
pub mod predict;
pub mod run;
pub mod store;
pub mod tpe;
pub mod trial;
pub mod tune;

pub use crate::error::{Error, Result};
