//! Integration tests for `tuneforge-eval`: parity with scikit-learn 1.9.1 on the fixtures
//! written by `python3 scripts/fixtures/eval.py`, streaming and merging, and a
//! nearest-centroid classifier on `datasets/digits.csv`.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers below; a panic
// is how a test helper reports a broken fixture.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use serde::Deserialize;
use tuneforge_eval::{Averages, ClassificationReport, ConfusionMatrix, ProbabilityMetrics};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/digits.csv");
const TOLERANCE: f64 = 1e-9;

/// The cases the script writes; a missing file fails the test rather than shrinking it.
const CASES: [&str; 7] = [
    "five_absent_unpredicted",
    "binary_ties",
    "ten_sparse",
    "three_one_unused",
    "binary_one_class_predicted",
    "perfect_one_hot",
    "digits_nearest_centroid",
];

#[derive(Deserialize)]
struct Case {
    name: String,
    num_classes: usize,
    class_names: Vec<String>,
    y_true: Vec<u32>,
    y_pred: Vec<u32>,
    /// Probability row `i` is `weights[i][j] / sum_j weights[i][j]`.
    weights: Option<Vec<Vec<u64>>>,
    /// Only for the digits case.
    train_rows: Option<usize>,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    confusion_matrix: Vec<Vec<u64>>,
    accuracy: f64,
    balanced_accuracy: f64,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    support: Vec<u64>,
    #[serde(rename = "macro")]
    macro_avg: ExpectedAverages,
    micro: ExpectedAverages,
    weighted: ExpectedAverages,
    report_2: String,
    report_4: String,
    report_names_3: String,
    /// `top_k[k - 1]` for `k` in `1..=num_classes`.
    top_k: Option<Vec<f64>>,
    log_loss: Option<f64>,
}

#[derive(Deserialize)]
struct ExpectedAverages {
    precision: f64,
    recall: f64,
    f1: f64,
}

fn load(name: &str) -> Case {
    let path = Path::new(FIXTURES).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run python3 scripts/fixtures/eval.py", path.display()));
    let case: Case = serde_json::from_str(&text).unwrap();
    assert_eq!(case.name, name);
    case
}

/// The integer weights as flat row-major probabilities, one division per value (as the
/// script computes them).
fn probabilities(weights: &[Vec<u64>]) -> Vec<f64> {
    weights
        .iter()
        .flat_map(|row| {
            let sum: u64 = row.iter().sum();
            row.iter().map(move |&w| w as f64 / sum as f64)
        })
        .collect()
}

fn close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= TOLERANCE,
        "{what}: {actual} vs scikit-learn {expected} (diff {:e})",
        (actual - expected).abs()
    );
}

fn close_averages(what: &str, actual: &Averages, expected: &ExpectedAverages) {
    close(&format!("{what} precision"), actual.precision, expected.precision);
    close(&format!("{what} recall"), actual.recall, expected.recall);
    close(&format!("{what} f1"), actual.f1, expected.f1);
}

/// Every label metric of `matrix` against scikit-learn's.
fn check_labels(case: &Case, matrix: &ConfusionMatrix) {
    let e = &case.expected;
    let name = &case.name;
    let n = case.num_classes;
    let rows: Vec<&[u64]> = matrix.counts().chunks(n).collect();
    assert_eq!(rows, e.confusion_matrix.iter().map(Vec::as_slice).collect::<Vec<_>>(), "{name}");
    let report = matrix.report();
    close(&format!("{name} accuracy"), report.accuracy, e.accuracy);
    close(&format!("{name} balanced accuracy"), report.balanced_accuracy, e.balanced_accuracy);
    assert_eq!(report.per_class.len(), n);
    for (c, m) in report.per_class.iter().enumerate() {
        close(&format!("{name} precision[{c}]"), m.precision, e.precision[c]);
        close(&format!("{name} recall[{c}]"), m.recall, e.recall[c]);
        close(&format!("{name} f1[{c}]"), m.f1, e.f1[c]);
        assert_eq!(m.support, e.support[c], "{name} support[{c}]");
    }
    close_averages(&format!("{name} macro"), &report.macro_avg, &e.macro_avg);
    close_averages(&format!("{name} micro"), &report.micro_avg, &e.micro);
    close_averages(&format!("{name} weighted"), &report.weighted_avg, &e.weighted);
    assert_eq!(report.support, case.y_true.len() as u64);
    assert_eq!(report.to_text(2), e.report_2, "{name} report, 2 digits");
    assert_eq!(report.to_text(4), e.report_4, "{name} report, 4 digits");
    assert_eq!(
        report.to_text_with_names(&case.class_names, 3).unwrap(),
        e.report_names_3,
        "{name} report with names, 3 digits"
    );
}

/// Top-k accuracy for every k and log loss against scikit-learn's.
fn check_probabilities(case: &Case, metrics: &ProbabilityMetrics) {
    let name = &case.name;
    let top_k = case.expected.top_k.as_ref().unwrap();
    assert_eq!(top_k.len(), case.num_classes);
    for (i, &expected) in top_k.iter().enumerate() {
        let k = i + 1;
        close(&format!("{name} top-{k}"), metrics.top_k_accuracy(k).unwrap(), expected);
    }
    close(&format!("{name} log loss"), metrics.log_loss().unwrap(), case.expected.log_loss.unwrap());
}

fn one_shot(case: &Case) -> ConfusionMatrix {
    let mut matrix = ConfusionMatrix::new(case.num_classes).unwrap();
    matrix.update(&case.y_true, &case.y_pred).unwrap();
    matrix
}

#[test]
fn fixtures_are_all_there_and_small() {
    let mut found: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    let mut expected: Vec<String> = CASES.iter().map(|c| format!("{c}.json")).collect();
    expected.sort();
    assert_eq!(found, expected);
    let bytes: u64 = std::fs::read_dir(FIXTURES).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(bytes < 200_000, "fixtures take {bytes} bytes");
}

#[test]
fn fixtures_cover_absent_and_unpredicted_classes() {
    let (mut absent, mut unpredicted, mut neither) = (false, false, false);
    for name in CASES {
        let case = load(name);
        for c in 0..case.num_classes as u32 {
            let in_truth = case.y_true.contains(&c);
            let in_pred = case.y_pred.contains(&c);
            absent |= !in_truth && in_pred;
            unpredicted |= in_truth && !in_pred;
            neither |= !in_truth && !in_pred;
        }
    }
    assert!(absent && unpredicted && neither);
}

#[test]
fn label_metrics_match_scikit_learn() {
    for name in CASES {
        let case = load(name);
        check_labels(&case, &one_shot(&case));
    }
}

#[test]
fn probability_metrics_match_scikit_learn() {
    for name in CASES {
        let case = load(name);
        let Some(weights) = &case.weights else {
            continue;
        };
        let mut metrics = ProbabilityMetrics::new(case.num_classes).unwrap();
        metrics.update(&case.y_true, &probabilities(weights)).unwrap();
        check_probabilities(&case, &metrics);

        // The same through `update_rows`.
        let flat = probabilities(weights);
        let rows: Vec<&[f64]> = flat.chunks(case.num_classes).collect();
        let mut by_rows = ProbabilityMetrics::new(case.num_classes).unwrap();
        by_rows.update_rows(&case.y_true, &rows).unwrap();
        assert_eq!(by_rows, metrics);
    }
}

/// Batches of uneven sizes spread over three workers, merged, equal the one-shot result
/// exactly (not just within tolerance), and so match scikit-learn too.
#[test]
fn streamed_and_merged_equals_one_shot() {
    for name in CASES {
        let case = load(name);
        let n = case.num_classes;
        let flat = case.weights.as_deref().map(probabilities);
        let mut workers: Vec<(ConfusionMatrix, ProbabilityMetrics)> =
            (0..3).map(|_| (ConfusionMatrix::new(n).unwrap(), ProbabilityMetrics::new(n.max(2)).unwrap())).collect();
        let mut start = 0;
        for (batch, size) in [1usize, 7, 0, 32, 13, 64, 5].iter().cycle().enumerate() {
            if start >= case.y_true.len() {
                break;
            }
            let end = (start + size).min(case.y_true.len());
            let (matrix, probs) = &mut workers[batch % 3];
            matrix.update(&case.y_true[start..end], &case.y_pred[start..end]).unwrap();
            if let Some(flat) = &flat {
                probs.update(&case.y_true[start..end], &flat[start * n..end * n]).unwrap();
            }
            start = end;
        }
        let (mut matrix, mut probs) = workers.remove(0);
        for (m, p) in &workers {
            matrix.merge(m).unwrap();
            probs.merge(p).unwrap();
        }
        assert_eq!(matrix, one_shot(&case), "{name}");
        assert_eq!(matrix.report(), one_shot(&case).report(), "{name}");
        check_labels(&case, &matrix);
        if let Some(flat) = &flat {
            let mut whole = ProbabilityMetrics::new(n).unwrap();
            whole.update(&case.y_true, flat).unwrap();
            assert_eq!(probs.log_loss().unwrap().to_bits(), whole.log_loss().unwrap().to_bits());
            for k in 1..=n {
                assert_eq!(probs.top_k_accuracy(k), whole.top_k_accuracy(k));
            }
            check_probabilities(&case, &probs);
        }
    }
}

#[test]
fn report_round_trips_through_json() {
    let case = load("five_absent_unpredicted");
    let report = one_shot(&case).report();
    let json = serde_json::to_string_pretty(&report).unwrap();
    assert!(json.contains("\"macro_avg\"") && json.contains("\"per_class\""));
    let back: ClassificationReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn accumulators_round_trip_through_json_between_workers() {
    let case = load("ten_sparse");
    let n = case.num_classes;
    let flat = probabilities(case.weights.as_deref().unwrap());
    let half = case.y_true.len() / 2;
    let mut matrix = ConfusionMatrix::new(n).unwrap();
    matrix.update(&case.y_true[..half], &case.y_pred[..half]).unwrap();
    let mut probs = ProbabilityMetrics::new(n).unwrap();
    probs.update(&case.y_true[..half], &flat[..half * n]).unwrap();
    // The second worker sends its accumulators as JSON.
    let mut remote = ConfusionMatrix::new(n).unwrap();
    remote.update(&case.y_true[half..], &case.y_pred[half..]).unwrap();
    let mut remote_probs = ProbabilityMetrics::new(n).unwrap();
    remote_probs.update(&case.y_true[half..], &flat[half * n..]).unwrap();
    let sent = (serde_json::to_string(&remote).unwrap(), serde_json::to_string(&remote_probs).unwrap());
    matrix.merge(&serde_json::from_str(&sent.0).unwrap()).unwrap();
    probs.merge(&serde_json::from_str(&sent.1).unwrap()).unwrap();
    check_labels(&case, &matrix);
    check_probabilities(&case, &probs);
}

/// One sample: true label, predicted label, probability row.
type Sample = (u32, u32, Vec<f64>);

/// A class count, samples for it, and the cut points of a split into batches.
fn batches() -> impl Strategy<Value = (usize, Vec<Sample>, Vec<usize>)> {
    (2usize..8).prop_flat_map(|n| {
        let row = (0..n as u32, 0..n as u32, prop::collection::vec(0u32..4, n)).prop_map(move |(t, p, mut w)| {
            if w.iter().all(|&x| x == 0) {
                w[0] = 1;
            }
            let sum: u32 = w.iter().sum();
            (t, p, w.iter().map(|&x| f64::from(x) / f64::from(sum)).collect::<Vec<f64>>())
        });
        (Just(n), prop::collection::vec(row, 0..120), prop::collection::vec(0usize..120, 0..6))
    })
}

proptest! {
    #[test]
    fn merge_of_split_batches_equals_one_shot((n, rows, mut cuts) in batches()) {
        let truth: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let pred: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let probs: Vec<f64> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();

        let mut whole = ConfusionMatrix::new(n).unwrap();
        whole.update(&truth, &pred).unwrap();
        let mut whole_probs = ProbabilityMetrics::new(n).unwrap();
        whole_probs.update(&truth, &probs).unwrap();

        cuts.iter_mut().for_each(|c| *c = (*c).min(rows.len()));
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        let mut merged = ConfusionMatrix::new(n).unwrap();
        let mut merged_probs = ProbabilityMetrics::new(n).unwrap();
        // Each batch is its own worker; merge them in reverse order.
        for w in cuts.windows(2).rev() {
            let (a, b) = (w[0], w[1]);
            let mut part = ConfusionMatrix::new(n).unwrap();
            part.update(&truth[a..b], &pred[a..b]).unwrap();
            merged.merge(&part).unwrap();
            let mut part_probs = ProbabilityMetrics::new(n).unwrap();
            part_probs.update(&truth[a..b], &probs[a * n..b * n]).unwrap();
            merged_probs.merge(&part_probs).unwrap();
        }
        prop_assert_eq!(&merged, &whole);
        prop_assert_eq!(merged.report(), whole.report());
        prop_assert_eq!(merged_probs.log_loss().map(f64::to_bits), whole_probs.log_loss().map(f64::to_bits));
        for k in 1..=n {
            prop_assert_eq!(merged_probs.top_k_accuracy(k), whole_probs.top_k_accuracy(k));
        }
    }
}

/// `datasets/digits.csv` as (pixels, label) rows.
fn read_digits() -> Vec<(Vec<i64>, u32)> {
    let text = std::fs::read_to_string(DIGITS).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 65);
    assert_eq!((header[0], header[63], header[64]), ("pixel_0", "pixel_63", "label"));
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let values: Vec<i64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(values.len(), 65);
            (values[..64].to_vec(), u32::try_from(values[64]).unwrap())
        })
        .collect()
}

/// The nearest-centroid classifier of `scripts/fixtures/eval.py`, step for step: exact
/// integer distances `D_c = |n_c x - s_c|²` (the squared distance to the centroid times
/// `n_c²`), prediction by exact comparison with ties to the lowest class, probabilities
/// `p_c ∝ 1 / (1 + D_c / n_c²)` with the normaliser summed left to right.
fn nearest_centroid(data: &[(Vec<i64>, u32)], train_rows: usize, n: usize) -> (Vec<u32>, Vec<f64>) {
    let mut sums = vec![vec![0i64; 64]; n];
    let mut counts = vec![0i64; n];
    for (x, y) in &data[..train_rows] {
        let c = *y as usize;
        counts[c] += 1;
        sums[c].iter_mut().zip(x).for_each(|(s, v)| *s += v);
    }
    let mut preds = Vec::new();
    let mut probs = Vec::new();
    for (x, _) in &data[train_rows..] {
        let dist: Vec<i64> =
            (0..n).map(|c| x.iter().zip(&sums[c]).map(|(v, s)| (counts[c] * v - s).pow(2)).sum()).collect();
        let mut best = 0;
        for c in 1..n {
            let lhs = i128::from(dist[c]) * i128::from(counts[best]).pow(2);
            let rhs = i128::from(dist[best]) * i128::from(counts[c]).pow(2);
            if lhs < rhs {
                best = c;
            }
        }
        preds.push(best as u32);
        let w: Vec<f64> = (0..n).map(|c| 1.0 / (1.0 + dist[c] as f64 / (counts[c] * counts[c]) as f64)).collect();
        let mut total = 0.0;
        for v in &w {
            total += v;
        }
        probs.extend(w.iter().map(|v| v / total));
    }
    (preds, probs)
}

#[test]
fn nearest_centroid_on_digits_matches_scikit_learn() {
    let case = load("digits_nearest_centroid");
    let data = read_digits();
    assert_eq!(data.len(), 1797);
    let train_rows = case.train_rows.unwrap();
    let n = case.num_classes;
    let (preds, probs) = nearest_centroid(&data, train_rows, n);
    let truth: Vec<u32> = data[train_rows..].iter().map(|r| r.1).collect();
    assert_eq!(truth, case.y_true);
    assert_eq!(preds, case.y_pred, "predictions differ from the script's");

    // Evaluate as a training loop would: batches of 64.
    let mut matrix = ConfusionMatrix::new(n).unwrap();
    let mut metrics = ProbabilityMetrics::new(n).unwrap();
    for (start, (t, p)) in truth.chunks(64).zip(preds.chunks(64)).enumerate() {
        let first = start * 64;
        matrix.update(t, p).unwrap();
        metrics.update(t, &probs[first * n..(first + t.len()) * n]).unwrap();
    }
    check_labels(&case, &matrix);
    check_probabilities(&case, &metrics);
    assert!(matrix.accuracy() > 0.85, "nearest centroid should do well on digits");
}
