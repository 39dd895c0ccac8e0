//! The seeds made by the code itself (see `write_seeds` in `corpus.rs`).

use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Var};
use tuneforge_agent::data::DataSource;
use tuneforge_agent::policy::ActorCritic;
use tuneforge_agent::tune::{Strategy, TuneConfig, study_config_json};
use tuneforge_loader::{CsvOptions, read_csv_from};
use tuneforge_model::{LayerSpec, ModelSpec};
use tuneforge_monitor::{Monitor, MonitorConfig, Outcome, Recovery, Rollback, StepFacts, Telemetry};
use tuneforge_optim::{AdamConfig, Checkpoint, OptimizerConfig, Schedule, ScheduleConfig, SgdConfig};
use tuneforge_prep::PipelineConfig;

fn put(corpus: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

pub fn write_all(corpus: &Path) {
    event_logs(corpus);
    models(corpus);
    optim_checkpoints(corpus);
    pipelines(corpus);
    policies(corpus);
    study_configs(corpus);
}

fn event_logs(corpus: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let config = MonitorConfig { log: Some(log.clone()), summary_every: 5, ..Default::default() };
    let mut monitor = Monitor::new(config, Telemetry::disabled()).unwrap();
    let mut lr = 0.1;
    monitor.snapshot_taken(0);
    for step in 0..12u64 {
        let loss = if step == 8 { f64::NAN } else { 1.0 / (1.0 + step as f64) };
        let facts = StepFacts { step, loss, samples: 32, seconds: 0.002, lr, batch_size: 32, ..Default::default() };
        let outcome = monitor.step(facts).unwrap();
        if let Some(Recovery::RollBack { to_step, lr_factor, cause }) = outcome.recovery {
            let lr_before = lr;
            lr *= lr_factor;
            monitor.rolled_back(Rollback { step, to_step, lr_before, lr_after: lr, cause }).unwrap();
        }
    }
    monitor.finish(Outcome::Completed).unwrap();
    let bytes = std::fs::read(&log).unwrap();
    put(corpus, "event_log", "run-with-rollback.jsonl", &bytes);
    // What a crash mid-write leaves: the last line cut in half.
    let cut = bytes.len() - bytes.rsplit(|&b| b == b'\n').nth(1).unwrap().len() / 2 - 1;
    put(corpus, "event_log", "torn-tail.jsonl", &bytes[..cut]);
}

fn models(corpus: &Path) {
    let mlp = ModelSpec::preset("mlp:4", &[3], 2).unwrap();
    let cnn = ModelSpec {
        input: vec![1, 6, 6],
        layers: vec![
            LayerSpec::Conv2d { channels: 2, kernel: 3, stride: 1, padding: 1 },
            LayerSpec::batch_norm(),
            LayerSpec::relu(),
            LayerSpec::MaxPool2d { size: 2, stride: None },
            LayerSpec::Flatten,
            LayerSpec::Dropout { p: 0.25 },
            LayerSpec::Linear { width: 3 },
        ],
    };
    put(corpus, "model_spec", "mlp-4.json", serde_json::to_string_pretty(&mlp).unwrap().as_bytes());
    put(corpus, "model_spec", "small-cnn.json", serde_json::to_string_pretty(&cnn).unwrap().as_bytes());
    let seed_cnn = ModelSpec::seed_cnn(10);
    put(corpus, "model_spec", "seed-cnn.json", serde_json::to_string(&seed_cnn).unwrap().as_bytes());
    for (name, spec) in [("mlp-4.safetensors", &mlp), ("small-cnn.safetensors", &cnn)] {
        let model = spec.init_seeded(&Device::Cpu, 5).unwrap();
        put(corpus, "model_checkpoint", name, &model.to_safetensors(name.as_ref()).unwrap());
    }
}

fn optim_checkpoints(corpus: &Path) {
    let w = Var::new(&[[1.0f32, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap();
    let b = Var::new(&[0.1f32, 0.2], &Device::Cpu).unwrap();
    let cases = [
        (
            "sgd-momentum-article-decay.bin",
            OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::default() }),
            Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 0.1).unwrap(),
        ),
        (
            "adam-cosine.bin",
            OptimizerConfig::Adam(AdamConfig::default()),
            Schedule::new(ScheduleConfig::Cosine { total_steps: 100, warmup_steps: 10, min_lr: 1e-5 }, 1e-3).unwrap(),
        ),
    ];
    for (name, config, mut schedule) in cases {
        let mut opt = config.build([("layers.0.weight", w.clone()), ("layers.0.bias", b.clone())]).unwrap();
        for _ in 0..3 {
            opt.set_learning_rate(schedule.next_lr());
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() + b.as_tensor().sum_all().unwrap()).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        put(
            corpus,
            "optim_checkpoint",
            name,
            &Checkpoint::capture(opt.as_ref(), Some(&schedule)).unwrap().to_bytes().unwrap(),
        );
    }
}

fn pipelines(corpus: &Path) {
    let biopsy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/biopsy.csv")).unwrap();
    let head: String = biopsy.lines().take(40).map(|l| format!("{l}\n")).collect();
    let options =
        CsvOptions { drop: vec!["ID".into()], categorical: vec!["V1".into()], ..CsvOptions::with_label("class") };
    let table = read_csv_from("biopsy.csv".as_ref(), head.as_bytes(), &options).unwrap().table;
    let configs = [
        (
            "biopsy-impute-clip-scale-one-hot.json",
            r#"{"steps": [{"step": "impute", "strategy": "median"}, {"step": "impute", "strategy": "most_frequent"},
                {"step": "clip", "method": {"iqr": {"k": 1.5}}}, {"step": "scale", "method": "standard"},
                {"step": "one_hot", "unknown": "ignore"}, {"step": "drop_constant"}]}"#,
        ),
        (
            "biopsy-numeric-rows.json",
            r#"{"steps": [{"step": "impute", "columns": ["V6"], "strategy": "mean"}, {"step": "drop_missing_rows"},
                {"step": "scale", "method": "min_max"}, {"step": "one_hot"}]}"#,
        ),
    ];
    for (name, json) in configs {
        let config: PipelineConfig = serde_json::from_str(json).unwrap();
        let (fitted, _) = config.fit(&table).unwrap();
        put(corpus, "prep_pipeline", name, fitted.to_json().unwrap().as_bytes());
    }
}

fn policies(corpus: &Path) {
    let untrained = ActorCritic::untrained();
    put(corpus, "policy", "default.json", serde_json::to_string_pretty(&untrained).unwrap().as_bytes());
    let mut learnt = untrained;
    learnt.actor[4][11] = 3.0;
    learnt.critic[11] = 0.9;
    learnt.obs_count = 40;
    learnt.obs_m2 = vec![0.5; learnt.obs_m2.len()];
    put(corpus, "policy", "learnt.json", serde_json::to_string(&learnt).unwrap().as_bytes());
}

fn study_configs(corpus: &Path) {
    let config = |data: DataSource, strategy, budget_ms| TuneConfig {
        data,
        model: "mlp:64".into(),
        strategy,
        budget: Duration::from_millis(budget_ms),
        max_trials: None,
        enqueued: Vec::new(),
        stop_when: Default::default(),
        trial_timeout: None,
        seed: 3,
        batch_size: 32,
        lr: 3e-3,
        env: Default::default(),
        checkpoint_every: Duration::from_secs(5),
        policy: None,
        progress: Default::default(),
        log_steps_every: 10,
        stop: Default::default(),
        cosine: false,
        val_fraction: 0.2,
    };
    let digits = config(DataSource::parse("digits", None).unwrap(), Strategy::Asha, 90_000);
    let csv = config(DataSource::parse("csv:data/table.csv", Some("class")).unwrap(), Strategy::Rl, 600_250);
    put(corpus, "study_config", "digits-asha.json", study_config_json(&digits).as_bytes());
    put(corpus, "study_config", "csv-rl.json", study_config_json(&csv).as_bytes());
    // Early stopping, a trial time limit and the tpe strategy.
    let tpe = TuneConfig {
        stop_when: tuneforge_agent::tune::StopWhen { f1: Some(0.97), patience: Some(20) },
        trial_timeout: Some(Duration::from_millis(30_500)),
        ..config(DataSource::parse("digits", None).unwrap(), Strategy::Tpe, 60_000)
    };
    put(corpus, "study_config", "digits-tpe-early-stopping.json", study_config_json(&tpe).as_bytes());
}
