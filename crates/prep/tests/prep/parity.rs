//! scikit-learn parity: statistics and outputs against `tests/fixtures/*.json`, made by
//! `python3 scripts/fixtures/prep.py` (scikit-learn 1.9.1). Tolerance 1e-6.

use serde::Deserialize;
use tuneforge_loader::Table;
use tuneforge_prep::{FittedPipeline, FittedStep, Value};

use crate::common::*;

const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Biopsy {
    sklearn: String,
    columns: Vec<String>,
    n_rows: usize,
    missing: std::collections::BTreeMap<String, usize>,
    missing_rows: Vec<usize>,
    rows: Vec<usize>,
    imputer: Imputers,
    after_median: Scalers,
    standard_raw: Standard,
    quartiles: Quartiles,
    one_hot: OneHot,
}

#[derive(Deserialize)]
struct Imputers {
    mean: Imputed,
    median: Imputed,
    most_frequent: Imputed,
}

#[derive(Deserialize)]
struct Imputed {
    statistics: Vec<f64>,
    output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Scalers {
    standard: Standard,
    min_max: MinMax,
    max_abs: MaxAbs,
}

#[derive(Deserialize)]
struct Standard {
    mean: Vec<f64>,
    scale: Vec<f64>,
    #[serde(default)]
    output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct MinMax {
    data_min: Vec<f64>,
    data_max: Vec<f64>,
    output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct MaxAbs {
    max_abs: Vec<f64>,
    output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Quartiles {
    q1: Vec<f64>,
    q3: Vec<f64>,
}

#[derive(Deserialize)]
struct OneHot {
    columns: Vec<String>,
    categories: Vec<Vec<String>>,
    output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Digits {
    columns: Vec<String>,
    n_rows: usize,
    n_train: usize,
    rows: Vec<usize>,
    imputer: DigitsImputers,
    standard: Standard,
    min_max: MinMax,
    max_abs: MaxAbs,
}

#[derive(Deserialize)]
struct DigitsImputers {
    mean: Vec<f64>,
    median: Vec<f64>,
    most_frequent: Vec<f64>,
}

#[derive(Deserialize)]
struct Synthetic {
    numeric: std::collections::BTreeMap<String, Vec<Option<f64>>>,
    text: std::collections::BTreeMap<String, Vec<Option<String>>>,
    statistics: DigitsImputers,
    most_frequent_text: Vec<String>,
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; run python3 scripts/fixtures/prep.py"));
    serde_json::from_str(&text).unwrap()
}

/// The output rows `rows` of `m`, flattened.
fn rows_of(m: &tuneforge_prep::Matrix, rows: &[usize]) -> Vec<f64> {
    rows.iter().flat_map(|&r| m.row(r).unwrap().to_vec()).collect()
}

/// Fill values of the first impute step, in column order.
fn fills(f: &FittedPipeline) -> Vec<f64> {
    let FittedStep::Impute { fills } = &f.steps()[0] else { panic!("not an impute step") };
    fills.iter().map(|f| if let Value::Number(x) = f.value { x } else { f64::NAN }).collect()
}

/// (offset, scale) of the last step, a scale step.
fn affine(f: &FittedPipeline) -> (Vec<f64>, Vec<f64>) {
    let Some(FittedStep::Scale { columns, .. }) = f.steps().last() else { panic!("not a scale step") };
    (columns.iter().map(|a| a.offset).collect(), columns.iter().map(|a| a.scale).collect())
}

/// sklearn's `_handle_zeros_in_scale`, to compare a range or max |x| with our scale.
fn scale_of(x: f64) -> f64 {
    if x < 10.0 * f64::EPSILON { 1.0 } else { x }
}

#[test]
fn biopsy_imputers_match_simple_imputer() {
    let fx: Biopsy = load("biopsy.json");
    assert_eq!(fx.sklearn, "1.9.1");
    let data = biopsy();
    let names: Vec<&str> = data.table.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, fx.columns);
    assert_eq!(data.table.n_rows, fx.n_rows);
    for (strategy, expected) in
        [("mean", &fx.imputer.mean), ("median", &fx.imputer.median), ("most_frequent", &fx.imputer.most_frequent)]
    {
        let (f, report) = fit(&format!(r#"{{"steps":[{{"step":"impute","strategy":"{strategy}"}}]}}"#), &data.table);
        assert_close(&fills(&f), &expected.statistics, TOL, strategy);
        assert_eq!(report.missing.len(), fx.missing.len());
        for (column, n) in &fx.missing {
            assert_eq!(report.missing_in(column), *n);
            assert_eq!(report.imputed_in(column), *n);
        }
        let (m, _) = f.transform(&data.table).unwrap();
        let expected_rows: Vec<f64> = expected.output.iter().flatten().copied().collect();
        assert_close(&rows_of(&m, &fx.rows), &expected_rows, TOL, strategy);
    }
    // The rows pandas sees as missing are the rows we report dropping.
    let (_, report) = fit(r#"{"steps":[{"step":"drop_missing_rows"}]}"#, &data.table);
    let dropped: Vec<usize> = report.dropped_rows.iter().map(|d| d.row).collect();
    assert_eq!(dropped, fx.missing_rows);
}

#[test]
fn biopsy_scalers_match_after_median_imputation() {
    let fx: Biopsy = load("biopsy.json");
    let t = biopsy().table;
    let run = |method: &str| {
        let json =
            format!(r#"{{"steps":[{{"step":"impute","strategy":"median"}},{{"step":"scale","method":{method}}}]}}"#);
        let (f, _) = fit(&json, &t);
        let (m, _) = f.transform(&t).unwrap();
        (affine(&f), rows_of(&m, &fx.rows))
    };
    let s = &fx.after_median;

    let ((offset, scale), out) = run(r#""standard""#);
    assert_close(&offset, &s.standard.mean, TOL, "standard mean");
    assert_close(&scale, &s.standard.scale, TOL, "standard scale");
    assert_close(&out, &s.standard.output.concat(), TOL, "standard output");

    let ((offset, scale), out) = run(r#""min_max""#);
    assert_close(&offset, &s.min_max.data_min, TOL, "min");
    let ranges: Vec<f64> = s.min_max.data_max.iter().zip(&s.min_max.data_min).map(|(a, b)| scale_of(a - b)).collect();
    assert_close(&scale, &ranges, TOL, "range");
    assert_close(&out, &s.min_max.output.concat(), TOL, "min_max output");

    let ((_, scale), out) = run(r#""max_abs""#);
    assert_close(&scale, &s.max_abs.max_abs.iter().map(|&x| scale_of(x)).collect::<Vec<_>>(), TOL, "max_abs");
    assert_close(&out, &s.max_abs.output.concat(), TOL, "max_abs output");
}

#[test]
fn biopsy_standard_scaler_ignores_missing_values() {
    let fx: Biopsy = load("biopsy.json");
    let t = biopsy().table;
    let (f, report) = fit(r#"{"steps":[{"step":"scale","method":"standard"}]}"#, &t);
    let (offset, scale) = affine(&f);
    assert_close(&offset, &fx.standard_raw.mean, TOL, "mean");
    assert_close(&scale, &fx.standard_raw.scale, TOL, "scale");
    // Missing values stay missing, and the report says so.
    assert_eq!(report.unhandled_missing.len(), 1);
    assert_eq!(report.unhandled_missing[0].column, "V6");
    assert_eq!(report.unhandled_missing[0].count, 16);
}

#[test]
fn biopsy_iqr_bounds_use_numpy_quartiles() {
    let fx: Biopsy = load("biopsy.json");
    let t = biopsy().table;
    let (f, _) = fit(r#"{"steps":[{"step":"clip","method":{"iqr":{"k":1.5}}}]}"#, &t);
    let FittedStep::Clip { bounds } = &f.steps()[0] else { panic!() };
    for (j, b) in bounds.iter().enumerate() {
        let (q1, q3) = (fx.quartiles.q1[j], fx.quartiles.q3[j]);
        assert!((b.low - (q1 - 1.5 * (q3 - q1))).abs() < TOL, "{}", b.column);
        assert!((b.high - (q3 + 1.5 * (q3 - q1))).abs() < TOL, "{}", b.column);
    }
}

#[test]
fn biopsy_one_hot_matches_one_hot_encoder() {
    let fx: Biopsy = load("biopsy.json");
    let t: Table = biopsy_categorical();
    let cols = serde_json::to_string(&fx.one_hot.columns).unwrap();
    let (f, report) = fit(&format!(r#"{{"steps":[{{"step":"one_hot","columns":{cols}}}]}}"#), &t);
    let FittedStep::OneHot { columns, .. } = &f.steps()[0] else { panic!() };
    let cats: Vec<Vec<String>> = columns.iter().map(|c| c.categories.clone()).collect();
    assert_eq!(cats, fx.one_hot.categories);
    // V6's missing values are not one-hot's business: reported, left as NaN.
    assert_eq!(report.unhandled_missing[0].column, "V6");
    let (m, _) = f.transform(&t).unwrap();
    let names: Vec<String> = fx
        .one_hot
        .columns
        .iter()
        .zip(&fx.one_hot.categories)
        .flat_map(|(c, cats)| cats.iter().map(move |k| format!("{c}={k}")))
        .collect();
    let got: Vec<f64> =
        fx.rows.iter().flat_map(|&r| names.iter().map(move |n| (r, n))).map(|(r, n)| m.get(r, n).unwrap()).collect();
    assert_close(&got, &fx.one_hot.output.concat(), 0.0, "one-hot");
}

#[test]
fn digits_statistics_and_unseen_rows_match() {
    let fx: Digits = load("digits.json");
    let all = digits().table;
    assert_eq!(all.n_rows, fx.n_rows);
    let names: Vec<&str> = all.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, fx.columns);
    let train = take_rows(&all, &(0..fx.n_train).collect::<Vec<_>>());

    for (strategy, expected) in
        [("mean", &fx.imputer.mean), ("median", &fx.imputer.median), ("most_frequent", &fx.imputer.most_frequent)]
    {
        let (f, report) = fit(&format!(r#"{{"steps":[{{"step":"impute","strategy":"{strategy}"}}]}}"#), &train);
        assert_close(&fills(&f), expected, TOL, strategy);
        assert!(report.is_clean());
    }

    let run = |method: &str| {
        let (f, _) = fit(&format!(r#"{{"steps":[{{"step":"scale","method":"{method}"}}]}}"#), &train);
        // Transform every row: the first 1000 were seen, the rest are new.
        let (m, _) = f.transform(&all).unwrap();
        (affine(&f), rows_of(&m, &fx.rows))
    };
    let ((offset, scale), out) = run("standard");
    assert_close(&offset, &fx.standard.mean, TOL, "mean");
    // Constant pixels (e.g. pixel_0) get scale 1, as in sklearn.
    assert_close(&scale, &fx.standard.scale, TOL, "scale");
    assert_eq!(scale[0], 1.0);
    assert_close(&out, &fx.standard.output.concat(), TOL, "standard output");

    let ((offset, scale), out) = run("min_max");
    assert_close(&offset, &fx.min_max.data_min, TOL, "min");
    let ranges: Vec<f64> = fx.min_max.data_max.iter().zip(&fx.min_max.data_min).map(|(a, b)| scale_of(a - b)).collect();
    assert_close(&scale, &ranges, TOL, "range");
    assert_close(&out, &fx.min_max.output.concat(), TOL, "min_max output");

    let ((_, scale), out) = run("max_abs");
    assert_close(&scale, &fx.max_abs.max_abs.iter().map(|&x| scale_of(x)).collect::<Vec<_>>(), TOL, "max_abs");
    assert_close(&out, &fx.max_abs.output.concat(), TOL, "max_abs output");
}

#[test]
fn synthetic_ties_and_even_counts_match() {
    let fx: Synthetic = load("synthetic.json");
    let numeric: Vec<_> =
        fx.numeric.iter().map(|(k, v)| num(k, &v.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>())).collect();
    let t = table(numeric);
    for (strategy, expected) in [
        ("mean", &fx.statistics.mean),
        ("median", &fx.statistics.median),
        ("most_frequent", &fx.statistics.most_frequent),
    ] {
        let (f, _) = fit(&format!(r#"{{"steps":[{{"step":"impute","strategy":"{strategy}"}}]}}"#), &t);
        assert_close(&fills(&f), expected, 0.0, strategy);
    }
    let text: Vec<Option<&str>> = fx.text["c"].iter().map(|s| s.as_deref()).collect();
    let json = r#"{"steps":[{"step":"impute","strategy":"most_frequent"},{"step":"one_hot"}]}"#;
    let (f, _) = fit(json, &table(vec![cat("c", &text)]));
    let FittedStep::Impute { fills } = &f.steps()[0] else { panic!() };
    assert_eq!(fills[0].value, Value::Text(fx.most_frequent_text[0].clone()));
}
