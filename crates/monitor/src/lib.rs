//! `tuneforge-monitor`: per-step training telemetry (loss, samples/s, step latency
//! quantiles, gradient norm, memory), an append-only JSONL event log, anomaly detection
//! (NaN/Inf, loss spikes, throughput drops, exploding gradients) with a rollback policy, and
//! OpenTelemetry export. It knows nothing of candle or of the model: a trainer hands it plain
//! numbers ([`StepFacts`]) and acts on what comes back ([`StepOutcome`]).
//!
//! The central type is [`Monitor`], which drives the parts, each usable alone:
//!
//! - [`Recorder`]: rolling figures — samples/s (instant and EWMA), step latency p50/p99 (HDR
//!   histograms), loss EWMA and slope, process RSS ([`Figures`]).
//! - [`Detectors`]: typed [`Anomaly`] events with step, kind, value and threshold;
//!   thresholds in a serde [`DetectorConfig`] with documented defaults.
//! - [`RecoveryPolicy`]: on a divergence, [`Recovery::RollBack`] to the last good snapshot
//!   with the learning rate scaled down; [`Recovery::Abort`] when that keeps failing.
//! - [`EventLog`] and [`read_log`]: one JSON object per line, a closed enum of [`Event`]s,
//!   flushed per event and fsynced at checkpoints; the reader tolerates a torn last line.
//! - [`Telemetry`]: OTLP metrics and spans behind the `otlp` cargo feature, configured by
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`; without the feature it is a
//!   zero-sized no-op and no OpenTelemetry crate is compiled.
//! - [`Progress`]: an indicatif bar on a terminal, plain lines when not a TTY or `CI` is set.
//!
//! - [`MonitorState`] ([`Monitor::state`], [`Monitor::restore_state`]): what the detectors and
//!   the policy have learnt, for a trainer's checkpoint — a run resumed with it flags and
//!   rolls back at the same steps as the uninterrupted run (a cold detector would not).
//!
//! Key decision: the monitor decides, the trainer acts. It never touches weights or
//! optimisers, so it cannot know how to snapshot them; it only tells the trainer when and to
//! which snapshot to go back, and logs what the trainer reports having done.
//!
//! No library code here creates a tokio runtime or installs a tracing subscriber; messages go
//! through `tracing`.
//!
//! ```
//! use tuneforge_monitor::{Monitor, MonitorConfig, Outcome, Recovery, Rollback, StepFacts, Telemetry};
//!
//! let dir = tempfile::tempdir()?;
//! let config = MonitorConfig { log: Some(dir.path().join("run.jsonl")), ..Default::default() };
//! let mut monitor = Monitor::new(config, Telemetry::disabled())?;
//! let mut lr = 0.1;
//! monitor.snapshot_taken(0); // the trainer keeps weights + optimiser state of step 0
//! for step in 0..200u64 {
//!     let loss = if step == 150 { f64::NAN } else { 1.0 / (1.0 + step as f64) };
//!     let facts = StepFacts { step, loss, samples: 32, seconds: 0.002, lr, batch_size: 32, ..Default::default() };
//!     let outcome = monitor.step(facts)?;
//!     if let Some(Recovery::RollBack { to_step, lr_factor, cause }) = outcome.recovery {
//!         // ... restore the snapshot of `to_step` here ...
//!         let lr_before = lr;
//!         lr *= lr_factor;
//!         monitor.rolled_back(Rollback { step, to_step, lr_before, lr_after: lr, cause })?;
//!     } else if step % 50 == 0 {
//!         monitor.snapshot_taken(step); // ... and keep a snapshot now and then
//!     }
//! }
//! let summary = monitor.finish(Outcome::Completed)?;
//! assert_eq!((summary.anomalies, summary.rollbacks), (1, 1));
//! assert_eq!(lr, 0.05);
//! let log = tuneforge_monitor::read_log(dir.path().join("run.jsonl"))?;
//! assert!(log.torn_tail.is_none());
//! assert_eq!(log.events.iter().filter(|e| matches!(e, tuneforge_monitor::Event::Rollback(_))).count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod detect;
mod error;
mod event;
mod gpu;
mod log;
mod monitor;
mod otel;
mod progress;
mod recorder;
mod recovery;

pub use crate::detect::{
    Anomaly, AnomalyKind, DetectorConfig, DetectorState, Detectors, DropState, ExplodingGradientConfig,
    LossSpikeConfig, SpikeState, ThroughputDropConfig,
};
pub use crate::error::{Error, Result};
pub use crate::event::{
    Checkpoint, Decision, EpochEnd, Evaluation, Event, Figures, Outcome, Rollback, RunEnd, RunResume, RunStart,
    StepFacts, StepRecord,
};
#[cfg(feature = "cuda")]
pub use crate::gpu::GpuProbe;
pub use crate::gpu::{GpuInfo, GpuMemory};
pub use crate::log::{EventLog, Follow, LogContents, LogFollower, TornTail, parse_log, read_log};
pub use crate::monitor::{Monitor, MonitorConfig, MonitorState, RunSummary, StepOutcome};
pub use crate::otel::{OtlpConfig, Telemetry};
pub use crate::progress::{Progress, ProgressMode};
pub use crate::recorder::{Ewma, Recorder, RecorderConfig, rss_bytes};
pub use crate::recovery::{AbortReason, Recovery, RecoveryConfig, RecoveryPolicy, RecoveryState};
