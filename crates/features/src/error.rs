//! The crate's one error type.

/// Everything that can go wrong in `tuneforge-features`.
///
/// Variants carry the offending indices and sizes as fields, not as formatted strings, so
/// a caller can react to them (e.g. drop row `row` and retry).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two sizes that must agree do not, e.g. `labels.len()` and the matrix's row count.
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// Which size was checked (e.g. `"labels"`, `"matrix data length"`).
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        found: usize,
    },
    /// A row-major buffer whose length is not a multiple of its column count.
    #[error("{what}: length {len} is not a multiple of {n_cols} columns")]
    RaggedRows {
        /// Which buffer was checked.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The number of columns it was said to have.
        n_cols: usize,
    },
    /// A class label is not in `0..n_classes`.
    #[error("label {label} in row {row} is out of range 0..{n_classes}")]
    LabelOutOfRange {
        /// Row of the label.
        row: usize,
        /// The label found.
        label: u32,
        /// The number of classes declared.
        n_classes: usize,
    },
    /// An input that must not be empty is (no rows, no columns or no classes).
    #[error("{what} is empty")]
    Empty {
        /// What was empty.
        what: &'static str,
    },
    /// More features were asked for than there are.
    #[error("cannot select {k} of {n_features} features")]
    KTooLarge {
        /// The number asked for.
        k: usize,
        /// The number of features.
        n_features: usize,
    },
    /// A NaN or infinite value where a finite number is required.
    #[error("non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Row of the value (0 for one-dimensional inputs such as a score vector).
        row: usize,
        /// Column (feature) of the value.
        col: usize,
        /// The value itself (NaN or ±∞).
        value: f64,
    },
    /// The statistic needs more classes present in the labels than there are.
    #[error("need at least {needed} classes present in the labels, found {found}")]
    TooFewClasses {
        /// Classes required.
        needed: usize,
        /// Distinct classes present.
        found: usize,
    },
    /// The statistic needs more rows than there are.
    #[error("need at least {needed} rows, found {found}")]
    TooFewRows {
        /// Rows required.
        needed: usize,
        /// Rows given.
        found: usize,
    },
    /// A configuration value outside its allowed range.
    #[error("invalid {name} = {value}: must be {expected}")]
    InvalidParameter {
        /// Parameter name, as spelt in the config struct.
        name: &'static str,
        /// The value given (converted to `f64`).
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
