//! Per-parameter state shared by every optimiser: the variable, its step count and its
//! buffers (moments), keyed by the parameter's name; adding, removing and remapping.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result, StateMismatch};

/// One state buffer of a parameter, shaped like the parameter.
///
/// `Host` when the parameter is a contiguous `f32` CPU variable: the fused kernels update
/// it in place, with no allocation per step. `Tensor` otherwise (other dtypes, CUDA): the
/// tensor-op path replaces it every step.
#[derive(Debug, Clone)]
pub(crate) enum Buf {
    Host(Vec<f32>),
    Tensor(Tensor),
}

/// Whether the fused CPU kernels can update this variable in place.
pub(crate) fn fused_ok(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32 && var.is_contiguous()
}

impl Buf {
    fn zeros_for(var: &Var) -> Result<Self> {
        Ok(if fused_ok(var) { Buf::Host(vec![0.0; var.elem_count()]) } else { Buf::Tensor(var.zeros_like()?.detach()) })
    }

    /// The buffer as a tensor on `var`'s device and dtype (shares a `Tensor` buffer).
    pub fn to_tensor(&self, var: &Var) -> Result<Tensor> {
        Ok(match self {
            Buf::Tensor(t) => t.clone(),
            Buf::Host(v) => Tensor::from_slice(v, var.dims(), var.device())?.to_dtype(var.dtype())?,
        })
    }

    /// The buffer as a CPU tensor of the parameter's shape and dtype (a copy).
    fn to_cpu_tensor(&self, dims: &[usize]) -> Result<Tensor> {
        Ok(match self {
            Buf::Host(v) => Tensor::from_slice(v, dims, &Device::Cpu)?,
            Buf::Tensor(t) => t.to_device(&Device::Cpu)?.copy()?,
        })
    }

    /// A buffer for `var` holding the values of `t` (any device, castable dtype).
    fn from_tensor(t: &Tensor, var: &Var) -> Result<Self> {
        Ok(if fused_ok(var) {
            let flat = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Buf::Host(flat)
        } else {
            let t = t.to_device(var.device())?.to_dtype(var.dtype())?;
            // A fresh storage: a loaded or given tensor is never aliased by the state.
            Buf::Tensor(t.copy()?.detach())
        })
    }

    /// `gather(self, sources, axis) · scale^power` for a buffer of shape `old_dims`,
    /// laid out for `new_var`.
    fn remap(&self, old_dims: &[usize], map: &RemapPlan<'_>, power: i32, new_var: &Var) -> Result<Self> {
        let factors: Vec<f32> = map.scale.iter().map(|&s| if power == 2 { s * s } else { s }).collect();
        match self {
            Buf::Host(old) if fused_ok(new_var) => {
                let outer: usize = old_dims[..map.axis].iter().product();
                let inner: usize = old_dims[map.axis + 1..].iter().product();
                let old_len = old_dims[map.axis];
                let n = map.sources.len();
                let mut new = Vec::with_capacity(outer * n * inner);
                for o in 0..outer {
                    let block = &old[o * old_len * inner..(o + 1) * old_len * inner];
                    if inner == 1 {
                        // Gathering columns (the consumer's input axis): one pass per row.
                        new.extend(map.sources.iter().zip(&factors).map(|(&src, &f)| block[src] * f));
                    } else {
                        for (&src, &f) in map.sources.iter().zip(&factors) {
                            new.extend(block[src * inner..(src + 1) * inner].iter().map(|&x| x * f));
                        }
                    }
                }
                Ok(Buf::Host(new))
            }
            _ => {
                let old = match self {
                    Buf::Host(v) => Tensor::from_slice(v, old_dims, &Device::Cpu)?,
                    Buf::Tensor(t) => t.clone(),
                };
                let device = old.device().clone();
                let sources: Vec<u32> = map.sources.iter().map(|&s| s as u32).collect();
                let idx = Tensor::from_vec(sources, map.sources.len(), &device)?;
                let mut fdims = vec![1usize; old_dims.len()];
                fdims[map.axis] = map.sources.len();
                let f = Tensor::from_vec(factors, fdims, &device)?.to_dtype(old.dtype())?;
                let gathered = old.index_select(&idx, map.axis)?.broadcast_mul(&f)?;
                Buf::from_tensor(&gathered, new_var)
            }
        }
    }
}

/// A validated remap, borrowed from the caller.
pub(crate) struct RemapPlan<'a> {
    pub axis: usize,
    pub sources: &'a [usize],
    pub scale: &'a [f32],
}

/// One parameter: its variable, how many updates it has had, and its buffers (in the
/// order of the owning table's buffer names).
#[derive(Debug)]
pub(crate) struct Param {
    pub var: Var,
    pub step: u64,
    pub bufs: Vec<Buf>,
}

/// Per-parameter state keyed by name. Iteration is in name order, so updates, saved
/// files and error messages are deterministic.
#[derive(Debug)]
pub(crate) struct ParamTable {
    /// Buffer names (PyTorch's: `exp_avg`, `exp_avg_sq`, `momentum_buffer`) and, for
    /// each, the power of the remap scale it is multiplied by.
    buffers: Vec<(&'static str, i32)>,
    pub params: BTreeMap<String, Param>,
}

fn check_float(name: &str, var: &Var) -> Result<()> {
    if var.dtype().is_float() { Ok(()) } else { Err(Error::NotFloat { name: name.to_owned(), dtype: var.dtype() }) }
}

fn describe(var: &Var) -> String {
    format!("{:?} on {:?}", var.dtype(), var.device().location())
}

impl ParamTable {
    pub fn new<I, S>(vars: I, buffers: Vec<(&'static str, i32)>) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Var)>,
        S: Into<String>,
    {
        let mut table = Self { buffers, params: BTreeMap::new() };
        for (name, var) in vars {
            table.add(&name.into(), var)?;
        }
        Ok(table)
    }

    /// The error for a parameter whose buffer count differs from the table's buffer
    /// list; `add`, `remap` and `import` never let that happen.
    pub fn buffer_count_error() -> Error {
        Error::StateMismatch {
            reason: StateMismatch::MissingBuffer { name: String::new(), buffer: "(internal: buffer count)" },
        }
    }

    pub fn buffer_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.buffers.iter().map(|(n, _)| *n)
    }

    pub fn vars(&self) -> Vec<(&str, &Var)> {
        self.params.iter().map(|(n, p)| (n.as_str(), &p.var)).collect()
    }

    pub fn add(&mut self, name: &str, var: Var) -> Result<()> {
        if self.params.contains_key(name) {
            return Err(Error::DuplicateParam { name: name.to_owned() });
        }
        check_float(name, &var)?;
        let bufs = self.buffers.iter().map(|_| Buf::zeros_for(&var)).collect::<Result<_>>()?;
        self.params.insert(name.to_owned(), Param { var, step: 0, bufs });
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Var> {
        self.params.remove(name).map(|p| p.var).ok_or_else(|| Error::UnknownParam { name: name.to_owned() })
    }

    pub fn remap(&mut self, name: &str, new_var: Var, axis: usize, sources: &[usize], scale: &[f32]) -> Result<()> {
        let param = self.params.get(name).ok_or_else(|| Error::UnknownParam { name: name.to_owned() })?;
        let old_dims = param.var.dims().to_vec();
        let new_dims = new_var.dims().to_vec();
        validate_remap(name, &param.var, &new_var, axis, sources, scale)?;
        let plan = RemapPlan { axis, sources, scale };
        let bufs = param
            .bufs
            .iter()
            .zip(&self.buffers)
            .map(|(b, &(_, power))| b.remap(&old_dims, &plan, power, &new_var))
            .collect::<Result<Vec<_>>>()?;
        debug_assert!(bufs.iter().all(|b| match b {
            Buf::Host(v) => v.len() == new_dims.iter().product::<usize>(),
            Buf::Tensor(t) => t.dims() == new_dims.as_slice(),
        }));
        let step = param.step;
        self.params.insert(name.to_owned(), Param { var: new_var, step, bufs });
        Ok(())
    }

    /// The state as plain CPU tensors, buffer name → tensor.
    pub fn export(&self) -> Result<BTreeMap<String, crate::ParamState>> {
        self.params
            .iter()
            .map(|(name, p)| {
                let buffers = p
                    .bufs
                    .iter()
                    .zip(self.buffer_names())
                    .map(|(b, n)| Ok((n.to_owned(), b.to_cpu_tensor(p.var.dims())?)))
                    .collect::<Result<_>>()?;
                Ok((name.clone(), crate::ParamState { step: p.step, buffers }))
            })
            .collect()
    }

    /// Checks that `state` fits these parameters with buffers `buffers`, then replaces
    /// the state. Nothing changes on error.
    pub fn import(
        &mut self,
        state: &BTreeMap<String, crate::ParamState>,
        buffers: Vec<(&'static str, i32)>,
    ) -> Result<()> {
        if let Some(name) = state.keys().find(|n| !self.params.contains_key(*n)) {
            return Err(Error::StateMismatch { reason: StateMismatch::ExtraParam { name: name.clone() } });
        }
        let mut new = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            let s = state
                .get(name)
                .ok_or_else(|| Error::StateMismatch { reason: StateMismatch::MissingParam { name: name.clone() } })?;
            if let Some(extra) = s.buffers.keys().find(|k| !buffers.iter().any(|(n, _)| n == k)) {
                return Err(Error::StateMismatch {
                    reason: StateMismatch::ExtraBuffer { name: name.clone(), buffer: extra.clone() },
                });
            }
            let mut bufs = Vec::with_capacity(buffers.len());
            for &(bname, _) in &buffers {
                let t = s.buffers.get(bname).ok_or_else(|| Error::StateMismatch {
                    reason: StateMismatch::MissingBuffer { name: name.clone(), buffer: bname },
                })?;
                if t.dims() != p.var.dims() {
                    return Err(Error::ShapeMismatch {
                        name: name.clone(),
                        what: bname,
                        expected: p.var.dims().to_vec(),
                        actual: t.dims().to_vec(),
                    });
                }
                bufs.push(Buf::from_tensor(t, &p.var)?);
            }
            new.push((s.step, bufs));
        }
        for (p, (step, bufs)) in self.params.values_mut().zip(new) {
            p.step = step;
            p.bufs = bufs;
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// Checks a remap against the contract in the crate docs, before anything changes.
fn validate_remap(name: &str, old: &Var, new: &Var, axis: usize, sources: &[usize], scale: &[f32]) -> Result<()> {
    let old_dims = old.dims();
    let new_dims = new.dims();
    if axis >= old_dims.len() {
        return Err(Error::AxisOutOfRange { name: name.to_owned(), axis, rank: old_dims.len() });
    }
    if old.dtype() != new.dtype() || !old.device().same_device(new.device()) {
        return Err(Error::VarMismatch { name: name.to_owned(), expected: describe(old), actual: describe(new) });
    }
    let same_elsewhere = new_dims.len() == old_dims.len()
        && old_dims.iter().zip(new_dims).enumerate().all(|(d, (a, b))| d == axis || a == b);
    if !same_elsewhere {
        let mut expected = old_dims.to_vec();
        if let Some(e) = expected.get_mut(axis) {
            *e = new_dims.get(axis).copied().unwrap_or(sources.len());
        }
        return Err(Error::ShapeMismatch {
            name: name.to_owned(),
            what: "new variable",
            expected,
            actual: new_dims.to_vec(),
        });
    }
    let new_len = new_dims[axis];
    for (what, len) in [("sources", sources.len()), ("scale", scale.len())] {
        if len != new_len {
            return Err(Error::RemapLength { name: name.to_owned(), what, expected: new_len, actual: len });
        }
    }
    let old_len = old_dims[axis];
    if let Some((position, &source_index)) = sources.iter().enumerate().find(|(_, s)| **s >= old_len) {
        return Err(Error::SourceOutOfRange { name: name.to_owned(), position, source_index, old_len });
    }
    if let Some((position, &value)) = scale.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::NonFiniteScale { name: name.to_owned(), position, value });
    }
    Ok(())
}
