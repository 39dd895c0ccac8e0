//! Permutation importance: how much a model's score drops when one feature is shuffled.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::matrix::check_labels;
use crate::{Error, Matrix, Result};

/// Settings for [`permutation_importance`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PermutationConfig {
    /// Shuffles per feature (at least 1).
    pub n_repeats: usize,
    /// Seed of the shuffles: the same seed, data and model give the same importances.
    pub seed: u64,
}

impl Default for PermutationConfig {
    /// 5 repeats (scikit-learn's default), seed 0.
    fn default() -> Self {
        PermutationConfig { n_repeats: 5, seed: 0 }
    }
}

/// Result of [`permutation_importance`].
#[derive(Debug, Clone, PartialEq)]
pub struct PermutationImportance {
    /// Score of the unshuffled data.
    pub baseline: f64,
    /// Per feature: mean over repeats of `baseline − score with the feature shuffled`.
    pub mean: Vec<f64>,
    /// Per feature: population standard deviation (divisor `n_repeats`) of those drops.
    pub std: Vec<f64>,
}

/// Fraction of `predicted` equal to `truth` (0 for empty inputs; lengths are the caller's
/// business, [`permutation_importance`] checks them).
pub fn accuracy(truth: &[u32], predicted: &[u32]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    truth.iter().zip(predicted).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

/// Permutation importance of every feature of `x` for the model behind `predict`, as
/// scikit-learn's `permutation_importance`: the drop in `score(truth, predicted)` (higher
/// is better, e.g. [`accuracy`]) when one column is shuffled, averaged over
/// `config.n_repeats` shuffles.
///
/// One `StdRng` seeded with `config.seed` draws all shuffles, feature by feature and repeat
/// by repeat, so results are reproducible for a given `rand` version. `x` is copied once;
/// `predict` sees that copy with one column shuffled. A negative importance means the
/// shuffled feature scored better by chance: it is reported as is.
///
/// Errors: the label checks of [`crate::f_classif`], [`Error::InvalidParameter`] for
/// `n_repeats == 0`, [`Error::ShapeMismatch`] when `predict` returns a vector of the wrong
/// length, [`Error::NonFinite`] (row 0, col = feature) when `score` returns NaN or ±∞.
pub fn permutation_importance<P, S>(
    x: &Matrix,
    labels: &[u32],
    n_classes: usize,
    predict: P,
    score: S,
    config: &PermutationConfig,
) -> Result<PermutationImportance>
where
    P: Fn(&Matrix) -> Vec<u32>,
    S: Fn(&[u32], &[u32]) -> f64,
{
    if config.n_repeats == 0 {
        return Err(Error::InvalidParameter { name: "n_repeats", value: 0.0, expected: "at least 1" });
    }
    check_labels(x, labels, n_classes)?;
    let scored = |m: &Matrix, col: usize| -> Result<f64> {
        let predicted = predict(m);
        if predicted.len() != labels.len() {
            return Err(Error::ShapeMismatch { what: "predictions", expected: labels.len(), found: predicted.len() });
        }
        let s = score(labels, &predicted);
        if s.is_finite() { Ok(s) } else { Err(Error::NonFinite { row: 0, col, value: s }) }
    };
    let baseline = scored(x, 0)?;
    let mut work = x.clone();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut perm: Vec<usize> = (0..x.n_rows()).collect();
    let mut mean = Vec::with_capacity(x.n_cols());
    let mut std = Vec::with_capacity(x.n_cols());
    let mut drops = vec![0.0; config.n_repeats];
    for j in 0..x.n_cols() {
        let original = x.column(j).unwrap_or_default();
        for drop in drops.iter_mut() {
            perm.shuffle(&mut rng);
            work.permute_column(j, &perm, &original);
            *drop = baseline - scored(&work, j)?;
        }
        work.set_column(j, &original);
        let m = drops.iter().sum::<f64>() / drops.len() as f64;
        let var = drops.iter().map(|d| (d - m) * (d - m)).sum::<f64>() / drops.len() as f64;
        mean.push(m);
        std.push(var.sqrt());
    }
    Ok(PermutationImportance { baseline, mean, std })
}
