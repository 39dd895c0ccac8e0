//! `cargo xtask gpu-check` and `cargo xtask gpu-bundle`: the correctness checks a GPU run
//! must pass, and the one folder that carries everything a GPU machine needs to run them.
//!
//! `gpu-check --device cuda` compares, on the GPU against the CPU (or against candle-nn):
//! - the fused multi-tensor optimiser kernels (AdamW against candle-nn's `AdamW` to 1e-6 after
//!   100 steps; AdamW, Adam with L2 and SGD with momentum / Nesterov against our CPU kernels),
//!   and times an optimiser step, fused against candle-nn's tensor ops;
//! - training, widening and narrowing of mlp 784-1024-1024-10 and seed-cnn on real
//!   Fashion-MNIST batches (function preserved by the widening, weights and optimiser state
//!   still on the GPU, logits equal to the CPU's run), and a checkpoint taken on the GPU
//!   loaded on the CPU and back.
//!
//! Each check prints one JSON line; the exit status is 1 if any failed. On `--device cpu`
//! the same code compares the CPU with itself, which keeps it tested without a GPU.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tuneforge_loader::{InMemory, Known};
use tuneforge_model::{Model, ModelSpec, WidenOptions};
use tuneforge_optim::{AdamConfig, AdamWConfig, Optimizer, OptimizerConfig, SgdConfig};

use crate::DataArgs;

/// Run the GPU correctness checks (fused optimiser, widen/narrow, checkpoints) on a device.
#[derive(Debug, clap::Args)]
pub struct GpuCheckArgs {
    /// cuda[:N] (or cpu: the same checks against the CPU itself).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Optimiser steps compared (the acceptance figure is after 100).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Also write the results (JSON lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// One check's outcome.
#[derive(Debug, Serialize)]
struct Check {
    check: String,
    passed: bool,
    /// The measured figure (a difference, a time).
    value: f64,
    /// The bound it must stay within (`None` for a measurement).
    limit: Option<f64>,
    detail: String,
}

impl Check {
    fn bound(check: impl Into<String>, value: f64, limit: f64, detail: impl Into<String>) -> Check {
        Check { check: check.into(), passed: value <= limit, value, limit: Some(limit), detail: detail.into() }
    }

    fn measure(check: impl Into<String>, value: f64, detail: impl Into<String>) -> Check {
        Check { check: check.into(), passed: true, value, limit: None, detail: detail.into() }
    }

    fn truth(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check { check: check.into(), passed: ok, value: f64::from(u8::from(ok)), limit: None, detail: detail.into() }
    }
}

/// Parameter shapes of mlp 784-1024-1024-10 (1.86 M values), for the optimiser checks.
const SHAPES: [&[usize]; 6] = [&[1024, 784], &[1024], &[1024, 1024], &[1024], &[10, 1024], &[10]];

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn vars_on(device: &Device, seed: u64) -> anyhow::Result<Vec<Var>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    SHAPES
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, *s, device)?)?)
        })
        .collect()
}

/// The gradients of step `step` (seeded, the same on every device), as CPU data.
fn gradients(step: usize) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + step as u64);
    SHAPES
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            // Some exact zeros, as a blank pixel's weights get: the moments' flush to 0 is hit.
            (0..n).map(|i| if i % 7 == 0 { 0.0 } else { rng.random_range(-1e-2f32..1e-2) }).collect()
        })
        .collect()
}

/// A loss whose gradient with respect to `vars[i]` is exactly `g[i]`: `Σ vars[i] · g[i]`.
fn grad_store(vars: &[Var], g: &[Vec<f32>]) -> anyhow::Result<candle_core::backprop::GradStore> {
    let mut loss: Option<Tensor> = None;
    for (v, g) in vars.iter().zip(g) {
        let g = Tensor::from_slice(g, v.dims(), v.device())?;
        let term = (v.as_tensor() * g)?.sum_all()?;
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term)?,
        });
    }
    Ok(loss.context("no parameters")?.backward()?)
}

fn named(vars: &[Var]) -> Vec<(String, Var)> {
    vars.iter().enumerate().map(|(i, v)| (format!("p{i}"), v.clone())).collect()
}

/// 100 steps of `config` on `device` and on the CPU from the same start with the same
/// gradients; the largest parameter difference.
fn ours_against_cpu(config: &OptimizerConfig, device: &Device, steps: usize) -> anyhow::Result<f64> {
    let (dv, cv) = (vars_on(device, 1)?, vars_on(&Device::Cpu, 1)?);
    let (mut d, mut c) = (config.build(named(&dv))?, config.build(named(&cv))?);
    for step in 0..steps {
        let g = gradients(step);
        d.step(&grad_store(&dv, &g)?)?;
        c.step(&grad_store(&cv, &g)?)?;
    }
    let mut worst = 0f64;
    for (a, b) in dv.iter().zip(&cv) {
        worst = worst.max(max_abs_diff(a.as_tensor(), b.as_tensor())?);
    }
    Ok(worst)
}

fn optimiser_checks(device: &Device, steps: usize, out: &mut Vec<Check>) -> anyhow::Result<()> {
    use candle_nn::Optimizer as _;
    let lr = 1e-3;
    // Ours (fused on a GPU) against candle-nn's AdamW (tensor ops), both on `device`.
    let (ov, nv) = (vars_on(device, 1)?, vars_on(device, 1)?);
    let mut ours = OptimizerConfig::AdamW(AdamWConfig { lr, ..Default::default() }).build(named(&ov))?;
    let mut theirs = candle_nn::AdamW::new(
        nv.clone(),
        candle_nn::ParamsAdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
    )?;
    for step in 0..steps {
        let g = gradients(step);
        ours.step(&grad_store(&ov, &g)?)?;
        theirs.step(&grad_store(&nv, &g)?)?;
    }
    let mut worst = 0f64;
    for (a, b) in ov.iter().zip(&nv) {
        worst = worst.max(max_abs_diff(a.as_tensor(), b.as_tensor())?);
    }
    out.push(Check::bound(
        "adamw_vs_candle_nn",
        worst,
        1e-6,
        format!("max |Δθ| after {steps} steps, 1.86 M parameters in 6 tensors, on {device:?}"),
    ));

    let configs = [
        ("adamw", OptimizerConfig::AdamW(AdamWConfig { lr, ..Default::default() })),
        ("adam_l2", OptimizerConfig::Adam(AdamConfig { lr, weight_decay: 1e-2, ..Default::default() })),
        ("sgd", OptimizerConfig::Sgd(SgdConfig { lr: 0.05, ..Default::default() })),
        ("sgd_momentum", OptimizerConfig::Sgd(SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() })),
        (
            "sgd_nesterov_wd",
            OptimizerConfig::Sgd(SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-3 }),
        ),
    ];
    for (name, config) in configs {
        let diff = ours_against_cpu(&config, device, steps)?;
        out.push(Check::bound(
            format!("{name}_vs_cpu"),
            diff,
            1e-6,
            format!("max |Δθ| after {steps} steps against our CPU kernel (the same f32 operations: 0 expected)"),
        ));
    }

    // Time per optimiser step, ours against candle-nn's, the same fixed gradients.
    let timed = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        for _ in 0..10 {
            f()?;
        }
        device.synchronize()?;
        let t = Instant::now();
        for _ in 0..200 {
            f()?;
        }
        device.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3 / 200.0)
    };
    let g = gradients(0);
    let (og, ng) = (grad_store(&ov, &g)?, grad_store(&nv, &g)?);
    let ours_ms = timed(&mut || Ok(ours.step(&og)?))?;
    let theirs_ms = timed(&mut || Ok(theirs.step(&ng)?))?;
    out.push(Check::measure("adamw_step_ms_ours", ours_ms, "one AdamW step of 1.86 M parameters (ms)"));
    out.push(Check::measure("adamw_step_ms_candle_nn", theirs_ms, "the same with candle-nn's AdamW (ms)"));
    Ok(())
}

/// `rows` Fashion-MNIST training images from `start`, shaped [rows, input...] (pixels / 255),
/// and their labels, on the CPU.
fn fmnist_batch(mem: &InMemory, input: &[usize], start: usize, rows: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let f = &mem.features()[start * 784..(start + rows) * 784];
    let x: Vec<f32> = f.iter().map(|v| v / 255.0).collect();
    let y = &mem.labels()[start..start + rows];
    let mut shape = vec![rows];
    shape.extend_from_slice(input);
    Ok((Tensor::from_vec(x, shape, &Device::Cpu)?, Tensor::from_slice(y, rows, &Device::Cpu)?))
}

/// Trains `model` on `device` and a copy on the CPU in step, widens and narrows both, and
/// checks that they agree, that the widening preserved the function, and that nothing left
/// the device; then a checkpoint of the device model read on the CPU and back.
fn model_checks(name: &str, device: &Device, mem: &InMemory, out: &mut Vec<Check>) -> anyhow::Result<()> {
    let spec = ModelSpec::preset(name, &[1, 28, 28], 10)?;
    let (mut md, mut mc) = (spec.init_seeded(device, 0)?, spec.init_seeded(&Device::Cpu, 0)?);
    let adam = OptimizerConfig::Adam(AdamConfig { lr: 1e-3, ..Default::default() });
    let (mut od, mut oc) = (adam.build(md.vars())?, adam.build(mc.vars())?);
    let (xe, _) = fmnist_batch(mem, &spec.input, 50_000, 256)?;
    let xe_d = xe.to_device(device)?;
    let mut batch = 0usize;
    let mut train = |md: &mut Model, mc: &mut Model, od: &mut dyn Optimizer, oc: &mut dyn Optimizer| {
        for _ in 0..10 {
            let (x, y) = fmnist_batch(mem, &spec.input, batch * 128, 128)?;
            batch += 1;
            let ld = Model::loss(&md.forward_train(&x.to_device(device)?)?, &y.to_device(device)?)?;
            od.step(&md.backward(&ld)?)?;
            let lc = Model::loss(&mc.forward_train(&x)?, &y)?;
            oc.step(&mc.backward(&lc)?)?;
        }
        anyhow::Ok(())
    };
    // Relative difference of the logits on 256 held-out images.
    let agree = |md: &Model, mc: &Model| -> anyhow::Result<f64> {
        let (ld, lc) = (md.forward(&xe_d)?, mc.forward(&xe)?);
        let scale = lc.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
        Ok(max_abs_diff(&ld, &lc)? / f64::from(scale))
    };
    let on_device = |m: &Model, o: &dyn Optimizer| {
        m.vars().iter().all(|(_, v)| v.device().same_device(device))
            && o.vars().iter().all(|(_, v)| v.device().same_device(device))
    };
    let remap = |o: &mut dyn Optimizer, changes: Vec<tuneforge_model::ParamChange>| -> anyhow::Result<()> {
        for c in changes {
            o.remap(&c.name, c.var, c.axis, &c.sources, &c.scale)?;
        }
        Ok(())
    };

    train(&mut md, &mut mc, &mut *od, &mut *oc)?;
    out.push(Check::bound(
        format!("{name}_train_vs_cpu"),
        agree(&md, &mc)?,
        1e-3,
        "10 Adam steps: max |Δlogit| / max |logit|",
    ));

    let layer = *spec.hidden_layers().first().context("a model with a hidden layer")?;
    let width = spec.layers[layer].width().context("a hidden layer has a width")?;
    let before = md.forward(&xe_d)?;
    let t = Instant::now();
    let changes = md.widen(layer, width + width / 2, WidenOptions::default())?;
    remap(&mut *od, changes)?;
    device.synchronize()?;
    let widen_ms = t.elapsed().as_secs_f64() * 1e3;
    remap(&mut *oc, mc.widen(layer, width + width / 2, WidenOptions::default())?)?;
    let after = md.forward(&xe_d)?;
    out.push(Check::bound(
        format!("{name}_widen_preserves_function"),
        max_abs_diff(&before, &after)?,
        1e-4,
        format!("layer {layer}: {width} → {} units, max |Δlogit| ({widen_ms:.2} ms)", width + width / 2),
    ));
    out.push(Check::truth(format!("{name}_widened_state_on_device"), on_device(&md, &*od), "weights and optimiser"));
    train(&mut md, &mut mc, &mut *od, &mut *oc)?;
    let t = Instant::now();
    let changes = md.narrow(layer, width)?;
    remap(&mut *od, changes)?;
    device.synchronize()?;
    let narrow_ms = t.elapsed().as_secs_f64() * 1e3;
    remap(&mut *oc, mc.narrow(layer, width)?)?;
    out.push(Check::truth(format!("{name}_narrowed_state_on_device"), on_device(&md, &*od), "weights and optimiser"));
    train(&mut md, &mut mc, &mut *od, &mut *oc)?;
    out.push(Check::bound(
        format!("{name}_widen_narrow_train_vs_cpu"),
        agree(&md, &mc)?,
        1e-3,
        format!("after widen, 10 steps, narrow ({narrow_ms:.2} ms), 10 steps: max |Δlogit| / max |logit|"),
    ));

    // A checkpoint written from the GPU, read on the CPU and back on the GPU.
    let origin = Path::new("gpu-check.safetensors");
    let bytes = md.to_safetensors(origin)?;
    let on_cpu = Model::from_safetensors(&bytes, origin, &Device::Cpu)?;
    let back = Model::from_safetensors(&on_cpu.to_safetensors(origin)?, origin, device)?;
    let logits = md.forward(&xe_d)?;
    out.push(Check::bound(
        format!("{name}_checkpoint_on_cpu"),
        max_abs_diff(&logits, &on_cpu.forward(&xe)?)? / 1f64.max(max_abs_diff(&logits, &logits.zeros_like()?)?),
        1e-3,
        "device checkpoint loaded on the CPU: max |Δlogit| / max |logit|",
    ));
    out.push(Check::bound(
        format!("{name}_checkpoint_round_trip"),
        max_abs_diff(&logits, &back.forward(&xe_d)?)?,
        0.0,
        "device → CPU → device: identical logits",
    ));
    let state = od.state()?;
    let mut again = adam.build(back.vars())?;
    again.load_state(&state)?;
    let reread = again.state()?;
    let mut worst = 0f64;
    for (param, s) in &state.params {
        let r = reread.params.get(param).context("a parameter lost by the state round trip")?;
        anyhow::ensure!(r.step == s.step, "{param}: step {} read back as {}", s.step, r.step);
        for (buf, t) in &s.buffers {
            worst = worst.max(max_abs_diff(t, r.buffers.get(buf).context("a buffer lost")?)?);
        }
    }
    out.push(Check::bound(
        format!("{name}_optimizer_state_round_trip"),
        if on_device(&back, &*again) { worst } else { f64::INFINITY },
        0.0,
        "optimiser state exported from the device, loaded onto the device copy: identical, on the device",
    ));
    Ok(())
}

pub fn check(args: &GpuCheckArgs) -> anyhow::Result<()> {
    let device = crate::train::parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let train = dirs.open(Known::FashionMnistTrain, &cache).context("gpu-check needs Fashion-MNIST")?;
    let mem = InMemory::copy_of(&*train)?;
    let mut checks = Vec::new();
    let t = Instant::now();
    optimiser_checks(&device, args.steps, &mut checks)?;
    for model in ["mlp:1024,1024", "seed-cnn"] {
        model_checks(model, &device, &mem, &mut checks)?;
    }
    let mut file = match &args.out {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let failed = checks.iter().filter(|c| !c.passed).count();
    for c in &checks {
        let line = serde_json::to_string(c)?;
        outln!("{line}");
        if let Some(f) = file.as_mut() {
            writeln!(f, "{line}").context("writing --out")?;
        }
    }
    errln!(
        "gpu-check on {}: {} checks, {failed} failed, {:.1} s",
        args.device,
        checks.len(),
        t.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

/// Build the `cuda` binary and pack a GPU run into one folder.
#[derive(Debug, clap::Args)]
pub struct GpuBundleArgs {
    /// The folder to fill (ignored by git; name it in the device tool's `carry`). Files of an
    /// earlier bundle there are replaced.
    #[arg(long, default_value = "gpu-bundle")]
    pub out: PathBuf,
    /// Cargo's target folder for the cuda build (kept between builds: a cold one takes
    /// about 20 minutes on 2 cores).
    #[arg(long, default_value = "target/cuda")]
    pub target_dir: PathBuf,
    /// The shared folder holding bench/torch_throughput.py.
    #[arg(long, default_value = "../shared")]
    pub shared: PathBuf,
    /// Pack an already built binary instead of building (e.g. target/cuda/release/xtask).
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// What the device tool carries at most.
const BUNDLE_LIMIT: u64 = 64 << 20;
/// The run script, committed beside the code it drives.
const RUN_SCRIPT: &str = include_str!("../../scripts/gpu/run.sh");

fn copy(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

pub fn bundle(args: &GpuBundleArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            let have = |v: &str| std::env::var_os(v).is_some();
            if !have("CUDA_COMPUTE_CAP") || !(have("NVCC") || have("CUDA_HOME")) {
                bail!(
                    "the cuda build needs the CUDA 13.0 toolkit's environment (NVCC or CUDA_HOME, and \
                     CUDA_COMPUTE_CAP=90 without a GPU): run ../shared/tools/setup-cuda-wheels.sh PREFIX once, \
                     then `source PREFIX/env.sh` (../shared/CUDA.md)"
                );
            }
            errln!("building the cuda binary in {} (cold: ~20 min on 2 cores)", args.target_dir.display());
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--release", "-p", "xtask", "--features", "cuda", "--target-dir"])
                .arg(&args.target_dir)
                .status()
                .context("running cargo")?;
            if !status.success() {
                bail!("cargo build --features cuda failed ({status})");
            }
            args.target_dir.join("release/xtask")
        }
    };
    let out = &args.out;
    // An earlier bundle is replaced whole (what a run left in it would count against the
    // 64 MiB); any other non-empty folder is left alone.
    if out.join("MANIFEST.txt").is_file() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing the earlier bundle {}", out.display()))?;
    } else if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty and holds no MANIFEST.txt of an earlier bundle: give another --out", out.display());
    }
    std::fs::create_dir_all(out.join("datasets/fashion-mnist"))
        .with_context(|| format!("creating {}", out.display()))?;

    // The binary, stripped, gzipped.
    let stripped = out.join("xtask.stripped");
    copy(&binary, &stripped)?;
    let strip = std::process::Command::new("strip").arg(&stripped).status();
    if !strip.as_ref().is_ok_and(|s| s.success()) {
        errln!("warning: strip failed ({strip:?}); packing the binary with its symbols");
    }
    let gz_path = out.join("xtask.gz");
    {
        let mut input = std::fs::File::open(&stripped)?;
        let file = std::fs::File::create(&gz_path).with_context(|| format!("creating {}", gz_path.display()))?;
        let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::best());
        std::io::copy(&mut input, &mut gz)?;
        gz.finish()?.flush()?;
    }
    std::fs::remove_file(&stripped)?;

    // Fashion-MNIST, the PyTorch reference and the run script.
    let dirs = args.data.dirs();
    for split in [Known::FashionMnistTrain, Known::FashionMnistTest] {
        for f in dirs.locate(split).context("the bundle carries Fashion-MNIST")? {
            let name = f.file_name().context("a dataset file has a name")?;
            copy(&f, &out.join("datasets/fashion-mnist").join(name))?;
        }
    }
    copy(&args.shared.join("bench/torch_throughput.py"), &out.join("torch_throughput.py"))?;
    let script = out.join("run.sh");
    std::fs::write(&script, RUN_SCRIPT).with_context(|| format!("writing {}", script.display()))?;

    let mut total = 0u64;
    let mut listing = String::new();
    for entry in walk(out)? {
        let len = entry.metadata()?.len();
        total += len;
        listing.push_str(&format!("{len:>12}  {}\n", entry.strip_prefix(out).unwrap_or(&entry).display()));
    }
    std::fs::write(out.join("MANIFEST.txt"), &listing)?;
    for line in listing.lines() {
        outln!("{line}");
    }
    outln!("{total:>12}  in all ({:.1} MiB of the device tool's 64 MiB)", total as f64 / (1 << 20) as f64);
    if total > BUNDLE_LIMIT {
        bail!("{} holds {total} bytes, more than the 64 MiB the device tool carries", out.display());
    }
    outln!("run it: the device tool's run with carry [\"{}\"], command `bash {}/run.sh`", out.display(), out.display());
    Ok(())
}

/// The files under `dir`, sorted.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() { todo.push(p) } else { files.push(p) }
        }
    }
    files.sort();
    Ok(files)
}
