//! A real candle-nn MLP (784-256-10, ReLU, Adam 1e-3) on Fashion-MNIST, shared by the
//! integration tests, the `fmnist_trace` example and the `overhead` benchmark (each includes
//! this file with `#[path]`). Test support only: the library does not know candle.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use tuneforge_loader::{DataDirs, GzCache, Known, Loader, LoaderConfig, Scale};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// `TUNEFORGE_DATA`, else the workplace's `shared/datasets` beside the checkout.
pub fn data_dir() -> PathBuf {
    std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"))
}

/// A shuffled Fashion-MNIST loader with pixels / 255; the gz files are inflated into `cache`.
pub fn loader(which: Known, cache: &std::path::Path, seed: u64, shuffle: bool) -> Res<Loader> {
    let ds = DataDirs::new(vec![data_dir()]).open(which, &GzCache::new(cache))?;
    Ok(Loader::new(ds, LoaderConfig { seed, shuffle, scale: Scale::divide(255.0), ..Default::default() })?)
}

pub struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.l2.forward(&self.l1.forward(x)?.relu()?)
    }
}

/// One trained step's facts.
pub struct StepResult {
    pub loss: f64,
    pub grad_norm: f64,
    pub rows: usize,
    pub seconds: f64,
    pub end_of_epoch: bool,
    pub epoch: u64,
}

pub struct Trainer {
    pub varmap: VarMap,
    pub model: Mlp,
    pub opt: AdamW,
    pub device: Device,
    pub loader: Loader,
}

impl Trainer {
    pub fn new(loader: Loader, lr: f64) -> Res<Self> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = Mlp { l1: candle_nn::linear(784, 256, vb.pp("l1"))?, l2: candle_nn::linear(256, 10, vb.pp("l2"))? };
        // Adam: AdamW without weight decay.
        let opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() })?;
        Ok(Trainer { varmap, model, opt, device, loader })
    }

    /// One full training step (batch, forward, loss, backward, gradient norm, update), timed.
    pub fn step(&mut self, batch_size: usize) -> Res<StepResult> {
        let t = Instant::now();
        let batch = self.loader.next_batch(batch_size)?;
        let n = batch.labels.len();
        let x = Tensor::from_slice(&batch.features, (n, 784), &self.device)?;
        let y = Tensor::from_slice(&batch.labels, n, &self.device)?;
        let loss = candle_nn::loss::cross_entropy(&self.model.forward(&x)?, &y)?;
        let grads = loss.backward()?;
        let mut sq = 0.0f64;
        for var in self.varmap.all_vars() {
            if let Some(g) = grads.get(&var) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        self.opt.step(&grads)?;
        let loss = loss.to_scalar::<f32>()? as f64;
        Ok(StepResult {
            loss,
            grad_norm: sq.sqrt(),
            rows: n,
            seconds: t.elapsed().as_secs_f64(),
            end_of_epoch: batch.end_of_epoch,
            epoch: batch.epoch,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// Accuracy and macro-F1 on the first `rows` rows of `eval` (in file order).
    pub fn evaluate(&self, eval: &mut Loader, rows: usize) -> Res<(f64, f64)> {
        let batch = eval.next_batch(rows)?;
        let n = batch.labels.len();
        let x = Tensor::from_slice(&batch.features, (n, 784), &self.device)?;
        let pred: Vec<u32> = self.model.forward(&x)?.argmax(D::Minus1)?.to_vec1()?;
        let mut tp = [0u64; 10];
        let mut fp = [0u64; 10];
        let mut fn_ = [0u64; 10];
        for (&p, &t) in pred.iter().zip(&batch.labels) {
            if p == t {
                tp[t as usize] += 1;
            } else {
                fp[p as usize] += 1;
                fn_[t as usize] += 1;
            }
        }
        let acc = tp.iter().sum::<u64>() as f64 / n as f64;
        let f1 = (0..10)
            .map(|c| {
                let d = 2 * tp[c] + fp[c] + fn_[c];
                if d == 0 { 0.0 } else { 2.0 * tp[c] as f64 / d as f64 }
            })
            .sum::<f64>()
            / 10.0;
        Ok((acc, f1))
    }
}
