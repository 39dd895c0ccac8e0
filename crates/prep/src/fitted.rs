//! The result of fitting: [`FittedPipeline`], its [`FittedStep`]s, and the [`Matrix`] that
//! `transform` produces.

use serde::{Deserialize, Serialize};
use tuneforge_loader::Table;

use crate::report::{Tally, TransformReport};
use crate::work::{self, Work};
use crate::{Error, Result, Scaling, Unknown, Value};

/// A pipeline with every parameter learnt from the training rows. Immutable: applying it
/// never changes it, so validation and test rows cannot leak into it.
///
/// Serialises with serde (see [`to_json`](Self::to_json) / [`from_json`](Self::from_json))
/// so that a trained model ships with its preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedPipeline {
    /// The training table's columns, in its order.
    inputs: Vec<InputColumn>,
    /// The fitted steps, one per configured step.
    steps: Vec<FittedStep>,
    /// The output column names, in output order.
    outputs: Vec<String>,
}

/// A column of the training table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputColumn {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ColumnKind,
}

/// Whether a column holds numbers or categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numbers (`NaN` = missing).
    Numeric,
    /// Categories (levels and codes).
    Categorical,
}

impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
        })
    }
}

/// One step with its learnt parameters, addressed by column name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FittedStep {
    /// Drop rows with a missing value in any of `columns`.
    DropMissingRows {
        /// The columns checked.
        columns: Vec<String>,
    },
    /// Fill missing values.
    Impute {
        /// Fill value per column.
        fills: Vec<Fill>,
    },
    /// Clip numeric values into bounds.
    Clip {
        /// Bounds per column.
        bounds: Vec<Bounds>,
    },
    /// `x' = (x - offset) / scale` per column.
    Scale {
        /// The configured method (for the record).
        method: Scaling,
        /// Offset and scale per column.
        columns: Vec<Affine>,
    },
    /// One-hot encode categorical columns.
    OneHot {
        /// Training categories per column.
        columns: Vec<Categories>,
        /// What to do with a category not seen in training.
        unknown: Unknown,
    },
    /// Drop columns (found constant in the training rows).
    DropColumns {
        /// The columns dropped.
        columns: Vec<String>,
    },
}

/// The value that fills a column's missing values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// The column.
    pub column: String,
    /// The fill value (a number for a numeric column, text for a categorical one).
    pub value: Value,
}

/// Clip bounds for a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// The column.
    pub column: String,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// `x' = (x - offset) / scale` for a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affine {
    /// The column.
    pub column: String,
    /// Subtracted first (mean, minimum, or 0).
    pub offset: f64,
    /// Divided by next (std, range, max |x|, or the divisor; never 0).
    pub scale: f64,
}

/// The training categories of a one-hot encoded column, in output order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Categories {
    /// The column.
    pub column: String,
    /// Its categories, sorted; output columns are `column=category`.
    pub categories: Vec<String>,
}

/// The numeric output of [`FittedPipeline::transform`]: what a trainer feeds a network.
///
/// `values` is row-major, `rows.len() × columns.len()`. Column names are the input names,
/// with each one-hot encoded column replaced in place by `column=category` columns and
/// dropped columns left out. A missing value that no step handled is `NaN` (and counted in
/// the report).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Output column names.
    pub columns: Vec<String>,
    /// For each output row, its row index in the table given (rows dropped by a
    /// `drop_missing_rows` step are absent; use this to select the matching labels).
    pub rows: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f64>,
}

impl Matrix {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.columns.len()
    }

    /// Row `i`, if it exists.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        let w = self.n_cols();
        let start = i.checked_mul(w)?;
        self.values.get(start..start.checked_add(w)?)
    }

    /// The value at row `i` of the column called `column`.
    pub fn get(&self, i: usize, column: &str) -> Option<f64> {
        let j = self.columns.iter().position(|c| c == column)?;
        self.row(i)?.get(j).copied()
    }

    /// The column called `column`, top to bottom.
    pub fn column(&self, column: &str) -> Option<Vec<f64>> {
        let j = self.columns.iter().position(|c| c == column)?;
        Some(self.values.chunks(self.n_cols()).map(|r| r[j]).collect())
    }

    /// The values as `f32`, row-major (the usual tensor element type).
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&x| x as f32).collect()
    }
}

impl FittedPipeline {
    pub(crate) fn new(inputs: Vec<InputColumn>, steps: Vec<FittedStep>, outputs: Vec<String>) -> Self {
        FittedPipeline { inputs, steps, outputs }
    }

    /// Applies the pipeline to `table` (training, validation, test, or new data).
    ///
    /// `table` must have exactly the training table's columns, each of the same kind (in
    /// any order); its categorical levels may differ (categories are matched by text).
    /// Rows are transformed independently of each other, with the fitted parameters only,
    /// so a row's output does not depend on what else is in the table. Zero rows give an
    /// empty matrix.
    pub fn transform(&self, table: &Table) -> Result<(Matrix, TransformReport)> {
        let mut work = Work::from_table(table, &self.inputs)?;
        let mut tally = Tally::default();
        work.count_missing(&mut tally);
        for (i, step) in self.steps.iter().enumerate() {
            work::apply(i, step, &mut work, &mut tally)?;
        }
        work.count_unhandled(&mut tally);
        let rows_out = work.rows.len();
        Ok((work.into_matrix()?, tally.into_transform(table.n_rows, rows_out)))
    }

    /// The training table's columns.
    pub fn inputs(&self) -> &[InputColumn] {
        &self.inputs
    }

    /// The fitted steps.
    pub fn steps(&self) -> &[FittedStep] {
        &self.steps
    }

    /// The output column names, in order.
    pub fn output_columns(&self) -> &[String] {
        &self.outputs
    }

    /// Pretty JSON; [`from_json`](Self::from_json) reads it back bit for bit.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Json { message: e.to_string() })
    }

    /// Reads a pipeline written by [`to_json`](Self::to_json) and checks that it is
    /// consistent: every step names columns that exist at that point, and the step outputs
    /// are the recorded output columns.
    pub fn from_json(json: &str) -> Result<Self> {
        let p: FittedPipeline = serde_json::from_str(json).map_err(|e| Error::Json { message: e.to_string() })?;
        p.check()?;
        Ok(p)
    }

    /// Checks parameters, then runs the steps on zero rows to check names and kinds.
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Json { message: what });
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                FittedStep::Impute { fills } => {
                    if let Some(f) = fills.iter().find(|f| matches!(f.value, Value::Number(x) if !x.is_finite())) {
                        return bad(format!("step {i}: fill value of {:?} is not finite", f.column));
                    }
                }
                FittedStep::Clip { bounds } => {
                    if let Some(b) = bounds.iter().find(|b| b.low.is_nan() || b.high.is_nan() || b.low > b.high) {
                        return bad(format!("step {i}: bounds of {:?} are not ordered", b.column));
                    }
                }
                FittedStep::Scale { columns, .. } => {
                    let wrong = |a: &&Affine| !a.offset.is_finite() || !a.scale.is_finite() || a.scale == 0.0;
                    if let Some(a) = columns.iter().find(wrong) {
                        return bad(format!("step {i}: offset/scale of {:?} not finite and non-zero", a.column));
                    }
                }
                _ => {}
            }
        }
        let mut work = Work::empty(&self.inputs);
        let mut tally = Tally::default();
        for (i, step) in self.steps.iter().enumerate() {
            work::apply(i, step, &mut work, &mut tally)?;
        }
        let m = work.into_matrix()?;
        if m.columns != self.outputs {
            return Err(Error::Json {
                message: format!("outputs {:?} do not match the steps' outputs {:?}", self.outputs, m.columns),
            });
        }
        Ok(())
    }
}
