//! The crate's error type. Every variant names the column (and the step or row) at fault.

use crate::ColumnKind;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that stops a pipeline from being fitted or applied.
///
/// Dirty data that a pipeline can handle (missing values, outliers, constant columns) is
/// not an error: it is counted in a [`FitReport`](crate::FitReport) or
/// [`TransformReport`](crate::TransformReport). An `Error` means the pipeline cannot give a
/// trustworthy result at all. `step` fields are 0-based indices into
/// [`PipelineConfig::steps`](crate::PipelineConfig::steps); `row` fields are row indices of
/// the table passed in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The training table has no rows or no columns: there is nothing to fit on.
    #[error("cannot fit on an empty table ({rows} rows, {columns} columns)")]
    EmptyTable {
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        columns: usize,
    },
    /// A step dropped every remaining training row.
    #[error("step {step} dropped all {dropped} remaining training rows")]
    NoRowsLeft {
        /// The step.
        step: usize,
        /// How many rows it dropped.
        dropped: usize,
    },
    /// A step dropped every remaining column, so the output would have no features.
    #[error("step {step} dropped every remaining column")]
    NoColumnsLeft {
        /// The step.
        step: usize,
    },
    /// A training column holds no value at all (every row missing), so no statistic can be
    /// learnt from it.
    #[error("column {column:?} has no non-missing training value{}", step_suffix(*step))]
    AllMissing {
        /// The column.
        column: String,
        /// The step that needed a value, or `None` when the input column itself is empty.
        step: Option<usize>,
    },
    /// A column's length differs from the table's `n_rows`.
    #[error("column {column:?} has {len} values but the table has {n_rows} rows")]
    RaggedColumn {
        /// The column.
        column: String,
        /// Its length.
        len: usize,
        /// The table's row count.
        n_rows: usize,
    },
    /// Two columns share a name (in the input table, or a one-hot output name such as
    /// `V1=3` collides with an existing column).
    #[error("duplicate column name {column:?}")]
    DuplicateColumn {
        /// The name.
        column: String,
    },
    /// A categorical code points past the column's levels.
    #[error("column {column:?}, row {row}: code {code} but only {levels} levels")]
    BadCode {
        /// The column.
        column: String,
        /// The row.
        row: usize,
        /// The code found.
        code: u32,
        /// Number of levels.
        levels: usize,
    },
    /// A numeric value is infinite (missing values are `NaN`; infinities are not data).
    #[error("column {column:?}, row {row}: non-finite value {value}")]
    NonFinite {
        /// The column.
        column: String,
        /// The row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// A step names a column that does not exist at that point of the pipeline.
    #[error("step {step}: no column {column:?} (available: {available:?})")]
    UnknownColumn {
        /// The step.
        step: usize,
        /// The name asked for.
        column: String,
        /// The columns that exist at that step.
        available: Vec<String>,
    },
    /// A step names a column of a kind it cannot handle (e.g. scaling a categorical column,
    /// or imputing a text constant into a numeric one).
    #[error("step {step}: column {column:?} is {found}, the step needs {expected}")]
    WrongKind {
        /// The step.
        step: usize,
        /// The column.
        column: String,
        /// The kind the step handles.
        expected: ColumnKind,
        /// The column's kind.
        found: ColumnKind,
    },
    /// A step parameter is out of range.
    #[error("step {step}: parameter {name} = {value} is invalid: must be {requirement}")]
    InvalidParameter {
        /// The step.
        step: usize,
        /// The parameter (`"k"`, `"threshold"`, `"divisor"`, `"value"`).
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        requirement: &'static str,
    },
    /// A categorical column reaches the end of the pipeline without being one-hot encoded,
    /// so the output would not be numeric.
    #[error("categorical column {column:?} is not one-hot encoded by any step")]
    NotEncoded {
        /// The column.
        column: String,
    },
    /// `transform`: a column the pipeline was fitted on is absent.
    #[error("column {column:?} was present when fitting but is missing")]
    MissingColumn {
        /// The column.
        column: String,
    },
    /// `transform`: a column the pipeline was not fitted on is present.
    #[error("column {column:?} was not present when fitting")]
    UnexpectedColumn {
        /// The column.
        column: String,
    },
    /// `transform`: a column's kind differs from the training table's.
    #[error("column {column:?} was {fitted} when fitting but is {found}")]
    KindMismatch {
        /// The column.
        column: String,
        /// Its kind when fitting.
        fitted: ColumnKind,
        /// Its kind now.
        found: ColumnKind,
    },
    /// `transform`: a category never seen in training, with
    /// [`Unknown::Error`](crate::Unknown::Error).
    #[error("column {column:?}, row {row}: category {value:?} was not seen when fitting")]
    UnknownCategory {
        /// The column.
        column: String,
        /// The row.
        row: usize,
        /// The category.
        value: String,
    },
    /// Batch form: a slice's length does not fit the row width.
    #[error("{what}: {len} values do not fit {rows} rows of width {width}")]
    BatchShape {
        /// Which slice (`"input"`, `"output"`, `"rows"`).
        what: &'static str,
        /// Its length.
        len: usize,
        /// Rows implied by the input (0 when the input itself is at fault).
        rows: usize,
        /// The row width expected.
        width: usize,
    },
    /// Batch form: the pipeline cannot be applied row by row to numbers, because of a
    /// categorical input column or a step that drops rows or adds columns, or in place
    /// because it drops columns.
    #[error("pipeline cannot run on numeric rows{}: {why}", blocker(step, column))]
    NotRowWise {
        /// The step at fault, if a step.
        step: Option<usize>,
        /// The column at fault, if a column.
        column: Option<String>,
        /// Why.
        why: &'static str,
    },
    /// A text pipeline was asked to fit on no texts.
    #[error("cannot fit a text pipeline on zero texts")]
    NoTexts,
    /// A text pipeline's vocabulary setting is out of range.
    #[error("text pipeline: vocab.{field} = {value} is invalid: must be {requirement}")]
    InvalidTextConfig {
        /// The field of [`VocabConfig`](crate::VocabConfig) (`"max_len"`, `"max_size"`).
        field: &'static str,
        /// The value given.
        value: usize,
        /// What it must be.
        requirement: &'static str,
    },
    /// A fitted text pipeline's vocabulary has a token twice.
    #[error("text vocabulary: token {token:?} has ids {first} and {second}")]
    DuplicateToken {
        /// The token.
        token: String,
        /// Its first id.
        first: u32,
        /// The id where it appears again.
        second: u32,
    },
    /// A fitted text pipeline's vocabulary is malformed otherwise (`"<pad>"` not at id 0,
    /// `"<unk>"` not at id 1, longer than `max_size`).
    #[error("text vocabulary: {why}")]
    InvalidVocabulary {
        /// What is wrong.
        why: String,
    },
    /// A fitted pipeline read from JSON is not valid.
    #[error("invalid fitted pipeline JSON: {message}")]
    Json {
        /// What the parser said.
        message: String,
    },
}

fn step_suffix(step: Option<usize>) -> String {
    step.map(|s| format!(" at step {s}")).unwrap_or_default()
}

fn blocker(step: &Option<usize>, column: &Option<String>) -> String {
    match (step, column) {
        (Some(s), Some(c)) => format!(" (step {s}, column {c:?})"),
        (Some(s), None) => format!(" (step {s})"),
        (None, Some(c)) => format!(" (column {c:?})"),
        (None, None) => String::new(),
    }
}
