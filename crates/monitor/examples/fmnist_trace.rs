//! Records a clean training trace: a candle-nn MLP 784-256-10 (ReLU, Adam 1e-3, batch 128,
//! pixels / 255) trained on Fashion-MNIST, one JSON line per step with loss, gradient norm,
//! samples and wall time. The committed fixture `tests/fixtures/fmnist_trace.jsonl` was made by
//!
//! ```text
//! cargo run --release -p tuneforge-monitor --example fmnist_trace -- \
//!     crates/monitor/tests/fixtures/fmnist_trace.jsonl 2
//! ```
//!
//! (arguments: output path, epochs; data from `TUNEFORGE_DATA` or `../shared/datasets`).
#![allow(clippy::unwrap_used)] // an example: failures should stop it loudly.

#[path = "../tests/support/mlp.rs"]
mod mlp;
#[path = "../tests/support/trace.rs"]
mod trace;

use std::io::Write as _;

fn main() -> mlp::Res<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "fmnist_trace.jsonl".into());
    let epochs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    let cache = tempfile::tempdir()?;
    let loader = mlp::loader(tuneforge_loader::Known::FashionMnistTrain, cache.path(), 7, true)?;
    let mut trainer = mlp::Trainer::new(loader, 1e-3)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut step = 0u64;
    loop {
        let r = trainer.step(128)?;
        let row = trace::TraceRow {
            step,
            epoch: r.epoch as u32,
            loss: r.loss as f32,
            grad_norm: r.grad_norm as f32,
            samples: r.rows as u32,
            seconds: r.seconds as f32,
        };
        serde_json::to_writer(&mut file, &row)?;
        file.write_all(b"\n")?;
        step += 1;
        if r.end_of_epoch {
            eprintln!("epoch {} done at step {step}: loss {:.4}", r.epoch, r.loss);
            if r.epoch + 1 >= epochs {
                break;
            }
        }
    }
    file.flush()?;
    eprintln!("{step} steps written to {out}");
    Ok(())
}
