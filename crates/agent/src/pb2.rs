//! Population-based bandits (Parker-Holder, Nguyen, Roberts, "Provably Efficient Online
//! Hyperparameter Optimization with Population-Based Bandits", NeurIPS 2020): the `pb2`
//! strategy's explore step, as Ray Tune's `PB2` scheduler takes it. Where `pbt` multiplies
//! the copied learning rate and batch size by 0.8 or 1.2, `pb2` chooses them with a
//! time-varying Gaussian process fitted to how much every member's validation macro-F1
//! changed over each of its rounds, given the settings it trained with and when.
//!
//! The model: inputs `(t, x)`, `t` the fraction of a trial's rows trained when the round
//! began and `x` the learning rate and batch size normalised to `[0, 1]` over the search
//! space (logarithmically); outputs the rounds' F1 changes, standardised and clipped to
//! ±2 as Ray does. Kernel: `exp(−‖x − x'‖² / ℓ) · (1 − ε)^(|t − t'| / 2)` (Ray's
//! `TV_SquaredExp` with unit variance), plus noise `σ²` on the diagonal; `ℓ`, `ε` and `σ²`
//! are the grid point of highest log marginal likelihood (Ray fits them with GPy's
//! optimiser instead). The next settings maximise Ray's UCB, `μ(t, x) + κ · v(t, x)` with
//! `κ = √(0.2 + max(0, ln(0.4 n)))`, `μ` the posterior mean and `v` the posterior variance
//! of the process that also holds the other members' current settings as pending points
//! (so that a member is not sent where another already is), over [`CANDIDATES`] random
//! points and the pending ones.
//!
//! ```
//! use rand::SeedableRng;
//! use tuneforge_agent::pb2::{Round, suggest};
//!
//! // Rounds whose F1 gained most near x = (0.7, 0.3).
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let rounds: Vec<Round> = (0..40)
//!     .map(|i| {
//!         let x = [(i % 7) as f64 / 6.0, (i / 7) as f64 / 5.0];
//!         let gain = 0.05 - (x[0] - 0.7).powi(2) - (x[1] - 0.3).powi(2);
//!         Round { t: 0.5, x, gain }
//!     })
//!     .collect();
//! let next = suggest(&rounds, &[], 0.5, &mut rng);
//! assert!((next[0] - 0.7).abs() < 0.2 && (next[1] - 0.3).abs() < 0.2, "{next:?}");
//! ```

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Random points the acquisition is evaluated at, besides the pending ones.
pub const CANDIDATES: usize = 256;

/// The rounds the process is fitted to at most: those that began nearest the time asked
/// about (the later on ties). Its cost is cubic in them; a suggestion from 64 rounds takes
/// about a millisecond.
pub const MAX_ROUNDS: usize = 64;

/// Length scales `ℓ` tried (the kernel divides the squared distance by it).
pub const LENGTH_SCALES: [f64; 3] = [0.1, 0.3, 1.0];
/// Time decays `ε` tried.
pub const EPSILONS: [f64; 2] = [0.1, 0.5];
/// Noise variances `σ²` tried (of the standardised changes).
pub const NOISES: [f64; 2] = [1e-2, 1e-1];

/// One round of one member: when it began, the settings it trained with, and what its
/// validation macro-F1 gained over it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Fraction of the trial's rows trained when the round began, in `[0, 1]`.
    pub t: f64,
    /// Learning rate and batch size, normalised to `[0, 1]` over the search space.
    pub x: [f64; 2],
    /// Change of the validation macro-F1 over the round (negative for a loss).
    pub gain: f64,
}

/// The kernel's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    /// Length scale `ℓ`.
    pub length: f64,
    /// Time decay `ε`.
    pub epsilon: f64,
    /// Noise variance `σ²`.
    pub noise: f64,
}

/// `exp(−‖x − x'‖² / ℓ) · (1 − ε)^(|t − t'| / 2)`.
pub fn kernel(h: &Hyper, a: (f64, [f64; 2]), b: (f64, [f64; 2])) -> f64 {
    let d2 = (a.1[0] - b.1[0]).powi(2) + (a.1[1] - b.1[1]).powi(2);
    (-d2 / h.length).exp() * (1.0 - h.epsilon).powf((a.0 - b.0).abs() / 2.0)
}

/// A Gaussian process fitted to points `(t, x) → y` (the noise added to the diagonal).
#[derive(Debug, Clone)]
pub struct Gp {
    hyper: Hyper,
    points: Vec<(f64, [f64; 2])>,
    /// Lower Cholesky factor of `K + σ²I`, row-major `n × n`.
    chol: Vec<f64>,
    /// `(K + σ²I)⁻¹ y`.
    alpha: Vec<f64>,
}

/// The squared distances and time gaps between every two points (lower triangle, row-major
/// `n × n`), computed once for all the kernel settings a fit tries.
struct Gaps {
    d2: Vec<f64>,
    dt: Vec<f64>,
}

impl Gaps {
    fn of(points: &[(f64, [f64; 2])]) -> Gaps {
        let n = points.len();
        let (mut d2, mut dt) = (vec![0.0; n * n], vec![0.0; n * n]);
        for i in 0..n {
            for j in 0..=i {
                let (a, b) = (points[i], points[j]);
                d2[i * n + j] = (a.1[0] - b.1[0]).powi(2) + (a.1[1] - b.1[1]).powi(2);
                dt[i * n + j] = (a.0 - b.0).abs();
            }
        }
        Gaps { d2, dt }
    }

    /// `K + σ²I` (lower triangle), as [`kernel`] gives it, with one `exp` an entry.
    fn matrix(&self, h: &Hyper, n: usize) -> Vec<f64> {
        let decay = (1.0 - h.epsilon).ln() / 2.0;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let at = i * n + j;
                k[at] = (-self.d2[at] / h.length + decay * self.dt[at]).exp() + if i == j { h.noise } else { 0.0 };
            }
        }
        k
    }
}

impl Gp {
    /// The process through `points` with values `y`; `None` when `K + σ²I` is not positive
    /// definite in floating point (it always is for `σ² > 0`, up to rounding).
    pub fn new(hyper: Hyper, points: Vec<(f64, [f64; 2])>, y: &[f64]) -> Option<Gp> {
        let k = Gaps::of(&points).matrix(&hyper, points.len());
        Gp::factor(hyper, points, &k, y)
    }

    fn factor(hyper: Hyper, points: Vec<(f64, [f64; 2])>, k: &[f64], y: &[f64]) -> Option<Gp> {
        let n = points.len();
        let chol = cholesky(k, n)?;
        let alpha = solve_upper_t(&chol, n, &solve_lower(&chol, n, y));
        Some(Gp { hyper, points, chol, alpha })
    }

    /// Log marginal likelihood of the values it was fitted to.
    pub fn log_likelihood(&self, y: &[f64]) -> f64 {
        let n = self.points.len();
        let fit: f64 = y.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let log_det: f64 = (0..n).map(|i| self.chol[i * n + i].ln()).sum();
        -0.5 * fit - log_det - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// Posterior mean and variance (of the function, without the noise) at `(t, x)`.
    pub fn predict(&self, at: (f64, [f64; 2])) -> (f64, f64) {
        let n = self.points.len();
        let ks: Vec<f64> = self.points.iter().map(|&p| kernel(&self.hyper, p, at)).collect();
        let mean = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = solve_lower(&self.chol, n, &ks);
        let var = kernel(&self.hyper, at, at) - v.iter().map(|x| x * x).sum::<f64>();
        (mean, var.max(0.0))
    }
}

/// The grid point of [`LENGTH_SCALES`] × [`EPSILONS`] × [`NOISES`] whose process explains
/// `y` best (highest log marginal likelihood), with that process.
pub fn fit(points: &[(f64, [f64; 2])], y: &[f64]) -> Option<Gp> {
    let gaps = Gaps::of(points);
    let mut best: Option<(f64, Gp)> = None;
    for &length in &LENGTH_SCALES {
        for &epsilon in &EPSILONS {
            for &noise in &NOISES {
                let hyper = Hyper { length, epsilon, noise };
                let k = gaps.matrix(&hyper, points.len());
                let Some(gp) = Gp::factor(hyper, points.to_vec(), &k, y) else { continue };
                let ll = gp.log_likelihood(y);
                if ll.is_finite() && best.as_ref().is_none_or(|(b, _)| ll > *b) {
                    best = Some((ll, gp));
                }
            }
        }
    }
    best.map(|(_, gp)| gp)
}

/// The changes standardised (mean 0, sd 1; sd 0 counts as 1) and clipped to ±2, as Ray's
/// `standardize`.
pub fn standardise(gains: &[f64]) -> Vec<f64> {
    let n = gains.len().max(1) as f64;
    let mean = gains.iter().sum::<f64>() / n;
    let sd = (gains.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n).sqrt();
    gains.iter().map(|g| ((g - mean) / (sd + 1e-8)).clamp(-2.0, 2.0)).collect()
}

/// Ray's UCB weight for a process fitted to `n` points: `√(0.2 + max(0, ln(0.4 n)))`.
pub fn kappa(n: usize) -> f64 {
    (0.2 + (0.4 * n as f64).ln().max(0.0)).sqrt()
}

/// The settings (normalised, in `[0, 1]²`) a member starting a round at `t` trains with
/// next: where the UCB of the rounds so far is highest, `pending` being the other members'
/// current settings. With no rounds, a random point.
pub fn suggest(rounds: &[Round], pending: &[[f64; 2]], t: f64, rng: &mut impl Rng) -> [f64; 2] {
    let mut candidates: Vec<[f64; 2]> = (0..CANDIDATES).map(|_| [rng.random::<f64>(), rng.random::<f64>()]).collect();
    candidates.extend_from_slice(pending);
    // The rounds that began nearest `t`, the later ones (further down `rounds`) on ties.
    let mut recent: Vec<(usize, &Round)> = rounds.iter().enumerate().filter(|(_, r)| r.gain.is_finite()).collect();
    recent.sort_by(|(i, a), (j, b)| (a.t - t).abs().total_cmp(&(b.t - t).abs()).then(j.cmp(i)));
    recent.truncate(MAX_ROUNDS);
    let recent: Vec<&Round> = recent.into_iter().map(|(_, r)| r).collect();
    let Some(gp) = (!recent.is_empty())
        .then(|| {
            let points: Vec<(f64, [f64; 2])> = recent.iter().map(|r| (r.t, r.x)).collect();
            fit(&points, &standardise(&recent.iter().map(|r| r.gain).collect::<Vec<_>>()))
        })
        .flatten()
    else {
        return candidates[0];
    };
    // The variance from a process that also holds the pending points (their values do not
    // change a variance).
    let mut with_pending = gp.points.clone();
    with_pending.extend(pending.iter().map(|&x| (t, x)));
    let zeros = vec![0.0; with_pending.len()];
    let spread = Gp::new(gp.hyper, with_pending, &zeros).unwrap_or_else(|| gp.clone());
    let k = kappa(gp.points.len());
    let ucb = |x: [f64; 2]| gp.predict((t, x)).0 + k * spread.predict((t, x)).1;
    let mut best = (f64::NEG_INFINITY, candidates[0]);
    for x in candidates {
        let u = ucb(x);
        if u > best.0 {
            best = (u, x);
        }
    }
    best.1
}

/// The lower Cholesky factor of the symmetric `n × n` matrix `a` (row-major); `None` when
/// it is not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = l[i * n..i * n + j].iter().zip(&l[j * n..j * n + j]).map(|(a, b)| a * b).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `L⁻¹ b` for lower-triangular `L`.
fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in 0..n {
        let s: f64 = l[i * n..i * n + i].iter().zip(&x[..i]).map(|(a, b)| a * b).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

/// `L⁻ᵀ b` for lower-triangular `L`.
fn solve_upper_t(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// The posterior, likelihood and fitted grid point against numpy/scipy's dense linear
    /// algebra (`scripts/fixtures/pb2.py`, values in `tests/fixtures/pb2.json`).
    #[test]
    fn the_process_matches_numpy_and_scipy() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pb2.json");
        let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let nums =
            |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
        let pairs = |v: &serde_json::Value| -> Vec<[f64; 2]> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let p = nums(p);
                    [p[0], p[1]]
                })
                .collect()
        };
        let points: Vec<(f64, [f64; 2])> = nums(&f["t"]).into_iter().zip(pairs(&f["x"])).collect();
        let y = standardise(&nums(&f["gain"]));
        for (a, b) in y.iter().zip(nums(&f["standardised"])) {
            assert!((a - b).abs() < 1e-9, "{a} {b}");
        }
        let queries: Vec<(f64, [f64; 2])> = nums(&f["queries_t"]).into_iter().zip(pairs(&f["queries_x"])).collect();
        for s in f["settings"].as_array().unwrap() {
            let h = Hyper {
                length: s["length"].as_f64().unwrap(),
                epsilon: s["epsilon"].as_f64().unwrap(),
                noise: s["noise"].as_f64().unwrap(),
            };
            let gp = Gp::new(h, points.clone(), &y).unwrap();
            let ll = s["log_likelihood"].as_f64().unwrap();
            assert!((gp.log_likelihood(&y) - ll).abs() < 1e-7 * ll.abs().max(1.0), "{h:?}");
            for ((q, m), v) in queries.iter().zip(nums(&s["mean"])).zip(nums(&s["variance"])) {
                let (mean, var) = gp.predict(*q);
                assert!((mean - m).abs() < 1e-7 && (var - v).abs() < 1e-7, "{h:?} at {q:?}: {mean} {var} / {m} {v}");
            }
        }
        let best = fit(&points, &y).unwrap().hyper;
        let want = &f["best"];
        assert_eq!(
            (best.length, best.epsilon, best.noise),
            (want["length"].as_f64().unwrap(), want["epsilon"].as_f64().unwrap(), want["noise"].as_f64().unwrap())
        );
    }

    #[test]
    fn cholesky_factors_multiply_back_and_refuse_an_indefinite_matrix() {
        let a = [4.0, 2.0, 0.4, 2.0, 2.0, 0.5, 0.4, 0.5, 3.0];
        let l = cholesky(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let back: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((back - a[i * 3 + j]).abs() < 1e-12, "{i},{j}");
            }
        }
        // Solving through the factor: A x = b.
        let b = [1.0, -2.0, 0.5];
        let x = solve_upper_t(&l, 3, &solve_lower(&l, 3, &b));
        for i in 0..3 {
            let ax: f64 = (0..3).map(|k| a[i * 3 + k] * x[k]).sum();
            assert!((ax - b[i]).abs() < 1e-12);
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn standardised_changes_are_clipped_and_a_constant_is_zero() {
        let s = standardise(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(s[9], 2.0, "3 sd above the mean, clipped");
        assert!(s[..9].iter().all(|&v| (v + 1.0 / 3.0).abs() < 1e-6), "{s:?}");
        assert_eq!(standardise(&[0.3, 0.3]), vec![0.0, 0.0]);
        assert_eq!(kappa(1), 0.2f64.sqrt());
        assert!((kappa(10) - (0.2 + 4f64.ln()).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn the_suggestion_goes_where_the_rounds_gained_and_away_from_pending_points() {
        // 5 seeds: 30 random rounds of a gain peaked at (0.7, 0.3); the suggestion lands
        // near the peak.
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let gain = |x: [f64; 2]| 0.05 - (x[0] - 0.7).powi(2) - (x[1] - 0.3).powi(2);
            let rounds: Vec<Round> = (0..30)
                .map(|_| {
                    let x = [rng.random::<f64>(), rng.random::<f64>()];
                    Round { t: rng.random::<f64>(), x, gain: gain(x) }
                })
                .collect();
            let next = suggest(&rounds, &[], 0.5, &mut rng);
            assert!(gain(next) > 0.03, "seed {seed}: {next:?}");
        }
        // Nothing known: a random point.
        let mut rng = StdRng::seed_from_u64(3);
        let x = suggest(&[], &[[0.5, 0.5]], 0.2, &mut rng);
        assert!(x[0] != 0.5 && (0.0..=1.0).contains(&x[0]) && (0.0..=1.0).contains(&x[1]));
        // A flat landscape: the pending points' neighbourhood has the least variance left,
        // so the suggestion keeps away from them.
        let mut rng = StdRng::seed_from_u64(4);
        let rounds: Vec<Round> =
            (0..20).map(|i| Round { t: 0.5, x: [0.1 + 0.04 * i as f64, 0.5], gain: 0.01 }).collect();
        let pending = [[0.9, 0.9], [0.1, 0.1]];
        let next = suggest(&rounds, &pending, 0.5, &mut rng);
        for p in pending {
            assert!((next[0] - p[0]).hypot(next[1] - p[1]) > 0.1, "{next:?} next to {p:?}");
        }
    }
}
