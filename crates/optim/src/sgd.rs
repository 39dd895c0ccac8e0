//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StateMismatch};
use crate::kernels::{SgdConsts, SgdKernel};
use crate::optimizer::{Optimizer, OptimizerConfig, OptimizerState, check, check_lr, collect_grads};
use crate::state::{Buf, ParamTable, fused_ok};

/// SGD's hyper-parameters, with PyTorch's meaning (no dampening).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (default 0.01).
    pub lr: f64,
    /// Momentum factor μ (default 0: plain SGD, no state).
    pub momentum: f64,
    /// Nesterov momentum (needs `momentum > 0`; default false).
    pub nesterov: bool,
    /// L2 coefficient: `g + weight_decay · θ` is the gradient used (default 0).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 0.01, momentum: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

impl SgdConfig {
    /// Checks every hyper-parameter's range.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        let m = self.momentum;
        check(m, "momentum", "a finite momentum >= 0", m.is_finite() && m >= 0.0)?;
        let wd = self.weight_decay;
        check(wd, "weight_decay", "a finite weight_decay >= 0", wd.is_finite() && wd >= 0.0)?;
        check(m, "momentum", "momentum > 0 with nesterov", !self.nesterov || m > 0.0)
    }

    fn buffers(&self) -> Vec<(&'static str, i32)> {
        if self.momentum == 0.0 { Vec::new() } else { vec![("momentum_buffer", 1)] }
    }
}

/// SGD over named variables.
///
/// Per step, with `d = g + wd·θ`: without momentum `θ ← θ − lr·d`; with momentum
/// `b ← μ·b + d` (`b` starts at zero, which equals PyTorch's "first step copies `d`"
/// because there is no dampening), then `θ ← θ − lr·b`, or `θ ← θ − lr·(d + μ·b)` with
/// Nesterov.
#[derive(Debug)]
pub struct Sgd {
    table: ParamTable,
    config: SgdConfig,
}

impl Sgd {
    /// SGD over `vars`.
    pub fn new<I, S>(vars: I, config: SgdConfig) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Var)>,
        S: Into<String>,
    {
        config.validate()?;
        Ok(Self { table: ParamTable::new(vars, config.buffers())?, config })
    }
}

/// One step of `var` with tensor ops, the same `f32` operations as the fused kernel.
/// Returns the new momentum buffer, if any.
fn tensor_step(c: &SgdConfig, var: &Var, g: Tensor, buf: Option<&Tensor>) -> Result<Option<Tensor>> {
    let d = if c.weight_decay != 0.0 { (g + (var.as_tensor() * c.weight_decay)?)? } else { g };
    let (d, next_buf) = match buf {
        None => (d, None),
        Some(b) => {
            let next_b = ((b * c.momentum)? + &d)?.detach();
            let d = if c.nesterov { (d + (&next_b * c.momentum)?)? } else { next_b.clone() };
            (d, Some(next_b))
        }
    };
    var.set(&(var.as_tensor().detach() - (d * c.lr)?)?)?;
    Ok(next_buf)
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        check_lr(self.config.lr)?;
        let found = collect_grads(&self.table, grads)?;
        let c = &self.config;
        let k = SgdConsts {
            lr: c.lr as f32,
            momentum: c.momentum as f32,
            weight_decay: c.weight_decay as f32,
            nesterov: c.nesterov,
        };
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
                bufs @ ([] | [Buf::Host(_)]) if fused_ok(var) => {
                    let g = if g.is_contiguous() { g } else { g.contiguous()? };
                    let buf: &mut [f32] = match bufs {
                        [Buf::Host(b)] => b.as_mut_slice(),
                        _ => &mut [],
                    };
                    let op = SgdKernel { buf: RefCell::new(buf), k };
                    var.as_tensor().inplace_op2(&g, &op)?;
                }
                [] => {
                    tensor_step(c, var, g, None)?;
                }
                [b] => {
                    let bt = b.to_tensor(var)?;
                    if let Some(next) = tensor_step(c, var, g, Some(&bt))? {
                        *b = Buf::Tensor(next);
                    }
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
                    let buf = match p.bufs.as_slice() {
                        [] => None,
                        [Buf::Tensor(b)] => Some(b),
                        _ => return Err(ParamTable::buffer_count_error()),
                    };
                    Ok(crate::cuda::SgdItem { var: &p.var, grad: g, buf })
                })
                .collect::<Result<Vec<_>>>()?;
            crate::cuda::sgd_step(&items, &k)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Sgd(self.config.clone())
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
        let OptimizerConfig::Sgd(c) = &state.config else {
            return Err(Error::StateMismatch {
                reason: StateMismatch::Kind { expected: "sgd", actual: state.config.kind() },
            });
        };
        c.validate()?;
        self.table.import(&state.params, c.buffers())?;
        self.config = c.clone();
        Ok(())
    }
}
