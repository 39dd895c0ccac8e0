//! Fused in-place CPU updates (`f32`): one pass over parameter, gradient and state per
//! step, no allocation, through candle's [`InplaceOp2`] so the variable's own storage is
//! written under its lock. Large parameters are split into chunks over rayon.
//!
//! Each element sees the same `f32` operations, in the same order, as the tensor-op path
//! in `adam.rs`/`sgd.rs` (which mirrors candle-nn's `AdamW`), so both paths give the same
//! bits; the constants are computed in `f64` and rounded to `f32` once, as candle's
//! `affine` does.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, bail};
use rayon::prelude::*;

/// Elements per rayon task; below twice this a parameter is updated on the calling thread.
const CHUNK: usize = 16 * 1024;

/// Adam / AdamW constants for one step, already rounded to `f32`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamConsts {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 / (1 - beta1^t)`.
    pub scale_m: f32,
    /// `1 / (1 - beta2^t)`.
    pub scale_v: f32,
    /// Decoupled decay factor `1 - lr·wd` (AdamW); 1 for Adam.
    pub decay: f32,
    /// L2 coefficient added to the gradient (Adam); 0 for AdamW.
    pub l2: f32,
    pub lr: f32,
    pub eps: f32,
}

/// The Adam / AdamW update of one parameter; the moments are borrowed for the call.
pub(crate) struct AdamKernel<'a> {
    pub m: RefCell<&'a mut [f32]>,
    pub v: RefCell<&'a mut [f32]>,
    pub k: AdamConsts,
}

/// SGD constants for one step, already rounded to `f32`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SgdConsts {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// The SGD update of one parameter; `buf` is empty when momentum is 0.
pub(crate) struct SgdKernel<'a> {
    pub buf: RefCell<&'a mut [f32]>,
    pub k: SgdConsts,
}

/// The contiguous `f32` slices of the variable and its gradient.
fn slices<'s>(
    name: &str,
    s1: &'s mut CpuStorage,
    l1: &Layout,
    s2: &'s CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(&'s mut [f32], &'s [f32])> {
    let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
        bail!("{name}: parameter and gradient must both be f32")
    };
    let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        bail!("{name}: parameter and gradient must be contiguous")
    };
    if p1 - p0 != g1 - g0 {
        bail!("{name}: parameter has {} elements, gradient {}", p1 - p0, g1 - g0)
    }
    Ok((&mut p[p0..p1], &g[g0..g1]))
}

impl InplaceOp2 for AdamKernel<'_> {
    fn name(&self) -> &'static str {
        "tuneforge-adam"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (p, g) = slices(self.name(), s1, l1, s2, l2)?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if m.len() != p.len() || v.len() != p.len() {
            bail!("{}: state has {} elements, parameter {}", self.name(), m.len(), p.len())
        }
        let k = self.k;
        if p.len() < 2 * CHUNK {
            adam_chunk(p, g, &mut m, &mut v, &k);
        } else {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| adam_chunk(p, g, m, v, &k));
        }
        Ok(())
    }
}

/// `x`, or 0 when it is subnormal (|x| < `f32::MIN_POSITIVE`, 1.2e-38).
///
/// A moment whose gradient stays 0 — the weights of a pixel that is blank in every image of
/// a batch — decays geometrically (×β₁ = 0.9 per step) into the subnormal range and stays
/// there for ~150 steps; x86 cores take a micro-code assist of ~100 cycles for every
/// operation on a subnormal, which made this loop 62% of mlp 784-1024-1024-10's training step
/// at batch 32 (perf, 2026-12-05). Flushed, each such moment costs one assist, when it
/// underflows. The values it changes are below 1.2e-38, which no update can feel.
#[inline(always)]
fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

fn adam_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked).
        return unsafe { adam_chunk_avx2(p, g, m, v, k) };
    }
    adam_chunk_any(p, g, m, v, k)
}

#[inline(always)]
fn adam_chunk_any(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
    if k.l2 == 0.0 { adam_loop::<false>(p, g, m, v, k) } else { adam_loop::<true>(p, g, m, v, k) }
}

/// Whether the CPU has AVX2 (checked once). The build targets baseline x86-64 (SSE2); the
/// update loops compiled for AVX2 process 8 values per instruction instead of 4. Results are
/// the same bits: the same IEEE operations in the same order (Rust does not contract
/// `a·b + c` into a fused multiply-add on its own).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// [`adam_chunk`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_chunk_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
    adam_chunk_any(p, g, m, v, k)
}

#[inline(always)]
fn adam_loop<const L2: bool>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if L2 { g + *p * k.l2 } else { g };
        let next_m = flush_subnormal(*m * k.beta1 + g * k.one_minus_beta1);
        let next_v = flush_subnormal(*v * k.beta2 + (g * g) * k.one_minus_beta2);
        let m_hat = next_m * k.scale_m;
        let v_hat = next_v * k.scale_v;
        let adjusted = m_hat / (v_hat.sqrt() + k.eps);
        *p = *p * k.decay - adjusted * k.lr;
        *m = next_m;
        *v = next_v;
    }
}

impl InplaceOp2 for SgdKernel<'_> {
    fn name(&self) -> &'static str {
        "tuneforge-sgd"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (p, g) = slices(self.name(), s1, l1, s2, l2)?;
        let mut buf = self.buf.borrow_mut();
        let k = self.k;
        let with_momentum = k.momentum != 0.0;
        if with_momentum && buf.len() != p.len() {
            bail!("{}: state has {} elements, parameter {}", self.name(), buf.len(), p.len())
        }
        if p.len() < 2 * CHUNK {
            sgd_chunk(p, g, &mut buf, &k);
        } else if with_momentum {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|((p, g), b)| sgd_chunk(p, g, b, &k));
        } else {
            p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(p, g)| sgd_chunk(p, g, &mut [], &k));
        }
        Ok(())
    }
}

fn sgd_chunk(p: &mut [f32], g: &[f32], buf: &mut [f32], k: &SgdConsts) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked).
        return unsafe { sgd_chunk_avx2(p, g, buf, k) };
    }
    sgd_chunk_any(p, g, buf, k)
}

/// [`sgd_chunk`] compiled for AVX2 (see [`avx2`]).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sgd_chunk_avx2(p: &mut [f32], g: &[f32], buf: &mut [f32], k: &SgdConsts) {
    sgd_chunk_any(p, g, buf, k)
}

#[inline(always)]
fn sgd_chunk_any(p: &mut [f32], g: &[f32], buf: &mut [f32], k: &SgdConsts) {
    let wd = k.weight_decay;
    if k.momentum == 0.0 {
        for (p, &g) in p.iter_mut().zip(g) {
            let d = if wd != 0.0 { g + *p * wd } else { g };
            *p -= d * k.lr;
        }
    } else {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
            let d = if wd != 0.0 { g + *p * wd } else { g };
            let next_b = flush_subnormal(*b * k.momentum + d);
            let d = if k.nesterov { d + next_b * k.momentum } else { next_b };
            *p -= d * k.lr;
            *b = next_b;
        }
    }
}
