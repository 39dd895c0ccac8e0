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
/// Products of fewer rows than this share out the column strips of `C` between the tasks
/// instead of its rows (see `imp::matmul_by_columns`).
const COLUMN_SPLIT_BELOW: usize = 256;
/// Largest block of rows of `C` per task before the rows are split into more tasks than
/// threads.
const MC_MAX: usize = 192;

use std::mem::MaybeUninit;

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

/// What is done to each value of `c` as the product is stored: a bias per column added
/// (`c = a·b + bias`, instead of loading `c`), then max(·, 0).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Epilogue<'a> {
    /// One value per column of `c`.
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

/// `c = a · b`, or `c += a · b` when `accumulate`; `c` is row-major `a.rows × b.cols`.
/// Returns `false` (and leaves `c` alone) when the CPU lacks AVX-512F or the shapes or
/// strides do not fit, so that the caller can take another kernel.
pub(crate) fn matmul(c: &mut [f32], accumulate: bool, a: View<'_>, b: View<'_>, threads: usize) -> bool {
    matmul_then(c.as_mut_ptr(), c.len(), accumulate, a, b, threads, Epilogue::default())
}

/// `c = epilogue(a · b)`: the product, the bias of each column added, then the ReLU, in
/// one pass over `c` (the same `f32` operations as filling `c` with the bias, accumulating
/// the product into it and clamping it afterwards), into values not yet initialised (a new
/// vector's spare capacity). When it returns `true`, every value of `c` has been written;
/// when `false` (as for [`matmul`], when the bias has not one value per column, or when `k`
/// is 0), none has. The product never reads a value of `c` before writing it (it stores its
/// first block of steps without loading `c`), so `c` need not be zero-filled first —
/// megabytes per layer and step.
pub(crate) fn matmul_fused(
    c: &mut [MaybeUninit<f32>],
    a: View<'_>,
    b: View<'_>,
    threads: usize,
    epilogue: Epilogue<'_>,
) -> bool {
    // With k = 0 no tile is stored, so no epilogue would run: the caller's own path does it.
    if a.cols == 0 || epilogue.bias.is_some_and(|bias| bias.len() != b.cols) {
        return false;
    }
    matmul_then(c.as_mut_ptr().cast::<f32>(), c.len(), false, a, b, threads, epilogue)
}

/// `c` is `len` values at `c`, initialised when `accumulate`.
fn matmul_then(
    c: *mut f32,
    len: usize,
    accumulate: bool,
    a: View<'_>,
    b: View<'_>,
    threads: usize,
    epi: Epilogue<'_>,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !available() || b.rows != k || len != m * n || !a.in_bounds() || !b.in_bounds() || m == 0 || n == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512F is present (`available`), the views were checked in bounds, a
        // bias has n values, and `c` is m·n values (initialised when accumulating).
        unsafe { imp::matmul(c, accumulate, a, b, threads.max(1), epi) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (c, accumulate, threads, epi);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    use rayon::prelude::*;

    use super::{COLUMN_SPLIT_BELOW, Epilogue, KC, MC_MAX, MR, NR, NV, View};

    thread_local! {
        /// Packed `B` of the calling thread, and packed `A` of each worker: reused, so a
        /// training step does not map fresh pages for them.
        static B_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static A_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// The product's `c`, shared between rayon's tasks: each task writes only its own tiles.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: the tasks that share an `Out` write disjoint tiles of it (see where it is made).
    unsafe impl Sync for Out {}

    /// See [`super::matmul`]: `c` holds `a.rows · b.cols` values, written by the product
    /// (every one of them) and read back only after that, or first when `accumulate`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `a` and `b` are in bounds; `b.rows == a.cols`; `c` is
    /// `a.rows · b.cols` values, valid for writes, and for reads once written (from the start
    /// when `accumulate`), that no one else touches during the call; neither dimension of `c`
    /// is 0.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul(
        c: *mut f32,
        accumulate: bool,
        a: View<'_>,
        b: View<'_>,
        threads: usize,
        epi: Epilogue<'_>,
    ) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let kb = step_block(k);
        if k == 0 {
            if !accumulate {
                // SAFETY: c is m·n values, valid for writes.
                unsafe { std::ptr::write_bytes(c, 0, m * n) };
            }
            return;
        }
        let strips = n.div_ceil(NR);
        if m < COLUMN_SPLIT_BELOW {
            // SAFETY: as for this function.
            return unsafe { matmul_by_columns(c, accumulate, a, b, threads, epi) };
        }
        with_buffer(&B_PACK, strips * k * NR, |bp| {
            // Strip t holds, for every step p, the NR values b[p, t·NR ..], zero-padded.
            if b.cs == 1 {
                pack_b_rows(bp, b);
            } else {
                bp.par_chunks_mut(k * NR).enumerate().for_each(|(t, dst)| {
                    // SAFETY: AVX-512F (checked by `matmul`'s caller); strip t starts at
                    // column t·NR < n.
                    unsafe { pack_b(dst, b, t * NR) }
                });
            }
            let bp: &[f32] = bp;
            // Row blocks: a multiple of the threads, each about MC_MAX rows at most, the MR
            // strips of `c` shared out evenly (1024 rows are 86 strips: 15 + 14 + 14 + 15 +
            // 14 + 14, where blocks of 15 strips but the last would leave 124 rows to it, and
            // a thread that took three blocks 540 rows to the other's 484).
            let row_strips_all = m.div_ceil(MR);
            let tasks = (threads.max(m.div_ceil(MC_MAX)).div_ceil(threads) * threads).min(row_strips_all);
            // Task `blk` writes only its rows of `c`.
            let out = &Out(c);
            (0..tasks).into_par_iter().for_each(|blk| {
                let (s0, s1) = (blk * row_strips_all / tasks, (blk + 1) * row_strips_all / tasks);
                let (i0, rows) = (s0 * MR, (s1 * MR).min(m) - s0 * MR);
                let c_blk = out.0.wrapping_add(i0 * n);
                let row_strips = rows.div_ceil(MR);
                with_buffer(&A_PACK, row_strips * MR * KC, |ap| {
                    let mut p0 = 0;
                    while p0 < k {
                        let kc = kb.min(k - p0);
                        // SAFETY: AVX-512F; rows i0 .. i0 + rows and steps p0 .. p0 + kc are in `a`.
                        unsafe { pack_a(ap, a, i0, rows, p0, kc) };
                        let load_c = accumulate || p0 > 0;
                        let last = p0 + kc == k;
                        for t in 0..strips {
                            let j0 = t * NR;
                            let cols = NR.min(n - j0);
                            let b_strip = &bp[t * k * NR + p0 * NR..][..kc * NR];
                            let store = Store::new(epi, load_c, last, j0);
                            for s in 0..row_strips {
                                let r0 = s * MR;
                                let a_strip = &ap[s * kc * MR..][..kc * MR];
                                // Next: the following strip of A, or after the last one
                                // the next strip of B (of this block of steps).
                                let store = if s + 1 < row_strips {
                                    store.prefetching(&ap[(s + 1) * kc * MR..][..kc * MR])
                                } else if t + 1 < strips {
                                    store.prefetching(&bp[(t + 1) * k * NR + p0 * NR..][..kc * NR])
                                } else {
                                    store
                                };
                                // SAFETY: AVX-512F (this function's target feature); the
                                // strips hold kc steps; the tile, MR.min(rows − r0) rows of
                                // `cols` values at stride n from row i0 + r0, column j0, lies
                                // in this task's rows of `c`; a bias holds n values, so `cols`
                                // from j0.
                                unsafe {
                                    kernel_raw(
                                        kc,
                                        a_strip,
                                        b_strip,
                                        c_blk.add(r0 * n + j0),
                                        n,
                                        MR.min(rows - r0),
                                        cols,
                                        store,
                                    )
                                };
                            }
                        }
                        p0 += kc;
                    }
                });
            });
        });
    }

    /// [`matmul`] for a short `c` (fewer than [`COLUMN_SPLIT_BELOW`] rows): there, one block
    /// of rows per thread leaves each thread a few strips of `A` against a `B` packed whole
    /// beforehand, and the split is lopsided (128 rows are 72 + 56 in strips of 12). Here `A`
    /// is packed whole — by each task for itself when there are enough column strips, else
    /// once by all threads — and the column strips of `c` are shared out instead: each task
    /// packs its own strips of `B`, [`KC`] steps at a time into an L1-sized buffer, and runs
    /// every strip of `A` past it. Every element of `c` is written by one task only.
    ///
    /// # Safety
    /// As for [`matmul`].
    #[target_feature(enable = "avx512f")]
    unsafe fn matmul_by_columns(
        c: *mut f32,
        accumulate: bool,
        a: View<'_>,
        b: View<'_>,
        threads: usize,
        epi: Epilogue<'_>,
    ) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let kb = step_block(k);
        let strips = n.div_ceil(NR);
        let row_strips = m.div_ceil(MR);
        // Task g writes only the columns of its strips, in every row.
        let out = &Out(c);
        // Strip s of A (its k·MR values of the packed whole: step p, row r at
        // ap[s·k·MR + p·MR + r]).
        let pack_strip_of_a = |s: usize, dst: &mut [f32]| {
            // SAFETY: AVX-512F (checked by `matmul`'s caller); strip s is rows s·MR .. of
            // `a`, all k steps.
            unsafe { pack_a(dst, a, s * MR, MR.min(m - s * MR), 0, k) }
        };
        // Column strips t0 .. t1 of `c`, against `ap` (all of A, packed).
        let strips_of_c = |t0: usize, t1: usize, ap: &[f32]| {
            with_buffer(&B_PACK, KC * NR, |bs| {
                for t in t0..t1 {
                    let j0 = t * NR;
                    let cols = NR.min(n - j0);
                    let mut p0 = 0;
                    while p0 < k {
                        let kc = kb.min(k - p0);
                        // SAFETY: AVX-512F (this function's target feature); j0 < n and
                        // p0 + kc ≤ k.
                        unsafe { pack_b_block(bs, b, j0, p0, kc) };
                        let store = Store::new(epi, accumulate || p0 > 0, p0 + kc == k, j0);
                        for s in 0..row_strips {
                            let r0 = s * MR;
                            let a_strip = &ap[s * k * MR + p0 * MR..][..kc * MR];
                            // SAFETY: AVX-512F (this function's target feature); the strips
                            // hold kc steps; rows r0 .. r0 + MR.min(m − r0) and columns j0 ..
                            // j0 + cols of the m × n `c` are in bounds, and no other task
                            // touches these columns (see `out`).
                            unsafe {
                                kernel_raw(
                                    kc,
                                    a_strip,
                                    &bs[..kc * NR],
                                    out.0.add(r0 * n + j0),
                                    n,
                                    MR.min(m - r0),
                                    cols,
                                    store,
                                )
                            };
                        }
                        p0 += kc;
                    }
                }
            })
        };
        if strips >= 2 * threads {
            // One task per thread, each packing all of A for itself: A is small here (at
            // most 255 rows), and a copy that one core wrote and both then read travels
            // between the cores' caches on every strip. Measured (bench-step, A/B against
            // the shared packing below): mlp:256 inference 1.25× at batch 32, 1.07× at 128;
            // mlp 1024-1024 at 128 1.07× training, 1.11× inference.
            let tasks = threads;
            (0..tasks).into_par_iter().for_each(|g| {
                with_buffer(&A_PACK, row_strips * k * MR, |ap| {
                    ap.chunks_mut(k * MR).enumerate().for_each(|(s, dst)| pack_strip_of_a(s, dst));
                    strips_of_c(g * strips / tasks, (g + 1) * strips / tasks, ap);
                });
            });
            return;
        }
        // Few column strips (seed-cnn's 64-wide layer): A packed once, by all threads, and
        // two tasks per thread (at most one per strip), so that a late thread does not hold
        // up the product.
        with_buffer(&A_PACK, row_strips * k * MR, |ap| {
            ap.par_chunks_mut(k * MR).enumerate().for_each(|(s, dst)| pack_strip_of_a(s, dst));
            let ap: &[f32] = ap;
            let tasks = (2 * threads).min(strips);
            (0..tasks).into_par_iter().for_each(|g| strips_of_c(g * strips / tasks, (g + 1) * strips / tasks, ap));
        });
    }

    /// How a micro-kernel stores its tile: added to what `c` holds (`load_c`), or to the
    /// bias of its columns (`bias`, null for none), then clamped at 0 (`relu`).
    #[derive(Clone, Copy)]
    struct Store {
        load_c: bool,
        bias: *const f32,
        relu: bool,
        /// Values the next call will read (`next_len` of them from `next`), fetched into L1
        /// during this one; null for none.
        next: *const f32,
        next_len: usize,
    }

    impl Store {
        /// The store of a tile at columns `j0 ..` in a block of steps that is not the first
        /// (`load_c`) or is the `last`. The bias, if any, must hold every column of `c`.
        fn new(epi: Epilogue<'_>, load_c: bool, last: bool, j0: usize) -> Store {
            let bias = match epi.bias {
                Some(b) if !load_c => b[j0..].as_ptr(),
                _ => std::ptr::null(),
            };
            Store { load_c, bias, relu: epi.relu && last, next: std::ptr::null(), next_len: 0 }
        }

        /// This store, prefetching `next` during the call.
        fn prefetching(self, next: &[f32]) -> Store {
            Store { next: next.as_ptr(), next_len: next.len(), ..self }
        }
    }

    /// The transpose of a 16 × 16 block held in 16 registers (row i in `r[i]`): returns
    /// column c in element c. Interleaves 32-bit, then 64-bit pairs within 128-bit lanes,
    /// then moves 128-bit lanes twice.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (elements 4L, 4L+1 | 4L+2, 4L+3 of lane L).
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
        });
        // u[4g + e]: element 4L + e of rows 4g .. 4g + 4, in lane L.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, e) = (i / 4, i % 4);
            let (a, b) = (_mm512_castps_pd(t[4 * g + e / 2]), _mm512_castps_pd(t[4 * g + 2 + e / 2]));
            _mm512_castpd_ps(if e % 2 == 0 { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
        });
        let mut out = [_mm512_setzero_ps(); 16];
        for e in 0..4 {
            // Lanes (0, 2) and (1, 3) of row groups 0 + 1 and 2 + 3.
            let v_lo = _mm512_shuffle_f32x4::<0x88>(u[e], u[4 + e]);
            let v_hi = _mm512_shuffle_f32x4::<0xdd>(u[e], u[4 + e]);
            let w_lo = _mm512_shuffle_f32x4::<0x88>(u[8 + e], u[12 + e]);
            let w_hi = _mm512_shuffle_f32x4::<0xdd>(u[8 + e], u[12 + e]);
            out[e] = _mm512_shuffle_f32x4::<0x88>(v_lo, w_lo);
            out[e + 8] = _mm512_shuffle_f32x4::<0xdd>(v_lo, w_lo);
            out[e + 4] = _mm512_shuffle_f32x4::<0x88>(v_hi, w_hi);
            out[e + 12] = _mm512_shuffle_f32x4::<0xdd>(v_hi, w_hi);
        }
        out
    }

    /// Packs columns `j0 .. j0 + NR`, steps `p0 .. p0 + kc` of `b` into `dst` (kc × NR,
    /// zero-padded): step p at `dst[p·NR ..]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `b` is in bounds, `j0 < b.cols`, `p0 + kc ≤ b.rows`.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b_block(dst: &mut [f32], b: View<'_>, j0: usize, p0: usize, kc: usize) {
        let cols = NR.min(b.cols - j0);
        let dst = &mut dst[..kc * NR];
        if cols < NR {
            dst.fill(0.0);
        }
        if b.cs == 1 {
            for (p, row) in dst.chunks_exact_mut(NR).enumerate() {
                row[..cols].copy_from_slice(&b.data[(p0 + p) * b.rs + j0..][..cols]);
            }
        } else if b.rs == 1 {
            // A transposed weight: column j of the block is contiguous in `b`. Whole strips
            // go 16 columns × 16 steps at a time through a register transpose; the rest (a
            // narrow last strip, steps beyond a multiple of 16) one value at a time.
            let whole = if cols == NR { kc / 16 * 16 } else { 0 };
            for q in (0..whole).step_by(16) {
                for half in 0..NV {
                    // SAFETY: AVX-512F (this function's target feature). Columns j0 + 16·half
                    // + j (< j0 + NR ≤ b.cols) hold steps p0 + q .. p0 + q + 16 (≤ k) at
                    // stride 1 from (j0 + 16·half + j)·cs + p0 + q, inside `b.data` (the
                    // view is in bounds); the stores land in `dst`, rows q .. q + 16 < kc.
                    unsafe {
                        let src = b.data.as_ptr().add((j0 + 16 * half) * b.cs + p0 + q);
                        let rows: [__m512; 16] = std::array::from_fn(|j| _mm512_loadu_ps(src.add(j * b.cs)));
                        let steps = transpose16(rows);
                        let out = dst.as_mut_ptr().add(q * NR + 16 * half);
                        for (c, v) in steps.iter().enumerate() {
                            _mm512_storeu_ps(out.add(c * NR), *v);
                        }
                    }
                }
            }
            for j in 0..cols {
                let col = &b.data[(j0 + j) * b.cs + p0 + whole..][..kc - whole];
                for (p, &v) in col.iter().enumerate() {
                    dst[(whole + p) * NR + j] = v;
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..cols {
                    dst[p * NR + j] = b.data[(p0 + p) * b.rs + (j0 + j) * b.cs];
                }
            }
        }
    }

    /// Steps per block: `k` cut into equal blocks of at most [`KC`] (784 = 7 × 112 rather than
    /// 6 × 128 + 16: a short last block pays a tile's load and store for few steps).
    fn step_block(k: usize) -> usize {
        k.div_ceil(k.div_ceil(KC))
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
        // Shared between the tasks: their writes are disjoint (row p of strip t is
        // dst[t·k·NR + p·NR ..][..NR], and each p belongs to one task).
        let out = &Out(dst.as_mut_ptr());
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
    ///
    /// # Safety
    /// The CPU has AVX-512F; `b` is in bounds, `j0 < b.cols`.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b(dst: &mut [f32], b: View<'_>, j0: usize) {
        // KC steps at a time, each block laid out as `pack_b_block` lays it out.
        for p0 in (0..b.rows).step_by(KC) {
            let kc = KC.min(b.rows - p0);
            // SAFETY: as for this function; p0 + kc ≤ b.rows.
            unsafe { pack_b_block(&mut dst[p0 * NR..], b, j0, p0, kc) };
        }
    }

    /// Packs rows `i0 .. i0 + rows`, steps `p0 .. p0 + kc` of `a` into strips of MR rows:
    /// strip s, step p, row r at `dst[(s·kc + p)·MR + r]`, zero-padded.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` is in bounds, `i0 + rows ≤ a.rows`, `p0 + kc ≤ a.cols`.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a(dst: &mut [f32], a: View<'_>, i0: usize, rows: usize, p0: usize, kc: usize) {
        for s in 0..rows.div_ceil(MR) {
            let strip = &mut dst[s * kc * MR..][..kc * MR];
            let live = MR.min(rows - s * MR);
            let base = i0 + s * MR;
            if a.cs == 1 {
                // 16 steps at a time through a register transpose (the strip's live rows and
                // zeros in, 16 steps of MR values out, each stored under an MR-lane mask);
                // the rest one value at a time, onto zeros.
                let whole = kc / 16 * 16;
                if live < MR && whole < kc {
                    strip[whole * MR..].fill(0.0);
                }
                for q in (0..whole).step_by(16) {
                    // SAFETY: AVX-512F (this function's target feature). Rows base + r (r <
                    // live, all < a.rows) hold steps p0 + q .. p0 + q + 16 (≤ a.cols) at
                    // stride 1, inside `a.data` (the view is in bounds); the masked stores
                    // write values (q + c)·MR .. + MR of `strip`, q + c < kc.
                    unsafe {
                        let src = a.data.as_ptr().add(base * a.rs + p0 + q);
                        let rows: [__m512; 16] = std::array::from_fn(|r| {
                            if r < live { _mm512_loadu_ps(src.add(r * a.rs)) } else { _mm512_setzero_ps() }
                        });
                        let steps = transpose16(rows);
                        let out = strip.as_mut_ptr().add(q * MR);
                        for (c, v) in steps.iter().enumerate() {
                            _mm512_mask_storeu_ps(out.add(c * MR), (1 << MR) - 1, *v);
                        }
                    }
                }
                for r in 0..live {
                    let row = &a.data[(base + r) * a.rs + p0 + whole..][..kc - whole];
                    for (p, &v) in row.iter().enumerate() {
                        strip[(whole + p) * MR + r] = v;
                    }
                }
            } else if a.rs == 1 {
                // A transposed (e.g. the gradient in ∂w = gᵀ·x): the strip's rows of one step
                // are contiguous in `a`.
                let mask: __mmask16 = (1 << live) - 1;
                for (p, col) in strip.chunks_exact_mut(MR).enumerate() {
                    let src = &a.data[(p0 + p) * a.cs + base..][..live];
                    // SAFETY: AVX-512F (this function's target feature); the load reads the
                    // `live` values of `src` (masked-off lanes are not read and do not fault)
                    // and the store writes the MR values of `col`, zeros past `live`.
                    unsafe {
                        let v = _mm512_maskz_loadu_ps(mask, src.as_ptr());
                        _mm512_mask_storeu_ps(col.as_mut_ptr(), (1 << MR) - 1, v);
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

    /// GFLOP/s of the micro-kernel alone on one thread, its strips and tile in L1.
    #[cfg(test)]
    pub(super) fn micro_gflops(kc: usize, calls: usize) -> f64 {
        let a = vec![0.5f32; kc * MR];
        let b = vec![0.25f32; kc * NR];
        let mut c = vec![0f32; MR * NR];
        let store = Store { load_c: true, bias: std::ptr::null(), relu: false, next: std::ptr::null(), next_len: 0 };
        let t = std::time::Instant::now();
        for _ in 0..calls {
            // SAFETY: test-only; AVX-512F checked by the caller; sizes as the kernel needs.
            unsafe { kernel_raw(kc, &a, &b, c.as_mut_ptr(), NR, MR, NR, store) };
        }
        std::hint::black_box(&c);
        2.0 * (kc * MR * NR * calls) as f64 / t.elapsed().as_secs_f64() * 1e-9
    }

    /// The 12 × 32 micro-kernel: `tile[r, j] (+)= Σ_p a[p·MR + r] · b[p·NR + j]` for
    /// `r < rows`, `j < cols`, with the tile at `cp`, row stride `ldc`; adds to the tile when
    /// `load_c` (else writes it without reading it). A pointer rather than a slice: tiles of
    /// several tasks interleave in one `c`.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `kc·MR` and `b` `kc·NR` values; `rows ≤ MR`, `cols ≤ NR`; the
    /// `(rows − 1)·ldc + cols` values at `cp` are valid for writes (and reads, initialised,
    /// when `load_c`), and no one else touches them during the call.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_raw(
        kc: usize,
        a: &[f32],
        b: &[f32],
        cp: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        store: Store,
    ) {
        debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR && rows <= MR && cols <= NR);
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        // The tile's rows are read (or written) after the loop: fetched now, they arrive
        // during it rather than stalling the stores.
        for r in 0..rows {
            let row = cp.wrapping_add(r * ldc);
            _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(cols - 1) as *const i8);
        }
        for p in 0..kc {
            // Two lines of what the next call reads per step (a prefetch does not fault).
            if p * 32 < store.next_len {
                let at = store.next.wrapping_add(p * 32);
                _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(16) as *const i8);
            }
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
        // SAFETY: a bias pointer addresses `cols` values (Store::new's contract); masked-off
        // lanes are neither read nor written, and do not fault.
        let bias: [__m512; NV] = std::array::from_fn(|v| {
            if store.bias.is_null() {
                _mm512_setzero_ps()
            } else {
                unsafe { _mm512_maskz_loadu_ps(masks[v], store.bias.wrapping_add(16 * v)) }
            }
        });
        let zero = _mm512_setzero_ps();
        for (r, acc) in acc.iter().enumerate().take(rows) {
            // SAFETY: row r < rows starts at r·ldc; the masks cover only its `cols` values
            // (masked-off lanes are neither read nor written, and do not fault).
            unsafe {
                let row = cp.add(r * ldc);
                for v in 0..NV {
                    let at = row.wrapping_add(16 * v);
                    let mut x = acc[v];
                    if store.load_c {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], at));
                    } else if !store.bias.is_null() {
                        x = _mm512_add_ps(x, bias[v]);
                    }
                    if store.relu {
                        x = _mm512_max_ps(x, zero);
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
        // Below 256 rows the column split (`matmul_by_columns`), from 256 the row split.
        for &(m, k, n) in &[
            (1, 1, 1),
            (12, 128, 32),
            (13, 129, 33),
            (50, 300, 70),
            (200, 77, 5),
            (7, 260, 100),
            (256, 64, 257),
            (301, 130, 40),
        ] {
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

    /// `matmul_fused` writes every value of `c` (here NaN beforehand, as memory not yet
    /// written could hold), with the bias and the ReLU applied, on both splits and edges.
    #[test]
    fn fused_writes_every_value_with_bias_and_relu() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for &(m, k, n) in &[(13, 129, 33), (50, 300, 70), (301, 130, 40), (256, 64, 257)] {
            let av: Vec<f32> = (0..m * k).map(value).collect();
            let bv: Vec<f32> = (0..k * n).map(|i| value(i + 5)).collect();
            let bias: Vec<f32> = (0..n).map(|j| value(j + 11)).collect();
            let a = View { data: &av, rows: m, cols: k, rs: k, cs: 1 };
            let b = View { data: &bv, rows: k, cols: n, rs: 1, cs: k };
            let want = reference(a, b);
            for relu in [false, true] {
                for threads in [1, 2] {
                    let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
                    let epilogue = Epilogue { bias: Some(&bias), relu };
                    assert!(matmul_fused(&mut c, a, b, threads, epilogue));
                    for (i, v) in c.iter().enumerate() {
                        // SAFETY: initialised (NaN) before the call.
                        let got = unsafe { v.assume_init() };
                        let w = want[i] + f64::from(bias[i % n]);
                        let w = if relu { w.max(0.0) } else { w };
                        assert!(
                            (f64::from(got) - w).abs() <= 1e-5 * (k as f64 + 1.0),
                            "{m}×{k}×{n} relu {relu} threads {threads}: c[{i}] = {got}, want {w}"
                        );
                    }
                }
            }
        }
        let v = vec![0f32; 4];
        let one = View { data: &v, rows: 2, cols: 2, rs: 2, cs: 1 };
        let mut c = vec![MaybeUninit::new(0f32); 4];
        let short = Epilogue { bias: Some(&v[..1]), relu: false };
        assert!(!matmul_fused(&mut c, one, one, 1, short), "a bias of 1 value for 2 columns");
    }

    /// A tool, not a test: GFLOP/s of this kernel and of `gemm` on the dense layers' shapes
    /// (forward `x·wᵀ`), to choose `dense::use_avx512`'s thresholds. The figures that the
    /// documentation quotes come from `cargo xtask bench-step`, not from here.
    /// `cargo test -p tuneforge-model --release --lib sgemm::tests::speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a measuring tool: run alone on a quiet machine"]
    fn speed() {
        if !available() {
            return;
        }
        let threads = rayon::current_num_threads();
        // SGEMM_SHAPES="512x1024x1024,128x784x256" picks shapes; SGEMM_FLOP the work per timing;
        // SGEMM_OURS_ONLY=1 times only this kernel on the pool.
        let picked: Option<Vec<(usize, usize, usize)>> = std::env::var("SGEMM_SHAPES").ok().map(|v| {
            v.split(',')
                .map(|s| {
                    let d: Vec<usize> = s.split('x').map(|x| x.parse().unwrap()).collect();
                    (d[0], d[1], d[2])
                })
                .collect()
        });
        let flop: f64 = std::env::var("SGEMM_FLOP").ok().and_then(|v| v.parse().ok()).unwrap_or(1e10);
        let all = [
            (128, 784, 256),
            (128, 784, 1024),
            (128, 1024, 1024),
            (64, 784, 1024),
            (32, 784, 1024),
            (32, 784, 256),
            (128, 5408, 64),
            (512, 5408, 64),
            (64, 128, 5408),
            (64, 512, 5408),
            (64, 32, 5408),
            (128, 784, 128),
            (512, 784, 256),
            (256, 1024, 1024),
            (512, 1024, 1024),
        ];
        for &(m, k, n) in picked.as_deref().unwrap_or(&all) {
            let av: Vec<f32> = (0..m * k).map(value).collect();
            let wv: Vec<f32> = (0..k * n).map(|i| value(i + 3)).collect();
            // SGEMM_LAYOUT: `nt` (default: a row-major, b transposed — the forward pass's
            // x·wᵀ), `tn` (∂w = gᵀ·x), `nn` (∂x = g·w).
            let layout = std::env::var("SGEMM_LAYOUT").unwrap_or_else(|_| "nt".into());
            let a = if layout.starts_with('t') {
                View { data: &av, rows: m, cols: k, rs: 1, cs: m }
            } else {
                View { data: &av, rows: m, cols: k, rs: k, cs: 1 }
            };
            let b = if layout.ends_with('t') {
                View { data: &wv, rows: k, cols: n, rs: 1, cs: k }
            } else {
                View { data: &wv, rows: k, cols: n, rs: n, cs: 1 }
            };
            let mut c = vec![0f32; m * n];
            let reps = (flop / (2.0 * (m * k * n) as f64)) as usize + 1;
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f();
                }
                2.0 * (m * k * n * reps) as f64 / t.elapsed().as_secs_f64() * 1e-9
            };
            // On a pool thread, as the model's passes call it.
            let ours = rayon::scope(|_| time(&mut || assert!(matmul(&mut c, false, a, b, threads))));
            if std::env::var_os("SGEMM_OURS_ONLY").is_some() {
                // Also with operands out of cache, as in a training step: 16 copies of a and
                // b (far more than L2) taken in turn.
                let (avs, bvs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..16).map(|_| (av.clone(), wv.clone())).unzip();
                let mut i = 0;
                let cold = rayon::scope(|_| {
                    time(&mut || {
                        i = (i + 1) % 16;
                        let (a, b) = (View { data: &avs[i], ..a }, View { data: &bvs[i], ..b });
                        assert!(matmul(&mut c, false, a, b, threads))
                    })
                });
                eprintln!("{m:>4}×{k:>4}×{n:>4}: ours {ours:6.1} GFLOP/s, {cold:6.1} with a and b out of cache");
                continue;
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let ours1 = pool.install(|| time(&mut || assert!(matmul(&mut c, false, a, b, 1))));
            eprintln!("{m:>4}×{k:>4}×{n:>4}: ours on 1 thread {ours1:6.1}");
            let theirs = time(&mut || unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    av.as_ptr(),
                    1,
                    k as isize,
                    wv.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            });
            eprintln!("{m:>4}×{k:>4}×{n:>4}: ours {ours:6.1} GFLOP/s, gemm {theirs:6.1}");
        }
    }

    #[test]
    #[ignore = "a measuring tool: run alone on a quiet machine"]
    fn micro_speed() {
        if !available() {
            return;
        }
        for kc in [64, 112, 128, 256, 512] {
            let g = imp::micro_gflops(kc, 20_000_000 / kc);
            let both: Vec<f64> = std::thread::scope(|s| {
                let h: Vec<_> = (0..2).map(|_| s.spawn(move || imp::micro_gflops(kc, 20_000_000 / kc))).collect();
                h.into_iter().map(|h| h.join().unwrap()).collect()
            });
            eprintln!("micro-kernel kc {kc}: {g:6.1} GFLOP/s on one thread, {both:.1?} on two at once");
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
