//! [`Monitor`]: recorder, detectors, recovery policy, event log, telemetry and progress view
//! behind the few calls a training loop makes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::detect::{Anomaly, DetectorConfig, DetectorState, Detectors};
use crate::error::{Error, Result};
use crate::event::{
    Checkpoint, Decision, EpochEnd, Evaluation, Event, Figures, Outcome, Rollback, RunEnd, RunResume, RunStart,
    StepFacts, StepRecord,
};
use crate::log::EventLog;
use crate::otel::Telemetry;
use crate::progress::{Progress, ProgressMode};
use crate::recorder::{Recorder, RecorderConfig};
use crate::recovery::{Recovery, RecoveryConfig, RecoveryPolicy, RecoveryState};

/// Everything a [`Monitor`] can be told; every field has a default, so `{}` is valid JSON for
/// it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Name or id of the run (OpenTelemetry attribute `run`). Default `"run"`.
    pub run: String,
    /// Free-form description written in the `run_start` event.
    pub attributes: BTreeMap<String, String>,
    /// The JSONL event log (appended to; `None`: no log). Default `None`.
    pub log: Option<PathBuf>,
    /// Write a `summary` event (latency quantiles, loss slope, RSS) every this many steps,
    /// ≥ 1. Default 100.
    pub summary_every: u64,
    /// Log a `step` event for steps whose number is a multiple of this, ≥ 1, and always for
    /// the step before any other event (an evaluation, a decision, a checkpoint, a rollback,
    /// an epoch's end, the run's end: the log has the point where each happened), for a step
    /// a detector fired on, and for the first step of the run and after a resume. Default 1:
    /// every step. Telemetry, the progress view, the detectors and the rolling figures see
    /// every step whatever this is; it only thins the log of fast runs (thousands of steps a
    /// second write hundreds of MB a minute otherwise).
    pub log_steps_every: u64,
    /// Progress view. Default [`ProgressMode::Off`] (a library stays quiet unless asked).
    pub progress: ProgressMode,
    /// Steps the run will take, for the progress bar.
    pub total_steps: Option<u64>,
    /// Smoothing of the rolling figures.
    pub recorder: RecorderConfig,
    /// Detector thresholds.
    pub detectors: DetectorConfig,
    /// Rollback policy.
    pub recovery: RecoveryConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            run: "run".into(),
            attributes: BTreeMap::new(),
            log: None,
            summary_every: 100,
            log_steps_every: 1,
            progress: ProgressMode::Off,
            total_steps: None,
            recorder: RecorderConfig::default(),
            detectors: DetectorConfig::default(),
            recovery: RecoveryConfig::default(),
        }
    }
}

/// What [`Monitor::step`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutcome {
    /// The anomalies of this step (empty, and unallocated, when all is well).
    pub anomalies: Vec<Anomaly>,
    /// What the trainer should do about them (`None`: carry on).
    pub recovery: Option<Recovery>,
}

/// What a [`Monitor`] has learnt from a run's steps that changes what it answers later: the
/// detectors' statistics and the recovery policy's memory ([`Monitor::state`]). A trainer
/// saves it with a checkpoint and gives it to the monitor of the resumed run
/// ([`Monitor::restore_state`]), so that the resumed run flags and rolls back exactly where
/// the uninterrupted one would have. (Counters for the log's `run_end` are not in it: a
/// resumed run is a new run in the log.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorState {
    /// The detectors' statistics.
    pub detectors: DetectorState,
    /// The recovery policy's memory.
    pub recovery: RecoveryState,
}

/// What [`Monitor::finish`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// The last rolling figures.
    pub figures: Figures,
    /// Anomalies seen.
    pub anomalies: u64,
    /// Rollbacks reported with [`Monitor::rolled_back`].
    pub rollbacks: u64,
    /// Events written to the log.
    pub events_logged: u64,
}

/// The monitor of one training run.
///
/// A training loop calls [`Monitor::step`] after every optimiser step and acts on the
/// [`StepOutcome`]; [`Monitor::evaluation`], [`Monitor::snapshot_taken`],
/// [`Monitor::checkpoint`], [`Monitor::rolled_back`], [`Monitor::decision`] when those happen;
/// [`Monitor::finish`] at the end.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    recorder: Recorder,
    detectors: Detectors,
    recovery: RecoveryPolicy,
    log: Option<EventLog>,
    telemetry: Telemetry,
    progress: Progress,
    started: Instant,
    epoch: Option<EpochState>,
    last_step: u64,
    batch_size: u32,
    widths: Vec<u32>,
    anomalies: u64,
    rollbacks: u64,
    /// The last step when it was not logged (see [`MonitorConfig::log_steps_every`]): written
    /// before the next event of another kind.
    unlogged_step: Option<StepRecord>,
    /// Whether a step was logged since the monitor started.
    logged_a_step: bool,
    /// Tells this monitor's events from those of other monitors of the process (see `write`).
    id: u64,
}

/// Ids of monitors, and the one that last wrote an event, for [`Event::RunResume`].
static NEXT_MONITOR: AtomicU64 = AtomicU64::new(1);
static LAST_WRITER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct EpochState {
    epoch: u32,
    started: Instant,
    samples: u64,
    last_step: u64,
}

impl Monitor {
    /// Starts monitoring a run: opens the log (appending), writes `run_start`, opens the run
    /// span. `telemetry` is [`Telemetry::disabled`] or [`Telemetry::from_env`].
    pub fn new(config: MonitorConfig, mut telemetry: Telemetry) -> Result<Self> {
        if config.summary_every == 0 {
            return Err(Error::InvalidConfig { field: "summary_every", value: "0".into(), reason: "must be >= 1" });
        }
        if config.log_steps_every == 0 {
            return Err(Error::InvalidConfig { field: "log_steps_every", value: "0".into(), reason: "must be >= 1" });
        }
        let recorder = Recorder::new(config.recorder.clone())?;
        let detectors = Detectors::new(config.detectors.clone())?;
        let recovery = RecoveryPolicy::new(config.recovery.clone())?;
        let log = config.log.as_ref().map(EventLog::open).transpose()?;
        let progress = Progress::new(config.progress, config.total_steps);
        let start = RunStart {
            run: config.run.clone(),
            unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            attributes: config.attributes.clone(),
        };
        telemetry.run_start(&start);
        let mut monitor = Monitor {
            config,
            recorder,
            detectors,
            recovery,
            log,
            telemetry,
            progress,
            started: Instant::now(),
            epoch: None,
            last_step: 0,
            batch_size: 0,
            widths: Vec::new(),
            anomalies: 0,
            rollbacks: 0,
            unlogged_step: None,
            logged_a_step: false,
            id: NEXT_MONITOR.fetch_add(1, Ordering::Relaxed),
        };
        monitor.write(&Event::RunStart(start))?;
        Ok(monitor)
    }

    /// Records one optimiser step, runs the detectors and the recovery policy.
    ///
    /// A change of batch size or widths restarts the throughput baseline (samples/s moves for
    /// a reason then); a new `epoch` closes the previous one if [`Monitor::end_epoch`] was not
    /// called.
    pub fn step(&mut self, facts: StepFacts) -> Result<StepOutcome> {
        if self.epoch.as_ref().is_none_or(|e| e.epoch != facts.epoch) {
            self.end_epoch()?;
            self.telemetry.epoch_start(facts.epoch);
            self.epoch =
                Some(EpochState { epoch: facts.epoch, started: Instant::now(), samples: 0, last_step: facts.step });
        }
        if facts.batch_size != self.batch_size || facts.widths != self.widths {
            if self.recorder.steps() > 0 {
                self.recorder.reset_throughput();
                self.detectors.reset_throughput();
            }
            self.batch_size = facts.batch_size;
            self.widths.clone_from(&facts.widths);
        }
        if let Some(e) = &mut self.epoch {
            e.samples += facts.samples;
            e.last_step = facts.step;
        }
        self.last_step = facts.step;
        let record = self.recorder.record(facts);
        let mut outcome = StepOutcome::default();
        self.detectors.observe(&record, &mut outcome.anomalies);
        self.telemetry.step(&record);
        self.progress.step(&record);
        let step = record.step;
        let log_it =
            !self.logged_a_step || step.is_multiple_of(self.config.log_steps_every) || !outcome.anomalies.is_empty();
        if log_it {
            self.unlogged_step = None;
            self.logged_a_step = true;
            self.append(&Event::Step(record))?;
        } else {
            self.unlogged_step = Some(record);
        }
        for a in &outcome.anomalies {
            self.anomalies += 1;
            tracing::warn!(step = a.step, kind = a.kind.as_str(), value = a.value, threshold = a.threshold, "anomaly");
            self.telemetry.anomaly(a);
            self.progress.println(&format!(
                "anomaly at step {}: {} (value {:.4e}, threshold {:.4e})",
                a.step,
                a.kind.as_str(),
                a.value,
                a.threshold
            ));
            self.write(&Event::Anomaly(a.clone()))?;
        }
        outcome.recovery = self.recovery.decide(&outcome.anomalies);
        if let Some(Recovery::Abort { cause, reason }) = &outcome.recovery {
            tracing::error!(step, cause = cause.as_str(), ?reason, "recovery gave up");
        }
        if self.recorder.steps().is_multiple_of(self.config.summary_every) {
            self.summary()?;
        }
        Ok(outcome)
    }

    /// Closes the current epoch: writes `epoch` and `summary` events, ends the epoch span.
    /// Does nothing if no epoch is open.
    pub fn end_epoch(&mut self) -> Result<()> {
        let Some(e) = self.epoch.take() else { return Ok(()) };
        let end = EpochEnd {
            epoch: e.epoch,
            step: e.last_step,
            samples: e.samples,
            seconds: e.started.elapsed().as_secs_f64(),
        };
        self.telemetry.epoch_end(&end);
        self.progress.epoch_end(&end);
        self.write(&Event::Epoch(end))?;
        self.summary()
    }

    /// Records a validation pass.
    pub fn evaluation(&mut self, e: Evaluation) -> Result<()> {
        self.telemetry.evaluation(&e);
        self.progress.evaluation(&e);
        self.write(&Event::Evaluation(e))
    }

    /// Records a decision of the tuning agent.
    pub fn decision(&mut self, d: Decision) -> Result<()> {
        self.telemetry.decision(&d);
        self.write(&Event::Decision(d))
    }

    /// The trainer took an in-memory snapshot (weights + optimiser state) after `step`. Returns
    /// `false` when the snapshot must not be kept (that step diverged). Take one before the
    /// first step too (`step` 0), so that there is always something to roll back to.
    pub fn snapshot_taken(&mut self, step: u64) -> bool {
        self.recovery.snapshot_taken(step)
    }

    /// Changes the number of steps the progress view expects the run to take (after a
    /// batch-size change, say).
    pub fn set_total_steps(&mut self, total_steps: u64) {
        self.progress.set_total_steps(total_steps);
    }

    /// The number of steps the progress view expects, if known.
    pub fn total_steps(&self) -> Option<u64> {
        self.progress.total_steps()
    }

    /// The state to save with a checkpoint (see [`MonitorState`]).
    pub fn state(&self) -> MonitorState {
        MonitorState { detectors: self.detectors.state(), recovery: self.recovery.state() }
    }

    /// Continues from a saved [`MonitorState`] (of a monitor with the same detector
    /// thresholds); a state they could not have produced is an [`Error::InvalidConfig`].
    pub fn restore_state(&mut self, state: MonitorState) -> Result<()> {
        self.detectors.restore(state.detectors)?;
        self.recovery.restore(state.recovery);
        Ok(())
    }

    /// The trainer wrote a checkpoint: logs it and fsyncs the log.
    pub fn checkpoint(&mut self, step: u64, path: Option<&std::path::Path>) -> Result<()> {
        self.write(&Event::Checkpoint(Checkpoint { step, path: path.map(|p| p.display().to_string()) }))?;
        self.sync()
    }

    /// The trainer acted on a [`Recovery::RollBack`]: logs it, counts it, tells telemetry.
    pub fn rolled_back(&mut self, r: Rollback) -> Result<()> {
        self.rollbacks += 1;
        tracing::warn!(
            step = r.step,
            to_step = r.to_step,
            lr_before = r.lr_before,
            lr_after = r.lr_after,
            cause = r.cause.as_str(),
            "rolled back"
        );
        self.telemetry.rollback(&r);
        self.progress.println(&format!(
            "rolled back from step {} to step {} after {}; lr {:.3e} -> {:.3e}",
            r.step,
            r.to_step,
            r.cause.as_str(),
            r.lr_before,
            r.lr_after
        ));
        self.write(&Event::Rollback(r))?;
        self.sync()
    }

    /// GPU memory in use, measured by the trainer (see [`Recorder::set_gpu_memory`]).
    pub fn set_gpu_memory(&mut self, bytes: Option<u64>) {
        self.recorder.set_gpu_memory(bytes);
    }

    /// The GPU's memory now, measured by the trainer (e.g. `GpuProbe::memory`, `cuda`
    /// feature): kept for [`Monitor::figures`] and exported as gauges.
    pub fn set_gpu(&mut self, memory: crate::GpuMemory) {
        self.recorder.set_gpu(memory);
        self.telemetry.gpu_memory(&memory);
    }

    /// The rolling figures now.
    pub fn figures(&self) -> Figures {
        self.recorder.figures()
    }

    /// Fsyncs the event log.
    pub fn sync(&mut self) -> Result<()> {
        match &mut self.log {
            Some(log) => log.sync(),
            None => Ok(()),
        }
    }

    /// Pushes telemetry recorded so far.
    pub fn flush_telemetry(&self) -> Result<()> {
        self.telemetry.flush()
    }

    /// Ends the run: closes the epoch, writes `run_end`, fsyncs the log, flushes and shuts down
    /// telemetry. A telemetry error is returned after the log is safe.
    pub fn finish(mut self, outcome: Outcome) -> Result<RunSummary> {
        self.end_epoch()?;
        let end = RunEnd {
            step: self.last_step,
            seconds: self.started.elapsed().as_secs_f64(),
            outcome,
            anomalies: self.anomalies,
            rollbacks: self.rollbacks,
        };
        self.telemetry.run_end(&end);
        self.write(&Event::RunEnd(end))?;
        self.sync()?;
        self.progress.finish();
        self.telemetry.shutdown()?;
        Ok(RunSummary {
            figures: self.recorder.figures(),
            anomalies: self.anomalies,
            rollbacks: self.rollbacks,
            events_logged: self.log.as_ref().map_or(0, EventLog::events_written),
        })
    }

    fn summary(&mut self) -> Result<()> {
        if self.recorder.steps() == 0 {
            return Ok(());
        }
        let figures = self.recorder.figures();
        self.recorder.end_window();
        self.write(&Event::Summary(figures))
    }

    /// Appends `event` after the last step if that was not logged yet.
    fn write(&mut self, event: &Event) -> Result<()> {
        if let Some(step) = self.unlogged_step.take() {
            self.append(&Event::Step(step))?;
        }
        self.append(event)
    }

    /// Appends `event`, first with a [`RunResume`] when another monitor of this process wrote
    /// to a log since this one last did (runs that share one file stay attributable).
    fn append(&mut self, event: &Event) -> Result<()> {
        let Some(log) = &mut self.log else { return Ok(()) };
        let previous = LAST_WRITER.swap(self.id, Ordering::Relaxed);
        if previous != self.id && log.events_written() > 0 {
            log.append(&Event::RunResume(RunResume { run: self.config.run.clone(), step: self.last_step }))?;
        }
        log.append(event)
    }
}
