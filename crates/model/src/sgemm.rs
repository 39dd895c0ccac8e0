//! An AVX-512 single-precision matrix product for the dense layers' larger shapes.
//!
//! The `gemm` crate (what candle's matmul calls) uses its AVX2/FMA kernels unless built with
//! its `x86-v4` feature, and that feature is all or nothing for a build: measured on this
//! project's 2-core Xeon (docs/benchmarks.md, "gemm's AVX-512 kernels"), it made
//! mlp 784-256-10 at batch 512 train 1.68× faster but mlp 784-1024-1024-10 at batch 32
//! 0.84× as fast. This module is a kernel of our own that [`crate::dense`] calls only for the
//! shapes where it wins, keeping `gemm` for the rest.
//!
//! The method is the usual one (Goto and van de Geijn, "Anatomy of high-performance matrix
//! multiplication", 2008): `B` is packed once into column strips of [`NR`] = 32 values (two
//! 512-bit registers) laid out step after step; the rows of `C` are split into one block per
//! rayon task, each task packs its block of `A` [`KC`] steps at a time into strips of [`MR`]
//! = 12 rows, and a 12 × 32 micro-kernel keeps its tile of `C` in 24 registers while it
//! runs down a strip pair, one broadcast and two fused multiply-adds per row and step. Edge
//! tiles are padded with zeros when packing and written back through masked stores. Every
//! task writes only its own rows of `C`.

/// Rows of a micro-tile.
const MR: usize = 12;
/// Registers of 16 lanes per row of a micro-tile.
const NV: usize = 2;
/// Columns of a micro-tile.
const NR: usize = 16 * NV;
/// Steps of the product packed and run at a time: a strip of `B` (KC × NR floats, 16 KiB)
/// stays in L1 while the strips of `A` go by.
const KC: usize = 128;
/// Largest block of rows of `C` per task before the rows are split into more tasks than
/// threads.
const MC_MAX: usize = 192;

/// A strided `rows × cols` view: element `(r, c)` at `data[r * rs + c * cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View<'_> {
    /// Whether every element the strides reach lies in `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1)
                .checked_mul(self.rs)
                .and_then(|a| (self.cols - 1).checked_mul(self.cs).and_then(|b| a.checked_add(b)))
                .is_some_and(|last| last < self.data.len())
    }
}

/// Whether this CPU has the instructions [`matmul`] needs (AVX-512F), checked once.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = a · b`, or `c += a · b` when `accumulate`; `c` is row-major `a.rows × b.cols`.
/// Returns `false` (and leaves `c` alone) when the CPU lacks AVX-512F or the shapes or
/// strides do not fit, so that the caller can take another kernel.
pub(crate) fn matmul(c: &mut [f32], accumulate: bool, a: View<'_>, b: View<'_>, threads: usize) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !available() || b.rows != k || c.len() != m * n || !a.in_bounds() || !b.in_bounds() || m == 0 || n == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512F is present (`available`), and the views were checked in bounds.
        unsafe { imp::matmul(c, accumulate, a, b, threads.max(1)) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (accumulate, threads);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    use rayon::prelude::*;

    use super::{KC, MC_MAX, MR, NR, NV, View};

    thread_local! {
        /// Packed `B` of the calling thread, and packed `A` of each worker: reused, so a
        /// training step does not map fresh pages for them.
        static B_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static A_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// See [`super::matmul`].
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `a` and `b` are in bounds; `b.rows == a.cols`;
    /// `c.len() == a.rows * b.cols`; neither dimension of `c` is 0.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul(c: &mut [f32], accumulate: bool, a: View<'_>, b: View<'_>, threads: usize) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        if k == 0 {
            if !accumulate {
                c.fill(0.0);
            }
            return;
        }
        let strips = n.div_ceil(NR);
        with_buffer(&B_PACK, strips * k * NR, |bp| {
            // Strip t holds, for every step p, the NR values b[p, t·NR ..], zero-padded.
            if b.cs == 1 {
                pack_b_rows(bp, b);
            } else {
                bp.par_chunks_mut(k * NR).enumerate().for_each(|(t, dst)| pack_b(dst, b, t * NR));
            }
            let bp: &[f32] = bp;
            // Row blocks: a multiple of the threads, each at most MC_MAX rows, in whole MR strips.
            let tasks = threads.max(m.div_ceil(MC_MAX)).div_ceil(threads) * threads;
            let mc = m.div_ceil(tasks).div_ceil(MR) * MR;
            c.par_chunks_mut(mc * n).enumerate().for_each(|(blk, c_blk)| {
                let (i0, rows) = (blk * mc, c_blk.len() / n);
                with_buffer(&A_PACK, rows.div_ceil(MR) * MR * KC, |ap| {
                    let mut p0 = 0;
                    while p0 < k {
                        let kc = KC.min(k - p0);
                        pack_a(ap, a, i0, rows, p0, kc);
                        let load_c = accumulate || p0 > 0;
                        for t in 0..strips {
                            let j0 = t * NR;
                            let cols = NR.min(n - j0);
                            let b_strip = &bp[t * k * NR + p0 * NR..][..kc * NR];
                            for s in 0..rows.div_ceil(MR) {
                                let r0 = s * MR;
                                let a_strip = &ap[s * kc * MR..][..kc * MR];
                                let tile = &mut c_blk[r0 * n + j0..];
                                // SAFETY: AVX-512F (this function's target feature); the
                                // strips hold kc steps; the tile has MR.min(rows − r0) rows of
                                // `cols` values at stride n inside `c_blk`.
                                unsafe { kernel(kc, a_strip, b_strip, tile, n, MR.min(rows - r0), cols, load_c) };
                            }
                        }
                        p0 += kc;
                    }
                });
            });
        });
    }

    /// Runs `f` on `len` values of this thread's buffer `key` (grown as needed), or of a
    /// fresh one if the buffer is in use (a rayon thread that, waiting inside one product,
    /// picked up another's task).
    fn with_buffer<R>(
        key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
        len: usize,
        f: impl FnOnce(&mut [f32]) -> R,
    ) -> R {
        // 16 values of slack: the slice starts on a 64-byte boundary, so that no 512-bit
        // load of a packed strip straddles two cache lines (a split load costs two).
        let aligned = |v: &mut Vec<f32>| -> std::ops::Range<usize> {
            let skip = v.as_ptr().align_offset(64).min(15);
            skip..skip + len
        };
        key.with(|cell| match cell.try_borrow_mut() {
            Ok(mut v) => {
                if v.len() < len + 16 {
                    *v = vec![0.0; len + 16];
                }
                let r = aligned(&mut v);
                f(&mut v[r])
            }
            Err(_) => {
                let mut v = vec![0.0; len + 16];
                let r = aligned(&mut v);
                f(&mut v[r])
            }
        })
    }

    /// Packs a row-major `b` (`cs == 1`) into `dst` as [`pack_b`] does for every strip, but
    /// a row at a time: each row of `b` is read once, front to back (strip by strip, the
    /// reads would jump a row's length each time, and the prefetcher cannot follow them
    /// across pages). Rows are split between rayon tasks; every task writes only the
    /// `p·NR ..` slots of its own rows in each strip.
    fn pack_b_rows(dst: &mut [f32], b: View<'_>) {
        /// Rows per task.
        const ROWS: usize = 32;
        let (k, n) = (b.rows, b.cols);
        let strips = n.div_ceil(NR);
        debug_assert!(b.cs == 1 && dst.len() == strips * k * NR);
        // Shared between the tasks as a raw pointer: their writes are disjoint (row p of
        // strip t is dst[t·k·NR + p·NR ..][..NR], and each p belongs to one task).
        struct Out(*mut f32);
        // SAFETY: see above; the pointer outlives the scope (it borrows `dst`).
        unsafe impl Sync for Out {}
        let out = Out(dst.as_mut_ptr());
        let out = &out;
        (0..k.div_ceil(ROWS)).into_par_iter().for_each(|task| {
            for p in task * ROWS..(task * ROWS + ROWS).min(k) {
                let row = &b.data[p * b.rs..][..n];
                for t in 0..strips {
                    let j0 = t * NR;
                    let cols = NR.min(n - j0);
                    // SAFETY: t < strips and p < k, so the NR slots lie in `dst`; no other
                    // task writes row p (see above).
                    let slot = unsafe { std::slice::from_raw_parts_mut(out.0.add(t * k * NR + p * NR), NR) };
                    slot[..cols].copy_from_slice(&row[j0..j0 + cols]);
                    slot[cols..].fill(0.0);
                }
            }
        });
    }

    /// Packs columns `j0 .. j0 + NR` of `b`, every step, into `dst` (k × NR, zero-padded).
    fn pack_b(dst: &mut [f32], b: View<'_>, j0: usize) {
        let cols = NR.min(b.cols - j0);
        let at = |p: usize, j: usize| b.data[p * b.rs + (j0 + j) * b.cs];
        if b.cs == 1 {
            for (p, row) in dst.chunks_exact_mut(NR).enumerate() {
                row[..cols].copy_from_slice(&b.data[p * b.rs + j0..][..cols]);
                row[cols..].fill(0.0);
            }
        } else {
            // Typically a transposed weight (`rs == 1`): column j of the strip is contiguous
            // in `b`. Blocks of STEPS steps keep the part of `dst` being written (STEPS × NR
            // values, 8 KiB) in L1 while the NR columns are read in turn.
            const STEPS: usize = 64;
            for p0 in (0..b.rows).step_by(STEPS) {
                let p1 = (p0 + STEPS).min(b.rows);
                for j in 0..NR {
                    for p in p0..p1 {
                        dst[p * NR + j] = if j < cols { at(p, j) } else { 0.0 };
                    }
                }
            }
        }
    }

    /// Packs rows `i0 .. i0 + rows`, steps `p0 .. p0 + kc` of `a` into strips of MR rows:
    /// strip s, step p, row r at `dst[(s·kc + p)·MR + r]`, zero-padded.
    fn pack_a(dst: &mut [f32], a: View<'_>, i0: usize, rows: usize, p0: usize, kc: usize) {
        for s in 0..rows.div_ceil(MR) {
            let strip = &mut dst[s * kc * MR..][..kc * MR];
            let live = MR.min(rows - s * MR);
            let base = i0 + s * MR;
            if a.cs == 1 {
                if live < MR {
                    strip.fill(0.0);
                }
                for r in 0..live {
                    let row = &a.data[(base + r) * a.rs + p0..][..kc];
                    for (p, &v) in row.iter().enumerate() {
                        strip[p * MR + r] = v;
                    }
                }
            } else {
                for (p, col) in strip.chunks_exact_mut(MR).enumerate() {
                    for (r, v) in col.iter_mut().enumerate() {
                        *v = if r < live { a.data[(base + r) * a.rs + (p0 + p) * a.cs] } else { 0.0 };
                    }
                }
            }
        }
    }

    /// The 12 × 32 micro-kernel: `tile[r, j] (+)= Σ_p a[p·MR + r] · b[p·NR + j]` for
    /// `r < rows`, `j < cols`, with `tile` at row stride `ldc`; adds to the tile when `load_c`.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `kc·MR` and `b` `kc·NR` values; `tile` holds `(rows − 1)·ldc +
    /// cols` values; `rows ≤ MR`, `cols ≤ NR`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        kc: usize,
        a: &[f32],
        b: &[f32],
        tile: &mut [f32],
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    ) {
        debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR && rows <= MR && cols <= NR);
        debug_assert!(rows == 0 || tile.len() >= (rows - 1) * ldc + cols);
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for p in 0..kc {
            // SAFETY: p < kc, so p·NR + NV·16 ≤ kc·NR and p·MR + r < kc·MR.
            unsafe {
                let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(p * NR + 16 * v)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(p * MR + r));
                    for v in 0..NV {
                        acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
                    }
                }
            }
        }
        let masks: [__mmask16; NV] = std::array::from_fn(|v| {
            let live = cols.saturating_sub(16 * v).min(16);
            if live == 16 { 0xFFFF } else { (1u16 << live) - 1 }
        });
        let cp = tile.as_mut_ptr();
        for (r, acc) in acc.iter().enumerate().take(rows) {
            // SAFETY: row r < rows starts at r·ldc; the masks cover only its `cols` values
            // (masked-off lanes are neither read nor written, and do not fault).
            unsafe {
                let row = cp.add(r * ldc);
                for v in 0..NV {
                    let at = row.wrapping_add(16 * v);
                    let mut x = acc[v];
                    if load_c {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], at));
                    }
                    _mm512_mask_storeu_ps(at, masks[v], x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic value in [-1, 1).
    fn value(i: usize) -> f32 {
        ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `a · b` in f64, the reference.
    fn reference(a: View<'_>, b: View<'_>) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| f64::from(a.data[i * a.rs + p * a.cs]) * f64::from(b.data[p * b.rs + j * b.cs]))
                    .sum();
            }
        }
        c
    }

    /// Equal to the f64 reference to 1e-5 relative to the row's sum of |terms|, for every
    /// shape (edges in every dimension, k beyond one KC block), stride order and mode.
    #[test]
    fn equals_a_float64_reference_on_every_edge_and_stride() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for &(m, k, n) in &[(1, 1, 1), (12, 128, 32), (13, 129, 33), (50, 300, 70), (200, 77, 5), (7, 260, 100)] {
            let av: Vec<f32> = (0..m * k).map(value).collect();
            let bv: Vec<f32> = (0..k * n).map(|i| value(i + 7_777)).collect();
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                // Row-major m×k (or k×m transposed), row-major k×n (or n×k transposed).
                let a = if a_t {
                    View { data: &av, rows: m, cols: k, rs: 1, cs: m }
                } else {
                    View { data: &av, rows: m, cols: k, rs: k, cs: 1 }
                };
                let b = if b_t {
                    View { data: &bv, rows: k, cols: n, rs: 1, cs: k }
                } else {
                    View { data: &bv, rows: k, cols: n, rs: n, cs: 1 }
                };
                let want = reference(a, b);
                for accumulate in [false, true] {
                    for threads in [1, 2, 3] {
                        let start: Vec<f32> = (0..m * n).map(|i| value(i + 99)).collect();
                        let mut c = start.clone();
                        assert!(matmul(&mut c, accumulate, a, b, threads));
                        for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                            let w = if accumulate { w + f64::from(start[i]) } else { w };
                            let scale = k as f64 + 1.0;
                            assert!(
                                (f64::from(got) - w).abs() <= 1e-5 * scale,
                                "{m}×{k}×{n} a_t {a_t} b_t {b_t} acc {accumulate} threads {threads}: \
                                 c[{i}] = {got}, want {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_left_to_the_caller() {
        let v = vec![0f32; 12];
        let a = View { data: &v, rows: 3, cols: 4, rs: 4, cs: 1 };
        let b = View { data: &v, rows: 3, cols: 4, rs: 4, cs: 1 };
        let mut c = vec![1f32; 12];
        assert!(!matmul(&mut c, false, a, b, 2), "3×4 by 3×4");
        let short = View { data: &v[..11], ..a };
        let b = View { data: &v, rows: 4, cols: 3, rs: 3, cs: 1 };
        let mut c = vec![1f32; 9];
        assert!(!matmul(&mut c, false, short, b, 2), "a view past its data");
        assert!(c.iter().all(|&x| x == 1.0));
    }
}
