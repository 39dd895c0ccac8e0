//! The [`Dataset`] trait: what every source of labelled rows provides.

use crate::Result;

/// A finite, labelled, random-access collection of rows.
///
/// Rows are numbered `0..len()`. Each row has `feature_len()` features laid out in
/// `feature_shape()` (row-major, e.g. `[28, 28]` for an image) and one label in
/// `0..num_classes()`. Feature values are returned raw (as stored, converted to `f32`);
/// scaling is the batcher's job ([`crate::Scale`]).
///
/// Implementations must be cheap to share across threads: the prefetch worker reads from
/// the same dataset as the caller.
pub trait Dataset: Send + Sync {
    /// Number of rows.
    fn len(&self) -> usize;

    /// `true` when there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one row's features, e.g. `[28, 28]` or `[64]`.
    fn feature_shape(&self) -> &[usize];

    /// Number of features in one row (the product of [`Dataset::feature_shape`]).
    fn feature_len(&self) -> usize {
        self.feature_shape().iter().product()
    }

    /// Names of the classes; label `k` is `label_names()[k]`.
    fn label_names(&self) -> &[String];

    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.label_names().len()
    }

    /// The label of `row`.
    ///
    /// # Panics
    /// If `row >= len()` (a caller bug, never a data problem).
    fn label(&self, row: usize) -> u32;

    /// Writes the raw features of rows `start..end` into `out`, row after row.
    ///
    /// `out.len()` must be `(end - start) * feature_len()`. Sources that read lazily may
    /// fail here; in-memory and memory-mapped sources never do.
    ///
    /// # Panics
    /// If the range is out of bounds or `out` has the wrong length (caller bugs).
    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()>;

    /// Writes the raw features of one row into `out` (`feature_len()` values).
    fn read_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        self.read_rows(row, row + 1, out)
    }

    /// Number of rows of each class, indexed by label.
    fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes()];
        for row in 0..self.len() {
            if let Some(c) = counts.get_mut(self.label(row) as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// An affine map applied to every feature when batches are built: `x * mul + add`.
///
/// `Scale::divide(255.0)` turns pixel bytes into `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Multiplier.
    pub mul: f32,
    /// Offset added after multiplying.
    pub add: f32,
}

impl Scale {
    /// No change.
    pub const IDENTITY: Scale = Scale { mul: 1.0, add: 0.0 };

    /// Divide every value by `divisor` (e.g. 255 for pixels).
    pub fn divide(divisor: f32) -> Scale {
        Scale { mul: 1.0 / divisor, add: 0.0 }
    }

    /// `true` for the identity map.
    pub fn is_identity(&self) -> bool {
        *self == Scale::IDENTITY
    }

    /// Applies the map in place.
    pub fn apply(&self, values: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        let (m, a) = (self.mul, self.add);
        for v in values {
            *v = *v * m + a;
        }
    }
}

impl Default for Scale {
    fn default() -> Self {
        Scale::IDENTITY
    }
}
