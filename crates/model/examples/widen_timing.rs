//! Where the time of widening a 1024-wide layer goes (a profiling aid, not a benchmark).
use std::time::Instant;

use candle_core::{Device, Tensor};
use tuneforge_model::{ModelSpec, WidenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = ModelSpec::preset("mlp:1024,1024", &[784], 10)?;
    for _ in 0..3 {
        let mut m = spec.init_seeded(&Device::Cpu, 0)?;
        let t = Instant::now();
        let ch = m.widen(0, 1536, WidenOptions::default())?;
        let widen = t.elapsed();
        let w = m.vars()[2].1.as_tensor().clone();
        let t = Instant::now();
        let idx = Tensor::arange(0u32, 1024, &Device::Cpu)?;
        let _g = w.index_select(&idx, 1)?;
        let sel = t.elapsed();
        let t = Instant::now();
        let mut m2 = spec.init_seeded(&Device::Cpu, 0)?;
        let _ = m2.narrow(0, 768)?;
        println!(
            "widen {widen:?} ({} changes), index_select axis1 1024x1536 {sel:?}, narrow {:?}",
            ch.len(),
            t.elapsed()
        );
    }
    Ok(())
}
