//! A training run as a reinforcement-learning environment.
//!
//! [`Env`] wraps a [`Run`]: [`Env::observe`] describes the run's state, [`Env::step`] applies
//! an [`Action`] — learning rate ×{½, 1, 2}, batch size ×{½, 1, 2}, hidden widths
//! ×{¾, 1, 3⁄2} — then trains for one decision interval and evaluates on the validation
//! split. Actions are clamped to [`Bounds`]; widening is function-preserving and narrowing
//! drops the least important units, both with the optimiser state carried over
//! ([`Run::resize_hidden`]).
//!
//! Reward of a decision: `Δ validation macro-F1 + λ · ln(samples/s ÷ reference samples/s)`,
//! the reference being the throughput of the run's first interval; when the budget is spent
//! the final validation macro-F1 is added. Both objectives are reported separately in every
//! [`Transition`], so a caller can keep the F1/throughput front. `λ` is a weight *per
//! decision*; its default ([`EnvConfig::default_lambda`]) is [`TRIAL_LAMBDA`] = 0.01 divided
//! by the number of decisions in a trial, so that a trial run at ρ× the reference throughput
//! throughout earns `0.01 · ln ρ` however often it decides: a doubling is worth about 0.007,
//! i.e. ≈ 0.35 points of the final macro-F1 (which the reward counts twice, see below). That
//! is about what speed buys a study: every trial trains the same rows, so a trial twice as
//! fast only lets the budget hold twice the trials, and the best of 2N trials whose F1
//! spreads by σ is better than the best of N by about `σ(√(2 ln 2N) − √(2 ln N))` ≈ 0.2σ for
//! N ≈ 100 — 0.3–0.4 points with the σ ≈ 0.015–0.02 of Fashion-MNIST's trials. The earlier
//! default, 0.14 (a doubling worth ≈ 4.9 points), paid the policy to take every trial to the
//! largest batch and learning rate at a cost in F1 no user wants (docs/benchmarks.md, "tuneforge
//! vs Optuna"). With 800-step trials deciding every 100 steps (7 decisions) λ is 0.0014. A fixed
//! λ per decision would let the trial's length set the F1/speed trade-off.
//!
//! The budget and the decision interval are counted in training *rows*:
//! [`EnvConfig::budget_steps`] and [`EnvConfig::decision_steps`] are steps of
//! [`EnvConfig::unit_batch`] rows (a study's default batch size). A larger batch gets through
//! the same rows in fewer, faster steps but does not get more of them, and the run's
//! learning-rate schedule is re-timed with each batch change ([`Run::set_batch_size`]) so a
//! cosine still ends with the budget. Counted in optimiser steps, a batch ×8 bought a trial
//! 8× the data, which the F1 term then paid for as if it were the policy's skill.
//!
//! The first interval, trained before any decision with the run's *starting* configuration,
//! is rewarded like a decision whose action was that configuration: [`Env::start_reward`] =
//! its F1 minus the untrained model's ([`Env::untrained_f1`], evaluated in [`Env::new`]);
//! its throughput term is 0, it being the reference. Adding it, an episode's rewards sum to
//! `2 · final F1 − untrained F1 + λ · Σ ln ρ` whatever the start: a strategy that starts
//! badly is not paid for the F1 it then recovers.
//!
//! A learner may prefer [`Transition::shaped_reward`], `2 · ΔF1 + λ · ln ρ` for every
//! decision, the last included: the reward plus `Φ(s') − Φ(s)` with the potential `Φ` = the
//! validation F1 (0 after the end), so an episode's shaped rewards sum to its rewards minus
//! the F1 before its first decision, which no decision can change. Potential-based shaping
//! keeps the optimal policies (Ng, Harada & Russell, 1999, "Policy invariance under reward
//! transformations") and removes the end-of-episode jump of ≈ the final F1, which a critic
//! would otherwise have to learn before any advantage means something.

use serde::{Deserialize, Serialize};
use tuneforge_loader::Dataset;
use tuneforge_model::WidenOptions;

use crate::run::Run;
use crate::{Error, Result};

/// A three-way choice of one factored action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Move {
    /// Halve (lr, batch) or ×¾ (width).
    Down,
    /// Leave unchanged.
    Keep,
    /// Double (lr, batch) or ×1½ (width).
    Up,
}

impl Move {
    /// The three moves, in index order.
    pub const ALL: [Move; 3] = [Move::Down, Move::Keep, Move::Up];

    /// This move's index in [`Move::ALL`].
    pub fn index(self) -> usize {
        match self {
            Move::Down => 0,
            Move::Keep => 1,
            Move::Up => 2,
        }
    }
}

/// One decision: a move for the learning rate, the batch size and the hidden widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Action {
    /// Learning rate ×{½, 1, 2}.
    pub lr: Move,
    /// Batch size ×{½, 1, 2}.
    pub batch: Move,
    /// Every hidden width ×{¾, 1, 1½}.
    pub width: Move,
}

impl Action {
    /// Number of distinct actions (3³).
    pub const COUNT: usize = 27;

    /// Change nothing.
    pub const KEEP: Action = Action { lr: Move::Keep, batch: Move::Keep, width: Move::Keep };

    /// The action with index `i` in `0..27` (lr major, width minor).
    pub fn from_index(i: usize) -> Option<Action> {
        (i < Self::COUNT).then(|| Action {
            lr: Move::ALL[i / 9],
            batch: Move::ALL[(i / 3) % 3],
            width: Move::ALL[i % 3],
        })
    }

    /// This action's index in `0..27`.
    pub fn index(self) -> usize {
        self.lr.index() * 9 + self.batch.index() * 3 + self.width.index()
    }
}

/// Limits the actions are clamped to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Learning rate range (of the schedule's base rate).
    pub lr: (f64, f64),
    /// Batch size range.
    pub batch: (usize, usize),
    /// Hidden width range (units or channels).
    pub width: (usize, usize),
    /// The learning rate also stays within ×/÷ this factor of the episode's starting rate
    /// (default 2⁷ = 128: seven doublings). A policy that raised the rate at every decision of
    /// a long trial otherwise reached the absolute bound (1.0) and killed the run.
    #[serde(default = "default_lr_span")]
    pub lr_span: f64,
    /// A hidden layer is not narrowed below this fraction of its width at the episode's start
    /// (default 1: narrowing takes back what widening added, never less than the architecture
    /// the trial started with; ½ lets it halve a layer; 0 turns the floor off). A policy taught
    /// on digits, where narrow MLPs cost no F1, shrank seed-cnn's 32/64 channels to 8/8 on
    /// Fashion-MNIST (best test macro-F1 0.889 in 10 minutes) and, with a floor of ½, to 16/32
    /// (0.895); rl without the width action kept 32/64 and reached 0.903–0.913 in 4 minutes.
    #[serde(default = "default_width_floor")]
    pub width_floor: f64,
}

fn default_lr_span() -> f64 {
    128.0
}

fn default_width_floor() -> f64 {
    1.0
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            lr: (1e-5, 1.0),
            batch: (16, 1024),
            width: (8, 2048),
            lr_span: default_lr_span(),
            width_floor: default_width_floor(),
        }
    }
}

/// The throughput weight of a whole trial: [`EnvConfig::default_lambda`] divides it among
/// the trial's decisions (see the module docs for why 0.01).
pub const TRIAL_LAMBDA: f64 = 0.01;

/// How the environment runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Optimiser steps between decisions.
    pub decision_steps: usize,
    /// Weight of the throughput term of each decision's reward (see the module docs;
    /// [`EnvConfig::default_lambda`] for the default).
    pub lambda: f64,
    /// Action limits.
    pub bounds: Bounds,
    /// Training budget in optimiser steps of [`unit_batch`](Self::unit_batch) rows: the
    /// episode ends when it has trained on `budget_steps × unit_batch` rows, whatever batch
    /// sizes it used on the way (see [`Env::steps`]). `decision_steps` is counted the same
    /// way.
    pub budget_steps: u64,
    /// The batch size the budget's steps are counted in; `None`: the episode's starting
    /// batch size. A study sets its default batch size, so that every trial gets the same
    /// rows whatever batch size it starts or ends with.
    #[serde(default)]
    pub unit_batch: Option<usize>,
}

impl EnvConfig {
    /// Decisions in a full episode: one after every interval but the first and the last
    /// (the first is trained with the starting configuration; the last one's end is the
    /// episode's). At least 1.
    pub fn decisions_per_episode(decision_steps: usize, budget_steps: u64) -> u64 {
        let intervals = budget_steps.div_ceil(decision_steps.max(1) as u64);
        intervals.saturating_sub(1).max(1)
    }

    /// The default λ: [`TRIAL_LAMBDA`] ÷ [`EnvConfig::decisions_per_episode`] (0.0014 for
    /// 800-step trials deciding every 100 steps).
    pub fn default_lambda(decision_steps: usize, budget_steps: u64) -> f64 {
        TRIAL_LAMBDA / Self::decisions_per_episode(decision_steps, budget_steps) as f64
    }
}

impl Default for EnvConfig {
    fn default() -> Self {
        let (decision_steps, budget_steps) = (50, 1000);
        EnvConfig {
            decision_steps,
            lambda: EnvConfig::default_lambda(decision_steps, budget_steps),
            bounds: Bounds::default(),
            budget_steps,
            unit_batch: None,
        }
    }
}

/// What the policy sees. All entries are finite; [`Observation::to_vec`] gives the fixed-size
/// vector form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Mean training loss of the last interval.
    pub loss: f64,
    /// Change of that mean since the previous interval.
    pub loss_delta: f64,
    /// Validation macro-F1 after the last interval.
    pub val_f1: f64,
    /// Its change since the previous interval.
    pub val_f1_delta: f64,
    /// ln of the last interval's mean gradient norm (0 when unknown).
    pub log_grad_norm: f64,
    /// log10 of the learning rate.
    pub log_lr: f64,
    /// log2 of the batch size.
    pub log2_batch: f64,
    /// Mean log2 of the hidden widths.
    pub log2_width: f64,
    /// Throughput of the last interval relative to the first one.
    pub rel_throughput: f64,
    /// Fraction of the budget used, in [0, 1].
    pub budget_used: f64,
    /// Fraction of the last interval's steps in which the monitor found an anomaly (loss
    /// spike, NaN, exploding gradient, throughput drop, ...; a rolled-back step counts).
    pub anomalies: f64,
}

impl Observation {
    /// Length of [`Observation::to_vec`].
    pub const LEN: usize = 11;

    /// The observation as a vector (in field order).
    pub fn to_vec(&self) -> Vec<f64> {
        vec![
            self.loss,
            self.loss_delta,
            self.val_f1,
            self.val_f1_delta,
            self.log_grad_norm,
            self.log_lr,
            self.log2_batch,
            self.log2_width,
            self.rel_throughput,
            self.budget_used,
            self.anomalies,
        ]
    }
}

/// The result of [`Env::step`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The state after the interval.
    pub observation: Observation,
    /// The reward of the decision (plus the final F1 when `done`).
    pub reward: f64,
    /// `2 · ΔF1 + λ · ln ρ`: the reward with potential-based shaping (see the module docs).
    pub shaped_reward: f64,
    /// Validation macro-F1 after the interval.
    pub val_f1: f64,
    /// Training samples/s of the interval.
    pub samples_per_s: f64,
    /// `true` when the budget is spent.
    pub done: bool,
    /// The action as applied after clamping to the bounds.
    pub applied: Action,
}

/// What an [`Env`] keeps besides its run: saved with the run's checkpoint so that a
/// resumed episode goes on with the same reference throughput and observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvState {
    /// Throughput of the first interval (the reward's reference).
    pub reference_sps: Option<f64>,
    /// The last observation.
    pub last: Observation,
    /// Progress in steps of `unit_batch` rows ([`Env::steps`]).
    pub steps: u64,
    /// Training rows seen in this episode; `None` in states saved before the budget was
    /// counted in rows (`steps × unit_batch` is assumed).
    #[serde(default)]
    pub samples: Option<u64>,
    /// The budget's unit in rows per step ([`EnvConfig::unit_batch`] or the episode's
    /// starting batch size); `None` in states saved before it was recorded (then the
    /// config's unit, else the run's batch size at resume).
    #[serde(default)]
    pub unit_batch: Option<usize>,
    /// Optimiser steps taken in this episode; `None` in states saved before it was kept
    /// apart from `steps` (which it then equals).
    #[serde(default)]
    pub optimizer_steps: Option<u64>,
    /// Seed of the next widening.
    pub widen_seed: u64,
    /// The episode's starting learning rate (the centre of [`Bounds::lr_span`]).
    #[serde(default)]
    pub start_lr: Option<f64>,
    /// The hidden widths at the episode's start (what [`Bounds::width_floor`] is a fraction
    /// of); `None` in states saved before the floor existed: no floor.
    #[serde(default)]
    pub start_widths: Option<Vec<usize>>,
}

/// A [`Run`] as an environment.
#[derive(Debug)]
pub struct Env {
    run: Run,
    config: EnvConfig,
    reference_sps: Option<f64>,
    last: Observation,
    /// Training rows seen in this episode (the budget's measure).
    samples: u64,
    /// The budget's and the decision interval's unit, in rows per step
    /// ([`EnvConfig::unit_batch`] or the starting batch size).
    unit_batch: usize,
    /// Optimiser steps taken in this episode.
    optimizer_steps: u64,
    /// Whether [`Env::step`] was called (on this value: not saved).
    decided: bool,
    widen_seed: u64,
    last_eval: Option<crate::run::Evaluation>,
    untrained_f1: Option<f64>,
    /// `None` for a checkpoint from before the span existed: no span.
    start_lr: Option<f64>,
    /// `None` for a checkpoint from before the floor existed: no floor.
    start_widths: Option<Vec<usize>>,
}

impl Env {
    /// Wraps `run` (which must have a validation split) and trains the first interval to
    /// measure the reference throughput and the first observation.
    pub fn new(run: Run, config: EnvConfig) -> Result<Env> {
        if run.data().val.is_none() {
            return Err(Error::Config { what: "environment", why: "the run needs a validation split".into() });
        }
        if config.decision_steps == 0
            || config.budget_steps == 0
            || config.unit_batch == Some(0)
            || !config.lambda.is_finite()
        {
            return Err(Error::Config {
                what: "environment",
                why: "decision_steps, budget_steps and unit_batch must be positive and lambda finite".into(),
            });
        }
        let last = Observation {
            loss: 0.0,
            loss_delta: 0.0,
            val_f1: 0.0,
            val_f1_delta: 0.0,
            log_grad_norm: 0.0,
            log_lr: 0.0,
            log2_batch: 0.0,
            log2_width: 0.0,
            rel_throughput: 1.0,
            budget_used: 0.0,
            anomalies: 0.0,
        };
        let val = env_val(&run);
        let untrained = run.evaluate(&*val)?.report.macro_avg.f1;
        let start_lr = run.base_learning_rate();
        let start_widths = run.model().spec().hidden_widths();
        let unit_batch = config.unit_batch.unwrap_or_else(|| run.batch_size());
        let mut env = Env {
            run,
            config,
            reference_sps: None,
            last,
            samples: 0,
            unit_batch,
            optimizer_steps: 0,
            decided: false,
            widen_seed: 0,
            last_eval: None,
            untrained_f1: Some(untrained),
            start_lr: Some(start_lr),
            start_widths: Some(start_widths),
        };
        env.interval()?;
        Ok(env)
    }

    /// Wraps `run` (restored from a checkpoint) in the state saved with it, without
    /// training: the episode goes on where it was.
    pub fn resume(run: Run, config: EnvConfig, state: EnvState) -> Result<Env> {
        if run.data().val.is_none() {
            return Err(Error::Config { what: "environment", why: "the run needs a validation split".into() });
        }
        let unit_batch = state.unit_batch.or(config.unit_batch).unwrap_or_else(|| run.batch_size()).max(1);
        Ok(Env {
            run,
            config,
            reference_sps: state.reference_sps,
            last: state.last,
            samples: state.samples.unwrap_or(state.steps * unit_batch as u64),
            unit_batch,
            optimizer_steps: state.optimizer_steps.unwrap_or(state.steps),
            decided: true,
            widen_seed: state.widen_seed,
            last_eval: None,
            untrained_f1: None,
            start_lr: state.start_lr,
            start_widths: state.start_widths,
        })
    }

    /// The state to save beside a checkpoint of the run.
    pub fn state(&self) -> EnvState {
        EnvState {
            reference_sps: self.reference_sps,
            last: self.last.clone(),
            steps: self.steps(),
            samples: Some(self.samples),
            unit_batch: Some(self.unit_batch),
            optimizer_steps: Some(self.optimizer_steps),
            widen_seed: self.widen_seed,
            start_lr: self.start_lr,
            start_widths: self.start_widths.clone(),
        }
    }

    /// The validation evaluation of the last interval (`None` right after [`Env::resume`]).
    pub fn last_evaluation(&self) -> Option<&crate::run::Evaluation> {
        self.last_eval.as_ref()
    }

    /// Validation macro-F1 of the untrained model, evaluated by [`Env::new`] before the
    /// first interval (`None` after [`Env::resume`]).
    pub fn untrained_f1(&self) -> Option<f64> {
        self.untrained_f1
    }

    /// The first interval's reward, its action being the starting configuration: F1 after
    /// it minus [`Env::untrained_f1`] (the throughput term is 0: it is the reference).
    /// `None` after [`Env::resume`] or once a decision was taken.
    pub fn start_reward(&self) -> Option<f64> {
        self.untrained_f1.filter(|_| !self.decided).map(|u| self.last.val_f1 - u)
    }

    /// Progress through the budget in optimiser steps of [`EnvConfig::unit_batch`] rows
    /// (training rows seen ÷ unit; the unit defaults to the starting batch size): a step
    /// at twice the unit counts two. The budget is counted in rows so that a larger batch
    /// does not buy a trial more data than a smaller one — it only gets through the same
    /// data faster.
    pub fn steps(&self) -> u64 {
        self.samples / self.unit_batch as u64
    }

    /// Training rows seen in this episode.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Optimiser steps taken in this episode (fewer than [`Env::steps`] when the batch
    /// is larger than the unit).
    pub fn optimizer_steps(&self) -> u64 {
        self.optimizer_steps
    }

    /// The budget in training rows.
    fn budget_samples(&self) -> u64 {
        self.config.budget_steps.saturating_mul(self.unit_batch as u64)
    }

    /// A decision interval in training rows.
    fn decision_samples(&self) -> u64 {
        (self.config.decision_steps as u64).saturating_mul(self.unit_batch as u64)
    }

    /// The configuration.
    pub fn config(&self) -> &EnvConfig {
        &self.config
    }

    /// The wrapped run, mutably (e.g. for population-based training's exploit step).
    pub fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    /// The current observation.
    pub fn observe(&self) -> &Observation {
        &self.last
    }

    /// The wrapped run.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Consumes the environment, giving the run back.
    pub fn into_run(self) -> Run {
        self.run
    }

    /// `true` when the budget is spent.
    pub fn done(&self) -> bool {
        self.samples >= self.budget_samples()
    }

    /// Applies `action`, trains one interval, evaluates; see the module docs for the reward.
    pub fn step(&mut self, action: Action) -> Result<Transition> {
        if self.done() {
            return Err(Error::Config { what: "environment", why: "the budget is spent".into() });
        }
        self.decided = true;
        let applied = self.apply(action)?;
        let before = self.last.val_f1;
        let sps = self.interval()?;
        let reference = self.reference_sps.unwrap_or(sps).max(1e-9);
        let gain = self.last.val_f1 - before;
        let speed = self.config.lambda * (sps.max(1e-9) / reference).ln();
        let mut reward = gain + speed;
        let done = self.done();
        if done {
            reward += self.last.val_f1;
        }
        Ok(Transition {
            observation: self.last.clone(),
            reward,
            shaped_reward: 2.0 * gain + speed,
            val_f1: self.last.val_f1,
            samples_per_s: sps,
            done,
            applied,
        })
    }

    /// Clamps and applies an action; returns what was actually applied.
    fn apply(&mut self, action: Action) -> Result<Action> {
        let b = self.config.bounds.clone();
        let mut applied = Action::KEEP;
        // The schedule's base rate: bounded and scaled, whatever the schedule's phase.
        let lr = self.run.base_learning_rate();
        let lr_factor = match action.lr {
            Move::Down => 0.5,
            Move::Keep => 1.0,
            Move::Up => 2.0,
        };
        let (mut low, mut high) = b.lr;
        if let Some(start) = self.start_lr.filter(|s| *s > 0.0 && b.lr_span >= 1.0) {
            low = low.max(start / b.lr_span);
            high = high.min(start * b.lr_span).max(low);
        }
        let new_lr = (lr * lr_factor).clamp(low, high);
        if new_lr != lr && lr > 0.0 {
            self.run.scale_learning_rate(new_lr / lr)?;
            applied.lr = action.lr;
        }
        let bs = self.run.batch_size();
        let new_bs = match action.batch {
            Move::Down => bs / 2,
            Move::Keep => bs,
            Move::Up => bs * 2,
        }
        .clamp(b.batch.0, b.batch.1);
        if new_bs != bs {
            self.run.set_batch_size(new_bs)?;
            applied.batch = action.batch;
        }
        if action.width != Move::Keep {
            let spec = self.run.model().spec().clone();
            for (i, layer) in spec.hidden_layers().into_iter().enumerate() {
                let w = spec.layers[layer].width().unwrap_or(0);
                let start = self.start_widths.as_ref().and_then(|s| s.get(i).copied());
                let floor = match start {
                    Some(s) if b.width_floor > 0.0 => ((s as f64 * b.width_floor).ceil() as usize).min(w),
                    _ => 0,
                };
                let target = match action.width {
                    Move::Down => w * 3 / 4,
                    Move::Keep => w,
                    Move::Up => w + w / 2,
                }
                .max(floor)
                .clamp(b.width.0, b.width.1);
                if target != w {
                    self.widen_seed += 1;
                    let options = WidenOptions { noise: 0.0, seed: self.widen_seed };
                    self.run.resize_hidden(layer, target, options)?;
                    applied.width = action.width;
                }
            }
        }
        Ok(applied)
    }

    /// Trains up to the next decision boundary (a multiple of `decision_steps × unit_batch`
    /// rows, or the end of the budget), evaluates, and updates the observation; returns the
    /// interval's samples/s.
    fn interval(&mut self) -> Result<f64> {
        let every = self.decision_samples().max(1);
        let until = ((self.samples / every + 1) * every).min(self.budget_samples());
        // The steps left at this batch size, for the progress view (the batch may have
        // changed since the trial's total was set).
        let left = self.budget_samples().saturating_sub(self.samples).div_ceil(self.run.batch_size().max(1) as u64);
        let total = self.run.step() + left;
        if let Some(m) = self.run.monitor_mut() {
            m.set_total_steps(total);
        }
        let first = self.samples == 0;
        let mut n = 0u64;
        let (mut loss_sum, mut rows, mut secs, mut norm_sum, mut norms) = (0f64, 0usize, 0f64, 0f64, 0usize);
        let (mut anomalous, mut loss_rows) = (0u64, 0usize);
        while self.samples < until {
            let s = self.run.train_step()?;
            n += 1;
            self.optimizer_steps += 1;
            // A step that saw no rows (impossible with a non-empty split) would never end
            // the interval.
            self.samples += s.batch_size.max(1) as u64;
            if s.anomalies > 0 || s.rolled_back_to.is_some() {
                anomalous += 1;
            }
            // A rolled-back step's loss is not finite and was not a training step.
            if s.rolled_back_to.is_none() && s.loss.is_finite() {
                loss_sum += f64::from(s.loss) * s.batch_size as f64;
                loss_rows += s.batch_size;
            }
            rows += s.batch_size;
            secs += s.seconds;
            if let Some(g) = s.grad_norm.filter(|g| g.is_finite() && *g > 0.0) {
                norm_sum += g;
                norms += 1;
            }
        }
        // A rollback snapshot at every decision boundary, where a checkpoint may be taken: a
        // run resumed from that checkpoint rolls back to the same step as this one would.
        self.run.snapshot_now()?;
        let sps = rows as f64 / secs.max(1e-9);
        let reference = *self.reference_sps.get_or_insert(sps);
        let val = env_val(&self.run);
        let t = std::time::Instant::now();
        let evaluation = self.run.evaluate(&*val)?;
        let epoch = self.run.epoch() as u32;
        self.run.log_evaluation(&evaluation, epoch, t.elapsed().as_secs_f64())?;
        let f1 = evaluation.report.macro_avg.f1;
        self.last_eval = Some(evaluation);
        let loss = if loss_rows > 0 { loss_sum / loss_rows as f64 } else { self.last.loss };
        let widths = self.run.model().spec().hidden_widths();
        let log2_width = if widths.is_empty() {
            0.0
        } else {
            widths.iter().map(|&w| (w as f64).log2()).sum::<f64>() / widths.len() as f64
        };
        self.last = Observation {
            loss,
            loss_delta: if first { 0.0 } else { loss - self.last.loss },
            val_f1: f1,
            val_f1_delta: if first { 0.0 } else { f1 - self.last.val_f1 },
            log_grad_norm: if norms > 0 { (norm_sum / norms as f64).ln() } else { 0.0 },
            log_lr: self.run.learning_rate().max(1e-30).log10(),
            log2_batch: (self.run.batch_size() as f64).log2(),
            log2_width,
            rel_throughput: sps / reference.max(1e-9),
            budget_used: (self.samples as f64 / self.budget_samples().max(1) as f64).min(1.0),
            anomalies: anomalous as f64 / n.max(1) as f64,
        };
        Ok(sps)
    }
}

/// The run's validation split (checked by [`Env::new`] and [`Env::resume`]).
fn env_val(run: &Run) -> std::sync::Arc<dyn Dataset> {
    run.data().val.clone().expect("checked in new")
}
