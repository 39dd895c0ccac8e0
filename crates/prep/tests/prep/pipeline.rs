//! Step behaviour and reports on hand-built tables; serialisation; leak-freedom; the batch
//! form.

use proptest::prelude::*;
use tuneforge_loader::Table;
use tuneforge_prep::{
    ColumnReason, Columns, FittedPipeline, FittedStep, Impute, PipelineConfig, RowReason, Scaling, Step, Value,
};

use crate::common::*;

const NAN: f64 = f64::NAN;

#[test]
fn config_json_forms() {
    let json = r#"{"steps": [
        {"step": "drop_missing_rows", "columns": ["a"]},
        {"step": "impute", "columns": ["V6"], "strategy": "median"},
        {"step": "impute", "strategy": {"constant": "unknown"}},
        {"step": "impute", "strategy": {"constant": -1}},
        {"step": "clip", "method": {"iqr": {"k": 1.5}}},
        {"step": "clip", "columns": "all", "method": {"z_score": {"threshold": 3}}},
        {"step": "scale", "method": "standard"},
        {"step": "scale", "method": {"divide": 255}},
        {"step": "one_hot", "columns": ["colour"], "unknown": "ignore"},
        {"step": "drop_constant"}
    ]}"#;
    let c = config(json);
    assert_eq!(c.steps.len(), 10);
    assert_eq!(c.steps[1], Step::Impute { columns: Columns::names(&["V6"]), strategy: Impute::Median });
    assert_eq!(c.steps[3], Step::Impute { columns: Columns::All, strategy: Impute::Constant(Value::Number(-1.0)) });
    assert_eq!(c.steps[7], Step::Scale { columns: Columns::All, method: Scaling::Divide(255.0) });
    let back: PipelineConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn drop_missing_rows_reports_and_applies_at_transform() {
    let t = table(vec![num("x", &[1.0, NAN, 3.0, 4.0]), cat("c", &[Some("a"), Some("b"), None, Some("a")])]);
    let (f, report) = fit(r#"{"steps":[{"step":"drop_missing_rows"},{"step":"one_hot"}]}"#, &t);
    assert_eq!((report.rows_in, report.rows_out), (4, 2));
    let reasons: Vec<(usize, RowReason)> = report.dropped_rows.iter().map(|d| (d.row, d.reason.clone())).collect();
    assert_eq!(
        reasons,
        [(1, RowReason::Missing { column: "x".into() }), (2, RowReason::Missing { column: "c".into() })]
    );
    assert_eq!(report.missing_in("x"), 1);
    assert_eq!(report.missing_in("c"), 1);
    // "b" only occurred in a dropped row, so it is not a category.
    assert_eq!(f.output_columns(), ["x", "c=a"]);
    let (m, tr) = f.transform(&t).unwrap();
    assert_eq!(m.rows, [0, 3]);
    assert_eq!(m.values, [1.0, 1.0, 4.0, 1.0]);
    assert_eq!(tr.dropped_rows.len(), 2);
}

#[test]
fn impute_constant_category_then_one_hot() {
    let t = table(vec![cat("c", &[Some("b"), None, Some("a")])]);
    let (f, report) =
        fit(r#"{"steps":[{"step":"impute","strategy":{"constant":"(missing)"}},{"step":"one_hot"}]}"#, &t);
    assert_eq!(report.imputed[0].value, Value::Text("(missing)".into()));
    assert_eq!(f.output_columns(), ["c=(missing)", "c=a", "c=b"]);
    let (m, _) = f.transform(&table(vec![cat("c", &[None, Some("b")])])).unwrap();
    assert_eq!(m.values, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn one_hot_of_missing_is_all_zeros_and_reported() {
    let t = table(vec![cat("c", &[Some("b"), None, Some("a")])]);
    let (f, report) = fit(r#"{"steps":[{"step":"one_hot"}]}"#, &t);
    assert_eq!(report.unhandled_missing[0].column, "c");
    let (m, tr) = f.transform(&t).unwrap();
    assert_eq!(m.values, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(tr.unhandled_missing[0].count, 1);
}

#[test]
fn clipping_counts_and_bounds() {
    // q1 = 2, q3 = 4 (linear), iqr = 2, k = 1 → [0, 6].
    let t = table(vec![num("x", &[-5.0, 2.0, 3.0, 4.0, 100.0])]);
    let (f, report) = fit(r#"{"steps":[{"step":"clip","method":{"iqr":{"k":1}}}]}"#, &t);
    assert_eq!(report.clipped_in("x"), 2);
    assert_eq!((report.clipped[0].below, report.clipped[0].above), (1, 1));
    let (m, _) = f.transform(&t).unwrap();
    assert_eq!(m.values, [0.0, 2.0, 3.0, 4.0, 6.0]);
    // Transform clips to training bounds and counts what it clipped.
    let (m, tr) = f.transform(&table(vec![num("x", &[7.0, NAN])])).unwrap();
    assert_eq!(m.values[0], 6.0);
    assert!(m.values[1].is_nan());
    assert_eq!(tr.clipped_in("x"), 1);
    assert_eq!(tr.unhandled_missing[0].count, 1);

    // z-score: mean 0, population std 1 for [-1, 1, -1, 1]; threshold 0.5.
    let t = table(vec![num("z", &[-1.0, 1.0, -1.0, 1.0])]);
    let (f, report) = fit(r#"{"steps":[{"step":"clip","method":{"z_score":{"threshold":0.5}}}]}"#, &t);
    assert_eq!(report.clipped_in("z"), 4);
    assert_eq!(f.transform(&t).unwrap().0.values, [-0.5, 0.5, -0.5, 0.5]);
}

#[test]
fn scaling_constant_columns_follows_sklearn() {
    let t = table(vec![num("k", &[3.0, 3.0, 3.0]), num("zero", &[0.0, 0.0, 0.0]), num("x", &[0.0, 5.0, 10.0])]);
    let out = |method: &str| {
        let (f, _) = fit(&format!(r#"{{"steps":[{{"step":"scale","method":{method}}}]}}"#), &t);
        f.transform(&t).unwrap().0.values
    };
    // Standard: constant → 0; x: mean 5, std sqrt(50/3).
    let s = (50.0f64 / 3.0).sqrt();
    assert_close(&out(r#""standard""#), &[0.0, 0.0, -5.0 / s, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0 / s], 1e-12, "standard");
    // Min-max: constant → 0.
    assert_eq!(out(r#""min_max""#), [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0]);
    // Max-abs: the constant 3 → 1, all-zero stays 0.
    assert_eq!(out(r#""max_abs""#), [1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0]);
    assert_eq!(out(r#"{"divide":5}"#), [0.6, 0.0, 0.0, 0.6, 0.0, 1.0, 0.6, 0.0, 2.0]);
}

#[test]
fn drop_constant_reports_reasons() {
    let t = table(vec![
        num("k", &[3.0, NAN, 3.0]),
        cat("only", &[Some("a"), Some("a"), Some("a")]),
        num("x", &[1.0, 2.0, 3.0]),
    ]);
    let (f, report) = fit(r#"{"steps":[{"step":"drop_constant"}]}"#, &t);
    assert_eq!(f.output_columns(), ["x"]);
    let reasons: Vec<(&str, &ColumnReason)> =
        report.dropped_columns.iter().map(|d| (d.column.as_str(), &d.reason)).collect();
    assert_eq!(
        reasons,
        [
            ("k", &ColumnReason::Constant { value: Value::Number(3.0), missing: 1 }),
            ("only", &ColumnReason::Constant { value: Value::Text("a".into()), missing: 0 }),
        ]
    );
    assert!(report.to_string().contains("dropped column: step 0 k (constant 3)"));
    // The categorical column was dropped, so nothing is left unencoded; at transform the
    // dropped columns must still be present (same schema) but are ignored.
    let (m, _) = f.transform(&t).unwrap();
    assert_eq!(m.values, [1.0, 2.0, 3.0]);
}

fn mixed_pipeline() -> PipelineConfig {
    config(
        r#"{"steps":[
            {"step":"impute","columns":["x"],"strategy":"median"},
            {"step":"impute","strategy":"most_frequent"},
            {"step":"clip","method":{"iqr":{"k":1.5}}},
            {"step":"scale","method":"standard"},
            {"step":"one_hot","unknown":"ignore"},
            {"step":"drop_constant"}
        ]}"#,
    )
}

fn mixed_train() -> Table {
    table(vec![
        num("x", &[1.0, 2.0, NAN, 4.0, 50.0, 3.0]),
        num("y", &[0.5, NAN, 0.25, 0.125, 1.0, 2.0]),
        cat("c", &[Some("r"), Some("g"), None, Some("r"), Some("b"), Some("g")]),
    ])
}

#[test]
fn fitted_pipeline_json_round_trip() {
    let t = mixed_train();
    let (f, report) = mixed_pipeline().fit(&t).unwrap();
    let json = f.to_json().unwrap();
    let back = FittedPipeline::from_json(&json).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.to_json().unwrap(), json);
    assert_eq!(back.transform(&t).unwrap().0.values, f.transform(&t).unwrap().0.values);
    // Plain serde works too, and the report serialises for logs.
    let via_serde: FittedPipeline = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(via_serde, f);
    let r: tuneforge_prep::FitReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(r, report);
}

#[test]
fn transform_never_learns() {
    let train = mixed_train();
    let (f, _) = mixed_pipeline().fit(&train).unwrap();
    let before = f.clone();
    let json = f.to_json().unwrap();
    // Very different statistics, missing values, an unseen category.
    let other = table(vec![
        num("x", &[1000.0, NAN, -3000.0, 7.0]),
        num("y", &[NAN, NAN, 99.0, -99.0]),
        cat("c", &[Some("purple"), None, Some("r"), Some("b")]),
    ]);
    let (train_out, _) = f.transform(&train).unwrap();
    f.transform(&other).unwrap();
    assert_eq!(f, before);
    assert_eq!(f.to_json().unwrap(), json);
    // The training rows' output does not depend on what else is transformed with them.
    let (both, _) = f.transform(&concat(&train, &other)).unwrap();
    let w = train_out.n_cols();
    assert_eq!(&both.values[..train.n_rows * w], &train_out.values[..]);
    // Fit-time output (what the report describes) equals a later transform of the same rows.
    let (again, _) = f.transform(&train).unwrap();
    assert_eq!(again, train_out);
}

#[test]
fn report_display_summarises() {
    let (_, report) = mixed_pipeline().fit(&mixed_train()).unwrap();
    let text = report.to_string();
    assert!(text.contains("missing: x 1, y 1, c 1"), "{text}");
    assert!(text.contains("imputed: step 0 x 1 with 3"), "{text}");
}

#[test]
fn batch_form_matches_table_form() {
    let t = table(vec![
        num("a", &[1.0, NAN, 3.0, 10.0]),
        num("k", &[2.0, 2.0, 2.0, 2.0]),
        num("b", &[-1.0, 0.0, 1.0, 2.0]),
    ]);
    let (f, _) = fit(
        r#"{"steps":[{"step":"impute","strategy":"mean"},{"step":"clip","method":{"z_score":{"threshold":1}}},{"step":"scale","method":"min_max"},{"step":"drop_constant"}]}"#,
        &t,
    );
    let rt = f.row_transform().unwrap();
    assert_eq!((rt.in_width(), rt.out_width()), (3, 2));
    assert_eq!(rt.output_columns(), f.output_columns());
    let rows = [1.0, 2.0, -1.0, NAN, 2.0, 0.0, 3.0, 2.0, 1.0, 10.0, 2.0, 2.0, 50.0, 9.0, -9.0];
    let mut out = vec![0.0; 10];
    assert_eq!(rt.apply(&rows, &mut out).unwrap(), 5);
    let extra = table(vec![num("a", &[50.0]), num("k", &[9.0]), num("b", &[-9.0])]);
    let (m, _) = f.transform(&concat(&t, &extra)).unwrap();
    assert_eq!(out, m.values);
    let rows32: Vec<f32> = rows.iter().map(|&x| x as f32).collect();
    let mut out32 = vec![0f32; 10];
    rt.apply(&rows32, &mut out32).unwrap();
    assert_close(&out32.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), &m.values, 1e-6, "f32");

    // In place when nothing is dropped.
    let (f, _) = fit(r#"{"steps":[{"step":"scale","method":{"divide":255}}]}"#, &table(vec![num("p", &[0.0, 255.0])]));
    let mut pixels = [0f32, 51.0, 255.0];
    assert_eq!(f.row_transform().unwrap().apply_in_place(&mut pixels).unwrap(), 3);
    assert_eq!(pixels, [0.0, 0.2, 1.0]);
}

#[test]
fn zero_rows_transform_to_an_empty_matrix() {
    let (f, _) = mixed_pipeline().fit(&mixed_train()).unwrap();
    let empty = table(vec![num("x", &[]), num("y", &[]), cat("c", &[])]);
    let (m, report) = f.transform(&empty).unwrap();
    assert_eq!(m.n_rows(), 0);
    assert_eq!(m.columns, f.output_columns());
    assert_eq!(report.rows_in, 0);
}

#[test]
fn steps_are_addressed_by_name() {
    let (f, _) = mixed_pipeline().fit(&mixed_train()).unwrap();
    let FittedStep::Impute { fills } = &f.steps()[0] else { panic!() };
    assert_eq!(fills[0].column, "x");
    assert_eq!(fills[0].value, Value::Number(3.0));
}

fn arb_table(rows: std::ops::Range<usize>) -> impl Strategy<Value = Table> {
    rows.prop_flat_map(|n| {
        (
            prop::collection::vec(prop::option::weighted(0.8, -100.0f64..100.0), n),
            prop::collection::vec(prop::option::weighted(0.8, 0usize..4), n),
        )
    })
    .prop_map(|(x, c)| {
        let x: Vec<f64> = x.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        let names = ["p", "q", "r", "s"];
        let c: Vec<Option<&str>> = c.into_iter().map(|v| v.map(|i| names[i])).collect();
        table(vec![num("x", &x), cat("c", &c)])
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the training data, fitting never panics, and a transformed row depends only
    /// on that row.
    #[test]
    fn rows_are_independent(train in arb_table(1..30), other in arb_table(0..30)) {
        let config = config(r#"{"steps":[
            {"step":"impute","columns":["x"],"strategy":"median"},
            {"step":"clip","method":{"z_score":{"threshold":2}}},
            {"step":"scale","method":"standard"},
            {"step":"one_hot","unknown":"ignore"}
        ]}"#);
        let Ok((f, _)) = config.fit(&train) else { return Ok(()) };
        let before = f.clone();
        let (alone, _) = f.transform(&train).unwrap();
        let (both, _) = f.transform(&concat(&train, &other)).unwrap();
        prop_assert_eq!(&f, &before);
        let w = alone.n_cols();
        for (a, b) in alone.values.iter().zip(&both.values[..train.n_rows * w]) {
            prop_assert!(a == b || (a.is_nan() && b.is_nan()));
        }
    }
}
