//! What monitoring costs a training step: `Monitor::step` (recorder, detectors, recovery
//! policy, JSONL event written per step, a summary with RSS every 100 steps; OTLP off as in
//! the default build, and on) against one real training step of a candle-nn MLP 784-256-10 (Adam,
//! batch 128, Fashion-MNIST) on the CPU.
//!
//! `cargo bench -p tuneforge-monitor --bench overhead`; figures in `docs/benchmarks.md`
//! ("monitor").
#![allow(missing_docs, clippy::unwrap_used)] // a benchmark: failures should stop it loudly.

#[path = "../tests/support/mlp.rs"]
mod mlp;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tuneforge_monitor::{Monitor, MonitorConfig, OtlpConfig, StepFacts, Telemetry};

fn facts(step: u64) -> StepFacts {
    // A plausible, slightly noisy step so that the detectors do real work.
    let wiggle = ((step as f64) * 1.7).sin();
    StepFacts {
        step,
        epoch: (step / 469) as u32,
        loss: 0.4 + 0.05 * wiggle,
        samples: 128,
        seconds: 0.01 + 0.001 * wiggle,
        grad_norm: Some(1.0 + 0.2 * wiggle),
        lr: 1e-3,
        batch_size: 128,
        widths: vec![256],
        device_seconds: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("monitor_overhead");

    // A fresh monitor and log file per measurement batch, so the log does not grow without end.
    let mut run = 0u64;
    group.bench_function("monitor_step_jsonl", |b| {
        b.iter_custom(|iters| {
            run += 1;
            let path = dir.path().join(format!("bench-{run}.jsonl"));
            let config = MonitorConfig { log: Some(path.clone()), ..Default::default() };
            let mut monitor = Monitor::new(config, Telemetry::disabled()).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                black_box(monitor.step(facts(i)).unwrap());
            }
            let elapsed = t.elapsed();
            drop(monitor);
            std::fs::remove_file(&path).unwrap();
            elapsed
        })
    });
    group.bench_function("monitor_step_no_log", |b| {
        b.iter_custom(|iters| {
            let mut monitor = Monitor::new(MonitorConfig::default(), Telemetry::disabled()).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                black_box(monitor.step(facts(i)).unwrap());
            }
            t.elapsed()
        })
    });
    // OTLP on (this bench is built with `otlp` through the dev-dependency): metrics aggregated
    // in memory per step; the exporter points at a closed port and never exports while timed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    group.bench_function("monitor_step_jsonl_otlp", |b| {
        b.iter_custom(|iters| {
            run += 1;
            let path = dir.path().join(format!("bench-{run}.jsonl"));
            let config = MonitorConfig { log: Some(path.clone()), ..Default::default() };
            let otlp = OtlpConfig {
                export_interval: Duration::from_secs(3600),
                timeout: Duration::from_millis(200),
                ..OtlpConfig::new(format!("http://127.0.0.1:{closed}"))
            };
            let mut monitor = Monitor::new(config, Telemetry::otlp(&otlp, "bench").unwrap()).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                black_box(monitor.step(facts(i)).unwrap());
            }
            let elapsed = t.elapsed();
            drop(monitor);
            std::fs::remove_file(&path).unwrap();
            elapsed
        })
    });

    let cache = tempfile::tempdir().unwrap();
    let loader = mlp::loader(tuneforge_loader::Known::FashionMnistTrain, cache.path(), 1, true).unwrap();
    let mut trainer = mlp::Trainer::new(loader, 1e-3).unwrap();
    group.sample_size(30).measurement_time(Duration::from_secs(15));
    group.bench_function("mlp_784_256_10_train_step_b128_cpu", |b| {
        b.iter(|| black_box(trainer.step(128).unwrap().loss))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
