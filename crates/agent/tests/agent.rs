//! Integration tests of the training run on real data (digits, biopsy, Fashion-MNIST).

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use tuneforge_agent::data::DataSource;
use tuneforge_agent::run::{Run, RunConfig, RunEvent, Summary, train, train_until};
use tuneforge_loader::{DataDirs, GzCache};
use tuneforge_model::WidenOptions;
use tuneforge_monitor::{AnomalyKind, Event, Monitor, MonitorConfig, Outcome, Telemetry};
use tuneforge_optim::{AdamConfig, OptimizerConfig, ScheduleConfig, SgdConfig};

fn repo_dirs() -> DataDirs {
    DataDirs::new(vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")])
}

fn shared_dirs() -> DataDirs {
    let dir = std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
    DataDirs::new(vec![dir])
}

fn cache() -> GzCache {
    GzCache::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("tuneforge-gz-cache"))
}

fn config(data: &str, model: &str, epochs: usize) -> RunConfig {
    RunConfig {
        data: DataSource::parse(data, None).unwrap(),
        model: model.into(),
        epochs,
        batch_size: 32,
        optimizer: OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..Default::default() }),
        schedule: ScheduleConfig::Constant,
        seed: 1,
        clip_norm: None,
        val_fraction: 0.0,
        snapshot_every: 100,
        inject_nan_at: None,
        patience: None,
    }
}

#[test]
fn digits_train_writes_summary_and_predictions_and_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let mut epochs_seen = 0;
    let cfg = config("digits", "mlp:64", 8);
    let summary = train(cfg, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |ev| {
        if let RunEvent::Epoch { .. } = ev {
            epochs_seen += 1;
        }
    })
    .unwrap();
    assert_eq!(epochs_seen, 8);
    // 359 test rows: per class round(0.2 × count) of digits' class counts
    // [178, 182, 177, 183, 181, 182, 181, 179, 174, 180] = 36+36+35+37+36+36+36+36+35+36.
    let preds = std::fs::read_to_string(tmp.path().join("predictions.csv")).unwrap();
    assert_eq!(preds.lines().count(), 1 + 359);
    assert!(preds.starts_with("index,label,predicted\n0,"));
    // The accuracy in summary.json is the one computed from predictions.csv.
    let correct = preds
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f[1] == f[2]
        })
        .count();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["test_accuracy"].as_f64().unwrap(), correct as f64 / 359.0);
    assert_eq!(json["epochs"], 8);
    assert!(json["samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["test_macro_f1"].as_f64().unwrap() > 0.9);
    // A small MLP on standardised digits reaches > 93% (nearest-centroid gets ~90%).
    assert!(summary.test_accuracy > 0.93, "{}", summary.test_accuracy);
    assert!(tmp.path().join("model.safetensors").is_file());
    assert!(tmp.path().join("prep.json").is_file());
    assert!(tmp.path().join("optimizer").is_dir());
    // The monitor's log: 8 × 45 steps, one clean run, ended by a checkpoint and run_end.
    let log = tuneforge_monitor::read_log(tmp.path().join("events.jsonl")).unwrap();
    assert!(log.torn_tail.is_none());
    assert_eq!(log.events.iter().filter(|e| matches!(e, Event::Step(_))).count(), 8 * 45);
    assert!(matches!(log.events.first(), Some(Event::RunStart(_))));
    let Some(Event::RunEnd(end)) = log.events.last() else { panic!("no run_end: {:?}", log.events.last()) };
    assert_eq!((end.outcome, end.rollbacks, end.step), (Outcome::Completed, 0, 8 * 45 - 1));
    assert_eq!(summary.rollbacks, 0);
}

/// `train_until`'s handle ends its own run after the epoch it was asked in — tested and
/// written as a run of that many epochs — and not another run of the process.
#[test]
fn a_stop_handle_ends_its_own_training_run_and_not_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let stop = tuneforge_agent::tune::Stop::default();
    let (sa, sb) = std::thread::scope(|s| {
        let stopped = s.spawn(|| {
            let mut epochs = 0;
            let out = train_until(
                config("digits", "mlp:64", 12),
                MonitorConfig::default(),
                &repo_dirs(),
                &cache(),
                &Device::Cpu,
                &a,
                &stop,
                &mut |ev| {
                    if let RunEvent::Epoch { .. } = ev {
                        epochs += 1;
                        if epochs == 3 {
                            stop.request();
                        }
                    }
                },
            );
            (out.unwrap(), epochs)
        });
        let other = s.spawn(|| {
            let cfg = config("digits", "mlp:64", 6);
            train(cfg, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, &b, &mut |_| {}).unwrap()
        });
        (stopped.join().unwrap(), other.join().unwrap())
    });
    let ((sa, seen), sb) = (sa, sb);
    assert_eq!((sa.epochs, seen, sb.epochs), (3, 3, 6));
    // Its outputs are those of a 3-epoch run: the log's steps, summary.json, predictions.
    let log = tuneforge_monitor::read_log(a.join("events.jsonl")).unwrap();
    assert_eq!(log.events.iter().filter(|e| matches!(e, Event::Step(_))).count(), 3 * 45);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!((json["epochs"].as_u64(), json["test_accuracy"].as_f64()), (Some(3), Some(sa.test_accuracy)));
    let (truth, pred) = tuneforge_agent::run::read_predictions(&a.join("predictions.csv")).unwrap();
    let correct = truth.iter().zip(&pred).filter(|(t, p)| t == p).count();
    assert_eq!(correct as f64 / truth.len() as f64, sa.test_accuracy);
    // A 3-epoch run from the start gives the same model (the stop changes nothing before it).
    let c = tmp.path().join("c");
    let three = train(
        config("digits", "mlp:64", 3),
        MonitorConfig::default(),
        &repo_dirs(),
        &cache(),
        &Device::Cpu,
        &c,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(three.test_accuracy, sa.test_accuracy);
}

/// Early stopping (`RunConfig::patience`): the run ends `patience` epochs after its best
/// validation macro-F1, and the model tested and written is the best epoch's — the same as a
/// run of exactly that many epochs (weights, test figures), not the last one trained.
#[test]
fn early_stopping_writes_the_best_epochs_model() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = RunConfig { val_fraction: 0.2, patience: Some(3), ..config("digits", "mlp:64", 200) };
    let out = tmp.path().join("patient");
    let s = train(patient.clone(), MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, &out, &mut |_| {})
        .unwrap();
    let best = s.best_epoch.unwrap();
    let f1 = |e: &tuneforge_agent::run::EpochStats| e.val.as_ref().unwrap().report.macro_avg.f1;
    // It stopped 3 epochs after its best, which no later epoch beat and every earlier one was below or equal.
    assert!(s.epochs < 200, "{} epochs", s.epochs);
    assert_eq!(s.epochs, best + 1 + 3);
    assert!(s.history[best + 1..].iter().all(|e| f1(e) <= f1(&s.history[best])));
    assert!(s.history[..best].iter().all(|e| f1(e) <= f1(&s.history[best])));
    // summary.json and the log say which epoch was written.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!((json["best_epoch"].as_u64(), json["epochs"].as_u64()), (Some(best as u64), Some(s.epochs as u64)));
    let log = tuneforge_monitor::read_log(out.join("events.jsonl")).unwrap();
    let Some(Event::Evaluation(test)) = log.events.iter().rev().find(|e| matches!(e, Event::Evaluation(_))) else {
        panic!("no test evaluation")
    };
    assert_eq!(test.epoch as usize, best);
    // The same model as a run of best + 1 epochs with the same seed: same weights, same test.
    let short = tmp.path().join("short");
    let plain = RunConfig { patience: None, epochs: best + 1, ..patient.clone() };
    let p = train(plain, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, &short, &mut |_| {}).unwrap();
    assert_eq!((p.test_accuracy, p.test_macro_f1), (s.test_accuracy, s.test_macro_f1));
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(short.join("model.safetensors")).unwrap()
    );
    assert!(json.get("best_epoch").is_some() && p.best_epoch.is_none());
    // Refused: no validation split, or a patience of 0.
    for bad in [RunConfig { val_fraction: 0.0, ..patient.clone() }, RunConfig { patience: Some(0), ..patient.clone() }]
    {
        let e = train(
            bad,
            MonitorConfig::default(),
            &repo_dirs(),
            &cache(),
            &Device::Cpu,
            &tmp.path().join("bad"),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("patience"), "{e}");
    }
}

#[test]
fn biopsy_csv_just_works_with_its_missing_values() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/biopsy.csv");
    let mut cfg = config("digits", "mlp:16", 15);
    cfg.data = DataSource::parse(&format!("csv:{}", path.display()), Some("class")).unwrap();
    let summary =
        train(cfg, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |_| {}).unwrap();
    // 699 rows → 140 test rows; benign/malignant is an easy problem (> 94% for any sane model).
    assert_eq!(summary.test_report.support, 140);
    assert!(summary.test_accuracy > 0.94, "{}", summary.test_accuracy);
    // The ID column is a feature here (it was not dropped): 10 inputs.
    assert_eq!(summary.model.input, [10]);
    assert!(DataSource::parse("csv:x.csv", None).is_err());
    assert!(DataSource::parse("imagenet", None).is_err());
    // Without --label: the columns it could be, from the file's header.
    let e = DataSource::parse(&format!("csv:{}", path.display()), None).unwrap_err().to_string();
    assert!(
        e.ends_with(
            r#"one of its columns: "", "ID", "V1", "V2", "V3", … "V8", "V9", "class" (of 12) (the last: --label class)"#
        ),
        "{e}"
    );
    let e = DataSource::parse("csv:/nonexistent/x.csv", None).unwrap_err().to_string();
    assert!(e.ends_with("needs --label COLUMN"), "{e}");
}

#[test]
fn a_csv_value_beyond_f32_after_scaling_is_named_not_trained_into_nan() {
    // biopsy.csv with 1e308 in V2 of its 5th data row.
    let tmp = tempfile::tempdir().unwrap();
    let path = repo_dirs().locate(tuneforge_loader::Known::Biopsy).unwrap().remove(0);
    let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    let mut fields: Vec<String> = lines[5].split(',').map(str::to_string).collect();
    assert_eq!(lines[0].split(',').nth(3), Some("\"V2\""));
    fields[3] = "1e308".into();
    lines[5] = fields.join(",");
    let huge = tmp.path().join("huge.csv");
    std::fs::write(&huge, lines.join("\n")).unwrap();
    let mut cfg = config("digits", "mlp:16", 1);
    cfg.data = DataSource::parse(&format!("csv:{}", huge.display()), Some("class")).unwrap();
    let e = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap_err().to_string();
    // Scaled with a mean and a deviation that 1e308 dominates, every row's V2 leaves f32.
    assert!(e.contains("huge.csv: data row") && e.contains("column V2 is -1.7"), "{e}");
}

#[test]
fn the_run_keeps_training_through_width_batch_and_lr_changes() {
    let mut cfg = config("digits", "mlp:32,32", 1);
    cfg.optimizer = OptimizerConfig::Sgd(SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() });
    cfg.val_fraction = 0.2;
    let mut run = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap();
    // 20% of the 1438 training rows, stratified (per-class rounding).
    assert_eq!(run.data().val.as_ref().unwrap().len(), 287);
    let first = run.train_epoch(&mut |_| {}).unwrap();
    let acc0 = first.val.as_ref().unwrap().report.accuracy;
    // Widen both hidden layers: validation metrics do not move (function-preserving)...
    let before = run.evaluate(&**run.data().val.as_ref().unwrap()).unwrap();
    run.resize_hidden(0, 48, WidenOptions::default()).unwrap();
    run.resize_hidden(2, 64, WidenOptions::default()).unwrap();
    let after = run.evaluate(&**run.data().val.as_ref().unwrap()).unwrap();
    assert_eq!(before.predictions, after.predictions);
    assert!((before.loss - after.loss).abs() < 1e-5);
    assert_eq!(run.model().spec().hidden_widths(), [48, 64]);
    // ...and training continues with other batch sizes and learning rates, then narrowing.
    run.set_batch_size(64).unwrap();
    run.scale_learning_rate(0.5).unwrap();
    assert!((run.learning_rate() - 0.025).abs() < 1e-12);
    let s = run.train_step().unwrap();
    assert_eq!(s.batch_size, 64);
    run.resize_hidden(0, 24, WidenOptions::default()).unwrap();
    for _ in 0..3 {
        let e = run.train_epoch(&mut |_| {}).unwrap();
        assert!(e.train_loss.is_finite());
    }
    let acc = run.evaluate(&**run.data().val.as_ref().unwrap()).unwrap().report.accuracy;
    assert!(acc > 0.9 && acc >= acc0 - 0.02, "val accuracy {acc} after changes (first epoch {acc0})");
    assert!(run.set_batch_size(0).is_err());
}

#[test]
fn fashion_mnist_splits_and_one_epoch_on_a_subset_of_steps() {
    let mut cfg = config("fashion-mnist", "seed-cnn", 1);
    cfg.val_fraction = 0.1;
    cfg.batch_size = 128;
    let mut run = Run::new(cfg, &shared_dirs(), &cache(), &Device::Cpu).unwrap();
    assert_eq!(run.data().train.len(), 54_000);
    assert_eq!(run.data().val.as_ref().unwrap().len(), 6000);
    assert_eq!(run.data().test.len(), 10_000);
    assert_eq!(run.data().val.as_ref().unwrap().class_counts(), vec![600; 10]);
    // 30 steps of the article's CNN move the loss well below ln(10) = 2.30.
    let mut last = f32::INFINITY;
    for _ in 0..30 {
        last = run.train_step().unwrap().loss;
    }
    assert!(last < 1.2, "loss after 30 steps: {last}");
}

/// Trains, narrows the hidden layer to a quarter, and counts the steps needed to get back
/// within 1 point of the validation accuracy before narrowing. Prints the figures.
fn narrow_and_recover(
    data: &str,
    dirs: &DataDirs,
    model: &str,
    width: usize,
    epochs: usize,
    batch: usize,
) -> (f64, f64, usize) {
    let mut cfg = config(data, model, epochs);
    cfg.val_fraction = 0.2;
    cfg.batch_size = batch;
    cfg.optimizer = OptimizerConfig::Adam(AdamConfig { lr: 1e-3, ..Default::default() });
    let mut run = Run::new(cfg, dirs, &cache(), &Device::Cpu).unwrap();
    for _ in 0..epochs {
        run.train_epoch(&mut |_| {}).unwrap();
    }
    let val = run.data().val.clone().unwrap();
    let before = run.evaluate(&*val).unwrap().report.accuracy;
    let layer = run.model().spec().hidden_layers()[0];
    run.resize_hidden(layer, width / 4, WidenOptions::default()).unwrap();
    let dip = run.evaluate(&*val).unwrap().report.accuracy;
    let mut steps = 0;
    loop {
        for _ in 0..10 {
            run.train_step().unwrap();
        }
        steps += 10;
        let acc = run.evaluate(&*val).unwrap().report.accuracy;
        if acc >= before - 0.01 || steps >= 3000 {
            println!(
                "{data} {model}: val accuracy {before:.4} → narrowed {width}→{}: {dip:.4} → {acc:.4} after {steps} steps",
                width / 4
            );
            return (before, dip, steps);
        }
    }
}

#[test]
fn narrowing_a_trained_digits_model_dips_then_recovers() {
    let (before, dip, steps) = narrow_and_recover("digits", &repo_dirs(), "mlp:128", 128, 10, 32);
    assert!(before > 0.93, "{before}");
    assert!(dip < before, "narrowing 128→32 units should cost accuracy: {dip} vs {before}");
    assert!(steps < 3000, "no recovery within 3000 steps");
}

/// `cargo test -p tuneforge-agent --release -- --ignored --nocapture fashion_mnist_narrow`
#[test]
#[ignore = "trains Fashion-MNIST for 2 epochs (~1 min in release on 2 cores)"]
fn fashion_mnist_narrow_dips_then_recovers() {
    let (before, dip, steps) = narrow_and_recover("fashion-mnist", &shared_dirs(), "mlp:256", 256, 2, 128);
    assert!(before > 0.84 && dip < before && steps < 3000, "{before} {dip} {steps}");
}

/// Trains `cfg` twice with the same seed — clean, then with a NaN injected into the loss of
/// step `at` — and checks the faulty run's log: the anomaly and the rollback at `at`, to the
/// last snapshot before it, with half the learning rate from then on. Prints both accuracies.
fn nan_recovery(cfg: RunConfig, dirs: &DataDirs, at: u64) -> (Summary, Summary) {
    let (clean_dir, fault_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lr = cfg.optimizer.lr();
    let every = cfg.snapshot_every;
    let name = format!("{} {}", cfg.data, cfg.model);
    let clean =
        train(cfg.clone(), MonitorConfig::default(), dirs, &cache(), &Device::Cpu, clean_dir.path(), &mut |_| {})
            .unwrap();
    let faulty_cfg = RunConfig { inject_nan_at: Some(at), ..cfg };
    let mut rolled_back = Vec::new();
    let faulty =
        train(faulty_cfg, MonitorConfig::default(), dirs, &cache(), &Device::Cpu, fault_dir.path(), &mut |ev| {
            if let RunEvent::Step { stats, .. } = ev
                && let Some(to) = stats.rolled_back_to
            {
                rolled_back.push((stats.step, to));
            }
        })
        .unwrap();
    // The last snapshot before `at` (taken after steps every-1, 2·every-1, ...), else the
    // initial one, reported as step 0.
    let to_step = (at / every * every).saturating_sub(1);
    assert_eq!(rolled_back, [(at, to_step)]);
    assert_eq!((clean.rollbacks, faulty.rollbacks), (0, 1), "{name}");
    assert!(faulty.anomalies >= 2, "{name}: {}", faulty.anomalies);
    assert!(faulty.history.iter().all(|e| e.train_loss.is_finite()));

    let log = tuneforge_monitor::read_log(fault_dir.path().join("events.jsonl")).unwrap();
    let anomalies: Vec<_> = log
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Anomaly(a) if a.kind.is_divergence() => Some((a.step, a.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(anomalies, [(at, AnomalyKind::NonFiniteLoss), (at, AnomalyKind::NonFiniteGradNorm)]);
    let rollbacks: Vec<_> =
        log.events.iter().filter_map(|e| if let Event::Rollback(r) = e { Some(r) } else { None }).collect();
    assert_eq!(rollbacks.len(), 1);
    let r = rollbacks[0];
    assert_eq!((r.step, r.to_step, r.cause), (at, to_step, AnomalyKind::NonFiniteLoss));
    assert_eq!((r.lr_before, r.lr_after), (lr, lr / 2.0));
    let lr_of = |step| {
        log.events.iter().find_map(|e| match e {
            Event::Step(s) if s.step == step => Some(s.lr),
            _ => None,
        })
    };
    assert_eq!((lr_of(at), lr_of(at + 1)), (Some(lr), Some(lr / 2.0)));
    let Some(Event::RunEnd(end)) = log.events.last() else { panic!("no run_end") };
    assert_eq!((end.outcome, end.rollbacks), (Outcome::Completed, 1));
    for line in std::fs::read_to_string(fault_dir.path().join("events.jsonl")).unwrap().lines() {
        if line.contains("\"event\":\"anomaly\"") || line.contains("\"event\":\"rollback\"") {
            println!("{line}");
        }
    }
    println!(
        "{name}: test accuracy clean {:.4}, NaN at step {at} → rolled back to {to_step}: {:.4} \
         (Δ {:+.2} points); snapshots took {:.1} ms of {:.1} s",
        clean.test_accuracy,
        faulty.test_accuracy,
        100.0 * (faulty.test_accuracy - clean.test_accuracy),
        1e3 * faulty.snapshot_seconds,
        faulty.wall_seconds,
    );
    (clean, faulty)
}

#[test]
fn digits_run_with_an_injected_nan_rolls_back_and_ends_within_a_point() {
    // 45 steps per epoch, 8 epochs: the NaN is in the middle of epoch 3 (its 16th step).
    let (clean, faulty) = nan_recovery(config("digits", "mlp:64", 8), &repo_dirs(), 150);
    assert!(clean.test_accuracy > 0.93, "{}", clean.test_accuracy);
    assert!(
        (faulty.test_accuracy - clean.test_accuracy).abs() <= 0.01,
        "{} vs {}",
        faulty.test_accuracy,
        clean.test_accuracy
    );
}

#[test]
fn without_a_monitor_an_injected_nan_is_diverged_and_not_applied() {
    let mut cfg = config("digits", "mlp:16", 1);
    cfg.inject_nan_at = Some(2);
    let mut run = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap();
    run.train_step().unwrap();
    run.train_step().unwrap();
    let before: Vec<Vec<f32>> =
        run.model().tensors().iter().map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    let err = run.train_step().unwrap_err();
    assert!(matches!(err, tuneforge_agent::Error::Diverged { step: 2, .. }), "{err}");
    let after: Vec<Vec<f32>> =
        run.model().tensors().iter().map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert_eq!(before, after, "the NaN step must not reach the weights");
    assert!(run.optimizer().state().unwrap().params.values().all(|p| p.step == 2));
}

/// Every tensor of the model, then every optimiser buffer with its step count, flattened.
type Flat = (Vec<Vec<f32>>, Vec<(u64, Vec<Vec<f32>>)>);

fn state_of(run: &Run) -> Flat {
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let model = run.model().tensors().iter().map(|(_, t)| flat(t)).collect();
    let optim = run
        .optimizer()
        .state()
        .unwrap()
        .params
        .values()
        .map(|p| (p.step, p.buffers.values().map(flat).collect()))
        .collect();
    (model, optim)
}

#[test]
fn a_rollback_restores_the_weights_and_moments_of_the_snapshot() {
    let mut cfg = config("digits", "mlp:16", 1);
    cfg.snapshot_every = 10;
    cfg.inject_nan_at = Some(25);
    let monitor = Monitor::new(MonitorConfig::default(), Telemetry::disabled()).unwrap();
    let mut run = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap().with_monitor(monitor).unwrap();
    for _ in 0..20 {
        assert_eq!(run.train_step().unwrap().rolled_back_to, None);
    }
    // Steps 0..=19 done: the snapshot of step 19 is the last one.
    let snapshot = state_of(&run);
    for _ in 20..25 {
        run.train_step().unwrap();
    }
    assert_ne!(state_of(&run), snapshot);
    let s = run.train_step().unwrap();
    assert_eq!((s.step, s.rolled_back_to), (25, Some(19)));
    assert!(s.loss.is_nan());
    assert_eq!(state_of(&run), snapshot, "weights and Adam moments are those after step 19");
    assert_eq!(run.learning_rate(), 1.5e-3);
    assert_eq!(run.step(), 26);
    // Training goes on from there; the monitor counted one rollback.
    assert!(run.train_step().unwrap().loss.is_finite());
    let summary = run.finish_monitor(Outcome::Completed).unwrap().unwrap();
    assert_eq!((summary.anomalies, summary.rollbacks), (2, 1));
    assert!(run.finish_monitor(Outcome::Completed).unwrap().is_none());
}

/// `cargo test -p tuneforge-agent --release -- --ignored --nocapture fashion_mnist_run_with_an_injected_nan`
#[test]
#[ignore = "trains Fashion-MNIST twice for 2 epochs (~15 s in release on 2 cores)"]
fn fashion_mnist_run_with_an_injected_nan_rolls_back_and_ends_within_a_point() {
    let mut cfg = config("fashion-mnist", "mlp:256", 2);
    cfg.batch_size = 128;
    cfg.optimizer = OptimizerConfig::Adam(AdamConfig { lr: 1e-3, ..Default::default() });
    // 469 steps per epoch: step 350 is mid-epoch 0; the last snapshot before it is step 299.
    let (clean, faulty) = nan_recovery(cfg, &shared_dirs(), 350);
    assert!(clean.test_accuracy > 0.84, "{}", clean.test_accuracy);
    assert!(
        (faulty.test_accuracy - clean.test_accuracy).abs() <= 0.01,
        "{} vs {}",
        faulty.test_accuracy,
        clean.test_accuracy
    );
}

mod env {
    use super::*;
    use tuneforge_agent::env::{Action, Bounds, Env, EnvConfig, Move};

    #[test]
    fn actions_have_27_indices_that_round_trip() {
        for i in 0..Action::COUNT {
            assert_eq!(Action::from_index(i).unwrap().index(), i);
        }
        assert!(Action::from_index(27).is_none());
        assert_eq!(Action::KEEP.index(), 13);
    }

    fn digits_env(budget: u64, bounds: Bounds) -> Env {
        let mut cfg = config("digits", "mlp:32,32", 100);
        cfg.val_fraction = 0.2;
        let run = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap();
        Env::new(run, EnvConfig { decision_steps: 20, lambda: 0.05, bounds, budget_steps: budget, unit_batch: None })
            .unwrap()
    }

    #[test]
    fn the_reward_is_f1_gain_plus_throughput_term_and_the_final_f1_at_the_end() {
        let mut env = digits_env(100, Bounds::default());
        assert_eq!(env.observe().budget_used, 0.2);
        let mut prev = env.observe().val_f1;
        // The first interval is rewarded from the untrained model's F1 (≈ chance on 10
        // classes), so that every episode's rewards sum to 2·final − untrained + λ·Σ ln ρ.
        let (untrained, f1_first) = (env.untrained_f1().unwrap(), prev);
        assert!(untrained < 0.5 && prev > untrained, "untrained {untrained}, after the first interval {prev}");
        assert_eq!(env.start_reward(), Some(prev - untrained));
        let (mut total, mut shaped, mut speed) = (env.start_reward().unwrap(), 0.0, 0.0);
        let mut done = false;
        let mut decisions = 0;
        while !done {
            let t = env.step(Action::KEEP).unwrap();
            let term = 0.05 * t.observation.rel_throughput.ln();
            let expected = (t.val_f1 - prev) + term + if t.done { t.val_f1 } else { 0.0 };
            assert!((t.reward - expected).abs() < 1e-12, "{} vs {expected}", t.reward);
            // Shaped with the potential Φ = F1: 2·ΔF1 + λ·ln ρ, the last decision included.
            assert!((t.shaped_reward - (2.0 * (t.val_f1 - prev) + term)).abs() < 1e-12);
            assert!(t.observation.to_vec().iter().all(|v| v.is_finite()));
            assert_eq!(env.start_reward(), None, "only before the first decision");
            (total, shaped, speed) = (total + t.reward, shaped + t.shaped_reward, speed + term);
            prev = t.val_f1;
            done = t.done;
            decisions += 1;
        }
        assert!((total - (2.0 * prev - untrained + speed)).abs() < 1e-9, "{total}");
        // The decisions' shaped rewards sum to their rewards less the F1 before the first
        // decision, which no decision changes.
        let decided = total - (f1_first - untrained);
        assert!((decided - shaped - f1_first).abs() < 1e-9, "{decided} {shaped} {f1_first}");
        // 100 steps: the first interval of 20 in `Env::new`, then 4 decisions of 20.
        assert_eq!(decisions, 4);
        assert_eq!(env.observe().budget_used, 1.0);
        assert!(env.step(Action::KEEP).is_err(), "no steps after the budget");
        assert!(prev > 0.8, "val macro-F1 after 100 steps: {prev}");
    }

    /// The budget and the decision interval are counted in training rows (steps of the
    /// starting batch size): after the batch doubles, an interval is half the steps, the
    /// trial sees the same rows as at the starting batch, and the cosine schedule is
    /// re-timed so that it still ends with the budget.
    #[test]
    fn the_budget_is_counted_in_rows_whatever_the_batch_size() {
        let mut cfg = config("digits", "mlp:32,32", 100);
        cfg.val_fraction = 0.2;
        cfg.schedule = ScheduleConfig::Cosine { total_steps: 120, warmup_steps: 0, min_lr: 0.0 };
        let monitor =
            Monitor::new(MonitorConfig { total_steps: Some(120), ..MonitorConfig::default() }, Telemetry::disabled());
        let run = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap().with_monitor(monitor.unwrap()).unwrap();
        let b0 = run.batch_size();
        let mut env = Env::new(
            run,
            EnvConfig {
                decision_steps: 20,
                lambda: 0.05,
                bounds: Bounds::default(),
                budget_steps: 120,
                unit_batch: None,
            },
        )
        .unwrap();
        let step_of = |env: &Env| env.run().step();
        let first = step_of(&env);
        assert!((20..=21).contains(&first), "first interval: {first} steps");
        let up = Action { batch: Move::Up, ..Action::KEEP };
        let t = env.step(up).unwrap();
        assert_eq!((t.applied.batch, env.run().batch_size()), (Move::Up, 2 * b0));
        let second = step_of(&env) - first;
        assert!((10..=11).contains(&second), "an interval at twice the batch: {second} steps");
        assert!((40..=41).contains(&env.steps()), "progress in starting-batch steps: {}", env.steps());
        let mut decisions = 1;
        while !env.done() {
            env.step(Action::KEEP).unwrap();
            decisions += 1;
        }
        // 6 intervals of 20 starting-batch steps whatever the batch: the same decisions and
        // the same rows as at the starting batch, in fewer optimiser steps.
        assert_eq!(decisions, 5);
        let rows = env.samples();
        assert!(rows >= 120 * b0 as u64 && rows < 120 * b0 as u64 + 2 * b0 as u64, "{rows} rows");
        let steps = step_of(&env);
        assert!((70..=73).contains(&steps), "{steps} optimiser steps");
        // The progress view was told the steps left after the batch changed.
        assert_eq!(env.run_mut().monitor_mut().unwrap().total_steps(), Some(steps), "the progress bar's length");
        // The cosine was re-timed with the batch: it reaches 0 with the budget, not half-way.
        assert!(env.run().learning_rate() < 0.02 * env.run().base_learning_rate(), "lr {}", env.run().learning_rate());
    }

    /// The learning rate stays within ×/÷ `lr_span` of the episode's start, however often the
    /// policy doubles it, and a resumed episode keeps that centre.
    #[test]
    fn the_learning_rate_stays_within_its_span_of_the_start() {
        let mut env = digits_env(400, Bounds { lr_span: 4.0, ..Bounds::default() });
        let lr0 = env.run().base_learning_rate();
        let up = Action { lr: Move::Up, ..Action::KEEP };
        let applied: Vec<Move> = (0..3).map(|_| env.step(up).unwrap().applied.lr).collect();
        assert_eq!(applied, [Move::Up, Move::Up, Move::Keep]);
        assert!((env.run().base_learning_rate() - 4.0 * lr0).abs() < 1e-12);
        assert_eq!(env.state().start_lr, Some(lr0));
        let down = Action { lr: Move::Down, ..Action::KEEP };
        for _ in 0..4 {
            env.step(down).unwrap();
        }
        assert!((env.run().base_learning_rate() - lr0 / 4.0).abs() < 1e-12);
    }

    /// Narrowing stops at `width_floor` of each hidden layer's starting width (rounded up),
    /// and the floor survives a save and resume of the episode.
    #[test]
    fn hidden_layers_are_not_narrowed_below_their_floor() {
        let mut env = digits_env(400, Bounds { width_floor: 0.5, ..Bounds::default() });
        assert_eq!(env.run().model().spec().hidden_widths(), [32, 32]);
        let narrow = Action { width: Move::Down, ..Action::KEEP };
        let applied: Vec<(Move, Vec<usize>)> = (0..4)
            .map(|_| {
                let t = env.step(narrow).unwrap();
                (t.applied.width, env.run().model().spec().hidden_widths())
            })
            .collect();
        assert_eq!(
            applied,
            [
                (Move::Down, vec![24, 24]),
                (Move::Down, vec![18, 18]),
                (Move::Down, vec![16, 16]),
                (Move::Keep, vec![16, 16]),
            ]
        );
        let state = env.state();
        assert_eq!(state.start_widths, Some(vec![32, 32]));
        // Old saved states have no start widths: no floor, as before it existed.
        let mut json = serde_json::to_value(&state).unwrap();
        json.as_object_mut().unwrap().remove("start_widths");
        let old: tuneforge_agent::env::EnvState = serde_json::from_value(json).unwrap();
        assert_eq!(old.start_widths, None);
        // With the floor off, the absolute bound (8) is the limit.
        let mut env = digits_env(400, Bounds { width_floor: 0.0, ..Bounds::default() });
        for _ in 0..5 {
            env.step(narrow).unwrap();
        }
        assert_eq!(env.run().model().spec().hidden_widths(), [8, 8]);
    }

    #[test]
    fn actions_change_lr_batch_and_widths_within_bounds() {
        let bounds = Bounds { lr: (1e-4, 1e-2), batch: (16, 64), width: (8, 48), ..Bounds::default() };
        let mut env = digits_env(400, bounds);
        let lr0 = env.run().learning_rate();
        let t = env.step(Action { lr: Move::Down, batch: Move::Up, width: Move::Up }).unwrap();
        assert_eq!(t.applied, Action { lr: Move::Down, batch: Move::Up, width: Move::Up });
        assert!((env.run().learning_rate() - lr0 / 2.0).abs() < 1e-15);
        assert_eq!(env.run().batch_size(), 64);
        assert_eq!(env.run().model().spec().hidden_widths(), [48, 48]);
        // At the bounds, the same moves change nothing and are reported as Keep.
        let t = env.step(Action { lr: Move::Keep, batch: Move::Up, width: Move::Up }).unwrap();
        assert_eq!(t.applied, Action::KEEP);
        assert_eq!((env.run().batch_size(), env.run().model().spec().hidden_widths()), (64, vec![48, 48]));
        // Narrowing ×¾ and a smaller batch.
        let t = env.step(Action { lr: Move::Up, batch: Move::Down, width: Move::Down }).unwrap();
        assert_eq!(env.run().model().spec().hidden_widths(), [36, 36]);
        assert_eq!(env.run().batch_size(), 32);
        assert!(t.val_f1 > 0.5 && t.samples_per_s > 0.0);
    }

    #[test]
    fn an_environment_needs_a_validation_split() {
        let run = Run::new(config("digits", "mlp:16", 1), &repo_dirs(), &cache(), &Device::Cpu).unwrap();
        assert!(Env::new(run, EnvConfig::default()).is_err());
    }
}

mod policy {
    use rand::SeedableRng;
    use tuneforge_agent::env::{Action, Observation};
    use tuneforge_agent::policy::{Fixed, Policy, Reinforce};

    pub(super) fn obs(x: f64) -> Observation {
        Observation {
            loss: x,
            loss_delta: 0.0,
            val_f1: 0.5,
            val_f1_delta: 0.0,
            log_grad_norm: 0.0,
            log_lr: -3.0,
            log2_batch: 5.0,
            log2_width: 6.0,
            rel_throughput: 1.0,
            budget_used: 0.5,
            anomalies: 0.0,
        }
    }

    /// fuzz/regressions/policy/: a weight so large that a logit overflows gave NaN
    /// probabilities (the policy then always took the last action); a negative variance
    /// statistic made every feature NaN. The first now gives a distribution, the second is
    /// refused by `validate`.
    #[test]
    fn a_loaded_policy_never_gives_nan_probabilities() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/policy");
        let read = |name: &str| -> Reinforce {
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
        };
        let big = read("weight-overflows-the-logits.json");
        big.validate().unwrap();
        for x in [2.3, 1e6, -1e300] {
            let p = big.probabilities(&obs(x));
            let sum: f64 = p.iter().sum();
            assert!(p.iter().all(|q| q.is_finite() && *q >= 0.0) && (sum - 1.0).abs() < 1e-12, "{p:?}");
        }
        assert!(read("negative-variance.json").validate().unwrap_err().contains("obs_m2"));
        assert!(Reinforce { baseline_rate: 2.0, ..Reinforce::default() }.validate().is_err());
    }

    /// A contextual bandit: with loss > 0 the rewarded action is "lr down", otherwise
    /// "batch up". REINFORCE must learn both from rewards alone.
    #[test]
    fn reinforce_learns_a_contextual_bandit() {
        let down = Action { lr: tuneforge_agent::env::Move::Down, ..Action::KEEP };
        let up = Action { batch: tuneforge_agent::env::Move::Up, ..Action::KEEP };
        let mut policy = Reinforce::new(0.2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let uniform = policy.probabilities(&obs(1.0))[down.index()];
        assert!((uniform - 1.0 / 27.0).abs() < 1e-12);
        for episode in 0..400 {
            let o = obs(if episode % 2 == 0 { 1.0 } else { -1.0 });
            let a = policy.act(&o, &mut rng);
            let target = if o.loss > 0.0 { down } else { up };
            let reward = if a == target { 1.0 } else { 0.0 };
            policy.update(&[(o, a, reward)]);
        }
        let p_down = policy.probabilities(&obs(1.0))[down.index()];
        let p_up = policy.probabilities(&obs(-1.0))[up.index()];
        println!("after 400 episodes: P(lr down | loss>0) = {p_down:.3}, P(batch up | loss<0) = {p_up:.3}");
        assert!(p_down > 0.5 && p_up > 0.5, "{p_down} {p_up}");
        // Plain data: the state survives a JSON round trip.
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<Reinforce>(&json).unwrap(), policy);
        assert_eq!(Fixed.act(&obs(1.0), &mut rng), Action::KEEP);
        // A study's default policy starts mostly keeping the configuration.
        let p = Reinforce::default().probabilities(&obs(1.0));
        let keep = 4f64.exp() / (4f64.exp() + 26.0);
        assert!(
            (p[Action::KEEP.index()] - keep).abs() < 1e-12 && (p[down.index()] - (1.0 - keep) / 26.0).abs() < 1e-12
        );
    }
}

mod actor_critic {
    use rand::SeedableRng;
    use tuneforge_agent::env::{Action, Move, Observation};
    use tuneforge_agent::policy::{ActorCritic, Policy, StudyPolicy};

    fn obs(loss: f64, budget_used: f64) -> Observation {
        Observation { budget_used, ..super::policy::obs(loss) }
    }

    /// A study's starting policy validates and gives distributions.
    #[test]
    fn the_default_policy_is_valid() {
        let p = StudyPolicy::default();
        p.validate().unwrap();
        for head in p.head_probabilities(&obs(0.3, 0.5)) {
            assert!((head.iter().sum::<f64>() - 1.0).abs() < 1e-12 && head.iter().all(|q| *q > 0.0), "{head:?}");
        }
        let joint: f64 = p.probabilities(&obs(0.3, 0.5)).iter().sum();
        assert!((joint - 1.0).abs() < 1e-12);
        // Untrained: each head keeps with e^2.7 / (e^2.7 + 2).
        let keep = 2.7f64.exp() / (2.7f64.exp() + 2.0);
        let u = ActorCritic::untrained().head_probabilities(&obs(0.3, 0.5));
        assert!(u.iter().all(|h| (h[1] - keep).abs() < 1e-12), "{u:?}");
        let mut bad = ActorCritic::untrained();
        bad.critic.pop();
        assert!(bad.validate().unwrap_err().contains("critic"));
        assert!(ActorCritic { critic_rate: 2.0, ..ActorCritic::untrained() }.validate().is_err());
    }

    /// A contextual bandit seen through the factored heads: with loss > 0 the rewarded move is
    /// "lr down", otherwise "batch up" (the other heads' moves do not matter). One-step
    /// episodes, so the critic is a state baseline.
    #[test]
    fn actor_critic_learns_a_contextual_bandit() {
        let mut policy = ActorCritic::untrained();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for episode in 0..3000 {
            let o = obs(if episode % 2 == 0 { 1.0 } else { -1.0 }, 0.0);
            let a = policy.act(&o, &mut rng);
            let reward = if o.loss > 0.0 { f64::from(a.lr == Move::Down) } else { f64::from(a.batch == Move::Up) };
            policy.update(&[(o, a, reward)]);
        }
        let p_down = policy.head_probabilities(&obs(1.0, 0.0))[0][0];
        let p_up = policy.head_probabilities(&obs(-1.0, 0.0))[1][2];
        println!("P(lr down | loss>0) = {p_down:.3}, P(batch up | loss<0) = {p_up:.3}");
        assert!(p_down > 0.6 && p_up > 0.6, "{p_down} {p_up}");
        // The critic learnt the mean reward of each state (≈ P(rewarded move)).
        let (v_pos, v_neg) = (policy.value(&obs(1.0, 0.0)), policy.value(&obs(-1.0, 0.0)));
        assert!((v_pos - p_down).abs() < 0.2 && (v_neg - p_up).abs() < 0.2, "{v_pos} {v_neg}");
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<ActorCritic>(&json).unwrap(), policy);
    }

    /// A delayed reward: "batch up" at the first of three decisions pays only at the end
    /// (the batch size is in the observation, as in the environment). Learning must carry it
    /// back through the critic (TD), not only from the last step.
    #[test]
    fn actor_critic_carries_a_delayed_reward_back() {
        let mut policy = ActorCritic::untrained();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..4000 {
            let mut episode = Vec::new();
            let mut first_up = false;
            for t in 0..3 {
                let o = Observation { log2_batch: if first_up { 6.0 } else { 5.0 }, ..obs(0.0, t as f64 / 3.0) };
                let a = policy.act(&o, &mut rng);
                if t == 0 {
                    first_up = a.batch == Move::Up;
                }
                let reward = if t == 2 && first_up { 1.0 } else { 0.0 };
                episode.push((o, a, reward));
            }
            policy.update(&episode);
        }
        let p = policy.head_probabilities(&obs(0.0, 0.0))[1][2];
        println!("P(batch up at the first decision) = {p:.3}");
        assert!(p > 0.6, "{p}");
    }

    /// The shipped prior (crates/agent/policies/digits.json) loads, validates, and holds what
    /// its digits study learnt: at a digits-like first decision it moves the batch size up
    /// and keeps the width more often than anything else, and it starts a study at the
    /// prior step scale.
    #[test]
    fn the_pretrained_prior_prefers_what_digits_taught_it() {
        let p = StudyPolicy::pretrained();
        p.validate().unwrap();
        assert!(p.episodes > 100 && p.transitions > 1000, "{} episodes", p.episodes);
        assert_eq!(p.td_ms, ActorCritic::untrained().td_ms, "for_new_study resets the step scale");
        assert!(p.critic.iter().all(|&w| w == 0.0) && p.warmup == 16, "and the critic");
        // During the warm-up only the critic learns.
        let mut warming = p.clone();
        let o = obs(0.0, 0.5);
        warming.learn(&o, Action::KEEP, 1.0, None);
        assert_eq!((warming.actor == p.actor, warming.warmup), (true, 15));
        assert!(warming.value(&o) > 0.0);
        let first = Observation {
            loss: 0.5,
            loss_delta: 0.0,
            val_f1: 0.85,
            val_f1_delta: 0.0,
            log_grad_norm: 0.0,
            log_lr: 3e-3f64.log10(),
            log2_batch: 5.0,
            log2_width: 6.0,
            rel_throughput: 1.0,
            budget_used: 0.125,
            anomalies: 0.0,
        };
        let [_, batch, width] = p.head_probabilities(&first);
        println!("batch {batch:?}, width {width:?}");
        // Learnt with the budget in rows: a batch of 32 is raised (fewer, faster steps for
        // the same rows), the width is kept.
        assert!(batch[2] > batch[1] && batch[2] > batch[0], "batch {batch:?}");
        assert!(width[1] > width[0] && width[1] > width[2], "width {width:?}");
        // An untrained policy keeps.
        let [_, batch, _] = ActorCritic::untrained().head_probabilities(&first);
        assert!(batch[1] > 0.8);
    }

    /// An episode stopped by the study's budget is not an ending: its last decision
    /// bootstraps from the value of the state it left, so a critic that expects more reward
    /// there pushes that decision up, where an ended episode (nothing more to come) does not.
    #[test]
    fn a_stopped_episode_bootstraps_from_its_last_state() {
        let mut trained = ActorCritic::untrained();
        // Teach the critic that a state half-way through is worth ≈ 0.5 more to come.
        let (mid, late) = (obs(0.0, 0.5), obs(0.0, 1.0));
        for _ in 0..300 {
            trained.learn(&mid, Action::KEEP, 0.5, None);
        }
        let v = trained.value(&mid);
        assert!((v - 0.5).abs() < 0.05, "{v}");
        let episode = vec![(late.clone(), Action::KEEP, 0.0)];
        let (mut ended, mut stopped) = (trained.clone(), trained.clone());
        ended.learn_episode(&episode, None);
        stopped.learn_episode(&episode, Some(&mid));
        assert_eq!((ended.episodes, stopped.episodes), (trained.episodes + 1, trained.episodes + 1));
        assert!(stopped.value(&late) > ended.value(&late), "{} {}", stopped.value(&late), ended.value(&late));
        // The stopped one is exactly one step with `mid` as the next state.
        let mut manual = trained.clone();
        manual.learn(&late, Action::KEEP, 0.0, Some(&mid));
        manual.episodes += 1;
        assert_eq!(manual, stopped);
    }

    /// Acting mid-episode with the decisions so far learnt gives the same policy as learning
    /// them one at a time, and the finished episode's update equals the last open state plus
    /// the terminal step — what makes a resumed study act as the uninterrupted one.
    #[test]
    fn an_open_episode_replays_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let committed = ActorCritic::untrained();
        let mut stepwise = committed.clone();
        let mut episode: Vec<(Observation, Action, f64)> = Vec::new();
        let mut current = obs(0.7, 0.0);
        for t in 1..=5 {
            let a = committed.with_open_episode(&episode, &current).act(&current, &mut rng);
            let next = obs(0.7 - 0.1 * t as f64, t as f64 / 5.0);
            let reward = 0.01 * t as f64;
            if let Some((o, a, r)) = episode.last() {
                stepwise.learn(o, *a, *r, Some(&current));
            }
            episode.push((current.clone(), a, reward));
            current = next;
        }
        let mut open = stepwise.clone();
        let (o, a, r) = episode.last().unwrap();
        open.learn(o, *a, *r, Some(&current));
        assert_eq!(committed.with_open_episode(&episode, &current), open);
        let mut finished = committed.clone();
        finished.update(&episode);
        stepwise.learn(o, *a, *r, None);
        stepwise.episodes += 1;
        assert_eq!(finished, stepwise);
        assert_eq!(finished.transitions, 5);
    }
}

mod tune {
    use std::time::Duration;

    use super::*;
    use tuneforge_agent::env::{Bounds, EnvConfig};
    use tuneforge_agent::store::{SqliteStore, StudyStore};
    use tuneforge_agent::tune::{
        Extension, Output, Stop, Strategy, TrialRecord, TuneConfig, TuneSummary, parse_study_config, resume,
        study_config_json, study_path, tune,
    };
    use tuneforge_monitor::ProgressMode;

    #[test]
    fn parse_budget_refuses_a_budget_no_duration_holds() {
        use tuneforge_agent::tune::parse_budget;
        assert_eq!(parse_budget("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_budget(" 1.5h ").unwrap(), Duration::from_secs(5400));
        // fuzz/regressions/budget/seconds-beyond-u64: 1e20 s panicked in Duration::from_secs_f64.
        let e = parse_budget("99999999999999999999").unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
        assert!(parse_budget("3074457345618258602.5m").is_err());
        // fuzz/regressions/budget/rounds-to-zero: a positive budget below half a nanosecond was 0.
        assert!(parse_budget("0.0000000001s").unwrap_err().to_string().contains("must be positive"));
        assert_eq!(parse_budget("0.000000001s").unwrap(), Duration::from_nanos(1));
    }

    /// `study_process` tells a study some live process runs from one whose process is gone
    /// or holds no lock any more, and never takes the lock (a study it looked at can still be
    /// resumed at once).
    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "exact on Linux only (/proc/locks)")]
    fn study_process_names_a_live_holder_and_not_a_dead_one() {
        use tuneforge_agent::tune::study_process;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(study_process(dir), None, "no study.lock");
        // A study this process runs: tune writes its pid into the lock while it holds it.
        let cfg = digits_study(Strategy::Fixed, 1.0);
        let seen = std::cell::Cell::new(None);
        tune(&cfg, &repo_dirs(), &cache(), &Device::Cpu, dir, &mut |_| seen.set(Some(study_process(dir)))).unwrap();
        assert_eq!(seen.get(), Some(Some(std::process::id())), "while its trials run");
        let me = std::process::id();
        // Finished: the lock file still names this process, alive, but it holds no lock — as
        // a pid reused by another process after a kill would read.
        assert_eq!(std::fs::read_to_string(dir.join("study.lock")).unwrap().trim(), me.to_string());
        assert_eq!(study_process(dir), None, "the study ended; its pid is alive but holds no lock");
        // A holder of the lock (another open of the file: `flock` locks are per open file).
        let holder = std::fs::OpenOptions::new().write(true).open(dir.join("study.lock")).unwrap();
        holder.lock().unwrap();
        assert_eq!(study_process(dir), Some(me), "held");
        drop(holder);
        assert_eq!(study_process(dir), None, "released");
        // A process that exited, and text that is not a pid.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(dir.join("study.lock"), dead.to_string()).unwrap();
        assert_eq!(study_process(dir), None, "pid {dead} has exited");
        std::fs::write(dir.join("study.lock"), "not a pid").unwrap();
        assert_eq!(study_process(dir), None);
        std::fs::write(dir.join("study.lock"), me.to_string()).unwrap();
        // Looking did not take the lock: reading the config takes it (and refuses a held one).
        tuneforge_agent::tune::study_config(dir, ProgressMode::Off).unwrap();
    }

    #[test]
    fn a_stored_study_config_that_would_panic_later_is_refused() {
        let good = study_config_json(&digits_study(Strategy::Rl, 90.0));
        assert_eq!(parse_study_config(&good, ProgressMode::Off).unwrap().budget, Duration::from_secs(90));
        // fuzz/regressions/study_config/checkpoint-every-beyond-u64.json: Duration::from_secs_f64 panicked.
        let huge = good.replace(r#""checkpoint_every_s":0.0"#, r#""checkpoint_every_s":27555555555555555555"#);
        assert_ne!(huge, good);
        let e = parse_study_config(&huge, ProgressMode::Off).unwrap_err().to_string();
        assert!(e.contains("checkpoint_every_s"), "{e}");
        // Bounds out of order made `clamp` panic when the study resumed.
        let unordered = good.replace(r#""batch":[16,1024]"#, r#""batch":[1024,16]"#);
        assert_ne!(unordered, good);
        assert!(parse_study_config(&unordered, ProgressMode::Off).unwrap_err().to_string().contains("bounds"));
    }

    /// A learning study keeps the policy it started from in its stored configuration, so
    /// that `--resume` before its first trial ends, and a worker joining it, start there too.
    #[test]
    fn a_stored_study_config_keeps_its_starting_policy() {
        use tuneforge_agent::policy::StudyPolicy;
        let as_json = |p: &StudyPolicy| serde_json::to_value(p).unwrap();
        let start = |config: &TuneConfig| {
            let back = parse_study_config(&study_config_json(config), ProgressMode::Off).unwrap();
            back.policy.as_ref().map(as_json)
        };
        // The default start is untrained; --policy digits is the shipped prior.
        let mut rl = digits_study(Strategy::Rl, 90.0);
        assert!(rl.policy.is_none());
        assert_eq!(start(&rl), Some(as_json(&StudyPolicy::untrained())));
        rl.policy = Some(StudyPolicy::pretrained());
        assert_ne!(as_json(&StudyPolicy::pretrained()), as_json(&StudyPolicy::untrained()));
        assert_eq!(start(&rl), Some(as_json(&StudyPolicy::pretrained())));
        // Strategies that do not learn store none.
        let asha = digits_study(Strategy::Asha, 90.0);
        assert!(!study_config_json(&asha).contains("\"policy\""));
        assert_eq!(start(&asha), None);
        // A study stored before the start was kept began at the then default, the digits prior.
        let mut old: serde_json::Value = serde_json::from_str(&study_config_json(&rl)).unwrap();
        old.as_object_mut().unwrap().remove("policy").unwrap();
        let old = parse_study_config(&old.to_string(), ProgressMode::Off).unwrap();
        assert_eq!(old.policy.as_ref().map(as_json), Some(as_json(&StudyPolicy::pretrained())));
        // A stored start that does not fit this version is refused with the reason.
        let mut bad: serde_json::Value = serde_json::from_str(&study_config_json(&rl)).unwrap();
        bad["policy"]["critic"] = serde_json::json!([1.0]);
        let e = parse_study_config(&bad.to_string(), ProgressMode::Off).unwrap_err().to_string();
        assert!(e.contains("starting policy") && e.contains("critic"), "{e}");
    }

    fn digits_study(strategy: Strategy, budget_s: f64) -> TuneConfig {
        TuneConfig {
            data: DataSource::parse("digits", None).unwrap(),
            model: "mlp:32".into(),
            strategy,
            budget: Duration::from_secs_f64(budget_s),
            max_trials: None,
            enqueued: Vec::new(),
            stop_when: Default::default(),
            trial_timeout: None,
            seed: 5,
            batch_size: 32,
            lr: 3e-3,
            env: EnvConfig {
                decision_steps: 20,
                lambda: 0.02,
                bounds: Bounds::default(),
                budget_steps: 180,
                unit_batch: None,
            },
            checkpoint_every: Duration::ZERO,
            policy: None,
            progress: ProgressMode::Off,
            log_steps_every: 10,
            stop: Default::default(),
            cosine: true,
            val_fraction: 0.2,
        }
    }

    /// The F1 in summary.json equals the one recomputed from predictions.csv, the best trial
    /// is the one with the best validation F1, and the store agrees with the summary.
    fn check_outputs(dir: &Path, summary: &TuneSummary) {
        let (truth, pred) = tuneforge_agent::run::read_predictions(&dir.join("predictions.csv")).unwrap();
        let mut cm = tuneforge_eval::ConfusionMatrix::new(10).unwrap();
        cm.update(&truth, &pred).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["best"]["test_macro_f1"].as_f64().unwrap(), cm.report().macro_avg.f1);
        for key in ["dataset", "strategy", "budget_s", "seed", "trials", "best"] {
            assert!(json.get(key).is_some(), "summary.json lacks {key}");
        }
        for key in ["id", "status", "val_macro_f1", "samples_per_s", "decisions", "resumed", "final_hparams"] {
            assert!(json["trials"][0].get(key).is_some(), "a trial lacks {key}");
        }
        let finished = summary.trials.iter().filter(|t| !t.status.starts_with("failed"));
        let best = finished.map(|t| t.val_macro_f1).fold(0.0, f64::max);
        assert_eq!(summary.best.val_macro_f1, best);
        let ids: Vec<u64> = summary.trials.iter().map(|t| t.id).collect();
        assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "trial ids are 0..n, each once");
        let store = SqliteStore::open(&study_path(dir)).unwrap();
        let rows = store.trials().unwrap();
        assert_eq!(rows.len(), summary.trials.len());
        assert!(
            // (A random start may diverge: "failed: ...", an ending too.)
            rows.iter().all(|r| r.status == "completed" || r.status == "stopped" || r.status.starts_with("failed")),
            "no trial left running: {:?}",
            rows.iter().map(|r| (r.id, r.status.as_str())).collect::<Vec<_>>()
        );
        for (row, t) in rows.iter().zip(&summary.trials) {
            let decisions = store.decisions(row.id).unwrap();
            assert_eq!(
                decisions.iter().map(|d| d.idx).collect::<Vec<_>>(),
                (0..decisions.len() as u64).collect::<Vec<_>>()
            );
            let applied =
                decisions.iter().filter(|d| d.applied != r#"{"lr":"keep","batch":"keep","width":"keep"}"#).count();
            assert_eq!(applied as u64, t.decisions, "trial {}", t.id);
        }
        // Only the best trial keeps a checkpoint.
        for r in &rows {
            assert_eq!(store.checkpoint(r.id).unwrap().is_some(), r.id == summary.best.trial, "trial {}", r.id);
        }
        assert!(dir.join("model.safetensors").is_file() && dir.join("events.jsonl").is_file());
    }

    /// A digits study of `strategy` for `budget_s` seconds in a new temporary directory, its
    /// outputs checked ([`check_outputs`]).
    fn checked_study(strategy: Strategy, budget_s: f64) -> (tempfile::TempDir, TuneSummary) {
        let tmp = tempfile::tempdir().unwrap();
        let summary =
            tune(&digits_study(strategy, budget_s), &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |_| {})
                .unwrap();
        check_outputs(tmp.path(), &summary);
        (tmp, summary)
    }

    #[test]
    fn a_short_rl_study_on_digits_writes_a_consistent_summary_and_store() {
        let tmp = tempfile::tempdir().unwrap();
        let config = digits_study(Strategy::Rl, 3.0);
        let mut seen = 0;
        let summary = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |_| seen += 1).unwrap();
        assert!(summary.trials.len() >= 2 && seen == summary.trials.len());
        check_outputs(tmp.path(), &summary);
        assert!(tmp.path().join("policy.json").is_file());
        assert!(summary.best.test_macro_f1 > 0.85, "{}", summary.best.test_macro_f1);
        assert!(summary.trials.iter().any(|t| t.decisions > 0), "the policy acted");
        assert!(summary.agent_overhead < 0.01, "agent overhead {}", summary.agent_overhead);
        // The policy state in the store is the one written to policy.json.
        let store = SqliteStore::open(&study_path(tmp.path())).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&store.policy().unwrap().unwrap()).unwrap();
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("policy.json")).unwrap()).unwrap();
        assert_eq!(stored, file);
        // Every trial that took a decision and did not fail (an empty episode teaches nothing;
        // the first decision comes after 20 × 32 rows, where a trial may stop at rung 0).
        let learnt =
            summary.trials.iter().filter(|t| !t.status.starts_with("failed") && t.samples >= 2 * 20 * 32).count();
        // The study started untrained: its episodes are its own trials'.
        assert_eq!(file["episodes"].as_u64().unwrap(), learnt as u64);
        // A second study in the same directory is refused; resuming a finished one only re-tests it.
        let e = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("already holds a study"), "{e}");
        let again = resume(tmp.path(), &repo_dirs(), &cache(), &Device::Cpu, ProgressMode::Off, &mut |_| {}).unwrap();
        assert_eq!(again.trials.len(), summary.trials.len());
        assert_eq!(again.best.trial, summary.best.trial);
        assert_eq!(again.best.test_macro_f1, summary.best.test_macro_f1);
    }

    /// A starting model that cannot take the data: refused before the study is created (it
    /// used to fail each trial as it started, for the whole budget).
    #[test]
    fn a_model_that_cannot_take_the_data_is_refused_before_the_study() {
        let tmp = tempfile::tempdir().unwrap();
        for model in ["seed-cnn", "text-cnn", "mlp:0"] {
            let config = TuneConfig { model: model.into(), ..digits_study(Strategy::Random, 600.0) };
            let dir = tmp.path().join(model);
            let e =
                tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| panic!("a trial ran")).unwrap_err();
            assert!(matches!(e, tuneforge_agent::Error::Config { what: "model", .. }), "{e:?}");
            assert!(e.to_string().contains(&format!("the starting model {model} cannot train on digits")), "{e}");
            assert!(!dir.exists(), "{model}: {e}");
        }
        // The same model on data it takes is a study.
        let config =
            TuneConfig { model: "mlp:16".into(), max_trials: Some(1), ..digits_study(Strategy::Random, 600.0) };
        let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join("ok"), &mut |_| {}).unwrap();
        assert_eq!(s.trials.len(), 1);
    }

    #[test]
    fn a_stop_handle_ends_its_own_study_and_not_another_in_the_process() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let stopped = digits_study(Strategy::Random, 20.0);
        let other = digits_study(Strategy::Random, 3.0);
        let stop = stopped.stop.clone();
        assert!(stop == stopped.stop && stop != other.stop);
        let (sa, sb) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let mut ended = 0;
                tune(&stopped, &repo_dirs(), &cache(), &Device::Cpu, &a, &mut |_| {
                    ended += 1;
                    if ended == 2 {
                        stop.request();
                    }
                })
            });
            let b = s.spawn(|| tune(&other, &repo_dirs(), &cache(), &Device::Cpu, &b, &mut |_| {}));
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        // The stopped study ended after the trial that asked, with all its outputs; the
        // other ran its whole budget.
        assert_eq!(sa.trials.len(), 2, "{:?}", sa.trials.iter().map(|t| &t.status).collect::<Vec<_>>());
        assert!(sa.wall_s < 20.0 && sb.wall_s >= 3.0, "{} {}", sa.wall_s, sb.wall_s);
        assert!(sb.trials.len() > sa.trials.len(), "{} trials", sb.trials.len());
        check_outputs(&a, &sa);
        check_outputs(&b, &sb);

        // Resumed with a handle of its own (`Output::stop`): it runs on from where it was,
        // and ends again when that handle is asked, its budget not spent.
        let output = Output { progress: ProgressMode::Off, log_steps_every: 10, stop: Stop::default() };
        let again = output.stop.clone();
        let mut ended = 0;
        let resumed = resume(&a, &repo_dirs(), &cache(), &Device::Cpu, output, &mut |_| {
            ended += 1;
            again.request();
        })
        .unwrap();
        assert_eq!((ended, resumed.trials.len()), (1, 3));
        assert!(resumed.wall_s > sa.wall_s && resumed.wall_s < 20.0, "{} then {}", sa.wall_s, resumed.wall_s);
        check_outputs(&a, &resumed);
    }

    /// What a trial budget leaves to compare between two runs of one study: everything but
    /// the timings (samples/s, agent and store seconds) and what depends on them.
    fn repeatable(t: &TrialRecord) -> String {
        serde_json::to_string(&(&t.id, &t.status, &t.start, &t.final_hparams, t.val_macro_f1, &t.rungs, t.steps))
            .unwrap()
    }

    /// Enqueued starts run first, as given (what they leave out is the study's), the
    /// strategy's own draws after them are those of a study without them, and they are kept
    /// with the study; out of bounds or with a model that cannot take the data, refused
    /// before a study is created.
    #[test]
    fn enqueued_starts_run_first_and_leave_the_later_draws_alone() {
        use tuneforge_agent::tune::Enqueued;
        let tmp = tempfile::tempdir().unwrap();
        let plain = TuneConfig { max_trials: Some(4), ..digits_study(Strategy::Random, 600.0) };
        let enqueued: Vec<Enqueued> =
            vec!["lr=2e-3,batch=48,model=mlp:16,8".parse().unwrap(), "batch=64".parse().unwrap()];
        let config = TuneConfig { enqueued: enqueued.clone(), ..plain.clone() };
        let dir = tmp.path().join("enqueued");
        let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
        check_outputs(&dir, &s);
        let starts: Vec<_> = s.trials.iter().map(|t| (t.start.model.clone(), t.start.lr, t.start.batch_size)).collect();
        assert_eq!(starts[0], ("mlp:16,8".to_string(), 2e-3, 48));
        assert_eq!(starts[1], (plain.model.clone(), plain.lr, 64));
        let p = tune(&plain, &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join("plain"), &mut |_| {}).unwrap();
        assert_eq!(s.trials[2].start, p.trials[2].start);
        assert_eq!(s.trials[3].start, p.trials[3].start);
        assert_eq!(s.trials.len(), 4, "enqueued starts count against the trial budget");
        assert_eq!(tuneforge_agent::tune::study_config(&dir, ProgressMode::Off).unwrap().enqueued, enqueued);
        assert!(!study_config_json(&plain).contains("enqueued"), "absent when there are none");
        // Refused, saying which and why, before anything is created.
        for (e, says) in [
            ("lr=2", "lr 2 is outside the learning-rate bounds"),
            ("batch=4096", "batch 4096 is outside the batch-size bounds"),
            ("model=mlp:4096", "width 4096 is outside the width bounds"),
            ("model=seed-cnn", "width 32 is outside the width bounds 64:2048"),
            ("model=seed-cnn", "the starting model seed-cnn of enqueued trial 1 cannot train on digits"),
        ] {
            let mut bad = TuneConfig { enqueued: vec![Enqueued::default(), e.parse().unwrap()], ..plain.clone() };
            if e == "model=seed-cnn" && says.starts_with("width") {
                // seed-cnn's 32 channels and 64 units count as widths, as for the study's model.
                bad.env.bounds.width = (64, 2048);
            }
            let dir = tmp.path().join("refused");
            let err = tune(&bad, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains(says), "{e}: {err}");
            assert!(!dir.exists(), "{e}");
        }
        for (text, says) in [
            ("lr=fast", "not a number"),
            ("batch=1.5", "not a whole number"),
            ("width=3", "unknown key \"width\""),
            ("lr=1e-3,lr=2e-3", "lr given twice"),
            ("mlp:64", "expected KEY=VALUE"),
            ("", "expected KEY=VALUE"),
        ] {
            let err = text.parse::<Enqueued>().unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        // Read back from its text.
        for e in &enqueued {
            assert_eq!(&e.to_string().parse::<Enqueued>().unwrap(), e);
        }
    }

    #[test]
    fn a_trial_budget_ends_the_study_and_a_second_run_has_the_same_trials() {
        let tmp = tempfile::tempdir().unwrap();
        // A wall clock far longer than 5 digits trials take: the trial budget ends each study.
        for strategy in [Strategy::Random, Strategy::Asha, Strategy::Pbt, Strategy::Pb2, Strategy::Rl] {
            let config = TuneConfig { max_trials: Some(5), ..digits_study(strategy, 600.0) };
            let run = |name: &str| {
                let dir = tmp.path().join(format!("{strategy}-{name}"));
                let mut seen = Vec::new();
                let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |t| seen.push(t.id)).unwrap();
                check_outputs(&dir, &s);
                assert_eq!(seen.len(), 5, "{strategy}: on_trial saw {seen:?}");
                (dir, s)
            };
            let (dir, a) = run("a");
            let ids: Vec<u64> = a.trials.iter().map(|t| t.id).collect();
            assert_eq!(ids, [0, 1, 2, 3, 4], "{strategy}");
            assert!(a.wall_s < 600.0, "{strategy}: {} s", a.wall_s);
            assert!(a.trials.iter().all(|t| t.status != "running" && t.status != "paused"), "{strategy}");
            if strategy == Strategy::Asha {
                // Promoted from checkpoints, not started anew: someone went past rung 0.
                assert!(a.trials.iter().any(|t| t.rungs.len() > 1), "{:?}", a.trials.iter().map(|t| &t.rungs));
            }
            // Stored with the study: a resume of the finished study starts nothing.
            let config_back = tuneforge_agent::tune::study_config(&dir, ProgressMode::Off).unwrap();
            assert_eq!(config_back.max_trials, Some(5));
            let mut more = 0;
            let again =
                resume(&dir, &repo_dirs(), &cache(), &Device::Cpu, ProgressMode::Off, &mut |_| more += 1).unwrap();
            assert_eq!((more, again.trials.len()), (0, 5), "{strategy}");
            if strategy != Strategy::Rl {
                // Not cut by the clock, the study does not depend on the machine's speed: a
                // second run has the same trials, bit for bit (rl's reward has throughput in it).
                let (_, b) = run("b");
                let (ta, tb): (Vec<String>, Vec<String>) =
                    (a.trials.iter().map(repeatable).collect(), b.trials.iter().map(repeatable).collect());
                assert_eq!(ta, tb, "{strategy}");
                assert_eq!(a.best.test_macro_f1, b.best.test_macro_f1, "{strategy}");
            }
        }
    }

    /// The early-stopping rules end a study where an independent reading of its trials says
    /// they should (the first evaluation at or above the F1, mid-trial; the first point at
    /// which N trials after the best had ended), say why in the summary, and are kept,
    /// changed or removed with the study.
    #[test]
    fn a_study_ends_early_at_a_target_f1_or_after_trials_without_a_better_one() {
        use tuneforge_agent::tune::{Ended, StopWhen};
        let tmp = tempfile::tempdir().unwrap();
        let long = TuneConfig { max_trials: Some(200), seed: 1, ..digits_study(Strategy::Random, 600.0) };
        // The reference: the same study run to 40 trials without a rule (a random study's
        // trials do not depend on what ended it).
        let plain = TuneConfig { max_trials: Some(40), ..long.clone() };
        let p = tune(&plain, &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join("plain"), &mut |_| {}).unwrap();
        assert_eq!(p.ended, Some(Ended::MaxTrials));
        let f1: Vec<f64> = p.trials.iter().map(|t| t.val_macro_f1).collect();
        // Each trial's validation macro-F1 after each of its intervals, (step, F1), from the
        // study store.
        let store = SqliteStore::open(&study_path(&tmp.path().join("plain"))).unwrap();
        let curves: Vec<Vec<(u64, f64)>> = (0..f1.len() as u64)
            .map(|id| {
                let mut rows = store.evaluations(id).unwrap();
                rows.retain(|e| e.split == "validation");
                rows.sort_by_key(|e| e.idx);
                rows.iter().map(|e| (e.step, e.macro_f1)).collect()
            })
            .collect();
        drop(store);
        // Where a study ends for a target: the first trial with an evaluation at or above it,
        // at that evaluation.
        let ends_at = |target: f64| {
            curves.iter().enumerate().find_map(|(k, c)| c.iter().find(|e| e.1 >= target).map(|e| (k, *e)))
        };
        // A target the 40 trials reach, but not at trial 0, and first in the middle of a
        // trial (before its last interval): an F1 some trial had mid-way.
        let (target, first, (step, reached)) = curves
            .iter()
            .flat_map(|c| c[..c.len() - 1].iter().map(|e| e.1))
            .filter(|&t| t > curves[0].iter().map(|e| e.1).fold(0.0, f64::max))
            .find_map(|t| {
                let (k, e) = ends_at(t)?;
                (e.0 < curves[k].last().unwrap().0).then_some((t, k, e))
            })
            .expect("an F1 first reached mid-trial after trial 0");
        assert!(first > 0, "{f1:?}");
        let config = TuneConfig { stop_when: StopWhen { f1: Some(target), patience: None }, ..long.clone() };
        let dir = tmp.path().join("target");
        let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
        check_outputs(&dir, &s);
        assert_eq!(s.trials.len(), first + 1);
        assert_eq!(s.ended, Some(Ended::F1Reached { trial: first as u64, val_macro_f1: reached }));
        assert_eq!(s.best.trial, first as u64);
        // That trial stopped where it reached the target, short of its rows.
        let last = &s.trials[first];
        assert_eq!((last.status.as_str(), last.steps, last.val_macro_f1), ("stopped", step, reached));
        assert!(last.steps < p.trials[first].steps, "{} of {} steps", last.steps, p.trials[first].steps);
        // asha (paused trials) and pbt (a population): no trial trains past an evaluation at
        // the target, and the study ends there.
        for strategy in [Strategy::Asha, Strategy::Pbt] {
            let config = TuneConfig { strategy, ..config.clone() };
            let dir = tmp.path().join(format!("target-{strategy}"));
            let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
            check_outputs(&dir, &s);
            let Some(Ended::F1Reached { trial, val_macro_f1 }) = s.ended else { panic!("{strategy}: {:?}", s.ended) };
            assert!(val_macro_f1 >= target && s.trials.len() < 200, "{strategy}");
            let store = SqliteStore::open(&study_path(&dir)).unwrap();
            for t in &s.trials {
                let mut rows = store.evaluations(t.id).unwrap();
                rows.retain(|e| e.split == "validation");
                rows.sort_by_key(|e| e.idx);
                let early = rows.iter().rev().skip(1).find(|e| e.macro_f1 >= target);
                assert!(early.is_none(), "{strategy}: trial {} went on past {early:?}", t.id);
            }
            assert!(s.trials.iter().any(|t| t.id == trial && t.val_macro_f1 == val_macro_f1), "{strategy}");
        }
        // Patience: where N trials after the best first have ended, read off the reference.
        let n = 4;
        let mut best = 0;
        let stop = (1..f1.len())
            .find(|&i| {
                if f1[i] > f1[best] {
                    best = i;
                }
                i - best >= n
            })
            .expect("the reference has 4 trials in a row without a better one");
        let config = TuneConfig { stop_when: StopWhen { f1: None, patience: Some(n as u64) }, ..long.clone() };
        let dir = tmp.path().join("patience");
        let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
        assert_eq!(s.trials.len(), stop + 1);
        assert_eq!(s.ended, Some(Ended::Patience { best_trial: best as u64, trials_after: n as u64 }));
        assert_eq!(tuneforge_agent::tune::study_config(&dir, ProgressMode::Off).unwrap().stop_when, config.stop_when);
        // Resumed as it is, it ends again at once; with the rule removed, it runs on.
        let s = resume(&dir, &repo_dirs(), &cache(), &Device::Cpu, ProgressMode::Off, &mut |_| {}).unwrap();
        assert_eq!(s.trials.len(), stop + 1);
        let change = Extension { patience: Some(None), max_trials: Some(stop as u64 + 3), ..Extension::default() };
        let (_, after) = tuneforge_agent::tune::extend(&dir, &change).unwrap();
        assert!(after.stop_when.is_none());
        let s = resume(&dir, &repo_dirs(), &cache(), &Device::Cpu, ProgressMode::Off, &mut |_| {}).unwrap();
        assert_eq!((s.trials.len(), s.ended), (stop + 3, Some(Ended::MaxTrials)));
        // asha: paused trials end as stopped once the rule is met.
        let config = TuneConfig {
            stop_when: StopWhen { f1: None, patience: Some(3) },
            ..TuneConfig { max_trials: Some(200), ..digits_study(Strategy::Asha, 600.0) }
        };
        let dir = tmp.path().join("asha");
        let s = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
        check_outputs(&dir, &s);
        let Some(Ended::Patience { best_trial, trials_after }) = s.ended else { panic!("{:?}", s.ended) };
        let after = s.trials.iter().filter(|t| t.id > best_trial).count() as u64;
        assert!(trials_after >= 3 && after >= trials_after && s.trials.len() < 200, "{trials_after} {after}");
        assert!(s.trials.iter().all(|t| t.status == "completed" || t.status == "stopped"));
        // Refused: in a new study, a stored one, and as a change.
        for (rule, says) in [
            (StopWhen { f1: Some(0.0), patience: None }, "stop_at"),
            (StopWhen { f1: Some(1.5), patience: None }, "stop_at"),
            (StopWhen { f1: None, patience: Some(0) }, "patience"),
        ] {
            let bad = TuneConfig { stop_when: rule, ..long.clone() };
            let dir = tmp.path().join("refused");
            let err = tune(&bad, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains(says) && !dir.exists(), "{err}");
            let mut stored: serde_json::Value = serde_json::from_str(&study_config_json(&long)).unwrap();
            stored["stop_when"] = serde_json::to_value(rule).unwrap();
            let err = parse_study_config(&stored.to_string(), ProgressMode::Off).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let change = Extension { stop_at: Some(Some(2.0)), ..Extension::default() };
        assert!(tuneforge_agent::tune::extend(&tmp.path().join("target"), &change).is_err());
        assert!(!study_config_json(&long).contains("stop_when"), "absent when there is none");
    }

    /// A trial time limit stops a trial that has run that long at its next decision point
    /// (`stopped`, short of its rows) under every strategy; without it, the same trials run
    /// all their rows.
    #[test]
    fn a_trial_time_limit_stops_slow_trials_at_a_decision_point() {
        let tmp = tempfile::tempdir().unwrap();
        let slow = |strategy, timeout: Option<f64>| {
            let mut c = TuneConfig {
                max_trials: Some(4),
                model: "mlp:256,256".into(),
                trial_timeout: timeout.map(Duration::from_secs_f64),
                ..digits_study(strategy, 600.0)
            };
            c.env.budget_steps = 1200;
            c
        };
        let limit = 0.1;
        let full = tune(
            &slow(Strategy::Random, None),
            &repo_dirs(),
            &cache(),
            &Device::Cpu,
            &tmp.path().join("full"),
            &mut |_| {},
        )
        .unwrap();
        for t in &full.trials {
            assert_eq!(t.status, "completed", "trial {}", t.id);
            // (What the limit is measured against: each of these trials ran well past it.)
            assert!(t.seconds > 2.0 * limit && t.seconds < full.wall_s, "trial {}: {} s", t.id, t.seconds);
        }
        let dir = tmp.path().join("limited");
        let cut = tune(&slow(Strategy::Random, Some(limit)), &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {})
            .unwrap();
        check_outputs(&dir, &cut);
        for (t, f) in cut.trials.iter().zip(&full.trials) {
            assert_eq!(t.start, f.start);
            assert_eq!(t.status, "stopped", "trial {}", t.id);
            assert!(
                t.seconds >= limit && t.steps < f.steps,
                "trial {}: {} s, {} of {} steps",
                t.id,
                t.seconds,
                t.steps,
                f.steps
            );
        }
        let stored = tuneforge_agent::tune::study_config(&dir, ProgressMode::Off).unwrap();
        assert_eq!(stored.trial_timeout, Some(Duration::from_secs_f64(limit)));
        // Every strategy ends its trials at the limit (none left paused, none running on).
        for strategy in [Strategy::Asha, Strategy::Pbt, Strategy::Rl] {
            let dir = tmp.path().join(strategy.name());
            let s =
                tune(&slow(strategy, Some(limit)), &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| {}).unwrap();
            assert_eq!(s.trials.len(), 4, "{strategy}");
            for t in &s.trials {
                // (asha also ends the trials still paused when its trial budget is spent.)
                let timed_out = t.seconds >= limit || strategy == Strategy::Asha;
                assert!(
                    t.status == "stopped" && timed_out,
                    "{strategy} trial {}: {} after {} s",
                    t.id,
                    t.status,
                    t.seconds
                );
            }
            assert!(s.trials.iter().any(|t| t.seconds >= limit), "{strategy}");
        }
        // Refused: 0, new or stored.
        let zero = slow(Strategy::Random, Some(0.0));
        let err = tune(&zero, &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join("zero"), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("trial_timeout") && !tmp.path().join("zero").exists(), "{err}");
        let mut json: serde_json::Value =
            serde_json::from_str(&study_config_json(&slow(Strategy::Random, Some(1.0)))).unwrap();
        assert_eq!(json["trial_timeout_s"], 1.0);
        json["trial_timeout_s"] = 0.0.into();
        let err = parse_study_config(&json.to_string(), ProgressMode::Off).unwrap_err().to_string();
        assert!(err.contains("trial_timeout"), "{err}");
    }

    /// `tpe` and `tpe-multivariate`: their first 10 starts are `random`'s, the later ones are
    /// among the choices a random start has (and differ from random's, and from each
    /// other's), a trial below the top third at a rung stops there, and a second run has the
    /// same trials (the draws depend on the trials' validation F1 alone, not on time).
    #[test]
    fn tpe_starts_as_random_then_from_the_trials_before() {
        let tmp = tempfile::tempdir().unwrap();
        let config = |strategy| TuneConfig { max_trials: Some(30), ..digits_study(strategy, 600.0) };
        let run = |strategy, name: &str| {
            tune(&config(strategy), &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join(name), &mut |_| {}).unwrap()
        };
        let random = run(Strategy::Random, "random");
        let n = tuneforge_agent::tpe::STARTUP_TRIALS as usize;
        let later = |s: &TuneSummary| s.trials[n..].iter().map(|t| t.start.clone()).collect::<Vec<_>>();
        let mut runs = Vec::new();
        for strategy in [Strategy::Tpe, Strategy::TpeMultivariate] {
            let tpe = run(strategy, strategy.name());
            check_outputs(&tmp.path().join(strategy.name()), &tpe);
            assert_eq!(tpe.trials.len(), 30);
            for (t, r) in tpe.trials.iter().zip(&random.trials).take(n) {
                assert_eq!(t.start, r.start, "{strategy} trial {}", t.id);
            }
            let c = config(strategy);
            let models = ["mlp:16", "mlp:32", "mlp:64"];
            for t in &tpe.trials[n..] {
                let factor = t.start.lr / c.lr;
                assert!((0.1..=10.0).contains(&factor), "{strategy} trial {}: lr {}", t.id, t.start.lr);
                assert!([8, 16, 32, 64].contains(&t.start.batch_size) && t.start.batch_size >= 16, "trial {}", t.id);
                assert!(models.contains(&t.start.model.as_str()), "{strategy} trial {}: {}", t.id, t.start.model);
            }
            assert_ne!(later(&tpe), later(&random), "{strategy}");
            assert!(tpe.trials.iter().any(|t| t.status == "stopped" && t.rungs.len() < 3), "{strategy}: rung stopping");
            let again = run(strategy, &format!("{strategy}-again"));
            assert_eq!(
                tpe.trials.iter().map(repeatable).collect::<Vec<_>>(),
                again.trials.iter().map(repeatable).collect::<Vec<_>>(),
                "{strategy}"
            );
            assert_eq!(strategy.name().parse::<Strategy>().unwrap(), strategy);
            runs.push(tpe);
        }
        assert_ne!(later(&runs[0]), later(&runs[1]), "the joint density draws other starts");
    }

    #[test]
    fn a_study_stopped_early_runs_what_is_left_of_its_trial_budget_when_resumed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let config = TuneConfig { max_trials: Some(4), ..digits_study(Strategy::Random, 600.0) };
        let stop = config.stop.clone();
        let first = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, &dir, &mut |_| stop.request()).unwrap();
        assert_eq!(first.trials.len(), 1);
        let mut ids = Vec::new();
        let output = Output { progress: ProgressMode::Off, log_steps_every: 10, stop: Stop::default() };
        let s = resume(&dir, &repo_dirs(), &cache(), &Device::Cpu, output, &mut |t| ids.push(t.id)).unwrap();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(s.trials.len(), 4);
        check_outputs(&dir, &s);
        // Extended (new totals, kept in the store), the finished study runs on to them.
        let (before, after) = tuneforge_agent::tune::extend(
            &dir,
            &Extension { budget: Some(Duration::from_secs(900)), max_trials: Some(6), ..Extension::default() },
        )
        .unwrap();
        assert_eq!((before.max_trials, after.max_trials, after.budget.as_secs()), (Some(4), Some(6), 900));
        assert_eq!(tuneforge_agent::tune::study_config(&dir, ProgressMode::Off).unwrap().budget.as_secs(), 900);
        let mut ids = Vec::new();
        let s = resume(&dir, &repo_dirs(), &cache(), &Device::Cpu, ProgressMode::Off, &mut |t| ids.push(t.id)).unwrap();
        assert_eq!((ids, s.trials.len(), s.budget_s), (vec![4, 5], 6, 900.0));
        check_outputs(&dir, &s);
        assert!(
            tuneforge_agent::tune::extend(&dir, &Extension { max_trials: Some(0), ..Extension::default() })
                .unwrap_err()
                .to_string()
                .contains("max_trials")
        );
        assert!(
            tuneforge_agent::tune::extend(
                &tmp.path().join("none"),
                &Extension { max_trials: Some(9), ..Extension::default() }
            )
            .is_err()
        );
        // No trial budget of 0, in a new study or a stored one.
        let zero = TuneConfig { max_trials: Some(0), ..digits_study(Strategy::Random, 600.0) };
        let e = tune(&zero, &repo_dirs(), &cache(), &Device::Cpu, &tmp.path().join("z"), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("max_trials") && !tmp.path().join("z").exists(), "{e}");
        let mut stored: serde_json::Value = serde_json::from_str(&study_config_json(&config)).unwrap();
        assert_eq!(stored["max_trials"], 4);
        stored["max_trials"] = 0.into();
        let e = parse_study_config(&stored.to_string(), ProgressMode::Off).unwrap_err().to_string();
        assert!(e.contains("max_trials 0"), "{e}");
        // A study stored before trial budgets has none.
        stored.as_object_mut().unwrap().remove("max_trials");
        assert_eq!(parse_study_config(&stored.to_string(), ProgressMode::Off).unwrap().max_trials, None);
        assert!(!study_config_json(&digits_study(Strategy::Random, 1.0)).contains("max_trials"));
    }

    #[test]
    fn asha_promotes_the_top_third_and_stops_the_rest() {
        let (_tmp, summary) = checked_study(Strategy::Asha, 4.0);
        let at = |k: usize| summary.trials.iter().filter(|t| t.rungs.len() > k).count();
        assert!(at(0) >= 6, "{} trials reached rung 0", at(0));
        // A trial goes on when it is in the top third of its rung at that moment (ASHA's
        // rule: later arrivals can push earlier promotions out of the top third, so the total
        // may exceed n/3), so most stop, and those promoted were the better ones.
        assert!(at(1) >= 1 && at(1) <= at(0) / 2, "rung 0: {}, rung 1: {}", at(0), at(1));
        assert!(at(2) <= at(1));
        let mean = |promoted: bool| {
            let f: Vec<f64> = summary
                .trials
                .iter()
                .filter(|t| !t.rungs.is_empty() && (t.rungs.len() > 1) == promoted)
                .map(|t| t.rungs[0])
                .collect();
            f.iter().sum::<f64>() / f.len() as f64
        };
        assert!(mean(true) > mean(false), "promoted {:.4} vs stopped {:.4} at rung 0", mean(true), mean(false));
        // Each trial paused at its last rung (20, 60, 180 steps of 32 rows, the study's
        // batch size: the budget is in rows; a trial whose batch is larger may pass it by
        // less than one batch where an epoch's last batch is short), but the one the budget
        // stopped while it trained.
        let off_rung = summary.trials.iter().filter(|t| {
            let rung = [20, 60, 180][t.rungs.len().max(1) - 1] * 32;
            !t.rungs.is_empty() && !(rung..rung + t.final_hparams.batch_size as u64).contains(&t.samples)
        });
        assert!(off_rung.count() <= 1);
        assert!(summary.trials.iter().all(|t| t.decisions == 0), "asha takes no in-run actions");
        let stopped = summary.trials.iter().filter(|t| t.status == "stopped").count();
        assert!(stopped >= at(0) - at(1), "trials not promoted end stopped ({stopped})");
    }

    #[test]
    fn rl_samples_its_starts_and_stops_a_trial_below_the_top_third_of_a_rung() {
        use tuneforge_agent::tune::{RUNG_WARMUP, rung_stops};
        let (_tmp, summary) = checked_study(Strategy::Rl, 4.0);
        let t = &summary.trials;
        // The first trial at the study's defaults, the others from sampled points.
        assert_eq!((t[0].start.lr, t[0].start.batch_size, t[0].start.model.as_str()), (3e-3, 32, "mlp:32"));
        let starts: std::collections::HashSet<String> = t.iter().map(|t| format!("{:?}", t.start)).collect();
        assert!(starts.len() * 2 > t.len(), "{} distinct starts in {} trials", starts.len(), t.len());
        // Replay the rule: one trial after another, each rung judged against the trials
        // before it (rungs at 20 and 60 of the 180 steps).
        let mut stopped_at_rung = 0;
        for (i, trial) in t.iter().enumerate().filter(|(_, t)| !t.status.starts_with("failed")) {
            for (k, &f1) in trial.rungs.iter().enumerate() {
                let earlier: Vec<f64> = t[..i].iter().filter_map(|e| e.rungs.get(k).copied()).collect();
                let went_on = trial.rungs.len() > k + 1 || trial.status == "completed";
                let budget_end = i + 1 == t.len();
                if rung_stops(&earlier, f1) {
                    assert!(!went_on, "trial {i} went on past rung {k} (F1 {f1}, earlier {earlier:?})");
                    assert_eq!(trial.status, "stopped");
                    assert!(trial.samples < 180 * 32, "trial {i}: {} rows", trial.samples);
                    stopped_at_rung += 1;
                } else {
                    assert!(went_on || budget_end, "trial {i} stopped at rung {k} though in the top third");
                }
            }
            assert!(trial.rungs.len() <= 2, "rl records rungs 0 and 1 only");
        }
        assert!(
            t.len() > 2 * RUNG_WARMUP && stopped_at_rung >= 2,
            "{stopped_at_rung} of {} stopped at a rung",
            t.len()
        );
        assert!(t.iter().any(|t| t.status == "completed"));
        assert!(t.iter().any(|t| t.decisions > 0), "the policy acted");
    }

    #[test]
    fn rung_stops_needs_a_warm_up_and_a_third_better() {
        use tuneforge_agent::tune::rung_stops;
        let four = [0.9, 0.8, 0.7, 0.6];
        assert!(!rung_stops(&four, 0.1), "fewer than 5 earlier trials never stop one");
        let six = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        assert!(!rung_stops(&six, 0.95) && !rung_stops(&six, 0.85), "best or second of seven goes on");
        assert!(rung_stops(&six, 0.75), "2 of 6 better: a third");
        assert!(!rung_stops(&six, 0.8), "ties are not better");
        assert!(rung_stops(&six, 0.0));
    }

    #[test]
    fn pbt_exploits_and_explores_within_a_population_of_four() {
        let (_tmp, summary) = checked_study(Strategy::Pbt, 3.0);
        assert!(summary.trials.len() >= 4 && summary.trials.len().is_multiple_of(4), "{} trials", summary.trials.len());
        let exploits: u64 = summary.trials.iter().map(|t| t.exploits).sum();
        assert!(exploits >= 1, "no member ever took another's weights");
        // The first generation started from 4 different configurations.
        let starts: std::collections::HashSet<String> =
            summary.trials[..4].iter().map(|t| format!("{:?}", t.start)).collect();
        assert_eq!(starts.len(), 4);
    }

    /// pb2: every member's rounds are recorded (when, where, what they gained) and kept with
    /// its record for later generations; members are exploited, and the explore step keeps
    /// every setting inside the random starts' ranges (pbt's ×0.8/×1.2 may leave them).
    #[test]
    fn pb2_records_its_rounds_and_explores_inside_the_search_space() {
        let config = TuneConfig { max_trials: Some(8), ..digits_study(Strategy::Pb2, 600.0) };
        let tmp = tempfile::tempdir().unwrap();
        let summary = tune(&config, &repo_dirs(), &cache(), &Device::Cpu, tmp.path(), &mut |_| {}).unwrap();
        check_outputs(tmp.path(), &summary);
        assert_eq!(summary.trials.len(), 8);
        assert!(summary.trials.iter().map(|t| t.exploits).sum::<u64>() >= 1, "no member was exploited");
        // 180 steps in rounds of 2 decision intervals of 20 steps: at most 5 rounds a member.
        for t in &summary.trials {
            assert!((1..=5).contains(&t.pb2_rounds.len()), "trial {}: {:?}", t.id, t.pb2_rounds);
            for r in &t.pb2_rounds {
                assert!((0.0..=1.0).contains(&r.t) && r.gain.is_finite(), "trial {}: {r:?}", t.id);
                assert!(r.x.iter().all(|v| (0.0..=1.0).contains(v)), "trial {}: {r:?}", t.id);
            }
            // Rounds begin later and later in a member's trial.
            assert!(t.pb2_rounds.windows(2).all(|w| w[0].t < w[1].t), "trial {}: {:?}", t.id, t.pb2_rounds);
            // The random starts' ranges: lr 3e-3 ×10^[-1, 1], batch 32 ×¼ … ×2.
            let h = &t.final_hparams;
            assert!((3e-4 * 0.999..=3e-2 * 1.001).contains(&h.lr) && (8..=64).contains(&h.batch_size), "{h:?}");
        }
        // Kept in summary.json and the store (what a resumed study's later generations read).
        let text = std::fs::read_to_string(tmp.path().join("summary.json")).unwrap();
        assert!(text.contains("\"pb2_rounds\""));
    }

    #[test]
    fn fixed_random_and_rl_no_width_run_on_the_same_environment() {
        for strategy in [Strategy::Fixed, Strategy::Random, Strategy::RlNoWidth] {
            let (tmp, summary) = checked_study(strategy, 1.5);
            match strategy {
                Strategy::Fixed => assert!(summary.trials.iter().all(|t| t.decisions == 0 && t.start.lr == 3e-3)),
                Strategy::Random => {
                    assert!(summary.trials.iter().all(|t| t.decisions == 0));
                    assert!(summary.trials.windows(2).any(|w| w[0].start != w[1].start));
                    // Whatever batch size a trial starts at, it trains on the budget's rows
                    // (180 steps of the study's 32) and its cosine ends with them.
                    let last_lr = last_step_lr(&tmp.path().join("events.jsonl"));
                    let completed: Vec<_> = summary.trials.iter().filter(|t| t.status == "completed").collect();
                    assert!(completed.iter().any(|t| t.start.batch_size != 32), "no trial started at another batch");
                    for t in completed {
                        assert!((180 * 32..180 * 32 + t.start.batch_size as u64).contains(&t.samples), "{t:?}");
                        let lr = last_lr[&t.id];
                        assert!(lr < 0.01 * t.start.lr, "trial {} (batch {}): last lr {lr}", t.id, t.start.batch_size);
                    }
                }
                // rl-no-width: widths sampled at the start (trial 0 at the study's), never changed.
                _ => {
                    assert_eq!(summary.trials[0].start.model, "mlp:32");
                    for t in &summary.trials {
                        assert_eq!(format!("mlp:{}", t.final_hparams.widths[0]), t.start.model, "trial {}", t.id);
                    }
                }
            }
        }
        assert!("bohb".parse::<Strategy>().is_err());
    }

    /// The learning rate of each trial's last step in a sequential study's event log.
    fn last_step_lr(events: &Path) -> std::collections::HashMap<u64, f64> {
        let (mut trial, mut lr) = (None, std::collections::HashMap::new());
        for line in std::fs::read_to_string(events).unwrap().lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            match e["event"].as_str().unwrap() {
                "run_start" => trial = e["attributes"]["trial"].as_str().map(|t| t.parse::<u64>().unwrap()),
                "step" => {
                    lr.insert(trial.unwrap(), e["lr"].as_f64().unwrap());
                }
                _ => {}
            }
        }
        lr
    }

    #[test]
    fn a_malformed_predictions_file_is_an_error_naming_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("predictions.csv");
        std::fs::write(&path, "index,label,predicted\n0,3,3\n1,2,x\n").unwrap();
        let e = tuneforge_agent::run::read_predictions(&path).unwrap_err().to_string();
        assert!(e.contains("predictions.csv:3") && e.contains("\"x\""), "{e}");
        std::fs::write(&path, "index,label,predicted\n0,3,3\n2,2,2\n").unwrap();
        let e = tuneforge_agent::run::read_predictions(&path).unwrap_err().to_string();
        assert!(e.contains("predictions.csv:3") && e.contains("expected 1"), "{e}");
        std::fs::write(&path, "index,label,predicted\n0,3,3\n1,2,2\n").unwrap();
        assert_eq!(tuneforge_agent::run::read_predictions(&path).unwrap(), (vec![3, 2], vec![3, 2]));
    }

    #[test]
    fn a_run_restored_from_its_checkpoint_continues_bit_for_bit() {
        let mut cfg = config("digits", "mlp:32,16", 100);
        cfg.val_fraction = 0.2;
        let mut a = Run::new(cfg.clone(), &repo_dirs(), &cache(), &Device::Cpu).unwrap();
        for _ in 0..15 {
            a.train_step().unwrap();
        }
        a.set_batch_size(48).unwrap();
        a.resize_hidden(0, 48, WidenOptions { noise: 0.0, seed: 1 }).unwrap();
        a.scale_learning_rate(0.5).unwrap();
        for _ in 0..7 {
            a.train_step().unwrap();
        }
        let ck = a.checkpoint().unwrap();
        // A fresh run of the same config (other initial weights, at step 0) takes it over.
        let mut b = Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap();
        b.restore(&ck, Path::new("test")).unwrap();
        assert_eq!((b.step(), b.batch_size(), b.learning_rate()), (a.step(), a.batch_size(), a.learning_rate()));
        assert_eq!(b.model().spec().hidden_widths(), vec![48, 16]);
        for n in 0..40 {
            let (sa, sb) = (a.train_step().unwrap(), b.train_step().unwrap());
            assert_eq!(sa.loss.to_bits(), sb.loss.to_bits(), "step {n} after the restore");
            assert_eq!(sa.end_of_epoch, sb.end_of_epoch);
        }
        let val = a.data().val.clone().unwrap();
        assert_eq!(a.evaluate(&*val).unwrap().predictions, b.evaluate(&*val).unwrap().predictions);
    }
}

/// A monitored run with hair-trigger detectors (and rollbacks on loss spikes) rolls back often; restored from a
/// checkpoint (its cursor through JSON, as the study store keeps it) after a batch change
/// that re-timed its cosine, it flags and rolls back at the same steps as the uninterrupted
/// run, bit for bit. Without the monitor's state the restored run goes another way.
#[test]
fn a_monitored_run_restored_from_its_checkpoint_rolls_back_where_the_uninterrupted_one_does() {
    let mut cfg = config("digits", "mlp:32", 100);
    cfg.val_fraction = 0.2;
    cfg.snapshot_every = 0; // only the snapshots at attach and `snapshot_now`
    cfg.schedule = ScheduleConfig::Cosine { total_steps: 400, warmup_steps: 0, min_lr: 0.0 };
    let monitored = |cfg: RunConfig| {
        let mut m = MonitorConfig::default();
        m.detectors.loss_spike.z_threshold = 1.2;
        m.detectors.loss_spike.warmup_steps = 5;
        m.detectors.exploding_gradient.multiple = 1.3;
        m.detectors.exploding_gradient.early_fraction = 0.0;
        m.recovery.on_loss_spike = true;
        m.recovery.lr_factor = 1.0;
        m.recovery.max_consecutive = 1000;
        let monitor = Monitor::new(m, Telemetry::disabled()).unwrap();
        Run::new(cfg, &repo_dirs(), &cache(), &Device::Cpu).unwrap().with_monitor(monitor).unwrap()
    };
    let mut a = monitored(cfg.clone());
    for _ in 0..90 {
        a.train_step().unwrap();
    }
    a.set_batch_size(48).unwrap();
    for _ in 0..17 {
        a.train_step().unwrap();
    }
    a.snapshot_now().unwrap();
    let ck = a.checkpoint().unwrap();
    assert!(ck.cursor.monitor.is_some(), "a monitored run saves its monitor's state");
    let json = serde_json::to_string(&ck.cursor).unwrap();
    let ck = tuneforge_agent::run::RunCheckpoint { cursor: serde_json::from_str(&json).unwrap(), ..ck };
    let mut cold_ck = ck.clone();
    cold_ck.cursor.monitor = None;
    let mut b = monitored(cfg.clone());
    b.restore(&ck, Path::new("test")).unwrap();
    let mut cold = monitored(cfg);
    cold.restore(&cold_ck, Path::new("test")).unwrap();
    let (mut rollbacks, mut cold_differs) = (0, false);
    for n in 0..150 {
        let (sa, sb, sc) = (a.train_step().unwrap(), b.train_step().unwrap(), cold.train_step().unwrap());
        assert_eq!(
            (sa.loss.to_bits(), sa.lr.to_bits(), sa.rolled_back_to),
            (sb.loss.to_bits(), sb.lr.to_bits(), sb.rolled_back_to),
            "step {n} after the restore"
        );
        rollbacks += usize::from(sa.rolled_back_to.is_some());
        cold_differs |= (sc.loss.to_bits(), sc.rolled_back_to) != (sa.loss.to_bits(), sa.rolled_back_to);
    }
    assert!(rollbacks >= 3, "the test needs rollbacks after the restore: {rollbacks}");
    eprintln!("{rollbacks} rollbacks in the 150 steps after the restore");
    assert!(cold_differs, "a cold monitor should have flagged other steps");
    let val = a.data().val.clone().unwrap();
    assert_eq!(a.evaluate(&*val).unwrap().predictions, b.evaluate(&*val).unwrap().predictions);
}

/// A slice of the real SpamAssassin corpus (300 ham, 300 spam, in file order) as plain JSON
/// lines, and the slice's rows as (text, is spam).
fn spam_slice(dir: &Path) -> (PathBuf, Vec<(String, bool)>) {
    let corpus = shared_dirs().dirs()[0].join("spamassassin/spamassassin.jsonl.gz");
    let data = tuneforge_loader::read_text(&corpus, &tuneforge_loader::TextOptions::default()).unwrap();
    let spam = data.label_names.iter().position(|n| n == "spam").unwrap() as u32;
    let mut rows = Vec::new();
    let (mut ham_left, mut spam_left) = (300, 300);
    for (text, &label) in data.texts.iter().zip(&data.labels) {
        let left = if label == spam { &mut spam_left } else { &mut ham_left };
        if *left > 0 {
            *left -= 1;
            rows.push((text.clone(), label == spam));
        }
    }
    let path = dir.join("slice.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, s)| serde_json::json!({"text": t, "label": if *s { "spam" } else { "ham" }}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    (path, rows)
}

/// Text end to end on real e-mails: bodies only, vocabulary from the training rows only,
/// the embedding's dimension resized mid-run, and the fitted pipeline written with the
/// model.
#[test]
fn spamassassin_slice_trains_a_text_model_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, rows) = spam_slice(tmp.path());
    let source = format!("jsonl:{}", path.display());
    let mut cfg = config(&source, "text-bag:16,16", 1);
    cfg.val_fraction = 0.2;
    let mut run = Run::new(cfg.clone(), &repo_dirs(), &cache(), &Device::Cpu).unwrap();
    let text = run.data().text.clone().unwrap();
    // 80/20 stratified and seeded: 120 test rows; the split is the loader's, recomputed here.
    assert_eq!(run.data().test.len(), 120);
    let labels: Vec<u32> = rows.iter().map(|&(_, s)| u32::from(s)).collect();
    let (train_rows, test_rows) = tuneforge_loader::stratified_split(&labels, 0.2, cfg.seed).unwrap();
    // Every word of the vocabulary is in at least 2 training texts; a word in test texts
    // only is unknown.
    let train_words: Vec<std::collections::HashSet<String>> =
        train_rows.iter().map(|&r| text.tokens(&rows[r as usize].0).into_iter().collect()).collect();
    let test_words: Vec<std::collections::HashSet<String>> =
        test_rows.iter().map(|&r| text.tokens(&rows[r as usize].0).into_iter().collect()).collect();
    for word in &text.vocabulary()[2..] {
        let df = train_words.iter().filter(|w| w.contains(word)).count();
        assert!(df >= 2, "{word:?} is in {df} training texts");
    }
    let test_only = test_words
        .iter()
        .flatten()
        .find(|w| !train_words.iter().any(|t| t.contains(*w)))
        .expect("some word is in the test texts only");
    assert_eq!(text.id(test_only), None, "{test_only:?}");
    // Header lines are gone from the bodies.
    assert!(rows.iter().take(50).all(|(t, _)| !text.clean(t).contains("return-path:")));

    // Train, widen the embedding (layer 0) and the hidden layer mid-run, train on.
    run.train_epoch(&mut |_| {}).unwrap();
    let val = run.data().val.clone().unwrap();
    let before = run.evaluate(&*val).unwrap();
    run.resize_hidden(0, 24, WidenOptions::default()).unwrap();
    run.resize_hidden(1, 24, WidenOptions::default()).unwrap();
    assert_eq!(run.evaluate(&*val).unwrap().predictions, before.predictions);
    assert_eq!(run.model().spec().hidden_widths(), [24, 24]);
    for _ in 0..5 {
        run.train_epoch(&mut |_| {}).unwrap();
    }
    run.resize_hidden(0, 12, WidenOptions::default()).unwrap();
    run.train_epoch(&mut |_| {}).unwrap();
    let test = run.evaluate(&*run.data().test).unwrap();
    assert!(test.report.macro_avg.f1 > 0.9, "test macro-F1 {}", test.report.macro_avg.f1);

    // train() writes prep.json: the same pipeline back.
    let out = tmp.path().join("out");
    cfg.epochs = 2;
    train(cfg, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, &out, &mut |_| {}).unwrap();
    let json = std::fs::read_to_string(out.join("prep.json")).unwrap();
    assert_eq!(tuneforge_prep::FittedTextPipeline::from_json(&json).unwrap(), text);
    // Text options on a non-text dataset are refused.
    assert!(DataSource::parse("digits", None).unwrap().with_text(Some("body"), false).is_err());
    assert!(DataSource::parse("digits", None).unwrap().with_text(None, true).is_err());
}

/// `Predictor`: a saved model with its preprocessing and classes, applied to files written
/// here from the real datasets, must give the predictions the run gave in memory.
mod predict {
    use super::*;
    use tuneforge_agent::predict::{BATCH, Input, PredictionWriter, Predictor, predictions_csv};

    /// `predictions.csv` of a run: (label, predicted) class indices per row.
    fn run_predictions(dir: &Path) -> Vec<(u32, u32)> {
        let (labels, predicted) = tuneforge_agent::run::read_predictions(&dir.join("predictions.csv")).unwrap();
        labels.into_iter().zip(predicted).collect()
    }

    /// Asserts `got == want` without printing thousands of values when they differ.
    #[track_caller]
    fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) {
        assert_eq!(got.len(), want.len(), "lengths");
        let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
        if let Some(&i) = diff.first() {
            panic!("{} of {} differ; first at {i}: {:?} vs {:?}", diff.len(), got.len(), got[i], want[i]);
        }
    }

    fn read(predictor: &Predictor, input: &str) -> tuneforge_agent::Result<tuneforge_agent::predict::Rows> {
        predictor.read(&Input::parse(input)?, &shared_dirs(), &cache())
    }

    #[test]
    fn a_digits_model_predicts_its_test_rows_from_a_csv_file_as_the_run_did() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let summary = train(
            config("digits", "mlp:64", 4),
            MonitorConfig::default(),
            &repo_dirs(),
            &cache(),
            &Device::Cpu,
            &out,
            &mut |_| {},
        )
        .unwrap();
        let expected = run_predictions(&out);
        // The test rows of digits.csv, as raw lines, in the split's order (the loader's
        // split with the run's seed, recomputed here).
        let path = repo_dirs().locate(tuneforge_loader::Known::Digits).unwrap().remove(0);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let data = tuneforge_loader::read_csv(&path, &tuneforge_loader::CsvOptions::with_label("label")).unwrap();
        let (_, test_rows) = tuneforge_loader::stratified_split(&data.labels, 0.2, 1).unwrap();
        let mut file = String::from(lines[0]);
        for &r in &test_rows {
            file.push('\n');
            file.push_str(lines[r as usize + 1]);
        }
        let test_csv = tmp.path().join("test.csv");
        std::fs::write(&test_csv, &file).unwrap();

        let predictor = Predictor::load(&out, &Device::Cpu).unwrap();
        assert_eq!(predictor.classes(), (0..10).map(|d| d.to_string()).collect::<Vec<_>>());
        let rows = read(&predictor, &format!("csv:{}", test_csv.display())).unwrap();
        let got = predictor.predict(&rows).unwrap();
        let labels = rows.labels.clone().unwrap();
        let pairs: Vec<(u32, u32)> = labels.iter().copied().zip(got.predicted.iter().copied()).collect();
        same(&pairs, &expected);
        let mut cm = tuneforge_eval::ConfusionMatrix::new(10).unwrap();
        cm.update(&labels, &got.predicted).unwrap();
        assert!((cm.report().macro_avg.f1 - summary.test_macro_f1).abs() < 1e-12);
        // Probabilities: one row per row, summing to 1, largest at the predicted class.
        for (i, p) in got.probabilities.chunks(10).enumerate() {
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let top = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(top as u32, got.predicted[i]);
        }

        // Columns in another order, without the label: the same predictions, unlabelled.
        let header: Vec<&str> = lines[0].split(',').collect();
        let label_at = header.iter().position(|h| *h == "label").unwrap();
        let reorder = |line: &str| {
            let mut v: Vec<&str> =
                line.split(',').enumerate().filter(|&(i, _)| i != label_at).map(|(_, x)| x).collect();
            v.reverse();
            v.join(",")
        };
        let shuffled = file.lines().map(reorder).collect::<Vec<_>>().join("\n");
        let new_csv = tmp.path().join("new.csv");
        std::fs::write(&new_csv, shuffled).unwrap();
        let rows = read(&predictor, &format!("csv:{}", new_csv.display())).unwrap();
        assert!(rows.labels.is_none());
        same(&predictor.predict(&rows).unwrap().predicted, &got.predicted);
        let csv = predictions_csv(predictor.classes(), &rows, &got, true);
        assert!(csv.starts_with("index,predicted,p_0,p_1,"), "{}", &csv[..40]);
        assert_eq!(csv.lines().count(), rows.len() + 1);

        // Read 7 (and 1,000) rows at a time: the same rows, labels, predictions and CSV.
        let labelled = Input::parse(&format!("csv:{}", test_csv.display())).unwrap();
        let whole = read(&predictor, &format!("csv:{}", test_csv.display())).unwrap();
        let whole_csv = predictions_csv(predictor.classes(), &whole, &got, false);
        for size in [7, 1000] {
            let mut writer = PredictionWriter::new(Vec::new(), predictor.classes(), false);
            let (mut index, mut labels, mut predicted, mut chunks) = (vec![], vec![], vec![], 0);
            for rows in predictor.read_chunks(&labelled, &shared_dirs(), &cache(), size).unwrap() {
                let rows = rows.unwrap();
                assert!(rows.len() <= size);
                let p = predictor.predict(&rows).unwrap();
                writer.write(&rows, &p).unwrap();
                index.extend(rows.index.iter().copied());
                labels.extend(rows.labels.unwrap());
                predicted.extend(p.predicted);
                chunks += 1;
            }
            assert_eq!(chunks, whole.len().div_ceil(size));
            same(&index, &whole.index);
            same(&labels, whole.labels.as_ref().unwrap());
            same(&predicted, &got.predicted);
            assert_eq!(String::from_utf8(writer.finish().unwrap()).unwrap(), whole_csv);
        }

        // Bad input: a missing column, a label the model does not know, the wrong kind of
        // input, a folder with no model.
        let cut = |line: &str| line.split(',').skip(1).collect::<Vec<_>>().join(",");
        std::fs::write(&new_csv, file.lines().map(cut).collect::<Vec<_>>().join("\n")).unwrap();
        let e = read(&predictor, &format!("csv:{}", new_csv.display())).unwrap_err().to_string();
        assert!(e.contains(header[0]) && e.contains("new.csv"), "{e}");
        let relabel: String =
            file.replacen(&format!(",{}\n", lines[test_rows[1] as usize + 1].rsplit(',').next().unwrap()), ",11\n", 1);
        std::fs::write(&new_csv, relabel).unwrap();
        let e = read(&predictor, &format!("csv:{}", new_csv.display())).unwrap_err().to_string();
        assert!(e.contains("\"11\"") && e.contains("new.csv"), "{e}");
        // A value far beyond the training range: refused, naming the row and the column.
        let mut far: Vec<String> = file.lines().map(str::to_string).collect();
        let mut values: Vec<&str> = far[3].split(',').collect();
        values[10] = "1e300"; // pixel_10, not constant in training
        far[3] = values.join(",");
        std::fs::write(&new_csv, far.join("\n")).unwrap();
        let e = read(&predictor, &format!("csv:{}", new_csv.display())).unwrap_err().to_string();
        assert!(e.contains("data row 2 (0-based): column pixel_10 is"), "{e}");
        // Read a row at a time, the row is named in the whole file: two chunks, then the error.
        let far_input = Input::parse(&format!("csv:{}", new_csv.display())).unwrap();
        let got: Vec<_> = predictor.read_chunks(&far_input, &shared_dirs(), &cache(), 1).unwrap().collect();
        assert_eq!(got.len(), 3);
        assert!(got[..2].iter().all(Result::is_ok));
        let e = got[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("data row 2 (0-based): column pixel_10 is"), "{e}");
        let e = read(&predictor, "jsonl:whatever.jsonl").unwrap_err().to_string();
        assert!(e.contains("reads table rows"), "{e}");
        let e = Predictor::load(tmp.path(), &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("predictor.json") && e.contains("not found"), "{e}");
    }

    #[test]
    fn a_spam_model_predicts_texts_with_and_without_labels_as_the_run_did() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, rows) = spam_slice(tmp.path());
        let out = tmp.path().join("run");
        let cfg = config(&format!("jsonl:{}", path.display()), "text-bag:16,16", 3);
        train(cfg, MonitorConfig::default(), &repo_dirs(), &cache(), &Device::Cpu, &out, &mut |_| {}).unwrap();
        let expected = run_predictions(&out);
        let labels: Vec<u32> = rows.iter().map(|&(_, s)| u32::from(s)).collect();
        let (_, test_rows) = tuneforge_loader::stratified_split(&labels, 0.2, 1).unwrap();
        let predictor = Predictor::load(&out, &Device::Cpu).unwrap();
        assert_eq!(predictor.classes(), ["ham", "spam"]);
        let write = |name: &str, labelled: bool| {
            let lines: Vec<String> = test_rows
                .iter()
                .map(|&r| {
                    let (t, s) = &rows[r as usize];
                    match labelled {
                        true => serde_json::json!({"label": if *s { "spam" } else { "ham" }, "text": t}),
                        false => serde_json::json!({"text": t}),
                    }
                    .to_string()
                })
                .collect();
            let p = tmp.path().join(name);
            std::fs::write(&p, lines.join("\n")).unwrap();
            format!("jsonl:{}", p.display())
        };
        let labelled = read(&predictor, &write("test.jsonl", true)).unwrap();
        let got = predictor.predict(&labelled).unwrap();
        let pairs: Vec<(u32, u32)> = labelled.labels.clone().unwrap().into_iter().zip(got.predicted.clone()).collect();
        same(&pairs, &expected);
        let unlabelled = read(&predictor, &write("new.jsonl", false)).unwrap();
        assert!(unlabelled.labels.is_none());
        same(&predictor.predict(&unlabelled).unwrap().predicted, &got.predicted);
        same(&predictor.predict(&unlabelled).unwrap().probabilities, &got.probabilities);
        // Read 5 texts at a time, labelled and not: the same rows, labels and predictions.
        for (name, labelled_input) in [("test.jsonl", true), ("new.jsonl", false)] {
            let input = Input::parse(&format!("jsonl:{}", tmp.path().join(name).display())).unwrap();
            let (mut index, mut labels, mut predicted) = (vec![], vec![], vec![]);
            for rows in predictor.read_chunks(&input, &shared_dirs(), &cache(), 5).unwrap() {
                let rows = rows.unwrap();
                assert!(rows.len() <= 5 && rows.labels.is_some() == labelled_input);
                index.extend(rows.index.iter().copied());
                labels.extend(rows.labels.clone().unwrap_or_default());
                predicted.extend(predictor.predict(&rows).unwrap().predicted);
            }
            same(&index, &labelled.index);
            same(&predicted, &got.predicted);
            if labelled_input {
                same(&labels, labelled.labels.as_ref().unwrap());
            }
        }
        let e = read(&predictor, "digits").unwrap_err().to_string();
        assert!(e.contains("reads texts"), "{e}");
    }

    #[test]
    fn a_fashion_mnist_model_predicts_the_test_split_and_its_idx_file_as_the_run_did() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config("fashion-mnist", "mlp:32", 1);
        cfg.batch_size = 128;
        let mut run = Run::new(cfg, &shared_dirs(), &cache(), &Device::Cpu).unwrap();
        for _ in 0..50 {
            run.train_step().unwrap();
        }
        run.model().save(&tmp.path().join("model.safetensors")).unwrap();
        run.write_predictor(tmp.path()).unwrap();
        let test = run.evaluate(&*run.data().test).unwrap();
        assert!(test.report.accuracy > 0.6, "{}", test.report.accuracy);

        let predictor = Predictor::load(tmp.path(), &Device::Cpu).unwrap();
        assert_eq!(predictor.manifest().scale, [1.0 / 255.0, 0.0]);
        let rows = read(&predictor, "fashion-mnist-test").unwrap();
        let got = predictor.predict(&rows).unwrap();
        same(rows.labels.as_deref().unwrap(), &test.labels);
        same(&got.predicted, &test.predictions);
        let images = shared_dirs().dirs()[0].join("fashion-mnist/t10k-images-idx3-ubyte.gz");
        let rows = read(&predictor, &format!("idx:{}", images.display())).unwrap();
        assert!(rows.labels.is_none());
        same(&predictor.predict(&rows).unwrap().predicted, &test.predictions);
        let labels = shared_dirs().dirs()[0].join("fashion-mnist/t10k-labels-idx1-ubyte.gz");
        let e = read(&predictor, &format!("idx:{}", labels.display())).unwrap_err().to_string();
        assert!(e.contains("t10k-labels"), "{e}");
        let e = predictor.read_chunks(
            &Input::parse(&format!("idx:{}", labels.display())).unwrap(),
            &shared_dirs(),
            &cache(),
            10,
        );
        assert!(e.unwrap_err().to_string().contains("t10k-labels"));

        // Read a range of images at a time, from the dataset and from its IDX file: the same
        // rows, pixels, labels, predictions and CSV as one read.
        let whole = read(&predictor, "fashion-mnist-test").unwrap();
        let whole_csv = predictions_csv(predictor.classes(), &whole, &got, true);
        for input in ["fashion-mnist-test".to_string(), format!("idx:{}", images.display())] {
            let labelled = input == "fashion-mnist-test";
            for size in [1, 999, 4000, 4096, 10_000, 65_536] {
                let mut writer = PredictionWriter::new(Vec::new(), predictor.classes(), true);
                let (mut index, mut features, mut labels, mut chunks) = (vec![], vec![], vec![], 0);
                let input_ = Input::parse(&input).unwrap();
                for rows in predictor.read_chunks(&input_, &shared_dirs(), &cache(), size).unwrap() {
                    let rows = rows.unwrap();
                    assert_eq!(rows.len(), size.min(10_000 - chunks * size), "{input} by {size}");
                    if size > 1 {
                        writer.write(&rows, &predictor.predict(&rows).unwrap()).unwrap();
                    }
                    index.extend(rows.index.iter().copied());
                    features.extend(rows.features.iter().map(|x| x.to_bits()));
                    labels.extend(rows.labels.unwrap_or_default());
                    chunks += 1;
                }
                assert_eq!(chunks, 10_000usize.div_ceil(size), "{input} by {size}");
                same(&index, &whole.index);
                assert!(
                    features == whole.features.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{input} by {size}"
                );
                if labelled {
                    same(&labels, whole.labels.as_ref().unwrap());
                }
                if size > 1 {
                    // The same classes, and the same probabilities but for the last digit: the
                    // forward pass's batches are cut at other rows (its kernels round by batch).
                    let csv = String::from_utf8(writer.finish().unwrap()).unwrap();
                    let cells = |csv: &str, labelled: bool| -> Vec<Vec<String>> {
                        let cut = |l: &str| {
                            l.split(',')
                                .enumerate()
                                .filter(|&(i, _)| labelled || i != 1)
                                .map(|(_, c)| c.to_string())
                                .collect()
                        };
                        csv.lines().map(cut).collect()
                    };
                    let (got_cells, want) = (cells(&csv, true), cells(&whole_csv, labelled));
                    if size.is_multiple_of(BATCH) {
                        assert!(got_cells == want, "{input} by {size}: not the CSV of one read");
                    }
                    assert_eq!(got_cells.len(), want.len(), "{input} by {size}");
                    for (g, w) in got_cells.iter().zip(&want) {
                        let at = if labelled { 3 } else { 2 };
                        assert_eq!(g[..at], w[..at], "{input} by {size}");
                        for (a, b) in g[at..].iter().zip(&w[at..]) {
                            let close = || (a.parse::<f64>().unwrap() - b.parse::<f64>().unwrap()).abs() <= 2e-6;
                            assert!(a == b || close(), "{input} by {size}: {g:?} vs {w:?}");
                        }
                    }
                }
            }
        }
    }
}
