//! Every `Error` variant, reached from user data or configuration, never a panic.

use tuneforge_loader::{Column, ColumnValues, Table};
use tuneforge_prep::{
    ColumnKind, Columns, Error, FittedPipeline, Impute, Outliers, PipelineConfig, Scaling, Step, Value,
};

use crate::common::*;

const NAN: f64 = f64::NAN;

fn fit_err(json: &str, t: &Table) -> Error {
    config(json).fit(t).unwrap_err()
}

/// The error's message names `what` (a column usually).
fn names(e: &Error, what: &str) {
    assert!(e.to_string().contains(what), "{e} does not name {what}");
}

fn small() -> Table {
    table(vec![num("x", &[1.0, 2.0, 3.0, NAN]), cat("c", &[Some("a"), Some("b"), None, Some("a")])])
}

#[test]
fn empty_tables() {
    let no_rows = table(vec![num("x", &[])]);
    assert_eq!(fit_err(r#"{"steps":[]}"#, &no_rows), Error::EmptyTable { rows: 0, columns: 1 });
    let no_cols = Table { columns: vec![], row_names: None, n_rows: 3 };
    assert_eq!(fit_err(r#"{"steps":[]}"#, &no_cols), Error::EmptyTable { rows: 3, columns: 0 });
}

#[test]
fn all_missing_columns() {
    let t = table(vec![num("x", &[1.0, 2.0]), num("gone", &[NAN, NAN])]);
    let e = fit_err(r#"{"steps":[]}"#, &t);
    assert_eq!(e, Error::AllMissing { column: "gone".into(), step: None });
    names(&e, "gone");
    let t = table(vec![cat("c", &[None, None]), num("x", &[1.0, 2.0])]);
    assert_eq!(fit_err(r#"{"steps":[]}"#, &t), Error::AllMissing { column: "c".into(), step: None });
    // All missing in the rows left after a step.
    let t = table(vec![num("a", &[1.0, NAN]), num("b", &[NAN, 2.0])]);
    let e =
        fit_err(r#"{"steps":[{"step":"drop_missing_rows","columns":["a"]},{"step":"impute","strategy":"mean"}]}"#, &t);
    assert_eq!(e, Error::AllMissing { column: "b".into(), step: Some(1) });
    for step in [
        r#"{"step":"impute","strategy":"median"}"#,
        r#"{"step":"impute","strategy":"most_frequent"}"#,
        r#"{"step":"clip","method":{"iqr":{"k":1}}}"#,
        r#"{"step":"clip","method":{"z_score":{"threshold":3}}}"#,
        r#"{"step":"scale","method":"standard"}"#,
        r#"{"step":"scale","method":"min_max"}"#,
        r#"{"step":"scale","method":"max_abs"}"#,
        r#"{"step":"drop_constant"}"#,
    ] {
        let json = format!(r#"{{"steps":[{{"step":"drop_missing_rows","columns":["a"]}},{step}]}}"#);
        assert_eq!(fit_err(&json, &t), Error::AllMissing { column: "b".into(), step: Some(1) }, "{step}");
    }
    let t = table(vec![num("a", &[1.0, NAN]), cat("b", &[None, Some("x")])]);
    for step in
        [r#"{"step":"one_hot"}"#, r#"{"step":"drop_constant"}"#, r#"{"step":"impute","strategy":"most_frequent"}"#]
    {
        let json = format!(r#"{{"steps":[{{"step":"drop_missing_rows","columns":["a"]}},{step}]}}"#);
        assert_eq!(fit_err(&json, &t), Error::AllMissing { column: "b".into(), step: Some(1) }, "{step}");
    }
}

#[test]
fn no_rows_or_columns_left() {
    let t = table(vec![num("a", &[1.0, NAN]), num("b", &[NAN, 2.0])]);
    assert_eq!(fit_err(r#"{"steps":[{"step":"drop_missing_rows"}]}"#, &t), Error::NoRowsLeft { step: 0, dropped: 2 });
    let t = table(vec![num("a", &[1.0, 1.0]), cat("b", &[Some("k"), Some("k")])]);
    assert_eq!(fit_err(r#"{"steps":[{"step":"drop_constant"}]}"#, &t), Error::NoColumnsLeft { step: 0 });
}

#[test]
fn malformed_tables() {
    let ragged = Table { columns: vec![num("x", &[1.0, 2.0]), num("short", &[1.0])], row_names: None, n_rows: 2 };
    let e = fit_err(r#"{"steps":[]}"#, &ragged);
    assert_eq!(e, Error::RaggedColumn { column: "short".into(), len: 1, n_rows: 2 });
    names(&e, "short");

    let dup = table(vec![num("x", &[1.0]), num("x", &[2.0])]);
    assert_eq!(fit_err(r#"{"steps":[]}"#, &dup), Error::DuplicateColumn { column: "x".into() });

    let bad = Column {
        name: "c".into(),
        values: ColumnValues::Categorical { levels: vec!["a".into()], codes: vec![Some(0), Some(5)] },
        missing: 0,
    };
    let e = fit_err(r#"{"steps":[]}"#, &table(vec![bad]));
    assert_eq!(e, Error::BadCode { column: "c".into(), row: 1, code: 5, levels: 1 });

    let inf = table(vec![num("x", &[1.0, f64::INFINITY])]);
    let e = fit_err(r#"{"steps":[]}"#, &inf);
    assert_eq!(e, Error::NonFinite { column: "x".into(), row: 1, value: f64::INFINITY });
    names(&e, "x");

    // The same checks guard transform.
    let (f, _) = fit(r#"{"steps":[]}"#, &table(vec![num("x", &[1.0, 2.0])]));
    assert!(matches!(f.transform(&inf), Err(Error::NonFinite { .. })));
    let ragged = Table { columns: vec![num("x", &[1.0])], row_names: None, n_rows: 2 };
    assert!(matches!(f.transform(&ragged), Err(Error::RaggedColumn { .. })));
}

#[test]
fn one_hot_name_collision() {
    let t = table(vec![cat("c", &[Some("x"), Some("y")]), num("c=x", &[1.0, 2.0])]);
    let e = fit_err(r#"{"steps":[{"step":"one_hot"}]}"#, &t);
    assert_eq!(e, Error::DuplicateColumn { column: "c=x".into() });
}

#[test]
fn bad_column_selections() {
    let e = fit_err(r#"{"steps":[{"step":"scale","columns":["nope"],"method":"standard"}]}"#, &small());
    assert_eq!(e, Error::UnknownColumn { step: 0, column: "nope".into(), available: vec!["x".into(), "c".into()] });
    names(&e, "nope");
    // A column dropped by an earlier step is gone.
    let t = table(vec![num("k", &[1.0, 1.0]), num("x", &[1.0, 2.0])]);
    let e = fit_err(r#"{"steps":[{"step":"drop_constant"},{"step":"scale","columns":["k"],"method":"standard"}]}"#, &t);
    assert!(matches!(e, Error::UnknownColumn { step: 1, .. }));

    let wrong = |json: &str, column: &str, expected, found| {
        let e = fit_err(json, &small());
        assert_eq!(e, Error::WrongKind { step: 0, column: column.into(), expected, found }, "{json}");
        names(&e, column);
    };
    use ColumnKind::*;
    wrong(r#"{"steps":[{"step":"scale","columns":["c"],"method":"min_max"}]}"#, "c", Numeric, Categorical);
    wrong(r#"{"steps":[{"step":"clip","columns":["c"],"method":{"iqr":{"k":1.5}}}]}"#, "c", Numeric, Categorical);
    wrong(r#"{"steps":[{"step":"impute","columns":["c"],"strategy":"mean"}]}"#, "c", Numeric, Categorical);
    wrong(r#"{"steps":[{"step":"impute","columns":["x"],"strategy":{"constant":"none"}}]}"#, "x", Categorical, Numeric);
    wrong(r#"{"steps":[{"step":"impute","columns":["c"],"strategy":{"constant":0}}]}"#, "c", Numeric, Categorical);
    wrong(r#"{"steps":[{"step":"one_hot","columns":["x"]}]}"#, "x", Categorical, Numeric);
}

#[test]
fn invalid_parameters() {
    let t = small();
    let one = |step: Step| {
        PipelineConfig { steps: vec![Step::OneHot { columns: Columns::All, unknown: Default::default() }, step] }
            .fit(&t)
            .unwrap_err()
    };
    let e = one(Step::Clip { columns: Columns::All, method: Outliers::Iqr { k: -1.0 } });
    assert_eq!(e, Error::InvalidParameter { step: 1, name: "k", value: -1.0, requirement: "finite and >= 0" });
    let e = one(Step::Clip { columns: Columns::All, method: Outliers::ZScore { threshold: 0.0 } });
    assert!(matches!(e, Error::InvalidParameter { step: 1, name: "threshold", .. }));
    let e = one(Step::Clip { columns: Columns::All, method: Outliers::Iqr { k: f64::NAN } });
    assert!(matches!(e, Error::InvalidParameter { name: "k", .. }));
    let e = one(Step::Scale { columns: Columns::All, method: Scaling::Divide(0.0) });
    assert!(matches!(e, Error::InvalidParameter { name: "divisor", .. }));
    let e = one(Step::Impute { columns: Columns::All, strategy: Impute::Constant(Value::Number(f64::INFINITY)) });
    assert!(matches!(e, Error::InvalidParameter { name: "value", .. }));
}

#[test]
fn categorical_left_unencoded() {
    let e = fit_err(r#"{"steps":[{"step":"impute","strategy":"mean"}]}"#, &small());
    assert_eq!(e, Error::NotEncoded { column: "c".into() });
    names(&e, "c");
}

#[test]
fn transform_schema_mismatches() {
    let (f, _) = fit(r#"{"steps":[{"step":"one_hot"}]}"#, &small());
    let e = f.transform(&table(vec![num("x", &[1.0])])).unwrap_err();
    assert_eq!(e, Error::MissingColumn { column: "c".into() });
    names(&e, "c");
    let extra = table(vec![num("x", &[1.0]), cat("c", &[Some("a")]), num("label", &[0.0])]);
    assert_eq!(f.transform(&extra).unwrap_err(), Error::UnexpectedColumn { column: "label".into() });
    let kinds = table(vec![num("x", &[1.0]), num("c", &[1.0])]);
    let e = f.transform(&kinds).unwrap_err();
    assert_eq!(
        e,
        Error::KindMismatch { column: "c".into(), fitted: ColumnKind::Categorical, found: ColumnKind::Numeric }
    );
    names(&e, "c");
    // Column order does not matter.
    let reordered = table(vec![cat("c", &[Some("b")]), num("x", &[7.0])]);
    assert_eq!(f.transform(&reordered).unwrap().0.values, [7.0, 0.0, 1.0]);
}

#[test]
fn unknown_categories() {
    let (f, _) = fit(r#"{"steps":[{"step":"one_hot","unknown":"error"}]}"#, &small());
    let new = table(vec![num("x", &[1.0, 2.0]), cat("c", &[Some("a"), Some("zzz")])]);
    let e = f.transform(&new).unwrap_err();
    assert_eq!(e, Error::UnknownCategory { column: "c".into(), row: 1, value: "zzz".into() });
    names(&e, "zzz");
    let (f, _) = fit(r#"{"steps":[{"step":"one_hot","unknown":"ignore"}]}"#, &small());
    let (m, report) = f.transform(&new).unwrap();
    assert_eq!(m.columns, ["x", "c=a", "c=b"]);
    assert_eq!(m.values, [1.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
    assert_eq!(report.unknown_categories[0].column, "c");
    assert_eq!(report.unknown_categories[0].count, 1);
}

#[test]
fn batch_errors() {
    let t = table(vec![num("x", &[1.0, 2.0, 3.0]), num("k", &[5.0, 5.0, 5.0]), num("y", &[0.0, 4.0, 8.0])]);
    let (f, _) = fit(r#"{"steps":[{"step":"scale","method":"min_max"}]}"#, &t);
    let rt = f.row_transform().unwrap();
    let mut out = vec![0f32; 6];
    assert_eq!(
        rt.apply(&[1f32, 2.0, 3.0, 4.0], &mut out).unwrap_err(),
        Error::BatchShape { what: "input", len: 4, rows: 0, width: 3 }
    );
    assert_eq!(
        rt.apply(&[1f32, 2.0, 3.0], &mut out).unwrap_err(),
        Error::BatchShape { what: "output", len: 6, rows: 1, width: 3 }
    );
    assert!(matches!(rt.apply_in_place(&mut [1f64; 4]), Err(Error::BatchShape { what: "rows", .. })));

    let (f, _) = fit(r#"{"steps":[{"step":"drop_constant"}]}"#, &t);
    let rt = f.row_transform().unwrap();
    assert!(matches!(rt.apply_in_place(&mut [1f64; 3]), Err(Error::NotRowWise { step: None, .. })));

    let (f, _) = fit(r#"{"steps":[{"step":"one_hot"}]}"#, &small());
    let e = f.row_transform().unwrap_err();
    assert_eq!(e, Error::NotRowWise { step: None, column: Some("c".into()), why: "categorical input column" });
    let (f, _) = fit(r#"{"steps":[{"step":"drop_missing_rows"}]}"#, &t);
    assert!(matches!(f.row_transform(), Err(Error::NotRowWise { step: Some(0), .. })));
}

#[test]
fn bad_fitted_json() {
    assert!(matches!(FittedPipeline::from_json("{"), Err(Error::Json { .. })));
    let (f, _) = fit(r#"{"steps":[{"step":"scale","method":"standard"},{"step":"one_hot"}]}"#, &small());
    let json = f.to_json().unwrap();
    // A step naming a column that does not exist.
    let renamed = json.replacen(r#""column": "x""#, r#""column": "q""#, 1);
    assert_ne!(renamed, json);
    assert_eq!(FittedPipeline::from_json(&renamed).unwrap_err(), Error::MissingColumn { column: "q".into() });
    // Outputs that the steps do not produce.
    let outputs = json.replace(r#""c=b""#, r#""c=z""#);
    assert!(matches!(FittedPipeline::from_json(&outputs), Err(Error::Json { .. })));
    // A zero scale.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut v = v;
    v["steps"][0]["columns"][0]["scale"] = serde_json::json!(0.0);
    assert!(matches!(FittedPipeline::from_json(&v.to_string()), Err(Error::Json { .. })));
    // Unknown fields are refused rather than ignored.
    let typo = json.replacen(r#""inputs""#, r#""inputz""#, 1);
    assert!(matches!(FittedPipeline::from_json(&typo), Err(Error::Json { .. })));
}

#[test]
fn config_typos_are_refused() {
    assert!(serde_json::from_str::<PipelineConfig>(r#"{"steps":[{"step":"scale","methd":"standard"}]}"#).is_err());
    assert!(serde_json::from_str::<PipelineConfig>(r#"{"steps":[{"step":"rescale"}]}"#).is_err());
    assert!(serde_json::from_str::<PipelineConfig>(r#"{"steps":[{"step":"one_hot","columns":"every"}]}"#).is_err());
}
