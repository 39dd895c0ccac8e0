//! `tuneforge-loader`: labelled datasets for training, read once and served fast.
//!
//! The central abstraction is the [`Dataset`] trait (length, feature shape, classes, rows).
//! Two sources implement it: [`IdxDataset`] for IDX image/label pairs (MNIST,
//! Fashion-MNIST; raw or `.gz`, inflated once into a content-addressed cache file and
//! memory-mapped) and [`CsvDataset`] for CSV tables (numeric and categorical columns,
//! missing markers counted per column, a label column chosen by name, R-style row names).
//! [`IdxReader`] reads an IDX file a range of rows at a time instead, for files larger than
//! memory. Datasets known by name ([`Known`]) are found in [`DataDirs`]; the small ones
//! (digits, biopsy) are built in.
//!
//! Text datasets (documents with a label, for text classification) are read by
//! [`read_text`] from JSON lines or CSV, plain or gzip-compressed, into [`TextData`];
//! cleaning and tokenising them is `tuneforge-prep`'s job.
//!
//! CSV reading is strict: a ragged row or text in a numeric column is an [`Error`] with
//! line and column; every IDX failure names the file and byte offset.
//!
//! This crate does not know candle: batches are plain `f32` features and `u32` labels.
//!
//! ```
//! use tuneforge_loader::{CsvOptions, read_csv};
//! let csv = "\"\",ID,V6,class\n\"1\",10,1,benign\n\"2\",11,NA,malignant\n\"3\",12,?,benign\n";
//! let data = tuneforge_loader::read_csv_from(
//!     std::path::Path::new("inline.csv"),
//!     csv.as_bytes(),
//!     &CsvOptions::with_label("class"),
//! )?;
//! assert_eq!(data.table.n_rows, 3);
//! assert_eq!(data.table.column("V6").unwrap().missing, 2);
//! assert_eq!(data.label_names, ["benign", "malignant"]);
//! assert_eq!(data.labels, [0, 1, 0]);
//! # let _ = read_csv;
//! # Ok::<(), tuneforge_loader::Error>(())
//! ```

pub mod atomic;
mod batch;
mod cache;
mod csv;
mod dataset;
mod error;
pub mod idx;
mod memory;
mod prefetch;
pub mod registry;
mod sampler;
mod text;

pub use crate::batch::{Batch, Loader, LoaderConfig};
pub use crate::cache::{CacheStats, ShardCache};
pub use crate::csv::{
    Column, ColumnValues, CsvChunks, CsvData, CsvDataset, CsvOptions, Table, read_csv, read_csv_chunks,
    read_csv_chunks_from, read_csv_from, read_csv_header,
};
pub use crate::dataset::{Dataset, Scale};
pub use crate::error::{Error, Result};
pub use crate::idx::{Access, GzCache, IdxArray, IdxDataset, IdxReader};
pub use crate::memory::{InMemory, Subset, stratified_split};
pub use crate::prefetch::Prefetcher;
pub use crate::registry::{DataDirs, Known};
pub use crate::sampler::{Draw, EpochSampler};
pub use crate::text::{
    Labels, TextChunks, TextData, TextFormat, TextOptions, read_text, read_text_chunks, read_text_chunks_from,
    read_text_from,
};
