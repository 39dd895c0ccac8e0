//! Policies that choose an [`Action`] from an [`Observation`].
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
        let phi = self.features(observation);
        let logits: Vec<f64> = self
            .theta
            .iter()
            .map(|w| w.iter().zip(&phi).map(|(a, b)| a * b).sum::<f64>())
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
}

impl Policy for Reinforce {
    fn act(&mut self, observation: &Observation, rng: &mut dyn rand::RngCore) -> Action {
        let p = self.probabilities(observation);
        let mut u: f64 = rng.random();
        for (i, pi) in p.iter().enumerate() {
            if u < *pi {
                return Action::from_index(i).unwrap_or(Action::KEEP);
            }
            u -= pi;
        }
        Action::from_index(Action::COUNT - 1).unwrap_or(Action::KEEP)
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
