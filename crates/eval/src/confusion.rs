//! The confusion matrix: the streaming accumulator behind every label metric.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::{Averages, ClassMetrics, ClassificationReport};

/// Counts of (true class, predicted class) pairs over `num_classes` classes.
///
/// Row `t`, column `p` counts the samples of true class `t` predicted as `p`, as in
/// scikit-learn's `confusion_matrix(y_true, y_pred, labels=range(num_classes))`.
/// Every label metric is a function of this matrix, so it is also the streaming
/// accumulator: [`update`](Self::update) it batch by batch, [`merge`](Self::merge) the
/// matrices of several workers, then ask for a [`report`](Self::report). Counts are
/// integers, so merged and one-shot matrices (and their reports) are identical.
///
/// Serialises as `{"num_classes": n, "counts": [...]}` with the `n²` counts row-major;
/// deserialising checks the length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredMatrix", into = "StoredMatrix")]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// Row-major, `num_classes²` cells.
    counts: Vec<u64>,
    /// Sum of `counts`; every cell is at most this, so no cell overflows while it doesn't.
    total: u64,
}

/// The serialised form of a [`ConfusionMatrix`].
#[derive(Serialize, Deserialize)]
struct StoredMatrix {
    num_classes: usize,
    counts: Vec<u64>,
}

impl TryFrom<StoredMatrix> for ConfusionMatrix {
    type Error = Error;

    fn try_from(stored: StoredMatrix) -> Result<Self> {
        ConfusionMatrix::from_counts(stored.num_classes, stored.counts)
    }
}

impl From<ConfusionMatrix> for StoredMatrix {
    fn from(matrix: ConfusionMatrix) -> Self {
        StoredMatrix { num_classes: matrix.num_classes, counts: matrix.counts }
    }
}

impl ConfusionMatrix {
    /// An empty matrix for classes `0..num_classes`.
    ///
    /// `num_classes` is the number of classes the model can output, whether or not each
    /// appears in the data: the averages then equal scikit-learn's with
    /// `labels=list(range(num_classes))`, so a class that is never seen still counts (as
    /// 0) in the macro average.
    ///
    /// # Errors
    /// [`Error::TooFewClasses`] for `num_classes == 0`; [`Error::TooManyClasses`] when
    /// `num_classes²` counts cannot be allocated.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::TooFewClasses { num_classes, min: 1 });
        }
        let cells = num_classes.checked_mul(num_classes).ok_or(Error::TooManyClasses { num_classes })?;
        let mut counts = Vec::new();
        counts.try_reserve_exact(cells).map_err(|_| Error::TooManyClasses { num_classes })?;
        counts.resize(cells, 0);
        Ok(ConfusionMatrix { num_classes, counts, total: 0 })
    }

    /// A matrix from stored row-major counts (`num_classes²` of them), e.g. one sent by a
    /// worker.
    ///
    /// # Errors
    /// As [`new`](Self::new); [`Error::CountsLength`] when `counts` has the wrong length;
    /// [`Error::CountOverflow`] when the counts add up to more than `u64::MAX`.
    pub fn from_counts(num_classes: usize, counts: Vec<u64>) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::TooFewClasses { num_classes, min: 1 });
        }
        let expected = num_classes.checked_mul(num_classes).ok_or(Error::TooManyClasses { num_classes })?;
        if counts.len() != expected {
            return Err(Error::CountsLength { num_classes, expected, actual: counts.len() });
        }
        let total = counts.iter().try_fold(0u64, |acc, &c| acc.checked_add(c)).ok_or(Error::CountOverflow)?;
        Ok(ConfusionMatrix { num_classes, counts, total })
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The number of samples counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// All counts, row-major: the count for true `t` and predicted `p` is at
    /// `t * num_classes + p`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Row `truth`: how often samples of that class were predicted as each class.
    /// `None` when `truth` is not a class.
    pub fn row(&self, truth: u32) -> Option<&[u64]> {
        let t = usize::try_from(truth).ok().filter(|&t| t < self.num_classes)?;
        Some(&self.counts[t * self.num_classes..(t + 1) * self.num_classes])
    }

    /// The count of samples of class `truth` predicted as `pred`; `None` when either is
    /// not a class.
    pub fn get(&self, truth: u32, pred: u32) -> Option<u64> {
        let p = usize::try_from(pred).ok().filter(|&p| p < self.num_classes)?;
        self.row(truth).map(|row| row[p])
    }

    /// Counts one batch of true and predicted labels.
    ///
    /// The whole batch is checked before anything is counted: on error the matrix is
    /// unchanged.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the slices differ in length;
    /// [`Error::TruthOutOfRange`] / [`Error::PredictionOutOfRange`] (with the row) for a
    /// label `>= num_classes`; [`Error::CountOverflow`] past `u64::MAX` samples.
    pub fn update(&mut self, truth: &[u32], pred: &[u32]) -> Result<()> {
        if truth.len() != pred.len() {
            return Err(Error::LengthMismatch { truth: truth.len(), predicted: pred.len() });
        }
        for (row, (&t, &p)) in truth.iter().zip(pred).enumerate() {
            if !self.is_class(t) {
                return Err(Error::TruthOutOfRange { row, label: t, num_classes: self.num_classes });
            }
            if !self.is_class(p) {
                return Err(Error::PredictionOutOfRange { row, label: p, num_classes: self.num_classes });
            }
        }
        let added = u64::try_from(truth.len()).map_err(|_| Error::CountOverflow)?;
        self.total = self.total.checked_add(added).ok_or(Error::CountOverflow)?;
        for (&t, &p) in truth.iter().zip(pred) {
            // In range (checked above), and no cell exceeds `total`, which did not overflow.
            self.counts[t as usize * self.num_classes + p as usize] += 1;
        }
        Ok(())
    }

    /// Adds the counts of `other` (another worker's, or another shard's) to this matrix.
    ///
    /// # Errors
    /// [`Error::ClassCountMismatch`] when the class counts differ;
    /// [`Error::CountOverflow`] past `u64::MAX` samples. On error nothing is added.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if self.num_classes != other.num_classes {
            return Err(Error::ClassCountMismatch { left: self.num_classes, right: other.num_classes });
        }
        self.total = self.total.checked_add(other.total).ok_or(Error::CountOverflow)?;
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        Ok(())
    }

    /// The fraction of samples predicted correctly; 0 when there are none.
    pub fn accuracy(&self) -> f64 {
        ratio(self.trace(), self.total)
    }

    /// The mean recall over the classes that occur in the truth.
    ///
    /// This is scikit-learn's `balanced_accuracy_score`, which takes no `labels`: a class
    /// absent from the truth (recall 0/0) is left out of the mean rather than counted as
    /// 0, unlike the macro average of [`report`](Self::report). 0 when no class occurs.
    pub fn balanced_accuracy(&self) -> f64 {
        let mut sum = 0.0;
        let mut present = 0u32;
        for c in 0..self.num_classes {
            let support = self.support(c);
            if support > 0 {
                sum += ratio(self.counts[c * self.num_classes + c], support);
                present += 1;
            }
        }
        if present == 0 { 0.0 } else { sum / f64::from(present) }
    }

    /// Every label metric: per-class precision, recall, F1 and support, accuracy,
    /// balanced accuracy, and the macro, micro and weighted averages.
    ///
    /// An undefined ratio (0/0) is 0, as scikit-learn's default `zero_division="warn"`
    /// returns (without the warning): precision of a class never predicted, recall of a
    /// class absent from the truth, F1 = 2·tp / (2·tp + fp + fn) of a class in neither.
    pub fn report(&self) -> ClassificationReport {
        let n = self.num_classes;
        let per_class: Vec<ClassMetrics> = (0..n)
            .map(|c| {
                let tp = self.counts[c * n + c];
                let support = self.support(c);
                let predicted = self.predicted(c);
                ClassMetrics {
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    f1: f1(tp, support, predicted),
                    support,
                }
            })
            .collect();

        let classes = n as f64;
        let macro_avg = Averages {
            precision: per_class.iter().map(|m| m.precision).sum::<f64>() / classes,
            recall: per_class.iter().map(|m| m.recall).sum::<f64>() / classes,
            f1: per_class.iter().map(|m| m.f1).sum::<f64>() / classes,
        };

        // Every sample is counted once in each of tp+fn (its true class) and tp+fp (its
        // predicted class), so both sums are the total.
        let trace = self.trace();
        let micro_avg = Averages {
            precision: ratio(trace, self.total),
            recall: ratio(trace, self.total),
            f1: f1(trace, self.total, self.total),
        };

        // scikit-learn falls back to the unweighted mean when all weights are 0.
        let weighted_avg = if self.total == 0 {
            macro_avg
        } else {
            let weight = self.total as f64;
            let weighted = |metric: fn(&ClassMetrics) -> f64| {
                per_class.iter().map(|m| metric(m) * m.support as f64).sum::<f64>() / weight
            };
            Averages { precision: weighted(|m| m.precision), recall: weighted(|m| m.recall), f1: weighted(|m| m.f1) }
        };

        ClassificationReport {
            per_class,
            accuracy: self.accuracy(),
            balanced_accuracy: self.balanced_accuracy(),
            macro_avg,
            micro_avg,
            weighted_avg,
            support: self.total,
        }
    }

    fn is_class(&self, label: u32) -> bool {
        usize::try_from(label).is_ok_and(|l| l < self.num_classes)
    }

    fn trace(&self) -> u64 {
        (0..self.num_classes).map(|c| self.counts[c * self.num_classes + c]).sum()
    }

    /// Samples whose true class is `c` (row sum).
    fn support(&self, c: usize) -> u64 {
        self.counts[c * self.num_classes..(c + 1) * self.num_classes].iter().sum()
    }

    /// Samples predicted as `c` (column sum).
    fn predicted(&self, c: usize) -> u64 {
        self.counts.iter().skip(c).step_by(self.num_classes).sum()
    }
}

/// `num / den`, or 0 when `den == 0` (scikit-learn's default zero division).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

/// F1 = 2·tp / (support + predicted), the form scikit-learn computes; 0 when both are 0.
fn f1(tp: u64, support: u64, predicted: u64) -> f64 {
    let den = support as f64 + predicted as f64;
    if den == 0.0 { 0.0 } else { 2.0 * tp as f64 / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_classes_is_an_error() {
        assert_eq!(ConfusionMatrix::new(0), Err(Error::TooFewClasses { num_classes: 0, min: 1 }));
    }

    #[test]
    fn too_many_classes_is_an_error() {
        assert_eq!(ConfusionMatrix::new(usize::MAX), Err(Error::TooManyClasses { num_classes: usize::MAX }));
        let huge = 1usize << (usize::BITS / 2 - 1);
        assert_eq!(ConfusionMatrix::new(huge), Err(Error::TooManyClasses { num_classes: huge }));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut m = ConfusionMatrix::new(3).unwrap();
        assert_eq!(m.update(&[0, 1], &[0]), Err(Error::LengthMismatch { truth: 2, predicted: 1 }));
    }

    #[test]
    fn out_of_range_labels_are_errors_and_change_nothing() {
        let mut m = ConfusionMatrix::new(3).unwrap();
        m.update(&[0], &[0]).unwrap();
        let before = m.clone();
        assert_eq!(m.update(&[0, 1, 3], &[0, 1, 2]), Err(Error::TruthOutOfRange { row: 2, label: 3, num_classes: 3 }));
        assert_eq!(
            m.update(&[0, 1, 2], &[0, 7, 2]),
            Err(Error::PredictionOutOfRange { row: 1, label: 7, num_classes: 3 })
        );
        assert_eq!(m, before);
    }

    #[test]
    fn merge_with_other_class_count_is_an_error() {
        let mut a = ConfusionMatrix::new(3).unwrap();
        let b = ConfusionMatrix::new(4).unwrap();
        assert_eq!(a.merge(&b), Err(Error::ClassCountMismatch { left: 3, right: 4 }));
    }

    #[test]
    fn counts_are_checked() {
        assert_eq!(
            ConfusionMatrix::from_counts(2, vec![1, 2, 3]),
            Err(Error::CountsLength { num_classes: 2, expected: 4, actual: 3 })
        );
        assert_eq!(ConfusionMatrix::from_counts(2, vec![u64::MAX, 1, 0, 0]), Err(Error::CountOverflow));
        assert_eq!(ConfusionMatrix::from_counts(0, vec![]), Err(Error::TooFewClasses { num_classes: 0, min: 1 }));
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut full = ConfusionMatrix::from_counts(2, vec![u64::MAX, 0, 0, 0]).unwrap();
        let before = full.clone();
        assert_eq!(full.update(&[0], &[0]), Err(Error::CountOverflow));
        let one = ConfusionMatrix::from_counts(2, vec![0, 1, 0, 0]).unwrap();
        assert_eq!(full.merge(&one), Err(Error::CountOverflow));
        assert_eq!(full, before);
    }

    #[test]
    fn accessors() {
        let mut m = ConfusionMatrix::new(2).unwrap();
        m.update(&[0, 0, 1], &[0, 1, 1]).unwrap();
        assert_eq!(m.counts(), &[1, 1, 0, 1]);
        assert_eq!(m.row(0), Some(&[1, 1][..]));
        assert_eq!(m.row(2), None);
        assert_eq!(m.get(0, 1), Some(1));
        assert_eq!(m.get(1, 0), Some(0));
        assert_eq!(m.get(0, 2), None);
        assert_eq!(m.total(), 3);
        assert_eq!(m.num_classes(), 2);
    }

    #[test]
    fn empty_matrix_reports_zeros() {
        let r = ConfusionMatrix::new(3).unwrap().report();
        assert_eq!(r.accuracy, 0.0);
        assert_eq!(r.balanced_accuracy, 0.0);
        assert_eq!(r.macro_avg, r.weighted_avg);
        assert!(r.per_class.iter().all(|m| m.precision == 0.0 && m.recall == 0.0 && m.f1 == 0.0));
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut m = ConfusionMatrix::new(2).unwrap();
        m.update(&[0, 1, 1], &[1, 1, 0]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"num_classes":2,"counts":[0,1,1,1]}"#);
        let back: ConfusionMatrix = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<ConfusionMatrix>(r#"{"num_classes":2,"counts":[0,1]}"#).is_err());
    }
}
