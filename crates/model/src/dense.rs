//! Dense layers as one op each on the CPU: `relu(x · wᵀ + b)` (or without the ReLU), with a
//! backward pass of its own.
//!
//! Through candle's ops a hidden layer is four graph nodes — `w.t()`, `matmul`,
//! `broadcast_add`, `relu` — and the backward pass allocates and fills tensors for each: the
//! weight gradient goes through the transposed view (a second zeros-then-add accumulation of a
//! weight-sized tensor), the bias gradient through a broadcast's sum, the ReLU's through a
//! comparison, a cast and a product (../shared/bench/CPU-PROFILE.md). [`Dense`] is one node:
//! its forward pass has `gemm` (the kernels candle's own matmul calls) accumulate `x · wᵀ`
//! into a buffer pre-filled with the bias rows, then applies the ReLU in place; its backward
//! pass masks the output gradient once (`g = ∂y ⊙ [y > 0]`), then computes `∂w = gᵀ · x`
//! (contiguous), `∂b = Σ_rows g` and `∂x = g · w` — the last only when `x` tracks a
//! gradient, so the first layer, whose input is the data batch, skips it.
//!
//! The ReLU's derivative at exactly 0 is taken as 0 (PyTorch's convention; candle's is 1): a
//! pre-activation of exactly 0.0 is the only place the two differ.
//!
//! Used by [`Model::forward`](crate::Model::forward) and
//! [`Model::forward_train`](crate::Model::forward_train) for every linear layer whose input
//! is a 2-D `f32` CPU tensor; anything else takes candle's ops.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu_ops::{f32_slice, with_f32};

/// Elements per rayon task of the element-wise passes.
const CHUNK: usize = 1 << 14;

/// A matrix view of `f32` values with row and column strides: the one [`crate::sgemm`] takes.
type Mat<'a> = crate::sgemm::View<'a>;

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix; `data` must hold exactly that many values.
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> candle_core::Result<Mat<'a>> {
        if data.len() != rows * cols {
            candle_core::bail!("dense: {} values for a {rows}×{cols} matrix", data.len());
        }
        Ok(Mat { data, rows, cols, rs: cols, cs: 1 })
    }

    /// The transpose, as a view.
    fn t(self) -> Mat<'a> {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`; `dst` is row-major `a.rows × b.cols`.
fn matmul_into(dst: &mut [f32], accumulate: bool, a: Mat<'_>, b: Mat<'_>) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || dst.len() != m * n {
        candle_core::bail!("dense: cannot multiply {m}×{k} by {}×{n} into {} values", b.rows, dst.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    if use_avx512(m, k, n) && crate::sgemm::matmul(dst, accumulate, a, b, threads) {
        return Ok(());
    }
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: `a` and `b` come from `Mat::row_major` (and `t`), so every element their
    // strides reach, (rows − 1)·rs + (cols − 1)·cs, lies inside their slices; `dst` holds
    // exactly m·n values and is written with row stride n and column stride 1. The three
    // slices are distinct borrows, so they do not overlap.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Whether an `m × k` by `k × n` product goes to our AVX-512 kernel ([`crate::sgemm`]) rather
/// than `gemm`'s AVX2 one: only where it measured faster (docs/benchmarks.md), and never when
/// the environment variable `TUNEFORGE_AVX512` is `off` (for A/B runs of one binary).
fn use_avx512(m: usize, k: usize, n: usize) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("TUNEFORGE_AVX512").is_ok_and(|v| v == "off"));
    // Measured per shape on a 2-core Xeon (AVX-512) against `gemm` 0.19 (the ignored
    // `sgemm::tests::speed` tool, with the register-transposed packing): from 256 rows
    // (split by rows) 1.2–1.4× (512×784×256: 257 against 179 GFLOP/s; 512×5408×64: 201
    // against 164; n < 256 only measured with k this long); below 256 rows (split by
    // columns) 1.1–1.9× from 32 rows (128×784×256: 201 against 122; 32×784×256: 106 against
    // 55; 128×5408×64: 119 against 109; 64×32×5408: 154 against 117). Not measured below
    // n = 64 or m = 32 (the 10-class output layer).
    let wide_enough =
        if m >= 256 { k >= 64 && (n >= 256 || (n >= 64 && k >= 1024)) } else { m >= 32 && n >= 64 && k >= 32 };
    // Below 2²¹ multiply-adds (digits' 32×64×64) the product takes microseconds and our
    // kernel's rayon tasks would cost more than they save: `gemm` runs those on one thread.
    // Measured (default digits job, 60 s, same session): 2,377–2,471 trials before short
    // products came to our kernel, 1,488 with them and no floor, 2,240–2,341 with it.
    !off && wide_enough && m * k * n >= 1 << 21
}

/// `len` zeros, written by rayon's threads in chunks of [`CHUNK`] (a layer's output or
/// gradient is megabytes: one thread's `memset` of it left the other core idle).
fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len).with_min_len(CHUNK));
    v
}

/// `relu(a · b + bias)` (the bias and the ReLU each optional) as a new row-major vector.
/// Our kernel writes every value as it stores the product, the bias added and the ReLU
/// applied on the way, so the vector is not zero-filled first (megabytes per layer and
/// step); on `gemm`'s path it starts as the bias rows (or zeros), the product is added to
/// it and the ReLU is a pass of its own.
fn product(a: Mat<'_>, b: Mat<'_>, bias: Option<&[f32]>, relu: bool) -> candle_core::Result<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let len = m * n;
    if use_avx512(m, k, n) {
        let mut v = Vec::with_capacity(len);
        let epilogue = crate::sgemm::Epilogue { bias, relu };
        let threads = rayon::current_num_threads();
        if crate::sgemm::matmul_fused(&mut v.spare_capacity_mut()[..len], a, b, threads, epilogue) {
            // SAFETY: `matmul_fused` returned true, so it wrote all `len` values.
            unsafe { v.set_len(len) };
            return Ok(v);
        }
    }
    let mut v = match bias {
        Some(bias) if bias.len() == n => bias.repeat(m),
        Some(bias) => candle_core::bail!("dense: a bias of {} values for {n} columns", bias.len()),
        None => zeros(len),
    };
    matmul_into(&mut v, bias.is_some(), a, b)?;
    if relu {
        v.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
    }
    Ok(v)
}

/// Sums of the columns of `g` (rows of `cols` values): blocks of rows summed by rayon's
/// threads, then the blocks' sums added in order — the same result on every run.
fn column_sums(g: &[f32], cols: usize) -> Vec<f32> {
    /// Rows per block.
    const ROWS: usize = 64;
    if cols == 0 {
        return Vec::new();
    }
    let sum_rows = |rows: &[f32]| {
        let mut s = vec![0f32; cols];
        for row in rows.chunks_exact(cols) {
            for (d, v) in s.iter_mut().zip(row) {
                *d += v;
            }
        }
        s
    };
    if g.len() < ROWS * cols * 2 {
        return sum_rows(g);
    }
    let blocks: Vec<Vec<f32>> = g.par_chunks(ROWS * cols).map(sum_rows).collect();
    let mut sums = vec![0f32; cols];
    for block in &blocks {
        for (d, v) in sums.iter_mut().zip(block) {
            *d += v;
        }
    }
    sums
}

/// `x · wᵀ + b` for `x: [n, in]`, `w: [out, in]`, `b: [out]`, then ReLU when `relu`.
pub(crate) struct Dense {
    relu: bool,
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        if self.relu { "dense-relu" } else { "dense" }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(bs, bl)?);
        let (n, i) = xl.shape().dims2()?;
        let (o, wi) = wl.shape().dims2()?;
        if wi != i || bl.shape().dims1()? != o {
            candle_core::bail!(
                "dense: input {:?}, weight {:?} and bias {:?} do not fit",
                xl.shape().dims(),
                wl.shape().dims(),
                bl.shape().dims()
            );
        }
        let (xm, wt) = (Mat::row_major(x, n, i)?, Mat::row_major(w, o, i)?.t());
        let y = product(xm, wt, Some(b), self.relu)?;
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i) = x.dims2()?;
        let o = b.dims1()?;
        // g = ∂y ⊙ [y > 0] (ReLU) or ∂y.
        let g: Vec<f32> = with_f32(grad, |dy| {
            if !self.relu {
                return Ok(dy.to_vec());
            }
            // One pass: 0 where y ≤ 0, else ∂y, collected straight into the new vector (no
            // copy of ∂y to mask afterwards).
            with_f32(res, |y| {
                Ok(dy
                    .par_iter()
                    .zip(y.par_iter())
                    .with_min_len(CHUNK)
                    .map(|(&d, &y)| if y <= 0.0 { 0.0 } else { d })
                    .collect())
            })
        })?;
        let gm = Mat::row_major(&g, n, o)?;
        let dw = with_f32(x, |xv| product(gm.t(), Mat::row_major(xv, n, i)?, None, false))?;
        let db = column_sums(&g, o);
        let dx = if x.track_op() {
            let dx = with_f32(w, |wv| product(gm, Mat::row_major(wv, o, i)?, None, false))?;
            Some(Tensor::from_vec(dx, (n, i), x.device())?)
        } else {
            None
        };
        let dev = w.device();
        let (dw, db) = (Tensor::from_vec(dw, (o, i), dev)?, Tensor::from_vec(db, o, dev)?);
        Ok((dx, crate::grad_sink::route(w, dw), crate::grad_sink::route(b, db)))
    }
}

/// Whether [`dense`] takes `x` (a 2-D `f32` CPU tensor) with `w` and `b` (`f32`, CPU).
pub(crate) fn applies(x: &Tensor, w: &Tensor, b: &Tensor) -> bool {
    x.rank() == 2 && [x, w, b].iter().all(|t| crate::cpu_ops::fast_f32(t))
}

/// `x · wᵀ + b`, then ReLU when `relu`, as one op (see the module docs).
pub(crate) fn dense(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Dense { relu })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::cpu_ops::rel_diff as rel;

    /// Forward and every gradient equal candle's `relu(x · wᵀ + b)` to 1e-5 relative, for
    /// shapes on both sides of the kernels' blocking, with and without the ReLU, with the
    /// input a variable (gradient computed) or data (no gradient).
    #[test]
    fn forward_and_gradients_match_candle() {
        let dev = Device::Cpu;
        // (128, 784, 256) and (300, 130, 257) take our kernel (split by columns, by rows) with
        // the bias and ReLU in its store; the others `gemm`.
        for (n, i, o) in [(1, 1, 1), (3, 5, 7), (32, 64, 48), (128, 784, 256), (300, 130, 257), (17, 300, 1031)] {
            for relu in [false, true] {
                for x_is_var in [false, true] {
                    // Inputs with no pre-activation within 1e-4 of 0: two products that round
                    // differently may put such a value on either side of the ReLU, and one
                    // flipped mask moves ∂w by far more than 1e-5 (seen about once in 600 draws
                    // of the 128 × 784 × 256 case: min |z| ≈ 1e-6, one flip, ∂w off by 1e-4–7e-3).
                    let (xt, w, b) = loop {
                        let xt = Tensor::randn(0f32, 1.0, (n, i), &dev).unwrap();
                        let w = Tensor::randn(0f32, 0.3, (o, i), &dev).unwrap();
                        let b = Tensor::randn(0f32, 0.3, o, &dev).unwrap();
                        let z = xt.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
                        if z.abs().unwrap().min_all().unwrap().to_scalar::<f32>().unwrap() >= 1e-4 {
                            break (xt, w, b);
                        }
                    };
                    let x = Var::from_tensor(&xt).unwrap();
                    let x_in = if x_is_var { x.as_tensor().clone() } else { xt.clone() };
                    let (w, b) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
                    let z = x_in.matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap();
                    let theirs = if relu { z.relu().unwrap() } else { z };
                    let ours = dense(&x_in, w.as_tensor(), b.as_tensor(), relu).unwrap();
                    assert_eq!(ours.dims(), theirs.dims());
                    let what = format!("n {n} in {i} out {o} relu {relu} x var {x_is_var}");
                    assert!(rel(&ours, &theirs) < 1e-5, "{what}: forward {}", rel(&ours, &theirs));
                    // A loss whose gradient differs per element and is not 0 where y is
                    // (so the ReLU's mask matters): Σ c ⊙ (y² + y).
                    let c = Tensor::randn(0f32, 1.0, (n, o), &dev).unwrap();
                    let loss = |y: &Tensor| (y.sqr().unwrap() + y).unwrap().mul(&c).unwrap().sum_all().unwrap();
                    let gt = loss(&theirs).backward().unwrap();
                    let go = loss(&ours).backward().unwrap();
                    for (name, v) in [("w", w.as_tensor()), ("b", b.as_tensor())] {
                        let r = rel(go.get(v).unwrap(), gt.get(v).unwrap());
                        assert!(r < 1e-5, "{what}: ∂{name} {r}");
                    }
                    if x_is_var {
                        let r = rel(go.get(x.as_tensor()).unwrap(), gt.get(x.as_tensor()).unwrap());
                        assert!(r < 1e-5, "{what}: ∂x {r}");
                    } else {
                        assert!(go.get(&xt).is_none(), "{what}: data gets no gradient");
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((5, 2), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap();
        let e = dense(&x, &w, &b, true).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
        let w = Tensor::zeros((5, 3), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert!(dense(&x, &w, &b, false).is_err());
    }
}
