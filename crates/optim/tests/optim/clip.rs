//! Global-norm clipping and the batch-size rule.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use tuneforge_optim::{BatchScaling, Error, clip_grad_norm, grad_norm, scale_lr_for_batch};

use crate::values;

fn grads_of(vars: &[(&Var, &[f32])]) -> GradStore {
    let mut g = GradStore::default();
    for (v, values) in vars {
        g.insert(v.as_tensor(), Tensor::from_slice(values, v.dims(), &Device::Cpu).unwrap());
    }
    g
}

#[test]
fn clipping_scales_to_the_max_norm_and_returns_the_norm_before() {
    let dev = Device::Cpu;
    let a = Var::zeros((2, 2), DType::F32, &dev).unwrap();
    let b = Var::zeros(2, DType::F32, &dev).unwrap();
    let unrelated = Var::zeros(1, DType::F32, &dev).unwrap();
    // ‖(3, 4, 0, 0, 12, 0)‖ = 13; the unrelated variable's gradient is not counted.
    let mut grads = grads_of(&[(&a, &[3.0, 4.0, 0.0, 0.0]), (&b, &[12.0, 0.0]), (&unrelated, &[100.0])]);
    assert_eq!(grad_norm(&grads, [&a, &b]).unwrap(), 13.0);
    let norm = clip_grad_norm(&mut grads, [&a, &b], 1.0).unwrap();
    assert_eq!(norm, 13.0);
    let after = grad_norm(&grads, [&a, &b]).unwrap();
    assert!((after - 1.0).abs() < 1e-6, "{after}");
    let ga = values(grads.get(a.as_tensor()).unwrap());
    let coef = 1.0 / (13.0 + 1e-6);
    assert!((ga[0] - 3.0 * coef).abs() < 1e-7 && (ga[1] - 4.0 * coef).abs() < 1e-7);
    assert_eq!(values(grads.get(unrelated.as_tensor()).unwrap()), [100.0]);

    // Below the limit nothing changes.
    let mut grads = grads_of(&[(&a, &[0.3, 0.4, 0.0, 0.0])]);
    assert!((clip_grad_norm(&mut grads, [&a], 1.0).unwrap() - 0.5).abs() < 1e-7);
    assert_eq!(
        values(grads.get(a.as_tensor()).unwrap()),
        values(&Tensor::new(&[0.3f32, 0.4, 0.0, 0.0], &dev).unwrap())
    );
}

#[test]
fn f64_gradients_and_missing_gradients() {
    let dev = Device::Cpu;
    let a = Var::zeros(2, DType::F64, &dev).unwrap();
    let none = Var::zeros(2, DType::F32, &dev).unwrap();
    let mut g = GradStore::default();
    g.insert(a.as_tensor(), Tensor::new(&[6.0f64, 8.0], &dev).unwrap());
    assert_eq!(clip_grad_norm(&mut g, [&a, &none], 5.0).unwrap(), 10.0);
    let ga = values(g.get(a.as_tensor()).unwrap());
    assert!((ga[0] - 3.0).abs() < 1e-6 && (ga[1] - 4.0).abs() < 1e-6);
}

#[test]
fn non_finite_norm_is_reported_and_gradients_are_left_alone() {
    let a = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let mut grads = grads_of(&[(&a, &[f32::NAN, 1.0])]);
    assert!(clip_grad_norm(&mut grads, [&a], 1.0).unwrap().is_nan());
    assert_eq!(values(grads.get(a.as_tensor()).unwrap())[1], 1.0);
    let mut grads = grads_of(&[(&a, &[f32::INFINITY, 1.0])]);
    assert_eq!(clip_grad_norm(&mut grads, [&a], 1.0).unwrap(), f64::INFINITY);
    let e = clip_grad_norm(&mut grads, [&a], 0.0).unwrap_err();
    assert!(matches!(e, Error::InvalidHyperParameter { field: "max_norm", .. }), "{e}");
}

#[test]
fn batch_size_rule() {
    assert_eq!(scale_lr_for_batch(0.1, 128, 256, BatchScaling::Linear).unwrap(), 0.2);
    assert_eq!(scale_lr_for_batch(0.1, 128, 64, BatchScaling::Linear).unwrap(), 0.05);
    assert_eq!(scale_lr_for_batch(0.1, 64, 256, BatchScaling::Sqrt).unwrap(), 0.2);
    let e = scale_lr_for_batch(0.1, 0, 256, BatchScaling::Sqrt).unwrap_err();
    assert!(matches!(e, Error::ZeroBatchSize { old: 0, new: 256 }), "{e}");
}
