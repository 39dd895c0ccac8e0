//! State that follows a restructured network: a hand-built 2-layer MLP is trained,
//! widened (Net2WiderNet: copy rows of the first layer, split columns of the second) and
//! narrowed, the optimiser's state is remapped, and training goes on.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use tuneforge_optim::{AdamConfig, AdamWConfig, Error, Optimizer, OptimizerConfig, SgdConfig};

use crate::{Lcg, Mlp, data, max_diff, values};

/// How a hidden layer is rebuilt: `sources[i]` is the old unit new unit `i` copies.
struct Widening {
    sources: Vec<usize>,
    /// `1 / (number of new units sharing my source)`, per new unit.
    split: Vec<f32>,
}

impl Widening {
    fn new(sources: Vec<usize>) -> Self {
        let count = |s: usize| sources.iter().filter(|&&x| x == s).count() as f32;
        let split = sources.iter().map(|&s| 1.0 / count(s)).collect();
        Self { sources, split }
    }

    fn ones(&self) -> Vec<f32> {
        vec![1.0; self.sources.len()]
    }

    /// The rebuilt network, as the model crate would build it (no noise).
    fn apply(&self, net: &Mlp) -> Mlp {
        let dev = Device::Cpu;
        let n = self.sources.len();
        let idx = Tensor::from_vec(self.sources.iter().map(|&s| s as u32).collect(), n, &dev).unwrap();
        let dtype = net.w1.dtype();
        let split = Tensor::from_vec(self.split.clone(), (1, n), &dev).unwrap().to_dtype(dtype).unwrap();
        let var = |t: Tensor| Var::from_tensor(&t).unwrap();
        Mlp {
            w1: var(net.w1.index_select(&idx, 0).unwrap()),
            b1: var(net.b1.index_select(&idx, 0).unwrap()),
            w2: var(net.w2.index_select(&idx, 1).unwrap().broadcast_mul(&split).unwrap()),
            b2: net.b2.clone(),
        }
    }

    /// Tells the optimiser: the three changed parameters with their axis, sources, scale.
    fn remap(&self, opt: &mut dyn Optimizer, new: &Mlp) {
        opt.remap("layers.0.weight", new.w1.clone(), 0, &self.sources, &self.ones()).unwrap();
        opt.remap("layers.0.bias", new.b1.clone(), 0, &self.sources, &self.ones()).unwrap();
        opt.remap("layers.1.weight", new.w2.clone(), 1, &self.sources, &self.split).unwrap();
    }
}

fn buffer(opt: &dyn Optimizer, name: &str, buffer: &str) -> Tensor {
    opt.state().unwrap().params[name].buffers[buffer].clone()
}

fn assert_finite(net: &Mlp) {
    for v in net.all() {
        assert!(values(v.as_tensor()).iter().all(|x| x.is_finite()), "non-finite parameter");
    }
}

/// Adam moments of copied units equal their source's, outgoing ones equal source·scale
/// (first moment) and source·scale² (second moment); shapes match; the network computes
/// the same function; 20 more steps keep it finite and lower the loss.
fn adam_widen_then_narrow(config: OptimizerConfig, dtype: DType) {
    let mut rng = Lcg::new(42);
    let net = Mlp::new(&mut rng, 6, 5, 3, dtype);
    let (x, y) = data(&mut rng, 40, 6, 3, dtype);
    let mut opt = config.build(net.named()).unwrap();
    for _ in 0..10 {
        opt.backward_step(&net.loss(&x, &y)).unwrap();
    }
    let old_m1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg");
    let old_v1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg_sq");
    let old_mb = buffer(opt.as_ref(), "layers.0.bias", "exp_avg");
    let old_m2 = buffer(opt.as_ref(), "layers.1.weight", "exp_avg");
    let old_v2 = buffer(opt.as_ref(), "layers.1.weight", "exp_avg_sq");
    let old_b2 = buffer(opt.as_ref(), "layers.1.bias", "exp_avg");

    // Units 1 and 3 are replicated: 5 → 7 hidden units.
    let widen = Widening::new(vec![0, 1, 2, 3, 4, 1, 3]);
    let wide = widen.apply(&net);
    let d = max_diff(&net.forward(&x), &wide.forward(&x));
    assert!(d < 1e-5, "widening changed the function by {d}");
    widen.remap(opt.as_mut(), &wide);

    let m1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg");
    let v1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg_sq");
    let mb = buffer(opt.as_ref(), "layers.0.bias", "exp_avg");
    let m2 = buffer(opt.as_ref(), "layers.1.weight", "exp_avg");
    let v2 = buffer(opt.as_ref(), "layers.1.weight", "exp_avg_sq");
    assert_eq!(m1.dims(), [7, 6]);
    assert_eq!(v1.dims(), [7, 6]);
    assert_eq!(mb.dims(), [7]);
    assert_eq!(m2.dims(), [3, 7]);
    assert_eq!(v2.dims(), [3, 7]);
    let row = |t: &Tensor, i: usize| values(&t.get(i).unwrap());
    let col = |t: &Tensor, j: usize| values(&t.narrow(1, j, 1).unwrap());
    for (new, &old) in widen.sources.iter().enumerate() {
        // Incoming weights and biases: copies carry their source's moments exactly.
        assert_eq!(row(&m1, new), row(&old_m1, old), "exp_avg of unit {new}");
        assert_eq!(row(&v1, new), row(&old_v1, old), "exp_avg_sq of unit {new}");
        assert_eq!(values(&mb)[new], values(&old_mb)[old], "bias exp_avg of unit {new}");
        // Outgoing weights: source · scale and source · scale², in the buffer's dtype.
        let s = widen.split[new];
        let scaled = |v: Vec<f64>, f: f32| -> Vec<f64> {
            v.iter().map(|&x| if dtype == DType::F32 { f64::from(x as f32 * f) } else { x * f64::from(f) }).collect()
        };
        assert_eq!(col(&m2, new), scaled(col(&old_m2, old), s), "outgoing exp_avg of unit {new}");
        assert_eq!(col(&v2, new), scaled(col(&old_v2, old), s * s), "outgoing exp_avg_sq of unit {new}");
    }
    // The unchanged parameter's state is untouched, and every step count is kept.
    assert_eq!(values(&buffer(opt.as_ref(), "layers.1.bias", "exp_avg")), values(&old_b2));
    assert!(opt.state().unwrap().params.values().all(|p| p.step == 10));
    assert!(opt.vars().iter().any(|(_, v)| v.as_tensor().id() == wide.w1.as_tensor().id()));

    let at_widening = values(&wide.loss(&x, &y))[0];
    for _ in 0..20 {
        opt.backward_step(&wide.loss(&x, &y)).unwrap();
    }
    assert_finite(&wide);
    let after = values(&wide.loss(&x, &y))[0];
    assert!(after < at_widening, "loss {at_widening} → {after}");

    // Narrow back to 4 units: drop unit 1 and the copy of 3; the rest keep their state.
    let narrow = Widening::new(vec![0, 2, 3, 4]);
    let before_m1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg");
    let small = narrow.apply(&wide);
    // Dropping units is not function-preserving; scale is 1 for every kept unit here.
    assert_eq!(narrow.split, [1.0; 4]);
    narrow.remap(opt.as_mut(), &small);
    let m1 = buffer(opt.as_ref(), "layers.0.weight", "exp_avg");
    assert_eq!(m1.dims(), [4, 6]);
    for (new, &old) in narrow.sources.iter().enumerate() {
        assert_eq!(row(&m1, new), row(&before_m1, old));
    }
    for _ in 0..20 {
        opt.backward_step(&small.loss(&x, &y)).unwrap();
    }
    assert_finite(&small);
}

#[test]
fn adam_state_follows_widening_and_narrowing_f32_fused() {
    adam_widen_then_narrow(OptimizerConfig::Adam(AdamConfig { lr: 0.01, ..AdamConfig::default() }), DType::F32);
}

#[test]
fn adamw_state_follows_widening_and_narrowing_f32_fused() {
    adam_widen_then_narrow(OptimizerConfig::AdamW(AdamWConfig { lr: 0.01, ..AdamWConfig::default() }), DType::F32);
}

#[test]
fn adamw_state_follows_widening_and_narrowing_f64_tensor_path() {
    adam_widen_then_narrow(OptimizerConfig::AdamW(AdamWConfig { lr: 0.01, ..AdamWConfig::default() }), DType::F64);
}

/// The documented reason for scaling momentum with the weights: after a widening, a
/// momentum-only SGD step (zero gradients) moves the widened network exactly as it moves
/// the original one, because the `c` copies' split updates add up to the source's.
#[test]
fn sgd_momentum_split_preserves_the_function_through_a_momentum_step() {
    let mut rng = Lcg::new(9);
    let net = Mlp::new(&mut rng, 4, 3, 2, DType::F64);
    let (x, y) = data(&mut rng, 10, 4, 2, DType::F64);
    let config = OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() });
    let mut opt = config.build(net.named()).unwrap();
    for _ in 0..5 {
        opt.backward_step(&net.loss(&x, &y)).unwrap();
    }
    let twin = net.deep_clone();
    let mut twin_opt = config.build(twin.named()).unwrap();
    twin_opt.load_state(&opt.state().unwrap()).unwrap();

    // Replication counts 1, 2 and 4: their reciprocals are exact, so the only rounding
    // is the arithmetic's.
    let widen = Widening::new(vec![0, 1, 2, 2, 1, 2, 2]);
    let wide = widen.apply(&net);
    widen.remap(opt.as_mut(), &wide);
    assert!(max_diff(&wide.forward(&x), &twin.forward(&x)) < 1e-12);

    let zero_grads = |m: &Mlp| {
        let mut g = GradStore::default();
        for v in m.all() {
            g.insert(v.as_tensor(), v.zeros_like().unwrap());
        }
        g
    };
    for _ in 0..3 {
        opt.step(&zero_grads(&wide)).unwrap();
        twin_opt.step(&zero_grads(&twin)).unwrap();
        let d = max_diff(&wide.forward(&x), &twin.forward(&x));
        assert!(d < 1e-12, "momentum steps diverged by {d}");
    }
    // And the momentum buffer of a split column is the source's divided by its copies.
    let b2 = buffer(opt.as_ref(), "layers.1.weight", "momentum_buffer");
    let t2 = buffer(twin_opt.as_ref(), "layers.1.weight", "momentum_buffer");
    let col = |t: &Tensor, j: usize| values(&t.narrow(1, j, 1).unwrap());
    for (new, &old) in widen.sources.iter().enumerate() {
        let expected: Vec<f64> = col(&t2, old).iter().map(|x| x * f64::from(widen.split[new])).collect();
        let got = col(&b2, new);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-15, "unit {new}: {g} vs {e}");
        }
    }
}

#[test]
fn sgd_momentum_training_continues_after_widening() {
    let mut rng = Lcg::new(10);
    let net = Mlp::new(&mut rng, 6, 5, 3, DType::F32);
    let (x, y) = data(&mut rng, 40, 6, 3, DType::F32);
    let config = OptimizerConfig::Sgd(SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4 });
    let mut opt = config.build(net.named()).unwrap();
    for _ in 0..10 {
        opt.backward_step(&net.loss(&x, &y)).unwrap();
    }
    let widen = Widening::new(vec![4, 3, 2, 1, 0, 0, 0, 0]);
    let wide = widen.apply(&net);
    widen.remap(opt.as_mut(), &wide);
    assert_eq!(buffer(opt.as_ref(), "layers.1.weight", "momentum_buffer").dims(), [3, 8]);
    let at = values(&wide.loss(&x, &y))[0];
    for _ in 0..20 {
        opt.backward_step(&wide.loss(&x, &y)).unwrap();
    }
    assert_finite(&wide);
    assert!(values(&wide.loss(&x, &y))[0] < at);
}

#[test]
fn remap_validates_everything_before_changing_anything() {
    let mut rng = Lcg::new(1);
    let net = Mlp::new(&mut rng, 4, 3, 2, DType::F32);
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default()).build(net.named()).unwrap();
    let (x, y) = data(&mut rng, 8, 4, 2, DType::F32);
    opt.backward_step(&net.loss(&x, &y)).unwrap();
    let before = opt.state().unwrap();

    let new_w1 = Var::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
    let s = [0usize, 1, 2, 2];
    let ones = [1.0f32; 4];
    let name = "layers.0.weight";
    let err = |r: Result<(), Error>| r.unwrap_err();

    let e = err(opt.remap("layers.9.weight", new_w1.clone(), 0, &s, &ones));
    assert!(matches!(&e, Error::UnknownParam { name } if name == "layers.9.weight"), "{e}");
    let e = err(opt.remap(name, new_w1.clone(), 2, &s, &ones));
    assert!(matches!(e, Error::AxisOutOfRange { axis: 2, rank: 2, .. }), "{e}");
    let e = err(opt.remap(name, new_w1.clone(), 0, &s[..3], &ones));
    assert!(matches!(e, Error::RemapLength { what: "sources", expected: 4, actual: 3, .. }), "{e}");
    let e = err(opt.remap(name, new_w1.clone(), 0, &s, &ones[..2]));
    assert!(matches!(e, Error::RemapLength { what: "scale", expected: 4, actual: 2, .. }), "{e}");
    let e = err(opt.remap(name, new_w1.clone(), 0, &[0, 1, 2, 3], &ones));
    assert!(matches!(e, Error::SourceOutOfRange { position: 3, source_index: 3, old_len: 3, .. }), "{e}");
    let e = err(opt.remap(name, new_w1.clone(), 0, &s, &[1.0, f32::NAN, 1.0, 1.0]));
    assert!(matches!(e, Error::NonFiniteScale { position: 1, .. }), "{e}");
    // Widened on axis 0 but the remap says axis 1: the other axis differs.
    let e = err(opt.remap(name, new_w1.clone(), 1, &[0, 1, 2, 3], &ones));
    assert!(matches!(&e, Error::ShapeMismatch { what: "new variable", .. }), "{e}");
    let rank1 = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let e = err(opt.remap(name, rank1, 0, &s, &ones));
    assert!(matches!(&e, Error::ShapeMismatch { .. }), "{e}");
    let f64_var = Var::zeros((4, 4), DType::F64, &Device::Cpu).unwrap();
    let e = err(opt.remap(name, f64_var, 0, &s, &ones));
    assert!(matches!(&e, Error::VarMismatch { .. }), "{e}");

    let after = opt.state().unwrap();
    for (n, p) in &before.params {
        for (b, t) in &p.buffers {
            assert_eq!(values(t), values(&after.params[n].buffers[b]), "{n}/{b} changed");
        }
    }
    assert!(opt.vars().iter().any(|(_, v)| v.as_tensor().id() == net.w1.as_tensor().id()));
}

#[test]
fn params_can_be_added_and_removed() {
    let mut rng = Lcg::new(2);
    let net = Mlp::new(&mut rng, 4, 3, 2, DType::F32);
    let mut opt = OptimizerConfig::Adam(AdamConfig::default()).build(net.named()).unwrap();
    let (x, y) = data(&mut rng, 8, 4, 2, DType::F32);
    opt.backward_step(&net.loss(&x, &y)).unwrap();

    let gamma = Var::ones(3, DType::F32, &Device::Cpu).unwrap();
    opt.add_param("layers.0.gamma", gamma.clone()).unwrap();
    let e = opt.add_param("layers.0.gamma", gamma.clone()).unwrap_err();
    assert!(matches!(&e, Error::DuplicateParam { name } if name == "layers.0.gamma"), "{e}");
    let state = opt.state().unwrap();
    assert_eq!(state.params["layers.0.gamma"].step, 0);
    assert!(values(&state.params["layers.0.gamma"].buffers["exp_avg"]).iter().all(|&x| x == 0.0));
    assert_eq!(state.params["layers.0.weight"].step, 1);

    let removed = opt.remove_param("layers.1.bias").unwrap();
    assert_eq!(removed.as_tensor().id(), net.b2.as_tensor().id());
    let e = opt.remove_param("layers.1.bias").unwrap_err();
    assert!(matches!(e, Error::UnknownParam { .. }), "{e}");
    let names: Vec<&str> = opt.vars().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["layers.0.bias", "layers.0.gamma", "layers.0.weight", "layers.1.weight"]);

    // b2 is no longer optimised: it keeps its values through a step.
    let b2 = values(net.b2.as_tensor());
    opt.backward_step(&net.loss(&x, &y)).unwrap();
    assert_eq!(values(net.b2.as_tensor()), b2);
}
