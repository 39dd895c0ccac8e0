//! `tuneforge-model`: candle networks built from a serde spec, whose hidden layers can be
//! widened (function-preserving, Net2WiderNet) or narrowed while training goes on.
//!
//! A [`ModelSpec`] (input shape + layers: linear, conv2d, max-pool, batch norm, dropout,
//! flatten, activations, and for text token embedding, embedding bag (mean/max), conv1d
//! and global max pooling) is plain data: it serialises to JSON, names presets
//! ([`ModelSpec::mlp`], [`ModelSpec::seed_cnn`], [`ModelSpec::preset`] for `mlp:256,128`
//! and `seed-cnn`, [`ModelSpec::text_preset`] for `text-bag:64,64` and `text-cnn:64,128`)
//! and knows its parameter count and FLOPs. Text models take token ids stored as `f32`
//! (`[batch, len]`, 0 = padding); an embedding's vector size is a hidden width like any
//! other. `spec.init(&device)` builds a
//! [`Model`] whose parameters are candle `Var`s named like PyTorch's (`layers.0.weight`).
//!
//! The key decision: a width change is *new spec + new variables + a description of how
//! each old index maps to new ones* ([`ParamChange`]). The model swaps in the new
//! variables itself; the optimiser (a separate crate that does not know this one) receives
//! the same `ParamChange` data to carry its moments over. Widening copies units and splits
//! their outgoing weights (function-preserving with zero noise); narrowing first merges
//! exact duplicates back, then drops the least important units. See [`restructure`].
//!
//! Runs on `Device::Cpu` by default; the `cuda` feature forwards to candle's CUDA backend.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tuneforge_model::{ModelSpec, WidenOptions};
//!
//! let spec = ModelSpec::preset("mlp:16", &[8], 3)?;
//! let mut model = spec.init_seeded(&Device::Cpu, 7)?;
//! let x = Tensor::rand(0f32, 1.0, (4, 8), &Device::Cpu)?;
//! let before = model.forward(&x)?;
//! let changes = model.widen(0, 24, WidenOptions::default())?; // hidden layer 0: 16 → 24
//! let after = model.forward(&x)?;
//! let diff = (before - after)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! assert_eq!(model.spec().hidden_widths(), [24]);
//! assert_eq!(changes.len(), 3); // layer 0 weight and bias, layer 2 weight
//! # Ok::<(), tuneforge_model::Error>(())
//! ```

mod cpu_ops;
mod data_input;
mod dense;
mod error;
mod grad_sink;
mod model;
pub mod restructure;
mod sgemm;
mod spec;
mod text_ops;

pub use crate::error::{Error, Result};
pub use crate::model::{Model, SPEC_METADATA_KEY, argmax, gather_rows, on_pool};
pub use crate::restructure::{ParamChange, WidenOptions};
pub use crate::spec::{Activation, LayerSpec, ModelSpec, Pool};
