//! CSV tables: numeric and categorical columns, missing markers, a label column, R-style
//! row names.
//!
//! Column types are inferred from the first non-missing value of each column (a number →
//! numeric, anything else → categorical) unless [`CsvOptions::categorical`] or
//! [`CsvOptions::numeric`] says otherwise. After that, a value in a numeric column that is
//! neither a number nor a missing marker is an error naming its line and column, so a stray
//! `abc` among numbers is never silently turned into a category.
//!
//! Categorical levels and class names are sorted (numbers numerically, text
//! lexicographically), as scikit-learn's encoders sort them, so codes do not depend on row
//! order.

use std::path::{Path, PathBuf};

use crate::{Dataset, Error, Result};

/// How to read a CSV file.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Name of the label column; `None` for an unlabelled table.
    pub label: Option<String>,
    /// Field delimiter.
    pub delimiter: u8,
    /// Values that mean "missing" (compared after trimming spaces). Default: `NA`, empty,
    /// `?`, `NaN`.
    pub missing: Vec<String>,
    /// Columns to read as categorical whatever their values look like.
    pub categorical: Vec<String>,
    /// Columns to read as numeric (their first value decides nothing).
    pub numeric: Vec<String>,
    /// Columns to leave out (e.g. an identifier).
    pub drop: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label: None,
            delimiter: b',',
            missing: ["NA", "", "?", "NaN"].map(String::from).to_vec(),
            categorical: Vec::new(),
            numeric: Vec::new(),
            drop: Vec::new(),
        }
    }
}

impl CsvOptions {
    /// Default options with `label` as the label column.
    pub fn with_label(label: &str) -> Self {
        CsvOptions { label: Some(label.to_string()), ..Default::default() }
    }
}

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Numbers; a missing value is `NaN`.
    Numeric(Vec<f64>),
    /// Categories: sorted `levels`, and per row the index of its level (`None` = missing).
    Categorical {
        /// The distinct values, sorted.
        levels: Vec<String>,
        /// Per row: index into `levels`, or `None` when missing.
        codes: Vec<Option<u32>>,
    },
}

/// One named column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header name.
    pub name: String,
    /// The values.
    pub values: ColumnValues,
    /// How many values were missing markers.
    pub missing: usize,
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match &self.values {
            ColumnValues::Numeric(v) => v.len(),
            ColumnValues::Categorical { codes, .. } => codes.len(),
        }
    }

    /// `true` when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` for a numeric column.
    pub fn is_numeric(&self) -> bool {
        matches!(self.values, ColumnValues::Numeric(_))
    }
}

/// A table of feature columns, read from CSV (or built by hand).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Feature columns, in file order (label, row-name and dropped columns excluded).
    pub columns: Vec<Column>,
    /// R-style row names, when the file had an unnamed first column.
    pub row_names: Option<Vec<String>>,
    /// Number of rows.
    pub n_rows: usize,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The rows `rows` (in that order) as a new table; missing counts are recomputed.
    ///
    /// # Panics
    /// If a row index is out of range (a caller bug).
    pub fn select_rows(&self, rows: &[usize]) -> Table {
        let columns = self
            .columns
            .iter()
            .map(|c| {
                let (values, missing) = match &c.values {
                    ColumnValues::Numeric(v) => {
                        let v: Vec<f64> = rows.iter().map(|&r| v[r]).collect();
                        let missing = v.iter().filter(|x| x.is_nan()).count();
                        (ColumnValues::Numeric(v), missing)
                    }
                    ColumnValues::Categorical { levels, codes } => {
                        let codes: Vec<Option<u32>> = rows.iter().map(|&r| codes[r]).collect();
                        let missing = codes.iter().filter(|x| x.is_none()).count();
                        (ColumnValues::Categorical { levels: levels.clone(), codes }, missing)
                    }
                };
                Column { name: c.name.clone(), values, missing }
            })
            .collect();
        let row_names = self.row_names.as_ref().map(|names| rows.iter().map(|&r| names[r].clone()).collect());
        Table { columns, row_names, n_rows: rows.len() }
    }

    /// Missing-value count per column, in column order.
    pub fn missing_counts(&self) -> Vec<(&str, usize)> {
        self.columns.iter().map(|c| (c.name.as_str(), c.missing)).collect()
    }
}

/// A CSV file read into a [`Table`] plus labels.
#[derive(Debug, Clone)]
pub struct CsvData {
    /// The file read.
    pub path: PathBuf,
    /// Feature columns.
    pub table: Table,
    /// The label column's name, when one was asked for.
    pub label_column: Option<String>,
    /// Labels as indices into `label_names` (empty without a label column).
    pub labels: Vec<u32>,
    /// Sorted distinct label values.
    pub label_names: Vec<String>,
}

enum Kind {
    Numeric,
    Categorical,
}

/// Reads a CSV file with a header row.
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<CsvData> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_csv_from(path, std::io::BufReader::new(file), options)
}

/// The column names of a CSV file's header row, trimmed, as [`read_csv`] reads them (to
/// choose [`CsvOptions`] for a file before reading it); the rows are not read.
pub fn read_csv_header(path: &Path, delimiter: u8) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    header_of(path, &mut rdr)
}

/// A CSV reader's error as [`Error::Csv`], with its line.
fn csv_error(path: &Path, source: csv::Error) -> Error {
    let line = source.position().map(|p| p.line()).unwrap_or(0);
    Error::Csv { path: path.to_path_buf(), line, source }
}

fn header_of<R: std::io::Read>(path: &Path, rdr: &mut csv::Reader<R>) -> Result<Vec<String>> {
    let header: Vec<String> =
        rdr.headers().map_err(|e| csv_error(path, e))?.iter().map(|s| s.trim().to_string()).collect();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(Error::Empty { path: path.to_path_buf(), what: "no header row".into() });
    }
    Ok(header)
}

/// Reads CSV text from any reader; `path` is only used in messages.
pub fn read_csv_from(path: &Path, reader: impl std::io::Read, options: &CsvOptions) -> Result<CsvData> {
    let mut rdr = reader_of(reader, options);
    let mut plan = Plan::new(path, &mut rdr, options)?;
    let data = plan.read(&mut rdr, usize::MAX)?;
    if data.table.n_rows == 0 {
        return Err(Error::Empty { path: path.to_path_buf(), what: "a header but no data rows".into() });
    }
    Ok(data)
}

/// Opens `path` to read its rows `rows` at a time ([`CsvChunks`]), e.g. to predict on a file
/// larger than memory. The header is read (and the options checked against it) now.
pub fn read_csv_chunks(path: &Path, options: &CsvOptions, rows: usize) -> Result<CsvChunks> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_csv_chunks_from(path, std::io::BufReader::new(file), options, rows)
}

/// [`read_csv_chunks`] of any reader; `path` is only used in messages.
pub fn read_csv_chunks_from<R: std::io::Read>(
    path: &Path,
    reader: R,
    options: &CsvOptions,
    rows: usize,
) -> Result<CsvChunks<R>> {
    let mut rdr = reader_of(reader, options);
    let plan = Plan::new(path, &mut rdr, options)?;
    Ok(CsvChunks { rdr, plan, rows: rows.max(1), started: false, done: false })
}

/// A CSV file read a chunk of rows at a time ([`read_csv_chunks`]): each item is a
/// [`CsvData`] of the next rows (at most the chunk size), as [`read_csv`] would read those
/// rows alone, with three differences: errors name the line in the whole file; a column's
/// kind, once its first non-missing value decided it, holds for the chunks after (columns
/// named in [`CsvOptions::numeric`] or [`CsvOptions::categorical`] are fixed from the start);
/// categorical levels and label names are those of the chunk. A file with a header and no
/// rows gives one [`Error::Empty`]; after an error nothing more is read.
pub struct CsvChunks<R = std::io::BufReader<std::fs::File>> {
    rdr: csv::Reader<R>,
    plan: Plan,
    rows: usize,
    started: bool,
    done: bool,
}

impl<R> std::fmt::Debug for CsvChunks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvChunks").field("path", &self.plan.path).field("rows", &self.rows).finish()
    }
}

impl<R> CsvChunks<R> {
    /// The header's column names, trimmed.
    pub fn header(&self) -> &[String] {
        &self.plan.header
    }
}

impl<R: std::io::Read> Iterator for CsvChunks<R> {
    type Item = Result<CsvData>;

    fn next(&mut self) -> Option<Result<CsvData>> {
        if self.done {
            return None;
        }
        let chunk = self.plan.read(&mut self.rdr, self.rows);
        let first = !std::mem::replace(&mut self.started, true);
        match chunk {
            Ok(data) if data.table.n_rows == 0 => {
                self.done = true;
                first.then(|| {
                    Err(Error::Empty { path: self.plan.path.clone(), what: "a header but no data rows".into() })
                })
            }
            Ok(data) => Some(Ok(data)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn reader_of<R: std::io::Read>(reader: R, options: &CsvOptions) -> csv::Reader<R> {
    csv::ReaderBuilder::new().delimiter(options.delimiter).has_headers(true).flexible(true).from_reader(reader)
}

/// What to read of each record, decided from the header and the options; the columns'
/// kinds, once decided, carry over from one [`Plan::read`] to the next.
struct Plan {
    path: PathBuf,
    options: CsvOptions,
    header: Vec<String>,
    row_name_col: Option<usize>,
    label_col: Option<usize>,
    feature_idx: Vec<usize>,
    kinds: Vec<Option<Kind>>,
}

impl Plan {
    fn new<R: std::io::Read>(path: &Path, rdr: &mut csv::Reader<R>, options: &CsvOptions) -> Result<Plan> {
        let header = header_of(path, rdr)?;
        let find = |name: &str| -> Result<usize> {
            header.iter().position(|h| h == name).ok_or_else(|| Error::NoSuchColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: header.clone(),
            })
        };
        let row_name_col = header[0].is_empty().then_some(0);
        let label_col = options.label.as_deref().map(find).transpose()?;
        let mut skip = vec![false; header.len()];
        for name in &options.drop {
            skip[find(name)?] = true;
        }
        for name in options.categorical.iter().chain(&options.numeric) {
            find(name)?;
        }
        if let Some(i) = row_name_col {
            skip[i] = true;
        }
        if let Some(i) = label_col {
            skip[i] = true;
        }
        // Kinds decided on the first non-missing value, unless the options say.
        let feature_idx: Vec<usize> = (0..header.len()).filter(|&i| !skip[i]).collect();
        let kinds = feature_idx
            .iter()
            .map(|&i| {
                if options.categorical.contains(&header[i]) {
                    Some(Kind::Categorical)
                } else if options.numeric.contains(&header[i]) {
                    Some(Kind::Numeric)
                } else {
                    None
                }
            })
            .collect();
        Ok(Plan {
            path: path.to_path_buf(),
            options: options.clone(),
            header,
            row_name_col,
            label_col,
            feature_idx,
            kinds,
        })
    }

    /// Reads up to `limit` more records (fewer at the end of the file; none after it).
    fn read<R: std::io::Read>(&mut self, rdr: &mut csv::Reader<R>, limit: usize) -> Result<CsvData> {
        let Plan { path, options, header, row_name_col, label_col, feature_idx, kinds } = self;
        let (path, header, row_name_col, label_col) = (&**path, &*header, *row_name_col, *label_col);
        // Raw strings per kept column.
        let is_missing = |s: &str| options.missing.iter().any(|m| m == s);
        let mut numeric: Vec<Vec<f64>> = vec![Vec::new(); feature_idx.len()];
        let mut text: Vec<Vec<Option<String>>> = vec![Vec::new(); feature_idx.len()];
        let mut missing = vec![0usize; feature_idx.len()];
        let mut row_names = Vec::new();
        let mut raw_labels: Vec<String> = Vec::new();
        let mut n_rows = 0usize;

        let mut record = csv::StringRecord::new();
        while n_rows < limit {
            match rdr.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(csv_error(path, e)),
            }
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            if record.len() != header.len() {
                // A completely blank line is not a row.
                if record.len() == 1 && record[0].trim().is_empty() {
                    continue;
                }
                return Err(Error::CsvRagged {
                    path: path.to_path_buf(),
                    line,
                    found: record.len(),
                    expected: header.len(),
                });
            }
            if let Some(i) = row_name_col {
                row_names.push(record[i].to_string());
            }
            if let Some(i) = label_col {
                let v = record[i].trim();
                if is_missing(v) {
                    return Err(Error::MissingLabel {
                        path: path.to_path_buf(),
                        line,
                        column: header[i].clone(),
                        value: v.to_string(),
                    });
                }
                raw_labels.push(v.to_string());
            }
            for (k, &i) in feature_idx.iter().enumerate() {
                let v = record[i].trim();
                let miss = is_missing(v);
                if miss {
                    missing[k] += 1;
                }
                if kinds[k].is_none() && !miss {
                    kinds[k] = Some(if parse_number(v).is_some() { Kind::Numeric } else { Kind::Categorical });
                    // Rows read before the kind was known were all missing.
                    if matches!(kinds[k], Some(Kind::Numeric)) {
                        numeric[k] = vec![f64::NAN; n_rows];
                    }
                }
                match kinds[k] {
                    Some(Kind::Numeric) => {
                        let x = if miss {
                            f64::NAN
                        } else {
                            parse_number(v).ok_or_else(|| Error::CsvNumber {
                                path: path.to_path_buf(),
                                line,
                                column: header[i].clone(),
                                field: i + 1,
                                value: v.to_string(),
                            })?
                        };
                        numeric[k].push(x);
                    }
                    Some(Kind::Categorical) | None => text[k].push((!miss).then(|| v.to_string())),
                }
            }
            n_rows += 1;
        }

        let columns = feature_idx
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let values = match kinds[k] {
                    Some(Kind::Numeric) => ColumnValues::Numeric(std::mem::take(&mut numeric[k])),
                    // A column that is entirely missing stays numeric (all NaN): it is the
                    // preprocessing step's job to report it.
                    None => ColumnValues::Numeric(vec![f64::NAN; n_rows]),
                    Some(Kind::Categorical) => encode(std::mem::take(&mut text[k])),
                };
                Column { name: header[i].clone(), values, missing: missing[k] }
            })
            .collect();

        let (labels, label_names) =
            if label_col.is_some() { encode_labels(&raw_labels) } else { (Vec::new(), Vec::new()) };
        Ok(CsvData {
            path: path.to_path_buf(),
            table: Table { columns, row_names: row_name_col.map(|_| row_names), n_rows },
            label_column: options.label.clone(),
            labels,
            label_names,
        })
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let x: f64 = s.parse().ok()?;
    // "inf"/"nan" spelled out are accepted by Rust's parser; treat them as text unless
    // they are real numbers.
    x.is_finite().then_some(x)
}

/// Sorted levels: numerically when every value is a number, else lexicographically.
fn sorted_levels(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut levels: Vec<String> = values.collect();
    levels.sort();
    levels.dedup();
    if levels.iter().all(|l| parse_number(l).is_some()) {
        levels.sort_by(|a, b| {
            let (x, y) = (parse_number(a).unwrap_or(0.0), parse_number(b).unwrap_or(0.0));
            x.total_cmp(&y)
        });
    }
    levels
}

fn encode(values: Vec<Option<String>>) -> ColumnValues {
    let levels = sorted_levels(values.iter().flatten().cloned());
    let index: std::collections::HashMap<&str, u32> =
        levels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
    let codes = values.iter().map(|v| v.as_deref().map(|v| index[v])).collect();
    ColumnValues::Categorical { levels, codes }
}

pub(crate) fn encode_labels(raw: &[String]) -> (Vec<u32>, Vec<String>) {
    let names = sorted_levels(raw.iter().cloned());
    let index: std::collections::HashMap<&str, u32> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
    let labels = raw.iter().map(|r| index[r.as_str()]).collect();
    (labels, names)
}

/// A labelled CSV table as a [`Dataset`]: numeric columns as their values, categorical
/// columns as their level index (missing → `NaN`); feature shape `[columns]`.
#[derive(Debug, Clone)]
pub struct CsvDataset {
    data: CsvData,
    shape: [usize; 1],
    /// Row-major feature matrix.
    matrix: Vec<f32>,
}

impl CsvDataset {
    /// Wraps labelled CSV data. Fails if it has no label column.
    pub fn new(data: CsvData) -> Result<Self> {
        if data.label_column.is_none() {
            return Err(Error::Invalid {
                what: "CSV dataset",
                why: format!("{}: no label column was given", data.path.display()),
            });
        }
        let cols = data.table.columns.len();
        let n = data.table.n_rows;
        let mut matrix = vec![0f32; n * cols];
        for (j, col) in data.table.columns.iter().enumerate() {
            match &col.values {
                ColumnValues::Numeric(v) => {
                    for (r, x) in v.iter().enumerate() {
                        matrix[r * cols + j] = *x as f32;
                    }
                }
                ColumnValues::Categorical { codes, .. } => {
                    for (r, c) in codes.iter().enumerate() {
                        matrix[r * cols + j] = c.map_or(f32::NAN, |c| c as f32);
                    }
                }
            }
        }
        Ok(CsvDataset { shape: [cols], matrix, data })
    }

    /// Reads `path` with `options` (which must name a label column).
    pub fn open(path: &Path, options: &CsvOptions) -> Result<Self> {
        Self::new(read_csv(path, options)?)
    }

    /// The table and labels behind the dataset.
    pub fn data(&self) -> &CsvData {
        &self.data
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.data.table.n_rows
    }

    fn feature_shape(&self) -> &[usize] {
        &self.shape
    }

    fn label_names(&self) -> &[String] {
        &self.data.label_names
    }

    fn label(&self, row: usize) -> u32 {
        self.data.labels[row]
    }

    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        let f = self.shape[0];
        out.copy_from_slice(&self.matrix[start * f..end * f]);
        Ok(())
    }
}
