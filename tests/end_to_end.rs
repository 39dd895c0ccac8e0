//! End-to-end tests through the `tuneforge` facade.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tuneforge::loader::{DataDirs, GzCache, Known, Loader, LoaderConfig};

#[test]
fn the_default_dataset_is_committed_and_batches_through_the_facade() {
    let dirs = DataDirs::new(vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")]);
    let tmp = tempfile::tempdir().unwrap();
    let digits = dirs.open(Known::Digits, &GzCache::new(tmp.path())).unwrap();
    let mut loader = Loader::new(digits, LoaderConfig::default()).unwrap();
    let mut rows = 0;
    let mut max = 0f32;
    loop {
        let b = loader.next_batch(100).unwrap();
        rows += b.len();
        max = b.features.iter().copied().fold(max, f32::max);
        assert!(b.labels.iter().all(|&l| l < 10));
        if b.end_of_epoch {
            break;
        }
    }
    assert_eq!(rows, 1797);
    // Digits pixels are 0..=16 (unscaled).
    assert_eq!(max, 16.0);
}

/// Model and optimiser saved mid-training and loaded back continue exactly: the next
/// steps' losses are bit-identical to those of the run that was never saved.
#[test]
fn save_load_then_next_steps_are_identical() {
    use candle_core::{Device, Tensor};
    use tuneforge::model::{Model, ModelSpec};
    use tuneforge::optim::{AdamConfig, Checkpoint, OptimizerConfig, Schedule, ScheduleConfig};

    let dirs = DataDirs::new(vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")]);
    let tmp = tempfile::tempdir().unwrap();
    let digits = dirs.open(Known::Digits, &GzCache::new(tmp.path())).unwrap();
    let cfg = LoaderConfig { seed: 3, scale: tuneforge::loader::Scale::divide(16.0), ..LoaderConfig::default() };
    let mut loader = Loader::new(digits, cfg).unwrap();
    let batches: Vec<(Tensor, Tensor)> = (0..12)
        .map(|_| {
            let b = loader.next_batch(64).unwrap();
            let n = b.len();
            (
                Tensor::from_vec(b.features, (n, 64), &Device::Cpu).unwrap(),
                Tensor::from_vec(b.labels, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let spec = ModelSpec::preset("mlp:32", &[64], 10).unwrap();
    let mut model = spec.init_seeded(&Device::Cpu, 1).unwrap();
    let ocfg = OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..Default::default() });
    let mut opt = ocfg.build(model.vars()).unwrap();
    let mut sched = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 3e-3).unwrap();
    let step = |m: &mut Model, o: &mut dyn tuneforge::optim::Optimizer, s: &mut Schedule, (x, y): &(Tensor, Tensor)| {
        let loss = Model::loss(&m.forward_train(x).unwrap(), y).unwrap();
        o.set_learning_rate(s.next_lr());
        o.step(&loss.backward().unwrap()).unwrap();
        loss.to_scalar::<f32>().unwrap()
    };
    for b in &batches[..6] {
        step(&mut model, &mut *opt, &mut sched, b);
    }
    model.save(&tmp.path().join("model.safetensors")).unwrap();
    Checkpoint::capture(&*opt, Some(&sched)).unwrap().save(&tmp.path().join("optimizer")).unwrap();
    let original: Vec<f32> = batches[6..].iter().map(|b| step(&mut model, &mut *opt, &mut sched, b)).collect();

    let mut loaded = Model::load(&tmp.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut opt2 = ocfg.build(loaded.vars()).unwrap();
    let ck = Checkpoint::load(&tmp.path().join("optimizer")).unwrap();
    let mut sched2 = ck.restore(&mut *opt2).unwrap().unwrap();
    let resumed: Vec<f32> = batches[6..].iter().map(|b| step(&mut loaded, &mut *opt2, &mut sched2, b)).collect();
    assert_eq!(original, resumed);
    assert!(original[5] < original[0], "still learning: {original:?}");
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_allocator_can_be_tuned_on_glibc() {
    assert!(tuneforge::tune_allocator());
}
