//! The serde description of a network, its presets and its shape arithmetic.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An element-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// Gaussian error linear unit (tanh approximation, as candle's `gelu`).
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
}

/// How an [`LayerSpec::EmbeddingBag`] pools the vectors of a text's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The mean over the text's tokens (fastText).
    #[default]
    Mean,
    /// The per-dimension maximum over the text's tokens.
    Max,
}

/// One layer of a [`ModelSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected: `[d] → [width]`.
    Linear {
        /// Output features.
        width: usize,
    },
    /// 2-D convolution: `[c, h, w] → [channels, h', w']`.
    Conv2d {
        /// Output channels.
        channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// Token embedding: token ids `[len]` → vectors `[dim, len]` (channels first, for a
    /// following `conv1d`). Id 0 is padding: its vector is zero and learns nothing. Only
    /// as the first layer.
    Embedding {
        /// Number of token ids (the vocabulary, padding and unknown included).
        vocab: usize,
        /// Vector size: a width the agent can change.
        dim: usize,
    },
    /// Token embedding pooled over the text (PyTorch's `EmbeddingBag`): token ids `[len]`
    /// → `[dim]`, the mean or maximum of the vectors of the non-padding tokens (zero for
    /// a text with none). Only as the first layer.
    EmbeddingBag {
        /// Number of token ids (the vocabulary, padding and unknown included).
        vocab: usize,
        /// Vector size: a width the agent can change.
        dim: usize,
        /// Mean (default) or max.
        #[serde(default)]
        pool: Pool,
    },
    /// 1-D convolution over a sequence: `[c, len] → [channels, len']`.
    Conv1d {
        /// Output channels.
        channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// The maximum over every position of each channel: `[c, ...] → [c]`.
    GlobalMaxPool,
    /// Max pooling over square windows: `[c, h, w] → [c, h', w']`.
    MaxPool2d {
        /// Window size.
        size: usize,
        /// Stride (default: the window size).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Batch normalisation over features (`[d]`) or channels (`[c, h, w]`).
    BatchNorm {
        /// Added to the variance (default 1e-5).
        #[serde(default = "bn_eps")]
        eps: f64,
        /// Weight of the new batch statistic in the running averages (default 0.1).
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    /// Zeroes each value with probability `p` in training mode (scaled by 1/(1-p)).
    Dropout {
        /// Drop probability in [0, 1).
        p: f32,
    },
    /// `[c, h, w] → [c·h·w]` (row-major, channel first).
    Flatten,
    /// An element-wise activation.
    Activation {
        /// Which one.
        #[serde(rename = "fn")]
        function: Activation,
    },
}

fn one() -> usize {
    1
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}

impl LayerSpec {
    /// A ReLU activation layer.
    pub fn relu() -> Self {
        LayerSpec::Activation { function: Activation::Relu }
    }

    /// A batch-norm layer with the default `eps` and `momentum`.
    pub fn batch_norm() -> Self {
        LayerSpec::BatchNorm { eps: bn_eps(), momentum: bn_momentum() }
    }

    /// `true` for layers with weights that define a width (Linear, Conv2d, Conv1d,
    /// Embedding, EmbeddingBag).
    pub fn is_parametric(&self) -> bool {
        self.width().is_some()
    }

    /// `true` for the layers that take token ids (Embedding, EmbeddingBag).
    pub fn is_embedding(&self) -> bool {
        matches!(self, LayerSpec::Embedding { .. } | LayerSpec::EmbeddingBag { .. })
    }

    /// Output width (features or channels) of a parametric layer.
    pub fn width(&self) -> Option<usize> {
        match self {
            LayerSpec::Linear { width } => Some(*width),
            LayerSpec::Conv2d { channels, .. } | LayerSpec::Conv1d { channels, .. } => Some(*channels),
            LayerSpec::Embedding { dim, .. } | LayerSpec::EmbeddingBag { dim, .. } => Some(*dim),
            _ => None,
        }
    }

    fn set_width(&mut self, w: usize) {
        match self {
            LayerSpec::Linear { width } => *width = w,
            LayerSpec::Conv2d { channels, .. } | LayerSpec::Conv1d { channels, .. } => *channels = w,
            LayerSpec::Embedding { dim, .. } | LayerSpec::EmbeddingBag { dim, .. } => *dim = w,
            _ => {}
        }
    }
}

/// A network: an input shape (one sample, no batch dimension) and a stack of layers.
///
/// The last parametric layer is the output layer (its width is the number of classes);
/// every other parametric layer (Linear, Conv2d, Conv1d, and an embedding's vector size) is
/// a *hidden* layer that can be widened or narrowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Shape of one input sample, e.g. `[784]` or `[1, 28, 28]`.
    pub input: Vec<usize>,
    /// The layers, applied in order.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// An MLP: `input_dim → hidden[0] → ... → classes`, ReLU between layers.
    pub fn mlp(input_dim: usize, hidden: &[usize], classes: usize) -> Self {
        let mut layers = Vec::new();
        for &w in hidden {
            layers.push(LayerSpec::Linear { width: w });
            layers.push(LayerSpec::relu());
        }
        layers.push(LayerSpec::Linear { width: classes });
        ModelSpec { input: vec![input_dim], layers }
    }

    /// The original article's network for 28×28 grey images: Conv2D 32 3×3 ReLU →
    /// MaxPool 2×2 → Flatten → Dense 64 ReLU → Dense `classes`.
    pub fn seed_cnn(classes: usize) -> Self {
        ModelSpec {
            input: vec![1, 28, 28],
            layers: vec![
                LayerSpec::Conv2d { channels: 32, kernel: 3, stride: 1, padding: 0 },
                LayerSpec::relu(),
                LayerSpec::MaxPool2d { size: 2, stride: None },
                LayerSpec::Flatten,
                LayerSpec::Linear { width: 64 },
                LayerSpec::relu(),
                LayerSpec::Linear { width: classes },
            ],
        }
    }

    /// A preset by name: `mlp:256,128` (hidden widths) or `seed-cnn`, for samples of
    /// `sample_shape` and `classes` classes. An MLP flattens any sample shape.
    pub fn preset(name: &str, sample_shape: &[usize], classes: usize) -> Result<Self> {
        let bad = |why: &str| Error::Preset { name: name.to_string(), why: why.to_string() };
        if name == "seed-cnn" {
            let spec = ModelSpec::seed_cnn(classes);
            let pixels: usize = sample_shape.iter().product();
            if pixels != 784 {
                return Err(bad(&format!(
                    "seed-cnn takes 28x28 single-channel images (784 values), not samples of shape {sample_shape:?}"
                )));
            }
            return Ok(spec);
        }
        if let Some(widths) = name.strip_prefix("mlp:").or_else(|| (name == "mlp").then_some("")) {
            let hidden = widths
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<usize>().ok().filter(|&w| w > 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("expected mlp:W1,W2,... with positive integer widths"))?;
            return Ok(ModelSpec::mlp(sample_shape.iter().product(), &hidden, classes));
        }
        if name.starts_with("text-") {
            return Err(bad("text presets need a vocabulary: use ModelSpec::text_preset"));
        }
        Err(bad("known presets: seed-cnn, mlp:W1,W2,... (and for text: text-bag, text-bag-max, text-cnn)"))
    }

    /// A text classifier over token ids `[len]` from a vocabulary of `vocab` ids (padding
    /// and unknown included):
    ///
    /// - `text-bag:D,H1,...` — fastText-like: an embedding bag of dimension `D` (mean over
    ///   the tokens), then hidden linear layers `H1, ...` with ReLU; `text-bag` is
    ///   `text-bag:64,64`. `text-bag-max:...` pools with the maximum instead.
    /// - `text-cnn:D,C,H1,...` — an embedding of dimension `D`, a 1-D convolution of `C`
    ///   channels over windows of 5 tokens (ReLU), the maximum over positions, then hidden
    ///   linear layers; `text-cnn` is `text-cnn:64,128`.
    ///
    /// Every number is a hidden width the agent can change while training.
    pub fn text_preset(name: &str, len: usize, vocab: usize, classes: usize) -> Result<Self> {
        let bad = |why: &str| Error::Preset { name: name.to_string(), why: why.to_string() };
        let (kind, widths) = name.split_once(':').unwrap_or((name, ""));
        let widths: Vec<usize> = widths
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>().ok().filter(|&w| w > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("expected positive integer widths after the colon"))?;
        let mut layers = Vec::new();
        let hidden = match kind {
            "text-bag" | "text-bag-max" => {
                let w = if widths.is_empty() { vec![64, 64] } else { widths };
                let pool = if kind == "text-bag" { Pool::Mean } else { Pool::Max };
                layers.push(LayerSpec::EmbeddingBag { vocab, dim: w[0], pool });
                w[1..].to_vec()
            }
            "text-cnn" => {
                let w = if widths.is_empty() { vec![64, 128] } else { widths };
                if w.len() < 2 {
                    return Err(bad("text-cnn needs at least D,C (embedding dimension, channels)"));
                }
                layers.push(LayerSpec::Embedding { vocab, dim: w[0] });
                layers.push(LayerSpec::Conv1d { channels: w[1], kernel: 5, stride: 1, padding: 2 });
                layers.push(LayerSpec::relu());
                layers.push(LayerSpec::GlobalMaxPool);
                w[2..].to_vec()
            }
            _ => return Err(bad("text presets: text-bag:D,H..., text-bag-max:D,H..., text-cnn:D,C,H...")),
        };
        for w in hidden {
            layers.push(LayerSpec::Linear { width: w });
            layers.push(LayerSpec::relu());
        }
        layers.push(LayerSpec::Linear { width: classes });
        let spec = ModelSpec { input: vec![len], layers };
        spec.shapes()?;
        Ok(spec)
    }

    /// The shape after each layer (`shapes()[i]` is layer `i`'s output; the input shape
    /// is not included). Fails on inconsistent specs.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::Spec { layer: 0, why: format!("input shape {:?} is empty", self.input) });
        }
        let mut shape = self.input.clone();
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let err = |why: String| Error::Spec { layer: i, why };
            shape = match layer {
                LayerSpec::Linear { width } => {
                    if shape.len() != 1 {
                        return Err(err(format!("linear needs a flat input, got {shape:?} (add a flatten layer)")));
                    }
                    if *width == 0 {
                        return Err(err("width 0".into()));
                    }
                    vec![*width]
                }
                LayerSpec::Conv2d { channels, kernel, stride, padding } => {
                    let [_, h, w] = shape[..] else {
                        return Err(err(format!("conv2d needs a [c, h, w] input, got {shape:?}")));
                    };
                    if *channels == 0 || *kernel == 0 || *stride == 0 {
                        return Err(err("channels, kernel and stride must be positive".into()));
                    }
                    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
                    if hp < *kernel || wp < *kernel {
                        return Err(err(format!("kernel {kernel} is larger than the padded input {hp}x{wp}")));
                    }
                    vec![*channels, (hp - kernel) / stride + 1, (wp - kernel) / stride + 1]
                }
                LayerSpec::Embedding { vocab, dim } | LayerSpec::EmbeddingBag { vocab, dim, .. } => {
                    if i != 0 {
                        return Err(err("an embedding takes token ids: it must be the first layer".into()));
                    }
                    let [len] = shape[..] else {
                        return Err(err(format!("an embedding needs token ids [len], got {shape:?}")));
                    };
                    if *vocab < 2 || *dim == 0 {
                        return Err(err(format!("vocab {vocab} and dim {dim}: need vocab >= 2 and dim > 0")));
                    }
                    if matches!(layer, LayerSpec::Embedding { .. }) { vec![*dim, len] } else { vec![*dim] }
                }
                LayerSpec::Conv1d { channels, kernel, stride, padding } => {
                    let [_, len] = shape[..] else {
                        return Err(err(format!("conv1d needs a [c, len] input, got {shape:?}")));
                    };
                    if *channels == 0 || *kernel == 0 || *stride == 0 {
                        return Err(err("channels, kernel and stride must be positive".into()));
                    }
                    if len + 2 * padding < *kernel {
                        return Err(err(format!(
                            "kernel {kernel} is longer than the padded input {}",
                            len + 2 * padding
                        )));
                    }
                    vec![*channels, (len + 2 * padding - kernel) / stride + 1]
                }
                LayerSpec::GlobalMaxPool => {
                    if shape.len() < 2 {
                        return Err(err(format!("global max pool needs [c, ...], got {shape:?}")));
                    }
                    vec![shape[0]]
                }
                LayerSpec::MaxPool2d { size, stride } => {
                    let [c, h, w] = shape[..] else {
                        return Err(err(format!("max_pool2d needs a [c, h, w] input, got {shape:?}")));
                    };
                    let s = stride.unwrap_or(*size);
                    if *size == 0 || s == 0 || h < *size || w < *size {
                        return Err(err(format!("pool window {size} (stride {s}) does not fit {h}x{w}")));
                    }
                    vec![c, (h - size) / s + 1, (w - size) / s + 1]
                }
                LayerSpec::BatchNorm { eps, momentum } => {
                    if shape.len() != 1 && shape.len() != 3 {
                        return Err(err(format!("batch norm needs [d] or [c, h, w], got {shape:?}")));
                    }
                    if eps.is_nan() || *eps <= 0.0 || !(0.0..=1.0).contains(momentum) {
                        return Err(err("batch norm needs eps > 0 and momentum in [0, 1]".into()));
                    }
                    shape
                }
                LayerSpec::Dropout { p } => {
                    if !(0.0..1.0).contains(p) {
                        return Err(err(format!("dropout p = {p} is outside [0, 1)")));
                    }
                    shape
                }
                LayerSpec::Flatten => vec![shape.iter().product()],
                LayerSpec::Activation { .. } => shape,
            };
            out.push(shape.clone());
        }
        match self.layers.last() {
            Some(LayerSpec::Linear { .. }) => Ok(out),
            _ => Err(Error::Spec {
                layer: self.layers.len().saturating_sub(1),
                why: "the last layer must be the linear output layer (its width = the number of classes)".into(),
            }),
        }
    }

    /// Number of output classes (the output layer's width).
    pub fn classes(&self) -> usize {
        self.layers.iter().rev().find_map(LayerSpec::width).unwrap_or(0)
    }

    /// Indices (into `layers`) of the hidden layers: every Linear/Conv2d but the output.
    pub fn hidden_layers(&self) -> Vec<usize> {
        let params: Vec<usize> = (0..self.layers.len()).filter(|&i| self.layers[i].is_parametric()).collect();
        params[..params.len().saturating_sub(1)].to_vec()
    }

    /// Widths of the hidden layers, in order.
    pub fn hidden_widths(&self) -> Vec<usize> {
        self.hidden_layers().iter().filter_map(|&i| self.layers[i].width()).collect()
    }

    /// This spec with layer `layer` at width `width`.
    pub fn with_width(&self, layer: usize, width: usize) -> ModelSpec {
        let mut s = self.clone();
        if let Some(l) = s.layers.get_mut(layer) {
            l.set_width(width);
        }
        s
    }

    /// Name and shape of every tensor a [`Model`](crate::Model) of this spec holds, as
    /// [`Model::tensors`](crate::Model::tensors) names them (`layers.{i}.weight`, `.bias`,
    /// and batch norm's `.running_mean` and `.running_var`), in layer order. Computed from
    /// the shapes alone: nothing is allocated. Fails on inconsistent specs.
    pub fn tensor_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let shapes = self.shapes()?;
        let mut inp = &self.input;
        let mut out = Vec::new();
        for (i, (layer, shape)) in self.layers.iter().zip(&shapes).enumerate() {
            let name = |what: &str| format!("layers.{i}.{what}");
            match layer {
                LayerSpec::Linear { width } => {
                    out.push((name("weight"), vec![*width, inp[0]]));
                    out.push((name("bias"), vec![*width]));
                }
                LayerSpec::Conv2d { channels, kernel, .. } => {
                    out.push((name("weight"), vec![*channels, inp[0], *kernel, *kernel]));
                    out.push((name("bias"), vec![*channels]));
                }
                LayerSpec::Conv1d { channels, kernel, .. } => {
                    out.push((name("weight"), vec![*channels, inp[0], *kernel]));
                    out.push((name("bias"), vec![*channels]));
                }
                LayerSpec::Embedding { vocab, dim } | LayerSpec::EmbeddingBag { vocab, dim, .. } => {
                    out.push((name("weight"), vec![*vocab, *dim]));
                }
                LayerSpec::BatchNorm { .. } => {
                    for what in ["weight", "bias", "running_mean", "running_var"] {
                        out.push((name(what), vec![inp[0]]));
                    }
                }
                _ => {}
            }
            inp = shape;
        }
        Ok(out)
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> Result<usize> {
        let shapes = self.shapes()?;
        let mut inp = self.input.clone();
        let mut n = 0;
        for (layer, out) in self.layers.iter().zip(&shapes) {
            n += match layer {
                LayerSpec::Linear { width } => inp[0] * width + width,
                LayerSpec::Conv2d { channels, kernel, .. } => inp[0] * kernel * kernel * channels + channels,
                LayerSpec::Conv1d { channels, kernel, .. } => inp[0] * kernel * channels + channels,
                LayerSpec::Embedding { vocab, dim } | LayerSpec::EmbeddingBag { vocab, dim, .. } => vocab * dim,
                LayerSpec::BatchNorm { .. } => 2 * inp[0],
                _ => 0,
            };
            inp = out.clone();
        }
        Ok(n)
    }

    /// Floating-point operations of one sample's forward pass, counting a multiply-add as
    /// two; only linear, convolution and embedding-bag layers are counted (the rest is < 1% for the
    /// presets).
    pub fn flops_per_sample(&self) -> Result<u64> {
        let shapes = self.shapes()?;
        let mut inp = self.input.clone();
        let mut f = 0u64;
        for (layer, out) in self.layers.iter().zip(&shapes) {
            f += match layer {
                LayerSpec::Linear { width } => 2 * (inp[0] * width) as u64,
                LayerSpec::Conv2d { channels, kernel, .. } => {
                    2 * (inp[0] * kernel * kernel * channels * out[1] * out[2]) as u64
                }
                LayerSpec::Conv1d { channels, kernel, .. } => 2 * (inp[0] * kernel * channels * out[1]) as u64,
                // Summing the token vectors.
                LayerSpec::EmbeddingBag { dim, .. } => (inp[0] * dim) as u64,
                _ => 0,
            };
            inp = out.clone();
        }
        Ok(f)
    }
}
