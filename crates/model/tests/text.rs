//! Text layers: embedding, embedding bag (mean/max), conv1d, global max pool — checked
//! against plain loops over the same numbers, and through widen/narrow/save/load.

// The reference loops index several arrays by the same variable, as the maths is written.
#![allow(clippy::needless_range_loop)]

use candle_core::{Device, Tensor};
use tuneforge_model::*;

use super::{max_diff, sgd_step};

const VOCAB: usize = 40;
const LEN: usize = 12;

/// `n` texts of token ids (0 = padding at the end), deterministic, some shorter than
/// `LEN`, one of padding only; labels: class 1 when token 7 occurs.
fn texts(n: usize, seed: u64) -> (Vec<Vec<u32>>, Tensor, Tensor) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let len = if i == 0 { 0 } else { 1 + next() % LEN };
        let mut row: Vec<u32> = (0..len).map(|_| 1 + (next() % (VOCAB - 1)) as u32).collect();
        row.resize(LEN, 0);
        labels.push(u32::from(row.contains(&7)));
        rows.push(row);
    }
    let flat: Vec<f32> = rows.iter().flatten().map(|&t| t as f32).collect();
    let x = Tensor::from_vec(flat, (n, LEN), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    (rows, x, y)
}

fn bag(pool: Pool, dim: usize) -> ModelSpec {
    ModelSpec {
        input: vec![LEN],
        layers: vec![LayerSpec::EmbeddingBag { vocab: VOCAB, dim, pool }, LayerSpec::Linear { width: 2 }],
    }
}

/// The network's pooled vectors, computed by hand from the embedding table: a linear
/// output layer set to the identity (dim = classes) makes the logits the pooled vectors.
#[test]
fn embedding_bag_pools_the_vectors_of_the_non_padding_tokens() {
    for pool in [Pool::Mean, Pool::Max] {
        let dim = 2;
        let model = bag(pool, dim).init_seeded(&Device::Cpu, 3).unwrap();
        let vars = model.vars();
        vars[1].1.set(&Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu).unwrap()).unwrap();
        vars[2].1.set(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        let table = vars[0].1.as_tensor().to_vec2::<f32>().unwrap();
        assert!(table[0].iter().all(|&v| v == 0.0), "the padding row starts at zero");
        let (rows, x, _) = texts(16, 1);
        let got = model.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for (row, out) in rows.iter().zip(&got) {
            let tokens: Vec<usize> = row.iter().filter(|&&t| t != 0).map(|&t| t as usize).collect();
            for d in 0..dim {
                let values: Vec<f32> = tokens.iter().map(|&t| table[t][d]).collect();
                let want = match (pool, values.is_empty()) {
                    (_, true) => 0.0,
                    (Pool::Mean, false) => values.iter().sum::<f32>() / values.len() as f32,
                    (Pool::Max, false) => values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                };
                assert!((out[d] - want).abs() < 1e-5, "{pool:?} {row:?} dim {d}: {} vs {want}", out[d]);
            }
        }
    }
}

/// d(Σ out·R)/dW[t] = Σ over texts of R_text · (occurrences of t) / (tokens of the text),
/// for mean pooling; padding gets no gradient.
#[test]
fn embedding_bag_gradient_is_the_scattered_mean() {
    let dim = 3;
    let mut model = bag(Pool::Mean, dim).init_seeded(&Device::Cpu, 5).unwrap();
    let (rows, x, _) = texts(10, 2);
    // Probe the pooled output directly: a spec whose only layer after the bag is linear.
    let out = model.forward_train(&x).unwrap(); // [n, 2]
    let r = Tensor::new(&[0.3f32, -1.7], &Device::Cpu).unwrap();
    let loss = out.broadcast_mul(&r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let vars = model.vars();
    let g = grads.get(vars[0].1.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    let lin = vars[1].1.as_tensor().to_vec2::<f32>().unwrap(); // [2, dim]
    let rv = [0.3f32, -1.7];
    // dLoss/dpooled[d] = Σ_c R_c · lin[c][d], the same for every text.
    let dpool: Vec<f32> = (0..dim).map(|d| (0..2).map(|c| rv[c] * lin[c][d]).sum()).collect();
    let mut want = vec![vec![0f32; dim]; VOCAB];
    for row in &rows {
        let n = row.iter().filter(|&&t| t != 0).count();
        for &t in row.iter().filter(|&&t| t != 0) {
            for d in 0..dim {
                want[t as usize][d] += dpool[d] / n as f32;
            }
        }
    }
    for t in 0..VOCAB {
        for d in 0..dim {
            assert!((g[t][d] - want[t][d]).abs() < 1e-5, "token {t} dim {d}: {} vs {}", g[t][d], want[t][d]);
        }
    }
}

#[test]
fn text_cnn_forward_matches_loops() {
    let spec = ModelSpec::text_preset("text-cnn:4,3", LEN, VOCAB, 2).unwrap();
    let model = spec.init_seeded(&Device::Cpu, 8).unwrap();
    let vars = model.vars();
    let table = vars[0].1.as_tensor().to_vec2::<f32>().unwrap();
    let cw = vars[1].1.as_tensor().to_vec3::<f32>().unwrap(); // [3, 4, 5]
    let cb = vars[2].1.as_tensor().to_vec1::<f32>().unwrap();
    let lw = vars[3].1.as_tensor().to_vec2::<f32>().unwrap(); // [2, 3]
    let lb = vars[4].1.as_tensor().to_vec1::<f32>().unwrap();
    let (rows, x, _) = texts(6, 3);
    let got = model.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    for (row, out) in rows.iter().zip(&got) {
        // Embedded sequence with zero vectors at padding, conv k=5 pad=2, ReLU, max.
        let e = |p: isize, d: usize| -> f32 {
            if p < 0 || p >= LEN as isize { 0.0 } else { table[row[p as usize] as usize][d] }
        };
        let pooled: Vec<f32> = (0..3)
            .map(|c| {
                (0..LEN as isize)
                    .map(|p| {
                        let mut s = cb[c];
                        for d in 0..4 {
                            for k in 0..5 {
                                s += cw[c][d][k] * e(p + k as isize - 2, d);
                            }
                        }
                        s.max(0.0)
                    })
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        for k in 0..2 {
            let want = lb[k] + (0..3).map(|c| lw[k][c] * pooled[c]).sum::<f32>();
            assert!((out[k] - want).abs() < 1e-4, "{} vs {want}", out[k]);
        }
    }
}

#[test]
fn text_presets_have_the_expected_layers_and_parameter_counts() {
    let (v, l) = (1000, 50);
    let bag = ModelSpec::text_preset("text-bag:32,16", l, v, 2).unwrap();
    assert_eq!(bag.hidden_widths(), [32, 16]);
    assert_eq!(bag.parameter_count().unwrap(), v * 32 + (32 * 16 + 16) + (16 * 2 + 2));
    let cnn = ModelSpec::text_preset("text-cnn", l, v, 3).unwrap();
    assert_eq!(cnn.hidden_widths(), [64, 128]);
    assert_eq!(cnn.parameter_count().unwrap(), v * 64 + (64 * 5 * 128 + 128) + (128 * 3 + 3));
    assert_eq!(cnn.shapes().unwrap()[1], [128, l]);
    for bad in ["text-cnn:64", "text-bag:0", "text-rnn", "text-bag:a"] {
        assert!(matches!(ModelSpec::text_preset(bad, l, v, 2), Err(Error::Preset { .. })), "{bad}");
    }
    assert!(matches!(ModelSpec::preset("text-bag", &[l], 2), Err(Error::Preset { .. })));
    // An embedding anywhere but first is refused with the layer's index.
    let mut spec = ModelSpec::mlp(l, &[8], 2);
    spec.layers.insert(2, LayerSpec::Embedding { vocab: v, dim: 4 });
    assert!(matches!(spec.shapes(), Err(Error::Spec { layer: 2, .. })));
    let json = serde_json::to_string(&cnn).unwrap();
    assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), cnn);
}

#[test]
fn token_ids_outside_the_vocabulary_are_a_typed_error() {
    let model = bag(Pool::Mean, 4).init_seeded(&Device::Cpu, 1).unwrap();
    for bad in [VOCAB as f32, -1.0, 2.5, f32::NAN] {
        let mut v = vec![1f32; LEN];
        v[3] = bad;
        let x = Tensor::from_vec(v, (1, LEN), &Device::Cpu).unwrap();
        match model.forward(&x) {
            Err(Error::TokenId { vocab, .. }) => assert_eq!(vocab, VOCAB),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// Every hidden width — the embedding's dimension included — widens without changing
/// the function and narrows back to the same function.
#[test]
fn widening_and_narrowing_back_preserve_text_models() {
    for name in ["text-bag:6,5", "text-bag-max:6,5", "text-cnn:6,4,5"] {
        let spec = ModelSpec::text_preset(name, LEN, VOCAB, 2).unwrap();
        let (_, x, y) = texts(32, 4);
        let mut model = spec.init_seeded(&Device::Cpu, 2).unwrap();
        for _ in 0..3 {
            sgd_step(&mut model, &x, &y, 0.1);
        }
        let before = model.forward(&x).unwrap();
        for layer in model.spec().hidden_layers() {
            let w = model.spec().layers[layer].width().unwrap();
            let changes = model.widen(layer, 2 * w + 1, WidenOptions { noise: 0.0, seed: 3 }).unwrap();
            assert!(!changes.is_empty());
            let d = max_diff(&before, &model.forward(&x).unwrap());
            assert!(d < 1e-5, "{name} layer {layer} widened: diff {d}");
            model.narrow(layer, w).unwrap();
            let d = max_diff(&before, &model.forward(&x).unwrap());
            assert!(d < 1e-5, "{name} layer {layer} narrowed back: diff {d}");
        }
        assert_eq!(model.spec(), &spec, "{name}");
        // The embedding's units are its table's columns (axis 1).
        let changes = model.widen(0, 9, WidenOptions { noise: 0.1, seed: 1 }).unwrap();
        assert_eq!((changes[0].name.as_str(), changes[0].axis), ("layers.0.weight", 1));
        assert_eq!(model.vars()[0].1.dims(), [VOCAB, 9]);
        // Noise touches the new columns only.
        let table = model.vars()[0].1.as_tensor().to_vec2::<f32>().unwrap();
        let src = &changes[0].sources;
        assert!(src[..6].iter().enumerate().all(|(i, &s)| i == s));
        assert!(table.iter().skip(1).any(|r| (6..9).any(|j| r[j] != r[src[j]])), "{name}: new columns got noise");
        // Training goes on after the change.
        let l0 = sgd_step(&mut model, &x, &y, 0.1);
        let mut l = l0;
        for _ in 0..20 {
            l = sgd_step(&mut model, &x, &y, 0.1);
        }
        assert!(l < l0, "{name}: loss {l} !< {l0}");
    }
}

/// Narrowing an embedding drops its least important columns: ‖column‖ · ‖outgoing‖.
#[test]
fn narrowing_an_embedding_drops_the_weakest_dimension() {
    let mut model = bag(Pool::Mean, 3).init_seeded(&Device::Cpu, 0).unwrap();
    let vars = model.vars();
    let mut table = vars[0].1.as_tensor().to_vec2::<f32>().unwrap();
    for row in table.iter_mut() {
        row[1] *= 1e-3; // dimension 1 carries almost nothing
    }
    let flat: Vec<f32> = table.into_iter().flatten().collect();
    vars[0].1.set(&Tensor::from_vec(flat, (VOCAB, 3), &Device::Cpu).unwrap()).unwrap();
    let changes = model.narrow(0, 2).unwrap();
    assert_eq!(changes[0].sources, [0, 2]);
    assert_eq!(model.spec().hidden_widths(), [2]);
}

#[test]
fn text_models_save_and_load_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.safetensors");
    let (_, x, _) = texts(8, 5);
    for name in ["text-bag-max:5,4", "text-cnn:5,4,3"] {
        let model = ModelSpec::text_preset(name, LEN, VOCAB, 2).unwrap().init_seeded(&Device::Cpu, 6).unwrap();
        model.save(&path).unwrap();
        let back = Model::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.spec(), model.spec());
        assert_eq!(max_diff(&model.forward(&x).unwrap(), &back.forward(&x).unwrap()), 0.0, "{name}");
    }
}
