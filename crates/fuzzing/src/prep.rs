//! Target of the preprocessing crate: a fitted pipeline shipped as JSON (`prep.json`).

use tuneforge_loader::{Column, ColumnValues, Table};
use tuneforge_prep::{ColumnKind, FittedPipeline, FittedStep, Value};

use crate::{Verdict, same};

/// Numbers each numeric column of the sample table holds, missing value included.
const SAMPLE: [f64; 6] = [0.0, 1.5, -2.0, f64::NAN, 1e12, -0.0];

/// A fitted pipeline as `FittedPipeline::from_json` reads it. Checks on an accepted one:
/// JSON round trip; `transform` of a sample table with the training columns either gives a
/// matrix of the recorded output columns with one value per row and column, or a typed
/// error; for a numeric-only pipeline, the row form (`row_transform`) gives the same
/// columns and, bit for bit, the same values as `transform`, in place too.
pub fn prep_pipeline(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Verdict::Rejected };
    let Ok(pipeline) = FittedPipeline::from_json(text) else { return Verdict::Rejected };
    let json = pipeline.to_json().unwrap_or_else(|e| panic!("invariant broken: {e}"));
    let back = FittedPipeline::from_json(&json)
        .unwrap_or_else(|e| panic!("invariant broken: a written pipeline does not read back: {e}\n{json}"));
    same("pipeline → JSON → pipeline", &back, &pipeline);

    let table = sample_table(&pipeline);
    let Ok((matrix, _report)) = pipeline.transform(&table) else { return Verdict::Accepted };
    same("matrix columns = recorded outputs", &matrix.columns.as_slice(), &pipeline.output_columns());
    same("values = rows × columns", &matrix.values.len(), &(matrix.n_rows() * matrix.n_cols()));
    assert!(
        matrix.rows.windows(2).all(|w| w[0] < w[1]) && matrix.rows.iter().all(|&r| r < table.n_rows),
        "invariant broken: output rows {:?} of {} input rows",
        matrix.rows,
        table.n_rows
    );

    if let Ok(rows) = pipeline.row_transform() {
        same("row form columns", &rows.output_columns(), &matrix.columns);
        let input: Vec<f64> = (0..table.n_rows)
            .flat_map(|r| {
                table.columns.iter().map(move |c| match &c.values {
                    ColumnValues::Numeric(v) => v[r],
                    ColumnValues::Categorical { .. } => {
                        panic!("invariant broken: row_transform took a categorical input")
                    }
                })
            })
            .collect();
        let mut output = vec![0.0; table.n_rows * rows.out_width()];
        let n = rows.apply(&input, &mut output).unwrap_or_else(|e| panic!("invariant broken: apply: {e}"));
        same("row form rows", &n, &table.n_rows);
        same_bits("row form = transform", &output, &matrix.values);
        if rows.out_width() == rows.in_width() {
            let mut in_place = input.clone();
            rows.apply_in_place(&mut in_place).unwrap_or_else(|e| panic!("invariant broken: apply_in_place: {e}"));
            same_bits("in place = apply", &in_place, &output);
        }
    }
    Verdict::Accepted
}

/// Equal values, any `NaN` equal to any other.
fn same_bits(what: &str, a: &[f64], b: &[f64]) {
    let key = |v: &[f64]| v.iter().map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }).collect::<Vec<_>>();
    same(what, &key(a), &key(b));
}

/// A table with the pipeline's training columns: numeric ones hold [`SAMPLE`]; categorical
/// ones the categories the pipeline knows for them (one-hot categories, text fills) and a
/// missing value.
fn sample_table(pipeline: &FittedPipeline) -> Table {
    let n_rows = SAMPLE.len();
    let columns = pipeline
        .inputs()
        .iter()
        .map(|input| {
            let values = match input.kind {
                ColumnKind::Numeric => ColumnValues::Numeric(SAMPLE.to_vec()),
                ColumnKind::Categorical => {
                    let mut levels = known_categories(pipeline, &input.name);
                    levels.sort();
                    levels.dedup();
                    let codes = (0..n_rows)
                        .map(|r| if levels.is_empty() || r == 3 { None } else { Some((r % levels.len()) as u32) })
                        .collect();
                    ColumnValues::Categorical { levels, codes }
                }
            };
            let missing = match &values {
                ColumnValues::Numeric(v) => v.iter().filter(|x| x.is_nan()).count(),
                ColumnValues::Categorical { codes, .. } => codes.iter().filter(|c| c.is_none()).count(),
            };
            Column { name: input.name.clone(), values, missing }
        })
        .collect();
    Table { columns, row_names: None, n_rows }
}

fn known_categories(pipeline: &FittedPipeline, column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for step in pipeline.steps() {
        match step {
            FittedStep::OneHot { columns, .. } => {
                for c in columns.iter().filter(|c| c.column == column) {
                    out.extend(c.categories.iter().cloned());
                }
            }
            FittedStep::Impute { fills } => {
                for f in fills.iter().filter(|f| f.column == column) {
                    if let Value::Text(t) = &f.value {
                        out.push(t.clone());
                    }
                }
            }
            _ => {}
        }
    }
    out
}
