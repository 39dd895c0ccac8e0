//! The [`Optimizer`] trait, the serde [`OptimizerConfig`] that builds one, and the plain
//! [`OptimizerState`] that checkpoints hold.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::adam::{Adam, AdamConfig, AdamWConfig};
use crate::error::{Error, Result};
use crate::sgd::{Sgd, SgdConfig};
use crate::state::ParamTable;

/// An optimiser over named candle variables whose state follows the parameters when a
/// layer is restructured.
///
/// State (moments, momentum buffers, step counts) is kept per parameter *name*, e.g.
/// `"layers.0.weight"`; the model and the optimiser agree on names, nothing else.
pub trait Optimizer: Send {
    /// Updates every parameter that has a gradient in `grads`; parameters without one
    /// are left alone (their step count does not advance).
    ///
    /// Fails with [`Error::InvalidHyperParameter`] if the learning rate set by
    /// [`set_learning_rate`](Self::set_learning_rate) is negative or not finite, and
    /// with [`Error::ShapeMismatch`] if a gradient's shape is not its parameter's; in
    /// both cases before any parameter changes.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// Computes the gradients of `loss` and takes a step.
    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// The learning rate the next step uses.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate for the following steps (any step; schedules call this).
    fn set_learning_rate(&mut self, lr: f64);

    /// The hyper-parameters, with the current learning rate.
    fn config(&self) -> OptimizerConfig;

    /// The parameters, in name order.
    fn vars(&self) -> Vec<(&str, &Var)>;

    /// Starts optimising a new parameter with fresh (zero) state.
    fn add_param(&mut self, name: &str, var: Var) -> Result<()>;

    /// Stops optimising a parameter and drops its state; returns its variable.
    fn remove_param(&mut self, name: &str) -> Result<Var>;

    /// Replaces parameter `name` by `new_var`, whose size along `axis` changed, and
    /// carries its state across: new index `i` along `axis` takes the state of old index
    /// `sources[i]` multiplied by `scale[i]` (first moments, momentum buffers) or
    /// `scale[i]²` (second moments). See the crate docs for the contract and why.
    ///
    /// Validates everything before changing anything: the name is known, `axis` is in
    /// range, `sources` and `scale` have one entry per new index, every source is an old
    /// index, scales are finite, and `new_var` matches the old variable's dtype, device
    /// and its shape on every other axis.
    fn remap(&mut self, name: &str, new_var: Var, axis: usize, sources: &[usize], scale: &[f32]) -> Result<()>;

    /// A copy of the full state (hyper-parameters and per-parameter buffers on the CPU).
    fn state(&self) -> Result<OptimizerState>;

    /// Replaces the state by `state`, which must be of this optimiser's kind and cover
    /// exactly its parameters with buffers of their shapes. Nothing changes on error.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Which optimiser, with its hyper-parameters; `{"kind": "adamw", "lr": 1e-3, ...}` in
/// JSON. Omitted fields take the defaults of the matching config struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent with optional momentum, Nesterov and weight decay.
    Sgd(SgdConfig),
    /// Adam with L2 weight decay added to the gradient (PyTorch's `Adam`).
    Adam(AdamConfig),
    /// Adam with decoupled weight decay (PyTorch's and candle-nn's `AdamW`).
    AdamW(AdamWConfig),
}

impl OptimizerConfig {
    /// The kind's name as in JSON: `"sgd"`, `"adam"` or `"adamw"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sgd(_) => "sgd",
            Self::Adam(_) => "adam",
            Self::AdamW(_) => "adamw",
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.lr,
            Self::Adam(c) => c.lr,
            Self::AdamW(c) => c.lr,
        }
    }

    /// Checks every hyper-parameter's range.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Sgd(c) => c.validate(),
            Self::Adam(c) => c.validate(),
            Self::AdamW(c) => c.validate(),
        }
    }

    /// Builds the optimiser over `vars` (name, variable), each starting with zero state.
    pub fn build<I, S>(&self, vars: I) -> Result<Box<dyn Optimizer>>
    where
        I: IntoIterator<Item = (S, Var)>,
        S: Into<String>,
    {
        Ok(match self {
            Self::Sgd(c) => Box::new(Sgd::new(vars, c.clone())?),
            Self::Adam(c) => Box::new(Adam::new(vars, c.clone())?),
            Self::AdamW(c) => Box::new(Adam::new_adamw(vars, c.clone())?),
        })
    }
}

/// An optimiser's full state as plain data: what [`Optimizer::state`] returns and a
/// checkpoint stores.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// The hyper-parameters, with the learning rate at the time of the copy.
    pub config: OptimizerConfig,
    /// Per parameter name, its state.
    pub params: BTreeMap<String, ParamState>,
}

/// One parameter's optimiser state.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// How many updates the parameter has had (Adam's bias correction uses it).
    pub step: u64,
    /// Buffers shaped like the parameter, as CPU tensors, by PyTorch's names:
    /// `momentum_buffer` (SGD with momentum), `exp_avg` and `exp_avg_sq` (Adam, AdamW).
    pub buffers: BTreeMap<String, Tensor>,
}

/// Fails unless `lr` is a usable learning rate.
pub(crate) fn check_lr(lr: f64) -> Result<()> {
    check(lr, "lr", "a finite lr >= 0", lr.is_finite() && lr >= 0.0)
}

pub(crate) fn check(value: f64, field: &'static str, expected: &'static str, ok: bool) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::InvalidHyperParameter { field, value, expected }) }
}

/// Every gradient present in `grads` for the table's parameters (in its order), checked
/// against its parameter's shape before anything is updated.
pub(crate) fn collect_grads(table: &ParamTable, grads: &GradStore) -> Result<Vec<Option<Tensor>>> {
    table
        .params
        .iter()
        .map(|(name, p)| match grads.get(p.var.as_tensor()) {
            Some(g) if g.dims() != p.var.dims() => Err(Error::ShapeMismatch {
                name: name.clone(),
                what: "gradient",
                expected: p.var.dims().to_vec(),
                actual: g.dims().to_vec(),
            }),
            g => Ok(g.cloned()),
        })
        .collect()
}
