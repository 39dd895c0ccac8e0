//! SGD: plain SGD bit-identical to candle-nn's; momentum, Nesterov and weight decay
//! equal to a scalar transcription of PyTorch's `SGD` algorithm (dampening 0).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as _;
use tuneforge_optim::{Error, Optimizer, Sgd, SgdConfig};

use crate::{Lcg, Mlp, assert_same, data};

#[test]
fn plain_sgd_is_bit_identical_to_candle_nn() {
    for (dtype, hidden, lr) in [(DType::F32, 16, 0.05), (DType::F32, 3000, 0.002), (DType::F64, 16, 0.05)] {
        let mut rng = Lcg::new(5);
        let ours = Mlp::new(&mut rng, 12, hidden, 3, dtype);
        let theirs = ours.deep_clone();
        let (x, y) = data(&mut rng, 24, 12, 3, dtype);
        let config = SgdConfig { lr, ..SgdConfig::default() };
        let mut opt = Sgd::new(ours.named(), config).unwrap();
        let mut reference = candle_nn::SGD::new(theirs.all().into_iter().cloned().collect(), lr).unwrap();
        for step in 0..20 {
            opt.backward_step(&ours.loss(&x, &y)).unwrap();
            reference.backward_step(&theirs.loss(&x, &y)).unwrap();
            for (a, b) in ours.all().into_iter().zip(theirs.all()) {
                assert_same(a.as_tensor(), b.as_tensor(), &format!("{dtype:?} step {step}"));
                assert!(crate::values(a.as_tensor()).iter().all(|x| x.is_finite()));
            }
        }
    }
}

/// PyTorch's SGD on plain `f64`s for `loss = ½ Σ a (p − t)²`.
fn reference_sgd(p0: &[f64], a: &[f64], t: &[f64], c: &SgdConfig, steps: usize) -> Vec<f64> {
    let mut p = p0.to_vec();
    let mut buf: Option<Vec<f64>> = None;
    for _ in 0..steps {
        let mut d: Vec<f64> = (0..p.len()).map(|i| a[i] * (p[i] - t[i]) + c.weight_decay * p[i]).collect();
        if c.momentum != 0.0 {
            let b = match buf.take() {
                None => d.clone(), // PyTorch: the first step copies the gradient.
                Some(mut b) => {
                    for (b, d) in b.iter_mut().zip(&d) {
                        *b = c.momentum * *b + d;
                    }
                    b
                }
            };
            if c.nesterov {
                for (d, b) in d.iter_mut().zip(&b) {
                    *d += c.momentum * b;
                }
            } else {
                d.clone_from(&b);
            }
            buf = Some(b);
        }
        for (p, d) in p.iter_mut().zip(&d) {
            *p -= c.lr * d;
        }
    }
    p
}

#[test]
fn momentum_nesterov_and_weight_decay_match_pytorch_algorithm() {
    let mut rng = Lcg::new(21);
    let n = 40;
    let p0 = rng.vec(n);
    let a: Vec<f32> = rng.vec(n).iter().map(|x| 0.5 + x.abs()).collect();
    let t = rng.vec(n);
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let configs = [
        SgdConfig { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.0 },
        SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.0 },
        SgdConfig { lr: 0.05, momentum: 0.5, nesterov: true, weight_decay: 0.1 },
        SgdConfig { lr: 0.05, momentum: 0.0, nesterov: false, weight_decay: 0.1 },
    ];
    for c in configs {
        let expected = reference_sgd(&f(&p0), &f(&a), &f(&t), &c, 30);
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let dev = Device::Cpu;
            let tensor = |v: &[f32]| Tensor::from_slice(v, n, &dev).unwrap().to_dtype(dtype).unwrap();
            let p = Var::from_tensor(&tensor(&p0)).unwrap();
            let (at, tt) = (tensor(&a), tensor(&t));
            let mut opt = Sgd::new([("p", p.clone())], c.clone()).unwrap();
            for _ in 0..30 {
                let loss = ((p.as_tensor() - &tt).unwrap().sqr().unwrap() * &at)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .affine(0.5, 0.0)
                    .unwrap();
                opt.backward_step(&loss).unwrap();
            }
            let got = crate::values(p.as_tensor());
            let diff = got.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff < tol, "{c:?} {dtype:?}: max diff {diff}");
        }
    }
}

#[test]
fn nesterov_needs_momentum() {
    let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
    let err = Sgd::new([("p", p)], SgdConfig { nesterov: true, ..SgdConfig::default() }).unwrap_err();
    assert!(matches!(err, Error::InvalidHyperParameter { field: "momentum", .. }), "{err}");
}
