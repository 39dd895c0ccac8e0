//! OTLP round trip against a real receiver: rotel (`rotel==0.0.1a15` from PyPI), started on
//! free 127.0.0.1 ports with its debug exporter; a short real training run is exported over
//! OTLP http/protobuf, flushed, and the receiver's stdout must show the metric names, values
//! and span names.
//!
//! `TUNEFORGE_ROTEL` names the `rotel-agent` binary (.ci/run installs it and sets it); unset,
//! the test says it is skipping. Set, any failure to start the peer or to see the data fails.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tuneforge_loader::Known;
use tuneforge_monitor::*;

use crate::mlp::{self, Trainer};

/// Kills and reaps the receiver however the test ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_rotel(bin: &Path, dir: &Path) -> (Peer, u16, PathBuf) {
    let (http, grpc) = (free_port(), free_port());
    let out_path = dir.join("rotel.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let child = Command::new(bin)
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "blackhole", "--debug-log", "traces", "--debug-log", "metrics"])
        .args(["--debug-log-verbosity", "detailed"])
        .arg("--log-file")
        .arg(dir.join("rotel-agent.log"))
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("TUNEFORGE_ROTEL={} could not be started: {e}", bin.display()));
    let mut peer = Peer(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        if let Some(status) = peer.0.try_wait().unwrap() {
            panic!("rotel exited with {status}: {}", std::fs::read_to_string(&out_path).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "rotel did not listen on 127.0.0.1:{http} in 15 s: {}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (peer, http, out_path)
}

/// A short real run: 30 steps of the Fashion-MNIST MLP in three 10-step "epochs" (labels of
/// this test, so that epoch spans exist), an evaluation after each, one agent decision, and an
/// injected NaN loss that the monitor flags (exported as an anomaly).
fn real_run(telemetry: Telemetry, dir: &Path) -> RunSummary {
    let config = MonitorConfig { run: "otlp-test".into(), log: Some(dir.join("run.jsonl")), ..Default::default() };
    let mut monitor = Monitor::new(config, telemetry).unwrap();
    let mut trainer = Trainer::new(mlp::loader(Known::FashionMnistTrain, dir, 3, true).unwrap(), 1e-3).unwrap();
    let mut eval = mlp::loader(Known::FashionMnistTest, dir, 0, false).unwrap();
    let mut lr = 1e-3;
    for step in 0..30u64 {
        let r = trainer.step(128).unwrap();
        let loss = if step == 25 { f64::NAN } else { r.loss };
        let facts = StepFacts {
            step,
            epoch: (step / 10) as u32,
            loss,
            samples: r.rows as u64,
            seconds: r.seconds,
            grad_norm: Some(r.grad_norm),
            lr,
            batch_size: 128,
            widths: vec![256],
            // The GPU instruments, fed as a CUDA trainer feeds them (this run is on the CPU):
            // a device time on the even steps only, so the count tells them apart.
            device_seconds: (step % 2 == 0).then_some(0.004),
        };
        monitor.step(facts).unwrap();
        if step == 20 {
            monitor.set_gpu(GpuMemory::from_free_total(60 << 30, 80 << 30));
        }
        if step % 10 == 9 {
            monitor.end_epoch().unwrap();
            let t = Instant::now();
            let (accuracy, macro_f1) = trainer.evaluate(&mut eval, 500).unwrap();
            let seconds = t.elapsed().as_secs_f64();
            monitor
                .evaluation(Evaluation { step, epoch: (step / 10) as u32, accuracy, macro_f1, loss: None, seconds })
                .unwrap();
        }
        if step == 14 {
            lr *= 0.5;
            trainer.set_lr(lr);
            monitor
                .decision(Decision {
                    step,
                    action: "lr*0.5".into(),
                    lr,
                    batch_size: 128,
                    widths: vec![256],
                    reward: None,
                })
                .unwrap();
        }
    }
    monitor.finish(Outcome::Completed).unwrap()
}

/// The data-point block of metric `name` in rotel's debug output: from its `-> Name: ` line to
/// the next metric.
fn metric_block<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("-> Name: {name}\n"))?;
    let rest = &log[start..];
    let end = rest[1..].find("-> Name: ").map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

#[test]
fn otlp_export_reaches_a_real_receiver() {
    let Some(bin) = std::env::var_os("TUNEFORGE_ROTEL") else {
        eprintln!("skipping the OTLP round trip: TUNEFORGE_ROTEL is not set (.ci/run sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (peer, http, out_path) = start_rotel(Path::new(&bin), dir.path());

    let config = OtlpConfig {
        service_name: "tuneforge-monitor-test".into(),
        export_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        ..OtlpConfig::new(format!("http://127.0.0.1:{http}"))
    };
    let telemetry = Telemetry::otlp(&config, "otlp-test").unwrap();
    assert!(telemetry.is_enabled(), "built without `otlp`: the dev-dependency on itself should turn it on");
    // `finish` shuts the exporters down, which flushes; it fails if the receiver refused data.
    let summary = real_run(telemetry, dir.path());
    assert_eq!(summary.anomalies, 1);

    let wanted_metrics = [
        "tuneforge.steps",
        "tuneforge.samples",
        "tuneforge.anomalies",
        "tuneforge.step.duration",
        "tuneforge.loss",
        "tuneforge.samples_per_second",
        "tuneforge.learning_rate",
        "tuneforge.batch_size",
        "tuneforge.grad_norm",
        "tuneforge.eval.accuracy",
        "tuneforge.eval.macro_f1",
        "tuneforge.evaluation.duration",
        "process.memory.rss",
        "tuneforge.step.device_duration",
        "tuneforge.gpu.memory.used",
        "tuneforge.gpu.memory.free",
    ];
    let wanted_spans = ["tuneforge.run", "tuneforge.epoch", "tuneforge.evaluation", "tuneforge.decision"];
    // The receiver prints asynchronously: wait for everything, up to 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&out_path).unwrap_or_default();
        let complete = wanted_metrics.iter().all(|m| log.contains(&format!("-> Name: {m}\n")))
            && wanted_spans.iter().all(|s| log.lines().any(|l| is_span_name(l, s)));
        if complete || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(peer);
    let missing_metrics: Vec<_> = wanted_metrics.iter().filter(|m| !log.contains(&format!("-> Name: {m}\n"))).collect();
    let missing_spans: Vec<_> = wanted_spans.iter().filter(|s| !log.lines().any(|l| is_span_name(l, s))).collect();
    assert!(
        missing_metrics.is_empty() && missing_spans.is_empty(),
        "rotel did not show metrics {missing_metrics:?} / spans {missing_spans:?}; its output:\n{log}"
    );
    assert!(log.contains("service.name: Str(tuneforge-monitor-test)"), "{log}");
    assert!(log.contains("run: Str(otlp-test)"), "{log}");

    // Values: 30 steps, 30 × 128 samples, the injected NaN counted once by kind, batch 128,
    // the halved learning rate last.
    let value = |name: &str| {
        let block = metric_block(&log, name).unwrap();
        block.lines().find_map(|l| l.trim().strip_prefix("Value: ")).map(str::to_string).unwrap_or_default()
    };
    assert_eq!(value("tuneforge.steps"), "30", "{}", metric_block(&log, "tuneforge.steps").unwrap());
    assert_eq!(value("tuneforge.samples"), "3840");
    assert_eq!(value("tuneforge.anomalies"), "1");
    assert!(metric_block(&log, "tuneforge.anomalies").unwrap().contains("kind: Str(non_finite_loss)"));
    assert_eq!(value("tuneforge.batch_size"), "128");
    assert_eq!(value("tuneforge.learning_rate").parse::<f64>().unwrap(), 5e-4);
    let f1: f64 = value("tuneforge.eval.macro_f1").parse().unwrap();
    assert!(f1 > 0.3 && f1 <= 1.0, "macro-F1 {f1}");
    let hist = metric_block(&log, "tuneforge.step.duration").unwrap();
    assert!(hist.contains("Count: 30"), "{hist}");
    let device = metric_block(&log, "tuneforge.step.device_duration").unwrap();
    assert!(device.contains("Count: 15"), "{device}");
    assert_eq!(value("tuneforge.gpu.memory.used"), (20u64 << 30).to_string());
    assert_eq!(value("tuneforge.gpu.memory.free"), (60u64 << 30).to_string());
    let epochs = log.lines().filter(|l| is_span_name(l, "tuneforge.epoch")).count();
    let evals = log.lines().filter(|l| is_span_name(l, "tuneforge.evaluation")).count();
    assert_eq!((epochs, evals), (3, 3), "{log}");
}

/// rotel prints span names as `Name           : tuneforge.run` (aligned).
fn is_span_name(line: &str, name: &str) -> bool {
    let t = line.trim();
    t.starts_with("Name") && t.split_once(':').is_some_and(|(k, v)| k.trim() == "Name" && v.trim() == name)
}
