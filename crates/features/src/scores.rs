//! Univariate scores: variance, ANOVA F, binned mutual information; and rankings.

use std::cmp::Ordering;

use crate::matrix::{Classes, check_labels};
use crate::{Error, Matrix, Result};

/// Default number of bins for [`mutual_info`].
pub const DEFAULT_MI_BINS: usize = 10;

/// Per-feature population variance (divisor `n`, as `numpy.var` and scikit-learn's
/// `VarianceThreshold`). Two-pass: mean first, then squared deviations.
/// Values beyond about ±1e150 overflow to `+∞`.
///
/// Errors: [`Error::Empty`] for a matrix with no rows.
pub fn variance(x: &Matrix) -> Result<Vec<f64>> {
    if x.n_rows() == 0 {
        return Err(Error::Empty { what: "feature matrix rows" });
    }
    let n = x.n_rows() as f64;
    let mut mean = vec![0.0; x.n_cols()];
    for row in x.rows() {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0; x.n_cols()];
    for row in x.rows() {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= n);
    Ok(var)
}

/// ANOVA F statistics and their p-values, one per feature (see [`f_classif`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AnovaF {
    /// F statistic per feature: between-class mean square over within-class mean square.
    pub f: Vec<f64>,
    /// Upper-tail probability of `f` under the F(`k − 1`, `n − k`) distribution.
    pub p_values: Vec<f64>,
}

/// One-way ANOVA F test of each feature against the class labels, as scikit-learn's
/// `f_classif`.
///
/// `k` is the number of classes *present* in `labels` (a class of `0..n_classes` with no
/// rows is ignored, as scikit-learn only sees the labels it is given); degrees of freedom
/// are `k − 1` and `n − k`. p-values are the regularised incomplete beta function
/// `I_{w}((n−k)/2, (k−1)/2)` with `w = (n−k) / ((n−k) + (k−1)F)` (statrs), the same
/// expression as SciPy's `fdtrc`.
///
/// Degenerate features never give NaN (scikit-learn gives `nan` with a warning):
/// - a constant feature (minimum equals maximum) has `F = 0`, `p = 1`: it carries no
///   information, and ranks last;
/// - a feature constant *within* every class but not overall has `F = +∞`, `p = 0`: it
///   separates the classes perfectly, and ranks first.
///
/// Values beyond about ±1e150 overflow the sums of squares (the result is then ±∞ or NaN);
/// rescale such features first (F is invariant under affine changes).
///
/// Errors: [`Error::Empty`], [`Error::ShapeMismatch`], [`Error::LabelOutOfRange`],
/// [`Error::TooFewClasses`] when fewer than 2 classes are present, [`Error::TooFewRows`]
/// when `n <= k`.
pub fn f_classif(x: &Matrix, labels: &[u32], n_classes: usize) -> Result<AnovaF> {
    let Classes { index, counts } = check_labels(x, labels, n_classes)?;
    let present = counts.len();
    if present < 2 {
        return Err(Error::TooFewClasses { needed: 2, found: present });
    }
    let n = x.n_rows();
    if n <= present {
        return Err(Error::TooFewRows { needed: present + 1, found: n });
    }
    let d = x.n_cols();
    // Per class and feature: sum, min, max.
    let mut sum = vec![0.0; present * d];
    let mut min = vec![f64::INFINITY; present * d];
    let mut max = vec![f64::NEG_INFINITY; present * d];
    for (row, &c) in x.rows().zip(&index) {
        let base = c * d;
        for (j, &v) in row.iter().enumerate() {
            sum[base + j] += v;
            min[base + j] = min[base + j].min(v);
            max[base + j] = max[base + j].max(v);
        }
    }
    // Class means; a class constant in a feature gets its value exactly, so that its
    // within-class sum of squares is exactly zero.
    let mean: Vec<f64> =
        (0..present * d).map(|i| if min[i] == max[i] { min[i] } else { sum[i] / counts[i / d] as f64 }).collect();
    let grand: Vec<f64> = (0..d).map(|j| (0..present).map(|c| sum[c * d + j]).sum::<f64>() / n as f64).collect();
    let mut ss_within = vec![0.0; d];
    for (row, &c) in x.rows().zip(&index) {
        let base = c * d;
        for (j, &v) in row.iter().enumerate() {
            let dev = v - mean[base + j];
            ss_within[j] += dev * dev;
        }
    }
    let df_between = (present - 1) as f64;
    let df_within = (n - present) as f64;
    let mut f = Vec::with_capacity(d);
    let mut p_values = Vec::with_capacity(d);
    for j in 0..d {
        let classes = 0..present;
        let lo = classes.clone().map(|c| min[c * d + j]).fold(f64::INFINITY, f64::min);
        let hi = classes.clone().map(|c| max[c * d + j]).fold(f64::NEG_INFINITY, f64::max);
        let constant = lo == hi;
        let (fj, pj) = if constant {
            (0.0, 1.0)
        } else if ss_within[j] == 0.0 {
            (f64::INFINITY, 0.0)
        } else {
            let ss_between: f64 = classes
                .map(|c| {
                    let dev = mean[c * d + j] - grand[j];
                    counts[c] as f64 * dev * dev
                })
                .sum();
            let fj = (ss_between / df_between) / (ss_within[j] / df_within);
            (fj, f_survival(fj, df_between, df_within))
        };
        f.push(fj);
        p_values.push(pj);
    }
    Ok(AnovaF { f, p_values })
}

/// `P(F > f)` for F(`d1`, `d2`), written as SciPy's `fdtrc` writes it, which keeps small
/// tails accurate (statrs' own `FisherSnedecor::sf` forms `1 − d1 f/(d1 f + d2)`).
fn f_survival(f: f64, d1: f64, d2: f64) -> f64 {
    if f <= 0.0 {
        return 1.0;
    }
    let w = d2 / (d2 + d1 * f);
    // Arguments are positive and `w` is in (0, 1], so this cannot fail; 1.0 is the
    // conservative answer if it ever did.
    statrs::function::beta::checked_beta_reg(d2 / 2.0, d1 / 2.0, w).unwrap_or(1.0)
}

/// Mutual information (nats) between each feature and the class labels, by the plug-in
/// estimator on equal-frequency bins.
///
/// Each feature is cut into `bins` bins by rank: a value whose *minimum rank* (the number
/// of values strictly smaller) is `r` goes to bin `r * bins / n` (integer division). Equal
/// values therefore always share a bin, and a feature with few distinct values uses fewer
/// bins (a constant feature: one bin, MI 0). Then
/// `MI = Σ_{b,c} p(b,c) ln(p(b,c) / (p(b) p(c)))` over the bin × class counts.
///
/// This is deterministic and exactly reproducible (the fixture script reimplements it in
/// NumPy). It is not scikit-learn's `mutual_info_classif` (a k-nearest-neighbour
/// estimator with random jitter); it ranks features similarly. The plug-in estimate is
/// biased upwards by about `(B − 1)(K − 1) / 2n` nats for `B` bins used and `K` classes,
/// so compare features scored on the same rows.
///
/// Errors: as [`f_classif`] for the inputs (but one class is fine: MI 0), and
/// [`Error::InvalidParameter`] when `bins < 2`.
pub fn mutual_info(x: &Matrix, labels: &[u32], n_classes: usize, bins: usize) -> Result<Vec<f64>> {
    if bins < 2 {
        return Err(Error::InvalidParameter { name: "bins", value: bins as f64, expected: "at least 2" });
    }
    let Classes { index, counts: class_counts } = check_labels(x, labels, n_classes)?;
    let k = class_counts.len();
    let n = x.n_rows();
    let nf = n as f64;
    let mut out = Vec::with_capacity(x.n_cols());
    let mut order: Vec<usize> = (0..n).collect();
    let mut bin_of = vec![0usize; n];
    let mut joint = vec![0usize; bins * k];
    let mut marginal = vec![0usize; bins];
    for j in 0..x.n_cols() {
        let col = x.column(j).unwrap_or_default();
        order.sort_by(|&a, &b| col[a].partial_cmp(&col[b]).unwrap_or(Ordering::Equal));
        let mut rank_min = 0;
        for (pos, &i) in order.iter().enumerate() {
            if pos > 0 && col[i] != col[order[pos - 1]] {
                rank_min = pos;
            }
            // rank_min < n, so the product stays below n * bins; u128 rules out overflow.
            bin_of[i] = ((rank_min as u128 * bins as u128) / n as u128) as usize;
        }
        joint.iter_mut().for_each(|c| *c = 0);
        marginal.iter_mut().for_each(|c| *c = 0);
        for (i, &c) in index.iter().enumerate() {
            joint[bin_of[i] * k + c] += 1;
            marginal[bin_of[i]] += 1;
        }
        let mut mi = 0.0;
        for b in 0..bins {
            for c in 0..k {
                let nbc = joint[b * k + c];
                if nbc > 0 {
                    let nbc = nbc as f64;
                    mi += nbc / nf * (nf * nbc / (marginal[b] as f64 * class_counts[c] as f64)).ln();
                }
            }
        }
        out.push(mi.max(0.0));
    }
    Ok(out)
}

/// Feature indices sorted by descending score; ties keep the lower index first; `+∞`
/// ranks first.
///
/// Errors: [`Error::NonFinite`] (row 0, col = feature) for a NaN score.
pub fn ranking(scores: &[f64]) -> Result<Vec<usize>> {
    if let Some(col) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::NonFinite { row: 0, col, value: scores[col] });
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal).then(a.cmp(&b)));
    Ok(idx)
}

/// The `k` best features by score, best first (see [`ranking`]).
///
/// Errors: [`Error::KTooLarge`] when `k > scores.len()`, [`Error::InvalidParameter`] when
/// `k == 0`, [`Error::NonFinite`] for a NaN score.
pub fn top_k(scores: &[f64], k: usize) -> Result<Vec<usize>> {
    if k == 0 {
        return Err(Error::InvalidParameter { name: "k", value: 0.0, expected: "at least 1" });
    }
    if k > scores.len() {
        return Err(Error::KTooLarge { k, n_features: scores.len() });
    }
    let mut idx = ranking(scores)?;
    idx.truncate(k);
    Ok(idx)
}
