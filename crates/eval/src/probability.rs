//! Metrics of predicted probabilities: top-k accuracy and log loss, streamed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exact_sum::ExactSum;

/// The default tolerance on `|row sum - 1|`: `sqrt(f32::EPSILON)` ≈ 3.45e-4.
///
/// This is the relative tolerance scikit-learn's `log_loss` uses for `float32`
/// probabilities, so a softmax computed in `f32` and widened to `f64` passes. (For
/// `float64` input scikit-learn only *warns* beyond about 2.5e-8 and computes anyway; a
/// stricter tolerance can be set with [`ProbabilityMetrics::with_sum_tolerance`].)
pub const DEFAULT_SUM_TOLERANCE: f64 = 3.452_669_830_012_439e-4;

/// Streaming top-k accuracy and log loss over predicted class probabilities.
///
/// Feed it batches of true labels and probability rows (one row of `num_classes` values
/// per sample, each in `[0, 1]`, summing to 1 within the tolerance); merge the
/// accumulators of several workers; read [`top_k_accuracy`](Self::top_k_accuracy) for any
/// `k` and [`log_loss`](Self::log_loss) at the end.
///
/// It keeps, per sample, only the rank of the true class (a histogram of ranks, so any
/// `k` can be asked for afterwards) and the sample's loss (an exact sum, so merged and
/// one-shot results are the same `f64`).
///
/// Both metrics equal scikit-learn 1.9's on `float64` input, with
/// `labels=list(range(num_classes))`:
/// - `top_k_accuracy_score`: with three or more classes, ties between scores are broken
///   as scikit-learn's reversed stable sort does, in favour of the *higher* class index;
///   with two classes scikit-learn takes the score of class 1 and predicts class 1 when
///   it is `> 0.5`, and so does this. (Pass `y_proba[:, 1]` to scikit-learn then.)
/// - `log_loss`: the mean of `-ln p[true]` with `p` clipped to `[ε, 1 - ε]`, `ε =
///   f64::EPSILON`; rows are not renormalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredProbabilityMetrics", into = "StoredProbabilityMetrics")]
pub struct ProbabilityMetrics {
    num_classes: usize,
    sum_tolerance: f64,
    /// `rank_counts[r]`: samples whose true class was outranked by exactly `r` classes.
    rank_counts: Vec<u64>,
    samples: u64,
    loss: ExactSum,
}

/// The serialised form of a [`ProbabilityMetrics`].
#[derive(Serialize, Deserialize)]
struct StoredProbabilityMetrics {
    num_classes: usize,
    sum_tolerance: f64,
    rank_counts: Vec<u64>,
    /// Partials of the exact loss sum; their exact total is the sum.
    loss_partials: Vec<f64>,
}

impl TryFrom<StoredProbabilityMetrics> for ProbabilityMetrics {
    type Error = Error;

    fn try_from(stored: StoredProbabilityMetrics) -> Result<Self> {
        let mut metrics = ProbabilityMetrics::new(stored.num_classes)?.with_sum_tolerance(stored.sum_tolerance)?;
        if stored.rank_counts.len() != stored.num_classes {
            return Err(Error::CountsLength {
                num_classes: stored.num_classes,
                expected: stored.num_classes,
                actual: stored.rank_counts.len(),
            });
        }
        metrics.samples =
            stored.rank_counts.iter().try_fold(0u64, |acc, &c| acc.checked_add(c)).ok_or(Error::CountOverflow)?;
        metrics.rank_counts = stored.rank_counts;
        // Bounded so that re-adding cannot overflow; a sum of losses is at most 37 per
        // sample, far below this.
        if stored.loss_partials.iter().any(|p| !p.is_finite() || p.abs() > 1e300) {
            return Err(Error::InvalidLossSum);
        }
        for p in stored.loss_partials {
            metrics.loss.add(p);
        }
        if metrics.loss.value() < 0.0 {
            return Err(Error::InvalidLossSum);
        }
        Ok(metrics)
    }
}

impl From<ProbabilityMetrics> for StoredProbabilityMetrics {
    fn from(m: ProbabilityMetrics) -> Self {
        StoredProbabilityMetrics {
            num_classes: m.num_classes,
            sum_tolerance: m.sum_tolerance,
            loss_partials: m.loss.partials().to_vec(),
            rank_counts: m.rank_counts,
        }
    }
}

impl ProbabilityMetrics {
    /// An empty accumulator for classes `0..num_classes` (at least 2), with
    /// [`DEFAULT_SUM_TOLERANCE`].
    ///
    /// # Errors
    /// [`Error::TooFewClasses`] below 2 classes; [`Error::TooManyClasses`] when the rank
    /// histogram cannot be allocated.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes < 2 {
            return Err(Error::TooFewClasses { num_classes, min: 2 });
        }
        let mut rank_counts = Vec::new();
        rank_counts.try_reserve_exact(num_classes).map_err(|_| Error::TooManyClasses { num_classes })?;
        rank_counts.resize(num_classes, 0);
        Ok(ProbabilityMetrics {
            num_classes,
            sum_tolerance: DEFAULT_SUM_TOLERANCE,
            rank_counts,
            samples: 0,
            loss: ExactSum::default(),
        })
    }

    /// The same accumulator accepting rows whose sum is within `tolerance` of 1.
    ///
    /// # Errors
    /// [`Error::InvalidTolerance`] unless `tolerance` is finite and `>= 0`.
    pub fn with_sum_tolerance(mut self, tolerance: f64) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(Error::InvalidTolerance { tolerance });
        }
        self.sum_tolerance = tolerance;
        Ok(self)
    }

    /// The number of classes (the width of a probability row).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The tolerance on `|row sum - 1|`.
    pub fn sum_tolerance(&self) -> f64 {
        self.sum_tolerance
    }

    /// The number of samples accumulated.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Accumulates one batch given as a flat row-major buffer: row `i` is
    /// `probabilities[i * num_classes..(i + 1) * num_classes]` (the layout of a
    /// `(batch, classes)` tensor's data).
    ///
    /// The whole batch is checked before anything is accumulated: on error the
    /// accumulator is unchanged.
    ///
    /// # Errors
    /// [`Error::ProbabilityBufferLength`] when the buffer is not `truth.len()` rows;
    /// otherwise as [`update_rows`](Self::update_rows).
    pub fn update(&mut self, truth: &[u32], probabilities: &[f64]) -> Result<()> {
        if Some(probabilities.len()) != truth.len().checked_mul(self.num_classes) {
            return Err(Error::ProbabilityBufferLength {
                rows: truth.len(),
                num_classes: self.num_classes,
                actual: probabilities.len(),
            });
        }
        let rows: Vec<&[f64]> = probabilities.chunks_exact(self.num_classes).collect();
        self.update_rows(truth, &rows)
    }

    /// Accumulates one batch given as one probability row per sample.
    ///
    /// The whole batch is checked before anything is accumulated: on error the
    /// accumulator is unchanged.
    ///
    /// # Errors
    /// With the row (and class) where it was found: [`Error::LengthMismatch`],
    /// [`Error::TruthOutOfRange`], [`Error::RowWidth`], [`Error::NonFinite`] (NaN or
    /// infinite), [`Error::ProbabilityOutOfRange`] (outside `[0, 1]`), [`Error::RowSum`];
    /// [`Error::CountOverflow`] past `u64::MAX` samples.
    pub fn update_rows<R: AsRef<[f64]>>(&mut self, truth: &[u32], rows: &[R]) -> Result<()> {
        if truth.len() != rows.len() {
            return Err(Error::LengthMismatch { truth: truth.len(), predicted: rows.len() });
        }
        for (row, (&t, probs)) in truth.iter().zip(rows).enumerate() {
            self.check_row(row, t, probs.as_ref())?;
        }
        let added = u64::try_from(truth.len()).map_err(|_| Error::CountOverflow)?;
        self.samples = self.samples.checked_add(added).ok_or(Error::CountOverflow)?;
        for (&t, probs) in truth.iter().zip(rows) {
            let probs = probs.as_ref();
            let t = t as usize; // checked: `t < num_classes`
            // Every rank count is at most `samples`, which did not overflow.
            let rank = self.rank_of_truth(t, probs);
            self.rank_counts[rank] += 1;
            self.loss.add(-probs[t].clamp(f64::EPSILON, 1.0 - f64::EPSILON).ln());
        }
        Ok(())
    }

    /// Adds what `other` accumulated (another worker's, or another shard's). The result is
    /// identical, to the bit, to accumulating all batches in one place.
    ///
    /// # Errors
    /// [`Error::ClassCountMismatch`] when the class counts differ; [`Error::CountOverflow`]
    /// past `u64::MAX` samples. On error nothing is added.
    pub fn merge(&mut self, other: &ProbabilityMetrics) -> Result<()> {
        if self.num_classes != other.num_classes {
            return Err(Error::ClassCountMismatch { left: self.num_classes, right: other.num_classes });
        }
        self.samples = self.samples.checked_add(other.samples).ok_or(Error::CountOverflow)?;
        for (mine, theirs) in self.rank_counts.iter_mut().zip(&other.rank_counts) {
            *mine += theirs;
        }
        self.loss.merge(&other.loss);
        Ok(())
    }

    /// The fraction of samples whose true class is among the `k` highest-scored; 1 for
    /// `k >= num_classes`, 0 when there are no samples.
    ///
    /// # Errors
    /// [`Error::ZeroK`] for `k == 0`.
    pub fn top_k_accuracy(&self, k: usize) -> Result<f64> {
        if k == 0 {
            return Err(Error::ZeroK);
        }
        if self.samples == 0 {
            return Ok(0.0);
        }
        let hits: u64 = self.rank_counts.iter().take(k).sum();
        Ok(hits as f64 / self.samples as f64)
    }

    /// The mean cross-entropy `-ln p[true]` (natural log, probabilities clipped to
    /// `[ε, 1 - ε]`); `None` when there are no samples.
    pub fn log_loss(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.loss.value() / self.samples as f64)
    }

    fn check_row(&self, row: usize, truth: u32, probs: &[f64]) -> Result<()> {
        if !usize::try_from(truth).is_ok_and(|t| t < self.num_classes) {
            return Err(Error::TruthOutOfRange { row, label: truth, num_classes: self.num_classes });
        }
        if probs.len() != self.num_classes {
            return Err(Error::RowWidth { row, expected: self.num_classes, actual: probs.len() });
        }
        for (class, &value) in probs.iter().enumerate() {
            if !value.is_finite() {
                return Err(Error::NonFinite { row, class, value });
            }
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::ProbabilityOutOfRange { row, class, value });
            }
        }
        let sum: f64 = probs.iter().sum();
        if (sum - 1.0).abs() > self.sum_tolerance {
            return Err(Error::RowSum { row, sum, tolerance: self.sum_tolerance });
        }
        Ok(())
    }

    /// How many classes rank above the true class `t` (0 = top-1 hit).
    fn rank_of_truth(&self, t: usize, probs: &[f64]) -> usize {
        if self.num_classes == 2 {
            // scikit-learn's binary case: class 1 is predicted iff p[1] > 0.5.
            let predicted_one = probs[1] > 0.5;
            return usize::from(predicted_one != (t == 1));
        }
        // scikit-learn: `argsort(kind="mergesort")[:, ::-1]`, so among equal scores the
        // higher class index comes first.
        let s = probs[t];
        probs.iter().enumerate().filter(|&(j, &p)| p > s || (p == s && j > t)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tolerance_is_sqrt_f32_epsilon() {
        assert!((DEFAULT_SUM_TOLERANCE - f64::from(f32::EPSILON).sqrt()).abs() < 1e-18);
    }

    #[test]
    fn too_few_classes() {
        assert_eq!(ProbabilityMetrics::new(1), Err(Error::TooFewClasses { num_classes: 1, min: 2 }));
    }

    #[test]
    fn too_many_classes() {
        assert_eq!(ProbabilityMetrics::new(usize::MAX), Err(Error::TooManyClasses { num_classes: usize::MAX }));
    }

    #[test]
    fn invalid_tolerance() {
        let m = ProbabilityMetrics::new(3).unwrap();
        assert!(matches!(m.clone().with_sum_tolerance(f64::NAN), Err(Error::InvalidTolerance { .. })));
        assert_eq!(m.with_sum_tolerance(-1.0), Err(Error::InvalidTolerance { tolerance: -1.0 }));
    }

    #[test]
    fn buffer_length() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        assert_eq!(
            m.update(&[0, 1], &[0.5, 0.5, 0.0, 1.0]),
            Err(Error::ProbabilityBufferLength { rows: 2, num_classes: 3, actual: 4 })
        );
    }

    #[test]
    fn length_mismatch() {
        let mut m = ProbabilityMetrics::new(2).unwrap();
        assert_eq!(m.update_rows(&[0, 1], &[[0.5, 0.5]]), Err(Error::LengthMismatch { truth: 2, predicted: 1 }));
    }

    #[test]
    fn row_width() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        let rows: Vec<Vec<f64>> = vec![vec![0.2, 0.3, 0.5], vec![0.5, 0.5]];
        assert_eq!(m.update_rows(&[0, 1], &rows), Err(Error::RowWidth { row: 1, expected: 3, actual: 2 }));
    }

    #[test]
    fn truth_out_of_range() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        assert_eq!(
            m.update(&[0, 3], &[0.2, 0.3, 0.5, 0.2, 0.3, 0.5]),
            Err(Error::TruthOutOfRange { row: 1, label: 3, num_classes: 3 })
        );
    }

    #[test]
    fn non_finite() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        let err = m.update(&[0, 1], &[0.2, 0.3, 0.5, 0.2, f64::NAN, 0.8]).unwrap_err();
        assert!(matches!(err, Error::NonFinite { row: 1, class: 1, value } if value.is_nan()));
        assert_eq!(
            m.update(&[2], &[f64::INFINITY, 0.0, 0.0]),
            Err(Error::NonFinite { row: 0, class: 0, value: f64::INFINITY })
        );
    }

    #[test]
    fn out_of_range_probability() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        assert_eq!(
            m.update(&[0], &[-0.1, 0.6, 0.5]),
            Err(Error::ProbabilityOutOfRange { row: 0, class: 0, value: -0.1 })
        );
        assert_eq!(
            m.update(&[0], &[0.0, 1.5, -0.5]),
            Err(Error::ProbabilityOutOfRange { row: 0, class: 1, value: 1.5 })
        );
    }

    #[test]
    fn row_sum() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        let err = m.update(&[0, 0], &[0.2, 0.3, 0.5, 0.2, 0.3, 0.4]).unwrap_err();
        assert!(matches!(err, Error::RowSum { row: 1, sum, tolerance }
            if (sum - 0.9).abs() < 1e-12 && tolerance == DEFAULT_SUM_TOLERANCE));
        // An f32 softmax widened to f64 passes the default tolerance...
        let f32_row = [0.1f32, 0.2, 0.7].map(f64::from);
        m.update(&[2], &f32_row).unwrap();
        // ...and a strict tolerance rejects a row off by 1e-6.
        let mut strict = ProbabilityMetrics::new(3).unwrap().with_sum_tolerance(1e-9).unwrap();
        assert!(matches!(strict.update(&[0], &[0.2, 0.3, 0.500001]), Err(Error::RowSum { .. })));
    }

    #[test]
    fn errors_leave_the_accumulator_unchanged() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        m.update(&[1], &[0.2, 0.5, 0.3]).unwrap();
        let before = m.clone();
        assert!(m.update(&[0, 1], &[0.2, 0.3, 0.5, 0.2, 0.3, 0.6]).is_err());
        assert_eq!(m, before);
    }

    #[test]
    fn zero_k() {
        assert_eq!(ProbabilityMetrics::new(3).unwrap().top_k_accuracy(0), Err(Error::ZeroK));
    }

    #[test]
    fn merge_class_mismatch() {
        let mut a = ProbabilityMetrics::new(3).unwrap();
        let b = ProbabilityMetrics::new(4).unwrap();
        assert_eq!(a.merge(&b), Err(Error::ClassCountMismatch { left: 3, right: 4 }));
    }

    #[test]
    fn empty() {
        let m = ProbabilityMetrics::new(3).unwrap();
        assert_eq!(m.log_loss(), None);
        assert_eq!(m.top_k_accuracy(1), Ok(0.0));
    }

    #[test]
    fn ties_favour_the_higher_class_with_three_or_more_classes() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        m.update(&[0], &[0.4, 0.4, 0.2]).unwrap();
        assert_eq!(m.top_k_accuracy(1), Ok(0.0));
        assert_eq!(m.top_k_accuracy(2), Ok(1.0));
        let mut m = ProbabilityMetrics::new(3).unwrap();
        m.update(&[1], &[0.4, 0.4, 0.2]).unwrap();
        assert_eq!(m.top_k_accuracy(1), Ok(1.0));
    }

    #[test]
    fn binary_uses_the_half_threshold() {
        let mut m = ProbabilityMetrics::new(2).unwrap();
        m.update(&[0, 1], &[0.5, 0.5, 0.5, 0.5]).unwrap();
        // p[1] = 0.5 is not > 0.5: class 0 predicted for both.
        assert_eq!(m.top_k_accuracy(1), Ok(0.5));
        assert_eq!(m.top_k_accuracy(2), Ok(1.0));
    }

    #[test]
    fn log_loss_clips() {
        let mut m = ProbabilityMetrics::new(2).unwrap();
        m.update(&[0, 1], &[0.0, 1.0, 0.0, 1.0]).unwrap();
        let expected = (-f64::EPSILON.ln() - (1.0 - f64::EPSILON).ln()) / 2.0;
        assert_eq!(m.log_loss(), Some(expected));
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut m = ProbabilityMetrics::new(3).unwrap();
        m.update(&[0, 1, 2], &[0.1, 0.6, 0.3, 0.2, 0.2, 0.6, 0.7, 0.1, 0.2]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: ProbabilityMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.log_loss(), m.log_loss());
        let bad = r#"{"num_classes":3,"sum_tolerance":0.001,"rank_counts":[1,2],"loss_partials":[]}"#;
        assert!(serde_json::from_str::<ProbabilityMetrics>(bad).is_err());
        let bad = r#"{"num_classes":3,"sum_tolerance":0.001,"rank_counts":[1,2,0],"loss_partials":[-1.0]}"#;
        assert!(serde_json::from_str::<ProbabilityMetrics>(bad).is_err());
    }
}
