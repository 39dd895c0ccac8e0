//! Integration tests of tuneforge-model on real Fashion-MNIST batches.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use tuneforge_loader::{Batch, DataDirs, GzCache, Known, Loader, LoaderConfig, Scale};
use tuneforge_model::*;

mod text;

fn data_dir() -> PathBuf {
    std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"))
}

/// `n` real Fashion-MNIST test images (scaled /255) shaped for `input`, and labels.
fn fmnist_batch(n: usize, input: &[usize], seed: u64) -> (Tensor, Tensor) {
    let cache = GzCache::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("tuneforge-gz-cache"));
    let ds = DataDirs::new(vec![data_dir()]).open(Known::FashionMnistTest, &cache).unwrap();
    let cfg = LoaderConfig { seed, scale: Scale::divide(255.0), ..Default::default() };
    let b: Batch = Loader::new(ds, cfg).unwrap().next_batch(n).unwrap();
    let mut shape = vec![n];
    shape.extend_from_slice(input);
    let x = Tensor::from_vec(b.features, shape, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(b.labels, n, &Device::Cpu).unwrap();
    (x, y)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Plain SGD: one step on the model's parameters.
fn sgd_step(model: &mut Model, x: &Tensor, y: &Tensor, lr: f64) -> f32 {
    let logits = model.forward_train(x).unwrap();
    let loss = Model::loss(&logits, y).unwrap();
    let grads = loss.backward().unwrap();
    for (_, v) in model.vars() {
        if let Some(g) = grads.get(v.as_tensor()) {
            v.set(&(v.as_tensor() - (g * lr).unwrap()).unwrap()).unwrap();
        }
    }
    loss.to_scalar::<f32>().unwrap()
}

fn bn_net() -> ModelSpec {
    ModelSpec {
        input: vec![1, 28, 28],
        layers: vec![
            LayerSpec::Conv2d { channels: 8, kernel: 3, stride: 1, padding: 1 },
            LayerSpec::batch_norm(),
            LayerSpec::relu(),
            LayerSpec::MaxPool2d { size: 2, stride: None },
            LayerSpec::Flatten,
            LayerSpec::Linear { width: 32 },
            LayerSpec::batch_norm(),
            LayerSpec::Activation { function: Activation::Tanh },
            LayerSpec::Dropout { p: 0.0 },
            LayerSpec::Linear { width: 10 },
        ],
    }
}

#[test]
fn seed_cnn_has_the_articles_shape_and_pytorchs_parameter_count() {
    let spec = ModelSpec::seed_cnn(10);
    let shapes = spec.shapes().unwrap();
    assert_eq!(shapes[0], [32, 26, 26]);
    assert_eq!(shapes[2], [32, 13, 13]);
    assert_eq!(shapes[3], [5408]);
    // torch: sum(p.numel()) of Conv2d(1,32,3)+Linear(5408,64)+Linear(64,10) = 347146.
    assert_eq!(spec.parameter_count().unwrap(), 347_146);
    assert_eq!(spec.init(&Device::Cpu).unwrap().parameter_count(), 347_146);
    // conv: 2·(1·3·3·32·26·26) + 2·5408·64 + 2·64·10
    assert_eq!(spec.flops_per_sample().unwrap(), 2 * 9 * 32 * 676 + 2 * 5408 * 64 + 2 * 640);
    assert_eq!(spec.hidden_layers(), [0, 4]);
    assert_eq!(ModelSpec::preset("mlp:256,128", &[28, 28], 10).unwrap().hidden_widths(), [256, 128]);
    assert_eq!(ModelSpec::preset("mlp:256", &[784], 10).unwrap().parameter_count().unwrap(), 784 * 256 + 256 + 2570);
}

#[test]
fn specs_round_trip_as_json_and_bad_ones_are_typed_errors() {
    let spec = bn_net();
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), spec);
    assert!(
        serde_json::from_str::<ModelSpec>(r#"{"input":[4],"layers":[{"type":"linear","width":2,"oops":1}]}"#).is_err()
    );
    for bad in ["mlp:0", "mlp:a,b", "resnet", "seed-cnn"] {
        let shape: &[usize] = if bad == "seed-cnn" { &[64] } else { &[784] };
        assert!(matches!(ModelSpec::preset(bad, shape, 10), Err(Error::Preset { .. })), "{bad}");
    }
    let no_flatten = ModelSpec { input: vec![1, 28, 28], layers: vec![LayerSpec::Linear { width: 10 }] };
    assert!(matches!(no_flatten.shapes(), Err(Error::Spec { layer: 0, .. })));
    let big_kernel = ModelSpec {
        input: vec![1, 4, 4],
        layers: vec![LayerSpec::Conv2d { channels: 2, kernel: 5, stride: 1, padding: 0 }],
    };
    assert!(matches!(big_kernel.init(&Device::Cpu), Err(Error::Spec { layer: 0, .. })));
    let model = ModelSpec::mlp(784, &[8], 10).init(&Device::Cpu).unwrap();
    let x = Tensor::zeros((2, 28, 28), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(model.forward(&x), Err(Error::InputShape { .. })));
}

/// fuzz/regressions/model_spec/kernel-tap-outside-the-image.json: a 7×7 kernel with padding 3
/// on a 2×2 image has taps that meet no input column; the direct convolution indexed past the
/// row for them (a panic in a rayon worker) instead of skipping them.
#[test]
fn a_first_layer_kernel_wider_than_the_padded_image_allows_matches_candle() {
    let spec: ModelSpec = serde_json::from_str(
        r#"{"input":[1,2,2],"layers":[{"type":"conv2d","channels":1,"kernel":7,"padding":3},{"type":"flatten"},{"type":"linear","width":2}]}"#,
    )
    .unwrap();
    let mut model = spec.init_seeded(&Device::Cpu, 4).unwrap();
    let x = Tensor::rand(0f32, 1.0, (3, 1, 2, 2), &Device::Cpu).unwrap();
    let vars: std::collections::HashMap<String, Tensor> =
        model.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    let conv = x.conv2d(&vars["layers.0.weight"], 3, 1, 1, 1).unwrap();
    let conv = conv.broadcast_add(&vars["layers.0.bias"].reshape((1, 1, 1, 1)).unwrap()).unwrap();
    let reference = conv
        .flatten_from(1)
        .unwrap()
        .matmul(&vars["layers.2.weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&vars["layers.2.bias"])
        .unwrap();
    assert!(max_diff(&model.forward(&x).unwrap(), &reference) < 1e-5);
    let y = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
    assert!(sgd_step(&mut model, &x, &y, 0.1).is_finite());
}

/// fuzz/regressions/model_checkpoint/huge-spec-small-file.safetensors: the tensors of an
/// mlp:4 model under a spec announcing a 100000 × 100000 first layer. Loading it allocated
/// 40 GB before noticing that the tensors do not fit; now the shapes are checked first.
#[test]
fn a_small_file_whose_spec_announces_huge_layers_is_refused_before_allocating() {
    let bytes = include_bytes!("../../../fuzz/regressions/model_checkpoint/huge-spec-small-file.safetensors");
    let e = Model::from_safetensors(bytes, "huge.safetensors".as_ref(), &Device::Cpu).unwrap_err();
    assert!(matches!(&e, Error::Checkpoint { name, .. } if name == "layers.0.weight"), "{e}");
    assert!(e.to_string().contains("[100000, 100000]"), "{e}");
}

#[test]
fn tensor_shapes_are_the_shapes_of_the_built_models_tensors() {
    for spec in [bn_net(), ModelSpec::seed_cnn(10), ModelSpec::mlp(12, &[5, 4], 3)] {
        let model = spec.init(&Device::Cpu).unwrap();
        let mut built: Vec<(String, Vec<usize>)> =
            model.tensors().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
        let mut announced = spec.tensor_shapes().unwrap();
        built.sort();
        announced.sort();
        assert_eq!(announced, built);
    }
}

/// Widen every hidden layer of `spec` after a few training steps; check logits agree.
fn check_widen_preserves(spec: ModelSpec, input: &[usize]) {
    let (x, y) = fmnist_batch(64, input, 1);
    let mut model = spec.init_seeded(&Device::Cpu, 3).unwrap();
    for _ in 0..3 {
        sgd_step(&mut model, &x, &y, 0.05);
    }
    for layer in model.spec().hidden_layers() {
        let before_eval = model.forward(&x).unwrap();
        let mut probe = model.to_device(&Device::Cpu).unwrap();
        let before_train = probe.forward_train(&x).unwrap();
        let width = model.spec().layers[layer].width().unwrap();
        let changes = model.widen(layer, width + width / 2 + 1, WidenOptions { noise: 0.0, seed: 9 }).unwrap();
        assert!(!changes.is_empty());
        let after_eval = model.forward(&x).unwrap();
        let mut probe = model.to_device(&Device::Cpu).unwrap();
        let after_train = probe.forward_train(&x).unwrap();
        let (de, dt) = (max_diff(&before_eval, &after_eval), max_diff(&before_train, &after_train));
        assert!(de < 1e-5 && dt < 1e-5, "layer {layer}: eval diff {de}, train diff {dt}");
    }
}

#[test]
fn widening_preserves_the_function_of_an_mlp() {
    check_widen_preserves(ModelSpec::mlp(784, &[256, 64], 10), &[784]);
}

#[test]
fn widening_preserves_the_function_of_the_seed_cnn() {
    check_widen_preserves(ModelSpec::seed_cnn(10), &[1, 28, 28]);
}

#[test]
fn widening_preserves_the_function_through_batch_norm() {
    check_widen_preserves(bn_net(), &[1, 28, 28]);
}

#[test]
fn widen_reports_copy_and_divide_mappings() {
    let mut model = ModelSpec::mlp(4, &[3], 2).init_seeded(&Device::Cpu, 1).unwrap();
    let changes = model.widen(0, 5, WidenOptions { noise: 0.0, seed: 5 }).unwrap();
    let names: Vec<_> = changes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["layers.0.weight", "layers.0.bias", "layers.2.weight"]);
    let g = &changes[0].sources;
    assert_eq!(&g[..3], &[0, 1, 2]);
    assert!(g[3..].iter().all(|&k| k < 3));
    let out = &changes[2];
    assert_eq!(out.axis, 1);
    for (i, &k) in out.sources.iter().enumerate() {
        let c = g.iter().filter(|&&s| s == k).count() as f32;
        assert_eq!(out.scale[i], 1.0 / c);
    }
    assert_eq!(model.vars()[0].1.dims(), [5, 4]);
    assert_eq!(model.vars()[2].1.dims(), [2, 5]);
}

#[test]
fn widening_then_narrowing_back_restores_the_outputs() {
    for (spec, input) in [(ModelSpec::seed_cnn(10), vec![1, 28, 28]), (bn_net(), vec![1, 28, 28])] {
        let (x, y) = fmnist_batch(32, &input, 2);
        let mut model = spec.init_seeded(&Device::Cpu, 4).unwrap();
        sgd_step(&mut model, &x, &y, 0.05);
        let before = model.forward(&x).unwrap();
        for layer in model.spec().hidden_layers() {
            let w = model.spec().layers[layer].width().unwrap();
            model.widen(layer, 2 * w + 3, WidenOptions { noise: 0.0, seed: 11 }).unwrap();
            let changes = model.narrow(layer, w).unwrap();
            // The originals are kept, in order.
            assert_eq!(changes[0].sources, (0..w).collect::<Vec<_>>());
        }
        assert_eq!(model.spec(), &spec);
        let d = max_diff(&before, &model.forward(&x).unwrap());
        assert!(d < 1e-5, "diff {d}");
    }
}

#[test]
fn sgd_step_right_after_widening_sees_the_same_loss() {
    let (x, y) = fmnist_batch(128, &[784], 3);
    let (x2, y2) = fmnist_batch(128, &[784], 4);
    let mut a = ModelSpec::mlp(784, &[128], 10).init_seeded(&Device::Cpu, 5).unwrap();
    for _ in 0..5 {
        sgd_step(&mut a, &x, &y, 0.1);
    }
    let mut b = a.to_device(&Device::Cpu).unwrap();
    b.widen(0, 192, WidenOptions::default()).unwrap();
    let la = sgd_step(&mut a, &x2, &y2, 0.1);
    let lb = sgd_step(&mut b, &x2, &y2, 0.1);
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    // ...and training goes on: the loss keeps falling on the widened model.
    let mut last = lb;
    for _ in 0..10 {
        last = sgd_step(&mut b, &x2, &y2, 0.1);
    }
    assert!(last < lb, "{last} !< {lb}");
}

#[test]
fn narrowing_drops_the_least_important_units() {
    let mut model = ModelSpec::mlp(3, &[4], 2).init_seeded(&Device::Cpu, 0).unwrap();
    // Make unit 2 worthless (zero incoming weights) and unit 0 the strongest.
    let w = Tensor::new(&[[1f32, 1., 1.], [0.5, 0.5, 0.5], [0., 0., 0.], [0.2, 0.1, 0.3]], &Device::Cpu).unwrap();
    model.vars()[0].1.set(&w).unwrap();
    let changes = model.narrow(0, 3).unwrap();
    assert_eq!(changes[0].sources, [0, 1, 3]);
    assert_eq!(model.spec().hidden_widths(), [3]);
    assert!(matches!(model.narrow(0, 0), Err(Error::Resize { .. })));
    assert!(matches!(model.narrow(2, 1), Err(Error::Resize { .. })), "the output layer is not hidden");
    assert!(matches!(model.widen(0, 2, WidenOptions::default()), Err(Error::Resize { .. })));
}

#[test]
fn save_then_load_gives_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, y) = fmnist_batch(32, &[1, 28, 28], 5);
    let mut model = bn_net().init_seeded(&Device::Cpu, 6).unwrap();
    sgd_step(&mut model, &x, &y, 0.05);
    model.widen(5, 40, WidenOptions { noise: 0.01, seed: 1 }).unwrap();
    let path = tmp.path().join("model.safetensors");
    model.save(&path).unwrap();
    assert!(tmp.path().join("model.safetensors.json").is_file());
    let loaded = Model::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.spec(), model.spec());
    assert_eq!(max_diff(&model.forward(&x).unwrap(), &loaded.forward(&x).unwrap()), 0.0);

    // A file whose tensors do not fit its spec, and a file that is not a model.
    let mut tensors: std::collections::HashMap<String, Tensor> = model.tensors().into_iter().collect();
    tensors.insert("layers.0.bias".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    let spec = serde_json::to_string(model.spec()).unwrap();
    let meta = std::collections::HashMap::from([(SPEC_METADATA_KEY.to_string(), spec)]);
    let bad = tmp.path().join("bad.safetensors");
    safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta), &bad).unwrap();
    let err = Model::load(&bad, &Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { name, .. } if name == "layers.0.bias"), "{err}");
    let plain = tmp.path().join("plain.safetensors");
    candle_core::safetensors::save(&tensors, &plain).unwrap();
    assert!(matches!(Model::load(&plain, &Device::Cpu), Err(Error::Checkpoint { .. })));
    std::fs::write(&plain, b"garbage").unwrap();
    assert!(matches!(Model::load(&plain, &Device::Cpu), Err(Error::Checkpoint { .. })));
    let _ = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
}

/// The first layer takes data: its backward skips the input gradient (a custom op; for a
/// convolution, our direct kernel). On real images, for the seed CNN, a batch-norm CNN and
/// an MLP (whose first layer follows a flatten), the loss equals that of candle's own ops —
/// taken by making the input a `Var` — to 1e-5, and every parameter's gradient to 1e-5 of
/// its largest entry (the first weight to 5e-4, see below). Max pooling takes our kernel on
/// both paths (candle's backward scales by 1/k², see cpu_ops).
#[test]
fn data_input_first_layer_gives_candle_gradients() {
    for spec in [ModelSpec::seed_cnn(10), bn_net(), ModelSpec::preset("mlp:64,32", &[1, 28, 28], 10).unwrap()] {
        let (x, y) = fmnist_batch(64, &spec.input, 4);
        let grads_of = |input: &Tensor| {
            let mut model = spec.init_seeded(&Device::Cpu, 9).unwrap();
            let loss = Model::loss(&model.forward_train(input).unwrap(), &y).unwrap();
            let grads = loss.backward().unwrap();
            let named: Vec<(String, Tensor)> =
                model.vars().into_iter().map(|(n, v)| (n, grads.get(v.as_tensor()).unwrap().clone())).collect();
            (loss.to_scalar::<f32>().unwrap(), named, grads.get(input).is_some())
        };
        let (loss_data, ours, input_grad) = grads_of(&x);
        assert!(!input_grad, "no gradient for a data input");
        let as_var = Var::from_tensor(&x).unwrap();
        let (loss_var, theirs, input_grad) = grads_of(as_var.as_tensor());
        assert!(input_grad, "a Var input keeps its gradient (saliency)");
        assert!(((loss_data - loss_var) / loss_var).abs() < 1e-5, "{loss_data} vs {loss_var}");
        for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
            let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            if scale < 1e-4 {
                // A bias before batch norm: its gradient is zero up to rounding.
                assert!(max_diff(a, b) < 1e-6, "{name}: {} apart", max_diff(a, b));
                continue;
            }
            let rel = max_diff(a, b) / scale;
            // The seed CNN's first weight gradient sums 64·26·26 products per tap: candle's f32
            // gemm rounds that sum to ~2e-4 of the largest entry; our kernel sums rows in f64
            // (within 1e-5 of f64 loops, see cpu_ops' tests). Everything else agrees to ~1e-6.
            let tolerance = if name == "layers.0.weight" { 5e-4 } else { 1e-5 };
            assert!(rel < tolerance, "{name}: relative difference {rel}");
        }
    }
}

/// `Model::backward` (parameter gradients handed straight to the store) gives the store
/// `loss.backward()` gives, value for value, for the seed CNN, a batch-norm CNN (candle's own
/// ops between ours) and an MLP, on real images; and `loss.backward()` itself still returns
/// every gradient (the sink is open only inside `Model::backward`).
#[test]
fn model_backward_equals_candles_backward() {
    for spec in [ModelSpec::seed_cnn(10), bn_net(), ModelSpec::preset("mlp:64,32", &[1, 28, 28], 10).unwrap()] {
        let (x, y) = fmnist_batch(64, &spec.input, 5);
        let mut model = spec.init_seeded(&Device::Cpu, 3).unwrap();
        let loss = Model::loss(&model.forward_train(&x).unwrap(), &y).unwrap();
        let theirs = loss.backward().unwrap();
        let ours = model.backward(&loss).unwrap();
        let again = loss.backward().unwrap();
        for (name, v) in model.vars() {
            let t = theirs.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient from candle"));
            let o = ours.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient from Model::backward"));
            let a = again.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: none from a later backward"));
            assert_eq!(o.dims(), t.dims(), "{name}");
            let [o, t, a] = [o, t, a].map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert_eq!(o, t, "{name}: Model::backward differs from loss.backward()");
            assert_eq!(a, t, "{name}: loss.backward() after Model::backward differs");
        }
    }
}

/// A tool, not a test: inference samples/s of mlp 784-256-10 and 784-1024-1024-10 at batch
/// 128 on real images, called from a thread outside rayon's pool as `bench-step` calls it.
/// `cargo test -p tuneforge-model --release --test model infer_speed -- --ignored --nocapture`
/// (`INFER_PRESETS=mlp:256` for one of them; `INFER_PASSES=4000` for longer runs).
#[test]
#[ignore = "a measuring tool: run alone on a quiet machine"]
fn infer_speed() {
    let presets = std::env::var("INFER_PRESETS").unwrap_or_else(|_| "mlp:256;mlp:1024,1024".into());
    let scale: usize = std::env::var("INFER_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    for preset in presets.split(';') {
        let spec = ModelSpec::preset(preset, &[1, 28, 28], 10).unwrap();
        let model = spec.init_seeded(&Device::Cpu, 1).unwrap();
        let (x, _) = fmnist_batch(1024, &spec.input, 1);
        let passes = if preset == "mlp:256" { scale } else { scale / 10 };
        let run = || {
            for s in (0..1024).step_by(128) {
                model.forward(&x.narrow(0, s, 128).unwrap()).unwrap();
            }
        };
        run();
        let t = std::time::Instant::now();
        for _ in 0..passes {
            run();
        }
        let rate = (passes * 1024) as f64 / t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        rayon::scope(|_| {
            for _ in 0..passes {
                run();
            }
        });
        let pooled = (passes * 1024) as f64 / t.elapsed().as_secs_f64();
        eprintln!("{preset} batch 128: {rate:.0} samples/s called from outside the pool, {pooled:.0} from inside");
    }
}

/// `gather_rows` equals candle's `index_select` on real images (repeated and unordered rows,
/// `f32` through our parallel copy, `u32` labels through candle), and an index past the end
/// is an error, not a panic.
#[test]
fn gather_rows_equals_index_select() {
    let (x, y) = fmnist_batch(300, &[1, 28, 28], 6);
    let idx: Vec<u32> = (0..517u32).map(|i| (i * 7919) % 300).collect();
    let it = Tensor::from_slice(&idx, idx.len(), &Device::Cpu).unwrap();
    for t in [&x, &y] {
        let ours = gather_rows(t, &idx).unwrap();
        let theirs = t.index_select(&it, 0).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert_eq!(
            ours.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            theirs.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
        );
    }
    assert_eq!(gather_rows(&x, &[]).unwrap().dims(), [0, 1, 28, 28]);
    let err = gather_rows(&x, &[0, 300]).unwrap_err().to_string();
    assert!(err.contains("row 300") && err.contains("300 rows"), "{err}");
}

/// `on_pool` returns `f`'s value from outside the pool and from inside it (nested), and a
/// panic in `f` reaches the caller instead of leaving the workers it keeps awake spinning
/// (the call would never return).
#[test]
fn on_pool_returns_and_ends_its_spinners_even_when_f_panics() {
    assert_eq!(on_pool(true, || 7), 7);
    assert!(on_pool(true, || on_pool(true, || rayon::current_thread_index().is_some())));
    let caught = std::panic::catch_unwind(|| on_pool(true, || panic!("inside f")));
    let message = caught.unwrap_err();
    assert_eq!(message.downcast_ref::<&str>(), Some(&"inside f"));
    assert_eq!(on_pool(false, rayon::current_thread_index), None);
}
