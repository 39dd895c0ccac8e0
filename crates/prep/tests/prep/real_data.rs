//! Real data: `datasets/biopsy.csv` (16 missing values in V6) and `datasets/digits.csv`.

use tuneforge_prep::{ColumnReason, RowReason, Value};

use crate::common::*;

#[test]
fn biopsy_report_finds_the_missing_values() {
    let data = biopsy();
    let (f, report) = fit(
        r#"{"steps":[{"step":"impute","columns":["V6"],"strategy":"median"},{"step":"scale","method":"min_max"}]}"#,
        &data.table,
    );
    assert_eq!(report.missing_in("V6"), 16);
    assert_eq!(report.missing.len(), 1, "{report}");
    assert_eq!(report.imputed_in("V6"), 16);
    assert_eq!(report.imputed[0].value, Value::Number(1.0));
    assert!(report.unhandled_missing.is_empty());
    assert_eq!((report.rows_in, report.rows_out), (699, 699));
    let (m, _) = f.transform(&data.table).unwrap();
    assert_eq!(m.n_rows(), data.labels.len());
    assert!(m.values.iter().all(|x| (0.0..=1.0).contains(x)));
    assert_eq!(f.output_columns(), (1..=9).map(|i| format!("V{i}")).collect::<Vec<_>>());
}

#[test]
fn biopsy_dropping_rows_keeps_labels_aligned() {
    let data = biopsy();
    let (f, report) = fit(r#"{"steps":[{"step":"drop_missing_rows"}]}"#, &data.table);
    assert_eq!(report.rows_out, 683);
    assert_eq!(report.dropped_rows.len(), 16);
    assert!(report.dropped_rows.iter().all(|d| d.reason == RowReason::Missing { column: "V6".into() }));
    let (m, _) = f.transform(&data.table).unwrap();
    assert_eq!(m.n_rows(), 683);
    // Labels follow the kept rows.
    let labels: Vec<u32> = m.rows.iter().map(|&r| data.labels[r]).collect();
    assert_eq!(labels.len(), 683);
    let names = data.table.row_names.as_ref().unwrap();
    let dropped: Vec<&str> = report.dropped_rows.iter().map(|d| names[d.row].as_str()).collect();
    assert!(dropped.contains(&"24"), "{dropped:?}");
}

#[test]
fn biopsy_split_fit_on_train_only() {
    let data = biopsy();
    let train_rows: Vec<usize> = (0..data.table.n_rows).filter(|r| r % 5 != 0).collect();
    let test_rows: Vec<usize> = (0..data.table.n_rows).filter(|r| r % 5 == 0).collect();
    let (train, test) = (take_rows(&data.table, &train_rows), take_rows(&data.table, &test_rows));
    let json = r#"{"steps":[{"step":"impute","strategy":"mean"},{"step":"clip","method":{"iqr":{"k":1.5}}},{"step":"scale","method":"standard"}]}"#;
    let (f, report) = fit(json, &train);
    let (f_all, _) = fit(json, &data.table);
    // Different training rows, different parameters: the test rows never entered `f`.
    assert_ne!(f, f_all);
    assert_eq!(report.missing_in("V6") + test.column("V6").unwrap().missing, 16);
    let (x_test, tr) = f.transform(&test).unwrap();
    assert_eq!(tr.missing_in("V6"), test.column("V6").unwrap().missing);
    assert!(x_test.values.iter().all(|x| x.is_finite()));
    // Standardised training columns have mean ~0 (after clipping); the test's need not.
    let (x_train, _) = f.transform(&train).unwrap();
    for c in &x_train.columns {
        let col = x_train.column(c).unwrap();
        assert!((col.iter().sum::<f64>() / col.len() as f64).abs() < 1e-9, "{c}");
    }
}

#[test]
fn biopsy_one_hot_names() {
    let t = biopsy_categorical();
    let (f, report) =
        fit(r#"{"steps":[{"step":"impute","strategy":"median"},{"step":"one_hot","columns":["V1","class"]}]}"#, &t);
    assert_eq!(report.missing_in("V6"), 16);
    let outs = f.output_columns();
    assert_eq!(&outs[..3], ["V1=1", "V1=2", "V1=3"]);
    assert_eq!(outs[9], "V1=10");
    assert_eq!(&outs[outs.len() - 2..], ["class=benign", "class=malignant"]);
    let (m, _) = f.transform(&t).unwrap();
    assert_eq!(m.n_cols(), 10 + 8 + 2);
}

#[test]
fn digits_pixels() {
    let data = digits();
    let (f, report) =
        fit(r#"{"steps":[{"step":"drop_constant"},{"step":"scale","method":{"divide":16}}]}"#, &data.table);
    assert!(report.missing.is_empty());
    let dropped: Vec<&str> = report.dropped_columns.iter().map(|d| d.column.as_str()).collect();
    assert!(dropped.contains(&"pixel_0"), "{dropped:?}");
    for d in &report.dropped_columns {
        assert_eq!(d.reason, ColumnReason::Constant { value: Value::Number(0.0), missing: 0 });
    }
    assert_eq!(f.output_columns().len(), 64 - dropped.len());
    let (m, _) = f.transform(&data.table).unwrap();
    assert!(m.values.iter().all(|x| (0.0..=1.0).contains(x)));

    // The batch form gives the same numbers on the loader's f32 rows.
    let rt = f.row_transform().unwrap();
    let rows: Vec<f32> = (0..data.table.n_rows)
        .flat_map(|r| {
            data.table.columns.iter().map(move |c| match &c.values {
                tuneforge_loader::ColumnValues::Numeric(v) => v[r] as f32,
                _ => unreachable!(),
            })
        })
        .collect();
    let mut out = vec![0f32; m.values.len()];
    assert_eq!(rt.apply(&rows, &mut out).unwrap(), data.table.n_rows);
    assert_eq!(out, m.to_f32());
}
