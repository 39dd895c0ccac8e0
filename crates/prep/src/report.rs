//! What fitting or transforming found in the data: [`FitReport`] and [`TransformReport`].

use serde::{Deserialize, Serialize};

use crate::Value;

/// What [`PipelineConfig::fit`](crate::PipelineConfig::fit) found in the training rows.
///
/// Nothing is fixed silently: every missing value, filled value, clipped value, dropped row
/// and dropped column is counted here, with the step that did it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FitReport {
    /// Rows in the training table.
    pub rows_in: usize,
    /// Training rows left after row-dropping steps.
    pub rows_out: usize,
    /// Missing values per input column, in column order (columns without any are left out).
    pub missing: Vec<ColumnCount>,
    /// Values filled by impute steps.
    pub imputed: Vec<Imputed>,
    /// Values clipped by clip steps (columns where nothing was clipped are left out).
    pub clipped: Vec<Clipped>,
    /// Rows dropped, with the reason.
    pub dropped_rows: Vec<DroppedRow>,
    /// Columns dropped, with the reason.
    pub dropped_columns: Vec<DroppedColumn>,
    /// Missing values that no step handled and that reach the output: `NaN` in a numeric
    /// output column, or all zeros from a one-hot column (named by its input column).
    pub unhandled_missing: Vec<ColumnCount>,
}

/// What [`FittedPipeline::transform`](crate::FittedPipeline::transform) found in the rows
/// it was given. Fitted parameters never change; this only describes the data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TransformReport {
    /// Rows in the table given.
    pub rows_in: usize,
    /// Rows left after row-dropping steps.
    pub rows_out: usize,
    /// Missing values per input column (columns without any are left out).
    pub missing: Vec<ColumnCount>,
    /// Values filled by impute steps.
    pub imputed: Vec<Imputed>,
    /// Values clipped to the training bounds.
    pub clipped: Vec<Clipped>,
    /// Rows dropped, with the reason.
    pub dropped_rows: Vec<DroppedRow>,
    /// Categories not seen in training, encoded as all zeros
    /// ([`Unknown::Ignore`](crate::Unknown::Ignore)).
    pub unknown_categories: Vec<ColumnCount>,
    /// Missing values that no step handled and that reach the output.
    pub unhandled_missing: Vec<ColumnCount>,
}

/// A count for one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnCount {
    /// The column.
    pub column: String,
    /// How many values.
    pub count: usize,
}

/// Values filled in one column by one impute step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imputed {
    /// The step.
    pub step: usize,
    /// The column.
    pub column: String,
    /// How many values were filled.
    pub count: usize,
    /// The fill value.
    pub value: Value,
}

/// Values clipped in one column by one clip step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clipped {
    /// The step.
    pub step: usize,
    /// The column.
    pub column: String,
    /// Values raised to the lower bound.
    pub below: usize,
    /// Values lowered to the upper bound.
    pub above: usize,
}

/// A dropped row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRow {
    /// The step that dropped it.
    pub step: usize,
    /// Its index in the table given.
    pub row: usize,
    /// Why.
    pub reason: RowReason,
}

/// Why a row was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RowReason {
    /// It had a missing value in `column` (the first checked column where it had one).
    Missing {
        /// The column.
        column: String,
    },
}

/// A dropped column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedColumn {
    /// The step that dropped it.
    pub step: usize,
    /// The column.
    pub column: String,
    /// Why.
    pub reason: ColumnReason,
}

/// Why a column was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ColumnReason {
    /// Every non-missing training value equals `value`.
    Constant {
        /// The value.
        value: Value,
        /// How many training values were missing besides.
        missing: usize,
    },
}

fn count_in(list: &[ColumnCount], column: &str) -> usize {
    list.iter().filter(|c| c.column == column).map(|c| c.count).sum()
}

impl FitReport {
    /// Missing values found in input column `column` (0 if none or no such column).
    pub fn missing_in(&self, column: &str) -> usize {
        count_in(&self.missing, column)
    }

    /// Values filled in `column` over all impute steps.
    pub fn imputed_in(&self, column: &str) -> usize {
        self.imputed.iter().filter(|c| c.column == column).map(|c| c.count).sum()
    }

    /// Values clipped (below + above) in `column` over all clip steps.
    pub fn clipped_in(&self, column: &str) -> usize {
        self.clipped.iter().filter(|c| c.column == column).map(|c| c.below + c.above).sum()
    }

    /// `true` when the training data needed no fixing: nothing missing, clipped or dropped.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.clipped.is_empty()
            && self.dropped_rows.is_empty()
            && self.dropped_columns.is_empty()
    }
}

impl TransformReport {
    /// Missing values found in input column `column`.
    pub fn missing_in(&self, column: &str) -> usize {
        count_in(&self.missing, column)
    }

    /// Values clipped (below + above) in `column` over all clip steps.
    pub fn clipped_in(&self, column: &str) -> usize {
        self.clipped.iter().filter(|c| c.column == column).map(|c| c.below + c.above).sum()
    }
}

fn counts(list: &[ColumnCount]) -> String {
    list.iter().map(|c| format!("{} {}", c.column, c.count)).collect::<Vec<_>>().join(", ")
}

impl std::fmt::Display for FitReport {
    /// One line per kind of finding, e.g. `missing: V6 16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "rows: {} in, {} out", self.rows_in, self.rows_out)?;
        if !self.missing.is_empty() {
            writeln!(f, "missing: {}", counts(&self.missing))?;
        }
        for i in &self.imputed {
            writeln!(f, "imputed: step {} {} {} with {}", i.step, i.column, i.count, i.value)?;
        }
        for c in &self.clipped {
            writeln!(f, "clipped: step {} {} {} below, {} above", c.step, c.column, c.below, c.above)?;
        }
        if !self.dropped_rows.is_empty() {
            writeln!(f, "dropped rows: {}", self.dropped_rows.len())?;
        }
        for d in &self.dropped_columns {
            let ColumnReason::Constant { value, .. } = &d.reason;
            writeln!(f, "dropped column: step {} {} (constant {})", d.step, d.column, value)?;
        }
        if !self.unhandled_missing.is_empty() {
            writeln!(f, "unhandled missing: {}", counts(&self.unhandled_missing))?;
        }
        Ok(())
    }
}

/// Accumulates findings while steps run; turned into either report.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub missing: Vec<ColumnCount>,
    pub imputed: Vec<Imputed>,
    pub clipped: Vec<Clipped>,
    pub dropped_rows: Vec<DroppedRow>,
    pub dropped_columns: Vec<DroppedColumn>,
    pub unknown: Vec<ColumnCount>,
    pub unhandled: Vec<ColumnCount>,
}

pub(crate) fn add_count(list: &mut Vec<ColumnCount>, column: &str, count: usize) {
    if count == 0 {
        return;
    }
    match list.iter_mut().find(|c| c.column == column) {
        Some(c) => c.count += count,
        None => list.push(ColumnCount { column: column.to_string(), count }),
    }
}

impl Tally {
    pub(crate) fn into_fit(self, rows_in: usize, rows_out: usize) -> FitReport {
        FitReport {
            rows_in,
            rows_out,
            missing: self.missing,
            imputed: self.imputed,
            clipped: self.clipped,
            dropped_rows: self.dropped_rows,
            dropped_columns: self.dropped_columns,
            unhandled_missing: self.unhandled,
        }
    }

    pub(crate) fn into_transform(self, rows_in: usize, rows_out: usize) -> TransformReport {
        TransformReport {
            rows_in,
            rows_out,
            missing: self.missing,
            imputed: self.imputed,
            clipped: self.clipped,
            dropped_rows: self.dropped_rows,
            unknown_categories: self.unknown,
            unhandled_missing: self.unhandled,
        }
    }
}
