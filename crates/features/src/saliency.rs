//! Gradient saliency: mean `|∂loss/∂x|` per feature, from gradients the caller computes.

use crate::matrix::{check_finite, rows_of};
use crate::{Error, Result};

/// Running mean of `|∂loss/∂x_j|` per input feature `j`, over every row of every batch
/// added since the last [`take`](Saliency::take).
///
/// This crate has no autograd: the trainer computes the gradient of the loss with respect
/// to the input batch (in candle, `loss.backward()` on an input `Var`) and hands the
/// values over, either raw ([`add_gradients`](Saliency::add_gradients)) or already
/// averaged per feature ([`add_means`](Saliency::add_means)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saliency {
    sums: Vec<f64>,
    rows: u64,
}

impl Saliency {
    /// An empty accumulator for `n_features` features.
    pub fn new(n_features: usize) -> Result<Saliency> {
        if n_features == 0 {
            return Err(Error::Empty { what: "feature columns" });
        }
        Ok(Saliency { sums: vec![0.0; n_features], rows: 0 })
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.sums.len()
    }

    /// Rows accumulated since the last [`take`](Saliency::take).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a row-major batch of input gradients (`f32` or `f64`), `n_features` per row.
    /// Nothing is added when the batch is rejected.
    ///
    /// Errors: [`Error::RaggedRows`], [`Error::NonFinite`] (row and column in the batch).
    pub fn add_gradients<T: Copy + Into<f64>>(&mut self, gradients: &[T]) -> Result<()> {
        let n_cols = self.sums.len();
        let rows = rows_of(gradients.len(), n_cols, "gradient batch")?;
        check_finite(gradients, n_cols)?;
        for row in gradients.chunks_exact(n_cols) {
            for (s, &g) in self.sums.iter_mut().zip(row) {
                *s += g.into().abs();
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Adds per-feature means of `|∂loss/∂x|` over a batch of `batch_rows` rows (weighted
    /// by `batch_rows` in the running mean). Nothing is added when rejected.
    ///
    /// Errors: [`Error::ShapeMismatch`] for a wrong length, [`Error::NonFinite`] (row 0)
    /// for NaN/±∞, [`Error::InvalidParameter`] for a negative mean.
    pub fn add_means(&mut self, means: &[f64], batch_rows: usize) -> Result<()> {
        if means.len() != self.sums.len() {
            return Err(Error::ShapeMismatch { what: "saliency means", expected: self.sums.len(), found: means.len() });
        }
        check_finite(means, means.len())?;
        if let Some(&m) = means.iter().find(|&&m| m < 0.0) {
            return Err(Error::InvalidParameter {
                name: "means",
                value: m,
                expected: "non-negative (mean absolute gradient)",
            });
        }
        for (s, &m) in self.sums.iter_mut().zip(means) {
            *s += m * batch_rows as f64;
        }
        self.rows += batch_rows as u64;
        Ok(())
    }

    /// The current per-feature mean `|∂loss/∂x|` (zeros before any row).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sums.iter().map(|s| s / n).collect()
    }

    /// The current mean, then resets the accumulator: one call per re-scoring.
    pub fn take(&mut self) -> Vec<f64> {
        let mean = self.mean();
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        self.rows = 0;
        mean
    }
}

/// Mean `|∂loss/∂x_j|` per feature of one row-major gradient batch with `n_cols` columns.
///
/// Errors: [`Error::Empty`] for no rows or columns, [`Error::RaggedRows`],
/// [`Error::NonFinite`].
pub fn gradient_saliency<T: Copy + Into<f64>>(gradients: &[T], n_cols: usize) -> Result<Vec<f64>> {
    let mut s = Saliency::new(n_cols)?;
    s.add_gradients(gradients)?;
    if s.rows() == 0 {
        return Err(Error::Empty { what: "gradient batch" });
    }
    Ok(s.take())
}
