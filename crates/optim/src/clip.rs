//! Global-norm gradient clipping and the batch-size learning-rate scaling rule.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optimizer::check;

/// The L2 norm of all the gradients of `vars` taken together, `sqrt(Σ g²)`, summed in
/// `f64`. Variables without a gradient in `grads` contribute nothing.
pub fn grad_norm<'a>(grads: &GradStore, vars: impl IntoIterator<Item = &'a Var>) -> Result<f64> {
    let mut sum = 0.0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += sum_of_squares(g)?;
        }
    }
    Ok(sum.sqrt())
}

/// Scales the gradients of `vars` in `grads` so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is
/// below 1) and returns the norm *before* clipping, for the monitor.
///
/// A norm that is NaN or infinite is returned as is and the gradients are left
/// unchanged: scaling cannot repair them, and the caller (the monitor's anomaly check)
/// decides what to do with the step.
pub fn clip_grad_norm<'a>(
    grads: &mut GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max_norm: f64,
) -> Result<f64> {
    check(max_norm, "max_norm", "a finite max_norm > 0", max_norm.is_finite() && max_norm > 0.0)?;
    let vars: Vec<&Var> = vars.into_iter().collect();
    let norm = grad_norm(grads, vars.iter().copied())?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let clipped = (g * coef)?;
                grads.insert(var.as_tensor(), clipped);
            }
        }
    }
    Ok(norm)
}

/// `Σ g²` in `f64`: directly over the storage for contiguous `f32` CPU tensors, through
/// an `f64` copy otherwise.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.dtype() == DType::F32 && g.device().is_cpu() {
        let (storage, layout) = g.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(data[start..end].iter().map(|&x| f64::from(x) * f64::from(x)).sum());
        }
    }
    Ok(g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?)
}

/// How the learning rate follows a change of batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchScaling {
    /// `lr · new / old` (Goyal et al. 2017, the usual rule for SGD).
    Linear,
    /// `lr · sqrt(new / old)` (often preferred for Adam).
    Sqrt,
}

/// The learning rate for batch size `new_batch` given `lr` tuned for `old_batch`.
pub fn scale_lr_for_batch(lr: f64, old_batch: usize, new_batch: usize, rule: BatchScaling) -> Result<f64> {
    if old_batch == 0 || new_batch == 0 {
        return Err(Error::ZeroBatchSize { old: old_batch, new: new_batch });
    }
    let ratio = new_batch as f64 / old_batch as f64;
    Ok(match rule {
        BatchScaling::Linear => lr * ratio,
        BatchScaling::Sqrt => lr * ratio.sqrt(),
    })
}
