//! Turning a dataset name into train / validation / test splits ready for a network.
//!
//! - Fashion-MNIST: its own 60000/10000 train/test split; pixels scaled by 1/255.
//! - CSV data (`digits`, `biopsy`, `csv:PATH`): a seeded, stratified 80/20 train/test split
//!   ([`tuneforge_loader::stratified_split`] with the run's seed), then a preprocessing
//!   pipeline fitted **on the training rows only** — median imputation (numeric),
//!   most-frequent imputation (categorical), dropping constant columns, standard scaling,
//!   one-hot encoding (unknown categories at test time encode as all zeros) — and applied to
//!   the test rows. The fitted pipeline is kept so it ships with the model.
//! - Text data (`jsonl:PATH`, or `csv:PATH` with a text column): the same seeded, stratified
//!   80/20 split, then a text pipeline fitted **on the training rows only**
//!   ([`TextPipelineConfig::email`]: e-mail header block stripped and MIME bodies decoded,
//!   HTML removed, lower case, URLs, e-mail addresses and numbers normalised, a word
//!   vocabulary of the words in at least 2 training texts, at most 30000 ids; each text is
//!   its first 800 distinct words; [`TextPipelineConfig::plain`] keeps the headers). Each text becomes
//!   its token ids (`f32`, 0 = padding), the input of the text models
//!   ([`tuneforge_model::ModelSpec::text_preset`]). A word seen only outside the training
//!   rows maps to the unknown id.
//! - Validation, when asked for, is a further seeded stratified hold-out of the training
//!   rows; the test split is never looked at during training.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tuneforge_loader::{
    CsvOptions, DataDirs, Dataset, GzCache, InMemory, Known, Scale, Subset, Table, TextOptions, read_csv, read_text,
    stratified_split,
};
use tuneforge_prep::{
    Columns, FittedPipeline, FittedTextPipeline, Impute, Matrix, PipelineConfig, Scaling, Step, TextPipelineConfig,
    Unknown,
};

use crate::{Error, Result};

/// Where a run's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// A dataset known by name (`fashion-mnist`, `digits`, `biopsy`).
    Known(String),
    /// A CSV file with a header and a label column.
    Csv {
        /// The file.
        path: PathBuf,
        /// The label column's name.
        label: String,
    },
    /// Labelled texts: JSON lines (gzip or plain) or a CSV file with a text column.
    Text {
        /// The file.
        path: PathBuf,
        /// JSON lines or CSV.
        format: TextFormat,
        /// The field (JSON) or column (CSV) holding the text.
        text_field: String,
        /// The field or column holding the label.
        label: String,
        /// Keep e-mail headers (the whole message) instead of the body only.
        #[serde(default)]
        keep_headers: bool,
    },
}

/// The file format of a [`DataSource::Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFormat {
    /// One JSON object per line.
    Jsonl,
    /// A CSV file with a header.
    Csv,
}

/// `, one of its columns: "a", "b", … (the last: --label b)` when the CSV file's header can
/// be read (long headers shortened to their first 5 and last 3 columns); empty otherwise.
fn columns_hint(path: &Path) -> String {
    let Ok(header) = tuneforge_loader::read_csv_header(path, b',') else { return String::new() };
    let Some(last) = header.last() else { return String::new() };
    let quoted = |c: &[String]| c.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    let shown = if header.len() > 8 {
        format!("{}, … {} (of {})", quoted(&header[..5]), quoted(&header[header.len() - 3..]), header.len())
    } else {
        quoted(&header)
    };
    let flag = if last.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) && !last.is_empty() {
        format!("--label {last}")
    } else {
        format!("--label {last:?}")
    };
    format!(", one of its columns: {shown} (the last: {flag})")
}

impl DataSource {
    /// Parses `fashion-mnist`, `digits`, `biopsy` or `csv:PATH` (the label column comes
    /// from `label`, required for CSV files).
    ///
    /// `jsonl:PATH` is a text dataset (text field `text`, label field `label` or `label`'s
    /// value); [`DataSource::with_text`] turns a CSV file into one and sets the text field.
    pub fn parse(text: &str, label: Option<&str>) -> Result<Self> {
        if let Some(path) = text.strip_prefix("jsonl:") {
            return Ok(DataSource::Text {
                path: PathBuf::from(path),
                format: TextFormat::Jsonl,
                text_field: "text".into(),
                label: label.unwrap_or("label").to_string(),
                keep_headers: false,
            });
        }
        if let Some(path) = text.strip_prefix("csv:") {
            let label = label.ok_or_else(|| Error::Config {
                what: "dataset",
                why: format!("{text}: a CSV dataset needs --label COLUMN{}", columns_hint(Path::new(path))),
            })?;
            return Ok(DataSource::Csv { path: PathBuf::from(path), label: label.to_string() });
        }
        match Known::from_name(text) {
            Some(Known::FashionMnistTest) => Err(Error::Config {
                what: "dataset",
                why: "train on fashion-mnist; its test split is used for testing".into(),
            }),
            Some(k) => Ok(DataSource::Known(k.name().to_string())),
            None => Err(Error::Config {
                what: "dataset",
                why: format!("unknown dataset {text:?}; use fashion-mnist, digits, biopsy, csv:PATH or jsonl:PATH"),
            }),
        }
    }

    /// The text options of the command line: `text_field` (`--text`) makes a CSV source
    /// a text one with that column, or names a JSON lines source's text field;
    /// `keep_headers` keeps e-mail headers. Either on a non-text source is an error.
    pub fn with_text(self, text_field: Option<&str>, keep_headers: bool) -> Result<Self> {
        match (self, text_field) {
            (DataSource::Csv { path, label }, Some(field)) => Ok(DataSource::Text {
                path,
                format: TextFormat::Csv,
                text_field: field.to_string(),
                label,
                keep_headers,
            }),
            (DataSource::Text { path, format, text_field, label, .. }, field) => Ok(DataSource::Text {
                path,
                format,
                text_field: field.map_or(text_field, str::to_string),
                label,
                keep_headers,
            }),
            (other, None) if !keep_headers => Ok(other),
            (other, _) => Err(Error::Config {
                what: "dataset",
                why: format!(
                    "{other}: --text and --keep-headers apply to text datasets (jsonl:PATH, or csv:PATH --text COLUMN)"
                ),
            }),
        }
    }

    /// `true` for text datasets.
    pub fn is_text(&self) -> bool {
        matches!(self, DataSource::Text { .. })
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Known(n) => f.write_str(n),
            DataSource::Csv { path, label } => write!(f, "csv:{} (label {label})", path.display()),
            DataSource::Text { path, format, text_field, label, keep_headers } => {
                let kind = if *format == TextFormat::Jsonl { "jsonl" } else { "csv" };
                let headers = if *keep_headers { "headers kept" } else { "e-mail headers stripped" };
                write!(f, "{kind}:{} (text {text_field}, label {label}, {headers})", path.display())
            }
        }
    }
}

/// Splits ready for training. Cloning shares the datasets (they are `Arc`s).
#[derive(Clone)]
pub struct Prepared {
    /// Training rows.
    pub train: Arc<dyn Dataset>,
    /// Validation rows (held out of the training split), if asked for.
    pub val: Option<Arc<dyn Dataset>>,
    /// Test rows.
    pub test: Arc<dyn Dataset>,
    /// Applied to features as batches are built.
    pub scale: Scale,
    /// Shape of one sample as the model sees it.
    pub sample_shape: Vec<usize>,
    /// The preprocessing fitted on the training rows (CSV data).
    pub pipeline: Option<FittedPipeline>,
    /// The text pipeline and vocabulary fitted on the training rows (text data).
    pub text: Option<FittedTextPipeline>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("train", &self.train.len())
            .field("val", &self.val.as_ref().map(|v| v.len()))
            .field("test", &self.test.len())
            .field("sample_shape", &self.sample_shape)
            .finish()
    }
}

/// The default preprocessing of CSV data (see the module docs).
pub fn default_pipeline() -> PipelineConfig {
    PipelineConfig {
        steps: vec![
            Step::Impute { columns: Columns::All, strategy: Impute::Median },
            Step::Impute { columns: Columns::All, strategy: Impute::MostFrequent },
            Step::DropConstant { columns: Columns::All },
            Step::Scale { columns: Columns::All, method: Scaling::Standard },
            Step::OneHot { columns: Columns::All, unknown: Unknown::Ignore },
        ],
    }
}

/// Loads `source` and splits it; `val_fraction` of the training rows are held out.
pub fn prepare(
    source: &DataSource,
    dirs: &DataDirs,
    cache: &GzCache,
    val_fraction: f64,
    seed: u64,
) -> Result<Prepared> {
    let mut text = None;
    let (train, test, scale, pipeline, sample_shape): (Arc<dyn Dataset>, Arc<dyn Dataset>, Scale, _, Vec<usize>) =
        match source {
            DataSource::Text { path, format, text_field, label, keep_headers } => {
                let options = TextOptions {
                    format: match format {
                        TextFormat::Jsonl => tuneforge_loader::TextFormat::Jsonl,
                        TextFormat::Csv => tuneforge_loader::TextFormat::Csv,
                    },
                    text_field: text_field.clone(),
                    label_field: label.clone(),
                    labels: tuneforge_loader::Labels::Required,
                };
                let config = if *keep_headers { TextPipelineConfig::plain() } else { TextPipelineConfig::email() };
                let (tr, te, fitted) = prepare_text(path, &options, &config, seed)?;
                let shape = vec![fitted.max_len()];
                text = Some(fitted);
                (tr, te, Scale::IDENTITY, None, shape)
            }
            DataSource::Known(name) if name.starts_with("fashion-mnist") => {
                let train = dirs.open(Known::FashionMnistTrain, cache)?;
                let test = dirs.open(Known::FashionMnistTest, cache)?;
                let shape = vec![1, 28, 28];
                (train, test, Scale::divide(255.0), None, shape)
            }
            DataSource::Known(name) => {
                let known = Known::from_name(name)
                    .ok_or_else(|| Error::Config { what: "dataset", why: format!("unknown dataset {name:?}") })?;
                let path = dirs.locate(known)?.remove(0);
                let opts = known.csv_options().expect("known CSV datasets have options");
                let (tr, te, p, shape) = prepare_csv(&path, &opts, seed)?;
                (tr, te, Scale::IDENTITY, Some(p), shape)
            }
            DataSource::Csv { path, label } => {
                let (tr, te, p, shape) = prepare_csv(path, &CsvOptions::with_label(label), seed)?;
                (tr, te, Scale::IDENTITY, Some(p), shape)
            }
        };
    let (train, val) = if val_fraction > 0.0 {
        let labels: Vec<u32> = (0..train.len()).map(|r| train.label(r)).collect();
        let (fit_rows, val_rows) = stratified_split(&labels, val_fraction, seed ^ 0x005E_ED0F_0A11)?;
        let fit: Arc<dyn Dataset> = Arc::new(Subset::new(train.clone(), fit_rows)?);
        let val: Arc<dyn Dataset> = Arc::new(Subset::new(train, val_rows)?);
        (fit, Some(val))
    } else {
        (train, None)
    };
    Ok(Prepared { train, val, test, scale, sample_shape, pipeline, text })
}

type TextSplits = (Arc<dyn Dataset>, Arc<dyn Dataset>, FittedTextPipeline);

fn prepare_text(
    path: &std::path::Path,
    options: &TextOptions,
    config: &TextPipelineConfig,
    seed: u64,
) -> Result<TextSplits> {
    let data = read_text(path, options)?;
    let (train_rows, test_rows) = stratified_split(&data.labels, 0.2, seed)?;
    let texts = |rows: &[u32]| rows.iter().map(|&r| data.texts[r as usize].as_str()).collect::<Vec<_>>();
    let (train_texts, test_texts) = (texts(&train_rows), texts(&test_rows));
    let (fitted, report) = config.fit(&train_texts)?;
    tracing::info!(%report, "text pipeline fitted on {} training rows", train_rows.len());
    let to_dataset = |texts: &[&str], rows: &[u32]| -> Result<InMemory> {
        let labels: Vec<u32> = rows.iter().map(|&r| data.labels[r as usize]).collect();
        Ok(InMemory::new(fitted.encode_all(texts), labels, vec![fitted.max_len()], data.label_names.clone())?)
    };
    let train = to_dataset(&train_texts, &train_rows)?;
    let test = to_dataset(&test_texts, &test_rows)?;
    Ok((Arc::new(train), Arc::new(test), fitted))
}

/// The preprocessed table `m` as `f32`, the network's type. A value so far from the others
/// that it leaves f32 after scaling (it would make every loss or output NaN) is an error
/// naming `path`, the value's data row (`data_row` of its row in the table transformed) and
/// its column.
pub(crate) fn f32_features(path: &std::path::Path, m: &Matrix, data_row: impl Fn(usize) -> usize) -> Result<Vec<f32>> {
    let features: Vec<f32> = m.values.iter().map(|&v| v as f32).collect();
    if let Some(at) = features.iter().position(|v| !v.is_finite()) {
        let width = m.columns.len();
        return Err(Error::Input {
            path: path.to_path_buf(),
            why: format!(
                "data row {} (0-based): column {} is {:e} after preprocessing, beyond what the network takes (f32); \
                 a value far from the column's training values (in this row or in the training rows: an outlier, \
                 a unit error) does this",
                data_row(m.rows[at / width]),
                m.columns[at % width],
                m.values[at]
            ),
        });
    }
    Ok(features)
}

type CsvSplits = (Arc<dyn Dataset>, Arc<dyn Dataset>, FittedPipeline, Vec<usize>);

fn prepare_csv(path: &std::path::Path, opts: &CsvOptions, seed: u64) -> Result<CsvSplits> {
    let data = read_csv(path, opts)?;
    let (train_rows, test_rows) = stratified_split(&data.labels, 0.2, seed)?;
    let as_usize = |rows: &[u32]| rows.iter().map(|&r| r as usize).collect::<Vec<_>>();
    let (train_rows, test_rows) = (as_usize(&train_rows), as_usize(&test_rows));
    let train_table: Table = data.table.select_rows(&train_rows);
    let test_table: Table = data.table.select_rows(&test_rows);
    let (pipeline, report) = default_pipeline().fit(&train_table)?;
    tracing::info!(%report, "preprocessing fitted on {} training rows", train_rows.len());
    let names = data.label_names.clone();
    let to_dataset = |table: &Table, rows: &[usize]| -> Result<InMemory> {
        let (m, _) = pipeline.transform(table)?;
        let labels: Vec<u32> = m.rows.iter().map(|&r| data.labels[rows[r]]).collect();
        let features = f32_features(path, &m, |r| rows[r])?;
        Ok(InMemory::new(features, labels, vec![m.columns.len()], names.clone())?)
    };
    let train = to_dataset(&train_table, &train_rows)?;
    let test = to_dataset(&test_table, &test_rows)?;
    let shape = train.feature_shape().to_vec();
    Ok((Arc::new(train), Arc::new(test), pipeline, shape))
}
