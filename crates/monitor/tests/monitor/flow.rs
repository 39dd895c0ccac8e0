//! A real candle-nn MLP trained on Fashion-MNIST under a `Monitor`: a NaN injected into the
//! weights mid-run is detected, the policy rolls back to the last snapshot with half the
//! learning rate, training goes on and ends healthy; the log holds anomaly and rollback.

use candle_core::Tensor;
use candle_nn::Optimizer as _;
use tuneforge_loader::Known;
use tuneforge_monitor::*;

use crate::mlp::{self, Trainer};

/// Weights of every variable, deep-copied.
fn snapshot(t: &Trainer) -> Vec<(candle_core::Var, Tensor)> {
    t.varmap.all_vars().into_iter().map(|v| (v.clone(), v.as_tensor().copy().unwrap())).collect()
}

#[test]
fn injected_nan_is_rolled_back_and_training_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("run.jsonl");
    let mut trainer = Trainer::new(mlp::loader(Known::FashionMnistTrain, dir.path(), 1, true).unwrap(), 1e-3).unwrap();
    // The throughput detector is off: this test is about divergence, and a machine busy with
    // other tests' work can slow five steps in a row (a real drop, but not this test's; it
    // failed a clean-clone CI run once that way).
    let mut detectors = DetectorConfig::default();
    detectors.throughput_drop.enabled = false;
    let config = MonitorConfig {
        run: "flow".into(),
        log: Some(log_path.clone()),
        summary_every: 25,
        detectors,
        ..Default::default()
    };
    let mut monitor = Monitor::new(config, Telemetry::disabled()).unwrap();
    let mut lr = 1e-3;
    let mut snap = snapshot(&trainer);
    assert!(monitor.snapshot_taken(0));
    const INJECT_AT: u64 = 45;
    let mut rollbacks = 0;
    for step in 0..100u64 {
        if step == INJECT_AT {
            // Fault injection: poison the output layer's weights (NaN before a ReLU would be clamped).
            let data = trainer.varmap.data().lock().unwrap();
            let w = &data["l2.weight"];
            w.set(&Tensor::full(f32::NAN, w.shape(), &trainer.device).unwrap()).unwrap();
        }
        let r = trainer.step(128).unwrap();
        let facts = StepFacts {
            step,
            epoch: r.epoch as u32,
            loss: r.loss,
            samples: r.rows as u64,
            seconds: r.seconds,
            grad_norm: Some(r.grad_norm),
            lr,
            batch_size: 128,
            widths: vec![256],
            device_seconds: None,
        };
        let outcome = monitor.step(facts).unwrap();
        match outcome.recovery {
            Some(Recovery::RollBack { to_step, lr_factor, cause }) => {
                assert_eq!((step, to_step, cause), (INJECT_AT, 40, AnomalyKind::NonFiniteLoss));
                for (var, saved) in &snap {
                    var.set(saved).unwrap();
                }
                let lr_before = lr;
                lr *= lr_factor;
                // candle-nn's AdamW cannot hand out its moments, so this test restarts them;
                // tuneforge-optim's snapshots carry them.
                trainer.opt = candle_nn::AdamW::new(
                    trainer.varmap.all_vars(),
                    candle_nn::ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() },
                )
                .unwrap();
                monitor.rolled_back(Rollback { step, to_step, lr_before, lr_after: lr, cause }).unwrap();
                rollbacks += 1;
            }
            Some(abort) => panic!("{abort:?}"),
            None => {
                if step > 0 && step % 20 == 0 && monitor.snapshot_taken(step) {
                    snap = snapshot(&trainer);
                }
                assert!(r.loss.is_finite(), "step {step}");
            }
        }
    }
    let mut eval = mlp::loader(Known::FashionMnistTest, dir.path(), 0, false).unwrap();
    let (accuracy, macro_f1) = trainer.evaluate(&mut eval, 2000).unwrap();
    monitor.evaluation(Evaluation { step: 99, epoch: 0, accuracy, macro_f1, loss: None, seconds: 0.0 }).unwrap();
    let summary = monitor.finish(Outcome::Completed).unwrap();
    assert_eq!(rollbacks, 1);
    assert_eq!(summary.rollbacks, 1);
    assert!(accuracy > 0.65, "accuracy {accuracy} after recovery");
    assert!(summary.figures.loss_ewma < 1.0, "{:?}", summary.figures);
    assert!(summary.figures.latency_p99_s >= summary.figures.latency_p50_s);

    let log = read_log(&log_path).unwrap();
    let kinds: Vec<_> = log
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Anomaly(a) => Some(a.kind),
            _ => None,
        })
        .collect();
    assert!(kinds.contains(&AnomalyKind::NonFiniteLoss), "{kinds:?}");
    assert!(kinds.iter().all(|k| k.is_divergence()), "{kinds:?}");
    let rb: Vec<_> = log.events.iter().filter(|e| matches!(e, Event::Rollback(_))).collect();
    assert_eq!(rb.len(), 1);
    assert!(matches!(log.events.first(), Some(Event::RunStart(s)) if s.run == "flow"));
    assert!(matches!(log.events.last(), Some(Event::RunEnd(e)) if e.rollbacks == 1 && e.outcome == Outcome::Completed));
    assert_eq!(log.events.iter().filter(|e| matches!(e, Event::Step(_))).count(), 100);
    assert!(
        log.events
            .iter()
            .any(|e| matches!(e, Event::Summary(f) if f.rss_bytes.is_some() || !cfg!(target_os = "linux")))
    );
}
