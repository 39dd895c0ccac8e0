//! Datasets held in memory, views of a subset of rows, and seeded stratified splits.

use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{Dataset, Error, Result};

/// A dataset whose features are a row-major `f32` matrix in memory (e.g. the output of a
/// preprocessing pipeline).
#[derive(Debug, Clone, PartialEq)]
pub struct InMemory {
    features: Vec<f32>,
    labels: Vec<u32>,
    shape: Vec<usize>,
    names: Vec<String>,
}

impl InMemory {
    /// Checks that `features` holds `labels.len()` rows of `shape` and that every label is
    /// below `label_names.len()`.
    pub fn new(features: Vec<f32>, labels: Vec<u32>, shape: Vec<usize>, label_names: Vec<String>) -> Result<Self> {
        let per: usize = shape.iter().product();
        if per == 0 || features.len() != per * labels.len() {
            return Err(Error::Invalid {
                what: "in-memory dataset",
                why: format!("{} values are not {} rows of shape {shape:?}", features.len(), labels.len()),
            });
        }
        if let Some((row, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= label_names.len()) {
            return Err(Error::Invalid {
                what: "in-memory dataset",
                why: format!("label {l} of row {row} is not below the {} classes", label_names.len()),
            });
        }
        Ok(InMemory { features, labels, shape, names: label_names })
    }

    /// Copies every row of `dataset` into memory.
    pub fn copy_of(dataset: &dyn Dataset) -> Result<Self> {
        let mut features = vec![0f32; dataset.len() * dataset.feature_len()];
        dataset.read_rows(0, dataset.len(), &mut features)?;
        let labels = (0..dataset.len()).map(|r| dataset.label(r)).collect();
        Ok(InMemory {
            features,
            labels,
            shape: dataset.feature_shape().to_vec(),
            names: dataset.label_names().to_vec(),
        })
    }

    /// The feature matrix.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn feature_shape(&self) -> &[usize] {
        &self.shape
    }
    fn label_names(&self) -> &[String] {
        &self.names
    }
    fn label(&self, row: usize) -> u32 {
        self.labels[row]
    }
    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        let f = self.feature_len();
        out.copy_from_slice(&self.features[start * f..end * f]);
        Ok(())
    }
}

/// Some rows of another dataset, in a given order (a train or validation split).
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    rows: Vec<u32>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset").field("rows", &self.rows.len()).field("of", &self.inner.len()).finish()
    }
}

impl Subset {
    /// Rows `rows` of `inner`; each must be below `inner.len()`.
    pub fn new(inner: Arc<dyn Dataset>, rows: Vec<u32>) -> Result<Self> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= inner.len()) {
            return Err(Error::Invalid {
                what: "subset",
                why: format!("row {r} of a dataset with {} rows", inner.len()),
            });
        }
        Ok(Subset { inner, rows })
    }

    /// The rows of the underlying dataset, in subset order.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn feature_shape(&self) -> &[usize] {
        self.inner.feature_shape()
    }
    fn label_names(&self) -> &[String] {
        self.inner.label_names()
    }
    fn label(&self, row: usize) -> u32 {
        self.inner.label(self.rows[row] as usize)
    }
    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        let f = self.feature_len();
        for (i, dst) in (start..end).zip(out.chunks_exact_mut(f)) {
            self.inner.read_row(self.rows[i] as usize, dst)?;
        }
        Ok(())
    }
}

/// A seeded, stratified split of row indices: for each class, `round(count × fraction)`
/// of its rows (chosen by a seeded shuffle) go to the second part, the rest to the first.
/// Both parts are sorted. With `fraction = 0.2` this is the documented 80/20 train/test
/// split of datasets that ship without a test split.
pub fn stratified_split(labels: &[u32], fraction: f64, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Invalid { what: "split fraction", why: format!("{fraction} is outside [0, 1)") });
    }
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<u32>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i as u32);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        let k = (rows.len() as f64 * fraction).round() as usize;
        second.extend_from_slice(&rows[..k]);
        first.extend_from_slice(&rows[k..]);
    }
    first.sort_unstable();
    second.sort_unstable();
    Ok((first, second))
}
