//! [`Matrix`]: a dense, row-major, finite `f64` feature matrix, and label checks.

use crate::{Error, Result};

/// A dense row-major matrix of finite `f64` feature values: `n_rows` samples × `n_cols`
/// features.
///
/// Invariants, checked by every constructor: `data.len() == n_rows * n_cols`,
/// `n_cols >= 1`, and every value is finite. Scoring functions rely on them, so they never
/// see a NaN. Zero rows are allowed here; scores reject them with [`Error::Empty`].
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f64>,
    n_rows: usize,
    n_cols: usize,
}

impl Matrix {
    /// Wraps row-major `data` of shape `n_rows × n_cols`.
    ///
    /// Errors: [`Error::Empty`] when `n_cols == 0`, [`Error::ShapeMismatch`] when the
    /// length is not `n_rows * n_cols`, [`Error::NonFinite`] at the first NaN or ±∞.
    pub fn new(n_rows: usize, n_cols: usize, data: Vec<f64>) -> Result<Matrix> {
        if n_cols == 0 {
            return Err(Error::Empty { what: "feature columns" });
        }
        let expected = n_rows.checked_mul(n_cols).ok_or(Error::ShapeMismatch {
            what: "matrix data length",
            expected: usize::MAX,
            found: data.len(),
        })?;
        if data.len() != expected {
            return Err(Error::ShapeMismatch { what: "matrix data length", expected, found: data.len() });
        }
        check_finite(&data, n_cols)?;
        Ok(Matrix { data, n_rows, n_cols })
    }

    /// Copies a row-major `f32` batch (as a trainer holds it) with `n_cols` columns.
    pub fn from_f32(data: &[f32], n_cols: usize) -> Result<Matrix> {
        let n_rows = rows_of(data.len(), n_cols, "f32 batch")?;
        Matrix::new(n_rows, n_cols, data.iter().map(|&v| f64::from(v)).collect())
    }

    /// Builds a matrix from columns of equal length (e.g. a CSV table's numeric columns).
    pub fn from_columns<C: AsRef<[f64]>>(columns: &[C]) -> Result<Matrix> {
        let n_cols = columns.len();
        if n_cols == 0 {
            return Err(Error::Empty { what: "feature columns" });
        }
        let n_rows = columns[0].as_ref().len();
        let mut data = vec![0.0; n_rows * n_cols];
        for (j, col) in columns.iter().enumerate() {
            let col = col.as_ref();
            if col.len() != n_rows {
                return Err(Error::ShapeMismatch { what: "column length", expected: n_rows, found: col.len() });
            }
            for (i, &v) in col.iter().enumerate() {
                data[i * n_cols + j] = v;
            }
        }
        Matrix::new(n_rows, n_cols, data)
    }

    /// Number of rows (samples).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (features).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Row `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        (i < self.n_rows).then(|| &self.data[i * self.n_cols..(i + 1) * self.n_cols])
    }

    /// Iterator over the rows.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f64]> + '_ {
        self.data.chunks_exact(self.n_cols)
    }

    /// Value at (`row`, `col`), or `None` out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<f64> {
        (row < self.n_rows && col < self.n_cols).then(|| self.data[row * self.n_cols + col])
    }

    /// Copy of column `col`, or `None` out of range.
    pub fn column(&self, col: usize) -> Option<Vec<f64>> {
        (col < self.n_cols).then(|| self.rows().map(|r| r[col]).collect())
    }

    /// A new matrix holding only `columns`, in the order given (repeats allowed).
    ///
    /// Errors: [`Error::Empty`] for no columns, [`Error::ShapeMismatch`] for a column
    /// index out of range (`expected` is the column count, `found` the index).
    pub fn select_columns(&self, columns: &[usize]) -> Result<Matrix> {
        if columns.is_empty() {
            return Err(Error::Empty { what: "column selection" });
        }
        if let Some(&bad) = columns.iter().find(|&&c| c >= self.n_cols) {
            return Err(Error::ShapeMismatch { what: "column index", expected: self.n_cols, found: bad });
        }
        let data = self.rows().flat_map(|r| columns.iter().map(move |&c| r[c])).collect();
        Ok(Matrix { data, n_rows: self.n_rows, n_cols: columns.len() })
    }

    /// A new matrix holding only `rows`, in the order given (repeats allowed).
    ///
    /// Errors: [`Error::ShapeMismatch`] for a row index out of range (`expected` is the
    /// row count, `found` the index).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Matrix> {
        let mut data = Vec::with_capacity(rows.len() * self.n_cols);
        for &i in rows {
            let row = self.row(i).ok_or(Error::ShapeMismatch { what: "row index", expected: self.n_rows, found: i })?;
            data.extend_from_slice(row);
        }
        Ok(Matrix { data, n_rows: rows.len(), n_cols: self.n_cols })
    }

    /// Swaps the values of column `col` between rows: row `i` receives the old value of
    /// row `perm[i]`. Crate-internal: `perm` is a permutation of `0..n_rows`.
    pub(crate) fn permute_column(&mut self, col: usize, perm: &[usize], original: &[f64]) {
        for (i, &src) in perm.iter().enumerate() {
            self.data[i * self.n_cols + col] = original[src];
        }
    }

    /// Writes `values` back into column `col`. Crate-internal.
    pub(crate) fn set_column(&mut self, col: usize, values: &[f64]) {
        for (i, &v) in values.iter().enumerate() {
            self.data[i * self.n_cols + col] = v;
        }
    }
}

/// Number of rows of a row-major buffer of `len` values with `n_cols` columns.
pub(crate) fn rows_of(len: usize, n_cols: usize, what: &'static str) -> Result<usize> {
    if n_cols == 0 {
        return Err(Error::Empty { what: "feature columns" });
    }
    if !len.is_multiple_of(n_cols) {
        return Err(Error::RaggedRows { what, len, n_cols });
    }
    Ok(len / n_cols)
}

/// First non-finite value of a row-major buffer, as an error.
pub(crate) fn check_finite<T: Copy + Into<f64>>(data: &[T], n_cols: usize) -> Result<()> {
    match data.iter().position(|&v| !v.into().is_finite()) {
        None => Ok(()),
        Some(p) => Err(Error::NonFinite { row: p / n_cols, col: p % n_cols, value: data[p].into() }),
    }
}

/// The classes present in a label vector, numbered densely in label order.
pub(crate) struct Classes {
    /// Per row: index of its class among the present classes.
    pub(crate) index: Vec<usize>,
    /// Per present class: number of rows.
    pub(crate) counts: Vec<usize>,
}

/// Checks `labels` against `x` and `0..n_classes`, and numbers the present classes densely
/// (memory follows the classes present, not `n_classes`).
pub(crate) fn check_labels(x: &Matrix, labels: &[u32], n_classes: usize) -> Result<Classes> {
    if x.n_rows() == 0 {
        return Err(Error::Empty { what: "feature matrix rows" });
    }
    if n_classes == 0 {
        return Err(Error::Empty { what: "classes" });
    }
    if labels.len() != x.n_rows() {
        return Err(Error::ShapeMismatch { what: "labels", expected: x.n_rows(), found: labels.len() });
    }
    if let Some(row) = labels.iter().position(|&l| l as usize >= n_classes) {
        return Err(Error::LabelOutOfRange { row, label: labels[row], n_classes });
    }
    let mut present = labels.to_vec();
    present.sort_unstable();
    present.dedup();
    let mut counts = vec![0usize; present.len()];
    let index = labels
        .iter()
        .map(|l| {
            // Every label is in `present`; 0 is never used.
            let c = present.binary_search(l).unwrap_or(0);
            counts[c] += 1;
            c
        })
        .collect();
    Ok(Classes { index, counts })
}
