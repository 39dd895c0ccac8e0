//! [`AdaptiveSelector`]: per-feature weights smoothed over re-scorings, and a mask.

use crate::matrix::rows_of;
use crate::scores::ranking;
use crate::{Error, Result};

/// Which features the mask keeps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The `k` features of largest weight (ties: lower index first). `1 <= k <= n_features`.
    TopK(usize),
    /// Every feature whose weight is at least this value, in `[0, 1]` (weights are in
    /// `[0, 1]`). May keep no feature at all; the trainer decides what that means.
    Threshold(f64),
}

/// Settings of an [`AdaptiveSelector`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelectorConfig {
    /// Which features the mask keeps.
    pub selection: Selection,
    /// Smoothing factor in `(0, 1]`: `weight ← α·new + (1 − α)·weight`. 1 forgets the past.
    pub alpha: f64,
    /// Re-score every this many training steps (at least 1); see [`AdaptiveSelector::tick`].
    pub rescore_every: u64,
}

/// Adaptive feature selection during training.
///
/// Holds one weight in `[0, 1]` per feature, starting at 1 (nothing known, everything
/// kept). Every `rescore_every` steps the trainer computes a fresh score vector (any of
/// this crate's scores, from the latest data or from the model's own gradients), and
/// [`rescore`](Self::rescore) folds it in:
///
/// `weight_j ← α · normalised_j + (1 − α) · weight_j`
///
/// where `normalised` is the score scaled to `[0, 1]` by [`normalise_scores`]. The mask is
/// then recomputed from the weights by the [`Selection`] rule. Before the first
/// re-scoring the mask keeps every feature.
///
/// The state (config, weights, step and re-scoring counters) serialises with serde for
/// checkpoints; the mask is derived from the weights, so a loaded selector cannot hold a
/// mask that disagrees with its weights, and loading validates every field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SelectorState")]
pub struct AdaptiveSelector {
    config: SelectorConfig,
    weights: Vec<f64>,
    steps: u64,
    rescorings: u64,
    #[serde(skip)]
    mask: Vec<bool>,
}

impl AdaptiveSelector {
    /// A selector for `n_features` features, all weights 1, all features kept.
    ///
    /// Errors: [`Error::Empty`] for no features; [`Error::InvalidParameter`] for `alpha`
    /// outside `(0, 1]`, `rescore_every == 0`, `TopK(0)` or a threshold outside `[0, 1]`;
    /// [`Error::KTooLarge`] for `TopK(k)` with `k > n_features`.
    pub fn new(n_features: usize, config: SelectorConfig) -> Result<AdaptiveSelector> {
        validate(n_features, &config)?;
        Ok(AdaptiveSelector {
            config,
            weights: vec![1.0; n_features],
            steps: 0,
            rescorings: 0,
            mask: vec![true; n_features],
        })
    }

    /// Counts one training step; `true` when a re-scoring is due now (every
    /// `rescore_every` steps: steps `K, 2K, ...`). The selector changes nothing by itself:
    /// the caller then computes scores and calls [`rescore`](Self::rescore).
    pub fn tick(&mut self) -> bool {
        self.steps = self.steps.saturating_add(1);
        self.steps.is_multiple_of(self.config.rescore_every)
    }

    /// Folds a fresh score vector (one per feature, larger = more important) into the
    /// weights and recomputes the mask. The selector is unchanged on error.
    ///
    /// Errors: [`Error::ShapeMismatch`] for a wrong length, [`Error::NonFinite`] (row 0)
    /// for a NaN score.
    pub fn rescore(&mut self, scores: &[f64]) -> Result<()> {
        if scores.len() != self.weights.len() {
            return Err(Error::ShapeMismatch { what: "scores", expected: self.weights.len(), found: scores.len() });
        }
        let fresh = normalise_scores(scores)?;
        let a = self.config.alpha;
        for (w, s) in self.weights.iter_mut().zip(fresh) {
            *w = (a * s + (1.0 - a) * *w).clamp(0.0, 1.0);
        }
        self.rescorings = self.rescorings.saturating_add(1);
        self.mask = compute_mask(&self.weights, self.config.selection, self.rescorings);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &SelectorConfig {
        &self.config
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// Current weights, in `[0, 1]`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Current mask: `true` = keep the feature.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// Indices of the kept features, ascending.
    pub fn selected(&self) -> Vec<usize> {
        self.mask.iter().enumerate().filter_map(|(j, &m)| m.then_some(j)).collect()
    }

    /// All features by descending weight (ties: lower index first).
    pub fn ranking(&self) -> Vec<usize> {
        ranking(&self.weights).unwrap_or_else(|_| (0..self.weights.len()).collect())
    }

    /// Training steps counted by [`tick`](Self::tick).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Re-scorings applied so far.
    pub fn rescorings(&self) -> u64 {
        self.rescorings
    }

    /// Zeroes the dropped features of a row-major batch with `n_cols` columns in place.
    ///
    /// Errors: [`Error::ShapeMismatch`] when `n_cols != n_features`, [`Error::RaggedRows`].
    pub fn apply_mask(&self, batch: &mut [f32], n_cols: usize) -> Result<()> {
        self.check_batch(batch.len(), n_cols)?;
        for row in batch.chunks_exact_mut(n_cols) {
            for (v, &keep) in row.iter_mut().zip(&self.mask) {
                if !keep {
                    *v = 0.0;
                }
            }
        }
        Ok(())
    }

    /// Multiplies each kept feature by its weight and zeroes the dropped ones, in place
    /// (soft selection). Errors as [`apply_mask`](Self::apply_mask).
    pub fn apply_weights(&self, batch: &mut [f32], n_cols: usize) -> Result<()> {
        self.check_batch(batch.len(), n_cols)?;
        for row in batch.chunks_exact_mut(n_cols) {
            for ((v, &keep), &w) in row.iter_mut().zip(&self.mask).zip(&self.weights) {
                *v = if keep { (f64::from(*v) * w) as f32 } else { 0.0 };
            }
        }
        Ok(())
    }

    fn check_batch(&self, len: usize, n_cols: usize) -> Result<()> {
        if n_cols != self.weights.len() {
            return Err(Error::ShapeMismatch { what: "batch columns", expected: self.weights.len(), found: n_cols });
        }
        rows_of(len, n_cols, "batch").map(|_| ())
    }
}

/// Scales a score vector to `[0, 1]`: each score divided by the largest finite positive
/// score; `+∞` maps to 1; negative scores and `−∞` map to 0 (a permutation importance below
/// zero means "no use", not "harmful to keep"). All scores `<= 0`: all 0.
///
/// Errors: [`Error::NonFinite`] (row 0, col = feature) for a NaN.
pub fn normalise_scores(scores: &[f64]) -> Result<Vec<f64>> {
    if let Some(col) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::NonFinite { row: 0, col, value: scores[col] });
    }
    let max = scores.iter().copied().filter(|s| s.is_finite()).fold(0.0, f64::max);
    Ok(scores
        .iter()
        .map(|&s| {
            if s == f64::INFINITY {
                1.0
            } else if s <= 0.0 || max == 0.0 {
                0.0
            } else {
                (s / max).min(1.0)
            }
        })
        .collect())
}

fn compute_mask(weights: &[f64], selection: Selection, rescorings: u64) -> Vec<bool> {
    if rescorings == 0 {
        return vec![true; weights.len()];
    }
    match selection {
        Selection::Threshold(t) => weights.iter().map(|&w| w >= t).collect(),
        Selection::TopK(k) => {
            let mut mask = vec![false; weights.len()];
            let order = ranking(weights).unwrap_or_else(|_| (0..weights.len()).collect());
            for &j in order.iter().take(k) {
                mask[j] = true;
            }
            mask
        }
    }
}

fn validate(n_features: usize, config: &SelectorConfig) -> Result<()> {
    if n_features == 0 {
        return Err(Error::Empty { what: "feature columns" });
    }
    if !(config.alpha > 0.0 && config.alpha <= 1.0) {
        return Err(Error::InvalidParameter { name: "alpha", value: config.alpha, expected: "in (0, 1]" });
    }
    if config.rescore_every == 0 {
        return Err(Error::InvalidParameter { name: "rescore_every", value: 0.0, expected: "at least 1" });
    }
    match config.selection {
        Selection::TopK(0) => {
            Err(Error::InvalidParameter { name: "selection.top_k", value: 0.0, expected: "at least 1" })
        }
        Selection::TopK(k) if k > n_features => Err(Error::KTooLarge { k, n_features }),
        Selection::Threshold(t) if !(0.0..=1.0).contains(&t) => {
            Err(Error::InvalidParameter { name: "selection.threshold", value: t, expected: "in [0, 1]" })
        }
        _ => Ok(()),
    }
}

/// The serialised form, validated into an [`AdaptiveSelector`] on load.
#[derive(serde::Deserialize)]
struct SelectorState {
    config: SelectorConfig,
    weights: Vec<f64>,
    steps: u64,
    rescorings: u64,
}

impl TryFrom<SelectorState> for AdaptiveSelector {
    type Error = Error;

    fn try_from(s: SelectorState) -> Result<AdaptiveSelector> {
        validate(s.weights.len(), &s.config)?;
        if let Some(col) = s.weights.iter().position(|w| !(0.0..=1.0).contains(w)) {
            let value = s.weights[col];
            return Err(if value.is_finite() {
                Error::InvalidParameter { name: "weights", value, expected: "in [0, 1]" }
            } else {
                Error::NonFinite { row: 0, col, value }
            });
        }
        let mask = compute_mask(&s.weights, s.config.selection, s.rescorings);
        Ok(AdaptiveSelector { config: s.config, weights: s.weights, steps: s.steps, rescorings: s.rescorings, mask })
    }
}
