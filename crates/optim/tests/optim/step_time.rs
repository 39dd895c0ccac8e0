//! Step time of the fused AdamW against candle-nn's `AdamW` on the parameters of the
//! mlp 784-1024-1024-10 (1.86 M). A measurement, not a check; run it on a quiet machine:
//!
//! ```text
//! cargo test -p tuneforge-optim --release --test optim -- --ignored step_time --nocapture
//! ```

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use candle_nn::Optimizer as _;
use tuneforge_optim::{Adam, AdamWConfig, Optimizer};

use crate::Lcg;

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn step_time_fused_adamw_vs_candle_nn() {
    let shapes: [&[usize]; 6] = [&[1024, 784], &[1024], &[1024, 1024], &[1024], &[10, 1024], &[10]];
    let mut rng = Lcg::new(1);
    let ours: Vec<Var> = shapes.iter().map(|s| rng.var(s, DType::F32)).collect();
    let theirs: Vec<Var> = ours.iter().map(crate::clone_var).collect();
    let grads_for = |vars: &[Var], rng: &mut Lcg| {
        let mut g = GradStore::default();
        for v in vars {
            g.insert(v.as_tensor(), rng.tensor(v.dims(), DType::F32));
        }
        g
    };
    let g_ours = grads_for(&ours, &mut Lcg::new(2));
    let g_theirs = grads_for(&theirs, &mut Lcg::new(2));

    let named = ours.iter().enumerate().map(|(i, v)| (format!("p{i}"), v.clone()));
    let mut fused = Adam::new_adamw(named, AdamWConfig::default()).unwrap();
    let mut reference = candle_nn::AdamW::new(theirs.clone(), candle_nn::ParamsAdamW::default()).unwrap();

    let time = |f: &mut dyn FnMut()| {
        for _ in 0..5 {
            f();
        }
        let mut best = f64::INFINITY;
        let mut total = 0.0;
        let n = 30;
        for _ in 0..n {
            let t = Instant::now();
            f();
            let s = t.elapsed().as_secs_f64();
            best = best.min(s);
            total += s;
        }
        (total / n as f64 * 1e3, best * 1e3)
    };
    let (ours_mean, ours_best) = time(&mut || fused.step(&g_ours).unwrap());
    let (nn_mean, nn_best) = time(&mut || reference.step(&g_theirs).unwrap());
    eprintln!(
        "AdamW step, 1.86 M f32 parameters: fused {ours_mean:.2} ms (best {ours_best:.2}), \
         candle-nn {nn_mean:.2} ms (best {nn_best:.2}), ratio {:.1}x",
        nn_mean / ours_mean
    );
    // Same arithmetic: after the same 35 steps on the same gradients, the same bits.
    for (a, b) in ours.iter().zip(&theirs) {
        crate::assert_same(a.as_tensor(), b.as_tensor(), "after timing");
    }
}
