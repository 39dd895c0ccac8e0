//! Applying a model that [`train`](crate::run::train) or [`tune`](crate::tune::tune) wrote to
//! new data (`cargo xtask predict`).
//!
//! Both write, beside `model.safetensors` (+ its spec) and, for CSV and text data, `prep.json`
//! (the preprocessing fitted on the training rows), a [`Manifest`] in `predictor.json`: what
//! kind of rows the model reads, the training data's label column (or field) and text field,
//! the classes in the order of the model's outputs, and the pixel scaling. [`Predictor::load`]
//! reads the three back; [`Predictor::read`] reads rows in the form the model was trained on
//! (with their labels when the file has the label column or field) and applies the fitted
//! preprocessing; [`Predictor::predict`] gives each row's class and class probabilities.
//!
//! - **Tables** (`csv:PATH`, `digits`, `biopsy`): the columns are found by name (order and
//!   extra columns do not matter; a missing one is an error naming it) and read with the kinds
//!   they had in training; missing values are imputed as in training, and a category never
//!   seen in training encodes as all zeros.
//! - **Text** (`jsonl:PATH`, or `csv:PATH` with the training's text column): cleaned and
//!   encoded with the training vocabulary; a word it does not hold is the unknown id.
//! - **Images** (`fashion-mnist-test`, `fashion-mnist`, or `idx:PATH`, an IDX image file
//!   without labels): the pixels scaled as in training.
//!
//! A label that is not one of the model's classes is an error naming the row, and so is a row
//! whose values are so far outside the training data that a feature or the model's outputs
//! leave f32's range (no class can be told; none is made up).
//!
//! ```
//! use candle_core::Device;
//! use tuneforge_agent::data::DataSource;
//! use tuneforge_agent::predict::{Input, Predictor};
//! use tuneforge_agent::run::{RunConfig, train};
//! use tuneforge_loader::{DataDirs, GzCache};
//! use tuneforge_monitor::MonitorConfig;
//! use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig};
//!
//! # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! let dirs = DataDirs::new(vec![root.join("datasets")]);
//! let (cache, out) = (GzCache::default_location(), tempfile::tempdir().unwrap());
//! let config = RunConfig {
//!     data: DataSource::parse("biopsy", None)?,
//!     model: "mlp:16".into(),
//!     epochs: 5,
//!     batch_size: 32,
//!     optimizer: OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..Default::default() }),
//!     schedule: ScheduleConfig::Constant,
//!     seed: 0,
//!     clip_norm: None,
//!     val_fraction: 0.0,
//!     snapshot_every: 100,
//!     inject_nan_at: None,
//!     patience: None,
//! };
//! train(config, MonitorConfig::default(), &dirs, &cache, &Device::Cpu, out.path(), &mut |_| {})?;
//!
//! // Two new biopsies, columns in another order, no class column, one value missing.
//! let new = out.path().join("new.csv");
//! std::fs::write(&new, "V9,V8,V7,V6,V5,V4,V3,V2,V1\n1,1,3,1,2,1,1,1,5\n3,9,7,10,6,8,10,10,10\n").unwrap();
//! let predictor = Predictor::load(out.path(), &Device::Cpu)?;
//! let rows = predictor.read(&Input::parse(&format!("csv:{}", new.display()))?, &dirs, &cache)?;
//! let predictions = predictor.predict(&rows)?;
//! let names: Vec<&str> = predictions.predicted.iter().map(|&c| predictor.classes()[c as usize].as_str()).collect();
//! assert_eq!(names, ["benign", "malignant"]);
//! # Ok::<(), tuneforge_agent::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tuneforge_loader::{
    CsvData, CsvOptions, DataDirs, Dataset, GzCache, IdxReader, Known, Labels, Scale, TextFormat, TextOptions,
    read_csv, read_text,
};
use tuneforge_model::{Model, argmax, on_pool};
use tuneforge_prep::{ColumnKind, FittedPipeline, FittedTextPipeline};

use crate::data::{DataSource, Prepared};
use crate::run::write_atomic;
use crate::{Error, Result};

/// The manifest's file name, beside `model.safetensors`.
pub const MANIFEST: &str = "predictor.json";
/// The fitted preprocessing's file name (CSV and text data).
pub const PREP: &str = "prep.json";
/// The model's file name (its spec is `model.safetensors.json`).
pub const MODEL: &str = "model.safetensors";

/// The manifest format this version writes and reads.
const FORMAT: u32 = 1;

/// Rows per forward pass of [`Predictor::predict`]. Its kernels may round a row's outputs
/// differently in a batch of another size, so chunks of a multiple of it (from the input's
/// first row) give the same probabilities, bit for bit, as one read.
pub const BATCH: usize = 1000;

/// The most bytes of text in one chunk of [`Predictor::read_chunks`] (past its first text):
/// a file of very long texts is read in bounded memory too.
pub const TEXT_CHUNK_BYTES: usize = 64 << 20;

/// What a saved model needs to be applied to new rows (`predictor.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format (1).
    pub format: u32,
    /// What rows the model reads.
    pub input: InputKind,
    /// The classes, in the order of the model's outputs (the training data's sorted labels).
    pub classes: Vec<String>,
    /// The training data's label column (tables, CSV text) or field (JSON lines); `None`
    /// for images.
    pub label: Option<String>,
    /// The text column or field (text data).
    pub text_field: Option<String>,
    /// Applied to the features after reading, before the model: `x · mul + add` (images:
    /// 1/255).
    pub scale: [f32; 2],
    /// The training data, as the run named it.
    pub trained_on: String,
}

/// The rows a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Table rows through a fitted table pipeline (`prep.json`).
    Table,
    /// Texts through a fitted text pipeline and vocabulary (`prep.json`).
    Text,
    /// Images (IDX), scaled.
    Image,
}

impl Manifest {
    /// The manifest of a model trained on `data` from `source`.
    pub fn of(source: &DataSource, data: &Prepared) -> Manifest {
        let (input, label, text_field) = match source {
            DataSource::Text { text_field, label, .. } => {
                (InputKind::Text, Some(label.clone()), Some(text_field.clone()))
            }
            DataSource::Csv { label, .. } => (InputKind::Table, Some(label.clone()), None),
            DataSource::Known(name) => {
                let label = Known::from_name(name).and_then(Known::csv_options).and_then(|o| o.label);
                let input = if label.is_some() { InputKind::Table } else { InputKind::Image };
                (input, label, None)
            }
        };
        Manifest {
            format: FORMAT,
            input,
            classes: data.train.label_names().to_vec(),
            label,
            text_field,
            scale: [data.scale.mul, data.scale.add],
            trained_on: source.to_string(),
        }
    }

    /// Writes the manifest as `dir/predictor.json` (write-then-rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a manifest serialises");
        write_atomic(&dir.join(MANIFEST), json.as_bytes())
    }
}

/// Where rows to predict come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A CSV file: table rows, or texts in the training's text column.
    Csv(PathBuf),
    /// JSON lines (gzip or plain) of texts.
    Jsonl(PathBuf),
    /// An IDX image file (raw or gz), unlabelled.
    Idx(PathBuf),
    /// A dataset known by name (`digits`, `biopsy`, `fashion-mnist-test`, ...), all its rows.
    Known(Known),
}

impl Input {
    /// Parses `csv:PATH`, `jsonl:PATH`, `idx:PATH` or a known dataset's name.
    pub fn parse(text: &str) -> Result<Input> {
        if let Some(p) = text.strip_prefix("csv:") {
            return Ok(Input::Csv(p.into()));
        }
        if let Some(p) = text.strip_prefix("jsonl:") {
            return Ok(Input::Jsonl(p.into()));
        }
        if let Some(p) = text.strip_prefix("idx:") {
            return Ok(Input::Idx(p.into()));
        }
        Known::from_name(text).map(Input::Known).ok_or_else(|| Error::Config {
            what: "input",
            why: format!(
                "unknown input {text:?}; use csv:PATH, jsonl:PATH, idx:PATH, digits, biopsy, fashion-mnist-test or fashion-mnist"
            ),
        })
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Csv(p) => write!(f, "csv:{}", p.display()),
            Input::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
            Input::Idx(p) => write!(f, "idx:{}", p.display()),
            Input::Known(k) => f.write_str(k.name()),
        }
    }
}

/// Rows read and preprocessed for a model ([`Predictor::read`]).
#[derive(Debug, Clone)]
pub struct Rows {
    /// Each row's index among the data rows of the input (0-based, in file order).
    pub index: Vec<usize>,
    /// The model's inputs, row-major, scaled.
    pub features: Vec<f32>,
    /// Each row's class (an index into [`Predictor::classes`]) when the input is labelled.
    pub labels: Option<Vec<u32>>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// An image input opened to read rows from: a known dataset (mapped) or an IDX file (read a
/// range of rows at a time).
enum Images {
    Known { name: PathBuf, data: std::sync::Arc<dyn Dataset> },
    Idx(IdxReader),
}

impl Images {
    fn len(&self) -> usize {
        match self {
            Images::Known { data, .. } => data.len(),
            Images::Idx(reader) => reader.len(),
        }
    }
}

/// The rows of an input a chunk at a time ([`Predictor::read_chunks`]); after an error
/// nothing more is read.
pub struct RowChunks<'a> {
    chunks: Box<dyn Iterator<Item = Result<Rows>> + 'a>,
    failed: bool,
}

impl std::fmt::Debug for RowChunks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowChunks").field("failed", &self.failed).finish_non_exhaustive()
    }
}

impl Iterator for RowChunks<'_> {
    type Item = Result<Rows>;

    fn next(&mut self) -> Option<Result<Rows>> {
        if self.failed {
            return None;
        }
        let rows = self.chunks.next()?;
        self.failed = rows.is_err();
        Some(rows)
    }
}

/// A model's predictions for [`Rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Each row's most probable class (an index into [`Predictor::classes`]).
    pub predicted: Vec<u32>,
    /// Each row's class probabilities (softmax of the outputs), row-major, one per class.
    pub probabilities: Vec<f32>,
}

/// A saved model with its preprocessing, ready to predict.
#[derive(Debug)]
pub struct Predictor {
    dir: PathBuf,
    manifest: Manifest,
    model: Model,
    device: Device,
    table: Option<FittedPipeline>,
    text: Option<FittedTextPipeline>,
}

impl Predictor {
    /// Loads `dir/predictor.json`, `dir/model.safetensors` (+ spec) and, for tables and
    /// text, `dir/prep.json` — the output folder of `train` or `tune`.
    pub fn load(dir: &Path, device: &Device) -> Result<Predictor> {
        let path = dir.join(MANIFEST);
        let json = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::Input {
                path: path.clone(),
                why: format!(
                    "not found: {} holds no model written by `train` or `tune` (or one written before \
                     predictor.json was; train or tune it again)",
                    dir.display()
                ),
            },
            _ => Error::Io { path: path.clone(), source },
        })?;
        let manifest: Manifest =
            serde_json::from_str(&json).map_err(|e| Error::Input { path: path.clone(), why: e.to_string() })?;
        if manifest.format != FORMAT {
            return Err(Error::Input {
                path,
                why: format!("format {} (this version reads {FORMAT})", manifest.format),
            });
        }
        let model = Model::load(&dir.join(MODEL), device)?;
        let classes = model.spec().classes();
        if classes != manifest.classes.len() {
            return Err(Error::Input {
                path,
                why: format!("{} classes listed, the model has {classes} outputs", manifest.classes.len()),
            });
        }
        let prep = || {
            let path = dir.join(PREP);
            let json = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
            Ok::<_, Error>((path, json))
        };
        let (mut table, mut text) = (None, None);
        match manifest.input {
            InputKind::Table => {
                let (path, json) = prep()?;
                let p = FittedPipeline::from_json(&json)
                    .map_err(|e| Error::Input { path: path.clone(), why: e.to_string() })?;
                let width = p.output_columns().len();
                if [width] != model.spec().input.as_slice() {
                    return Err(Error::Input {
                        path,
                        why: format!("{width} columns out, the model reads {:?}", model.spec().input),
                    });
                }
                table = Some(p);
            }
            InputKind::Text => {
                let (path, json) = prep()?;
                let t = FittedTextPipeline::from_json(&json)
                    .map_err(|e| Error::Input { path: path.clone(), why: e.to_string() })?;
                if [t.max_len()] != model.spec().input.as_slice() {
                    return Err(Error::Input {
                        path,
                        why: format!("texts of {} ids, the model reads {:?}", t.max_len(), model.spec().input),
                    });
                }
                text = Some(t);
            }
            InputKind::Image => {}
        }
        Ok(Predictor { dir: dir.to_path_buf(), manifest, model, device: device.clone(), table, text })
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `predictor.json` says.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The classes, in the order of the model's outputs.
    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Reads `input` (known datasets from `dirs`; `.gz` files inflated into `cache`) and
    /// preprocesses it for the model.
    pub fn read(&self, input: &Input, dirs: &DataDirs, cache: &GzCache) -> Result<Rows> {
        if let Some((path, options)) = self.table_input(input, dirs)? {
            return self.scaled(self.table_rows(&path, read_csv(&path, &options)?, 0)?);
        }
        if let Some((path, format)) = self.text_input(input) {
            return self.scaled(self.text_rows(path, &read_text(path, &self.text_options(format))?, 0)?);
        }
        let mut images = self.image_input(input, dirs, cache)?;
        let n = images.len();
        self.scaled(self.image_rows(&mut images, 0, n)?)
    }

    /// [`read`](Self::read) `rows` rows at a time (at least one): a CSV table, texts (JSON
    /// lines, a CSV text column; fewer once a chunk holds [`TEXT_CHUNK_BYTES`] of text) or
    /// images, so that an input larger than memory can be predicted. Each chunk's [`Rows::index`] counts the rows of the whole input, and errors
    /// name rows and lines in it. The input is opened (and its header checked) now.
    pub fn read_chunks(&self, input: &Input, dirs: &DataDirs, cache: &GzCache, rows: usize) -> Result<RowChunks<'_>> {
        // Each chunk's rows, numbered from `base`, its first row's in the whole input.
        let mut base = 0;
        let chunks: Box<dyn Iterator<Item = Result<Rows>> + '_> =
            if let Some((path, options)) = self.table_input(input, dirs)? {
                let chunks = tuneforge_loader::read_csv_chunks(&path, &options, rows)?;
                Box::new(chunks.map(move |data| {
                    let (data, start) = (data?, base);
                    base += data.table.n_rows;
                    self.scaled(self.table_rows(&path, data, start)?)
                }))
            } else if let Some((path, format)) = self.text_input(input) {
                let chunks = tuneforge_loader::read_text_chunks(path, &self.text_options(format), rows)?
                    .max_bytes(TEXT_CHUNK_BYTES);
                let path = path.clone();
                Box::new(chunks.map(move |data| {
                    let (data, start) = (data?, base);
                    base += data.len();
                    self.scaled(self.text_rows(&path, &data, start)?)
                }))
            } else {
                let mut images = self.image_input(input, dirs, cache)?;
                let (n, rows) = (images.len(), rows.max(1));
                // An input without rows is one empty chunk, as it is one empty read.
                Box::new(
                    (0..n.max(1)).step_by(rows).map(move |start| {
                        self.scaled(self.image_rows(&mut images, start, start.saturating_add(rows))?)
                    }),
                )
            };
        Ok(RowChunks { chunks, failed: false })
    }

    /// For an image model and an image input: the input opened to read rows from, its
    /// samples' shape checked; otherwise the error that says what the model reads.
    fn image_input(&self, input: &Input, dirs: &DataDirs, cache: &GzCache) -> Result<Images> {
        let images = match (self.manifest.input, input) {
            (InputKind::Image, Input::Known(k)) if k.csv_options().is_none() => {
                Images::Known { name: PathBuf::from(k.name()), data: dirs.open(*k, cache)? }
            }
            (InputKind::Image, Input::Idx(path)) => {
                Images::Idx(IdxReader::open(path, tuneforge_loader::idx::IMAGES_MAGIC, cache)?)
            }
            (kind, input) => {
                let wants = match kind {
                    InputKind::Table => "table rows (csv:PATH, digits or biopsy)",
                    InputKind::Text => "texts (jsonl:PATH, or csv:PATH with its text column)",
                    InputKind::Image => "images (fashion-mnist-test, fashion-mnist or idx:PATH)",
                };
                return Err(Error::Config {
                    what: "input",
                    why: format!("{input}: the model in {} reads {wants}", self.dir.display()),
                });
            }
        };
        match &images {
            Images::Known { name, data } => self.check_shape(name, data.feature_shape())?,
            Images::Idx(reader) => self.check_shape(reader.name(), &reader.dims()[1..])?,
        }
        Ok(images)
    }

    /// Rows `start..end` of `images` (`end` clamped to its length), not yet scaled.
    fn image_rows(&self, images: &mut Images, start: usize, end: usize) -> Result<Rows> {
        let end = end.min(images.len());
        let index = (start..end).collect();
        match images {
            Images::Known { name, data } => {
                let labels = (start..end).map(|r| data.label(r)).collect::<Vec<_>>();
                let labels = self.classes_of(name, data.label_names(), &labels, start)?;
                let mut features = vec![0f32; (end - start) * data.feature_len()];
                data.read_rows(start, end, &mut features)?;
                Ok(Rows { index, features, labels: Some(labels) })
            }
            Images::Idx(reader) => {
                let mut bytes = Vec::new();
                reader.read_rows(start, end, &mut bytes)?;
                Ok(Rows { index, features: bytes.into_iter().map(f32::from).collect(), labels: None })
            }
        }
    }

    /// `rows` with the model's input scaling applied.
    fn scaled(&self, mut rows: Rows) -> Result<Rows> {
        Scale { mul: self.manifest.scale[0], add: self.manifest.scale[1] }.apply(&mut rows.features);
        Ok(rows)
    }

    /// For a text model and a text input: its file and format; `None` for other inputs.
    fn text_input<'i>(&self, input: &'i Input) -> Option<(&'i PathBuf, TextFormat)> {
        match (self.manifest.input, input) {
            (InputKind::Text, Input::Csv(path)) => Some((path, TextFormat::Csv)),
            (InputKind::Text, Input::Jsonl(path)) => Some((path, TextFormat::Jsonl)),
            _ => None,
        }
    }

    /// For a table model and a table input: its file and the options that read the
    /// training's columns of it; `None` for other inputs.
    fn table_input(&self, input: &Input, dirs: &DataDirs) -> Result<Option<(PathBuf, CsvOptions)>> {
        let (path, options) = match (self.manifest.input, input) {
            (InputKind::Table, Input::Csv(path)) => (path.clone(), CsvOptions::default()),
            (InputKind::Table, Input::Known(k)) if k.csv_options().is_some() => {
                (dirs.locate(*k)?.remove(0), k.csv_options().unwrap_or_default())
            }
            _ => return Ok(None),
        };
        let options = self.table_options(&path, options)?;
        Ok(Some((path, options)))
    }

    fn check_shape(&self, path: &Path, shape: &[usize]) -> Result<()> {
        let input = &self.model.spec().input;
        if shape.iter().product::<usize>() != input.iter().product::<usize>() {
            return Err(Error::Input {
                path: path.to_path_buf(),
                why: format!("samples of shape {shape:?}; the model reads {input:?}"),
            });
        }
        Ok(())
    }

    /// `labels` (indices into `names`, the input's own sorted labels) as indices into the
    /// model's classes; a label the model does not know is an error naming its row (the
    /// first label being data row `base`).
    fn classes_of(&self, path: &Path, names: &[String], labels: &[u32], base: usize) -> Result<Vec<u32>> {
        let classes = &self.manifest.classes;
        let map: Vec<Option<u32>> =
            names.iter().map(|n| classes.iter().position(|c| c == n).map(|c| c as u32)).collect();
        labels
            .iter()
            .enumerate()
            .map(|(row, &l)| {
                map[l as usize].ok_or_else(|| Error::Input {
                    path: path.to_path_buf(),
                    why: format!(
                        "data row {} (0-based): label {:?} is not one of the model's classes {:?}",
                        base + row,
                        names[l as usize],
                        classes
                    ),
                })
            })
            .collect()
    }

    /// `options` set to read the training's columns of the CSV file at `path`, with the
    /// kinds they had, and its label column if it has one.
    fn table_options(&self, path: &Path, mut options: CsvOptions) -> Result<CsvOptions> {
        let pipeline = self.table.as_ref().expect("a table model has a table pipeline");
        let header = tuneforge_loader::read_csv_header(path, options.delimiter)?;
        let inputs = pipeline.inputs();
        let label = self.manifest.label.clone().filter(|l| header.contains(l));
        // Only the training's columns are read, with the kinds they had.
        options.drop = header
            .iter()
            .enumerate()
            .filter(|&(i, h)| {
                !(i == 0 && h.is_empty()) && Some(h) != label.as_ref() && !inputs.iter().any(|c| &c.name == h)
            })
            .map(|(_, h)| h.clone())
            .collect();
        let present = |kind: ColumnKind| {
            inputs.iter().filter(|c| c.kind == kind && header.contains(&c.name)).map(|c| c.name.clone()).collect()
        };
        options.numeric = present(ColumnKind::Numeric);
        options.categorical = present(ColumnKind::Categorical);
        options.label = label;
        Ok(options)
    }

    /// The rows of `data`, read from `path` starting at data row `base`, preprocessed (not
    /// scaled yet).
    fn table_rows(&self, path: &Path, data: CsvData, base: usize) -> Result<Rows> {
        let pipeline = self.table.as_ref().expect("a table model has a table pipeline");
        let (m, _) = pipeline
            .transform(&data.table)
            .map_err(|e| Error::Input { path: path.to_path_buf(), why: format!("preprocessing: {e}") })?;
        let labels = match data.label_column {
            Some(_) => {
                let all = self.classes_of(path, &data.label_names, &data.labels, base)?;
                Some(m.rows.iter().map(|&r| all[r]).collect())
            }
            None => None,
        };
        let features = crate::data::f32_features(path, &m, |r| base + r)?;
        Ok(Rows { features, index: m.rows.iter().map(|&r| base + r).collect(), labels })
    }

    /// How the training's texts are found in an input: its text field, and its label field
    /// when there is one.
    fn text_options(&self, format: TextFormat) -> TextOptions {
        TextOptions {
            format,
            text_field: self.manifest.text_field.clone().unwrap_or_else(|| "text".into()),
            label_field: self.manifest.label.clone().unwrap_or_else(|| "label".into()),
            labels: Labels::IfPresent,
        }
    }

    /// The texts of `data`, read from `path` starting at data row `base`, encoded (not
    /// scaled yet).
    fn text_rows(&self, path: &Path, data: &tuneforge_loader::TextData, base: usize) -> Result<Rows> {
        let pipeline = self.text.as_ref().expect("a text model has a text pipeline");
        let labels = match data.labelled {
            true => Some(self.classes_of(path, &data.label_names, &data.labels, base)?),
            false => None,
        };
        Ok(Rows { index: (base..base + data.len()).collect(), features: pipeline.encode_all(&data.texts), labels })
    }

    /// The class and class probabilities of every row.
    pub fn predict(&self, rows: &Rows) -> Result<Predictions> {
        let n = rows.len();
        let width: usize = self.model.spec().input.iter().product();
        if rows.features.len() != n * width {
            return Err(Error::Config {
                what: "rows",
                why: format!("{} values for {n} rows of {width}", rows.features.len()),
            });
        }
        let classes = self.classes().len();
        let (mut predicted, mut probabilities) = (Vec::with_capacity(n), Vec::with_capacity(n * classes));
        on_pool(self.model.hands_over(BATCH.min(n.max(1))), || -> Result<()> {
            for start in (0..n).step_by(BATCH) {
                let end = (start + BATCH).min(n);
                let mut shape = vec![end - start];
                shape.extend_from_slice(&self.model.spec().input);
                let x = Tensor::from_slice(&rows.features[start * width..end * width], shape, &self.device)?;
                let logits = self.model.forward(&x)?;
                predicted.extend(argmax(&logits)?);
                for (i, row) in logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?.into_iter().enumerate() {
                    // Inputs far outside the training data can overflow the model's outputs:
                    // no class can be told, so no prediction is made up.
                    if row.iter().any(|z| !z.is_finite()) {
                        return Err(Error::Config {
                            what: "rows",
                            why: format!(
                                "data row {} (0-based): the model's outputs are not finite ({row:?}); its \
                                 inputs are far outside what it was trained on",
                                rows.index[start + i]
                            ),
                        });
                    }
                    softmax_into(&row, &mut probabilities);
                }
            }
            Ok(())
        })?;
        Ok(Predictions { predicted, probabilities })
    }
}

/// Appends the softmax of `logits`.
fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let start = out.len();
    out.extend(logits.iter().map(|&z| (z - max).exp()));
    let sum: f32 = out[start..].iter().sum();
    for p in &mut out[start..] {
        *p /= sum;
    }
}

/// The rows and predictions as CSV: `index`, `label` (when labelled), `predicted` (class
/// names), then with `probabilities` one `p_<class>` column per class.
pub fn predictions_csv(classes: &[String], rows: &Rows, predictions: &Predictions, probabilities: bool) -> String {
    let mut w = PredictionWriter::new(Vec::new(), classes, probabilities);
    w.write(rows, predictions).expect("CSV into memory");
    String::from_utf8(w.finish().expect("CSV into memory")).expect("CSV of UTF-8 strings")
}

/// [`predictions_csv`] written a chunk of rows at a time into `W` (a file, standard output),
/// for inputs read with [`Predictor::read_chunks`]. The header comes with the first chunk
/// (whose [`Rows::labels`] say whether there is a `label` column), or at
/// [`finish`](Self::finish) if there was none.
#[derive(Debug)]
pub struct PredictionWriter<W: std::io::Write> {
    w: csv::Writer<W>,
    classes: Vec<String>,
    probabilities: bool,
    header: bool,
    record: Vec<String>,
}

impl<W: std::io::Write> PredictionWriter<W> {
    /// A writer of predictions among `classes` into `out`.
    pub fn new(out: W, classes: &[String], probabilities: bool) -> PredictionWriter<W> {
        PredictionWriter {
            w: csv::Writer::from_writer(out),
            classes: classes.to_vec(),
            probabilities,
            header: false,
            record: Vec::new(),
        }
    }

    fn write_header(&mut self, labelled: bool) -> std::io::Result<()> {
        self.header = true;
        let mut header = vec!["index".to_string()];
        if labelled {
            header.push("label".into());
        }
        header.push("predicted".into());
        if self.probabilities {
            header.extend(self.classes.iter().map(|c| format!("p_{c}")));
        }
        self.w.write_record(&header).map_err(io)
    }

    /// Writes the rows of one chunk and their predictions.
    pub fn write(&mut self, rows: &Rows, predictions: &Predictions) -> std::io::Result<()> {
        if !self.header {
            self.write_header(rows.labels.is_some())?;
        }
        let k = self.classes.len();
        for (i, (&index, &p)) in rows.index.iter().zip(&predictions.predicted).enumerate() {
            let record = &mut self.record;
            record.clear();
            record.push(index.to_string());
            if let Some(labels) = &rows.labels {
                record.push(self.classes[labels[i] as usize].clone());
            }
            record.push(self.classes[p as usize].clone());
            if self.probabilities {
                record.extend(predictions.probabilities[i * k..(i + 1) * k].iter().map(|p| format!("{p:.6}")));
            }
            self.w.write_record(&*record).map_err(io)?;
        }
        Ok(())
    }

    /// Flushes what is buffered and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.header {
            self.write_header(false)?;
        }
        self.w.into_inner().map_err(|e| e.into_error())
    }
}

/// A CSV writer's error as the I/O error it is (a closed pipe stays `BrokenPipe`).
fn io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}
