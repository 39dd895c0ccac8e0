//! `tuneforge-optim`: SGD and Adam(W) whose per-parameter state is remapped when a layer
//! changes width, learning-rate schedules (constant, step, exponential, cosine with
//! warm-up and the article's decay), global-norm gradient clipping, the batch-size
//! learning-rate rule, and checkpoints that resume a run exactly.
//!
//! The tuner changes a network's hidden width while it trains. Throwing the optimiser's
//! state away at every change would restart Adam's moment estimates and momentum, so
//! the optimisers here keep their state **per parameter name** (`"layers.0.weight"`)
//! and take the model's report of how each changed parameter was built from the old
//! one. This crate knows nothing of the model: the two agree on names and on the plain
//! data of a remap (an axis, a list of source indices, a list of scale factors).
//!
//! # Central types
//!
//! - [`Optimizer`]: `step(&GradStore)`, `learning_rate`/`set_learning_rate` (any step),
//!   `remap`, `add_param`, `remove_param`, `state`/`load_state`. Implemented by [`Sgd`]
//!   (momentum, Nesterov, weight decay) and [`Adam`] (Adam with L2 decay, or AdamW with
//!   decoupled decay). [`OptimizerConfig`] is the serde form,
//!   `{"kind": "adamw", "lr": 1e-3, "weight_decay": 0.01}`, and
//!   [`OptimizerConfig::build`] makes a `Box<dyn Optimizer>`.
//! - [`Schedule`] with [`ScheduleConfig`]: the rate for each step; its state is serde data.
//! - [`clip_grad_norm`] (returns the pre-clip norm), [`grad_norm`],
//!   [`scale_lr_for_batch`].
//! - [`Checkpoint`]: optimiser + schedule state to and from a directory.
//! - [`Error`]: every failure as structured data; nothing here panics on user data.
//!
//! # The remap contract
//!
//! When a layer changes width, the model replaces each affected parameter by a new
//! [`Var`](candle_core::Var) and reports, per parameter, the `axis` that changed,
//! `sources` (new index `i` along `axis` was built from old index `sources[i]`; old
//! indices absent from `sources` are removed units) and `scale` (the factor the
//! *weights* at new index `i` got: 1 for copied incoming weights, biases and batch-norm
//! parameters; `1/c` for the outgoing weights of a unit replicated `c` times). The
//! trainer passes that to [`Optimizer::remap`].
//!
//! **Choice: the state follows the weights' copy/divide mapping.** A first moment or
//! momentum buffer becomes `gather(m)·scale`, a second moment `gather(v)·scale²`; the
//! step count is kept. Why:
//!
//! - *Copies get their source's state.* A replicated unit is, at the moment of the
//!   change, the same function of its inputs as its source, so its incoming weights'
//!   gradient history is the source's; and a removed unit's state simply goes.
//! - *Split outgoing weights split their momentum.* A unit replicated `c` times hands
//!   `w/c` to each copy, and the copies together contribute `w·h` to the next layer as
//!   before. Scaling the momentum by `1/c` as well makes the momentum part of the next
//!   SGD updates add up, over the `c` copies, to exactly the source's — the
//!   function-preserving widening is also trajectory-preserving as far as momentum goes.
//! - *`v` scales with the square.* `v` estimates `E[g²]`, so it takes the square of the
//!   factor applied to `m`; this keeps `m² ≤ v`-type consistency and keeps Adam's
//!   ratio `m̂/√v̂` — the update — of each copy equal to its source's (Adam is invariant to
//!   a common scale of `m` and `√v`). The alternative, leaving `v` unscaled, would shrink
//!   the copies' first updates by `c`.
//!
//! A consequence to know: the *fresh* gradient of a split outgoing weight equals the
//! source's (each copy sees the same activation), not `1/c` of it. So after a widening
//! the outgoing weights' `m` returns to the gradients' scale within about `1/(1 − β₁)`
//! steps but `v` only within about `1/(1 − β₂)`, and in between each copy's Adam step
//! can be up to `c` times the source's usual step while its weight is `1/c` of the
//! source's. Training stays finite and keeps improving in the tests. Narrowing drops the
//! removed units' state; where the model merges `c` duplicates back into one unit it
//! reports `scale = c`, and the same rule then adds the duplicates' (equal) first
//! moments back together.
//!
//! # Speed: fused CPU updates
//!
//! candle-nn's optimisers build each update from about ten tensor ops per parameter,
//! each allocating. Here, on the CPU with contiguous `f32` parameters, the state lives in
//! plain `Vec<f32>` and each step is one in-place pass per parameter through candle's
//! [`InplaceOp2`](candle_core::InplaceOp2), in 16k-element chunks over rayon for large
//! parameters. Every element sees the same `f32` operations in the same order as
//! candle-nn's `AdamW`, so the results are bit-identical to it (tested) — except that moments
//! that fall below `f32::MIN_POSITIVE` (1.2e-38, subnormal) are stored as 0, because x86
//! cores run ~100× slower on subnormals (see `kernels.rs`). Other dtypes
//! use the same arithmetic in tensor ops.
//!
//! # CUDA (the `cuda` feature)
//!
//! Contiguous `f32` parameters on a GPU are updated by one fused multi-tensor kernel launch
//! per step (our own CUDA kernel, compiled to PTX at build time; see the `cuda` module), which
//! performs the CPU kernels' operations in the same order, so a GPU step gives the CPU step's
//! bits. `TUNEFORGE_FUSED_OPTIM=off` sends GPU parameters through the tensor-op path instead
//! (for A/B measurements).
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use tuneforge_optim::{clip_grad_norm, OptimizerConfig, Schedule, ScheduleConfig};
//!
//! // y = x·w + b fitted to y = 2x + 1.
//! let dev = Device::Cpu;
//! let w = Var::new(&[[0.0f32]], &dev)?;
//! let b = Var::new(&[0.0f32], &dev)?;
//! let x = Tensor::new(&[[0.0f32], [1.0], [2.0], [3.0]], &dev)?;
//! let y = Tensor::new(&[[1.0f32], [3.0], [5.0], [7.0]], &dev)?;
//!
//! let config: OptimizerConfig = serde_json::from_str(r#"{"kind": "adamw", "lr": 0.1}"#)?;
//! let mut opt = config.build([("w", w.clone()), ("b", b.clone())])?;
//! let mut schedule = Schedule::new(
//!     ScheduleConfig::Cosine { total_steps: 300, warmup_steps: 10, min_lr: 0.0 },
//!     opt.learning_rate(),
//! )?;
//! for _ in 0..300 {
//!     let loss = (x.matmul(&w)?.broadcast_add(&b)? - &y)?.sqr()?.mean_all()?;
//!     let mut grads = loss.backward()?;
//!     let _norm_before = clip_grad_norm(&mut grads, [&w, &b], 10.0)?;
//!     opt.set_learning_rate(schedule.next_lr());
//!     opt.step(&grads)?;
//! }
//! let w = w.as_tensor().flatten_all()?.to_vec1::<f32>()?[0];
//! assert!((w - 2.0).abs() < 0.05, "w = {w}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod adam;
mod checkpoint;
mod clip;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod kernels;
mod optimizer;
mod schedule;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, AdamWConfig};
pub use checkpoint::{Checkpoint, STATE_FILE, TENSORS_FILE};
pub use clip::{BatchScaling, clip_grad_norm, grad_norm, scale_lr_for_batch};
pub use error::{CorruptCheckpoint, Error, Result, StateMismatch};
pub use optimizer::{Optimizer, OptimizerConfig, OptimizerState, ParamState};
pub use schedule::{Schedule, ScheduleConfig, ScheduleState};
pub use sgd::{Sgd, SgdConfig};
