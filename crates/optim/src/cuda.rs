//! Fused multi-tensor optimiser steps on CUDA (the `cuda` feature).
//!
//! [`Adam`](crate::Adam) and [`Sgd`](crate::Sgd) update every CUDA `f32` parameter of a
//! step with **one kernel launch** (up to [`MAX_TENSORS`] tensors per launch): the kernel
//! (`kernels/fused_optim.cu`, compiled to PTX by `build.rs` with the pinned nvcc) receives a
//! table of device pointers by value and walks chunks of [`CHUNK`] elements of the
//! concatenated parameters, updating parameter and moments in place. The tensor-op path
//! it replaces launches ~13 element-wise kernels per parameter and allocates their results.
//!
//! The kernel performs the CPU kernels' `f32` operations in the same order with explicitly
//! rounded intrinsics (no fused multiply-add), so a CUDA step gives the CPU step's bits.
//!
//! Writes go through device pointers taken under candle's storage read locks. That is
//! sound here because candle runs every operation of a device on one stream: the launch is
//! ordered after the backward pass that produced the gradients and before any later use of
//! the parameters, and the moments are tensors only this optimiser holds.

use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::{DType, Device, Storage, Tensor, Var};

use crate::kernels::{AdamConsts, SgdConsts};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// The PTX of the fused optimiser kernels (for inspection and tests).
pub const FUSED_OPTIM_PTX: &str = ptx::FUSED_OPTIM;

/// Tensors per launch (`TF_MAX_TENSORS` in the kernel); more are split over launches.
pub const MAX_TENSORS: usize = 32;
/// Elements per chunk (`TF_CHUNK` in the kernel): one block iteration.
pub const CHUNK: usize = 4096;
const THREADS: u32 = 256;
/// Blocks per launch at most; the kernel loops over the remaining chunks.
const MAX_BLOCKS: u64 = 4096;
const MODULE: &str = "tuneforge_fused_optim";

/// `TfAdamArgs` in the kernel, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamArgs {
    p: [u64; MAX_TENSORS],
    g: [u64; MAX_TENSORS],
    m: [u64; MAX_TENSORS],
    v: [u64; MAX_TENSORS],
    n: [u64; MAX_TENSORS],
    chunk_end: [u64; MAX_TENSORS],
    scale_m: [f32; MAX_TENSORS],
    scale_v: [f32; MAX_TENSORS],
    count: u32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    decay: f32,
    l2: f32,
    lr: f32,
    eps: f32,
}

// SAFETY: plain `#[repr(C)]` data whose layout is the kernel's argument struct.
unsafe impl DeviceRepr for AdamArgs {}

/// `TfSgdArgs` in the kernel, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct SgdArgs {
    p: [u64; MAX_TENSORS],
    g: [u64; MAX_TENSORS],
    buf: [u64; MAX_TENSORS],
    n: [u64; MAX_TENSORS],
    chunk_end: [u64; MAX_TENSORS],
    count: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,
}

// SAFETY: as for `AdamArgs`.
unsafe impl DeviceRepr for SgdArgs {}

/// One parameter of an Adam step: the variable, its gradient and moments (same shape, same
/// device, contiguous `f32`) and its bias corrections.
pub(crate) struct AdamItem<'a> {
    pub var: &'a Var,
    pub grad: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    pub scale_m: f32,
    pub scale_v: f32,
}

/// One parameter of an SGD step; `buf` is `None` without momentum.
pub(crate) struct SgdItem<'a> {
    pub var: &'a Var,
    pub grad: &'a Tensor,
    pub buf: Option<&'a Tensor>,
}

/// Whether the fused kernel is in use: yes unless `TUNEFORGE_FUSED_OPTIM=off` (read once),
/// which sends CUDA parameters through the tensor-op path for A/B measurements.
pub fn fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TUNEFORGE_FUSED_OPTIM").map_or(true, |v| v != "off"))
}

/// Whether the fused CUDA step can update `t` in place: a contiguous `f32` CUDA tensor.
pub(crate) fn fits(t: &Tensor) -> bool {
    t.device().is_cuda() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Whether the fused kernel updates this parameter: it is on (see [`fused_enabled`]) and the
/// variable and its state buffers are contiguous `f32` CUDA tensors.
pub(crate) fn takes(var: &Var, bufs: &[crate::state::Buf]) -> bool {
    fused_enabled()
        && fits(var.as_tensor())
        && bufs.iter().all(|b| matches!(b, crate::state::Buf::Tensor(t) if fits(t)))
}

/// The running chunk totals of tensors of `sizes` elements (`chunk_end` in the kernel).
pub(crate) fn chunk_ends(sizes: &[usize]) -> Vec<u64> {
    sizes
        .iter()
        .scan(0u64, |total, &n| {
            *total += n.div_ceil(CHUNK) as u64;
            Some(*total)
        })
        .collect()
}

/// Device pointers of a group of tensors, held with their read locks until the launch is
/// queued.
fn with_pointers<R>(
    tensors: &[&Tensor],
    stream: &std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>,
    f: impl FnOnce(&[u64]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut ptrs = Vec::with_capacity(guards.len());
    let mut syncs = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let Storage::Cuda(cs) = &**storage else { candle_core::bail!("fused CUDA optimiser: a tensor is not on CUDA") };
        let slice = cs.as_cuda_slice::<f32>()?;
        let (ptr, sync) = slice.device_ptr(stream);
        ptrs.push(ptr + (layout.start_offset() * std::mem::size_of::<f32>()) as u64);
        syncs.push(sync);
    }
    let out = f(&ptrs);
    drop(syncs);
    drop(guards);
    out
}

fn cuda_device(device: &Device) -> candle_core::Result<&candle_core::CudaDevice> {
    match device {
        Device::Cuda(d) => Ok(d),
        other => candle_core::bail!("fused CUDA optimiser: expected a CUDA device, got {:?}", other.location()),
    }
}

fn launch_config(chunks: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (chunks.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `func` once for one group of parameters of `sizes` elements: `args` builds the
/// kernel's argument struct from the device pointers of `tensors` and the chunk totals.
fn launch_group<A: DeviceRepr>(
    func: &candle_core::cuda_backend::cudarc::driver::CudaFunction,
    stream: &std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>,
    tensors: &[&Tensor],
    sizes: &[usize],
    args: impl FnOnce(&[u64], &[u64]) -> A,
) -> candle_core::Result<()> {
    let ends = chunk_ends(sizes);
    with_pointers(tensors, stream, |ptrs| {
        let a = args(ptrs, &ends);
        let mut b = stream.launch_builder(func);
        b.arg(&a);
        // SAFETY: `args` fills the kernel's argument struct; every pointer addresses its
        // tensor's elements (checked by the callers: contiguous f32 of the parameter's size on
        // its GPU), whose read lock is held until the launch is queued, and candle orders all
        // work of this device on this one stream.
        unsafe { b.launch(launch_config(*ends.last().unwrap_or(&0))) }.w()?;
        Ok(())
    })
}

fn check_item(var: &Var, others: &[&Tensor]) -> candle_core::Result<()> {
    for t in std::iter::once(var.as_tensor()).chain(others.iter().copied()) {
        if !fits(t) || !t.device().same_device(var.device()) {
            candle_core::bail!("fused CUDA optimiser: every tensor must be contiguous f32 on the parameter's GPU")
        }
        if t.elem_count() != var.elem_count() {
            candle_core::bail!(
                "fused CUDA optimiser: {} elements beside a parameter of {}",
                t.elem_count(),
                var.elem_count()
            )
        }
    }
    Ok(())
}

/// One Adam / AdamW step of every item, [`MAX_TENSORS`] parameters per launch.
pub(crate) fn adam_step(items: &[AdamItem<'_>], k: &AdamConsts) -> candle_core::Result<()> {
    let Some(first) = items.first() else { return Ok(()) };
    let dev = cuda_device(first.var.device())?;
    let func = dev.get_or_load_custom_func("tf_adam_multi", MODULE, FUSED_OPTIM_PTX)?;
    let stream = dev.cuda_stream();
    for group in items.chunks(MAX_TENSORS) {
        let mut tensors = Vec::with_capacity(4 * group.len());
        for it in group {
            check_item(it.var, &[it.grad, it.m, it.v])?;
            tensors.extend([it.var.as_tensor(), it.grad, it.m, it.v]);
        }
        let sizes: Vec<usize> = group.iter().map(|it| it.var.elem_count()).collect();
        launch_group(&func, &stream, &tensors, &sizes, |ptrs, ends| {
            let mut a = AdamArgs {
                p: [0; MAX_TENSORS],
                g: [0; MAX_TENSORS],
                m: [0; MAX_TENSORS],
                v: [0; MAX_TENSORS],
                n: [0; MAX_TENSORS],
                chunk_end: [0; MAX_TENSORS],
                scale_m: [0.0; MAX_TENSORS],
                scale_v: [0.0; MAX_TENSORS],
                count: group.len() as u32,
                beta1: k.beta1,
                one_minus_beta1: k.one_minus_beta1,
                beta2: k.beta2,
                one_minus_beta2: k.one_minus_beta2,
                decay: k.decay,
                l2: k.l2,
                lr: k.lr,
                eps: k.eps,
            };
            for (i, it) in group.iter().enumerate() {
                let q = &ptrs[4 * i..4 * i + 4];
                (a.p[i], a.g[i], a.m[i], a.v[i]) = (q[0], q[1], q[2], q[3]);
                a.n[i] = sizes[i] as u64;
                a.chunk_end[i] = ends[i];
                a.scale_m[i] = it.scale_m;
                a.scale_v[i] = it.scale_v;
            }
            a
        })?;
    }
    Ok(())
}

/// One SGD step of every item, [`MAX_TENSORS`] parameters per launch.
pub(crate) fn sgd_step(items: &[SgdItem<'_>], k: &SgdConsts) -> candle_core::Result<()> {
    let Some(first) = items.first() else { return Ok(()) };
    let dev = cuda_device(first.var.device())?;
    let func = dev.get_or_load_custom_func("tf_sgd_multi", MODULE, FUSED_OPTIM_PTX)?;
    let stream = dev.cuda_stream();
    let momentum = k.momentum != 0.0;
    for group in items.chunks(MAX_TENSORS) {
        let per = if momentum { 3 } else { 2 };
        let mut tensors = Vec::with_capacity(per * group.len());
        for it in group {
            match (momentum, it.buf) {
                (true, Some(b)) => {
                    check_item(it.var, &[it.grad, b])?;
                    tensors.extend([it.var.as_tensor(), it.grad, b]);
                }
                (false, _) => {
                    check_item(it.var, &[it.grad])?;
                    tensors.extend([it.var.as_tensor(), it.grad]);
                }
                (true, None) => candle_core::bail!("fused CUDA optimiser: SGD with momentum needs a buffer"),
            }
        }
        let sizes: Vec<usize> = group.iter().map(|it| it.var.elem_count()).collect();
        launch_group(&func, &stream, &tensors, &sizes, |ptrs, ends| {
            let mut a = SgdArgs {
                p: [0; MAX_TENSORS],
                g: [0; MAX_TENSORS],
                buf: [0; MAX_TENSORS],
                n: [0; MAX_TENSORS],
                chunk_end: [0; MAX_TENSORS],
                count: group.len() as u32,
                lr: k.lr,
                momentum: k.momentum,
                weight_decay: k.weight_decay,
                nesterov: u32::from(k.nesterov),
            };
            for i in 0..group.len() {
                let q = &ptrs[per * i..per * i + per];
                (a.p[i], a.g[i]) = (q[0], q[1]);
                if momentum {
                    a.buf[i] = q[2];
                }
                a.n[i] = sizes[i] as u64;
                a.chunk_end[i] = ends[i];
            }
            a
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_structs_have_the_kernels_layout() {
        // Offsets as nvcc lays out TfAdamArgs / TfSgdArgs (C rules: 8-byte arrays first).
        assert_eq!(std::mem::offset_of!(AdamArgs, scale_m), 6 * 8 * MAX_TENSORS);
        assert_eq!(std::mem::offset_of!(AdamArgs, count), 6 * 8 * MAX_TENSORS + 2 * 4 * MAX_TENSORS);
        assert_eq!(std::mem::offset_of!(AdamArgs, eps), std::mem::offset_of!(AdamArgs, count) + 8 * 4);
        assert_eq!(std::mem::size_of::<AdamArgs>(), 1832);
        assert_eq!(std::mem::offset_of!(SgdArgs, count), 5 * 8 * MAX_TENSORS);
        assert_eq!(std::mem::size_of::<SgdArgs>(), 1304);
        // CUDA's limit for kernel parameters before Volta / CUDA 12.1.
        assert!(std::mem::size_of::<AdamArgs>() <= 4096);
    }

    /// The kernel's walk (`tf_chunk`), replayed on the host: every
    /// element of every tensor is visited exactly once, whatever the grid size.
    #[test]
    fn the_chunk_walk_covers_every_element_once() {
        let sizes = [1usize, 4095, 4096, 4097, 10, 3 * 4096 + 17, 0, 5];
        let ends = chunk_ends(&sizes);
        assert_eq!(ends, vec![1, 2, 3, 5, 6, 10, 10, 11]);
        for grid in [1u64, 3, 64] {
            let mut seen: Vec<Vec<u32>> = sizes.iter().map(|&n| vec![0; n]).collect();
            for block in 0..grid {
                let mut c = block;
                while c < *ends.last().unwrap() {
                    let mut t = 0;
                    while t + 1 < ends.len() && c >= ends[t] {
                        t += 1;
                    }
                    let first = if t == 0 { 0 } else { ends[t - 1] };
                    let begin = (c - first) as usize * CHUNK;
                    let end = (begin + CHUNK).min(sizes[t]);
                    for i in begin..end {
                        seen[t][i] += 1;
                    }
                    c += grid;
                }
            }
            for (t, s) in seen.iter().enumerate() {
                assert!(s.iter().all(|&k| k == 1), "grid {grid}: tensor {t} not covered exactly once");
            }
        }
    }

    #[test]
    fn the_ptx_holds_both_kernels_for_the_pinned_isa() {
        for entry in ["tf_adam_multi", "tf_sgd_multi"] {
            assert!(FUSED_OPTIM_PTX.contains(&format!(".entry {entry}")), "{entry} missing from the PTX");
        }
        // nvcc 13.0 emits ISA 9.0, which driver 580 (CUDA 13.0) accepts.
        assert!(FUSED_OPTIM_PTX.contains(".version 9.0"), "PTX ISA is not 9.0");
        // No fused multiply-add: the CPU's bits need separate roundings.
        assert!(!FUSED_OPTIM_PTX.contains("fma.rn.f32"), "the kernel contracted an FMA");
    }

    #[test]
    fn a_cpu_tensor_is_refused() {
        let var = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let g = var.zeros_like().unwrap();
        let item = SgdItem { var: &var, grad: &g, buf: None };
        let err =
            sgd_step(&[item], &SgdConsts { lr: 0.1, momentum: 0.0, weight_decay: 0.0, nesterov: false }).unwrap_err();
        assert!(err.to_string().contains("expected a CUDA device"), "{err}");
    }
}
