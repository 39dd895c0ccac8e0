//! `tuneforge-prep`: preprocessing that is fitted on training rows only and applied to any
//! table or batch — missing values, outliers, scaling, one-hot encoding — and that
//! serialises with the model it feeds.
//!
//! # Central types
//!
//! - [`PipelineConfig`]: a list of [`Step`]s as serde data (JSON-friendly), each with a
//!   column selection ([`Columns`]): drop rows with missing values; impute (mean, median,
//!   most-frequent, constant); clip outliers (IQR, z-score); scale (standard, min-max,
//!   max-abs, fixed divisor such as `/255`); one-hot encode; drop constant columns.
//! - [`PipelineConfig::fit`]`(&train)` → ([`FittedPipeline`], [`FitReport`]). The input is
//!   the loader's [`Table`](tuneforge_loader::Table).
//! - [`FittedPipeline::transform`]`(&table)` → ([`Matrix`], [`TransformReport`]): row-major
//!   `f64` values with column names (one-hot columns are named `column=category`, e.g.
//!   `V1=3`) and the input row index of each output row — ready for a network.
//! - [`FittedPipeline::row_transform`] → [`RowTransform`]: the batch form, for numeric-only
//!   pipelines on row-major `&[f32]`/`&[f64]` rows of a known width (in place when no column
//!   is dropped).
//!
//! # Key decisions
//!
//! **Fit on training rows only, structurally.** `fit` is the only function that learns, and
//! it takes one table: the training rows. `transform` takes `&self` and cannot change a
//! parameter; it transforms each row independently, so a row's output depends only on the
//! row and the fitted parameters, never on the validation or test rows beside it. Fitting and
//! transforming run the same step code, so the training output and a later transform of the
//! same rows agree exactly.
//!
//! **Report, don't hide.** Dirty data is normal here, so what a pipeline handles is counted,
//! not failed on and not swallowed: missing values per column, values filled and clipped,
//! rows and columns dropped with their reasons, and missing values no step handled
//! ([`FitReport`], [`TransformReport`]). What it cannot handle — an empty table, an
//! all-missing column, a step naming an absent column, a transform table whose columns
//! differ from training — is a typed [`Error`] naming the column. Nothing panics on user
//! data.
//!
//! **scikit-learn semantics**, checked against fixtures made by
//! `scripts/fixtures/prep.py`: population standard deviation (ddof = 0); zero-variance,
//! zero-range or all-zero columns get scale 1; medians of even counts average the middle
//! two; most-frequent ties go to the smallest value; statistics ignore missing values.
//! Deliberate differences: an all-missing training column is an error (scikit-learn's
//! `SimpleImputer` drops it silently); a missing value reaching one-hot encoding becomes all
//! zeros and is reported (scikit-learn makes `NaN` a category); one-hot columns are named
//! `V1=3` (scikit-learn: `V1_3`).
//!
//! # Example
//!
//! ```
//! use tuneforge_loader::{read_csv_from, CsvOptions};
//! use tuneforge_prep::PipelineConfig;
//!
//! let train = "size,colour\n1,red\n3,NA\nNA,blue\n5,red\n";
//! let test = "size,colour\n7,blue\nNA,red\n";
//! let read = |text: &str| read_csv_from("inline.csv".as_ref(), text.as_bytes(), &CsvOptions::default());
//! let (train, test) = (read(train)?.table, read(test)?.table);
//!
//! let config: PipelineConfig = serde_json::from_str(r#"{"steps": [
//!     {"step": "impute", "strategy": "median"},
//!     {"step": "impute", "strategy": "most_frequent"},
//!     {"step": "scale", "method": "min_max"},
//!     {"step": "one_hot", "unknown": "error"}
//! ]}"#)?;
//! let (fitted, report) = config.fit(&train)?;
//! assert_eq!(report.missing_in("size"), 1);
//! assert_eq!(report.imputed_in("colour"), 1);
//!
//! let (x, _) = fitted.transform(&test)?;
//! assert_eq!(x.columns, ["size", "colour=blue", "colour=red"]);
//! // size: min 1, max 5 learnt from training; the test's 7 maps past 1, its NA to the median 3.
//! assert_eq!(x.values, [1.5, 1.0, 0.0, 0.5, 0.0, 1.0]);
//!
//! let shipped = fitted.to_json()?;
//! assert_eq!(tuneforge_prep::FittedPipeline::from_json(&shipped)?, fitted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Text
//!
//! Documents (e-mails, reviews) go through their own pipeline: a [`TextPipelineConfig`] of
//! cleaning [`TextStep`]s (e-mail body extraction with MIME decoding, HTML stripping,
//! lower-casing, `__url__` / `__email__` / `__num__` placeholders) and a [`VocabConfig`].
//! [`TextPipelineConfig::fit`] learns a word-level vocabulary from the training texts only
//! (tokens seen at least `min_count` times, most frequent first, ties by byte order) and
//! returns a [`FittedTextPipeline`] and a [`TextFitReport`]. The fitted pipeline encodes any
//! text as token ids — [`FittedTextPipeline::PAD`] = 0, [`FittedTextPipeline::UNK`] = 1 for
//! words it never learnt — truncated or padded to `max_len`, and serialises with the model.
//!
//! ```
//! use tuneforge_prep::{FittedTextPipeline, TextPipelineConfig, VocabConfig};
//!
//! let train = ["Cheap pills, visit http://pills.example NOW", "Lunch at 12 or 1?", "cheap lunch now"];
//! let vocab = VocabConfig { min_count: 2, max_len: 6, ..VocabConfig::default() };
//! let config = TextPipelineConfig { vocab, ..TextPipelineConfig::plain() };
//! let (text, report) = config.fit(&train)?;
//! assert_eq!(report.documents, 3);
//! // In two or more training texts: "cheap", "lunch" and "now" (the number placeholder is
//! // in one text only, twice).
//! assert_eq!(text.vocab_size(), 2 + 3);
//!
//! let ids = text.encode("CHEAP lunch, 50% off");
//! assert_eq!(text.decode(&ids), ["cheap", "lunch", "<unk>", "<unk>", "<unk>"]);
//! let mut row = [0f32; 6];
//! text.encode_padded("CHEAP lunch, 50% off", &mut row);
//! assert_eq!(row[5], FittedTextPipeline::PAD as f32);
//! assert_eq!(FittedTextPipeline::from_json(&text.to_json()?)?, text);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod config;
mod error;
mod fit;
mod fitted;
mod report;
mod stats;
mod text;
mod work;

pub use crate::batch::{Element, RowTransform};
pub use crate::config::{Columns, Impute, Outliers, PipelineConfig, Scaling, Step, Unknown, Value};
pub use crate::error::{Error, Result};
pub use crate::fitted::{
    Affine, Bounds, Categories, ColumnKind, Fill, FittedPipeline, FittedStep, InputColumn, Matrix,
};
pub use crate::report::{
    Clipped, ColumnCount, ColumnReason, DroppedColumn, DroppedRow, FitReport, Imputed, RowReason, TransformReport,
};
pub use crate::stats::sort_levels;
pub use crate::text::{FittedTextPipeline, TextFitReport, TextPipelineConfig, TextStep, VocabConfig};
