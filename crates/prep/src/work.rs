//! The working copy of a table while steps run, and how a fitted step applies to it.
//!
//! Fitting and transforming share [`apply`]: the training rows go through exactly the code
//! that later transforms validation and test rows, so the two cannot drift apart.

use std::collections::{HashMap, HashSet};

use tuneforge_loader::{ColumnValues, Table};

use crate::report::{Clipped, DroppedRow, Imputed, RowReason, Tally, add_count};
use crate::{ColumnKind, Error, FittedStep, InputColumn, Result, Value};

/// Columns by name, with the original row index of every current row.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub rows: Vec<usize>,
    pub cols: Vec<WorkCol>,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkCol {
    pub name: String,
    pub data: Data,
}

#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// `NaN` = missing.
    Num(Vec<f64>),
    /// Codes into `levels`; `levels` may hold unused entries and need not be sorted.
    Cat { levels: Vec<String>, codes: Vec<Option<u32>> },
}

impl Data {
    pub fn kind(&self) -> ColumnKind {
        match self {
            Data::Num(_) => ColumnKind::Numeric,
            Data::Cat { .. } => ColumnKind::Categorical,
        }
    }

    fn is_missing(&self, r: usize) -> bool {
        match self {
            Data::Num(v) => v[r].is_nan(),
            Data::Cat { codes, .. } => codes[r].is_none(),
        }
    }

    fn missing_count(&self) -> usize {
        match self {
            Data::Num(v) => v.iter().filter(|x| x.is_nan()).count(),
            Data::Cat { codes, .. } => codes.iter().filter(|c| c.is_none()).count(),
        }
    }

    fn retain(&mut self, keep: &[bool]) {
        fn filter<T: Copy>(v: &mut Vec<T>, keep: &[bool]) {
            let mut k = keep.iter();
            v.retain(|_| k.next().copied().unwrap_or(false));
        }
        match self {
            Data::Num(v) => filter(v, keep),
            Data::Cat { codes, .. } => filter(codes, keep),
        }
    }
}

fn kind_of(values: &ColumnValues) -> ColumnKind {
    match values {
        ColumnValues::Numeric(_) => ColumnKind::Numeric,
        ColumnValues::Categorical { .. } => ColumnKind::Categorical,
    }
}

/// Checks a table's internal consistency: unique names, column lengths, codes, finiteness.
fn validate(table: &Table) -> Result<()> {
    let mut seen = HashSet::with_capacity(table.columns.len());
    for c in &table.columns {
        if !seen.insert(c.name.as_str()) {
            return Err(Error::DuplicateColumn { column: c.name.clone() });
        }
        if c.len() != table.n_rows {
            return Err(Error::RaggedColumn { column: c.name.clone(), len: c.len(), n_rows: table.n_rows });
        }
        match &c.values {
            ColumnValues::Numeric(v) => {
                if let Some((row, &value)) = v.iter().enumerate().find(|(_, x)| x.is_infinite()) {
                    return Err(Error::NonFinite { column: c.name.clone(), row, value });
                }
            }
            ColumnValues::Categorical { levels, codes } => {
                let bad = codes.iter().enumerate().find(|(_, c)| c.is_some_and(|c| c as usize >= levels.len()));
                if let Some((row, Some(code))) = bad {
                    return Err(Error::BadCode { column: c.name.clone(), row, code: *code, levels: levels.len() });
                }
            }
        }
    }
    Ok(())
}

impl Work {
    /// The training table's schema, after validating the table.
    pub fn schema(table: &Table) -> Result<Vec<InputColumn>> {
        validate(table)?;
        Ok(table.columns.iter().map(|c| InputColumn { name: c.name.clone(), kind: kind_of(&c.values) }).collect())
    }

    /// A working copy of `table` with its columns in `schema` order; every schema column
    /// must be present with the same kind, and no other column.
    pub fn from_table(table: &Table, schema: &[InputColumn]) -> Result<Work> {
        validate(table)?;
        if let Some(extra) = table.columns.iter().find(|c| !schema.iter().any(|s| s.name == c.name)) {
            return Err(Error::UnexpectedColumn { column: extra.name.clone() });
        }
        let mut cols = Vec::with_capacity(schema.len());
        for s in schema {
            let c = table.column(&s.name).ok_or_else(|| Error::MissingColumn { column: s.name.clone() })?;
            let found = kind_of(&c.values);
            if found != s.kind {
                return Err(Error::KindMismatch { column: s.name.clone(), fitted: s.kind, found });
            }
            let data = match &c.values {
                ColumnValues::Numeric(v) => Data::Num(v.clone()),
                ColumnValues::Categorical { levels, codes } => {
                    Data::Cat { levels: levels.clone(), codes: codes.clone() }
                }
            };
            cols.push(WorkCol { name: s.name.clone(), data });
        }
        Ok(Work { rows: (0..table.n_rows).collect(), cols })
    }

    /// An empty (zero-row) work with the given schema, to check a fitted pipeline's names.
    pub fn empty(schema: &[InputColumn]) -> Work {
        let cols = schema
            .iter()
            .map(|s| WorkCol {
                name: s.name.clone(),
                data: match s.kind {
                    ColumnKind::Numeric => Data::Num(Vec::new()),
                    ColumnKind::Categorical => Data::Cat { levels: Vec::new(), codes: Vec::new() },
                },
            })
            .collect();
        Work { rows: Vec::new(), cols }
    }

    pub fn names(&self) -> Vec<String> {
        self.cols.iter().map(|c| c.name.clone()).collect()
    }

    pub fn index(&self, name: &str) -> Result<usize> {
        self.cols.iter().position(|c| c.name == name).ok_or_else(|| Error::MissingColumn { column: name.to_string() })
    }

    /// Counts missing values per column into `tally.missing`.
    pub fn count_missing(&self, tally: &mut Tally) {
        for c in &self.cols {
            add_count(&mut tally.missing, &c.name, c.data.missing_count());
        }
    }

    /// Counts the missing values left in numeric columns into `tally.unhandled`.
    pub fn count_unhandled(&self, tally: &mut Tally) {
        for c in &self.cols {
            if let Data::Num(v) = &c.data {
                add_count(&mut tally.unhandled, &c.name, v.iter().filter(|x| x.is_nan()).count());
            }
        }
    }

    /// Row-major numbers; fails on a categorical column left unencoded.
    pub fn into_matrix(self) -> Result<crate::Matrix> {
        let n = self.rows.len();
        let w = self.cols.len();
        let mut values = vec![0.0; n * w];
        let mut columns = Vec::with_capacity(w);
        for (j, c) in self.cols.into_iter().enumerate() {
            let Data::Num(v) = c.data else {
                return Err(Error::NotEncoded { column: c.name });
            };
            for (r, x) in v.into_iter().enumerate() {
                values[r * w + j] = x;
            }
            columns.push(c.name);
        }
        Ok(crate::Matrix { columns, rows: self.rows, values })
    }
}

/// Clips `x` into `[low, high]`; `NaN` stays `NaN`.
pub(crate) fn clip(x: f64, low: f64, high: f64) -> f64 {
    if x < low {
        low
    } else if x > high {
        high
    } else {
        x
    }
}

/// `(x - offset) / scale`; `NaN` stays `NaN`.
pub(crate) fn affine(x: f64, offset: f64, scale: f64) -> f64 {
    (x - offset) / scale
}

fn num_mut<'a>(work: &'a mut Work, step: usize, name: &str) -> Result<&'a mut Vec<f64>> {
    let j = work.index(name)?;
    match &mut work.cols[j].data {
        Data::Num(v) => Ok(v),
        Data::Cat { .. } => Err(Error::WrongKind {
            step,
            column: name.to_string(),
            expected: ColumnKind::Numeric,
            found: ColumnKind::Categorical,
        }),
    }
}

/// Applies fitted step number `step` to `work`, counting what it does into `tally`.
/// Never changes the step.
pub(crate) fn apply(step: usize, fitted: &FittedStep, work: &mut Work, tally: &mut Tally) -> Result<()> {
    match fitted {
        FittedStep::DropMissingRows { columns } => {
            let idx = columns.iter().map(|c| work.index(c)).collect::<Result<Vec<_>>>()?;
            let mut keep = vec![true; work.rows.len()];
            for (r, k) in keep.iter_mut().enumerate() {
                if let Some(&j) = idx.iter().find(|&&j| work.cols[j].data.is_missing(r)) {
                    *k = false;
                    tally.dropped_rows.push(DroppedRow {
                        step,
                        row: work.rows[r],
                        reason: RowReason::Missing { column: work.cols[j].name.clone() },
                    });
                }
            }
            if keep.iter().any(|k| !k) {
                for c in &mut work.cols {
                    c.data.retain(&keep);
                }
                let mut k = keep.iter();
                work.rows.retain(|_| k.next().copied().unwrap_or(false));
            }
        }
        FittedStep::Impute { fills } => {
            for f in fills {
                let j = work.index(&f.column)?;
                let count = match (&mut work.cols[j].data, &f.value) {
                    (Data::Num(v), Value::Number(x)) => {
                        let mut n = 0;
                        for y in v.iter_mut().filter(|y| y.is_nan()) {
                            *y = *x;
                            n += 1;
                        }
                        n
                    }
                    (Data::Cat { levels, codes }, Value::Text(s)) => {
                        let n = codes.iter().filter(|c| c.is_none()).count();
                        if n > 0 {
                            let code = match levels.iter().position(|l| l == s) {
                                Some(i) => i,
                                None => {
                                    levels.push(s.clone());
                                    levels.len() - 1
                                }
                            };
                            for c in codes.iter_mut().filter(|c| c.is_none()) {
                                *c = Some(code as u32);
                            }
                        }
                        n
                    }
                    (data, value) => {
                        return Err(Error::WrongKind {
                            step,
                            column: f.column.clone(),
                            expected: match value {
                                Value::Number(_) => ColumnKind::Numeric,
                                Value::Text(_) => ColumnKind::Categorical,
                            },
                            found: data.kind(),
                        });
                    }
                };
                if count > 0 {
                    tally.imputed.push(Imputed { step, column: f.column.clone(), count, value: f.value.clone() });
                }
            }
        }
        FittedStep::Clip { bounds } => {
            for b in bounds {
                let v = num_mut(work, step, &b.column)?;
                let (mut below, mut above) = (0, 0);
                for x in v.iter_mut() {
                    below += usize::from(*x < b.low);
                    above += usize::from(*x > b.high);
                    *x = clip(*x, b.low, b.high);
                }
                if below + above > 0 {
                    tally.clipped.push(Clipped { step, column: b.column.clone(), below, above });
                }
            }
        }
        FittedStep::Scale { columns, .. } => {
            for a in columns {
                for x in num_mut(work, step, &a.column)?.iter_mut() {
                    *x = affine(*x, a.offset, a.scale);
                }
            }
        }
        FittedStep::OneHot { columns, unknown } => {
            for cats in columns {
                one_hot(step, cats, *unknown, work, tally)?;
            }
        }
        FittedStep::DropColumns { columns } => {
            for c in columns {
                let j = work.index(c)?;
                work.cols.remove(j);
            }
        }
    }
    Ok(())
}

fn one_hot(
    step: usize,
    cats: &crate::Categories,
    unknown: crate::Unknown,
    work: &mut Work,
    tally: &mut Tally,
) -> Result<()> {
    let j = work.index(&cats.column)?;
    let Data::Cat { levels, codes } = &work.cols[j].data else {
        return Err(Error::WrongKind {
            step,
            column: cats.column.clone(),
            expected: ColumnKind::Categorical,
            found: ColumnKind::Numeric,
        });
    };
    // Each of this table's levels → its training category, if any.
    let index: HashMap<&str, usize> = cats.categories.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let to_cat: Vec<Option<usize>> = levels.iter().map(|l| index.get(l.as_str()).copied()).collect();
    let k = cats.categories.len();
    let n = codes.len();
    let mut out = vec![vec![0.0; n]; k];
    let (mut missing, mut unseen) = (0, 0);
    for (r, code) in codes.iter().enumerate() {
        let Some(code) = code else {
            missing += 1;
            continue;
        };
        match to_cat.get(*code as usize).copied().flatten() {
            Some(c) => out[c][r] = 1.0,
            None => match unknown {
                crate::Unknown::Ignore => unseen += 1,
                crate::Unknown::Error => {
                    return Err(Error::UnknownCategory {
                        column: cats.column.clone(),
                        row: work.rows[r],
                        value: levels.get(*code as usize).cloned().unwrap_or_default(),
                    });
                }
            },
        }
    }
    add_count(&mut tally.unhandled, &cats.column, missing);
    add_count(&mut tally.unknown, &cats.column, unseen);
    let new: Vec<WorkCol> = cats
        .categories
        .iter()
        .zip(out)
        .map(|(c, v)| WorkCol { name: format!("{}={}", cats.column, c), data: Data::Num(v) })
        .collect();
    work.cols.splice(j..=j, new);
    let mut seen = HashSet::with_capacity(work.cols.len());
    match work.cols.iter().find(|c| !seen.insert(c.name.as_str())) {
        Some(c) => Err(Error::DuplicateColumn { column: c.name.clone() }),
        None => Ok(()),
    }
}
