//! One training step (forward + backward + Adam) of the reference models at batch 128, and
//! the time to widen / narrow a 1024-wide hidden layer (optimiser remap included).
//!
//! `cargo bench --bench train_step` (glibc's allocator tuned as `cargo xtask` tunes it;
//! `TUNEFORGE_PLAIN_MALLOC=1` for the defaults) — random inputs of Fashion-MNIST's shape (the step's
//! cost does not depend on pixel values); the end-to-end figures on real data, comparable
//! with PyTorch, come from `cargo xtask bench-step` (see docs/benchmarks.md).

use candle_core::{Device, Tensor};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tuneforge::model::{Model, ModelSpec, WidenOptions};
use tuneforge::optim::{AdamConfig, Optimizer, OptimizerConfig};

const BATCH: usize = 128;

fn setup(preset: &str) -> (Model, Box<dyn Optimizer>, Tensor, Tensor) {
    let spec = ModelSpec::preset(preset, &[1, 28, 28], 10).expect("preset");
    let model = spec.init_seeded(&Device::Cpu, 0).expect("init");
    let opt = OptimizerConfig::Adam(AdamConfig::default()).build(model.vars()).expect("adam");
    let mut shape = vec![BATCH];
    shape.extend_from_slice(&spec.input);
    let x = Tensor::rand(0f32, 1.0, shape, &Device::Cpu).expect("x");
    let y = Tensor::from_vec((0..BATCH as u32).map(|i| i % 10).collect::<Vec<_>>(), BATCH, &Device::Cpu).expect("y");
    (model, opt, x, y)
}

fn train_step(c: &mut Criterion) {
    if std::env::var_os("TUNEFORGE_PLAIN_MALLOC").is_none() {
        tuneforge::tune_allocator();
    }
    let mut group = c.benchmark_group("train_step_b128");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    for preset in ["mlp:256", "mlp:1024,1024", "seed-cnn"] {
        let (mut model, mut opt, x, y) = setup(preset);
        group.bench_function(preset, |b| {
            b.iter(|| {
                let loss = Model::loss(&model.forward_train(&x).expect("fwd"), &y).expect("loss");
                opt.step(&loss.backward().expect("bwd")).expect("step");
            })
        });
    }
    group.finish();
}

fn restructure(c: &mut Criterion) {
    let mut group = c.benchmark_group("restructure_1024");
    group.sample_size(10);
    let (model, opt, _, _) = setup("mlp:1024,1024");
    let state = opt.state().expect("state");
    let fresh = || {
        let m = model.to_device(&Device::Cpu).expect("copy");
        let mut o = OptimizerConfig::Adam(AdamConfig::default()).build(m.vars()).expect("adam");
        o.load_state(&state).expect("state");
        (m, o)
    };
    let apply = |m: &mut Model, o: &mut dyn Optimizer, width: usize| {
        let changes = if width > 1024 {
            m.widen(0, width, WidenOptions::default()).expect("widen")
        } else {
            m.narrow(0, width).expect("narrow")
        };
        for ch in changes {
            o.remap(&ch.name, ch.var, ch.axis, &ch.sources, &ch.scale).expect("remap");
        }
    };
    group.bench_function("widen_1024_to_1536", |b| {
        b.iter_batched(fresh, |(mut m, mut o)| apply(&mut m, &mut *o, 1536), BatchSize::LargeInput)
    });
    group.bench_function("narrow_1024_to_768", |b| {
        b.iter_batched(fresh, |(mut m, mut o)| apply(&mut m, &mut *o, 768), BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, train_step, restructure);
criterion_main!(benches);
