//! Targets of the agent: the policy state, the predictions file, the study configuration
//! kept in `study.sqlite`, the `--budget` flag and a CSV file given to a saved model.

use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use rand::SeedableRng;
use tuneforge_agent::data::default_pipeline;
use tuneforge_agent::env::{Action, Observation};
use tuneforge_agent::policy::{Policy, StudyPolicy};
use tuneforge_agent::predict::{Input, InputKind, Manifest, Predictor};
use tuneforge_agent::run::{parse_predictions, predictions_csv};
use tuneforge_agent::tune::{parse_budget, parse_study_config, study_config_json};
use tuneforge_loader::{CsvOptions, DataDirs, GzCache, read_csv_from};
use tuneforge_model::ModelSpec;
use tuneforge_monitor::ProgressMode;

use crate::{Verdict, same};

/// A policy state (`policy.json`, the study store's policy row: a [`StudyPolicy`]) as JSON.
/// Accepted when it parses and `validate` passes. Checks: JSON round trip; a valid policy
/// gives, for ordinary observations, one finite non-negative probability per action summing
/// to 1, acts, and is still valid after learning from the decision.
pub fn policy(data: &[u8]) -> Verdict {
    let Ok(policy) = serde_json::from_slice::<StudyPolicy>(data) else { return Verdict::Rejected };
    let json = serde_json::to_string(&policy).expect("a policy serialises");
    let back: StudyPolicy = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("invariant broken: a serialised policy does not parse: {e}\n{json}"));
    same("policy → JSON → policy", &back, &policy);
    if policy.validate().is_err() {
        return Verdict::Rejected;
    }
    let mut policy = policy;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let observations = observations();
    for (i, observation) in observations.iter().enumerate() {
        let p = policy.probabilities(observation);
        same("one probability per action", &p.len(), &Action::COUNT);
        let sum: f64 = p.iter().sum();
        assert!(
            p.iter().all(|x| x.is_finite() && *x >= 0.0) && (sum - 1.0).abs() < 1e-9,
            "invariant broken: probabilities {p:?} (sum {sum}) for {observation:?}"
        );
        let action = policy.act(observation, &mut rng);
        policy.learn(observation, action, 0.9, observations.get(i + 1));
        if let Err(why) = policy.validate() {
            panic!("invariant broken: a valid policy became invalid by learning from {observation:?}: {why}");
        }
    }
    Verdict::Accepted
}

/// Observations as a run produces them: a fresh run, a diverging one, a late good one.
fn observations() -> [Observation; 3] {
    let at = |loss: f64, f1: f64, used: f64, anomalies: f64| Observation {
        loss,
        loss_delta: -0.1 * loss,
        val_f1: f1,
        val_f1_delta: 0.01,
        log_grad_norm: loss.ln(),
        log_lr: -3.0,
        log2_batch: 5.0,
        log2_width: 6.0,
        rel_throughput: 1.0,
        budget_used: used,
        anomalies,
    };
    [at(2.3, 0.1, 0.0, 0.0), at(1e6, 0.0, 0.5, 1.0), at(0.05, 0.97, 0.99, 0.0)]
}

/// A predictions file (`index,label,predicted`) as `read_predictions` reads it (UTF-8
/// text). An accepted file has as many labels as predictions, and written again it parses
/// to the same rows.
pub fn predictions(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Verdict::Rejected };
    let path = Path::new("predictions.csv");
    let Ok((labels, predicted)) = parse_predictions(path, text) else { return Verdict::Rejected };
    same("labels = predictions", &labels.len(), &predicted.len());
    let written = predictions_csv(&labels, &predicted);
    let again = parse_predictions(path, &written)
        .unwrap_or_else(|e| panic!("invariant broken: a written predictions file does not parse: {e}"));
    same("predictions → text → predictions", &again, &(labels, predicted));
    Verdict::Accepted
}

/// A study configuration as stored in `study.sqlite` (JSON), as `--resume` reads it. An
/// accepted one has ordered action bounds (the study clamps to them), and stored again it
/// reads back to the same stored form.
pub fn study_config(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Verdict::Rejected };
    let Ok(config) = parse_study_config(text, ProgressMode::Off) else { return Verdict::Rejected };
    let b = &config.env.bounds;
    assert!(
        b.lr.0 <= b.lr.1 && b.batch.0 <= b.batch.1 && b.width.0 <= b.width.1,
        "invariant broken: accepted action bounds {b:?} make `clamp` panic"
    );
    let first = study_config_json(&config);
    let again = parse_study_config(&first, ProgressMode::Off)
        .unwrap_or_else(|e| panic!("invariant broken: a stored study config does not read back: {e}\n{first}"));
    same("config → JSON → config → JSON", &study_config_json(&again), &first);
    Verdict::Accepted
}

/// A `--budget` value (`90s`, `10m`, `1h`, seconds). An accepted budget is positive, and
/// written as seconds it parses back to itself (within a nanosecond and 1e-15 relative).
pub fn budget(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Verdict::Rejected };
    let Ok(budget) = parse_budget(text) else { return Verdict::Rejected };
    assert!(budget > Duration::ZERO, "invariant broken: budget {text:?} parsed to {budget:?}");
    let seconds = format!("{}s", budget.as_secs_f64());
    let again = parse_budget(&seconds)
        .unwrap_or_else(|e| panic!("invariant broken: {text:?} → {budget:?}, but {seconds:?} is refused: {e}"));
    let diff = again.abs_diff(budget).as_secs_f64();
    assert!(
        diff <= 1e-9 + 1e-15 * budget.as_secs_f64(),
        "invariant broken: {text:?} → {budget:?}, but {seconds:?} → {again:?}"
    );
    Verdict::Accepted
}

/// A CSV file given to a saved table model (`Predictor::read` → `predict`, what `cargo
/// xtask predict --dataset csv:PATH` does) — a small model with numeric columns `a` and `b`
/// and a categorical `c`, label column `y` (classes `no`, `yes`), fitted once per process.
/// Accepted when read, preprocessed and predicted. Checks: one prediction per row kept, row indices
/// increasing, labels (when the file has `y`) among the classes, probabilities finite and
/// summing to 1 per row, each row's class the most probable one.
pub fn predict_csv(data: &[u8]) -> Verdict {
    let predictor = table_predictor();
    let path = crate::scratch::write("predict.csv", data);
    let (input, dirs, cache) = (Input::Csv(path), DataDirs::new(Vec::new()), GzCache::new(std::env::temp_dir()));
    let whole = predictor.read(&input, &dirs, &cache);
    // Read 1-4 rows at a time (the first byte says how many): refused iff refused at once,
    // else the same rows.
    let size = data.first().map_or(1, |b| usize::from(b % 4) + 1);
    let chunks: Vec<_> = match predictor.read_chunks(&input, &dirs, &cache, size) {
        Ok(chunks) => chunks.collect(),
        Err(e) => vec![Err(e)],
    };
    let refused = chunks.iter().find_map(|c| c.as_ref().err().map(ToString::to_string));
    same("refused in chunks = refused at once", &refused.is_some(), &whole.is_err());
    let Ok(rows) = whole else {
        return Verdict::Rejected;
    };
    let chunks: Vec<_> = chunks.into_iter().flatten().collect();
    let index: Vec<usize> = chunks.iter().flat_map(|c| c.index.iter().copied()).collect();
    same("rows read in chunks = rows read at once", &index, &rows.index);
    let features: Vec<u32> = chunks.iter().flat_map(|c| c.features.iter().map(|x| x.to_bits())).collect();
    same("features in chunks = at once", &features, &rows.features.iter().map(|x| x.to_bits()).collect());
    let labels: Option<Vec<u32>> =
        chunks.iter().map(|c| c.labels.clone()).collect::<Option<Vec<_>>>().map(|l| l.concat());
    same("labels in chunks = at once", &labels, &rows.labels);
    // Rows whose outputs overflow are refused (a typed error).
    let Ok(p) = predictor.predict(&rows) else { return Verdict::Rejected };
    same("one prediction per row", &p.predicted.len(), &rows.len());
    assert!(
        rows.index.windows(2).all(|w| w[0] < w[1]),
        "invariant broken: row indices not increasing: {:?}",
        rows.index
    );
    if let Some(labels) = &rows.labels {
        same("one label per row", &labels.len(), &rows.len());
        assert!(labels.iter().all(|&l| l < 2), "invariant broken: a label out of range: {labels:?}");
    }
    for (i, probs) in p.probabilities.chunks(2).enumerate() {
        let sum: f32 = probs.iter().sum();
        assert!(
            probs.iter().all(|x| x.is_finite() && *x >= 0.0) && (sum - 1.0).abs() < 1e-5,
            "invariant broken: probabilities {probs:?} of row {i}"
        );
        let top = u32::from(probs[1] > probs[0]);
        assert!(
            probs[0] == probs[1] || top == p.predicted[i],
            "invariant broken: row {i} predicted {} with {probs:?}",
            p.predicted[i]
        );
    }
    Verdict::Accepted
}

/// The model [`predict_csv`] applies, built and saved once per process.
fn table_predictor() -> &'static Predictor {
    static PREDICTOR: std::sync::OnceLock<(tempfile::TempDir, Predictor)> = std::sync::OnceLock::new();
    &PREDICTOR
        .get_or_init(|| {
            let train = "a,b,c,y\n1,0.5,red,no\n2,,blue,yes\n3,1.5,red,no\nNA,2.5,green,yes\n5,3,blue,no\n";
            let options = CsvOptions { label: Some("y".into()), ..CsvOptions::default() };
            let table =
                read_csv_from(Path::new("train.csv"), train.as_bytes(), &options).expect("the training table reads");
            let (pipeline, _) = default_pipeline().fit(&table.table).expect("the pipeline fits");
            let dir = tempfile::Builder::new().prefix("tuneforge-fuzz-model-").tempdir().expect("a temp dir");
            let spec = ModelSpec::mlp(pipeline.output_columns().len(), &[4], 2);
            let model = spec.init_seeded(&Device::Cpu, 7).expect("the model builds");
            model.save(&dir.path().join("model.safetensors")).expect("the model saves");
            std::fs::write(dir.path().join("prep.json"), pipeline.to_json().expect("the pipeline serialises"))
                .expect("prep.json writes");
            let manifest = Manifest {
                format: 1,
                input: InputKind::Table,
                classes: vec!["no".into(), "yes".into()],
                label: Some("y".into()),
                text_field: None,
                scale: [1.0, 0.0],
                trained_on: "fuzz".into(),
            };
            manifest.write(dir.path()).expect("predictor.json writes");
            let predictor = Predictor::load(dir.path(), &Device::Cpu).expect("the predictor loads");
            (dir, predictor)
        })
        .1
}
