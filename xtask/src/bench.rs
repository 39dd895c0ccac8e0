//! `cargo xtask bench-step`: training and inference throughput of one model at one batch
//! size on Fashion-MNIST, measured as `../shared/bench/torch_throughput.py` measures
//! PyTorch, so the two can run side by side — or, with `--dataset jsonl:PATH` (any text
//! dataset), of a text model on the training split's token ids, also as tokens/s (the
//! non-padding tokens of the rows trained on).
//!
//! Method: the whole training and test sets resident in memory as `f32` tensors (pixels
//! /255); 20 warm-up steps; then one full shuffled epoch (60000 rows, last partial batch
//! included) of gather + forward + backward + Adam(1e-3) step, timed; then inference
//! throughput over the 10000 test images at the same batch size (one warm-up pass, the
//! mean of two timed passes; each pass one loop on rayon's pool, as `Run::evaluate` runs
//! it). For models with a hidden layer, also the wall time of
//! widening the first hidden layer by half and of narrowing it back (optimiser remap
//! included).

use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tuneforge_agent::data::{DataSource, prepare};
use tuneforge_loader::{Dataset, InMemory, Known};
use tuneforge_model::{Model, ModelSpec, WidenOptions};
use tuneforge_optim::{AdamConfig, Optimizer, OptimizerConfig};

use crate::{DataArgs, TextArgs};

const WARMUP_STEPS: usize = 20;

/// Measure training and inference samples/s of one model at one batch size.
#[derive(Debug, clap::Args)]
pub struct BenchStepArgs {
    /// seed-cnn, or mlp:W1,W2,... (Fashion-MNIST); text-bag:D,H... or text-cnn:D,C,H...
    /// (text datasets).
    #[arg(long, default_value = "mlp:256")]
    pub model: String,
    /// fashion-mnist, or a text dataset: jsonl:PATH, csv:PATH --text COLUMN.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Label field of a text dataset (default "label").
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
    /// Rows per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Worker threads for candle's CPU kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the weights and the epoch's order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Serialize)]
struct Record {
    system: &'static str,
    device: String,
    model: String,
    batch_size: usize,
    threads: usize,
    parameters: usize,
    train_samples_per_s: f64,
    /// Text: non-padding tokens of the training rows per second of training.
    train_tokens_per_s: Option<f64>,
    epoch_s: f64,
    infer_samples_per_s: f64,
    last_loss: f32,
    /// Mean wall time of one training step of the timed epoch (ms).
    step_ms: f64,
    /// Mean wall time of the optimiser's update alone (ms; 50 updates on one batch's
    /// gradients after the epoch): its share of a step is `optimizer_ms / step_ms`.
    optimizer_ms: f64,
    /// Process CPU time ÷ wall time (all threads; `tuneforge::process_cpu_seconds`) over the
    /// timed epoch, the two timed inference passes and the 50 optimiser updates: how many
    /// cores each phase kept busy (idle threads that spin count as busy).
    train_cores_busy: Option<f64>,
    infer_cores_busy: Option<f64>,
    optimizer_cores_busy: Option<f64>,
    /// With the `cuda` feature: whether the fused CUDA optimiser kernel was on
    /// (`TUNEFORGE_FUSED_OPTIM=off` turns it off).
    #[serde(skip_serializing_if = "Option::is_none")]
    fused_optim: Option<bool>,
    widen_ms: Option<f64>,
    narrow_ms: Option<f64>,
}

fn resident(ds: &dyn Dataset, input: &[usize], divisor: f32, device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let mem = InMemory::copy_of(ds)?;
    let x: Vec<f32> = mem.features().iter().map(|v| v / divisor).collect();
    let mut shape = vec![ds.len()];
    shape.extend_from_slice(input);
    Ok((Tensor::from_vec(x, shape, device)?, Tensor::from_slice(mem.labels(), ds.len(), device)?))
}

/// One training step, on a rayon worker as `Run::train_step` runs it (one hand-over from
/// this thread per step rather than one per parallel kernel).
fn step(model: &mut Model, opt: &mut dyn Optimizer, x: &Tensor, y: &Tensor, idx: &[u32]) -> anyhow::Result<Tensor> {
    let hop = model.hands_over(idx.len());
    tuneforge_model::on_pool(hop, || step_on_pool(model, opt, x, y, idx))
}

fn step_on_pool(
    model: &mut Model,
    opt: &mut dyn Optimizer,
    x: &Tensor,
    y: &Tensor,
    idx: &[u32],
) -> anyhow::Result<Tensor> {
    let (xb, yb) = (tuneforge_model::gather_rows(x, idx)?, tuneforge_model::gather_rows(y, idx)?);
    let loss = Model::loss(&model.forward_train(&xb)?, &yb)?;
    opt.step(&model.backward(&loss)?)?;
    Ok(loss)
}

/// CPU time used since `cpu_before` ÷ `wall_s`.
fn cores_busy(cpu_before: Option<f64>, wall_s: f64) -> Option<f64> {
    Some((tuneforge::process_cpu_seconds()? - cpu_before?) / wall_s)
}

pub fn run(args: &BenchStepArgs) -> anyhow::Result<()> {
    let device = crate::train::parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let (spec, train, test, scale, tokens) = if args.dataset == "fashion-mnist" {
        let train = dirs.open(Known::FashionMnistTrain, &cache).context("bench-step needs Fashion-MNIST")?;
        let test = dirs.open(Known::FashionMnistTest, &cache)?;
        (ModelSpec::preset(&args.model, &[1, 28, 28], 10)?, train, test, 255.0, None)
    } else {
        let source = args.text.apply(DataSource::parse(&args.dataset, args.label.as_deref())?)?;
        let data = prepare(&source, &dirs, &cache, 0.0, args.seed)?;
        let Some(text) = &data.text else {
            anyhow::bail!("--dataset {}: bench-step takes fashion-mnist or a text dataset", args.dataset);
        };
        let spec = ModelSpec::text_preset(&args.model, text.max_len(), text.vocab_size(), data.train.num_classes())?;
        let tokens = InMemory::copy_of(&*data.train)?.features().iter().filter(|&&t| t != 0.0).count();
        (spec, data.train.clone(), data.test.clone(), 1.0, Some(tokens))
    };
    let (xtr, ytr) = resident(&*train, &spec.input, scale, &device)?;
    let (xte, _) = resident(&*test, &spec.input, scale, &device)?;
    let mut model = spec.init_seeded(&device, args.seed)?;
    let mut opt = OptimizerConfig::Adam(AdamConfig { lr: 1e-3, ..Default::default() }).build(model.vars())?;
    let n = train.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut perm: Vec<u32> = (0..n as u32).collect();

    perm.shuffle(&mut rng);
    for chunk in perm.chunks(args.batch_size).take(WARMUP_STEPS) {
        step(&mut model, &mut *opt, &xtr, &ytr, chunk)?;
    }
    device.synchronize()?;
    perm.shuffle(&mut rng);
    let cpu = tuneforge::process_cpu_seconds();
    let t = Instant::now();
    let mut last = None;
    for chunk in perm.chunks(args.batch_size) {
        last = Some(step(&mut model, &mut *opt, &xtr, &ytr, chunk)?);
    }
    let last_loss = last.map(|l| l.to_scalar::<f32>()).transpose()?.unwrap_or(f32::NAN);
    device.synchronize()?;
    let epoch_s = t.elapsed().as_secs_f64();
    let train_cores_busy = cores_busy(cpu, epoch_s);

    // A pass is a loop of forward passes on rayon's pool, as `Run::evaluate` runs one.
    let infer_pass = |model: &Model| -> anyhow::Result<()> {
        tuneforge_model::on_pool(model.hands_over(args.batch_size), || -> anyhow::Result<()> {
            for start in (0..test.len()).step_by(args.batch_size) {
                let len = args.batch_size.min(test.len() - start);
                model.forward(&xte.narrow(0, start, len)?)?;
            }
            Ok(())
        })?;
        Ok(device.synchronize()?)
    };
    infer_pass(&model)?;
    let cpu = tuneforge::process_cpu_seconds();
    let t = Instant::now();
    infer_pass(&model)?;
    infer_pass(&model)?;
    let infer_s = t.elapsed().as_secs_f64();
    let infer_samples_per_s = 2.0 * test.len() as f64 / infer_s;
    let infer_cores_busy = cores_busy(cpu, infer_s);

    // The optimiser alone: 50 updates with one batch's gradients.
    let (optimizer_ms, optimizer_cores_busy) = {
        let idx = &perm[..args.batch_size.min(n)];
        let (xb, yb) = (tuneforge_model::gather_rows(&xtr, idx)?, tuneforge_model::gather_rows(&ytr, idx)?);
        let loss = Model::loss(&model.forward_train(&xb)?, &yb)?;
        let grads = model.backward(&loss)?;
        device.synchronize()?;
        let cpu = tuneforge::process_cpu_seconds();
        let t = Instant::now();
        for _ in 0..50 {
            opt.step(&grads)?;
        }
        device.synchronize()?;
        let seconds = t.elapsed().as_secs_f64();
        (seconds * 1e3 / 50.0, cores_busy(cpu, seconds))
    };

    let (mut widen_ms, mut narrow_ms) = (None, None);
    if let Some(&layer) = model.spec().hidden_layers().first() {
        let width = model.spec().layers[layer].width().unwrap_or(0);
        let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let t = Instant::now();
            f()?;
            device.synchronize()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let resize = |w: usize, m: &mut Model, o: &mut dyn Optimizer| -> anyhow::Result<()> {
            let changes = if w > width { m.widen(layer, w, WidenOptions::default())? } else { m.narrow(layer, w)? };
            for c in changes {
                o.remap(&c.name, c.var, c.axis, &c.sources, &c.scale)?;
            }
            Ok(())
        };
        widen_ms = Some(time(&mut || resize(width + width / 2, &mut model, &mut *opt))?);
        narrow_ms = Some(time(&mut || resize(width, &mut model, &mut *opt))?);
    }

    let record = Record {
        system: "tuneforge",
        device: args.device.clone(),
        model: args.model.clone(),
        batch_size: args.batch_size,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        parameters: model.parameter_count(),
        train_samples_per_s: n as f64 / epoch_s,
        train_tokens_per_s: tokens.map(|t| t as f64 / epoch_s),
        epoch_s,
        infer_samples_per_s,
        last_loss,
        step_ms: epoch_s * 1e3 / n.div_ceil(args.batch_size) as f64,
        optimizer_ms,
        train_cores_busy,
        infer_cores_busy,
        optimizer_cores_busy,
        #[cfg(feature = "cuda")]
        fused_optim: Some(tuneforge_optim::cuda::fused_enabled()),
        #[cfg(not(feature = "cuda"))]
        fused_optim: None,
        widen_ms,
        narrow_ms,
    };
    outln!("{}", serde_json::to_string(&record)?);
    Ok(())
}
