//! Save → load → continue gives bit-identical parameters to never having saved.

use std::fs;

use candle_core::{DType, Var};
use tuneforge_optim::{
    AdamConfig, AdamWConfig, Checkpoint, CorruptCheckpoint, Error, Optimizer, OptimizerConfig, STATE_FILE, Schedule,
    ScheduleConfig, SgdConfig, StateMismatch, TENSORS_FILE,
};

use crate::{Lcg, Mlp, data};

fn bits(v: &Var) -> Vec<u64> {
    crate::values(v.as_tensor()).iter().map(|x| x.to_bits()).collect()
}

fn resume_is_exact(config: OptimizerConfig, schedule: Option<ScheduleConfig>, dtype: DType) {
    resume_is_exact_via(config, schedule, dtype, false);
}

/// Saves to files, or with `bytes` to [`Checkpoint::to_bytes`], and resumes from that.
fn resume_is_exact_via(config: OptimizerConfig, schedule: Option<ScheduleConfig>, dtype: DType, bytes: bool) {
    let mut rng = Lcg::new(77);
    let net = Mlp::new(&mut rng, 5, 7, 3, dtype);
    let (x, y) = data(&mut rng, 30, 5, 3, dtype);
    let mut opt = config.build(net.named()).unwrap();
    let mut sched = schedule.map(|c| Schedule::new(c, config.lr()).unwrap());
    let step = |net: &Mlp, opt: &mut dyn Optimizer, sched: &mut Option<Schedule>| {
        if let Some(s) = sched {
            opt.set_learning_rate(s.next_lr());
        }
        opt.backward_step(&net.loss(&x, &y)).unwrap();
    };
    for _ in 0..7 {
        step(&net, opt.as_mut(), &mut sched);
    }

    let dir = tempfile::tempdir().unwrap();
    Checkpoint::capture(opt.as_ref(), sched.as_ref()).unwrap().save(dir.path()).unwrap();
    assert!(dir.path().join(TENSORS_FILE).is_file() && dir.path().join(STATE_FILE).is_file());
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "temporary files left: {leftovers:?}");

    // The resumed run: the model's weights as saved (the model crate saves those), a
    // fresh optimiser built with another learning rate, the checkpoint restored.
    let resumed = net.deep_clone();
    let mut other = config.clone();
    match &mut other {
        OptimizerConfig::Sgd(c) => c.lr = 123.0,
        OptimizerConfig::Adam(c) => c.lr = 123.0,
        OptimizerConfig::AdamW(c) => c.lr = 123.0,
    }
    let mut opt2 = other.build(resumed.named()).unwrap();
    let loaded = if bytes {
        let b = Checkpoint::capture(opt.as_ref(), sched.as_ref()).unwrap().to_bytes().unwrap();
        Checkpoint::from_bytes(&b, "db".as_ref()).unwrap()
    } else {
        Checkpoint::load(dir.path()).unwrap()
    };
    let mut sched2 = loaded.restore(opt2.as_mut()).unwrap();
    assert_eq!(opt2.config(), opt.config());
    assert_eq!(sched2, sched);

    for n in 0..7 {
        step(&net, opt.as_mut(), &mut sched);
        step(&resumed, opt2.as_mut(), &mut sched2);
        for (a, b) in net.all().into_iter().zip(resumed.all()) {
            assert_eq!(bits(a), bits(b), "{config:?}: step {n} after resuming");
        }
    }
}

#[test]
fn adamw_with_cosine_schedule_resumes_exactly() {
    resume_is_exact(
        OptimizerConfig::AdamW(AdamWConfig { lr: 0.01, ..AdamWConfig::default() }),
        Some(ScheduleConfig::Cosine { total_steps: 20, warmup_steps: 3, min_lr: 1e-4 }),
        DType::F32,
    );
}

#[test]
fn adam_with_article_decay_resumes_exactly() {
    resume_is_exact(
        OptimizerConfig::Adam(AdamConfig { lr: 0.01, weight_decay: 1e-3, ..AdamConfig::default() }),
        Some(ScheduleConfig::ArticleDecay { beta: 0.7 }),
        DType::F32,
    );
}

#[test]
fn sgd_momentum_and_plain_sgd_resume_exactly() {
    let sgd = SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4 };
    resume_is_exact(OptimizerConfig::Sgd(sgd), Some(ScheduleConfig::Step { step_size: 4, gamma: 0.5 }), DType::F32);
    // No momentum: no buffers, an empty tensor file.
    resume_is_exact(OptimizerConfig::Sgd(SgdConfig::default()), None, DType::F32);
}

#[test]
fn f64_tensor_path_resumes_exactly() {
    resume_is_exact(OptimizerConfig::AdamW(AdamWConfig::default()), None, DType::F64);
}

fn saved_adamw() -> (tempfile::TempDir, Mlp) {
    let mut rng = Lcg::new(3);
    let net = Mlp::new(&mut rng, 3, 4, 2, DType::F32);
    let (x, y) = data(&mut rng, 6, 3, 2, DType::F32);
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default()).build(net.named()).unwrap();
    opt.backward_step(&net.loss(&x, &y)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Checkpoint::capture(opt.as_ref(), None).unwrap().save(dir.path()).unwrap();
    (dir, net)
}

#[test]
fn adamw_with_cosine_schedule_resumes_exactly_from_bytes() {
    let config = OptimizerConfig::AdamW(AdamWConfig { lr: 0.01, ..AdamWConfig::default() });
    let schedule = ScheduleConfig::Cosine { total_steps: 20, warmup_steps: 3, min_lr: 0.001 };
    resume_is_exact_via(config, Some(schedule), DType::F32, true);
}

#[test]
fn truncated_or_altered_bytes_are_typed_errors() {
    let mut rng = Lcg::new(5);
    let net = Mlp::new(&mut rng, 3, 4, 2, DType::F32);
    let (x, y) = data(&mut rng, 6, 3, 2, DType::F32);
    let mut opt = OptimizerConfig::Adam(AdamConfig::default()).build(net.named()).unwrap();
    opt.backward_step(&net.loss(&x, &y)).unwrap();
    let bytes = Checkpoint::capture(opt.as_ref(), None).unwrap().to_bytes().unwrap();
    let origin = std::path::Path::new("study.sqlite#trial-3");
    for cut in [0, 5, 12] {
        let e = Checkpoint::from_bytes(&bytes[..cut], origin).unwrap_err();
        assert!(
            matches!(&e, Error::CorruptCheckpoint { reason: CorruptCheckpoint::Truncated { .. }, path } if path == origin),
            "cut {cut}: {e}"
        );
    }
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let e = Checkpoint::from_bytes(&flipped, origin).unwrap_err();
    assert!(matches!(e, Error::CorruptCheckpoint { reason: CorruptCheckpoint::TensorFileChanged { .. }, .. }), "{e}");
    let e = Checkpoint::from_bytes(&bytes[..bytes.len() - 1], origin).unwrap_err();
    assert!(matches!(e, Error::CorruptCheckpoint { reason: CorruptCheckpoint::TensorFileChanged { .. }, .. }), "{e}");
}

#[test]
fn a_tensor_file_from_elsewhere_is_detected() {
    let (dir, _) = saved_adamw();
    let path = dir.path().join(TENSORS_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let e = Checkpoint::load(dir.path()).unwrap_err();
    assert!(
        matches!(&e, Error::CorruptCheckpoint { path: p, reason: CorruptCheckpoint::TensorFileChanged { .. } } if *p == path),
        "{e}"
    );
}

#[test]
fn missing_and_garbled_files_are_typed_errors() {
    let (dir, _) = saved_adamw();
    let state = dir.path().join(STATE_FILE);
    let json = fs::read_to_string(&state).unwrap();
    fs::write(&state, &json[..json.len() / 2]).unwrap();
    let e = Checkpoint::load(dir.path()).unwrap_err();
    assert!(matches!(&e, Error::Json { path, .. } if *path == state), "{e}");

    fs::write(&state, json.replace("\"format\": 1", "\"format\": 99")).unwrap();
    let e = Checkpoint::load(dir.path()).unwrap_err();
    assert!(matches!(e, Error::CorruptCheckpoint { reason: CorruptCheckpoint::Format { version: 99 }, .. }), "{e}");

    fs::remove_file(&state).unwrap();
    let e = Checkpoint::load(dir.path()).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if *path == state), "{e}");
}

#[test]
fn a_checkpoint_of_another_optimiser_or_network_does_not_load() {
    let (dir, net) = saved_adamw();
    let checkpoint = Checkpoint::load(dir.path()).unwrap();

    let mut sgd = OptimizerConfig::Sgd(SgdConfig::default()).build(net.named()).unwrap();
    let e = checkpoint.restore(sgd.as_mut()).unwrap_err();
    assert!(
        matches!(e, Error::StateMismatch { reason: StateMismatch::Kind { expected: "sgd", actual: "adamw" } }),
        "{e}"
    );
    let mut adam = OptimizerConfig::Adam(AdamConfig::default()).build(net.named()).unwrap();
    assert!(checkpoint.restore(adam.as_mut()).is_err());

    let mut fewer = OptimizerConfig::AdamW(AdamWConfig::default()).build(net.named().into_iter().take(3)).unwrap();
    let e = checkpoint.restore(fewer.as_mut()).unwrap_err();
    assert!(
        matches!(&e, Error::StateMismatch { reason: StateMismatch::ExtraParam { name } } if name == "layers.1.bias"),
        "{e}"
    );

    let mut rng = Lcg::new(4);
    let wider = Mlp::new(&mut rng, 3, 5, 2, DType::F32);
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default()).build(wider.named()).unwrap();
    let before = opt.state().unwrap();
    let e = checkpoint.restore(opt.as_mut()).unwrap_err();
    assert!(matches!(&e, Error::ShapeMismatch { what: "exp_avg", .. }), "{e}");
    // Nothing changed.
    assert_eq!(opt.state().unwrap().params.len(), before.params.len());
    assert!(opt.state().unwrap().params.values().all(|p| p.step == 0));
}
