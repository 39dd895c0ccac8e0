//! The crate's one error type.

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `tuneforge-eval`.
///
/// Every variant is about the caller's input and carries the data needed to find the
/// offending value: `row` is the index of the sample within the batch passed to the
/// failing call (not a running count over all batches), `class` a column of a
/// probability row. A call that returns an error has left its accumulator unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric needs at least `min` classes and was given `num_classes`.
    #[error("{num_classes} classes given, at least {min} needed")]
    TooFewClasses {
        /// The class count asked for.
        num_classes: usize,
        /// The smallest class count the accumulator accepts.
        min: usize,
    },

    /// The storage for `num_classes` classes could not be allocated (too many classes).
    #[error("cannot allocate storage for {num_classes} classes")]
    TooManyClasses {
        /// The class count asked for.
        num_classes: usize,
    },

    /// The truth and the predictions of one batch have different lengths.
    #[error("{truth} true labels but {predicted} predictions")]
    LengthMismatch {
        /// Number of true labels in the batch.
        truth: usize,
        /// Number of predictions (labels or probability rows) in the batch.
        predicted: usize,
    },

    /// A true label is not a class index below `num_classes`.
    #[error("true label {label} at row {row} is not below the class count {num_classes}")]
    TruthOutOfRange {
        /// Index of the sample within the batch.
        row: usize,
        /// The label found.
        label: u32,
        /// The accumulator's class count.
        num_classes: usize,
    },

    /// A predicted label is not a class index below `num_classes`.
    #[error("predicted label {label} at row {row} is not below the class count {num_classes}")]
    PredictionOutOfRange {
        /// Index of the sample within the batch.
        row: usize,
        /// The label found.
        label: u32,
        /// The accumulator's class count.
        num_classes: usize,
    },

    /// A flat, row-major probability buffer whose length is not `rows * num_classes`.
    #[error(
        "probability buffer holds {actual} values, expected {rows} rows of {num_classes} = {}",
        rows.saturating_mul(*num_classes)
    )]
    ProbabilityBufferLength {
        /// Number of true labels, hence of rows expected.
        rows: usize,
        /// The accumulator's class count, the width of one row.
        num_classes: usize,
        /// Length of the buffer given.
        actual: usize,
    },

    /// A probability row whose width is not the class count.
    #[error("probability row {row} has {actual} values, expected {expected}")]
    RowWidth {
        /// Index of the row within the batch.
        row: usize,
        /// The accumulator's class count.
        expected: usize,
        /// Width of the row given.
        actual: usize,
    },

    /// A probability that is NaN or infinite.
    #[error("probability at row {row}, class {class} is not finite: {value}")]
    NonFinite {
        /// Index of the row within the batch.
        row: usize,
        /// Column (class) within the row.
        class: usize,
        /// The value found.
        value: f64,
    },

    /// A probability below 0 or above 1 (scikit-learn rejects these as well).
    #[error("probability at row {row}, class {class} is outside [0, 1]: {value}")]
    ProbabilityOutOfRange {
        /// Index of the row within the batch.
        row: usize,
        /// Column (class) within the row.
        class: usize,
        /// The value found.
        value: f64,
    },

    /// A probability row whose sum is further than `tolerance` from 1.
    #[error("probability row {row} sums to {sum}, not 1 within {tolerance}")]
    RowSum {
        /// Index of the row within the batch.
        row: usize,
        /// The row's sum.
        sum: f64,
        /// The accumulator's tolerance.
        tolerance: f64,
    },

    /// A sum tolerance that is negative or not finite.
    #[error("sum tolerance {tolerance} is not a finite number >= 0")]
    InvalidTolerance {
        /// The tolerance given.
        tolerance: f64,
    },

    /// Top-`k` accuracy asked for with `k == 0`.
    #[error("top-k accuracy needs k >= 1")]
    ZeroK,

    /// Two accumulators (or an accumulator and stored counts) with different class counts.
    #[error("class counts differ: {left} and {right}")]
    ClassCountMismatch {
        /// Class count of the accumulator merged into.
        left: usize,
        /// Class count of the other one.
        right: usize,
    },

    /// Stored counts whose length does not fit the class count (`num_classes²` cells for a
    /// confusion matrix, `num_classes` ranks for probability metrics).
    #[error("{actual} counts stored for {num_classes} classes, expected {expected}")]
    CountsLength {
        /// The class count stored.
        num_classes: usize,
        /// Number of counts expected.
        expected: usize,
        /// Number of counts found.
        actual: usize,
    },

    /// A stored log-loss sum that is negative or not finite.
    #[error("stored log-loss sum is not a finite number >= 0")]
    InvalidLossSum,

    /// Adding samples would overflow the `u64` sample count.
    #[error("sample count overflows u64")]
    CountOverflow,

    /// Class names for a report whose number is not the class count.
    #[error("{actual} class names given for {expected} classes")]
    NameCount {
        /// The report's class count.
        expected: usize,
        /// Number of names given.
        actual: usize,
    },
}
