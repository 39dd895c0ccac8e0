//! The batch form: a numeric-only fitted pipeline applied to row-major `f32`/`f64` rows.

use crate::work::{affine, clip};
use crate::{ColumnKind, Error, FittedPipeline, FittedStep, Result, Value};

/// A numeric-only [`FittedPipeline`] compiled to per-column operations on row-major rows
/// of a known width, for a trainer's batches. Built by [`FittedPipeline::row_transform`].
///
/// Each output column takes one input column through the pipeline's fills, clips and
/// scalings in order; the arithmetic is the same as [`FittedPipeline::transform`]'s (in
/// `f64`), so the two agree exactly on `f64` rows. Values are not validated: a `NaN` that
/// no step fills stays `NaN`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowTransform {
    inputs: Vec<String>,
    outputs: Vec<Program>,
}

#[derive(Debug, Clone, PartialEq)]
struct Program {
    name: String,
    source: usize,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Fill(f64),
    Clip(f64, f64),
    Affine(f64, f64),
}

impl Op {
    fn apply(self, x: f64) -> f64 {
        match self {
            Op::Fill(v) => {
                if x.is_nan() {
                    v
                } else {
                    x
                }
            }
            Op::Clip(lo, hi) => clip(x, lo, hi),
            Op::Affine(offset, scale) => affine(x, offset, scale),
        }
    }
}

/// An element type for batches: `f32` or `f64`. Computation is in `f64`.
pub trait Element: Copy + sealed::Sealed {
    /// Widens to `f64`.
    fn to_f64(self) -> f64;
    /// Narrows from `f64`.
    fn from_f64(x: f64) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

impl FittedPipeline {
    /// Compiles the pipeline for row-major numeric rows whose columns are
    /// [`inputs`](Self::inputs) in order.
    ///
    /// Fails with [`Error::NotRowWise`] when a training column was categorical, or a step
    /// drops rows (`drop_missing_rows`) or adds columns (`one_hot`): those need the table
    /// form, [`transform`](Self::transform).
    pub fn row_transform(&self) -> Result<RowTransform> {
        if let Some(c) = self.inputs().iter().find(|c| c.kind == ColumnKind::Categorical) {
            return Err(Error::NotRowWise {
                step: None,
                column: Some(c.name.clone()),
                why: "categorical input column",
            });
        }
        let inputs: Vec<String> = self.inputs().iter().map(|c| c.name.clone()).collect();
        let mut outputs: Vec<Program> =
            inputs.iter().enumerate().map(|(j, n)| Program { name: n.clone(), source: j, ops: Vec::new() }).collect();
        let find = |outputs: &[Program], name: &str| {
            outputs.iter().position(|p| p.name == name).ok_or_else(|| Error::MissingColumn { column: name.to_string() })
        };
        for (i, step) in self.steps().iter().enumerate() {
            match step {
                FittedStep::DropMissingRows { .. } => {
                    return Err(Error::NotRowWise { step: Some(i), column: None, why: "drop_missing_rows drops rows" });
                }
                FittedStep::OneHot { columns, .. } => {
                    if !columns.is_empty() {
                        return Err(Error::NotRowWise { step: Some(i), column: None, why: "one_hot adds columns" });
                    }
                }
                FittedStep::Impute { fills } => {
                    for f in fills {
                        let j = find(&outputs, &f.column)?;
                        let Value::Number(v) = f.value else {
                            return Err(Error::NotRowWise {
                                step: Some(i),
                                column: Some(f.column.clone()),
                                why: "text fill value",
                            });
                        };
                        outputs[j].ops.push(Op::Fill(v));
                    }
                }
                FittedStep::Clip { bounds } => {
                    for b in bounds {
                        let j = find(&outputs, &b.column)?;
                        outputs[j].ops.push(Op::Clip(b.low, b.high));
                    }
                }
                FittedStep::Scale { columns, .. } => {
                    for a in columns {
                        let j = find(&outputs, &a.column)?;
                        outputs[j].ops.push(Op::Affine(a.offset, a.scale));
                    }
                }
                FittedStep::DropColumns { columns } => {
                    for c in columns {
                        let j = find(&outputs, c)?;
                        outputs.remove(j);
                    }
                }
            }
        }
        Ok(RowTransform { inputs, outputs })
    }
}

impl RowTransform {
    /// Width of an input row.
    pub fn in_width(&self) -> usize {
        self.inputs.len()
    }

    /// Width of an output row (smaller than the input's when columns were dropped).
    pub fn out_width(&self) -> usize {
        self.outputs.len()
    }

    /// Input column names, in row order.
    pub fn input_columns(&self) -> &[String] {
        &self.inputs
    }

    /// Output column names, in row order.
    pub fn output_columns(&self) -> Vec<String> {
        self.outputs.iter().map(|p| p.name.clone()).collect()
    }

    /// Transforms rows of `input` (`rows × in_width`) into `output` (`rows × out_width`);
    /// returns the number of rows.
    pub fn apply<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<usize> {
        let (wi, wo) = (self.in_width(), self.out_width());
        if wi == 0 || !input.len().is_multiple_of(wi) {
            return Err(Error::BatchShape { what: "input", len: input.len(), rows: 0, width: wi });
        }
        let rows = input.len() / wi;
        if output.len() != rows * wo {
            return Err(Error::BatchShape { what: "output", len: output.len(), rows, width: wo });
        }
        for (src, dst) in input.chunks_exact(wi).zip(output.chunks_exact_mut(wo.max(1))) {
            for (p, y) in self.outputs.iter().zip(dst.iter_mut()) {
                *y = T::from_f64(p.ops.iter().fold(src[p.source].to_f64(), |x, op| op.apply(x)));
            }
        }
        Ok(rows)
    }

    /// Transforms rows (`rows × in_width`) in place; returns the number of rows. Fails with
    /// [`Error::NotRowWise`] when the pipeline drops columns (use [`apply`](Self::apply)).
    pub fn apply_in_place<T: Element>(&self, rows: &mut [T]) -> Result<usize> {
        let w = self.in_width();
        if self.out_width() != w {
            return Err(Error::NotRowWise { step: None, column: None, why: "columns are dropped; use apply" });
        }
        if w == 0 || !rows.len().is_multiple_of(w) {
            return Err(Error::BatchShape { what: "rows", len: rows.len(), rows: 0, width: w });
        }
        for row in rows.chunks_exact_mut(w) {
            // Equal widths means nothing was dropped, so output j reads input j.
            for (p, x) in self.outputs.iter().zip(row.iter_mut()) {
                *x = T::from_f64(p.ops.iter().fold(x.to_f64(), |x, op| op.apply(x)));
            }
        }
        Ok(rows.len() / w)
    }
}
