//! The embedding bag on the CPU as one custom op of the embedding table (the token ids are
//! data): the forward pass visits only the non-padding tokens of each text, and the
//! backward pass scatters each text's gradient onto the rows of its tokens.
//!
//! candle's composition (`index_select` of every position, padding included, a mask
//! multiply, a sum, and their three backward passes) materialises `[batch, len, dim]`
//! tensors four times per step; the padded positions are half of them on the SpamAssassin
//! bodies. Checked against that composition in the crate's tests.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_ops::f32_slice;
use crate::spec::Pool;

/// `EmbeddingBag(ids)` as a function of the table `[vocab, dim]`.
pub(crate) struct EmbeddingBagOp {
    /// Token ids, `[batch, len]` row-major; 0 is padding.
    pub ids: Vec<u32>,
    pub batch: usize,
    pub len: usize,
    pub pool: Pool,
}

impl EmbeddingBagOp {
    fn tokens(&self, b: usize) -> impl Iterator<Item = usize> + '_ {
        self.ids[b * self.len..(b + 1) * self.len].iter().filter(|&&t| t != 0).map(|&t| t as usize)
    }

    /// The token whose vector holds the maximum of dimension `d` for text `b` (the first
    /// such position), if the text has tokens.
    fn argmax(&self, table: &[f32], dim: usize, b: usize, d: usize) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for t in self.tokens(b) {
            let v = table[t * dim + d];
            if best.is_none_or(|(_, m)| v > m) {
                best = Some((t, v));
            }
        }
        best.map(|(t, _)| t)
    }
}

impl CustomOp1 for EmbeddingBagOp {
    fn name(&self) -> &'static str {
        "embedding-bag"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let table = f32_slice(storage, layout)?;
        let (_, dim) = layout.shape().dims2()?;
        let mut out = vec![0f32; self.batch * dim];
        out.par_chunks_mut(dim.max(1)).enumerate().for_each(|(b, row)| match self.pool {
            Pool::Mean => {
                let mut n = 0usize;
                for t in self.tokens(b) {
                    n += 1;
                    for (o, &v) in row.iter_mut().zip(&table[t * dim..(t + 1) * dim]) {
                        *o += v;
                    }
                }
                if n > 0 {
                    let inv = 1.0 / n as f32;
                    row.iter_mut().for_each(|o| *o *= inv);
                }
            }
            Pool::Max => {
                let mut any = false;
                row.fill(f32::NEG_INFINITY);
                for t in self.tokens(b) {
                    any = true;
                    for (o, &v) in row.iter_mut().zip(&table[t * dim..(t + 1) * dim]) {
                        *o = o.max(v);
                    }
                }
                if !any {
                    row.fill(0.0);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((self.batch, dim))))
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (vocab, dim) = w.dims2()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut gw = vec![0f32; vocab * dim];
        match self.pool {
            Pool::Mean => {
                for b in 0..self.batch {
                    let n = self.tokens(b).count();
                    if n == 0 {
                        continue;
                    }
                    let inv = 1.0 / n as f32;
                    let gb = &g[b * dim..(b + 1) * dim];
                    for t in self.tokens(b) {
                        for (o, &x) in gw[t * dim..(t + 1) * dim].iter_mut().zip(gb) {
                            *o += x * inv;
                        }
                    }
                }
            }
            Pool::Max => {
                let table = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                for b in 0..self.batch {
                    for d in 0..dim {
                        if let Some(t) = self.argmax(&table, dim, b, d) {
                            gw[t * dim + d] += g[b * dim + d];
                        }
                    }
                }
            }
        }
        Ok(Some(Tensor::from_vec(gw, (vocab, dim), w.device())?))
    }
}
