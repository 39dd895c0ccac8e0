//! Adam (L2 weight decay) and AdamW (decoupled weight decay).

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StateMismatch};
use crate::kernels::{AdamConsts, AdamKernel};
use crate::optimizer::{Optimizer, OptimizerConfig, OptimizerState, check, check_lr, collect_grads};
use crate::state::{Buf, ParamTable, fused_ok};

/// Adam's hyper-parameters (PyTorch's `Adam`: weight decay is added to the gradient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay of the first moment (default 0.9).
    pub beta1: f64,
    /// Decay of the second moment (default 0.999).
    pub beta2: f64,
    /// Added to the root of the second moment (default 1e-8).
    pub eps: f64,
    /// L2 coefficient: `g + weight_decay · θ` is the gradient Adam sees (default 0).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW's hyper-parameters (PyTorch's and candle-nn's `AdamW`: `θ ← θ·(1 − lr·wd)`
/// before the Adam update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay of the first moment (default 0.9).
    pub beta1: f64,
    /// Decay of the second moment (default 0.999).
    pub beta2: f64,
    /// Added to the root of the second moment (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 0.01, as PyTorch and candle-nn).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

fn validate(lr: f64, beta1: f64, beta2: f64, eps: f64, wd: f64) -> Result<()> {
    check_lr(lr)?;
    let beta = |b: f64| (0.0..1.0).contains(&b);
    check(beta1, "beta1", "0 <= beta1 < 1", beta(beta1))?;
    check(beta2, "beta2", "0 <= beta2 < 1", beta(beta2))?;
    check(eps, "eps", "a finite eps > 0", eps.is_finite() && eps > 0.0)?;
    check(wd, "weight_decay", "a finite weight_decay >= 0", wd.is_finite() && wd >= 0.0)
}

impl AdamConfig {
    /// Checks every hyper-parameter's range.
    pub fn validate(&self) -> Result<()> {
        validate(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
}

impl AdamWConfig {
    /// Checks every hyper-parameter's range.
    pub fn validate(&self) -> Result<()> {
        validate(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
}

const BUFFERS: [(&str, i32); 2] = [("exp_avg", 1), ("exp_avg_sq", 2)];

/// Adam or AdamW over named variables.
///
/// On the CPU with `f32` parameters each step is one fused in-place pass per parameter
/// (moments in plain `Vec<f32>`); elsewhere it is the same arithmetic in candle tensor
/// ops. Both give candle-nn's `AdamW` results (decoupled mode) bit for bit; the step
/// count used for bias correction is kept per parameter, as PyTorch does.
#[derive(Debug)]
pub struct Adam {
    table: ParamTable,
    hp: Hyper,
}

/// The hyper-parameters, copied out so a step can borrow them beside the table.
#[derive(Debug, Clone, Copy)]
struct Hyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
}

impl Adam {
    /// Adam (L2 weight decay) over `vars`.
    pub fn new<I, S>(vars: I, config: AdamConfig) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Var)>,
        S: Into<String>,
    {
        config.validate()?;
        Ok(Self { table: ParamTable::new(vars, BUFFERS.to_vec())?, hp: Hyper::adam(&config) })
    }

    /// AdamW (decoupled weight decay) over `vars`.
    pub fn new_adamw<I, S>(vars: I, config: AdamWConfig) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Var)>,
        S: Into<String>,
    {
        config.validate()?;
        Ok(Self { table: ParamTable::new(vars, BUFFERS.to_vec())?, hp: Hyper::adamw(&config) })
    }
}

impl Hyper {
    fn adam(c: &AdamConfig) -> Self {
        Self { lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.weight_decay, decoupled: false }
    }

    fn adamw(c: &AdamWConfig) -> Self {
        Self {
            decoupled: true,
            ..Self::adam(&AdamConfig {
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
            })
        }
    }

    /// The bias-correction exponent; steps beyond `i32::MAX` give the same (converged)
    /// correction as `i32::MAX`.
    fn exponent(step: u64) -> i32 {
        i32::try_from(step).unwrap_or(i32::MAX)
    }

    fn consts(&self, step: u64) -> AdamConsts {
        // As candle-nn: every constant in f64, rounded to f32 once.
        let t = Self::exponent(step);
        let (decay, l2) =
            if self.decoupled { (1.0 - self.lr * self.weight_decay, 0.0) } else { (1.0, self.weight_decay) };
        AdamConsts {
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            scale_m: (1.0 / (1.0 - self.beta1.powi(t))) as f32,
            scale_v: (1.0 / (1.0 - self.beta2.powi(t))) as f32,
            decay: decay as f32,
            l2: l2 as f32,
            lr: self.lr as f32,
            eps: self.eps as f32,
        }
    }

    /// One step of `var` with tensor ops: candle-nn AdamW's ops in its order (so CPU
    /// results match it bit for bit), Adam's L2 term added to the gradient first, as
    /// PyTorch does. Returns the new moments.
    fn tensor_step(&self, var: &Var, g: Tensor, m: &Tensor, v: &Tensor, step: u64) -> Result<(Tensor, Tensor)> {
        let g =
            if !self.decoupled && self.weight_decay != 0.0 { (g + (var.as_tensor() * self.weight_decay)?)? } else { g };
        let next_m = ((m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
        let next_v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
        let t = Self::exponent(step);
        let m_hat = (&next_m * (1.0 / (1.0 - self.beta1.powi(t))))?;
        let v_hat = (&next_v * (1.0 / (1.0 - self.beta2.powi(t))))?;
        let theta = if self.decoupled {
            (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?
        } else {
            var.as_tensor().detach()
        };
        let adjusted = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
        var.set(&(theta - (adjusted * self.lr)?)?)?;
        Ok((next_m.detach(), next_v.detach()))
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        check_lr(self.hp.lr)?;
        let found = collect_grads(&self.table, grads)?;
        let hp = self.hp;
        // Parameters for the fused CUDA kernel (one launch for all of them, after the loop).
        #[cfg(feature = "cuda")]
        let mut on_gpu: Vec<(String, Tensor)> = Vec::new();
        for ((name, param), grad) in self.table.params.iter_mut().zip(found) {
            let Some(g) = grad else { continue };
            param.step += 1;
            let var = &param.var;
            #[cfg(feature = "cuda")]
            if crate::cuda::takes(var, &param.bufs) {
                on_gpu.push((name.clone(), if g.is_contiguous() { g } else { g.contiguous()? }));
                continue;
            }
            #[cfg(not(feature = "cuda"))]
            let _ = name;
            match param.bufs.as_mut_slice() {
                [Buf::Host(m), Buf::Host(v)] if fused_ok(var) => {
                    let g = if g.is_contiguous() { g } else { g.contiguous()? };
                    let op = AdamKernel {
                        m: RefCell::new(m.as_mut_slice()),
                        v: RefCell::new(v.as_mut_slice()),
                        k: hp.consts(param.step),
                    };
                    var.as_tensor().inplace_op2(&g, &op)?;
                }
                [m, v] => {
                    let (mt, vt) = (m.to_tensor(var)?, v.to_tensor(var)?);
                    let (next_m, next_v) = hp.tensor_step(var, g, &mt, &vt, param.step)?;
                    *m = Buf::Tensor(next_m);
                    *v = Buf::Tensor(next_v);
                }
                _ => return Err(ParamTable::buffer_count_error()),
            }
        }
        #[cfg(feature = "cuda")]
        if !on_gpu.is_empty() {
            let items = on_gpu
                .iter()
                .map(|(name, g)| {
                    let p = &self.table.params[name];
                    let [Buf::Tensor(m), Buf::Tensor(v)] = p.bufs.as_slice() else {
                        return Err(ParamTable::buffer_count_error());
                    };
                    let k = hp.consts(p.step);
                    Ok(crate::cuda::AdamItem { var: &p.var, grad: g, m, v, scale_m: k.scale_m, scale_v: k.scale_v })
                })
                .collect::<Result<Vec<_>>>()?;
            // The constants every item shares; each item carries its own bias corrections.
            crate::cuda::adam_step(&items, &hp.consts(1))?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.hp.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.hp.lr = lr;
    }

    fn config(&self) -> OptimizerConfig {
        if self.hp.decoupled {
            OptimizerConfig::AdamW(AdamWConfig {
                lr: self.hp.lr,
                beta1: self.hp.beta1,
                beta2: self.hp.beta2,
                eps: self.hp.eps,
                weight_decay: self.hp.weight_decay,
            })
        } else {
            OptimizerConfig::Adam(AdamConfig {
                lr: self.hp.lr,
                beta1: self.hp.beta1,
                beta2: self.hp.beta2,
                eps: self.hp.eps,
                weight_decay: self.hp.weight_decay,
            })
        }
    }

    fn vars(&self) -> Vec<(&str, &Var)> {
        self.table.vars()
    }

    fn add_param(&mut self, name: &str, var: Var) -> Result<()> {
        self.table.add(name, var)
    }

    fn remove_param(&mut self, name: &str) -> Result<Var> {
        self.table.remove(name)
    }

    fn remap(&mut self, name: &str, new_var: Var, axis: usize, sources: &[usize], scale: &[f32]) -> Result<()> {
        self.table.remap(name, new_var, axis, sources, scale)
    }

    fn state(&self) -> Result<OptimizerState> {
        Ok(OptimizerState { config: self.config(), params: self.table.export()? })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let hp = match &state.config {
            OptimizerConfig::Adam(c) => {
                c.validate()?;
                Hyper::adam(c)
            }
            OptimizerConfig::AdamW(c) => {
                c.validate()?;
                Hyper::adamw(c)
            }
            OptimizerConfig::Sgd(_) => Hyper { decoupled: !self.hp.decoupled, ..self.hp },
        };
        if hp.decoupled != self.hp.decoupled {
            return Err(Error::StateMismatch {
                reason: StateMismatch::Kind { expected: self.config().kind(), actual: state.config.kind() },
            });
        }
        self.table.import(&state.params, BUFFERS.to_vec())?;
        self.hp = hp;
        Ok(())
    }
}
