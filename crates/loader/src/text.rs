//! Labelled text datasets: one document and its label per row, from JSON lines or CSV,
//! plain or gzip-compressed.
//!
//! Compression is recognised by the gzip magic bytes (`1f 8b`), not by the file name, and
//! inflated as a stream (concatenated gzip members included). The format is given by
//! [`TextOptions::format`]; [`TextFormat::from_path`] guesses it from the extension.
//!
//! Reading is strict: a row that is not a JSON object, a missing text or label field, a
//! value of the wrong type, invalid UTF-8 or a ragged CSV record is an [`Error`] naming the
//! file, the 1-based line and the field. Labels are sorted the way [`read_csv`](crate::read_csv)
//! sorts them (numbers numerically, text lexicographically), so label indices do not depend
//! on row order. Data to predict may come unlabelled ([`Labels::IfPresent`]).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::csv::encode_labels;
use crate::{Error, Result};

/// File format of a text dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// One JSON object per line (blank lines skipped).
    Jsonl,
    /// CSV with a header row; text and label columns chosen by name.
    Csv,
}

impl TextFormat {
    /// `Csv` for names ending in `.csv` or `.csv.gz` (any case), `Jsonl` for anything else.
    pub fn from_path(path: &Path) -> TextFormat {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.ends_with(".csv") || name.ends_with(".csv.gz") { TextFormat::Csv } else { TextFormat::Jsonl }
    }
}

/// How to read a text dataset.
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// The file format.
    pub format: TextFormat,
    /// Name of the field (JSON key or CSV column) holding the document text.
    pub text_field: String,
    /// Name of the field holding the label.
    pub label_field: String,
    /// Whether every row must have a label.
    pub labels: Labels,
}

/// Whether a text dataset's rows must be labelled ([`TextOptions::labels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Labels {
    /// Every row has a label (a training set).
    #[default]
    Required,
    /// The header (CSV) or the first data row (JSON lines) decides: with the label field,
    /// every row must have one; without it, no row may (new data to predict).
    IfPresent,
}

impl Default for TextOptions {
    /// JSON lines with fields `text` and `label`, labels required.
    fn default() -> Self {
        TextOptions {
            format: TextFormat::Jsonl,
            text_field: "text".into(),
            label_field: "label".into(),
            labels: Labels::Required,
        }
    }
}

/// A labelled text dataset, in file order.
#[derive(Debug, Clone)]
pub struct TextData {
    /// The file read (only named in messages for [`read_text_from`]).
    pub path: PathBuf,
    /// The documents.
    pub texts: Vec<String>,
    /// Each document's label, an index into `label_names` (empty when unlabelled).
    pub labels: Vec<u32>,
    /// Sorted distinct labels (numerically when all are numbers, else lexicographically).
    pub label_names: Vec<String>,
    /// Whether the rows have labels (always, under [`Labels::Required`]).
    pub labelled: bool,
}

impl TextData {
    /// Number of documents.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are no documents (never true for data returned by [`read_text`]).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Documents per class, indexed like `label_names`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.label_names.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// Reads a text dataset from a file (gzip-compressed or not).
pub fn read_text(path: &Path, options: &TextOptions) -> Result<TextData> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_text_from(path, file, options)
}

/// Reads a text dataset from any reader (gzip-compressed or not); `path` only names the
/// source in messages and in [`TextData::path`].
pub fn read_text_from(path: &Path, reader: impl Read, options: &TextOptions) -> Result<TextData> {
    let mut rows = RowReader::open(path, reader, options)?;
    let data = rows.read(Limit::NONE)?;
    if data.texts.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf(), what: "no data rows".into() });
    }
    Ok(data)
}

/// Opens `path` to read its texts `rows` at a time ([`TextChunks`]), e.g. to predict on a
/// file larger than memory. The compression is sniffed and a CSV header read (and checked
/// against the options) now.
pub fn read_text_chunks(path: &Path, options: &TextOptions, rows: usize) -> Result<TextChunks<'static>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_text_chunks_from(path, file, options, rows)
}

/// [`read_text_chunks`] of any reader; `path` is only used in messages.
pub fn read_text_chunks_from<'a>(
    path: &Path,
    reader: impl Read + 'a,
    options: &TextOptions,
    rows: usize,
) -> Result<TextChunks<'a>> {
    Ok(TextChunks {
        rows: RowReader::open(path, reader, options)?,
        limit: Limit { rows: rows.max(1), bytes: usize::MAX },
        started: false,
        done: false,
    })
}

/// A text dataset read a chunk of rows at a time ([`read_text_chunks`]): each item is a
/// [`TextData`] of the next rows (at most the chunk size), as [`read_text`] reads them, except
/// that label names are those of the chunk and errors name lines in the whole file. Under
/// [`Labels::IfPresent`] the first row of the file decides for every chunk. A file with no
/// rows gives one [`Error::Empty`]; after an error nothing more is read.
pub struct TextChunks<'a> {
    rows: RowReader<'a>,
    limit: Limit,
    started: bool,
    done: bool,
}

impl std::fmt::Debug for TextChunks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextChunks").field("path", &self.rows.source.path).field("rows", &self.limit.rows).finish()
    }
}

impl TextChunks<'_> {
    /// Ends each chunk, besides at its row count, once its texts hold `bytes` bytes (a chunk
    /// has at least one text): a file of very long texts is read in bounded memory too.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.limit.bytes = bytes.max(1);
        self
    }
}

impl Iterator for TextChunks<'_> {
    type Item = Result<TextData>;

    fn next(&mut self) -> Option<Result<TextData>> {
        if self.done {
            return None;
        }
        let first = !std::mem::replace(&mut self.started, true);
        match self.rows.read(self.limit) {
            Ok(data) if data.texts.is_empty() => {
                self.done = true;
                first.then(|| Err(Error::Empty { path: self.rows.source.path.clone(), what: "no data rows".into() }))
            }
            Ok(data) => Some(Ok(data)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Where the bytes come from, to turn read errors into the right [`Error`].
struct Source {
    path: PathBuf,
    gzip: bool,
    /// Bytes of (compressed) input consumed so far.
    consumed: Rc<Cell<u64>>,
}

impl Source {
    fn read_error(&self, source: std::io::Error) -> Error {
        if self.gzip {
            Error::Gzip { path: self.path.clone(), offset: self.consumed.get(), source }
        } else {
            Error::io(&self.path, source)
        }
    }

    fn field(&self, line: u64, field: &str, why: impl Into<String>) -> Error {
        Error::TextField { path: self.path.clone(), line, field: field.to_string(), why: why.into() }
    }

    fn csv_error(&self, e: csv::Error) -> Error {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        if e.is_io_error() {
            if let csv::ErrorKind::Io(io) = e.into_kind() {
                return self.read_error(io);
            }
            return self.read_error(std::io::Error::other("I/O error"));
        }
        Error::Csv { path: self.path.clone(), line, source: e }
    }
}

/// A reader that counts the bytes read through it (to locate gzip errors).
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

type Input<'a> = BufReader<Box<dyn Read + 'a>>;

/// The rows of a text file, read as far as asked at a time.
struct RowReader<'a> {
    source: Source,
    options: TextOptions,
    format: Format<'a>,
}

enum Format<'a> {
    Jsonl {
        input: Input<'a>,
        line: u64,
        /// Decided by the first data row under `Labels::IfPresent`.
        labelled: Option<bool>,
        buf: Vec<u8>,
    },
    Csv {
        rdr: csv::Reader<Input<'a>>,
        header: Vec<String>,
        text_col: usize,
        label_col: Option<usize>,
    },
}

impl<'a> RowReader<'a> {
    /// Sniffs the compression and, for CSV, reads the header.
    fn open(path: &Path, mut reader: impl Read + 'a, options: &TextOptions) -> Result<RowReader<'a>> {
        // Up to two bytes to look for the gzip magic, then the rest of the stream behind them.
        let mut head = Vec::with_capacity(2);
        while head.len() < 2 {
            let mut byte = [0u8; 1];
            match reader.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => head.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        let gzip = head == [0x1f, 0x8b];
        let stream = std::io::Cursor::new(head).chain(reader);
        let source = Source { path: path.to_path_buf(), gzip, consumed: Rc::new(Cell::new(0)) };
        let counting = Counting { inner: stream, count: Rc::clone(&source.consumed) };
        let input: Box<dyn Read + 'a> =
            if gzip { Box::new(flate2::read::MultiGzDecoder::new(counting)) } else { Box::new(counting) };
        let input = BufReader::with_capacity(1 << 16, input);
        let format = match options.format {
            TextFormat::Jsonl => {
                let labelled = match options.labels {
                    Labels::Required => Some(true),
                    Labels::IfPresent => None,
                };
                Format::Jsonl { input, line: 0, labelled, buf: Vec::new() }
            }
            TextFormat::Csv => {
                let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
                match csv_header(&source, &mut rdr, options) {
                    Ok((header, text_col, label_col)) => Format::Csv { rdr, header, text_col, label_col },
                    Err(e) => return Err(blame(&source, rdr.get_mut(), e)),
                }
            }
        };
        Ok(RowReader { source, options: options.clone(), format })
    }

    /// Up to `limit` more rows (none at the end), their labels encoded.
    fn read(&mut self, limit: Limit) -> Result<TextData> {
        let RowReader { source, options, format } = self;
        let rows = match format {
            Format::Jsonl { input, line, labelled, buf } => {
                read_jsonl(source, input, options, limit, line, labelled, buf).map_err(|e| blame(source, input, e))
            }
            Format::Csv { rdr, header, text_col, label_col } => {
                read_csv_text(source, rdr, header, *text_col, *label_col, options, limit)
                    .map_err(|e| blame(source, rdr.get_mut(), e))
            }
        };
        let (texts, raw_labels, labelled) = rows?;
        let (labels, label_names) = encode_labels(&raw_labels);
        Ok(TextData { path: source.path.clone(), texts, labels, label_names, labelled })
    }
}

/// `e`, or the compression's error when the gzip stream is broken further on: a corrupt
/// deflate stream can inflate to garbage before its checksum fails, so when a row is bad the
/// rest of the stream is read to see whether the compression is to blame.
fn blame(source: &Source, rest: &mut impl Read, e: Error) -> Error {
    if !source.gzip || matches!(e, Error::Gzip { .. }) {
        return e;
    }
    match std::io::copy(rest, &mut std::io::sink()) {
        Err(io) => source.read_error(io),
        Ok(_) => e,
    }
}

/// The texts, their labels (empty when unlabelled) and whether they are labelled.
type Rows = (Vec<String>, Vec<String>, bool);

/// How much one read takes: up to `rows` texts, and no more once they hold `bytes` bytes.
#[derive(Debug, Clone, Copy)]
struct Limit {
    rows: usize,
    bytes: usize,
}

impl Limit {
    /// No limit: the whole file.
    const NONE: Limit = Limit { rows: usize::MAX, bytes: usize::MAX };

    /// Whether `texts` may take one more.
    fn room(self, texts: &[String], bytes: usize) -> bool {
        texts.len() < self.rows && bytes < self.bytes
    }
}

fn read_jsonl(
    source: &Source,
    input: &mut impl BufRead,
    options: &TextOptions,
    limit: Limit,
    line: &mut u64,
    labelled: &mut Option<bool>,
    buf: &mut Vec<u8>,
) -> Result<Rows> {
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    while limit.room(&texts, bytes) {
        buf.clear();
        match input.read_until(b'\n', buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(source.read_error(e)),
        }
        *line += 1;
        let line = *line;
        let s = std::str::from_utf8(buf).map_err(|e| Error::Utf8 {
            path: source.path.clone(),
            line,
            field: None,
            byte: e.valid_up_to() + 1,
        })?;
        // A UTF-8 byte-order mark may open the file.
        let s = if line == 1 { s.strip_prefix('\u{feff}').unwrap_or(s) } else { s };
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(s).map_err(|e| Error::JsonRow {
            path: source.path.clone(),
            line,
            why: e.to_string(),
        })?;
        let serde_json::Value::Object(mut row) = row else {
            return Err(Error::JsonRow {
                path: source.path.clone(),
                line,
                why: format!("expected a JSON object, found {}", json_kind(&row)),
            });
        };
        let text = match row.remove(&options.text_field) {
            Some(serde_json::Value::String(t)) => t,
            Some(other) => {
                return Err(source.field(
                    line,
                    &options.text_field,
                    format!("expected a string, found {}", json_kind(&other)),
                ));
            }
            None => return Err(source.field(line, &options.text_field, "missing")),
        };
        let has_label = row.contains_key(&options.label_field);
        match *labelled.get_or_insert(has_label) {
            true => {}
            false if !has_label => {
                bytes += text.len();
                texts.push(text);
                continue;
            }
            false => {
                return Err(source.field(
                    line,
                    &options.label_field,
                    "the first row has no label, this one has: label every row or none",
                ));
            }
        }
        let label = match row.get(&options.label_field) {
            Some(serde_json::Value::String(l)) => l.clone(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(other) => {
                return Err(source.field(
                    line,
                    &options.label_field,
                    format!("expected a string, an integer or a boolean, found {}", json_kind(other)),
                ));
            }
            None => return Err(source.field(line, &options.label_field, "missing")),
        };
        if label.trim().is_empty() {
            return Err(source.field(line, &options.label_field, "empty label"));
        }
        bytes += text.len();
        texts.push(text);
        labels.push(label);
    }
    Ok((texts, labels, labelled.unwrap_or(true)))
}

fn json_kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// The header of a CSV text file: its fields, the text column and the label column.
fn csv_header<R: Read>(
    source: &Source,
    rdr: &mut csv::Reader<R>,
    options: &TextOptions,
) -> Result<(Vec<String>, usize, Option<usize>)> {
    let header: Vec<String> = rdr
        .byte_headers()
        .map_err(|e| source.csv_error(e))?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::str::from_utf8(h).map(|h| h.trim().to_string()).map_err(|e| Error::Utf8 {
                path: source.path.clone(),
                line: 1,
                field: Some(format!("header field {}", i + 1)),
                byte: e.valid_up_to() + 1,
            })
        })
        .collect::<Result<_>>()?;
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(Error::Empty { path: source.path.clone(), what: "no header row".into() });
    }
    let find = |name: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| Error::NoSuchColumn {
            path: source.path.clone(),
            column: name.to_string(),
            available: header.clone(),
        })
    };
    let text_col = find(&options.text_field)?;
    let label_col = match options.labels {
        Labels::Required => Some(find(&options.label_field)?),
        Labels::IfPresent => header.iter().position(|h| *h == options.label_field),
    };
    Ok((header, text_col, label_col))
}

fn read_csv_text<R: Read>(
    source: &Source,
    rdr: &mut csv::Reader<R>,
    header: &[String],
    text_col: usize,
    label_col: Option<usize>,
    options: &TextOptions,
    limit: Limit,
) -> Result<Rows> {
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    let mut record = csv::ByteRecord::new();
    let mut bytes = 0;
    while limit.room(&texts, bytes) {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(source.csv_error(e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() != header.len() {
            if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Err(Error::CsvRagged {
                path: source.path.clone(),
                line,
                found: record.len(),
                expected: header.len(),
            });
        }
        let field = |col: usize| -> Result<String> {
            std::str::from_utf8(&record[col]).map(str::to_string).map_err(|e| Error::Utf8 {
                path: source.path.clone(),
                line,
                field: Some(header[col].clone()),
                byte: e.valid_up_to() + 1,
            })
        };
        let text = field(text_col)?;
        bytes += text.len();
        texts.push(text);
        let Some(label_col) = label_col else { continue };
        let label = field(label_col)?.trim().to_string();
        if label.is_empty() {
            return Err(source.field(line, &options.label_field, "empty label"));
        }
        labels.push(label);
    }
    Ok((texts, labels, label_col.is_some()))
}
