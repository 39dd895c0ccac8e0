//! Changing the width of a hidden layer while training goes on.
//!
//! **Widen** (Net2WiderNet, Chen, Goodfellow & Shlens 2016). To grow layer `L` from `n` to
//! `n'` units: a mapping `g` keeps `g(j) = j` for `j < n` and picks `g(j)` uniformly among
//! the existing units for each new `j`. Unit `j` of the new layer copies the incoming
//! weights and bias of unit `g(j)`; batch-norm γ, β and running statistics that follow `L`
//! are copied the same way; the next parametric layer's weights *from* each replicated unit
//! (original and copies) are divided by the unit's replication count. With `noise = 0` the
//! network computes the same function (up to float rounding). `noise > 0` adds
//! `N(0, (noise·std(W_L))²)` to the new units' incoming weights to break symmetry.
//! Conv→Conv (channels), Linear→Linear, and Conv→Flatten→Linear (each channel owns a block
//! of `h·w` columns of the linear weight) are supported, through batch norm, activations,
//! pooling and dropout. An embedding's units are its vector dimensions — the *columns* of
//! its `[vocab, dim]` table (no bias) — consumed by a conv1d or, after pooling, a linear
//! layer.
//!
//! **Narrow** removes units. Exact duplicates (identical incoming weights, bias and
//! batch-norm parameters — what widening with `noise = 0` creates) are recognised and a
//! removed duplicate's outgoing weights are *added* to the kept one's, so widening and then
//! narrowing back restores the original function. Otherwise the units of least importance
//! go, importance of unit `j` being `‖in_j‖₂ · ‖out_j‖₂`: `in_j` is the unit's incoming
//! weight vector, or `|γ_j| / √(running_var_j + ε)` when batch norm follows (the scale the
//! unit actually leaves with), and `out_j` the outgoing weights of its duplicate group.
//!
//! Both return the list of [`ParamChange`]s an optimiser needs to carry its state over.

use std::collections::HashMap;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor, Var};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::model::{Layer, Model};
use crate::{Error, Result};

/// How one trainable parameter changed shape.
///
/// Along `axis`, new index `i` took the values of old index `sources[i]` multiplied by
/// `scale[i]`; old indices absent from `sources` were removed. All other axes are
/// unchanged. `var` is the parameter's new variable (the old one is no longer used by the
/// model).
#[derive(Debug, Clone)]
pub struct ParamChange {
    /// Parameter name, as in [`Model::vars`].
    pub name: String,
    /// The new variable.
    pub var: Var,
    /// The axis that changed length.
    pub axis: usize,
    /// Old index feeding each new index along `axis`.
    pub sources: Vec<usize>,
    /// Factor applied to each new index's values along `axis`.
    pub scale: Vec<f32>,
}

/// Options of [`Model::widen`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WidenOptions {
    /// Standard deviation of the symmetry-breaking noise, relative to the std of the
    /// layer's incoming weights (0 = exactly function-preserving).
    pub noise: f32,
    /// Seed of the unit choice and of the noise.
    pub seed: u64,
}

impl Default for WidenOptions {
    fn default() -> Self {
        WidenOptions { noise: 0.0, seed: 0 }
    }
}

/// The layers a width change touches.
struct Plan {
    /// Batch-norm layers between it and the consumer.
    norms: Vec<usize>,
    /// The next parametric layer.
    consumer: usize,
    /// Columns of the consumer per unit (h·w after a flatten, else 1).
    block: usize,
    /// Current width.
    width: usize,
}

impl Model {
    fn plan(&self, layer: usize) -> Result<Plan> {
        let err = |why: String| Error::Resize { layer, why };
        let hidden = self.spec.hidden_layers();
        if !hidden.contains(&layer) {
            return Err(err(format!("not a hidden linear/conv2d layer; hidden layers are {hidden:?}")));
        }
        let width = self.spec.layers[layer].width().expect("hidden layers have widths");
        let shapes = self.spec.shapes()?;
        let mut norms = Vec::new();
        let mut block = 1;
        for i in layer + 1..self.layers.len() {
            match &self.layers[i] {
                Layer::BatchNorm { .. } => norms.push(i),
                Layer::Flatten => {
                    let before = &shapes[i - 1];
                    block = before[1..].iter().product();
                }
                Layer::Linear { .. } | Layer::Conv2d { .. } | Layer::Conv1d { .. } => {
                    if block > 1 && !matches!(self.layers[i], Layer::Linear { .. }) {
                        return Err(err("a convolution after a flatten is not supported".into()));
                    }
                    return Ok(Plan { norms, consumer: i, block, width });
                }
                Layer::Embedding { .. } => return Err(err("an embedding cannot consume a layer's output".into())),
                _ => {}
            }
        }
        Err(err("no layer consumes its output".into()))
    }

    /// Widens hidden layer `layer` (an index into `spec().layers`) to `new_width` units,
    /// preserving the network's function (see the module docs). Returns what changed.
    pub fn widen(&mut self, layer: usize, new_width: usize, options: WidenOptions) -> Result<Vec<ParamChange>> {
        let plan = self.plan(layer)?;
        let n = plan.width;
        if new_width < n {
            return Err(Error::Resize { layer, why: format!("widen to {new_width} < current {n}: use narrow") });
        }
        if new_width == n {
            return Ok(Vec::new());
        }
        let mut rng = StdRng::seed_from_u64(options.seed);
        let g: Vec<usize> = (0..new_width).map(|j| if j < n { j } else { rng.random_range(0..n) }).collect();
        let mut count = vec![0u32; n];
        for &k in &g {
            count[k] += 1;
        }
        let out_scale: Vec<f32> = g.iter().map(|&k| 1.0 / count[k] as f32).collect();
        let ones = vec![1.0f32; new_width];
        let dev = self.device.clone();
        let mut changes = Vec::new();

        // The layer's own weights and bias: copy units (+ noise on the new ones). A unit is
        // a row of a linear or convolution weight, a column of an embedding table.
        let (w, b, axis) = unit_params(&self.layers[layer]);
        let new_w = gather_var(w.as_tensor(), axis, &g, None)?;
        if options.noise > 0.0 {
            let std = w.as_tensor().flatten_all()?.var_keepdim(0)?.sqrt()?.to_vec1::<f32>()?[0];
            let inner: usize = new_w.dims()[axis + 1..].iter().product();
            let draws = crate::model::normal(&mut rng, new_w.elem_count(), options.noise * std);
            let noise: Vec<f32> = draws
                .into_iter()
                .enumerate()
                .map(|(e, x)| if (e / inner) % new_width >= n { x } else { 0.0 })
                .collect();
            let noise = Tensor::from_vec(noise, new_w.shape(), &dev)?;
            new_w.set(&(new_w.as_tensor() + noise)?)?;
        }
        changes.push(change(layer, "weight", new_w, axis, &g, &ones)?);
        if let Some(b) = b {
            changes.push(change(layer, "bias", gather_var(b.as_tensor(), 0, &g, None)?, 0, &g, &ones)?);
        }

        // Batch norms in between: copy per-channel parameters and statistics.
        for &i in &plan.norms {
            if let Layer::BatchNorm { gamma, beta, mean, var, .. } = &mut self.layers[i] {
                let ng = gather_var(gamma.as_tensor(), 0, &g, None)?;
                let nb = gather_var(beta.as_tensor(), 0, &g, None)?;
                *mean = gather_tensor(mean, 0, &g)?;
                *var = gather_tensor(var, 0, &g)?;
                changes.push(change(i, "weight", ng, 0, &g, &ones)?);
                changes.push(change(i, "bias", nb, 0, &g, &ones)?);
            }
        }

        // The consumer: gather input columns/channels and divide by replication counts.
        let (cw, _, _) = unit_params(&self.layers[plan.consumer]);
        let (cols, col_scale) = expand(&g, &out_scale, plan.block);
        let new_cw = gather_var(cw.as_tensor(), 1, &cols, Some(&col_scale))?;
        changes.push(change(plan.consumer, "weight", new_cw, 1, &cols, &col_scale)?);

        self.install(&changes)?;
        self.spec = self.spec.with_width(layer, new_width);
        Ok(changes)
    }

    /// Narrows hidden layer `layer` to `new_width` units: exact duplicates are merged back
    /// first, then the least important units are removed (see the module docs).
    pub fn narrow(&mut self, layer: usize, new_width: usize) -> Result<Vec<ParamChange>> {
        let plan = self.plan(layer)?;
        let n = plan.width;
        if new_width == 0 || new_width > n {
            return Err(Error::Resize { layer, why: format!("narrow to {new_width}: must be in 1..={n}") });
        }
        if new_width == n {
            return Ok(Vec::new());
        }
        let dev = self.device.clone();
        let (w, b, axis) = unit_params(&self.layers[layer]);
        // One row per unit (an embedding table's columns are its units).
        let w_flat = if axis == 0 { w.as_tensor().flatten_all()? } else { w.as_tensor().t()?.flatten_all()? }
            .to_vec1::<f32>()?;
        let per_row = w_flat.len() / n;
        let row = |j: usize| &w_flat[j * per_row..(j + 1) * per_row];
        // Per-unit parameters besides the incoming row (bias, batch-norm γ, β, mean, var)
        // and the scale each unit leaves with.
        let mut extra: Vec<Vec<f32>> = match b {
            Some(b) => b.as_tensor().to_vec1::<f32>()?.iter().map(|&x| vec![x]).collect(),
            None => vec![Vec::new(); n],
        };
        let mut in_norm: Vec<f32> = (0..n).map(|j| row(j).iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
        for &i in &plan.norms {
            if let Layer::BatchNorm { gamma, beta, mean, var, eps, .. } = &self.layers[i] {
                let (g, bt, m, v) = (
                    gamma.as_tensor().to_vec1::<f32>()?,
                    beta.as_tensor().to_vec1::<f32>()?,
                    mean.to_vec1::<f32>()?,
                    var.to_vec1::<f32>()?,
                );
                for j in 0..n {
                    extra[j].extend([g[j], bt[j], m[j], v[j]]);
                    in_norm[j] = g[j].abs() / (v[j] + *eps as f32).sqrt();
                }
            }
        }
        // Duplicate groups: bucket by a hash of the bits, confirm by exact comparison.
        let bits_eq = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let same = |a: usize, b: usize| bits_eq(row(a), row(b)) && bits_eq(&extra[a], &extra[b]);
        let mut group_of = vec![0usize; n];
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for j in 0..n {
            let h = row(j)
                .iter()
                .chain(&extra[j])
                .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x0100_0000_01b3));
            let bucket = buckets.entry(h).or_default();
            let gi = match bucket.iter().find(|&&gi| same(groups[gi][0], j)) {
                Some(&gi) => gi,
                None => {
                    groups.push(Vec::new());
                    bucket.push(groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[gi].push(j);
            group_of[j] = gi;
        }
        // Outgoing blocks of the consumer.
        let (cw, _, _) = unit_params(&self.layers[plan.consumer]);
        let cdims = cw.as_tensor().dims().to_vec();
        let out_rows = cdims[0];
        let inner: usize = cdims[2..].iter().product(); // k·k for a conv consumer, 1 for linear
        let per_unit = plan.block * inner; // values per (output row, unit)
        let in_cols = cdims[1];
        let cvals = cw.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let unit_vals = |j: usize| -> Vec<f32> {
            let mut v = Vec::with_capacity(out_rows * per_unit);
            for r in 0..out_rows {
                let base = r * in_cols * inner + j * per_unit;
                v.extend_from_slice(&cvals[base..base + per_unit]);
            }
            v
        };
        let group_out_norm: Vec<f32> = groups
            .iter()
            .map(|members| {
                let mut sum = vec![0f32; out_rows * per_unit];
                for &j in members {
                    for (s, x) in sum.iter_mut().zip(unit_vals(j)) {
                        *s += x;
                    }
                }
                sum.iter().map(|x| x * x).sum::<f32>().sqrt()
            })
            .collect();
        let score: Vec<f32> = (0..n).map(|j| in_norm[j] * group_out_norm[group_of[j]]).collect();
        // One representative per group, best first; then extra members if room is left.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
        let mut keep = Vec::with_capacity(new_width);
        let mut taken = vec![false; groups.len()];
        for &j in &order {
            if keep.len() < new_width && !taken[group_of[j]] {
                taken[group_of[j]] = true;
                keep.push(j);
            }
        }
        for &j in &order {
            if keep.len() < new_width && !keep.contains(&j) {
                keep.push(j);
            }
        }
        keep.sort_unstable();
        // Removed duplicates hand their outgoing weights to a kept member of their group.
        let mut merged = vec![1u32; n];
        let mut new_cvals = cvals.clone();
        for j in 0..n {
            if keep.contains(&j) {
                continue;
            }
            if let Some(&k) = groups[group_of[j]].iter().find(|m| keep.contains(m)) {
                merged[k] += 1;
                for r in 0..out_rows {
                    let (src, dst) = (r * in_cols * inner + j * per_unit, r * in_cols * inner + k * per_unit);
                    for t in 0..per_unit {
                        new_cvals[dst + t] += cvals[src + t];
                    }
                }
            }
        }

        let ones = vec![1.0f32; new_width];
        let mut changes = Vec::new();
        changes.push(change(layer, "weight", gather_var(w.as_tensor(), axis, &keep, None)?, axis, &keep, &ones)?);
        if let Some(b) = b {
            changes.push(change(layer, "bias", gather_var(b.as_tensor(), 0, &keep, None)?, 0, &keep, &ones)?);
        }
        for &i in &plan.norms {
            if let Layer::BatchNorm { gamma, beta, mean, var, .. } = &mut self.layers[i] {
                let ng = gather_var(gamma.as_tensor(), 0, &keep, None)?;
                let nb = gather_var(beta.as_tensor(), 0, &keep, None)?;
                *mean = gather_tensor(mean, 0, &keep)?;
                *var = gather_tensor(var, 0, &keep)?;
                changes.push(change(i, "weight", ng, 0, &keep, &ones)?);
                changes.push(change(i, "bias", nb, 0, &keep, &ones)?);
            }
        }
        let merged_cw = Tensor::from_vec(new_cvals, cdims, &dev)?;
        let keep_scale: Vec<f32> = keep.iter().map(|&k| merged[k] as f32).collect();
        let (cols, col_scale) = expand(&keep, &keep_scale, plan.block);
        let new_cw = gather_var(&merged_cw, 1, &cols, None)?;
        changes.push(change(plan.consumer, "weight", new_cw, 1, &cols, &col_scale)?);

        self.install(&changes)?;
        self.spec = self.spec.with_width(layer, new_width);
        Ok(changes)
    }

    /// Puts the new variables of `changes` into the layers.
    fn install(&mut self, changes: &[ParamChange]) -> Result<()> {
        for c in changes {
            let mut parts = c.name.split('.');
            let (_, i, which) = (parts.next(), parts.next(), parts.next());
            let i: usize = i.and_then(|s| s.parse().ok()).expect("names are layers.{i}.{weight|bias}");
            match (&mut self.layers[i], which) {
                (
                    Layer::Linear { w, .. }
                    | Layer::Conv2d { w, .. }
                    | Layer::Conv1d { w, .. }
                    | Layer::Embedding { w, .. },
                    Some("weight"),
                ) => *w = c.var.clone(),
                (Layer::Linear { b, .. } | Layer::Conv2d { b, .. } | Layer::Conv1d { b, .. }, Some("bias")) => {
                    *b = c.var.clone()
                }
                (Layer::BatchNorm { gamma, .. }, Some("weight")) => *gamma = c.var.clone(),
                (Layer::BatchNorm { beta, .. }, Some("bias")) => *beta = c.var.clone(),
                _ => unreachable!("change {} does not name a parameter", c.name),
            }
        }
        Ok(())
    }
}

/// A parametric layer's weight, its bias if it has one, and the weight's axis of units.
fn unit_params(layer: &Layer) -> (&Var, Option<&Var>, usize) {
    match layer {
        Layer::Linear { w, b } | Layer::Conv2d { w, b, .. } | Layer::Conv1d { w, b, .. } => (w, Some(b), 0),
        Layer::Embedding { w, .. } => (w, None, 1),
        _ => unreachable!("plan() only returns parametric layers"),
    }
}

fn change(layer: usize, what: &str, var: Var, axis: usize, sources: &[usize], scale: &[f32]) -> Result<ParamChange> {
    Ok(ParamChange {
        name: format!("layers.{layer}.{what}"),
        var,
        axis,
        sources: sources.to_vec(),
        scale: scale.to_vec(),
    })
}

/// `t` gathered along `axis` (new index `i` ← old index `sources[i]`, times `scale[i]`),
/// as a plain vector and its dims — on the CPU with contiguous `f32` data, one pass
/// straight from the storage; `None` elsewhere (use [`gather_on_device`]).
fn gather_vec(t: &Tensor, axis: usize, sources: &[usize], scale: Option<&[f32]>) -> Option<(Vec<f32>, Vec<usize>)> {
    if !(t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()) {
        return None;
    }
    let dims = t.dims().to_vec();
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(all)) = &*storage else { return None };
    let data = &all[layout.start_offset()..layout.start_offset() + t.elem_count()];
    let inner: usize = dims[axis + 1..].iter().product();
    let old_len = dims[axis];
    let mut out = Vec::with_capacity(t.elem_count() / old_len.max(1) * sources.len());
    for block in data.chunks_exact(old_len * inner) {
        for (i, &s) in sources.iter().enumerate() {
            let src = &block[s * inner..(s + 1) * inner];
            match scale.map(|sc| sc[i]) {
                Some(f) if f != 1.0 => out.extend(src.iter().map(|x| x * f)),
                _ => out.extend_from_slice(src),
            }
        }
    }
    let mut new_dims = dims;
    new_dims[axis] = sources.len();
    Some((out, new_dims))
}

/// [`gather_vec`] on any device: `index_select` + `broadcast_mul`.
fn gather_on_device(t: &Tensor, axis: usize, sources: &[usize], scale: Option<&[f32]>) -> Result<Tensor> {
    let g = t.index_select(&index_tensor(sources, t.device())?, axis)?;
    Ok(match scale {
        Some(sc) => {
            let mut sshape = vec![1usize; t.rank()];
            sshape[axis] = sources.len();
            g.broadcast_mul(&Tensor::from_vec(sc.to_vec(), sshape, t.device())?)?
        }
        None => g,
    })
}

/// A new variable holding `t` gathered along `axis` (no extra copy on the CPU).
fn gather_var(t: &Tensor, axis: usize, sources: &[usize], scale: Option<&[f32]>) -> Result<Var> {
    match gather_vec(t, axis, sources, scale) {
        Some((v, dims)) => Ok(Var::from_vec(v, dims, &Device::Cpu)?),
        None => Ok(Var::from_tensor(&gather_on_device(t, axis, sources, scale)?)?),
    }
}

/// A new (non-trainable) tensor holding `t` gathered along `axis`.
fn gather_tensor(t: &Tensor, axis: usize, sources: &[usize]) -> Result<Tensor> {
    match gather_vec(t, axis, sources, None) {
        Some((v, dims)) => Ok(Tensor::from_vec(v, dims, &Device::Cpu)?),
        None => gather_on_device(t, axis, sources, None),
    }
}

fn index_tensor(idx: &[usize], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<u32>>(), idx.len(), dev)?)
}

/// Unit-level sources/scales expanded to the consumer's columns (`block` per unit).
fn expand(units: &[usize], scale: &[f32], block: usize) -> (Vec<usize>, Vec<f32>) {
    let mut cols = Vec::with_capacity(units.len() * block);
    let mut s = Vec::with_capacity(units.len() * block);
    for (&u, &f) in units.iter().zip(scale) {
        for p in 0..block {
            cols.push(u * block + p);
            s.push(f);
        }
    }
    (cols, s)
}
