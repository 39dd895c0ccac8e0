//! The tree-structured Parzen estimator (Bergstra, Bardenet, Bengio, Kégl, "Algorithms for
//! Hyper-Parameter Optimization", NeurIPS 2011) as Optuna's `TPESampler` runs it with its
//! defaults: the starts of the `tpe` strategy ([`Mode::Independent`], Optuna's default) and
//! of `tpe-multivariate` ([`Mode::Multivariate`], Optuna's `multivariate=True`, Falkner et
//! al.'s joint kernel density as in BOHB).
//!
//! The completed and stopped trials so far (failed ones are left out, as Optuna samples
//! from complete and pruned trials only) are split by score into the best γ(n) =
//! min(⌈n/10⌉, 25) and the rest; each group gets a density — l(x) over the best, g(x) over
//! the rest — a weighted mixture with one kernel per trial plus a prior kernel (weight 1;
//! trials' weights 1, the oldest ramped down from 1/n when a group has more than 25, Optuna's
//! `default_weights`). 24 candidates are drawn from l and the one with the greatest
//! l(x)/g(x) is the next start.
//!
//! - [`Mode::Independent`]: one mixture per dimension, each sampled and maximised on its own.
//!   A learning-rate kernel is a normal distribution truncated to the range, as wide as the
//!   larger gap to its neighbours (the prior, centred and as wide as the range, is a
//!   neighbour; the outermost kernels use their inner gap only).
//! - [`Mode::Multivariate`]: one mixture of products over all dimensions, so that the
//!   learning rate and the batch size that went well *together* are drawn together. Every
//!   learning-rate kernel has the width 0.2 · n^(−1/(d+4)) · range (Scott's rule, d
//!   dimensions).
//!
//! In both, widths are clipped to [range / min(100, n + 2), range], and a categorical kernel
//! (batch size, width choice) puts probability (1 + 1/(n+1)) on its trial's choice and
//! 1/(n+1) on each other choice, normalised. `scripts/fixtures/tpe.py` checks the densities
//! against Optuna's own code.
//!
//! ```
//! use rand::SeedableRng;
//! use tuneforge_agent::tpe::{Mode, Observation, Space, suggest};
//!
//! // Learning-rate exponents in [-1, 1], three batch sizes, no widths.
//! let space = Space { log_lr: (-1.0, 1.0), batches: 3, widths: 0 };
//! // Trials near exponent 0.5 with the second batch size scored best.
//! let trials: Vec<Observation> = (0..30)
//!     .map(|i| {
//!         let x = -1.0 + 2.0 * i as f64 / 29.0;
//!         let score = (3, -(x - 0.5).abs() - if i % 3 == 1 { 0.0 } else { 0.5 });
//!         Observation { number: i, log_lr: x, batch: Some(i as usize % 3), width: None, score }
//!     })
//!     .collect();
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! for mode in [Mode::Independent, Mode::Multivariate] {
//!     let next = suggest(&space, &trials, mode, &mut rng);
//!     assert!((next.log_lr - 0.5).abs() < 0.4, "{next:?}");
//! }
//! ```

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Candidates drawn from l(x) for each suggestion (Optuna's `n_ei_candidates`).
pub const CANDIDATES: usize = 24;

/// Trials sampled at random before the estimator is used (Optuna's `n_startup_trials`).
pub const STARTUP_TRIALS: u64 = 10;

/// Optuna's `SIGMA0_MAGNITUDE`: a multivariate kernel's width, as a fraction of the range,
/// for a single trial.
const SIGMA0: f64 = 0.2;

/// What is searched: the learning rate's exponent (log10 of its factor to the study's rate)
/// in a range, and an index into each list of choices (batch sizes, width factors; a
/// dimension with fewer than 2 choices is not searched).
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// Range of the learning-rate exponent.
    pub log_lr: (f64, f64),
    /// Number of batch sizes to choose from.
    pub batches: usize,
    /// Number of width choices (0 for a model without widths).
    pub widths: usize,
}

/// How the dimensions are modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A density per dimension, each maximised on its own (Optuna's default).
    Independent,
    /// One joint density over all dimensions (Optuna's `multivariate=True`).
    Multivariate,
}

/// A trial as the estimator sees it: where it started and how good it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Its trial number (older trials weigh less in a group of more than 25).
    pub number: u64,
    /// Its learning-rate exponent.
    pub log_lr: f64,
    /// Its batch-size choice, if it was one of the choices (an enqueued start may not be: it
    /// is left out of the densities that model the batch size, as Optuna leaves out a trial
    /// without the parameter).
    pub batch: Option<usize>,
    /// Its width choice, likewise.
    pub width: Option<usize>,
    /// Greater is better, compared as a pair: how far it got (3: completed; 1, 2: stopped at
    /// that rung, as Optuna ranks a pruned trial by its last step; 0: stopped before its first
    /// rung, ranked after those, by number; negative: failed, left out), then its validation
    /// macro-F1 (at that rung for a stopped trial).
    pub score: (i32, f64),
}

/// A start to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// Learning-rate exponent.
    pub log_lr: f64,
    /// Batch-size choice (0 when there are none).
    pub batch: usize,
    /// Width choice (0 when there are none).
    pub width: usize,
}

/// The number of trials in the good group of `n` (Optuna's default γ).
pub fn good_count(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's `default_weights`: 1 for each of `n` trials ordered oldest first, the oldest
/// `n - 25` ramped from 1/n up to 1 when there are more than 25.
fn trial_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            let lo = 1.0 / n as f64;
            if ramp == 1 { lo } else { lo + (1.0 - lo) * i as f64 / (ramp - 1) as f64 }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// The trials that count (failed ones left out) split into the good group and the rest,
/// each ordered by number.
pub fn split(trials: &[Observation]) -> (Vec<&Observation>, Vec<&Observation>) {
    let mut order: Vec<&Observation> = trials.iter().filter(|o| o.score.0 >= 0).collect();
    order.sort_by_key(|o| o.number);
    let f1 = |o: &Observation| if o.score.0 == 0 { 0.0 } else { o.score.1 };
    order.sort_by(|a, b| b.score.0.cmp(&a.score.0).then(f1(b).total_cmp(&f1(a))));
    let rest = order.split_off(good_count(order.len()).min(order.len()));
    let mut good = order;
    good.sort_by_key(|o| o.number);
    let mut rest = rest;
    rest.sort_by_key(|o| o.number);
    (good, rest)
}

/// The next start, from the `trials` so far (at least one completed or stopped; with none,
/// the prior alone: a draw around the middle of the space).
pub fn suggest(space: &Space, trials: &[Observation], mode: Mode, rng: &mut impl Rng) -> Suggestion {
    let (good, rest) = split(trials);
    let dims = Dim::searched(space);
    let mut s = Suggestion { log_lr: midpoint(space.log_lr), batch: 0, width: 0 };
    match mode {
        Mode::Independent => {
            for dim in dims {
                let l = Mixture::new(space, &[dim], &good, mode);
                let g = Mixture::new(space, &[dim], &rest, mode);
                let best = best_candidate(&l, &g, rng);
                dim.set(&mut s, dim.get(&best));
            }
        }
        Mode::Multivariate => {
            let l = Mixture::new(space, &dims, &good, mode);
            let g = Mixture::new(space, &dims, &rest, mode);
            let best = best_candidate(&l, &g, rng);
            for dim in dims {
                dim.set(&mut s, dim.get(&best));
            }
        }
    }
    s
}

/// Of [`CANDIDATES`] draws from `l`, the first with the greatest log l − log g.
fn best_candidate(l: &Mixture, g: &Mixture, rng: &mut impl Rng) -> Suggestion {
    let mut best: Option<(f64, Suggestion)> = None;
    for _ in 0..CANDIDATES {
        let c = l.sample(rng);
        let ratio = l.log_pdf(&c) - g.log_pdf(&c);
        if best.as_ref().is_none_or(|(r, _)| ratio > *r) {
            best = Some((ratio, c));
        }
    }
    best.expect("at least one candidate").1
}

fn midpoint((lo, hi): (f64, f64)) -> f64 {
    0.5 * (lo + hi)
}

/// A searched dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    LogLr,
    Batch,
    Width,
}

impl Dim {
    fn searched(space: &Space) -> Vec<Dim> {
        let mut dims = vec![Dim::LogLr];
        if space.batches >= 2 {
            dims.push(Dim::Batch);
        }
        if space.widths >= 2 {
            dims.push(Dim::Width);
        }
        dims
    }

    fn choices(self, space: &Space) -> usize {
        match self {
            Dim::LogLr => 0,
            Dim::Batch => space.batches,
            Dim::Width => space.widths,
        }
    }

    /// A trial's value in this dimension (a choice's index as a number), if it has one of
    /// the choices.
    fn of(self, o: &Observation, space: &Space) -> Option<f64> {
        match self {
            Dim::LogLr => Some(o.log_lr.clamp(space.log_lr.0, space.log_lr.1)),
            Dim::Batch => o.batch.filter(|&c| c < space.batches).map(|c| c as f64),
            Dim::Width => o.width.filter(|&c| c < space.widths).map(|c| c as f64),
        }
    }

    fn get(self, s: &Suggestion) -> f64 {
        match self {
            Dim::LogLr => s.log_lr,
            Dim::Batch => s.batch as f64,
            Dim::Width => s.width as f64,
        }
    }

    fn set(self, s: &mut Suggestion, v: f64) {
        match self {
            Dim::LogLr => s.log_lr = v,
            Dim::Batch => s.batch = v as usize,
            Dim::Width => s.width = v as usize,
        }
    }
}

/// A dimension's kernels, one per trial then the prior's.
#[derive(Debug)]
enum Kernels {
    /// Normal distributions truncated to `range`: (mean, standard deviation, log of the
    /// density's normaliser σ·√(2π)·(mass inside the range)).
    Numeric { range: (f64, f64), parts: Vec<(f64, f64, f64)> },
    /// A probability per choice for each kernel — the row of its trial's choice, the last
    /// row the prior's — and their logarithms; `row[k]`: kernel k's row.
    Categorical { row: Vec<usize>, rows: Vec<Vec<f64>>, log_rows: Vec<Vec<f64>> },
}

/// A weighted mixture of products of per-dimension kernels (Optuna's
/// `_MixtureOfProductDistribution`).
#[derive(Debug)]
struct Mixture {
    /// Normalised kernel weights.
    weights: Vec<f64>,
    /// Their logarithms.
    log_weights: Vec<f64>,
    dims: Vec<(Dim, Kernels)>,
    /// For a mixture over one categorical dimension, the log probability of each choice
    /// (kernels with the same choice are alike: a table replaces the sum over trials).
    table: Option<Vec<f64>>,
}

impl Mixture {
    /// The density of the trials in `group` (ordered oldest first) that have every one of
    /// `dims`.
    fn new(space: &Space, dims: &[Dim], group: &[&Observation], mode: Mode) -> Mixture {
        // The trials that have every dimension, their values one row after another.
        let mut values = Vec::with_capacity(group.len() * dims.len());
        for o in group {
            let row = values.len();
            for d in dims {
                match d.of(o, space) {
                    Some(v) => values.push(v),
                    None => {
                        values.truncate(row);
                        break;
                    }
                }
            }
        }
        let n = values.len() / dims.len();
        let mut weights = trial_weights(n);
        weights.push(1.0);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let kernels = dims
            .iter()
            .enumerate()
            .map(|(j, &dim)| {
                let column: Vec<f64> = values.iter().skip(j).step_by(dims.len()).copied().collect();
                let k = match dim {
                    Dim::LogLr => numeric(&column, space.log_lr, mode, dims.len()),
                    _ => categorical(&column, dim.choices(space)),
                };
                (dim, k)
            })
            .collect();
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let mut mixture = Mixture { weights, log_weights, dims: kernels, table: None };
        if let [(dim, Kernels::Categorical { rows, .. })] = &mixture.dims[..] {
            let mut s = Suggestion { log_lr: 0.0, batch: 0, width: 0 };
            let choices = rows.first().map_or(0, Vec::len);
            let table = (0..choices)
                .map(|c| {
                    dim.set(&mut s, c as f64);
                    mixture.log_pdf(&s)
                })
                .collect();
            mixture.table = Some(table);
        }
        mixture
    }

    fn sample(&self, rng: &mut impl Rng) -> Suggestion {
        let k = pick(&self.weights, rng);
        let mut s = Suggestion { log_lr: 0.0, batch: 0, width: 0 };
        for (dim, kernels) in &self.dims {
            let v = match kernels {
                Kernels::Numeric { range: (lo, hi), parts } => {
                    let (mu, sigma, _) = parts[k];
                    let normal = Normal::new(mu, sigma).expect("a positive standard deviation");
                    (0..100)
                        .map(|_| normal.sample(rng))
                        .find(|x| (*lo..=*hi).contains(x))
                        .unwrap_or_else(|| mu.clamp(*lo, *hi))
                }
                Kernels::Categorical { row, rows, .. } => pick(&rows[row[k]], rng) as f64,
            };
            dim.set(&mut s, v);
        }
        s
    }

    /// log p(s): the log of the weighted sum over kernels of the product of each dimension's
    /// kernel density, summed in log space (terms below the largest by more than 40, under
    /// 1e-17 of it, are left out of the sum).
    fn log_pdf(&self, s: &Suggestion) -> f64 {
        if let (Some(table), [(dim, _)]) = (&self.table, &self.dims[..]) {
            return table[dim.get(s) as usize];
        }
        let xs: Vec<f64> = self.dims.iter().map(|(dim, _)| dim.get(s)).collect();
        let term = |k: usize| -> f64 {
            let mut t = self.log_weights[k];
            for ((_, kernels), &x) in self.dims.iter().zip(&xs) {
                t += match kernels {
                    Kernels::Numeric { parts, .. } => {
                        let (mu, sigma, log_norm) = parts[k];
                        let z = (x - mu) / sigma;
                        -0.5 * z * z - log_norm
                    }
                    Kernels::Categorical { row, log_rows, .. } => log_rows[row[k]][x as usize],
                };
            }
            t
        };
        let terms: Vec<f64> = (0..self.weights.len()).map(term).collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().filter(|&&t| t - max > -40.0).map(|t| (t - max).exp()).sum();
        max + sum.ln()
    }
}

/// Learning-rate kernels at `mus` plus the prior.
fn numeric(mus: &[f64], range: (f64, f64), mode: Mode, dims: usize) -> Kernels {
    let (lo, hi) = range;
    let width = (hi - lo).max(1e-12);
    let n = mus.len();
    let prior = midpoint(range);
    let sigmas: Vec<f64> = match mode {
        Mode::Multivariate => {
            vec![SIGMA0 * (n.max(1) as f64).powf(-1.0 / (dims as f64 + 4.0)) * width; n]
        }
        Mode::Independent => {
            // The trials' means and the prior's, sorted, between the range's ends.
            let mut order: Vec<usize> = (0..=n).collect();
            let mu = |i: usize| if i == n { prior } else { mus[i] };
            order.sort_by(|&a, &b| mu(a).total_cmp(&mu(b)));
            let sorted: Vec<f64> = order.iter().map(|&i| mu(i)).collect();
            let m = sorted.len();
            let mut by_position: Vec<f64> = (0..m)
                .map(|p| {
                    let left = sorted[p] - if p == 0 { lo } else { sorted[p - 1] };
                    let right = if p + 1 == m { hi } else { sorted[p + 1] } - sorted[p];
                    left.max(right)
                })
                .collect();
            // Without the range's ends: the outermost kernels take their inner gap.
            if m >= 2 {
                by_position[0] = sorted[1] - sorted[0];
                by_position[m - 1] = sorted[m - 1] - sorted[m - 2];
            }
            let mut sigmas = vec![0.0; m];
            for (p, &i) in order.iter().enumerate() {
                sigmas[i] = by_position[p];
            }
            sigmas.truncate(n);
            sigmas
        }
    };
    let floor = width / 100f64.min(n as f64 + 2.0);
    let mut parts: Vec<(f64, f64)> = mus.iter().zip(sigmas).map(|(&mu, s)| (mu, s.clamp(floor, width))).collect();
    parts.push((prior, width));
    let parts = parts
        .into_iter()
        .map(|(mu, sigma)| {
            let mass = normal_cdf((hi - mu) / sigma) - normal_cdf((lo - mu) / sigma);
            (mu, sigma, (sigma * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-300)).ln())
        })
        .collect();
    Kernels::Numeric { range, parts }
}

/// Categorical kernels for the trials' `choices` plus the prior (uniform): a kernel puts
/// 1 + 1/(n+1) on its trial's choice and 1/(n+1) on each, normalised.
fn categorical(choices: &[f64], k: usize) -> Kernels {
    let base = 1.0 / (choices.len() + 1) as f64;
    let mut rows: Vec<Vec<f64>> = (0..=k)
        .map(|c| {
            let mut row = vec![base; k];
            if c < k {
                row[c] += 1.0;
            }
            row
        })
        .collect();
    for row in &mut rows {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= total);
    }
    let log_rows = rows.iter().map(|row| row.iter().map(|p| p.ln()).collect()).collect();
    let row = choices.iter().map(|&c| c as usize).chain([k]).collect();
    Kernels::Categorical { row, rows, log_rows }
}

/// An index drawn with probability proportional to `weights`.
fn pick(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// The standard normal distribution function.
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_good_group_is_optunas_gamma() {
        assert_eq!([1, 9, 10, 11, 100, 250, 251, 1000].map(good_count), [1, 1, 1, 2, 10, 25, 25, 25]);
    }

    /// `default_weights` against numpy's `linspace(1/n, 1, n - 25)` followed by 25 ones.
    #[test]
    fn trial_weights_are_optunas_default_weights() {
        assert_eq!(trial_weights(0), Vec::<f64>::new());
        assert_eq!(trial_weights(24), vec![1.0; 24]);
        assert_eq!(trial_weights(25), vec![1.0; 25]);
        let w = trial_weights(26);
        assert_eq!((w.len(), w[0]), (26, 1.0 / 26.0));
        let w = trial_weights(30);
        let expected = [1.0 / 30.0, 0.275, 0.5166666666666667, 0.7583333333333333, 1.0];
        for (a, b) in w[..5].iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        assert_eq!(&w[5..], &[1.0; 25]);
    }

    #[test]
    fn a_truncated_mixture_integrates_to_one_over_its_range() {
        let space = Space { log_lr: (-1.0, 1.0), batches: 0, widths: 0 };
        let trials: Vec<Observation> = [0.9, 0.95, -0.2]
            .iter()
            .enumerate()
            .map(|(i, &x)| Observation { number: i as u64, log_lr: x, batch: None, width: None, score: (3, 0.5) })
            .collect();
        let group: Vec<&Observation> = trials.iter().collect();
        for mode in [Mode::Independent, Mode::Multivariate] {
            let p = Mixture::new(&space, &[Dim::LogLr], &group, mode);
            let n = 20_000;
            let h = 2.0 / n as f64;
            let at = |x: f64| Suggestion { log_lr: x, batch: 0, width: 0 };
            let integral: f64 = (0..n).map(|i| p.log_pdf(&at(-1.0 + (i as f64 + 0.5) * h)).exp() * h).sum();
            assert!((integral - 1.0).abs() < 1e-3, "{mode:?}: {integral}");
            let mut rng = StdRng::seed_from_u64(1);
            assert!((0..1000).map(|_| p.sample(&mut rng).log_lr).all(|x| (-1.0..=1.0).contains(&x)));
        }
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        space: FixtureSpace,
        trials: Vec<FixtureTrial>,
        good: Vec<u64>,
        independent: std::collections::BTreeMap<String, Densities>,
        multivariate: Joint,
    }

    #[derive(serde::Deserialize)]
    struct FixtureSpace {
        log_lr: (f64, f64),
        batches: usize,
        widths: usize,
    }

    #[derive(serde::Deserialize)]
    struct FixtureTrial {
        number: u64,
        log_lr: f64,
        batch: Option<usize>,
        width: Option<usize>,
        stage: i32,
        f1: f64,
    }

    #[derive(serde::Deserialize)]
    struct Densities {
        points: Vec<f64>,
        l: Vec<f64>,
        g: Vec<f64>,
    }

    #[derive(serde::Deserialize)]
    struct Joint {
        points: std::collections::BTreeMap<String, Vec<f64>>,
        l: Vec<f64>,
        g: Vec<f64>,
    }

    /// The split and both groups' densities, in both modes, against Optuna 4.1's
    /// `_split_trials` and `_ParzenEstimator.log_pdf` on the same trials
    /// (scripts/fixtures/tpe.py).
    #[test]
    fn densities_equal_optunas() {
        let fixture: Fixture = serde_json::from_str(include_str!("../tests/fixtures/tpe.json")).unwrap();
        assert_eq!(fixture.cases.len(), 2);
        for (c, case) in fixture.cases.iter().enumerate() {
            let space = Space { log_lr: case.space.log_lr, batches: case.space.batches, widths: case.space.widths };
            let trials: Vec<Observation> = case
                .trials
                .iter()
                .map(|t| Observation {
                    number: t.number,
                    log_lr: t.log_lr,
                    batch: t.batch,
                    width: t.width,
                    score: (t.stage, t.f1),
                })
                .collect();
            let (good, rest) = split(&trials);
            assert_eq!(good.iter().map(|o| o.number).collect::<Vec<_>>(), case.good, "case {c}");
            let close = |ours: f64, optuna: f64, what: &str| {
                assert!(
                    (ours - optuna).abs() < 1e-9 * optuna.abs().max(1.0),
                    "case {c} {what}: {ours} against {optuna}"
                );
            };
            let mut checked = 0;
            for (name, d) in &case.independent {
                let dim = match name.as_str() {
                    "log_lr" => Dim::LogLr,
                    "batch" => Dim::Batch,
                    _ => Dim::Width,
                };
                let l = Mixture::new(&space, &[dim], &good, Mode::Independent);
                let g = Mixture::new(&space, &[dim], &rest, Mode::Independent);
                for (i, &x) in d.points.iter().enumerate() {
                    let mut s = Suggestion { log_lr: 0.0, batch: 0, width: 0 };
                    dim.set(&mut s, x);
                    close(l.log_pdf(&s), d.l[i], &format!("independent l({name} = {x})"));
                    close(g.log_pdf(&s), d.g[i], &format!("independent g({name} = {x})"));
                    checked += 1;
                }
            }
            let dims = Dim::searched(&space);
            let l = Mixture::new(&space, &dims, &good, Mode::Multivariate);
            let g = Mixture::new(&space, &dims, &rest, Mode::Multivariate);
            let p = &case.multivariate.points;
            for i in 0..case.multivariate.l.len() {
                let s = Suggestion {
                    log_lr: p["log_lr"][i],
                    batch: p["batch"][i] as usize,
                    width: p.get("width").map_or(0, |w| w[i] as usize),
                };
                close(l.log_pdf(&s), case.multivariate.l[i], &format!("multivariate l({s:?})"));
                close(g.log_pdf(&s), case.multivariate.g[i], &format!("multivariate g({s:?})"));
                checked += 1;
            }
            assert!(checked >= 20, "case {c}: {checked} values");
        }
    }

    /// On a problem with its optimum inside the range, the later suggestions of a
    /// sequential search score far better than random draws do, seed after seed.
    #[test]
    fn later_suggestions_beat_random_draws() {
        let space = Space { log_lr: (-1.0, 1.0), batches: 4, widths: 3 };
        let f = |s: &Suggestion| -(s.log_lr - 0.3).powi(2) - if s.batch == 2 { 0.0 } else { 0.3 };
        let random = |rng: &mut StdRng| Suggestion {
            log_lr: rng.random_range(-1.0..1.0),
            batch: rng.random_range(0..4),
            width: rng.random_range(0..3),
        };
        for mode in [Mode::Independent, Mode::Multivariate] {
            for seed in 0..5 {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut trials = Vec::new();
                for i in 0..60 {
                    let s =
                        if i < STARTUP_TRIALS { random(&mut rng) } else { suggest(&space, &trials, mode, &mut rng) };
                    trials.push(Observation {
                        number: i,
                        log_lr: s.log_lr,
                        batch: Some(s.batch),
                        width: Some(s.width),
                        score: (3, f(&s)),
                    });
                }
                let tpe = trials[40..].iter().map(|o| o.score.1).sum::<f64>() / 20.0;
                let drawn = (0..2000).map(|_| f(&random(&mut rng))).sum::<f64>() / 2000.0;
                assert!(tpe > drawn + 0.2, "{mode:?} seed {seed}: tpe {tpe}, random {drawn}");
            }
        }
    }

    /// Good trials at two corners — a low learning rate with the first batch size, a high one
    /// with the second: the joint density draws the pairs that went together (the
    /// independent densities' product draws the other two corners as often).
    #[test]
    fn the_joint_density_draws_settings_that_went_well_together() {
        let space = Space { log_lr: (-1.0, 1.0), batches: 2, widths: 0 };
        let trials: Vec<Observation> = (0..20)
            .map(|i| {
                let b = i as usize % 2;
                let x = if b == 0 { -0.7 } else { 0.7 } + 0.01 * i as f64;
                Observation { number: i, log_lr: x, batch: Some(b), width: None, score: (3, 0.5) }
            })
            .collect();
        let group: Vec<&Observation> = trials.iter().collect();
        let matched = |s: &Suggestion| (s.batch == 0) == (s.log_lr < 0.0);
        let mut rng = StdRng::seed_from_u64(5);
        let joint = Mixture::new(&space, &[Dim::LogLr, Dim::Batch], &group, Mode::Multivariate);
        let n = 4000;
        let together = (0..n).filter(|_| matched(&joint.sample(&mut rng))).count() as f64 / n as f64;
        let lr = Mixture::new(&space, &[Dim::LogLr], &group, Mode::Independent);
        let batch = Mixture::new(&space, &[Dim::Batch], &group, Mode::Independent);
        let apart = (0..n)
            .filter(|_| {
                let s =
                    Suggestion { log_lr: lr.sample(&mut rng).log_lr, batch: batch.sample(&mut rng).batch, width: 0 };
                matched(&s)
            })
            .count() as f64
            / n as f64;
        assert!(together > 0.85, "joint: {together}");
        assert!((apart - 0.5).abs() < 0.05, "independent: {apart}");
    }

    #[test]
    fn failed_trials_are_left_out_and_a_suggestion_stays_in_the_space() {
        let space = Space { log_lr: (-0.5, 1.0), batches: 3, widths: 2 };
        let trials: Vec<Observation> = (0..15)
            .map(|i| Observation {
                number: i,
                log_lr: -0.5 + 0.1 * i as f64,
                batch: Some(i as usize % 3),
                width: Some(i as usize % 2),
                score: if i % 4 == 0 { (-1, f64::NEG_INFINITY) } else { ((i % 3) as i32 + 1, 0.5 + 0.01 * i as f64) },
            })
            .collect();
        let (good, rest) = split(&trials);
        assert_eq!(good.len() + rest.len(), 11);
        assert_eq!(good.len(), good_count(11));
        // The best: stage 3 (i % 3 == 2) with the highest F1, i = 14.
        assert_eq!(good.iter().map(|o| o.number).collect::<Vec<_>>(), vec![11, 14]);
        let mut rng = StdRng::seed_from_u64(3);
        for mode in [Mode::Independent, Mode::Multivariate] {
            for _ in 0..50 {
                let s = suggest(&space, &trials, mode, &mut rng);
                assert!((-0.5..=1.0).contains(&s.log_lr) && s.batch < 3 && s.width < 2, "{s:?}");
            }
        }
        // Only failed trials: the prior alone.
        let failed = &trials[..1];
        let s = suggest(&space, failed, Mode::Multivariate, &mut rng);
        assert!((-0.5..=1.0).contains(&s.log_lr), "{s:?}");
    }
}
