//! Shared helpers: the real datasets, hand-built tables, comparisons.

use tuneforge_loader::{Column, ColumnValues, CsvData, CsvOptions, Table, read_csv};
use tuneforge_prep::{FitReport, FittedPipeline, PipelineConfig};

pub const BIOPSY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/biopsy.csv");
pub const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/digits.csv");

/// biopsy with `class` as the label and `ID` dropped: V1..V9 numeric.
pub fn biopsy() -> CsvData {
    let options = CsvOptions { label: Some("class".into()), drop: vec!["ID".into()], ..Default::default() };
    read_csv(BIOPSY.as_ref(), &options).unwrap()
}

/// biopsy without a label: V1 read as categorical, `class` a categorical feature.
pub fn biopsy_categorical() -> Table {
    let options = CsvOptions { drop: vec!["ID".into()], categorical: vec!["V1".into()], ..Default::default() };
    read_csv(BIOPSY.as_ref(), &options).unwrap().table
}

/// digits with `label` as the label: pixel_0..pixel_63 numeric.
pub fn digits() -> CsvData {
    read_csv(DIGITS.as_ref(), &CsvOptions::with_label("label")).unwrap()
}

/// The rows `rows` of `table`, in that order (levels kept).
pub fn take_rows(table: &Table, rows: &[usize]) -> Table {
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let values = match &c.values {
                ColumnValues::Numeric(v) => ColumnValues::Numeric(rows.iter().map(|&r| v[r]).collect()),
                ColumnValues::Categorical { levels, codes } => ColumnValues::Categorical {
                    levels: levels.clone(),
                    codes: rows.iter().map(|&r| codes[r]).collect(),
                },
            };
            let mut col = Column { name: c.name.clone(), values, missing: 0 };
            col.missing = missing(&col);
            col
        })
        .collect();
    Table { columns, row_names: None, n_rows: rows.len() }
}

fn missing(c: &Column) -> usize {
    match &c.values {
        ColumnValues::Numeric(v) => v.iter().filter(|x| x.is_nan()).count(),
        ColumnValues::Categorical { codes, .. } => codes.iter().filter(|c| c.is_none()).count(),
    }
}

/// A numeric column; `NaN` = missing.
pub fn num(name: &str, values: &[f64]) -> Column {
    let mut c = Column { name: name.into(), values: ColumnValues::Numeric(values.to_vec()), missing: 0 };
    c.missing = missing(&c);
    c
}

/// A categorical column from text; levels sorted, `None` = missing.
pub fn cat(name: &str, values: &[Option<&str>]) -> Column {
    let mut levels: Vec<String> = values.iter().flatten().map(|s| s.to_string()).collect();
    tuneforge_prep::sort_levels(&mut levels);
    levels.dedup();
    let codes = values.iter().map(|v| v.map(|v| levels.iter().position(|l| l == v).unwrap() as u32)).collect();
    let mut c = Column { name: name.into(), values: ColumnValues::Categorical { levels, codes }, missing: 0 };
    c.missing = missing(&c);
    c
}

/// A table of columns (all the same length).
pub fn table(columns: Vec<Column>) -> Table {
    let n_rows = columns.first().map_or(0, |c| c.len());
    Table { columns, row_names: None, n_rows }
}

/// Rows of `b` appended to `a` (same columns; categorical levels merged by text).
pub fn concat(a: &Table, b: &Table) -> Table {
    let columns = a
        .columns
        .iter()
        .map(|ca| {
            let cb = b.column(&ca.name).unwrap();
            match (&ca.values, &cb.values) {
                (ColumnValues::Numeric(x), ColumnValues::Numeric(y)) => {
                    num(&ca.name, &x.iter().chain(y).copied().collect::<Vec<_>>())
                }
                (
                    ColumnValues::Categorical { levels: la, codes: xa },
                    ColumnValues::Categorical { levels: lb, codes: xb },
                ) => {
                    let text: Vec<Option<&str>> = xa
                        .iter()
                        .map(|c| c.map(|c| la[c as usize].as_str()))
                        .chain(xb.iter().map(|c| c.map(|c| lb[c as usize].as_str())))
                        .collect();
                    cat(&ca.name, &text)
                }
                _ => panic!("kinds differ"),
            }
        })
        .collect();
    table(columns)
}

/// Parses a JSON pipeline config.
pub fn config(json: &str) -> PipelineConfig {
    serde_json::from_str(json).unwrap()
}

/// Fits `json` on `t`.
pub fn fit(json: &str, t: &Table) -> (FittedPipeline, FitReport) {
    config(json).fit(t).unwrap()
}

/// Asserts `|a - b| <= tol` elementwise, naming the first failure.
pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}
