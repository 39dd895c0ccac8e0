//! A built network: parameters as candle `Var`s, forward in train or eval mode, save/load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{D, DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::spec::{Activation, LayerSpec, ModelSpec, Pool};
use crate::{Error, Result};

/// Key of the spec JSON in the safetensors metadata of a saved model.
pub const SPEC_METADATA_KEY: &str = "tuneforge.model_spec";

pub(crate) enum Layer {
    Linear {
        w: Var,
        b: Var,
    },
    Conv2d {
        w: Var,
        b: Var,
        stride: usize,
        padding: usize,
    },
    /// `pool`: `None` for a sequence of vectors (`Embedding`), else an `EmbeddingBag`.
    Embedding {
        w: Var,
        pool: Option<Pool>,
    },
    Conv1d {
        w: Var,
        b: Var,
        stride: usize,
        padding: usize,
    },
    GlobalMaxPool,
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    BatchNorm {
        gamma: Var,
        beta: Var,
        mean: Tensor,
        var: Tensor,
        eps: f64,
        momentum: f64,
    },
    Dropout {
        p: f32,
    },
    Flatten,
    Act(Activation),
}

/// A network built from a [`ModelSpec`] on a candle [`Device`].
///
/// Trainable parameters are candle [`Var`]s named `layers.{i}.weight` and
/// `layers.{i}.bias` (for batch norm: γ is `weight`, β is `bias`, and the running
/// statistics are the buffers `layers.{i}.running_mean` / `running_var`), as PyTorch names
/// them. Initialisation is PyTorch's default (uniform ±1/√fan_in for weights and biases),
/// drawn from a seeded generator so the same seed gives the same network on any device.
pub struct Model {
    pub(crate) spec: ModelSpec,
    pub(crate) device: Device,
    pub(crate) layers: Vec<Layer>,
    pub(crate) rng: StdRng,
    /// Rows of the last `forward_train` batch: whether `backward` is worth a hand-over to
    /// rayon's pool (see [`on_pool`]).
    pub(crate) last_batch: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("spec", &self.spec).field("device", &self.device).finish()
    }
}

pub(crate) fn uniform(rng: &mut StdRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// `count` draws of N(0, std²) (Box–Muller; rand 0.9 has no normal distribution without
/// the rand_distr crate, and two lines do not justify a dependency).
pub(crate) fn normal(rng: &mut StdRng, count: usize, std: f32) -> Vec<f32> {
    (0..count)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

impl ModelSpec {
    /// Builds the network on `device` with seed 0.
    pub fn init(&self, device: &Device) -> Result<Model> {
        self.init_seeded(device, 0)
    }

    /// Builds the network on `device`; `seed` fixes the initial weights and the dropout
    /// masks.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> Result<Model> {
        let shapes = self.shapes()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut inp = self.input.clone();
        for (spec, out) in self.layers.iter().zip(&shapes) {
            let layer = match spec {
                LayerSpec::Linear { width } => {
                    let fan_in = inp[0];
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    let w = Tensor::from_vec(uniform(&mut rng, width * fan_in, bound), (*width, fan_in), device)?;
                    let b = Tensor::from_vec(uniform(&mut rng, *width, bound), *width, device)?;
                    Layer::Linear { w: Var::from_tensor(&w)?, b: Var::from_tensor(&b)? }
                }
                LayerSpec::Conv2d { channels, kernel, stride, padding } => {
                    let fan_in = inp[0] * kernel * kernel;
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    let shape = (*channels, inp[0], *kernel, *kernel);
                    let w = Tensor::from_vec(uniform(&mut rng, channels * fan_in, bound), shape, device)?;
                    let b = Tensor::from_vec(uniform(&mut rng, *channels, bound), *channels, device)?;
                    Layer::Conv2d {
                        w: Var::from_tensor(&w)?,
                        b: Var::from_tensor(&b)?,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                LayerSpec::Embedding { vocab, dim } | LayerSpec::EmbeddingBag { vocab, dim, .. } => {
                    // Uniform ±1/√dim (vectors of norm ≈ 0.58 whatever the dimension), the
                    // padding row zero. Smaller than PyTorch's N(0, 1): a word seen in few
                    // training texts then adds little noise to a text's mean (test macro-F1
                    // of text-bag:64,64 on the SpamAssassin bodies, three seeds: 0.9846 with
                    // N(0, 1), 0.9869 with this).
                    let bound = 1.0 / (*dim as f32).sqrt();
                    let mut values = uniform(&mut rng, vocab * dim, bound);
                    values[..*dim].fill(0.0);
                    let w = Tensor::from_vec(values, (*vocab, *dim), device)?;
                    let pool = match spec {
                        LayerSpec::EmbeddingBag { pool, .. } => Some(*pool),
                        _ => None,
                    };
                    Layer::Embedding { w: Var::from_tensor(&w)?, pool }
                }
                LayerSpec::Conv1d { channels, kernel, stride, padding } => {
                    let fan_in = inp[0] * kernel;
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    let shape = (*channels, inp[0], *kernel);
                    let w = Tensor::from_vec(uniform(&mut rng, channels * fan_in, bound), shape, device)?;
                    let b = Tensor::from_vec(uniform(&mut rng, *channels, bound), *channels, device)?;
                    Layer::Conv1d {
                        w: Var::from_tensor(&w)?,
                        b: Var::from_tensor(&b)?,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                LayerSpec::GlobalMaxPool => Layer::GlobalMaxPool,
                LayerSpec::MaxPool2d { size, stride } => {
                    Layer::MaxPool2d { size: *size, stride: stride.unwrap_or(*size) }
                }
                LayerSpec::BatchNorm { eps, momentum } => {
                    let c = inp[0];
                    Layer::BatchNorm {
                        gamma: Var::ones(c, DType::F32, device)?,
                        beta: Var::zeros(c, DType::F32, device)?,
                        mean: Tensor::zeros(c, DType::F32, device)?,
                        var: Tensor::ones(c, DType::F32, device)?,
                        eps: *eps,
                        momentum: *momentum,
                    }
                }
                LayerSpec::Dropout { p } => Layer::Dropout { p: *p },
                LayerSpec::Flatten => Layer::Flatten,
                LayerSpec::Activation { function } => Layer::Act(*function),
            };
            layers.push(layer);
            inp = out.clone();
        }
        Ok(Model {
            spec: self.clone(),
            device: device.clone(),
            layers,
            rng: StdRng::seed_from_u64(seed ^ 0xD1CE),
            last_batch: 0,
        })
    }
}

/// Runs `f` on a thread of rayon's global pool when `hop` (see [`Model::hands_over`]),
/// else here.
///
/// A pass starts several parallel kernels, and each one started from outside the pool hands
/// its work over and waits for it (waking a sleeping worker each time); from inside, a
/// kernel's tasks start on this thread at once. The model's passes hop by themselves, one
/// hand-over per pass; a loop of passes (an evaluation over many batches, a training step's
/// forward + backward + update) does better to hop once around the whole loop, so that the
/// workers do not fall asleep between passes and wait to be woken for the next. Measured
/// (`cargo test -p tuneforge-model --release --test model infer_speed -- --ignored
/// --nocapture`): mlp 784-256-10 at batch 128, 418k samples/s with a hand-over per pass, 498k
/// with one around the loop.
///
/// While `f` runs, the pool's other workers are kept awake (spinning, taking the pool's work
/// as it comes) instead of going to sleep between two parallel kernels: +7% on that loop,
/// and 1.0–1.2× on `cargo xtask bench-step`'s cells (docs/benchmarks.md). They yield their
/// core to the OS every few rounds; `TUNEFORGE_KEEP_WARM=off` turns the spinning off (a
/// machine shared with other busy processes).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tuneforge_model::{ModelSpec, on_pool};
///
/// let model = ModelSpec::mlp(8, &[16], 4).init(&Device::Cpu)?;
/// let x = Tensor::zeros((1000, 8), candle_core::DType::F32, &Device::Cpu)?;
/// let logits = on_pool(model.hands_over(100), || -> tuneforge_model::Result<Vec<Tensor>> {
///     (0..10).map(|i| model.forward(&x.narrow(0, 100 * i, 100)?)).collect()
/// })?;
/// assert_eq!(logits.len(), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn on_pool<R: Send>(hop: bool, f: impl FnOnce() -> R + Send) -> R {
    if !hop {
        return f();
    }
    if !keep_warm_on() {
        return rayon::scope(|_| f());
    }
    let stop = AtomicBool::new(false);
    rayon::scope(|s| {
        // Set on the way out, a panic in `f` included, so that the spinners end.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(&stop);
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let stop = &stop;
            s.spawn(move |_| keep_warm(stop, owner));
        }
        f()
    })
}

/// Whether [`on_pool`] keeps the pool's workers awake: yes unless the environment variable
/// `TUNEFORGE_KEEP_WARM` is `off` (for a machine shared with other busy processes, where a
/// spinning worker takes time they could use), read once.
fn keep_warm_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TUNEFORGE_KEEP_WARM").map_or(true, |v| v != "off"))
}

/// Keeps this worker of rayon's pool awake until `stop`, taking the pool's work as it comes:
/// left alone, a worker that finds nothing to do for a few dozen rounds goes to sleep, and
/// the next parallel kernel waits for it to be woken (on this project's 2-core VM, most of
/// the time between two small products). OpenMP runtimes (PyTorch's) spin the same way.
/// Returns at once on `owner`, the thread running the work (it must not spin inside its own
/// waits), and yields the core to the OS every few rounds, so other threads still run.
fn keep_warm(stop: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Idle) {
            idle = idle.wrapping_add(1);
            if idle.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Model {
    /// The spec this model currently has (widths follow `widen`/`narrow`).
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Forward pass in evaluation mode (running batch-norm statistics, no dropout).
    /// `x` has shape `[batch, ...spec.input]`; returns logits `[batch, classes]`.
    ///
    /// On the CPU, called from outside rayon's pool, the pass runs on one of the pool's
    /// threads (see [`on_pool`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        on_pool(self.hands_over(x.dims().first().copied().unwrap_or(0)), || self.forward_here(x))
    }

    /// Whether passes over `batch` rows, called from this thread, are worth handing to
    /// rayon's pool ([`on_pool`]): the model is on the CPU, this thread is not one of the
    /// pool's, and parameters × rows ≥ 2²⁰. Below that (digits' mlp:64 at batch 32:
    /// microseconds, its kernels on one thread) the hand-over costs more than it saves.
    pub fn hands_over(&self, batch: usize) -> bool {
        self.device.is_cpu()
            && rayon::current_thread_index().is_none()
            && self.parameter_count().saturating_mul(batch) >= 1 << 20
    }

    fn forward_here(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let (mut h, mut idx) = self.first_block(x)?;
        while idx < self.layers.len() {
            if let Some((y, covered)) = dense_layer(&self.layers[idx..], &h)? {
                (h, idx) = (y, idx + covered);
                continue;
            }
            let layer = &self.layers[idx];
            idx += 1;
            h = match layer {
                Layer::BatchNorm { gamma, beta, mean, var, eps, .. } => {
                    let shape = bn_shape(&h);
                    let scale = (var.affine(1.0, *eps)?.sqrt()?.recip()? * gamma.as_tensor())?;
                    let shift = (beta.as_tensor() - (mean * &scale)?)?;
                    h.broadcast_mul(&scale.reshape(shape.clone())?)?.broadcast_add(&shift.reshape(shape)?)?
                }
                Layer::Dropout { .. } => h,
                other => apply_stateless(other, &h)?,
            };
        }
        Ok(h)
    }

    /// Forward pass in training mode: batch norm uses (and updates the running averages
    /// with) batch statistics; dropout draws masks from the model's seeded generator.
    ///
    /// On the CPU, called from outside rayon's pool, the pass runs on one of the pool's
    /// threads (see [`on_pool`]).
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        self.last_batch = x.dims().first().copied().unwrap_or(0);
        on_pool(self.hands_over(self.last_batch), || self.forward_train_here(x))
    }

    fn forward_train_here(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let (mut h, mut idx) = self.first_block(x)?;
        while idx < self.layers.len() {
            // Linear layers (with the ReLU after them) as one op; it computes no gradient for
            // an input that is data.
            if let Some((y, covered)) = dense_layer(&self.layers[idx..], &h)? {
                (h, idx) = (y, idx + covered);
                continue;
            }
            // Up to the first layer with parameters, `h` is data (it tracks no gradient):
            // that layer's backward needs no gradient for its input.
            let data_input = crate::data_input::applies(&h);
            let layer = &mut self.layers[idx];
            idx += 1;
            h = match layer {
                Layer::Conv2d { w, b, stride, padding } if data_input => {
                    let c = b.dims1()?;
                    crate::data_input::conv2d(&h, w.as_tensor(), *padding, *stride)?
                        .broadcast_add(&b.as_tensor().reshape((1, c, 1, 1))?)?
                }
                Layer::BatchNorm { gamma, beta, mean, var, eps, momentum } => {
                    let shape = bn_shape(&h);
                    let dims: Vec<usize> = if h.rank() == 4 { vec![0, 2, 3] } else { vec![0] };
                    let n = dims.iter().map(|&d| h.dims()[d]).product::<usize>() as f64;
                    let bmean = h.mean_keepdim(dims.clone())?;
                    let centered = h.broadcast_sub(&bmean)?;
                    let bvar = centered.sqr()?.mean_keepdim(dims)?;
                    let normed = centered.broadcast_div(&bvar.affine(1.0, *eps)?.sqrt()?)?;
                    let out = normed
                        .broadcast_mul(&gamma.as_tensor().reshape(shape.clone())?)?
                        .broadcast_add(&beta.as_tensor().reshape(shape)?)?;
                    // Running averages (unbiased variance, as PyTorch), outside the graph.
                    let c = mean.dims1()?;
                    let m = *momentum;
                    let bm = bmean.detach().reshape(c)?;
                    let bv = (bvar.detach().reshape(c)? * (n / (n - 1.0).max(1.0)))?;
                    *mean = ((&*mean * (1.0 - m))? + (bm * m)?)?;
                    *var = ((&*var * (1.0 - m))? + (bv * m)?)?;
                    out
                }
                Layer::Dropout { p } if *p > 0.0 => {
                    let keep = 1.0 - *p;
                    let n = h.elem_count();
                    let mask: Vec<f32> =
                        (0..n).map(|_| if self.rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
                    (&h * Tensor::from_vec(mask, h.shape(), &self.device)?)?
                }
                other => apply_stateless(other, &h)?,
            };
        }
        Ok(h)
    }

    /// The input after the network's first block — fused when it is conv → ReLU → max-pool
    /// on data (see [`fused_block`]) — and the index of the first layer still to apply.
    fn first_block(&self, x: &Tensor) -> Result<(Tensor, usize)> {
        Ok(match fused_block(&self.layers, x)? {
            Some(y) => (y, 3),
            None => (x.clone(), 0),
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.rank() != self.spec.input.len() + 1 || x.dims()[1..] != self.spec.input[..] {
            return Err(Error::InputShape { expected: self.spec.input.clone(), found: x.dims().to_vec() });
        }
        Ok(())
    }

    /// The gradients of `loss` — the store `loss.backward()` returns, value for value, made
    /// faster: the gradients of parameters that this crate's CPU ops compute (dense layers,
    /// the fused first convolution block, convolutions of data) go into the store as they
    /// are, without candle's zeros-then-add for each (a fresh zero tensor and a sum per
    /// parameter and step). Use it in place of `loss.backward()` in a training loop. On the
    /// CPU it runs on rayon's pool as [`Model::forward`] does (sized by the last
    /// `forward_train` batch).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use tuneforge_model::{Model, ModelSpec};
    ///
    /// let model = ModelSpec::preset("mlp:16", &[8], 3)?.init_seeded(&Device::Cpu, 7)?;
    /// let x = Tensor::rand(0f32, 1.0, (4, 8), &Device::Cpu)?;
    /// let y = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu)?;
    /// let loss = Model::loss(&model.forward(&x)?, &y)?;
    /// let grads = model.backward(&loss)?;
    /// for (name, var) in model.vars() {
    ///     assert!(grads.get(var.as_tensor()).is_some(), "{name}");
    /// }
    /// # Ok::<(), tuneforge_model::Error>(())
    /// ```
    pub fn backward(&self, loss: &Tensor) -> Result<candle_core::backprop::GradStore> {
        Ok(on_pool(self.hands_over(self.last_batch), || crate::grad_sink::backward(loss))?)
    }

    /// Mean cross-entropy of `logits` against `labels` (`u32` class indices).
    pub fn loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::loss::cross_entropy(logits, labels)?)
    }

    /// Trainable parameters by name, in layer order.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Linear { w, b } | Layer::Conv2d { w, b, .. } | Layer::Conv1d { w, b, .. } => {
                    out.push((format!("layers.{i}.weight"), w.clone()));
                    out.push((format!("layers.{i}.bias"), b.clone()));
                }
                Layer::Embedding { w, .. } => out.push((format!("layers.{i}.weight"), w.clone())),
                Layer::BatchNorm { gamma, beta, .. } => {
                    out.push((format!("layers.{i}.weight"), gamma.clone()));
                    out.push((format!("layers.{i}.bias"), beta.clone()));
                }
                _ => {}
            }
        }
        out
    }

    /// Every tensor that defines the model: parameters and batch-norm running statistics.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        for (i, layer) in self.layers.iter().enumerate() {
            if let Layer::BatchNorm { mean, var, .. } = layer {
                out.push((format!("layers.{i}.running_mean"), mean.clone()));
                out.push((format!("layers.{i}.running_var"), var.clone()));
            }
        }
        out
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Saves weights and running statistics as safetensors at `path`, with the spec JSON
    /// in the file's metadata (so one file is the whole model) and, for people, beside it
    /// as `path.json`. Each file is written to a temporary name, synced and renamed, so a
    /// crash leaves the previous version or the new one, never a torn file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors(path)?;
        let spec_json = serde_json::to_string_pretty(&self.spec).expect("a spec always serialises");
        write_atomic(path, &bytes)?;
        write_atomic(&spec_path(path), spec_json.as_bytes())?;
        Ok(())
    }

    /// The bytes [`Model::save`] writes (safetensors with the spec in the metadata), e.g. to
    /// keep a checkpoint in a database; `origin` only names the destination in errors.
    pub fn to_safetensors(&self, origin: &Path) -> Result<Vec<u8>> {
        let spec_json = serde_json::to_string_pretty(&self.spec).expect("a spec always serialises");
        let tensors = self.tensors();
        let metadata = HashMap::from([(SPEC_METADATA_KEY.to_string(), spec_json)]);
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| Error::Checkpoint { path: origin.to_path_buf(), name: String::new(), why: e.to_string() })
    }

    /// Loads a model saved by [`Model::save`] onto `device`. The spec comes from the
    /// file's metadata; every tensor must be present with the spec's shape.
    pub fn load(path: &Path, device: &Device) -> Result<Model> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_safetensors(&bytes, path, device)
    }

    /// [`Model::load`] from bytes made by [`Model::to_safetensors`]; `path` names their
    /// origin in errors.
    pub fn from_safetensors(bytes: &[u8], path: &Path, device: &Device) -> Result<Model> {
        let ck = |name: &str, why: String| Error::Checkpoint { path: path.to_path_buf(), name: name.to_string(), why };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| ck("", e.to_string()))?;
        let spec_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(SPEC_METADATA_KEY))
            .ok_or_else(|| ck("", format!("no {SPEC_METADATA_KEY} metadata: not a tuneforge model")))?;
        let spec: ModelSpec =
            serde_json::from_str(spec_json).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        // Every tensor the spec needs must be in the file, with its shape, before anything is
        // allocated: the spec alone can announce any size (a 1 KB file whose spec has a
        // 100000 × 100000 layer made `init` allocate 40 GB). The file's tensors are as large
        // as the file, so `init` below is too.
        for (name, shape) in spec.tensor_shapes()? {
            let info = meta.info(&name).ok_or_else(|| ck(&name, "missing".into()))?;
            if info.shape != shape || info.dtype != safetensors::Dtype::F32 {
                return Err(ck(&name, format!("{:?} {:?}, spec needs F32 {shape:?}", info.dtype, info.shape)));
            }
        }
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        let mut model = spec.init(device)?;
        let mut take = |name: String, like: &Tensor| -> Result<Tensor> {
            let t = tensors.remove(&name).ok_or_else(|| ck(&name, "missing".into()))?;
            if t.dims() != like.dims() || t.dtype() != like.dtype() {
                return Err(ck(
                    &name,
                    format!("{:?} {:?}, spec needs {:?} {:?}", t.dtype(), t.dims(), like.dtype(), like.dims()),
                ));
            }
            Ok(t)
        };
        for (i, layer) in model.layers.iter_mut().enumerate() {
            match layer {
                Layer::Linear { w, b } | Layer::Conv2d { w, b, .. } | Layer::Conv1d { w, b, .. } => {
                    w.set(&take(format!("layers.{i}.weight"), w.as_tensor())?)?;
                    b.set(&take(format!("layers.{i}.bias"), b.as_tensor())?)?;
                }
                Layer::Embedding { w, .. } => w.set(&take(format!("layers.{i}.weight"), w.as_tensor())?)?,
                Layer::BatchNorm { gamma, beta, mean, var, .. } => {
                    gamma.set(&take(format!("layers.{i}.weight"), gamma.as_tensor())?)?;
                    beta.set(&take(format!("layers.{i}.bias"), beta.as_tensor())?)?;
                    *mean = take(format!("layers.{i}.running_mean"), mean)?;
                    *var = take(format!("layers.{i}.running_var"), var)?;
                }
                _ => {}
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(ck(extra, "not part of the spec".into()));
        }
        Ok(model)
    }

    /// A deep copy of the model on `device` (e.g. a CUDA model onto the CPU). The copy
    /// shares no storage with `self`: training one does not change the other.
    pub fn to_device(&self, device: &Device) -> Result<Model> {
        let mut layers = Vec::with_capacity(self.layers.len());
        let mv = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().to_device(device)?.copy()?)?) };
        for layer in &self.layers {
            layers.push(match layer {
                Layer::Linear { w, b } => Layer::Linear { w: mv(w)?, b: mv(b)? },
                Layer::Conv2d { w, b, stride, padding } => {
                    Layer::Conv2d { w: mv(w)?, b: mv(b)?, stride: *stride, padding: *padding }
                }
                Layer::BatchNorm { gamma, beta, mean, var, eps, momentum } => Layer::BatchNorm {
                    gamma: mv(gamma)?,
                    beta: mv(beta)?,
                    mean: mean.to_device(device)?,
                    var: var.to_device(device)?,
                    eps: *eps,
                    momentum: *momentum,
                },
                Layer::Conv1d { w, b, stride, padding } => {
                    Layer::Conv1d { w: mv(w)?, b: mv(b)?, stride: *stride, padding: *padding }
                }
                Layer::Embedding { w, pool } => Layer::Embedding { w: mv(w)?, pool: *pool },
                Layer::GlobalMaxPool => Layer::GlobalMaxPool,
                Layer::MaxPool2d { size, stride } => Layer::MaxPool2d { size: *size, stride: *stride },
                Layer::Dropout { p } => Layer::Dropout { p: *p },
                Layer::Flatten => Layer::Flatten,
                Layer::Act(a) => Layer::Act(*a),
            });
        }
        Ok(Model {
            spec: self.spec.clone(),
            device: device.clone(),
            layers,
            rng: self.rng.clone(),
            last_batch: self.last_batch,
        })
    }
}

/// The first of `layers` as one [`crate::dense`] op when it is a linear layer and `h` a 2-D
/// `f32` CPU tensor, with the ReLU after it fused in: the output and the number of layers
/// it covered.
fn dense_layer(layers: &[Layer], h: &Tensor) -> Result<Option<(Tensor, usize)>> {
    let Some(Layer::Linear { w, b }) = layers.first() else {
        return Ok(None);
    };
    if !crate::dense::applies(h, w.as_tensor(), b.as_tensor()) {
        return Ok(None);
    }
    let relu = matches!(layers.get(1), Some(Layer::Act(Activation::Relu)));
    Ok(Some((crate::dense::dense(h, w.as_tensor(), b.as_tensor(), relu)?, 1 + usize::from(relu))))
}

/// `maxpool(relu(conv(h)))` as one op when `layers` starts with that block, `h` is data
/// (tracks no gradient) and an `f32` CPU tensor: see `cpu_ops::ConvBiasReluPool`.
fn fused_block(layers: &[Layer], h: &Tensor) -> Result<Option<Tensor>> {
    let [
        Layer::Conv2d { w, b, stride, padding },
        Layer::Act(Activation::Relu),
        Layer::MaxPool2d { size, stride: ps },
        ..,
    ] = layers
    else {
        return Ok(None);
    };
    if !crate::data_input::applies(h) || !crate::cpu_ops::fast_f32(h) || h.rank() != 4 {
        return Ok(None);
    }
    let (bn, cin, hh, ww) = h.dims4()?;
    let (cout, kin, k, k2) = w.as_tensor().dims4()?;
    if kin != cin || k != k2 || hh + 2 * padding < k || ww + 2 * padding < k {
        return Ok(None); // candle's ops give the error
    }
    let conv = crate::cpu_ops::Conv { b: bn, cin, h: hh, w: ww, cout, k, padding: *padding, stride: *stride };
    let (oh, ow) = conv.out();
    if oh < *size || ow < *size {
        return Ok(None);
    }
    let op = crate::cpu_ops::ConvBiasReluPool::new(h.contiguous()?, conv, *size, *ps);
    Ok(Some(w.as_tensor().contiguous()?.apply_op2(&b.as_tensor().contiguous()?, op)?))
}

fn bn_shape(h: &Tensor) -> Vec<usize> {
    let c = h.dims()[1];
    if h.rank() == 4 { vec![1, c, 1, 1] } else { vec![1, c] }
}

fn apply_stateless(layer: &Layer, h: &Tensor) -> Result<Tensor> {
    Ok(match layer {
        Layer::Linear { w, b } => h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?,
        Layer::Conv2d { w, b, stride, padding } => {
            let c = b.dims1()?;
            // Data in (the first layer, or evaluation): our direct kernel, as in training.
            let y = if crate::data_input::applies(h) && crate::cpu_ops::fast_f32(h) {
                crate::data_input::conv2d(h, w.as_tensor(), *padding, *stride)?
            } else {
                h.conv2d(w.as_tensor(), *padding, *stride, 1, 1)?
            };
            y.broadcast_add(&b.as_tensor().reshape((1, c, 1, 1))?)?
        }
        Layer::Embedding { w, pool } => embed(w.as_tensor(), h, *pool)?,
        Layer::Conv1d { w, b, stride, padding } => {
            let c = b.dims1()?;
            h.conv1d(w.as_tensor(), *padding, *stride, 1, 1)?.broadcast_add(&b.as_tensor().reshape((1, c, 1))?)?
        }
        Layer::GlobalMaxPool => h.flatten_from(2)?.max(2)?,
        Layer::MaxPool2d { size, stride } if crate::cpu_ops::fast_f32(h) => {
            crate::cpu_ops::max_pool2d(h, *size, *stride)?
        }
        Layer::MaxPool2d { size, stride } => h.max_pool2d_with_stride(*size, *stride)?,
        Layer::Flatten => h.flatten_from(1)?,
        Layer::Act(Activation::Relu) => h.relu()?,
        Layer::Act(Activation::Gelu) => h.gelu()?,
        Layer::Act(Activation::Tanh) => h.tanh()?,
        Layer::Dropout { .. } | Layer::BatchNorm { .. } => h.clone(),
    })
}

/// Token ids `x` (`[batch, len]`, whole numbers stored as `f32`) through embedding table
/// `w` (`[vocab, dim]`): `[batch, dim, len]` for a sequence, `[batch, dim]` pooled over
/// the non-padding tokens (id 0 is padding) for a bag (one custom op on the CPU, see
/// `text_ops`; candle's ops elsewhere).
fn embed(w: &Tensor, x: &Tensor, pool: Option<Pool>) -> Result<Tensor> {
    embed_with(w, x, pool, crate::cpu_ops::fast_f32(w))
}

/// [`embed`], with the custom op (`fast`) or with candle's ops.
fn embed_with(w: &Tensor, x: &Tensor, pool: Option<Pool>, fast: bool) -> Result<Tensor> {
    let (batch, len) = x.dims2()?;
    let (vocab, dim) = w.dims2()?;
    // One pass over the ids (a few thousand numbers; cheap next to the lookup).
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    if let Some(&found) = values.iter().find(|&&t| !(t >= 0.0 && t < vocab as f32 && t.fract() == 0.0)) {
        return Err(Error::TokenId { found, vocab });
    }
    if let (Some(pool), true) = (pool, fast) {
        let ids = values.iter().map(|&t| t as u32).collect();
        let op = crate::text_ops::EmbeddingBagOp { ids, batch, len, pool };
        return Ok(w.contiguous()?.apply_op1(op)?);
    }
    let ids = x.to_dtype(DType::U32)?;
    let mask = ids.ne(0u32)?.to_dtype(DType::F32)?; // [batch, len]: 1 for tokens, 0 for padding
    let vectors = w.index_select(&ids.flatten_all()?, 0)?.reshape((batch, len, dim))?;
    Ok(match pool {
        None => vectors.broadcast_mul(&mask.unsqueeze(2)?)?.transpose(1, 2)?.contiguous()?,
        Some(Pool::Mean) => {
            let sum = vectors.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
            sum.broadcast_div(&mask.sum_keepdim(1)?.maximum(1f32)?)?
        }
        Some(Pool::Max) => {
            // Padding positions get -1e9 so they never win; a text of padding only is 0.
            let push_down = mask.affine(1e9, -1e9)?.unsqueeze(2)?;
            let any = mask.max_keepdim(1)?;
            vectors.broadcast_add(&push_down)?.max(1)?.broadcast_mul(&any)?
        }
    })
}

/// The rows `idx` of `x` (along its first dimension), as `x.index_select(idx, 0)` gives
/// them: for a contiguous `f32` CPU tensor copied by rayon's threads (candle's
/// `index_select` copies on one thread: a batch of 512 Fashion-MNIST images is 1.6 MB per
/// step), otherwise through `index_select`. An index past the end is an error.
///
/// ```
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::arange(0f32, 12.0, &Device::Cpu)?.reshape((4, 3))?;
/// let rows = tuneforge_model::gather_rows(&x, &[3, 0, 3])?;
/// assert_eq!(rows.to_vec2::<f32>()?, [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]);
/// # Ok::<(), tuneforge_model::Error>(())
/// ```
pub fn gather_rows(x: &Tensor, idx: &[u32]) -> Result<Tensor> {
    use rayon::prelude::*;
    let rows = x.dim(0)?;
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= rows) {
        return Err(candle_core::Error::Msg(format!("gather_rows: row {bad} of a tensor of {rows} rows")).into());
    }
    let mut shape = x.dims().to_vec();
    shape[0] = idx.len();
    if crate::cpu_ops::fast_f32(x) && x.is_contiguous() && x.elem_count() > 0 {
        let width = x.elem_count() / rows;
        let out = crate::cpu_ops::with_f32(x, |v| {
            let len = idx.len() * width;
            let mut out = Vec::<f32>::with_capacity(len);
            out.spare_capacity_mut()[..len].par_chunks_mut(width).zip(idx.par_iter()).with_min_len(16).for_each(
                |(dst, &i)| {
                    for (d, &s) in dst.iter_mut().zip(&v[i as usize * width..][..width]) {
                        d.write(s);
                    }
                },
            );
            // SAFETY: the loop above wrote every one of the first `len` values (idx.len()
            // chunks of `width`), and `len` is within the capacity.
            unsafe { out.set_len(len) };
            Ok(out)
        })?;
        return Ok(Tensor::from_vec(out, shape, x.device())?);
    }
    let t = Tensor::from_slice(idx, idx.len(), x.device())?;
    Ok(x.index_select(&t, 0)?)
}

/// Predicted class of each row of `logits`.
pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

fn spec_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a synced temporary file in the same directory, created
/// with mode 0666 less the umask (as `tuneforge_loader::atomic::write_atomic` does; this
/// crate does not depend on the loader).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The CPU embedding-bag op against candle's composition: outputs and table gradients.
    #[test]
    fn embedding_bag_op_equals_candles_ops() {
        let dev = Device::Cpu;
        let (vocab, dim, batch, len) = (30, 5, 7, 9);
        let mut rng = StdRng::seed_from_u64(1);
        let table = Tensor::from_vec(normal(&mut rng, vocab * dim, 1.0), (vocab, dim), &dev).unwrap();
        let mut ids: Vec<f32> = (0..batch * len).map(|_| rng.random_range(0..vocab) as f32).collect();
        ids[..len].fill(0.0); // a text of padding only
        ids[len..2 * len].fill(3.0); // one token repeated
        let x = Tensor::from_vec(ids, (batch, len), &dev).unwrap();
        // Max pooling: candle's `max` backward hands the gradient to every position equal
        // to the maximum, so a repeated token would collect it once per occurrence (the
        // op, like PyTorch, hands it to one): compare on texts without repeats.
        let mut distinct: Vec<f32> = Vec::new();
        for b in 0..batch {
            let mut row: Vec<f32> = (0..len).map(|i| ((b * 3 + i * 7) % (vocab - 1) + 1) as f32).collect();
            if b == 0 {
                row.fill(0.0);
            }
            row[len - 2..].fill(0.0);
            distinct.extend(row);
        }
        let x_distinct = Tensor::from_vec(distinct, (batch, len), &dev).unwrap();
        let r = Tensor::from_vec(normal(&mut rng, batch * dim, 1.0), (batch, dim), &dev).unwrap();
        for (pool, x) in [(Pool::Mean, &x), (Pool::Max, &x_distinct)] {
            let mut outs = Vec::new();
            for fast in [true, false] {
                let w = Var::from_tensor(&table).unwrap();
                let y = embed_with(w.as_tensor(), x, Some(pool), fast).unwrap();
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g = grads.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
                outs.push((y.to_vec2::<f32>().unwrap(), g));
            }
            let ((y0, g0), (y1, g1)) = (&outs[0], &outs[1]);
            for (a, b) in
                y0.iter().flatten().zip(y1.iter().flatten()).chain(g0.iter().flatten().zip(g1.iter().flatten()))
            {
                assert!((a - b).abs() < 1e-5, "{pool:?}: {a} vs {b}");
            }
            assert!(g0.iter().flatten().any(|&v| v != 0.0), "{pool:?}: some gradient");
        }
        // A text of one token repeated: max pooling's gradient reaches its row once.
        let w = Var::from_tensor(&table).unwrap();
        let one = Tensor::from_vec(vec![3f32; len], (1, len), &dev).unwrap();
        let y = embed(w.as_tensor(), &one, Some(Pool::Max)).unwrap();
        let grads = (&y * r.narrow(0, 0, 1).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g[3], r.to_vec2::<f32>().unwrap()[0]);
    }
}
