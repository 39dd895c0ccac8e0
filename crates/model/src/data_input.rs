//! A first convolution, whose input is data, with a backward pass for its weights only.
//!
//! candle's backward of `conv2d` always computes the gradient with respect to the layer's
//! input as well. For the first layer that input is the data batch, and the gradient is
//! thrown away: a transposed convolution that candle runs on one thread — most of
//! `seed-cnn`'s training step (../shared/bench/CPU-PROFILE.md). This op is a custom op on
//! the weight alone (the data is a constant of the op): the forward pass is our direct loops
//! (or candle's own), the backward pass computes the weight's gradient and nothing else.
//! (Linear layers skip the input gradient of data in [`crate::dense`].)
//!
//! Used by [`Model::forward_train`](crate::Model::forward_train) for the first layer when
//! its input tracks no gradient (data, not a variable) on the CPU; anything else takes
//! candle's ops, so saliency (gradients with respect to a `Var` input) is unchanged.

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::cpu_ops;

/// `conv2d(x, w)` as a function of `w` (`x` is data).
struct Conv2dOfData {
    x: Tensor,
    padding: usize,
    stride: usize,
}

/// The weight as a plain tensor (no graph), from the storage a custom op is given.
fn weight(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Tensor> {
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("data-input layer: the weight must be contiguous from offset 0");
    }
    Ok(Tensor::from_storage(Storage::Cpu(storage.clone()), layout.shape().clone(), BackpropOp::none(), false))
}

/// The storage of a freshly computed contiguous tensor, for a custom op's result.
fn into_cpu_storage(t: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) if layout.start_offset() == 0 && cpu_len(cpu) == layout.shape().elem_count() => {
            Ok((cpu.clone(), layout.shape().clone()))
        }
        Storage::Cpu(_) => {
            drop(storage);
            // A view into a larger buffer: copy it out.
            let copy = t.copy()?;
            let (storage, _) = copy.storage_and_layout();
            match &*storage {
                Storage::Cpu(cpu) => Ok((cpu.clone(), t.shape().clone())),
                _ => candle_core::bail!("data-input layer: CPU only"),
            }
        }
        _ => candle_core::bail!("data-input layer: CPU only"),
    }
}

fn cpu_len(s: &CpuStorage) -> usize {
    match s {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        CpuStorage::BF16(v) => v.len(),
        CpuStorage::F16(v) => v.len(),
        _ => usize::MAX,
    }
}

impl Conv2dOfData {
    fn geometry(&self, kernel: &Shape) -> candle_core::Result<cpu_ops::Conv> {
        let (b, cin, h, w) = self.x.dims4()?;
        let (cout, kin, k, k2) = kernel.dims4()?;
        if kin != cin || k != k2 || h + 2 * self.padding < k || w + 2 * self.padding < k {
            candle_core::bail!("conv2d: input {:?} and kernel {:?} do not fit", self.x.dims(), kernel.dims());
        }
        Ok(cpu_ops::Conv { b, cin, h, w, cout, k, padding: self.padding, stride: self.stride })
    }
}

impl CustomOp1 for Conv2dOfData {
    fn name(&self) -> &'static str {
        "conv2d-of-data"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if let (true, CpuStorage::F32(_)) = (cpu_ops::fast_f32(&self.x), storage) {
            // Our direct loops (see cpu_ops): parallel over output planes, no im2col copy.
            let g = self.geometry(layout.shape())?;
            let w = cpu_ops::f32_slice(storage, layout)?;
            let out = cpu_ops::with_f32(&self.x, |x| Ok(cpu_ops::conv2d_forward_f32(x, w, g)))?;
            let (oh, ow) = g.out();
            return Ok((CpuStorage::F32(out), Shape::from((g.b, g.cout, oh, ow))));
        }
        let w = weight(storage, layout)?;
        into_cpu_storage(&self.x.conv2d(&w, self.padding, self.stride, 1, 1)?)
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if cpu_ops::fast_f32(&self.x) && cpu_ops::fast_f32(grad) {
            let g = self.geometry(w.shape())?;
            let gw =
                cpu_ops::with_f32(&self.x, |x| cpu_ops::with_f32(grad, |go| Ok(cpu_ops::conv2d_weight_f32(x, go, g))))?;
            return Ok(crate::grad_sink::route(w, Tensor::from_vec(gw, w.shape(), w.device())?));
        }
        // candle's own formula for the kernel's gradient (backprop.rs, Op::Conv2D).
        let g =
            self.x.transpose(0, 1)?.conv2d(&grad.transpose(0, 1)?, self.padding, 1, self.stride, 1)?.transpose(0, 1)?;
        let (_, _, k0, k1) = w.dims4()?;
        let (_, _, g0, g1) = g.dims4()?;
        let g = if (g0, g1) != (k0, k1) { g.narrow(2, 0, k0)?.narrow(3, 0, k1)? } else { g };
        Ok(Some(g.contiguous()?))
    }
}

/// Whether `x` can take the data-input ops: it tracks no gradient and lives on the CPU.
pub(crate) fn applies(x: &Tensor) -> bool {
    !x.track_op() && x.device().is_cpu()
}

/// `conv2d(x, w)` with a gradient for `w` only (`x` must satisfy [`applies`]).
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> candle_core::Result<Tensor> {
    w.contiguous()?.apply_op1(Conv2dOfData { x: x.contiguous()?, padding, stride })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::cpu_ops::rel_diff as close;

    /// Forward and weight gradient equal candle's ops (to 1e-5 relative), and the input
    /// gets no gradient.
    #[test]
    fn ops_match_candle_forward_and_weight_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (8, 3, 12, 12), &dev).unwrap();
        for (padding, stride) in [(0, 1), (1, 1), (1, 2), (2, 3)] {
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (5, 3, 3, 3), &dev).unwrap()).unwrap();
            let theirs = x.conv2d(w.as_tensor(), padding, stride, 1, 1).unwrap();
            let ours = conv2d(&x, w.as_tensor(), padding, stride).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(close(&ours, &theirs) < 1e-5);
            // A non-trivial loss: sum of squares of the output.
            let g_theirs = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let g_ours = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let rel = close(g_ours.get(w.as_tensor()).unwrap(), g_theirs.get(w.as_tensor()).unwrap());
            assert!(rel < 1e-5, "padding {padding} stride {stride}: {rel}");
            assert!(g_ours.get(&x).is_none());
        }
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (7, 20), &dev).unwrap()).unwrap();
        assert!(applies(&x));
        assert!(!applies(w.as_tensor()));
        assert!(!applies(&(w.as_tensor() * 2.0).unwrap()));
    }
}
