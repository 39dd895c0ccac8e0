//! Integration tests of `tuneforge-optim`, one binary (see `Cargo.toml`).
//!
//! `adam`/`sgd`: the update rules against candle-nn (bit for bit) and against scalar
//! transcriptions of PyTorch's algorithms; `remap`: state that follows a widened and a
//! narrowed hand-built MLP; `schedule`, `clip`, `config`, `checkpoint`; `digits`: every
//! optimiser on real data. `step_time` is an `#[ignore]`d timing, run on demand.

// Tests: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod adam;
mod checkpoint;
mod clip;
mod config;
mod digits;
mod remap;
mod schedule;
mod sgd;
mod step_time;

use candle_core::{DType, Device, Tensor, Var};

/// A seeded stream of values in [-1, 1) (a 64-bit LCG; no rand dependency needed).
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }

    pub(crate) fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }

    pub(crate) fn tensor(&mut self, dims: &[usize], dtype: DType) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(self.vec(n), dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    pub(crate) fn var(&mut self, dims: &[usize], dtype: DType) -> Var {
        Var::from_tensor(&self.tensor(dims, dtype)).unwrap()
    }
}

/// A tensor's values as `f64`s, flattened.
pub(crate) fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// A fresh variable with the same values (no shared storage).
pub(crate) fn clone_var(v: &Var) -> Var {
    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap()
}

/// Asserts two tensors hold the same values bit for bit (`-0.0` and `0.0` count equal).
#[track_caller]
pub(crate) fn assert_same(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (values(a), values(b));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x == y, "{what}[{i}]: {x} != {y}");
    }
}

/// Largest absolute difference.
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// A small two-layer MLP written by hand, named as the model crate names its layers.
pub(crate) struct Mlp {
    pub(crate) w1: Var,
    pub(crate) b1: Var,
    pub(crate) w2: Var,
    pub(crate) b2: Var,
}

impl Mlp {
    pub(crate) fn new(rng: &mut Lcg, inputs: usize, hidden: usize, outputs: usize, dtype: DType) -> Self {
        Self {
            w1: rng.var(&[hidden, inputs], dtype),
            b1: rng.var(&[hidden], dtype),
            w2: rng.var(&[outputs, hidden], dtype),
            b2: rng.var(&[outputs], dtype),
        }
    }

    pub(crate) fn named(&self) -> Vec<(&'static str, Var)> {
        vec![
            ("layers.0.weight", self.w1.clone()),
            ("layers.0.bias", self.b1.clone()),
            ("layers.1.weight", self.w2.clone()),
            ("layers.1.bias", self.b2.clone()),
        ]
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.matmul(&self.w1.as_tensor().t().unwrap()).unwrap().broadcast_add(&self.b1).unwrap().tanh().unwrap();
        h.matmul(&self.w2.as_tensor().t().unwrap()).unwrap().broadcast_add(&self.b2).unwrap()
    }

    pub(crate) fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        (self.forward(x) - y).unwrap().sqr().unwrap().mean_all().unwrap()
    }

    pub(crate) fn deep_clone(&self) -> Self {
        Self { w1: clone_var(&self.w1), b1: clone_var(&self.b1), w2: clone_var(&self.w2), b2: clone_var(&self.b2) }
    }

    pub(crate) fn all(&self) -> [&Var; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }
}

/// Inputs and regression targets for [`Mlp`].
pub(crate) fn data(rng: &mut Lcg, rows: usize, inputs: usize, outputs: usize, dtype: DType) -> (Tensor, Tensor) {
    (rng.tensor(&[rows, inputs], dtype), rng.tensor(&[rows, outputs], dtype))
}
