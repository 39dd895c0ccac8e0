//! One trial of a study: an [`Env`] with its bookkeeping, kept in a [`StudyStore`] so that
//! it can be paused (ASHA), copied from (PBT), checkpointed and resumed after a crash.
//!
//! A trial's checkpoint is one store row holding the run's [`RunCheckpoint`] (weights with
//! their spec, optimiser moments, schedule, batch size, data position) and, as JSON, the
//! environment's [`EnvState`] and the trial's [`Tally`] (rewards so far and the episode the
//! policy will learn from). Decision and evaluation rows written after the checkpoint are
//! deleted when the trial is resumed from it, so the store never holds a decision twice.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tuneforge_monitor::{Decision, Monitor, MonitorConfig, Outcome, ProgressMode, Telemetry};
use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};

use crate::data::{DataSource, Prepared};
use crate::env::{Action, Env, EnvConfig, EnvState, Move, Observation, Transition};
use crate::run::{Run, RunCheckpoint, RunConfig, RunCursor};
use crate::store::{CheckpointRow, DecisionRow, EvaluationRow, StudyStore, TrialRow};
use crate::{Error, Result};

/// A trial's `events.jsonl` holds a `step` event every this many steps (and at each
/// evaluation, decision, checkpoint, rollback, anomaly and the trial's ends: see
/// [`MonitorConfig::log_steps_every`]). Every step would be ~300 bytes each: 175 MB for the
/// README's 60-s digits study, whose small model takes thousands of steps a second.
pub const LOG_STEPS_EVERY: u64 = 10;

/// How a trial starts: what the strategy chose before any action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialStart {
    /// Starting architecture preset.
    pub model: String,
    /// Starting learning rate.
    pub lr: f64,
    /// Starting batch size.
    pub batch_size: usize,
    /// Seed of the weights and the data order.
    pub seed: u64,
}

/// A trial's running totals, saved with each checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// Sum of the rewards so far, the first interval's ([`Env::start_reward`]) included
    /// (plus the final validation macro-F1 once ended).
    pub reward: f64,
    /// Validation macro-F1 of the untrained model ([`Env::untrained_f1`]).
    #[serde(default)]
    pub untrained_f1: Option<f64>,
    /// Decisions that changed something.
    pub applied: u64,
    /// Decision rows written (the next row's index).
    pub rows: u64,
    /// Sum of the intervals' samples/s (for the mean).
    pub sps_sum: f64,
    /// Intervals trained after the first one.
    pub intervals: u64,
    /// The decisions of the episode, for the policy's update, each with its *shaped* reward
    /// ([`crate::env::Transition::shaped_reward`]).
    pub episode: Vec<(Observation, Action, f64)>,
    /// ASHA and rl: validation macro-F1 at each rung reached.
    pub rungs: Vec<f64>,
    /// PBT: times this member took another's weights.
    pub exploits: u64,
    /// PB2: this member's rounds so far and the one under way ([`crate::pb2`]).
    #[serde(default)]
    pub pb2: Pb2Rounds,
    /// Seconds spent choosing actions and learning (observation, policy, update).
    pub agent_seconds: f64,
    /// Seconds spent writing to the study store (decisions, evaluations, checkpoints).
    #[serde(default)]
    pub store_seconds: f64,
    /// Wall-clock seconds the trial has run: its first interval and every step (training,
    /// evaluation, decision, store writes), across pauses and resumes; what a trial time
    /// limit (`TuneConfig::trial_timeout`) counts. Absent in checkpoints written before it.
    #[serde(default)]
    pub seconds: f64,
}

/// A `pb2` member's rounds: the ones it has finished (what [`crate::pb2::suggest`] learns
/// from) and the one under way (its start, settings and validation macro-F1 then).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pb2Rounds {
    /// The rounds finished in this trial.
    pub done: Vec<crate::pb2::Round>,
    /// The round under way: `gain` holds the validation macro-F1 at its start.
    pub open: Option<crate::pb2::Round>,
}

/// A trial in memory.
#[derive(Debug)]
pub struct Trial {
    /// Trial id (0-based, in start order).
    pub id: u64,
    /// The environment.
    pub env: Env,
    /// How it started.
    pub start: TrialStart,
    /// Running totals.
    pub tally: Tally,
    /// `true` if it was continued from a checkpoint after its process died.
    pub resumed: bool,
    /// When it started (Unix seconds).
    pub started_unix: f64,
    last_checkpoint: Instant,
}

/// The checkpoint's JSON part.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointState {
    cursor: RunCursor,
    env: EnvState,
    tally: Tally,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A random generator for one purpose of one trial, derived from the study seed, so that
/// nothing random needs saving: a resumed study draws the same numbers.
pub fn rng_for(seed: u64, trial: u64, index: u64, purpose: u64) -> rand::rngs::StdRng {
    let mut z = seed ^ trial.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.rotate_left(21) ^ purpose.rotate_left(42);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rand::rngs::StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A short name for an action: `keep`, or e.g. `lr*2,batch*0.5,width*1.5`.
pub fn action_name(a: Action) -> String {
    let mut parts = Vec::new();
    for (name, m, down, up) in
        [("lr", a.lr, "0.5", "2"), ("batch", a.batch, "0.5", "2"), ("width", a.width, "0.75", "1.5")]
    {
        match m {
            Move::Down => parts.push(format!("{name}*{down}")),
            Move::Up => parts.push(format!("{name}*{up}")),
            Move::Keep => {}
        }
    }
    if parts.is_empty() { "keep".into() } else { parts.join(",") }
}

/// What trials of one study share.
pub struct TrialContext<'a> {
    /// The data, prepared once for the study (one validation split for every trial).
    pub data: &'a Prepared,
    /// The data's name.
    pub source: &'a DataSource,
    /// The device.
    pub device: &'a candle_core::Device,
    /// The environment's settings.
    pub env: &'a EnvConfig,
    /// The study's event log (appended to).
    pub events: &'a Path,
    /// Progress view of each trial's monitor.
    pub progress: ProgressMode,
    /// Steps between two logged step events (see [`MonitorConfig::log_steps_every`]).
    pub log_steps_every: u64,
    /// Minimum time between two checkpoints of a running trial (zero: at every decision).
    pub checkpoint_every: Duration,
    /// The learning-rate schedule of every trial.
    pub schedule: ScheduleConfig,
    /// Fraction of the training rows held out for validation.
    pub val_fraction: f64,
    /// The store.
    pub store: &'a mut dyn StudyStore,
    /// Study wall time used, for the store.
    pub elapsed: &'a dyn Fn() -> f64,
}

impl TrialContext<'_> {
    /// The study's schedule in the steps of a trial that starts at `batch_size`: the study's
    /// is in steps of `unit_batch` rows (like the budget), so a trial starting at twice the
    /// unit gets a cosine half as many steps long — it ends with the trial's rows either way.
    fn trial_schedule(&self, batch_size: usize) -> ScheduleConfig {
        match self.schedule {
            ScheduleConfig::Cosine { total_steps, warmup_steps, min_lr } => ScheduleConfig::Cosine {
                total_steps: self.steps_at(total_steps, batch_size),
                warmup_steps: self.steps_at(warmup_steps, batch_size),
                min_lr,
            },
            ref other => other.clone(),
        }
    }

    /// `unit_steps` steps of `unit_batch` rows (how the budget and the study's schedule are
    /// counted) as steps of `batch_size` rows, rounded up.
    fn steps_at(&self, unit_steps: u64, batch_size: usize) -> u64 {
        let unit = self.env.unit_batch.unwrap_or(batch_size) as u64;
        unit_steps.saturating_mul(unit).div_ceil(batch_size.max(1) as u64)
    }

    /// The run configuration of a trial that starts as `start`.
    pub fn run_config(&self, start: &TrialStart) -> RunConfig {
        RunConfig {
            data: self.source.clone(),
            model: start.model.clone(),
            epochs: 1,
            batch_size: start.batch_size,
            optimizer: OptimizerConfig::Adam(AdamConfig { lr: start.lr, ..Default::default() }),
            schedule: self.trial_schedule(start.batch_size),
            seed: start.seed,
            clip_norm: None,
            val_fraction: self.val_fraction,
            snapshot_every: 100,
            inject_nan_at: None,
            patience: None,
        }
    }

    fn run(&self, id: u64, start: &TrialStart) -> Result<Run> {
        let config = self.run_config(start);
        let run = Run::with_data(config, self.data.clone(), self.device)?;
        let monitor = MonitorConfig {
            run: format!("trial-{id}"),
            log: Some(self.events.to_path_buf()),
            progress: self.progress,
            // The budget is in rows (see `EnvConfig::unit_batch`): the steps it takes at the
            // starting batch size (`Env` resets it at each interval after a batch change).
            total_steps: Some(self.steps_at(self.env.budget_steps, start.batch_size)),
            log_steps_every: self.log_steps_every,
            attributes: [
                ("trial".to_string(), id.to_string()),
                ("model".to_string(), start.model.clone()),
                ("lr".to_string(), start.lr.to_string()),
                ("batch_size".to_string(), start.batch_size.to_string()),
                ("device".to_string(), run.device_label()),
            ]
            .into_iter()
            .collect(),
            ..MonitorConfig::default()
        };
        run.with_monitor(Monitor::new(monitor, Telemetry::disabled())?)
    }

    /// Starts a new trial (trains its first interval) and records it as running.
    pub fn start(&mut self, id: u64, start: TrialStart) -> Result<Trial> {
        let t = Instant::now();
        let run = self.run(id, &start)?;
        let env = Env::new(run, self.env.clone())?;
        let tally = Tally {
            reward: env.start_reward().unwrap_or(0.0),
            untrained_f1: env.untrained_f1(),
            seconds: t.elapsed().as_secs_f64(),
            ..Tally::default()
        };
        let mut trial =
            Trial { id, env, start, tally, resumed: false, started_unix: unix_now(), last_checkpoint: Instant::now() };
        self.store.save_trial(&trial.row("running"), (self.elapsed)())?;
        self.evaluation_row(&trial)?;
        trial.last_checkpoint = Instant::now();
        Ok(trial)
    }

    /// Brings back a trial from its row: from its checkpoint if it has one (rows written
    /// after it are deleted), else from its start. `resumed` marks a trial whose process
    /// died; a trial paused by ASHA is not "resumed".
    pub fn restore(&mut self, row: &TrialRow, resumed: bool) -> Result<Trial> {
        let start: TrialStart = serde_json::from_str(&row.config).map_err(|e| Error::Config {
            what: "study store",
            why: format!("trial {}: its config is not a trial start: {e}", row.id),
        })?;
        let Some(ck) = self.store.checkpoint(row.id)? else {
            self.store.rewind(row.id, 0)?;
            let mut trial = self.start(row.id, start)?;
            trial.resumed = resumed;
            trial.started_unix = row.started_unix;
            return Ok(trial);
        };
        let origin = format!("study.sqlite, checkpoint of trial {}", row.id);
        let state: CheckpointState = serde_json::from_str(&ck.state)
            .map_err(|e| Error::Config { what: "study store", why: format!("{origin}: {e}") })?;
        let mut run = self.run(row.id, &start)?;
        let checkpoint = RunCheckpoint { cursor: state.cursor, model: ck.model, optimizer: ck.optimizer };
        run.restore(&checkpoint, Path::new(&origin))?;
        self.store.rewind(row.id, state.tally.rows)?;
        let env = Env::resume(run, self.env.clone(), state.env)?;
        Ok(Trial {
            id: row.id,
            env,
            start,
            tally: state.tally,
            resumed: resumed || row.resumed,
            started_unix: row.started_unix,
            last_checkpoint: Instant::now(),
        })
    }

    /// Applies `action`, trains one interval, records the decision (store and event log)
    /// and checkpoints when due. `agent_seconds` is the time the caller spent choosing.
    pub fn step(&mut self, trial: &mut Trial, action: Action, agent_seconds: f64) -> Result<Transition> {
        let t0 = Instant::now();
        let observation = trial.env.observe().clone();
        let step = trial.env.run().step();
        let t = trial.env.step(action)?;
        trial.tally.reward += t.reward;
        trial.tally.sps_sum += t.samples_per_s;
        trial.tally.intervals += 1;
        trial.tally.agent_seconds += agent_seconds;
        if t.applied != Action::KEEP {
            trial.tally.applied += 1;
        }
        trial.tally.episode.push((observation.clone(), action, t.shaped_reward));
        let row = DecisionRow {
            trial: trial.id,
            idx: trial.tally.rows,
            step,
            observation: json(&observation),
            action: json(&action),
            applied: json(&t.applied),
            reward: t.reward,
            val_macro_f1: t.val_f1,
            samples_per_s: t.samples_per_s,
            at_unix: unix_now(),
        };
        let t_store = Instant::now();
        // The evaluation made with the decision counts it (idx: decisions before it).
        let evaluation = self.evaluation(trial, trial.tally.rows + 1);
        self.store.add_decision_evaluated(&row, evaluation.as_ref())?;
        trial.tally.rows += 1;
        trial.tally.store_seconds += t_store.elapsed().as_secs_f64();
        let run = trial.env.run_mut();
        let (lr, batch_size) = (run.learning_rate(), run.batch_size() as u32);
        let widths = run.model().spec().hidden_widths().into_iter().map(|w| w as u32).collect();
        if let Some(m) = run.monitor_mut() {
            m.decision(Decision {
                step,
                action: action_name(t.applied),
                lr,
                batch_size,
                widths,
                reward: Some(t.reward),
            })?;
        }
        // (Counted before a checkpoint, which then keeps it.)
        trial.tally.seconds += t0.elapsed().as_secs_f64() + agent_seconds;
        if !t.done && trial.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint(trial, "running")?;
        }
        Ok(t)
    }

    /// The row of the trial's latest validation evaluation, made after `idx` decisions.
    fn evaluation(&self, trial: &Trial, idx: u64) -> Option<EvaluationRow> {
        trial.env.last_evaluation().map(|e| EvaluationRow {
            trial: trial.id,
            idx,
            step: trial.env.run().step(),
            split: "validation".into(),
            macro_f1: e.report.macro_avg.f1,
            accuracy: e.report.accuracy,
            loss: e.loss,
            at_unix: unix_now(),
        })
    }

    fn evaluation_row(&mut self, trial: &Trial) -> Result<()> {
        match self.evaluation(trial, trial.tally.rows) {
            Some(e) => self.store.add_evaluation(&e),
            None => Ok(()),
        }
    }

    /// Saves the trial's checkpoint with its row in state `status` (one transaction).
    pub fn checkpoint(&mut self, trial: &mut Trial, status: &str) -> Result<()> {
        let t_store = Instant::now();
        let ck = trial.env.run().checkpoint()?;
        let state = CheckpointState { cursor: ck.cursor, env: trial.env.state(), tally: trial.tally.clone() };
        let row = CheckpointRow {
            trial: trial.id,
            step: trial.env.run().step(),
            decisions: trial.tally.rows,
            state: serde_json::to_string(&state).expect("checkpoint state serialises"),
            model: ck.model,
            optimizer: ck.optimizer,
            created_unix: unix_now(),
        };
        self.store.save_checkpoint(&trial.row(status), &row, (self.elapsed)())?;
        trial.last_checkpoint = Instant::now();
        trial.tally.store_seconds += t_store.elapsed().as_secs_f64();
        let step = row.step.saturating_sub(1);
        if let Some(m) = trial.env.run_mut().monitor_mut() {
            m.checkpoint(step, None)?;
        }
        Ok(())
    }

    /// Ends a trial: `completed` when its step budget is spent, else `stopped` (budget of
    /// the study, or pruned); adds the final validation macro-F1 to its reward if the
    /// environment did not (it does when the episode ends), closes its event log and records
    /// it, with `policy` (JSON) in the same transaction. With `keep`, the final state is
    /// checkpointed (the study's best so far), otherwise its checkpoint is deleted.
    pub fn finish(&mut self, trial: &mut Trial, policy: Option<&str>, keep: bool) -> Result<TrialRow> {
        let done = trial.env.done();
        if !done {
            trial.tally.reward += trial.env.observe().val_f1;
        }
        let status = if done { "completed" } else { "stopped" };
        if keep {
            self.checkpoint(trial, status)?;
        } else {
            self.store.delete_checkpoint(trial.id)?;
        }
        let outcome = if done { Outcome::Completed } else { Outcome::Stopped };
        trial.env.run_mut().finish_monitor(outcome)?;
        let mut row = trial.row(status);
        row.ended_unix = Some(unix_now());
        self.store.finish_trial(&row, policy, (self.elapsed)())?;
        Ok(row)
    }

    /// Records a trial that failed (its error as the status).
    pub fn fail(&mut self, trial: &mut Trial, error: &Error) -> Result<TrialRow> {
        trial.env.run_mut().finish_monitor(Outcome::Aborted).ok();
        self.store.delete_checkpoint(trial.id)?;
        let mut row = trial.row(&format!("failed: {error}"));
        row.ended_unix = Some(unix_now());
        self.store.finish_trial(&row, None, (self.elapsed)())?;
        Ok(row)
    }
}

/// A trial's record as `summary.json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial id.
    pub id: u64,
    /// `running`, `paused`, `completed`, `stopped` or `failed: …`.
    pub status: String,
    /// Latest validation macro-F1.
    pub val_macro_f1: f64,
    /// Mean training samples/s over its intervals.
    pub samples_per_s: f64,
    /// Decisions that changed something.
    pub decisions: u64,
    /// Sum of rewards (with the final validation macro-F1 once ended): the first interval's
    /// F1 gain over the untrained model, each decision's, the final F1.
    pub reward: f64,
    /// Validation macro-F1 of the untrained model (the reward's starting point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained_val_f1: Option<f64>,
    /// `true` if it was continued from a checkpoint after its process died.
    pub resumed: bool,
    /// How it started.
    pub start: TrialStart,
    /// Learning rate, batch size and hidden widths now.
    pub final_hparams: Hparams,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Training rows seen: the budget's measure (`budget_steps × unit_batch` for a trial
    /// that ran to its end). Absent in records written before it was kept.
    #[serde(default)]
    pub samples: u64,
    /// ASHA and rl: validation macro-F1 at each rung reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<f64>,
    /// PBT: times it took another member's weights.
    #[serde(default)]
    pub exploits: u64,
    /// PB2: its rounds ([`crate::pb2::Round`]), which later generations learn from too
    /// (absent for other strategies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pb2_rounds: Vec<crate::pb2::Round>,
    /// Seconds of agent work (observation, policy, update).
    pub agent_seconds: f64,
    /// Seconds spent writing it to the study store (checkpoints included).
    #[serde(default)]
    pub store_seconds: f64,
    /// Wall-clock seconds it ran (its first interval and every step; 0 in records written
    /// before it was kept).
    #[serde(default)]
    pub seconds: f64,
}

impl TrialRecord {
    /// The record of a trial that has not trained yet (or failed before its first
    /// interval): its start and `status`, every figure zero.
    pub(crate) fn unstarted(id: u64, start: &TrialStart, status: &str) -> TrialRecord {
        TrialRecord {
            id,
            status: status.into(),
            val_macro_f1: 0.0,
            samples_per_s: 0.0,
            decisions: 0,
            reward: 0.0,
            untrained_val_f1: None,
            resumed: false,
            final_hparams: Hparams { lr: start.lr, batch_size: start.batch_size, widths: Vec::new() },
            start: start.clone(),
            steps: 0,
            samples: 0,
            rungs: Vec::new(),
            exploits: 0,
            pb2_rounds: Vec::new(),
            agent_seconds: 0.0,
            store_seconds: 0.0,
            seconds: 0.0,
        }
    }
}

/// A configuration at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hparams {
    /// Learning rate: the schedule's base (its peak, for a cosine schedule).
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Hidden widths.
    pub widths: Vec<usize>,
}

impl Trial {
    /// Its record now.
    pub fn record(&self, status: &str) -> TrialRecord {
        let run = self.env.run();
        TrialRecord {
            id: self.id,
            status: status.to_string(),
            val_macro_f1: self.env.observe().val_f1,
            samples_per_s: if self.tally.intervals > 0 {
                self.tally.sps_sum / self.tally.intervals as f64
            } else {
                self.env.run().samples_per_s()
            },
            decisions: self.tally.applied,
            reward: self.tally.reward,
            untrained_val_f1: self.tally.untrained_f1,
            resumed: self.resumed,
            start: self.start.clone(),
            final_hparams: Hparams {
                lr: run.base_learning_rate(),
                batch_size: run.batch_size(),
                widths: run.model().spec().hidden_widths(),
            },
            steps: self.env.optimizer_steps(),
            samples: self.env.samples(),
            rungs: self.tally.rungs.clone(),
            exploits: self.tally.exploits,
            pb2_rounds: self.tally.pb2.done.clone(),
            agent_seconds: self.tally.agent_seconds,
            store_seconds: self.tally.store_seconds,
            seconds: self.tally.seconds,
        }
    }

    /// Its store row now.
    pub fn row(&self, status: &str) -> TrialRow {
        let record = self.record(status);
        TrialRow {
            id: self.id,
            status: status.to_string(),
            config: serde_json::to_string(&self.start).expect("trial start serialises"),
            record: serde_json::to_string(&record).expect("trial record serialises"),
            val_macro_f1: Some(record.val_macro_f1),
            samples_per_s: Some(record.samples_per_s),
            reward: record.reward,
            decisions: record.decisions,
            resumed: self.resumed,
            started_unix: self.started_unix,
            updated_unix: unix_now(),
            ended_unix: None,
            pid: std::process::id(),
        }
    }
}

/// JSON of plain data.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}
