//! Learning-rate schedules: a serde [`ScheduleConfig`] and a [`Schedule`] that counts
//! steps and saves/restores its state.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::optimizer::{check, check_lr};

/// How the learning rate changes with the step; `{"kind": "cosine", "total_steps":
/// 1000, "warmup_steps": 100}` in JSON. In the formulas `α₀` is the schedule's base
/// learning rate and `s` the 0-based index of the optimiser step the rate is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// `α₀` at every step.
    Constant,
    /// `α₀ · gamma^⌊s / step_size⌋`: multiplied by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays (≥ 1).
        step_size: u64,
        /// Factor per decay (finite, ≥ 0).
        gamma: f64,
    },
    /// `α₀ · gamma^s`.
    Exponential {
        /// Factor per step (finite, ≥ 0).
        gamma: f64,
    },
    /// Linear warm-up `α₀ · (s + 1) / warmup_steps` for `s < warmup_steps`, then cosine
    /// annealing from `α₀` to `min_lr` over the remaining `total_steps − warmup_steps`
    /// steps; `min_lr` from step `total_steps` on.
    Cosine {
        /// Steps until the rate reaches `min_lr` (≥ `warmup_steps`).
        total_steps: u64,
        /// Warm-up steps (default 0).
        #[serde(default)]
        warmup_steps: u64,
        /// Final rate (default 0; finite, ≥ 0).
        #[serde(default)]
        min_lr: f64,
    },
    /// The original article's decay `α(t+1) = α(t) / (1 + β^t)` with `α(1) = α₀` and
    /// **`t` starting at 1**: the first step (`s = 0`, `t = 1`) uses `α₀`, the second
    /// `α₀ / (1 + β)`, the third `α₀ / ((1 + β)(1 + β²))`, and so on (`t = s + 1`).
    /// With `β < 1` the divisors tend to 1, so the rate settles at
    /// `α₀ / ∏ₖ(1 + βᵏ)`; with `β ≥ 1` it falls at least geometrically.
    ArticleDecay {
        /// β (finite, ≥ 0).
        beta: f64,
    },
}

impl ScheduleConfig {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<()> {
        let factor = |v: f64, field| check(v, field, "a finite value >= 0", v.is_finite() && v >= 0.0);
        match *self {
            Self::Constant => Ok(()),
            Self::Step { step_size, gamma } => {
                check(step_size as f64, "step_size", "step_size >= 1", step_size >= 1)?;
                factor(gamma, "gamma")
            }
            Self::Exponential { gamma } => factor(gamma, "gamma"),
            Self::Cosine { total_steps, warmup_steps, min_lr } => {
                check(warmup_steps as f64, "warmup_steps", "warmup_steps <= total_steps", warmup_steps <= total_steps)?;
                factor(min_lr, "min_lr")
            }
            Self::ArticleDecay { beta } => factor(beta, "beta"),
        }
    }
}

/// A schedule in progress: its config, base rate and the number of steps taken.
///
/// Everything it returns is a function of those three, so saving them (serde, or
/// [`state`](Self::state)) and restoring gives exactly the same rates afterwards.
///
/// ```
/// use tuneforge_optim::{Schedule, ScheduleConfig};
///
/// let mut s = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 0.1)?;
/// assert_eq!(s.next_lr(), 0.1); // t = 1
/// assert_eq!(s.next_lr(), 0.1 / 1.5); // t = 2: α(1) / (1 + 0.5¹)
/// # Ok::<(), tuneforge_optim::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleState", into = "ScheduleState")]
pub struct Schedule {
    config: ScheduleConfig,
    base_lr: f64,
    step: u64,
    /// The position in the config's steps (= `step` unless re-timed).
    clock: f64,
    /// How far a step moves `clock`.
    rate: f64,
}

/// A [`Schedule`]'s saved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleState {
    /// The schedule.
    pub config: ScheduleConfig,
    /// Its base learning rate `α₀`.
    pub base_lr: f64,
    /// Steps taken: the next [`Schedule::next_lr`] returns the rate for this step index.
    pub step: u64,
    /// The position, when [`Schedule::retime`] made it differ from `step` (absent: `step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<f64>,
    /// How far a step moves the position, when re-timed (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl Schedule {
    /// A schedule at step 0 with base rate `base_lr`.
    pub fn new(config: ScheduleConfig, base_lr: f64) -> Result<Self> {
        Self::from_state(ScheduleState { config, base_lr, step: 0, position: None, rate: None })
    }

    /// Restores a saved schedule, checking it first.
    pub fn from_state(state: ScheduleState) -> Result<Self> {
        state.config.validate()?;
        check_lr(state.base_lr)?;
        let clock = state.position.unwrap_or(state.step as f64);
        check(clock, "position", "a finite value >= 0", clock.is_finite() && clock >= 0.0)?;
        let rate = state.rate.unwrap_or(1.0);
        check(rate, "rate", "a finite value > 0", rate.is_finite() && rate > 0.0)?;
        Ok(Self { config: state.config, base_lr: state.base_lr, step: state.step, clock, rate })
    }

    /// The state to save.
    pub fn state(&self) -> ScheduleState {
        let retimed = !self.on_steps();
        ScheduleState {
            config: self.config.clone(),
            base_lr: self.base_lr,
            step: self.step,
            position: retimed.then_some(self.clock),
            rate: retimed.then_some(self.rate),
        }
    }

    /// The config.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The base rate `α₀`.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// Multiplies the base rate (so every later rate) by `factor`: how a tuner halves or
    /// doubles the learning rate of a scheduled run. Fails, changing nothing, if the
    /// result is negative or not finite.
    pub fn scale_base_lr(&mut self, factor: f64) -> Result<()> {
        let lr = self.base_lr * factor;
        check_lr(lr)?;
        self.base_lr = lr;
        Ok(())
    }

    /// Re-times the schedule for steps `factor` times as many (a batch size ÷ `factor`):
    /// from now on each step moves the schedule `1 / factor` times as far, so it keeps
    /// its position and shape in *samples* — how a run that doubles its batch size (half
    /// the steps for the same data) still reaches the end of its cosine with its data. The
    /// step count ([`step`](Self::step)) is not changed; the schedule's own position
    /// ([`position`](Self::position)) is what moves faster or slower. The article decay
    /// is defined per optimiser step and is not re-timed. Fails, changing nothing, unless
    /// `factor` is finite and > 0.
    ///
    /// ```
    /// use tuneforge_optim::{Schedule, ScheduleConfig};
    ///
    /// let mut s = Schedule::new(ScheduleConfig::Cosine { total_steps: 100, warmup_steps: 0, min_lr: 0.0 }, 1.0)?;
    /// for _ in 0..50 { s.next_lr(); }
    /// s.retime(0.25)?; // batch ×4: a quarter of the steps are left
    /// for _ in 0..12 { s.next_lr(); }
    /// assert_eq!((s.step(), s.position()), (62, 98.0));
    /// assert!(s.lr() < 1e-3);
    /// # Ok::<(), tuneforge_optim::Error>(())
    /// ```
    pub fn retime(&mut self, factor: f64) -> Result<()> {
        check(factor, "factor", "a finite value > 0", factor.is_finite() && factor > 0.0)?;
        let rate = self.rate / factor;
        check(rate, "factor", "a rate that stays finite and > 0", rate.is_finite() && rate > 0.0)?;
        self.rate = rate;
        Ok(())
    }

    /// Sets the step count to `step`, keeping the position (so the rates to come): how a
    /// run that takes over another's schedule (population-based training's exploit) keeps
    /// numbering its own steps. The article decay, which counts steps, moves with it.
    pub fn renumber(&mut self, step: u64) {
        self.step = step;
    }

    /// Where the schedule stands, in steps of its config: equal to [`step`](Self::step)
    /// unless [`retime`](Self::retime) changed how far a step moves it.
    pub fn position(&self) -> f64 {
        self.clock
    }

    /// How far one step moves the schedule (1 unless re-timed).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the position is still the step count.
    fn on_steps(&self) -> bool {
        self.rate == 1.0 && self.clock == self.step as f64
    }

    /// The rate for step index `step` (0-based), without advancing.
    pub fn lr_at(&self, step: u64) -> f64 {
        // Not re-timed, the position is the step itself.
        let x = if self.on_steps() {
            step as f64
        } else {
            (self.clock + (step as f64 - self.step as f64) * self.rate).max(0.0)
        };
        self.lr_at_position(x, step)
    }

    /// The rate at position `x` (the step index unless re-timed; `step` for the article
    /// decay, which counts steps). Whole positions take integer powers.
    fn lr_at_position(&self, x: f64, step: u64) -> f64 {
        let a0 = self.base_lr;
        match self.config {
            ScheduleConfig::Constant => a0,
            ScheduleConfig::Step { step_size, gamma } => a0 * powu(gamma, (x / step_size.max(1) as f64).floor() as u64),
            ScheduleConfig::Exponential { gamma } if x.fract() == 0.0 => a0 * powu(gamma, x as u64),
            ScheduleConfig::Exponential { gamma } => a0 * gamma.powf(x),
            ScheduleConfig::Cosine { total_steps, warmup_steps, min_lr } => {
                let (total, warmup) = (total_steps as f64, warmup_steps as f64);
                if x < warmup {
                    a0 * (x + 1.0).min(warmup) / warmup
                } else if x >= total {
                    min_lr
                } else {
                    let p = (x - warmup) / (total - warmup);
                    min_lr + (a0 - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
                }
            }
            ScheduleConfig::ArticleDecay { beta } => article_decay(a0, beta, step),
        }
    }

    /// The rate for the current step; does not advance.
    pub fn lr(&self) -> f64 {
        self.lr_at(self.step)
    }

    /// The rate for the current step, then advances one step: call once per optimiser
    /// step and pass the result to [`Optimizer::set_learning_rate`](crate::Optimizer::set_learning_rate).
    pub fn next_lr(&mut self) -> f64 {
        let lr = self.lr();
        self.step = self.step.saturating_add(1);
        self.clock += self.rate;
        lr
    }
}

impl TryFrom<ScheduleState> for Schedule {
    type Error = crate::Error;

    fn try_from(state: ScheduleState) -> Result<Self> {
        Self::from_state(state)
    }
}

impl From<Schedule> for ScheduleState {
    fn from(s: Schedule) -> Self {
        s.state()
    }
}

/// `x^n` for any `u64` exponent (`powi` takes `i32`).
fn powu(x: f64, n: u64) -> f64 {
    match i32::try_from(n) {
        Ok(n) => x.powi(n),
        Err(_) => x.powf(n as f64),
    }
}

/// `α(s + 1)` by the recursion `α(t+1) = α(t) / (1 + β^t)`, `α(1) = α₀`, dividing in
/// the recursion's order. Stops early once the divisor is exactly 1 (β^t below half an
/// ulp) or the rate is 0, after which nothing changes; so at most a few thousand
/// iterations for any β.
fn article_decay(a0: f64, beta: f64, step: u64) -> f64 {
    let mut lr = a0;
    let mut beta_t = 1.0;
    for _ in 0..step {
        beta_t *= beta; // β^t for t = 1, 2, ...
        let divisor = 1.0 + beta_t;
        if divisor == 1.0 || lr == 0.0 {
            break;
        }
        lr /= divisor;
    }
    lr
}
