//! Adam and AdamW: bit-identical to candle-nn's `AdamW`, and equal to a scalar
//! transcription of PyTorch's `Adam` / `AdamW` algorithms.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as _;
use tuneforge_optim::{Adam, AdamConfig, AdamWConfig, Error, Optimizer, OptimizerConfig};

use crate::{Lcg, Mlp, assert_same, data, max_diff};

/// Our AdamW and candle-nn's on two copies of the same MLP: every parameter equal after
/// every one of 30 steps.
fn against_candle_nn(dtype: DType, weight_decay: f64, hidden: usize) {
    let mut rng = Lcg::new(7);
    let ours = Mlp::new(&mut rng, 12, hidden, 4, dtype);
    let theirs = ours.deep_clone();
    let (x, y) = data(&mut rng, 32, 12, 4, dtype);

    let config = AdamWConfig { lr: 0.01, weight_decay, ..AdamWConfig::default() };
    let mut opt = Adam::new_adamw(ours.named(), config).unwrap();
    let params = candle_nn::ParamsAdamW { lr: 0.01, weight_decay, ..candle_nn::ParamsAdamW::default() };
    let mut reference = candle_nn::AdamW::new(theirs.all().into_iter().cloned().collect(), params).unwrap();

    for step in 0..30 {
        let la = ours.loss(&x, &y);
        let lb = theirs.loss(&x, &y);
        assert_same(&la, &lb, &format!("loss before step {step}"));
        opt.backward_step(&la).unwrap();
        reference.backward_step(&lb).unwrap();
        for (a, b) in ours.all().into_iter().zip(theirs.all()) {
            assert_same(a.as_tensor(), b.as_tensor(), &format!("parameter after step {step}"));
        }
    }
}

#[test]
fn adamw_f32_fused_is_bit_identical_to_candle_nn_without_weight_decay() {
    against_candle_nn(DType::F32, 0.0, 16);
}

#[test]
fn adamw_f32_fused_is_bit_identical_to_candle_nn_with_weight_decay() {
    against_candle_nn(DType::F32, 0.05, 16);
}

#[test]
fn adamw_f32_fused_parallel_chunks_are_bit_identical_to_candle_nn() {
    // 12 × 3000 = 36000 elements in layers.0.weight: more than two 16k chunks, so the
    // rayon path runs.
    against_candle_nn(DType::F32, 0.01, 3000);
}

#[test]
fn adamw_f64_tensor_path_is_bit_identical_to_candle_nn() {
    against_candle_nn(DType::F64, 0.0, 16);
    against_candle_nn(DType::F64, 0.05, 16);
}

/// PyTorch's Adam/AdamW algorithm on plain `f64`s, for `loss = ½ Σ a (p − t)²`.
fn reference_adam(p0: &[f64], a: &[f64], t: &[f64], c: &AdamConfig, decoupled: bool, steps: usize) -> Vec<f64> {
    let mut p = p0.to_vec();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for step in 1..=steps {
        for i in 0..p.len() {
            let mut g = a[i] * (p[i] - t[i]);
            if decoupled {
                p[i] *= 1.0 - c.lr * c.weight_decay;
            } else {
                g += c.weight_decay * p[i];
            }
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
            let m_hat = m[i] / (1.0 - c.beta1.powi(step as i32));
            let v_hat = v[i] / (1.0 - c.beta2.powi(step as i32));
            p[i] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
        }
    }
    p
}

fn quadratic_run(dtype: DType, config: OptimizerConfig, steps: usize) -> Vec<f64> {
    let mut rng = Lcg::new(11);
    let n = 50;
    let p0 = rng.vec(n);
    let a: Vec<f32> = rng.vec(n).iter().map(|x| 1.0 + x.abs() * 4.0).collect();
    let t = rng.vec(n);
    let dev = Device::Cpu;
    let tensor = |v: &[f32]| Tensor::from_slice(v, n, &dev).unwrap().to_dtype(dtype).unwrap();
    let p = Var::from_tensor(&tensor(&p0)).unwrap();
    let (a, t) = (tensor(&a), tensor(&t));
    let mut opt = config.build([("p", p.clone())]).unwrap();
    for _ in 0..steps {
        let loss =
            ((p.as_tensor() - &t).unwrap().sqr().unwrap() * &a).unwrap().sum_all().unwrap().affine(0.5, 0.0).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    crate::values(p.as_tensor())
}

fn quadratic_inputs() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = Lcg::new(11);
    let n = 50;
    let f = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let p0 = f(rng.vec(n));
    let a = f(rng.vec(n).iter().map(|x| 1.0 + x.abs() * 4.0).collect());
    let t = f(rng.vec(n));
    (p0, a, t)
}

#[test]
fn adam_and_adamw_match_pytorch_algorithm() {
    let (p0, a, t) = quadratic_inputs();
    let c = AdamConfig { lr: 0.05, beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 };
    for decoupled in [false, true] {
        let expected = reference_adam(&p0, &a, &t, &c, decoupled, 40);
        let config = if decoupled {
            OptimizerConfig::AdamW(AdamWConfig {
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
            })
        } else {
            OptimizerConfig::Adam(c.clone())
        };
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let got = quadratic_run(dtype, config.clone(), 40);
            let diff = got.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff < tol, "decoupled={decoupled} {dtype:?}: max diff {diff}");
        }
    }
}

#[test]
fn adam_f32_fused_agrees_with_f64_tensor_path() {
    let mut rng = Lcg::new(3);
    let a = Mlp::new(&mut rng, 6, 8, 2, DType::F32);
    let b = Mlp {
        w1: Var::from_tensor(&a.w1.to_dtype(DType::F64).unwrap()).unwrap(),
        b1: Var::from_tensor(&a.b1.to_dtype(DType::F64).unwrap()).unwrap(),
        w2: Var::from_tensor(&a.w2.to_dtype(DType::F64).unwrap()).unwrap(),
        b2: Var::from_tensor(&a.b2.to_dtype(DType::F64).unwrap()).unwrap(),
    };
    let (x, y) = data(&mut rng, 16, 6, 2, DType::F32);
    let (x64, y64) = (x.to_dtype(DType::F64).unwrap(), y.to_dtype(DType::F64).unwrap());
    let config = AdamConfig { lr: 0.01, weight_decay: 0.01, ..AdamConfig::default() };
    let mut oa = Adam::new(a.named(), config.clone()).unwrap();
    let mut ob = Adam::new(b.named(), config).unwrap();
    for _ in 0..20 {
        oa.backward_step(&a.loss(&x, &y)).unwrap();
        ob.backward_step(&b.loss(&x64, &y64)).unwrap();
    }
    for (pa, pb) in a.all().into_iter().zip(b.all()) {
        let d = max_diff(pa.as_tensor(), pb.as_tensor());
        assert!(d < 1e-5, "max diff {d}");
    }
}

#[test]
fn learning_rate_can_change_at_any_step() {
    let p = Var::new(&[1.0f32, -1.0], &Device::Cpu).unwrap();
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default()).build([("p", p.clone())]).unwrap();
    assert_eq!(opt.learning_rate(), 1e-3);
    opt.set_learning_rate(0.0);
    let loss = p.as_tensor().sqr().unwrap().sum_all().unwrap();
    // lr 0 with weight decay: θ·(1 − 0) − 0 = θ, nothing moves.
    opt.backward_step(&loss).unwrap();
    assert_eq!(crate::values(p.as_tensor()), [1.0, -1.0]);
    opt.set_learning_rate(0.1);
    opt.backward_step(&p.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
    let v = crate::values(p.as_tensor());
    assert!(v[0] < 0.95 && v[1] > -0.95, "{v:?}");

    opt.set_learning_rate(f64::NAN);
    let err = opt.backward_step(&p.as_tensor().sqr().unwrap().sum_all().unwrap());
    assert!(matches!(err, Err(Error::InvalidHyperParameter { field: "lr", .. })), "{err:?}");
    assert_eq!(crate::values(p.as_tensor()), v, "a failed step changes nothing");
}

#[test]
fn parameters_without_gradient_are_left_alone_and_keep_their_step() {
    let dev = Device::Cpu;
    let used = Var::new(&[1.0f32, 2.0], &dev).unwrap();
    let unused = Var::new(&[3.0f32], &dev).unwrap();
    let mut opt = Adam::new([("used", used.clone()), ("unused", unused.clone())], AdamConfig::default()).unwrap();
    for _ in 0..3 {
        opt.backward_step(&used.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let state = opt.state().unwrap();
    assert_eq!(state.params["used"].step, 3);
    assert_eq!(state.params["unused"].step, 0);
    assert_eq!(crate::values(unused.as_tensor()), [3.0]);
}

#[test]
fn gradient_of_the_wrong_shape_is_an_error_and_changes_nothing() {
    let dev = Device::Cpu;
    let p = Var::new(&[1.0f32, 2.0], &dev).unwrap();
    let q = Var::new(&[1.0f32, 2.0, 3.0], &dev).unwrap();
    let mut opt = Adam::new([("p", p.clone())], AdamConfig::default()).unwrap();
    let mut grads = q.as_tensor().sum_all().unwrap().backward().unwrap();
    let g = grads.remove(q.as_tensor()).unwrap();
    grads.insert(p.as_tensor(), g);
    let err = opt.step(&grads).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { name, what: "gradient", expected, actual }
            if name == "p" && expected == &[2] && actual == &[3]),
        "{err}"
    );
    assert_eq!(crate::values(p.as_tensor()), [1.0, 2.0]);
    assert_eq!(opt.state().unwrap().params["p"].step, 0);
}

#[test]
fn integer_parameters_are_refused() {
    let p = Var::new(&[1u32, 2], &Device::Cpu).unwrap();
    let err = Adam::new([("ids", p)], AdamConfig::default()).unwrap_err();
    assert!(matches!(&err, Error::NotFloat { name, dtype: DType::U32 } if name == "ids"), "{err}");
}

/// A moment whose gradient stops decays ×β₁ per step; it must reach 0 instead of lingering
/// in the subnormal range (x86 runs ~100× slower on subnormals). Gradient 1 for one step,
/// then 0: exp_avg is 0.1·0.9ⁿ, below f32::MIN_POSITIVE after ~830 steps; SGD's momentum
/// buffer likewise.
#[test]
fn moments_of_a_gradient_that_stopped_reach_zero_not_subnormals() {
    let dev = Device::Cpu;
    for config in [
        OptimizerConfig::AdamW(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }),
        OptimizerConfig::Sgd(tuneforge_optim::SgdConfig { momentum: 0.9, ..tuneforge_optim::SgdConfig::default() }),
    ] {
        let p = Var::new(&[1.0f32; 4], &dev).unwrap();
        let mut opt = config.build([("p", p.clone())]).unwrap();
        let mask = Tensor::new(&[1.0f32, 1.0, 1.0, 1.0], &dev).unwrap();
        opt.backward_step(&(p.as_tensor() * &mask).unwrap().sum_all().unwrap()).unwrap();
        let zero = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let mut seen_tiny = false;
        for _ in 0..1000 {
            opt.backward_step(&(p.as_tensor() * &zero).unwrap().sum_all().unwrap()).unwrap();
            for (name, b) in &opt.state().unwrap().params["p"].buffers {
                for v in crate::values(b) {
                    let min = f64::from(f32::MIN_POSITIVE);
                    assert!(v == 0.0 || v.abs() >= min, "{config:?} {name}: subnormal {v:e}");
                    seen_tiny |= v != 0.0 && v.abs() < 1e-30;
                }
            }
        }
        let state = opt.state().unwrap();
        let first = state.params["p"].buffers.iter().find(|(n, _)| *n != "exp_avg_sq").unwrap();
        assert_eq!(crate::values(first.1), [0.0; 4], "{config:?}: {} is 0 after 1000 steps", first.0);
        assert!(seen_tiny, "{config:?}: the moment passed through tiny normal values on its way down");
    }
}
