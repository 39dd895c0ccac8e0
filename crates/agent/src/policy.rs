//! Policies that choose an [`Action`] from an [`Observation`].
//!
//! [`ActorCritic`] ([`StudyPolicy`], the one the `rl` and `rl-no-width` strategies use) is a
//! one-step actor–critic with three softmax heads (learning rate, batch size, width) and a
//! linear critic, learning after every decision — see its docs. A 4-minute Fashion-MNIST
//! study holds about 8 trials of 7 decisions: a policy that learns once per trial had learnt
//! from 7 episodes by its end; this one has taken ~55 steps.
//!
//! ```
//! use rand::SeedableRng;
//! use tuneforge_agent::env::{Move, Observation};
//! use tuneforge_agent::policy::{ActorCritic, Policy};
//!
//! let observation = Observation {
//!     loss: 0.4, loss_delta: -0.01, val_f1: 0.85, val_f1_delta: 0.01, log_grad_norm: 0.0,
//!     log_lr: -3.0, log2_batch: 7.0, log2_width: 6.0, rel_throughput: 1.0, budget_used: 0.5,
//!     anomalies: 0.0,
//! };
//! let mut policy = ActorCritic::untrained();
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! // A one-decision episode rewarded for "batch up", learnt 500 times.
//! for _ in 0..500 {
//!     let action = policy.act(&observation, &mut rng);
//!     let reward = if action.batch == Move::Up { 1.0 } else { 0.0 };
//!     policy.update(&[(observation.clone(), action, reward)]);
//! }
//! let batch_head = policy.head_probabilities(&observation)[1];
//! assert!(batch_head[2] > 0.5, "P(batch up) = {}", batch_head[2]);
//! ```
//!
//! [`Reinforce`] is REINFORCE with a baseline (Williams, 1992, "Simple statistical
//! gradient-following algorithms for connectionist reinforcement learning"): a linear
//! softmax policy over the 27 factored actions, `π(a | s) ∝ exp(θ_a · φ(s))` with
//! `φ(s) = [normalised observation, 1]` (each entry standardised by a running mean and
//! variance of the observations seen in updates, so that log-batch ≈ 7 and an F1 ≈ 0.9 weigh
//! alike), updated after each episode by
//! `θ_a += α · (G_t − b) · ∇ log π(a_t | s_t)` for every decision `t`, where `G_t` is the
//! return from `t` on (undiscounted: episodes are short) and `b` a running mean of returns.
//! Its state is plain data (serde), so a study can save it and later trials start from it.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::env::{Action, Observation};

/// Something that picks actions and may learn from finished episodes.
pub trait Policy {
    /// The action for `observation`.
    fn act(&mut self, observation: &Observation, rng: &mut dyn rand::RngCore) -> Action;

    /// Learns from one finished episode: the decisions in order, each with its reward.
    fn update(&mut self, episode: &[(Observation, Action, f64)]);
}

/// Never changes anything: the `fixed` baseline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed;

impl Policy for Fixed {
    fn act(&mut self, _: &Observation, _: &mut dyn rand::RngCore) -> Action {
        Action::KEEP
    }

    fn update(&mut self, _: &[(Observation, Action, f64)]) {}
}

/// REINFORCE with a running-mean baseline over a linear softmax policy (see the module
/// docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reinforce {
    /// Weights, one row of `Observation::LEN + 1` per action.
    pub theta: Vec<Vec<f64>>,
    /// Step size α.
    pub learning_rate: f64,
    /// Running mean of episode returns (the baseline `b`).
    pub baseline: f64,
    /// Weight of a new return in the baseline.
    pub baseline_rate: f64,
    /// Episodes learnt from.
    pub episodes: u64,
    /// Running mean of each observation entry (Welford).
    pub obs_mean: Vec<f64>,
    /// Running sum of squared deviations of each entry (Welford).
    pub obs_m2: Vec<f64>,
    /// Observations counted in the running statistics.
    pub obs_count: u64,
}

/// The weight of the "keep" action's bias term in [`Reinforce::default`]: with it the
/// untrained policy keeps the configuration with probability e⁴ / (e⁴ + 26) ≈ 0.68 and
/// tries each of the 26 changes with probability ≈ 0.012.
pub const KEEP_PRIOR: f64 = 4.0;

impl Default for Reinforce {
    /// The policy a study starts from: step size 0.05 and a prior towards "keep"
    /// ([`KEEP_PRIOR`]), so that a first trial explores around the defaults instead of
    /// random-walking away from them; learning moves it from there.
    fn default() -> Self {
        Reinforce::new(0.05).with_keep_prior(KEEP_PRIOR)
    }
}

impl Reinforce {
    /// A uniform policy (all weights 0) with step size `learning_rate`.
    pub fn new(learning_rate: f64) -> Self {
        Reinforce {
            theta: vec![vec![0.0; Observation::LEN + 1]; Action::COUNT],
            learning_rate,
            baseline: 0.0,
            baseline_rate: 0.1,
            episodes: 0,
            obs_mean: vec![0.0; Observation::LEN],
            obs_m2: vec![0.0; Observation::LEN],
            obs_count: 0,
        }
    }

    /// Checks that a loaded state fits this version's observation and action spaces
    /// (sizes) and holds finite numbers; says what does not.
    pub fn validate(&self) -> Result<(), String> {
        let width = Observation::LEN + 1;
        if self.theta.len() != Action::COUNT || self.theta.iter().any(|row| row.len() != width) {
            return Err(format!(
                "theta must be {} rows of {width} weights (observations of {} entries + a bias): \
                 a policy from another version",
                Action::COUNT,
                Observation::LEN
            ));
        }
        if self.obs_mean.len() != Observation::LEN || self.obs_m2.len() != Observation::LEN {
            return Err(format!("obs_mean and obs_m2 must have {} entries", Observation::LEN));
        }
        let numbers = self.theta.iter().flatten().chain(&self.obs_mean).chain(&self.obs_m2);
        if !numbers.chain([&self.baseline, &self.learning_rate]).all(|x| x.is_finite()) {
            return Err("a weight or statistic is not finite".into());
        }
        // A negative sum of squares is a negative variance: every feature, so every
        // probability, was NaN (found in review, shown with the policy fuzz target).
        if self.obs_m2.iter().any(|&m2| m2 < 0.0) {
            return Err("obs_m2 holds sums of squared deviations: they cannot be negative".into());
        }
        if !(0.0..=1.0).contains(&self.baseline_rate) {
            return Err(format!("baseline_rate {} is outside [0, 1]", self.baseline_rate));
        }
        Ok(())
    }

    /// Adds `bias` to the logit of "keep" (change nothing) in every state.
    pub fn with_keep_prior(mut self, bias: f64) -> Self {
        self.theta[Action::KEEP.index()][Observation::LEN] += bias;
        self
    }

    fn features(&self, observation: &Observation) -> Vec<f64> {
        let mut f = observation.to_vec();
        for (i, x) in f.iter_mut().enumerate() {
            let var = if self.obs_count > 1 { self.obs_m2[i] / (self.obs_count - 1) as f64 } else { 1.0 };
            *x = (*x - self.obs_mean[i]) / (var + 1e-8).sqrt();
        }
        f.push(1.0);
        f
    }

    fn observe_stats(&mut self, observation: &Observation) {
        self.obs_count += 1;
        let n = self.obs_count as f64;
        for (i, x) in observation.to_vec().into_iter().enumerate() {
            let d = x - self.obs_mean[i];
            self.obs_mean[i] += d / n;
            self.obs_m2[i] += d * (x - self.obs_mean[i]);
        }
    }

    /// Action probabilities for `observation`.
    ///
    /// Always a distribution (finite, summing to 1), even when a logit overflows: large
    /// finite weights times a large observation made `inf - inf` and every probability NaN
    /// (found in review, shown with the policy fuzz target). An infinite logit counts as
    /// the largest finite one, a NaN one as −∞; when every logit is NaN the choice is uniform.
    pub fn probabilities(&self, observation: &Observation) -> Vec<f64> {
        softmax(&self.theta, &self.features(observation))
    }
}

/// `softmax(w_r · φ)` over the rows `w_r` of `weights`, always a distribution: an infinite
/// logit counts as the largest finite one, a NaN one as −∞, and when every logit is NaN the
/// choice is uniform.
fn softmax(weights: &[Vec<f64>], phi: &[f64]) -> Vec<f64> {
    let logits: Vec<f64> = weights
        .iter()
        .map(|w| w.iter().zip(phi).map(|(a, b)| a * b).sum::<f64>())
        .map(|l: f64| if l.is_nan() { f64::NEG_INFINITY } else { l.clamp(f64::MIN, f64::MAX) })
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return vec![1.0 / logits.len() as f64; logits.len()];
    }
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// An index drawn with probabilities `p` (the last one if rounding leaves `u` beyond them).
fn sample(p: &[f64], rng: &mut dyn rand::RngCore) -> usize {
    let mut u: f64 = rng.random();
    for (i, q) in p.iter().enumerate() {
        if u < *q {
            return i;
        }
        u -= q;
    }
    p.len() - 1
}

impl Policy for Reinforce {
    fn act(&mut self, observation: &Observation, rng: &mut dyn rand::RngCore) -> Action {
        let p = self.probabilities(observation);
        Action::from_index(sample(&p, rng)).unwrap_or(Action::KEEP)
    }

    fn update(&mut self, episode: &[(Observation, Action, f64)]) {
        if episode.is_empty() {
            return;
        }
        let mut returns = vec![0.0; episode.len()];
        let mut g = 0.0;
        for (t, (_, _, r)) in episode.iter().enumerate().rev() {
            g += r;
            returns[t] = g;
        }
        for (obs, _, _) in episode {
            self.observe_stats(obs);
        }
        let baseline = if self.episodes == 0 { returns[0] } else { self.baseline };
        for ((obs, action, _), g) in episode.iter().zip(&returns) {
            let phi = self.features(obs);
            let p = self.probabilities(obs);
            let advantage = g - baseline;
            for (a, w) in self.theta.iter_mut().enumerate() {
                let indicator = if a == action.index() { 1.0 } else { 0.0 };
                let coef = self.learning_rate * advantage * (indicator - p[a]);
                for (wi, fi) in w.iter_mut().zip(&phi) {
                    *wi += coef * fi;
                }
            }
        }
        self.baseline = if self.episodes == 0 {
            returns[0]
        } else {
            (1.0 - self.baseline_rate) * self.baseline + self.baseline_rate * returns[0]
        };
        self.episodes += 1;
    }
}

/// The policy the `rl` and `rl-no-width` strategies use.
pub type StudyPolicy = ActorCritic;

/// Moves of one head (`Down`, `Keep`, `Up`).
const MOVES: usize = 3;
/// Heads of the factored actor: learning rate, batch size, width.
const HEADS: usize = 3;

/// Prior standard deviations of the observation entries (in [`Observation::to_vec`] order),
/// counted as [`PRIOR_COUNT`] pseudo-observations in the running variance: a feature that was
/// constant for the first decisions (the batch size, say) does not become ±10⁴ standard
/// deviations when it first moves.
const PRIOR_SCALE: [f64; Observation::LEN] = [0.5, 0.1, 0.1, 0.02, 1.0, 0.5, 1.0, 1.0, 0.2, 0.3, 0.1];
const PRIOR_COUNT: f64 = 4.0;
/// Standardised features are clamped to ±this.
const FEATURE_CLAMP: f64 = 5.0;
/// The actor's step uses the TD error divided by its running RMS ([`ActorCritic::td_ms`]),
/// clamped to ±this.
const TD_CLAMP: f64 = 3.0;
/// Weight of a new squared TD error in [`ActorCritic::td_ms`] (≈ the last 20 decisions).
const TD_MS_RATE: f64 = 0.05;
/// [`ActorCritic::td_ms`] before any decision: an RMS of 0.03, a typical TD error of a
/// shaped reward (2·ΔF1 + λ·ln ρ) in the middle of a trial.
const TD_MS_PRIOR: f64 = 0.03 * 0.03;
/// Decisions the critic learns from before the actor does ([`ActorCritic::warmup`]): until
/// then the critic is ≈ 0 and every early decision of a trial, whose F1 gain is large
/// whatever it does, would look like a good one.
const CRITIC_WARMUP: u64 = 8;
/// [`ActorCritic::warmup`] at the start of a study from a learnt state
/// ([`ActorCritic::for_new_study`]): about two 7-decision trials of a new dataset acted by
/// the learnt actor while the critic, started afresh, learns the new rewards.
const NEW_STUDY_WARMUP: u64 = 16;

/// The logit bias of "keep" in each head of [`ActorCritic::untrained`]: each head keeps with
/// probability e^2.7 / (e^2.7 + 2) ≈ 0.87, all three together ≈ 0.66 (close to
/// [`Reinforce`]'s 0.68 for the joint action).
pub const HEAD_KEEP_PRIOR: f64 = 2.7;

/// One-step actor–critic (Sutton & Barto, 2018, *Reinforcement Learning: An Introduction*,
/// 2nd ed., §13.5) with a factored linear softmax actor and a linear critic.
///
/// - Features `φ(s)`: the observation standardised by running means and variances (with a
///   prior, see the source's `PRIOR_SCALE`), clamped to ±5, and a constant 1.
/// - Actor: three independent softmax heads over {down, keep, up} — learning rate, batch
///   size, width — `π(a | s) = Π_k π_k(a_k | s)`, `π_k(m | s) ∝ exp(θ_{k,m} · φ(s))`. A head
///   learns "batch up pays" once for every learning-rate and width move, where a joint
///   softmax over the 27 actions would have to learn it 9 times.
/// - Critic: `V(s) = w · φ(s)`.
/// - After every decision `(s, a, r, s')`: `δ = r + V(s') − V(s)` (`V(s') = 0` when the
///   episode ended; undiscounted), `w += β δ φ / ‖φ‖²` and
///   `θ_k += α δ̂ ∇ log π_k(a_k | s) / ‖φ‖²` (normalised steps, so that the step sizes do
///   not depend on the number of features), where `δ̂ = δ / RMS(δ)` clamped to ±3, the RMS
///   a running one (the scale of rewards differs by orders of magnitude between datasets and
///   λ; advantage normalisation as in PPO implementations, Engstrom et al., 2020,
///   "Implementation matters in deep policy gradients"). The actor waits for the critic's
///   first 8 decisions (16 in a study started from a learnt state, whose critic restarts:
///   [`ActorCritic::for_new_study`]).
/// - The study feeds it shaped rewards ([`crate::env::Transition::shaped_reward`]) and
///   bootstraps a trial stopped before its end from its last state
///   ([`ActorCritic::learn_episode`]): a time limit is not a terminal state (Pardo et al.,
///   2018, "Time limits in reinforcement learning").
///
/// It learns within a trial, after each decision, not only once per finished trial as
/// [`Reinforce`] does. A study keeps the state after each *finished* trial; the decisions of
/// the trial in progress are replayed onto it ([`ActorCritic::with_open_episode`]), so a
/// resumed study acts exactly as the uninterrupted one would have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorCritic {
    /// Actor weights: 9 rows (head-major: lr down/keep/up, batch …, width …) of
    /// `Observation::LEN + 1`.
    pub actor: Vec<Vec<f64>>,
    /// Critic weights, `Observation::LEN + 1`.
    pub critic: Vec<f64>,
    /// Actor step size α.
    pub actor_rate: f64,
    /// Critic step size β (normalised: below 2 for stability).
    pub critic_rate: f64,
    /// Decisions learnt from.
    pub transitions: u64,
    /// Finished episodes learnt from.
    pub episodes: u64,
    /// Running mean of each observation entry (Welford).
    pub obs_mean: Vec<f64>,
    /// Running sum of squared deviations of each entry (Welford).
    pub obs_m2: Vec<f64>,
    /// Observations counted in the running statistics.
    pub obs_count: u64,
    /// Running mean of squared TD errors, the actor's step scale.
    #[serde(default = "td_ms_prior")]
    pub td_ms: f64,
    /// Decisions the critic still learns from alone before the actor learns too.
    #[serde(default)]
    pub warmup: u64,
}

fn td_ms_prior() -> f64 {
    TD_MS_PRIOR
}

impl Default for ActorCritic {
    /// [`ActorCritic::untrained`], where a study starts unless told otherwise.
    fn default() -> Self {
        ActorCritic::untrained()
    }
}

impl ActorCritic {
    /// A policy that has learnt nothing: each head keeps with probability ≈ 0.87
    /// ([`HEAD_KEEP_PRIOR`]), the critic is 0. α = 0.2 (on normalised TD errors), β = 0.5.
    pub fn untrained() -> Self {
        let mut actor = vec![vec![0.0; Observation::LEN + 1]; HEADS * MOVES];
        for head in 0..HEADS {
            actor[head * MOVES + 1][Observation::LEN] = HEAD_KEEP_PRIOR;
        }
        ActorCritic {
            actor,
            critic: vec![0.0; Observation::LEN + 1],
            actor_rate: 0.2,
            critic_rate: 0.5,
            transitions: 0,
            episodes: 0,
            obs_mean: vec![0.0; Observation::LEN],
            obs_m2: vec![0.0; Observation::LEN],
            obs_count: 0,
            td_ms: TD_MS_PRIOR,
            warmup: CRITIC_WARMUP,
        }
    }

    /// The shipped prior, a study's start with `--policy digits` (the default start was this
    /// until the untrained policy did better on Fashion-MNIST, 2026-12-06): the state an `rl` study on the
    /// embedded digits dataset (MLP 64-64, one minute) learnt from an untrained start, made by
    /// `scripts/pretrain-policy.sh` and shipped as `crates/agent/policies/digits.json`. On
    /// digits it learnt "batch up", "learning rate up" and "width down" (under a trial budget
    /// counted in steps, a larger batch trains on more samples and runs faster; a narrower
    /// model runs faster) — what it knows about other datasets is transfer, and it goes on
    /// learning in every study. Its step scale ([`ActorCritic::td_ms`]) restarts at its prior
    /// and its critic restarts ([`ActorCritic::for_new_study`]).
    pub fn pretrained() -> Self {
        let policy: ActorCritic = serde_json::from_str(include_str!("../policies/digits.json"))
            .expect("crates/agent/policies/digits.json is a policy state (checked by a test)");
        policy.for_new_study()
    }

    /// This state as the start of a new study, on a dataset whose rewards may have another
    /// scale and course: the actor's weights and the feature statistics are kept; the critic
    /// starts from 0 and learns alone for the first 16 decisions (a critic fitted to another
    /// dataset's returns is biased there, and a biased critic would mark the actor's
    /// favourite moves as bad ones); the running RMS of TD errors restarts at its prior.
    pub fn for_new_study(mut self) -> Self {
        self.critic.iter_mut().for_each(|w| *w = 0.0);
        self.td_ms = TD_MS_PRIOR;
        self.warmup = NEW_STUDY_WARMUP;
        self
    }

    /// Checks that a loaded state fits this version's observation and action spaces and holds
    /// finite numbers; says what does not.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let width = Observation::LEN + 1;
        if self.actor.len() != HEADS * MOVES || self.actor.iter().any(|row| row.len() != width) {
            return Err(format!(
                "actor must be {} rows of {width} weights (observations of {} entries + a bias): a policy from \
                 another version",
                HEADS * MOVES,
                Observation::LEN
            ));
        }
        if self.critic.len() != width {
            return Err(format!("critic must have {width} weights"));
        }
        if self.obs_mean.len() != Observation::LEN || self.obs_m2.len() != Observation::LEN {
            return Err(format!("obs_mean and obs_m2 must have {} entries", Observation::LEN));
        }
        let numbers = self.actor.iter().flatten().chain(&self.critic).chain(&self.obs_mean).chain(&self.obs_m2);
        if !numbers.chain([&self.actor_rate, &self.critic_rate, &self.td_ms]).all(|x| x.is_finite()) {
            return Err("a weight or statistic is not finite".into());
        }
        if self.obs_m2.iter().any(|&m2| m2 < 0.0) {
            return Err("obs_m2 holds sums of squared deviations: they cannot be negative".into());
        }
        if self.td_ms <= 0.0 {
            return Err(format!("td_ms {} is a mean of squares: it must be positive", self.td_ms));
        }
        if self.actor_rate < 0.0 || !(0.0..2.0).contains(&self.critic_rate) {
            return Err(format!(
                "actor_rate {} must be ≥ 0 and critic_rate {} in [0, 2)",
                self.actor_rate, self.critic_rate
            ));
        }
        Ok(())
    }

    fn features(&self, observation: &Observation) -> Vec<f64> {
        let mut f = observation.to_vec();
        let n = self.obs_count as f64;
        for (i, x) in f.iter_mut().enumerate() {
            let var = (self.obs_m2[i] + PRIOR_COUNT * PRIOR_SCALE[i] * PRIOR_SCALE[i]) / (n + PRIOR_COUNT);
            let z = (*x - self.obs_mean[i]) / var.sqrt();
            *x = if z.is_nan() { 0.0 } else { z.clamp(-FEATURE_CLAMP, FEATURE_CLAMP) };
        }
        f.push(1.0);
        f
    }

    fn observe_stats(&mut self, observation: &Observation) {
        self.obs_count += 1;
        let n = self.obs_count as f64;
        for (i, x) in observation.to_vec().into_iter().enumerate() {
            if !x.is_finite() {
                continue;
            }
            let d = x - self.obs_mean[i];
            self.obs_mean[i] += d / n;
            self.obs_m2[i] = (self.obs_m2[i] + d * (x - self.obs_mean[i])).max(0.0);
        }
    }

    fn head_probabilities_of(&self, phi: &[f64]) -> [[f64; MOVES]; HEADS] {
        let mut out = [[0.0; MOVES]; HEADS];
        for (p, rows) in out.iter_mut().zip(self.actor.chunks(MOVES)) {
            p.copy_from_slice(&softmax(rows, phi));
        }
        out
    }

    /// The probabilities of down/keep/up for each head (learning rate, batch size, width).
    pub fn head_probabilities(&self, observation: &Observation) -> [[f64; MOVES]; HEADS] {
        self.head_probabilities_of(&self.features(observation))
    }

    /// The probability of each of the 27 joint actions (indexed as [`Action::index`]).
    pub fn probabilities(&self, observation: &Observation) -> Vec<f64> {
        let p = self.head_probabilities(observation);
        (0..Action::COUNT)
            .map(|i| {
                let a = Action::from_index(i).expect("i < COUNT");
                p[0][a.lr.index()] * p[1][a.batch.index()] * p[2][a.width.index()]
            })
            .collect()
    }

    /// The critic's estimate of the return from `observation`.
    pub fn value(&self, observation: &Observation) -> f64 {
        let phi = self.features(observation);
        self.critic.iter().zip(&phi).map(|(w, f)| w * f).sum()
    }

    /// Learns from one decision: `observation`, the `action` taken, its `reward`, and the
    /// observation after it (`None` when the episode ended with it).
    pub fn learn(&mut self, observation: &Observation, action: Action, reward: f64, next: Option<&Observation>) {
        self.observe_stats(observation);
        let phi = self.features(observation);
        let norm2: f64 = phi.iter().map(|f| f * f).sum::<f64>().max(1.0);
        let v: f64 = self.critic.iter().zip(&phi).map(|(w, f)| w * f).sum();
        let v_next = next.map_or(0.0, |n| self.value(n));
        let delta = reward + v_next - v;
        if !delta.is_finite() {
            return;
        }
        let p = self.head_probabilities_of(&phi);
        for (w, f) in self.critic.iter_mut().zip(&phi) {
            *w += self.critic_rate * delta.clamp(-TD_CLAMP, TD_CLAMP) * f / norm2;
        }
        // δ² capped: a critic far off (a loaded state's weights may be huge) must not make
        // the statistic infinite.
        let square = (delta * delta).min(1e12);
        self.td_ms = ((1.0 - TD_MS_RATE) * self.td_ms + TD_MS_RATE * square).max(f64::MIN_POSITIVE);
        let scaled = (delta / self.td_ms.sqrt()).clamp(-TD_CLAMP, TD_CLAMP);
        self.transitions += 1;
        if self.warmup > 0 {
            self.warmup -= 1;
            return;
        }
        let taken = [action.lr.index(), action.batch.index(), action.width.index()];
        for (head, (probs, taken)) in p.iter().zip(taken).enumerate() {
            for (m, q) in probs.iter().enumerate() {
                let indicator = if m == taken { 1.0 } else { 0.0 };
                let coef = self.actor_rate * scaled * (indicator - q) / norm2;
                for (w, f) in self.actor[head * MOVES + m].iter_mut().zip(&phi) {
                    *w += coef * f;
                }
            }
        }
    }

    /// Learns every decision of a finished episode in order. `stopped_at` is the state after
    /// the last decision of an episode cut short (by the study's budget, or pruned): that
    /// decision bootstraps from its value, as a time limit is not a terminal state; `None`
    /// when the episode ran to its end.
    pub fn learn_episode(&mut self, episode: &[(Observation, Action, f64)], stopped_at: Option<&Observation>) {
        for (t, (obs, action, reward)) in episode.iter().enumerate() {
            let next = episode.get(t + 1).map(|(o, _, _)| o).or(stopped_at);
            self.learn(obs, *action, *reward, next);
        }
        if !episode.is_empty() {
            self.episodes += 1;
        }
    }

    /// This policy with the decisions of an episode still in progress learnt, `current` being
    /// the observation after the last of them: what the policy had become by the episode's
    /// current decision point. The study keeps the state as of the last finished episode and
    /// acts with this one.
    pub fn with_open_episode(&self, episode: &[(Observation, Action, f64)], current: &Observation) -> Self {
        let mut live = self.clone();
        for (t, (obs, action, reward)) in episode.iter().enumerate() {
            let next = episode.get(t + 1).map_or(current, |(o, _, _)| o);
            live.learn(obs, *action, *reward, Some(next));
        }
        live
    }
}

impl Policy for ActorCritic {
    fn act(&mut self, observation: &Observation, rng: &mut dyn rand::RngCore) -> Action {
        let p = self.head_probabilities(observation);
        let mut pick = |head: usize| crate::env::Move::ALL[sample(&p[head], &mut *rng)];
        let (lr, batch, width) = (pick(0), pick(1), pick(2));
        Action { lr, batch, width }
    }

    /// Learns every decision of a finished episode in order, the last as the episode's end
    /// ([`ActorCritic::learn_episode`] without `stopped_at`).
    fn update(&mut self, episode: &[(Observation, Action, f64)]) {
        self.learn_episode(episode, None);
    }
}
