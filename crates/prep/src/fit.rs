//! Fitting: learning each step's parameters from the training rows.

use tuneforge_loader::Table;

use crate::report::{ColumnReason, DroppedColumn, FitReport, Tally};
use crate::stats;
use crate::work::{self, Data, Work};
use crate::{
    Affine, Bounds, Categories, ColumnKind, Columns, Error, Fill, FittedPipeline, FittedStep, Impute, Outliers,
    PipelineConfig, Result, Scaling, Step, Value,
};

impl PipelineConfig {
    /// Fits every step on `train`, in order, each on the output of the steps before it.
    ///
    /// This is the only place parameters are learnt, and it sees only `train`. Returns the
    /// fitted pipeline and a report of what the training rows held (missing values,
    /// clipped values, dropped rows and columns). Fails on an empty table, an all-missing
    /// column, a step naming an absent column or one of the wrong kind, an invalid
    /// parameter, or a categorical column left unencoded at the end.
    pub fn fit(&self, train: &Table) -> Result<(FittedPipeline, FitReport)> {
        let inputs = Work::schema(train)?;
        if train.n_rows == 0 || train.columns.is_empty() {
            return Err(Error::EmptyTable { rows: train.n_rows, columns: train.columns.len() });
        }
        let mut work = Work::from_table(train, &inputs)?;
        let mut tally = Tally::default();
        work.count_missing(&mut tally);
        if let Some(c) = tally.missing.iter().find(|c| c.count == train.n_rows) {
            return Err(Error::AllMissing { column: c.column.clone(), step: None });
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let fitted = fit_step(i, step, &work, &mut tally)?;
            let before = work.rows.len();
            work::apply(i, &fitted, &mut work, &mut tally)?;
            if work.rows.is_empty() {
                return Err(Error::NoRowsLeft { step: i, dropped: before });
            }
            if work.cols.is_empty() {
                return Err(Error::NoColumnsLeft { step: i });
            }
            steps.push(fitted);
        }
        work.count_unhandled(&mut tally);
        let rows_out = work.rows.len();
        let outputs = work.names();
        // Fails on a categorical column left unencoded.
        work.into_matrix()?;
        Ok((FittedPipeline::new(inputs, steps, outputs), tally.into_fit(train.n_rows, rows_out)))
    }
}

/// Which column kinds a step handles.
#[derive(Clone, Copy)]
enum Accept {
    Numeric,
    Categorical,
    Any,
}

impl Accept {
    fn takes(self, kind: ColumnKind) -> bool {
        match self {
            Accept::Numeric => kind == ColumnKind::Numeric,
            Accept::Categorical => kind == ColumnKind::Categorical,
            Accept::Any => true,
        }
    }
}

/// Column indices selected by `columns` at step `step`.
fn select(step: usize, columns: &Columns, work: &Work, accept: Accept) -> Result<Vec<usize>> {
    match columns {
        Columns::All => Ok((0..work.cols.len()).filter(|&j| accept.takes(work.cols[j].data.kind())).collect()),
        Columns::Names(names) => {
            let mut out: Vec<usize> = Vec::with_capacity(names.len());
            for name in names {
                let j = work.cols.iter().position(|c| &c.name == name).ok_or_else(|| Error::UnknownColumn {
                    step,
                    column: name.clone(),
                    available: work.names(),
                })?;
                let found = work.cols[j].data.kind();
                if !accept.takes(found) {
                    let expected = match found {
                        ColumnKind::Numeric => ColumnKind::Categorical,
                        ColumnKind::Categorical => ColumnKind::Numeric,
                    };
                    return Err(Error::WrongKind { step, column: name.clone(), expected, found });
                }
                if !out.contains(&j) {
                    out.push(j);
                }
            }
            Ok(out)
        }
    }
}

fn invalid(step: usize, name: &'static str, value: f64, requirement: &'static str) -> Error {
    Error::InvalidParameter { step, name, value, requirement }
}

fn all_missing(step: usize, work: &Work, j: usize) -> Error {
    Error::AllMissing { column: work.cols[j].name.clone(), step: Some(step) }
}

/// Non-missing values of numeric column `j`, sorted; fails when there are none.
fn sorted_values(step: usize, work: &Work, j: usize) -> Result<Vec<f64>> {
    let Data::Num(v) = &work.cols[j].data else {
        return Err(not_numeric(step, work, j));
    };
    let sorted = stats::sorted_present(v);
    if sorted.is_empty() {
        return Err(all_missing(step, work, j));
    }
    Ok(sorted)
}

fn numbers(step: usize, work: &Work, j: usize) -> Result<&[f64]> {
    match &work.cols[j].data {
        Data::Num(v) => Ok(v),
        Data::Cat { .. } => Err(not_numeric(step, work, j)),
    }
}

fn not_numeric(step: usize, work: &Work, j: usize) -> Error {
    Error::WrongKind {
        step,
        column: work.cols[j].name.clone(),
        expected: ColumnKind::Numeric,
        found: ColumnKind::Categorical,
    }
}

/// Per-level counts of the rows' codes.
fn level_counts(levels: &[String], codes: &[Option<u32>]) -> Vec<usize> {
    let mut counts = vec![0usize; levels.len()];
    for c in codes.iter().flatten() {
        if let Some(n) = counts.get_mut(*c as usize) {
            *n += 1;
        }
    }
    counts
}

fn fit_step(i: usize, step: &Step, work: &Work, tally: &mut Tally) -> Result<FittedStep> {
    let name = |j: usize| work.cols[j].name.clone();
    Ok(match step {
        Step::DropMissingRows { columns } => {
            let cols = select(i, columns, work, Accept::Any)?;
            FittedStep::DropMissingRows { columns: cols.into_iter().map(name).collect() }
        }
        Step::Impute { columns, strategy } => {
            let accept = match strategy {
                Impute::Mean | Impute::Median => Accept::Numeric,
                Impute::MostFrequent => Accept::Any,
                Impute::Constant(Value::Number(x)) => {
                    if !x.is_finite() {
                        return Err(invalid(i, "value", *x, "finite"));
                    }
                    Accept::Numeric
                }
                Impute::Constant(Value::Text(_)) => Accept::Categorical,
            };
            let mut fills = Vec::new();
            for j in select(i, columns, work, accept)? {
                let value = match strategy {
                    Impute::Constant(v) => v.clone(),
                    Impute::Mean => {
                        Value::Number(stats::mean(numbers(i, work, j)?).ok_or_else(|| all_missing(i, work, j))?)
                    }
                    Impute::Median => {
                        let sorted = sorted_values(i, work, j)?;
                        Value::Number(stats::median_sorted(&sorted).ok_or_else(|| all_missing(i, work, j))?)
                    }
                    Impute::MostFrequent => match &work.cols[j].data {
                        Data::Num(_) => {
                            let sorted = sorted_values(i, work, j)?;
                            Value::Number(stats::mode_sorted(&sorted).ok_or_else(|| all_missing(i, work, j))?)
                        }
                        Data::Cat { levels, codes } => Value::Text(
                            stats::mode_level(levels, &level_counts(levels, codes))
                                .ok_or_else(|| all_missing(i, work, j))?,
                        ),
                    },
                };
                fills.push(Fill { column: name(j), value });
            }
            FittedStep::Impute { fills }
        }
        Step::Clip { columns, method } => {
            match method {
                Outliers::Iqr { k } if !(k.is_finite() && *k >= 0.0) => {
                    return Err(invalid(i, "k", *k, "finite and >= 0"));
                }
                Outliers::ZScore { threshold } if !(threshold.is_finite() && *threshold > 0.0) => {
                    return Err(invalid(i, "threshold", *threshold, "finite and > 0"));
                }
                _ => {}
            }
            let mut bounds = Vec::new();
            for j in select(i, columns, work, Accept::Numeric)? {
                let (low, high) = match method {
                    Outliers::Iqr { k } => {
                        let sorted = sorted_values(i, work, j)?;
                        let q1 = stats::quantile_sorted(&sorted, 0.25).ok_or_else(|| all_missing(i, work, j))?;
                        let q3 = stats::quantile_sorted(&sorted, 0.75).ok_or_else(|| all_missing(i, work, j))?;
                        (q1 - k * (q3 - q1), q3 + k * (q3 - q1))
                    }
                    Outliers::ZScore { threshold } => {
                        let (m, var, _) =
                            stats::mean_var(numbers(i, work, j)?).ok_or_else(|| all_missing(i, work, j))?;
                        let sd = var.sqrt();
                        (m - threshold * sd, m + threshold * sd)
                    }
                };
                bounds.push(Bounds { column: name(j), low, high });
            }
            FittedStep::Clip { bounds }
        }
        Step::Scale { columns, method } => {
            if let Scaling::Divide(d) = method
                && !(d.is_finite() && *d != 0.0)
            {
                return Err(invalid(i, "divisor", *d, "finite and non-zero"));
            }
            let mut out = Vec::new();
            for j in select(i, columns, work, Accept::Numeric)? {
                let (offset, scale) = match method {
                    Scaling::Standard => {
                        let (m, var, n) =
                            stats::mean_var(numbers(i, work, j)?).ok_or_else(|| all_missing(i, work, j))?;
                        let scale =
                            if stats::is_constant_variance(var, m, n) { 1.0 } else { stats::nonzero_scale(var.sqrt()) };
                        (m, scale)
                    }
                    Scaling::MinMax => {
                        let sorted = sorted_values(i, work, j)?;
                        let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
                        (lo, stats::nonzero_scale(hi - lo))
                    }
                    Scaling::MaxAbs => {
                        let sorted = sorted_values(i, work, j)?;
                        let max_abs = sorted[0].abs().max(sorted[sorted.len() - 1].abs());
                        (0.0, stats::nonzero_scale(max_abs))
                    }
                    Scaling::Divide(d) => (0.0, *d),
                };
                out.push(Affine { column: name(j), offset, scale });
            }
            FittedStep::Scale { method: *method, columns: out }
        }
        Step::OneHot { columns, unknown } => {
            let mut out = Vec::new();
            for j in select(i, columns, work, Accept::Categorical)? {
                let Data::Cat { levels, codes } = &work.cols[j].data else {
                    continue;
                };
                let counts = level_counts(levels, codes);
                let mut categories: Vec<String> =
                    levels.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(l, _)| l.clone()).collect();
                if categories.is_empty() {
                    return Err(all_missing(i, work, j));
                }
                stats::sort_levels(&mut categories);
                out.push(Categories { column: name(j), categories });
            }
            FittedStep::OneHot { columns: out, unknown: *unknown }
        }
        Step::DropConstant { columns } => {
            let mut dropped = Vec::new();
            for j in select(i, columns, work, Accept::Any)? {
                let (value, missing) = match &work.cols[j].data {
                    Data::Num(v) => {
                        let sorted = sorted_values(i, work, j)?;
                        let constant = sorted[0] == sorted[sorted.len() - 1];
                        (constant.then_some(Value::Number(sorted[0])), v.len() - sorted.len())
                    }
                    Data::Cat { levels, codes } => {
                        let counts = level_counts(levels, codes);
                        let used: Vec<usize> = (0..levels.len()).filter(|&l| counts[l] > 0).collect();
                        if used.is_empty() {
                            return Err(all_missing(i, work, j));
                        }
                        let missing = codes.iter().filter(|c| c.is_none()).count();
                        ((used.len() == 1).then(|| Value::Text(levels[used[0]].clone())), missing)
                    }
                };
                if let Some(value) = value {
                    tally.dropped_columns.push(DroppedColumn {
                        step: i,
                        column: name(j),
                        reason: ColumnReason::Constant { value, missing },
                    });
                    dropped.push(name(j));
                }
            }
            FittedStep::DropColumns { columns: dropped }
        }
    })
}
