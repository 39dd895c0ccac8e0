//! The loader's error type: every variant says which file and where.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while finding, reading or batching a dataset.
///
/// Each variant carries the file and the byte offset, line or field at fault, so the
/// message alone tells a user what to fix. Nothing in this crate panics on file contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while opening, reading, mapping or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not the IDX magic number expected for this file.
    #[error("{path}: not an IDX file of the expected kind: magic {found:#010x} at offset 0, expected {expected:#010x}")]
    IdxMagic {
        /// The file.
        path: PathBuf,
        /// The magic number found (big-endian).
        found: u32,
        /// The magic number expected (0x00000803 for images, 0x00000801 for labels).
        expected: u32,
    },
    /// The file ends before the header or the data it announces.
    #[error("{path}: truncated at offset {len}: {what} needs {needed} bytes from offset {offset}")]
    Truncated {
        /// The file (or the inflated cache of a `.gz` file).
        path: PathBuf,
        /// What was being read (`"header"`, `"dimension 2"`, `"data"`).
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's actual length.
        len: u64,
    },
    /// More bytes follow the data than the header announces.
    #[error("{path}: {extra} unexpected bytes after the data, starting at offset {offset}")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Offset of the first extra byte.
        offset: u64,
        /// How many extra bytes.
        extra: u64,
    },
    /// An IDX dimension is zero where rows must have a size, or the sizes overflow.
    #[error("{path}: invalid dimensions {dims:?} in the header at offset 4")]
    IdxDims {
        /// The file.
        path: PathBuf,
        /// The dimensions read.
        dims: Vec<u64>,
    },
    /// Image and label files disagree on the number of rows.
    #[error("{images}: {image_count} images, but {labels}: {label_count} labels (field: dimension 0)")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Its row count.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Its row count.
        label_count: usize,
    },
    /// A label is not below the number of classes.
    #[error("{path}: label {label} of row {row} (offset {offset}) is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// The row.
        row: usize,
        /// Byte offset of the label in the (inflated) file.
        offset: u64,
        /// The label value.
        label: u64,
        /// The number of classes of this dataset.
        classes: usize,
    },
    /// A `.gz` file could not be inflated.
    #[error("{path}: corrupt or truncated gzip data near compressed offset {offset}: {source}")]
    Gzip {
        /// The compressed file.
        path: PathBuf,
        /// Bytes of compressed input consumed when the error occurred.
        offset: u64,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV row has a different number of fields than the header.
    #[error("{path}:{line}: {found} fields, but the header has {expected}")]
    CsvRagged {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Fields in this row.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A value in a numeric column is not a number nor a missing marker.
    #[error("{path}:{line}: column {column:?} (field {field}) is numeric, but {value:?} is not a number")]
    CsvNumber {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// 1-based field index.
        field: usize,
        /// The offending text.
        value: String,
    },
    /// The CSV reader itself failed (invalid UTF-8, unbalanced quotes, ...).
    #[error("{path}:{line}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number where the reader stopped (0 if unknown).
        line: u64,
        /// The reader's error.
        #[source]
        source: csv::Error,
    },
    /// A column named in the options does not exist.
    #[error("{path}: no column named {column:?}; columns are {available:?}")]
    NoSuchColumn {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        column: String,
        /// The header's names.
        available: Vec<String>,
    },
    /// The label column has a missing value.
    #[error("{path}:{line}: label column {column:?} has a missing value {value:?}")]
    MissingLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The label column.
        column: String,
        /// The marker found.
        value: String,
    },
    /// A file has a header but no rows, or no header at all.
    #[error("{path}: {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A JSON-lines row is not valid JSON or not a JSON object.
    #[error("{path}:{line}: not a JSON object: {why}")]
    JsonRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What the parser said, or what was found instead of an object.
        why: String,
    },
    /// A text row's text or label field is missing, empty (labels) or of the wrong type.
    #[error("{path}:{line}: field {field:?}: {why}")]
    TextField {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The field (JSON key or CSV column).
        field: String,
        /// What is wrong (`"missing"`, `"expected a string, found the number 3"`, ...).
        why: String,
    },
    /// A line of a text file is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 at byte {byte}{}", field.as_ref().map(|f| format!(" of field {f:?}")).unwrap_or_default())]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The CSV field, `None` for a JSON line.
        field: Option<String>,
        /// 1-based byte position of the first invalid byte in the line (or in the field).
        byte: usize,
    },
    /// A named dataset is not in any of the places searched.
    #[error("dataset {name:?} not found; looked for {searched:?}. {hint}")]
    NotFound {
        /// The dataset's name.
        name: String,
        /// Every path that was tried, in order.
        searched: Vec<PathBuf>,
        /// How to provide it.
        hint: String,
    },
    /// A configuration value is out of its domain (batch size 0, empty dataset, ...).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// Why it is refused.
        why: String,
    },
    /// The prefetch worker thread panicked or vanished.
    #[error("prefetch worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
