//! Targets of the model: specs (serde JSON) and saved models (safetensors + spec).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tuneforge_model::{Model, ModelSpec};

use crate::{Verdict, same};

/// Largest spec (parameters, FLOPs per sample, activation values per sample) the target
/// builds and runs; bigger ones only get their arithmetic checked.
const BUILD_LIMIT: u64 = 200_000;

/// A model spec as JSON (the `path.json` beside a saved model, the metadata inside it).
/// Accepted when it parses and its shapes are consistent. Checks: JSON round trip; shape
/// arithmetic agrees with itself (parameter count and FLOPs exist iff the shapes do, the
/// last shape is `[classes]`); a small spec builds, has the parameter count it announced,
/// and gives `[batch, classes]` logits in eval and train mode.
pub fn model_spec(data: &[u8]) -> Verdict {
    let Ok(spec) = serde_json::from_slice::<ModelSpec>(data) else { return Verdict::Rejected };
    let json = serde_json::to_string(&spec).expect("a spec serialises");
    let back: ModelSpec = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("invariant broken: a serialised spec does not parse: {e}\n{json}"));
    same("spec → JSON → spec", &back, &spec);

    let _ = (spec.classes(), spec.hidden_layers(), spec.hidden_widths());
    let (shapes, params, flops) = (spec.shapes(), spec.parameter_count(), spec.flops_per_sample());
    let Ok(shapes) = shapes else {
        assert!(params.is_err() && flops.is_err(), "invariant broken: counts of a spec without shapes");
        return Verdict::Rejected;
    };
    let params = params.unwrap_or_else(|e| panic!("invariant broken: shapes but no parameter count: {e}"));
    let flops = flops.unwrap_or_else(|e| panic!("invariant broken: shapes but no FLOPs: {e}"));
    same("one shape per layer", &shapes.len(), &spec.layers.len());
    same("last shape = [classes]", &shapes.last(), &Some(&vec![spec.classes()]));
    same("hidden widths per hidden layer", &spec.hidden_widths().len(), &spec.hidden_layers().len());

    let values = std::iter::once(&spec.input)
        .chain(&shapes)
        .map(|s| s.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)))
        .try_fold(0u64, |acc, n| acc.checked_add(n?));
    let small = |n: Option<u64>| n.is_some_and(|n| n <= BUILD_LIMIT);
    if small(Some(params as u64)) && small(Some(flops)) && small(values) {
        build_and_run(&spec, params);
    }
    Verdict::Accepted
}

fn build_and_run(spec: &ModelSpec, params: usize) {
    let device = Device::Cpu;
    let mut model = spec
        .init_seeded(&device, 1)
        .unwrap_or_else(|e| panic!("invariant broken: a consistent spec does not build: {e}"));
    same("built parameters = announced", &model.parameter_count(), &params);
    let batch = 2;
    let mut dims = vec![batch];
    dims.extend(&spec.input);
    let x = Tensor::ones(dims, DType::F32, &device).expect("a small input tensor");
    let want = [batch, spec.classes()];
    let eval = model.forward(&x).unwrap_or_else(|e| panic!("invariant broken: forward failed: {e}"));
    same("eval logits shape", &eval.dims(), &&want[..]);
    let train = model.forward_train(&x).unwrap_or_else(|e| panic!("invariant broken: forward_train failed: {e}"));
    same("train logits shape", &train.dims(), &&want[..]);
}

/// A saved model (safetensors bytes with the spec in the metadata) as `Model::load` reads
/// it, tried as given and with the header length made to fit the header. An accepted model
/// saves again to bytes that load to the same spec and tensors, bit for bit.
pub fn model_checkpoint(data: &[u8]) -> Verdict {
    let as_given = check_checkpoint(data);
    let fitted = fit_header_length(data).map_or(Verdict::Rejected, |fixed| check_checkpoint(&fixed));
    if as_given == Verdict::Accepted || fitted == Verdict::Accepted { Verdict::Accepted } else { Verdict::Rejected }
}

/// `data` with the safetensors header length (its first 8 bytes) set to the length of the
/// JSON object that follows, so that the fuzzer can grow or shrink the header (the spec in
/// its metadata, a tensor's shape) without also fixing the length; `None` when no JSON
/// object follows or the length already fits.
fn fit_header_length(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.get(8..)?;
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
    let _object = values.next()?.ok()?.as_object()?.len();
    // The padding safetensors writes after the JSON (spaces) belongs to the header.
    let end = values.byte_offset();
    let len = (end + rest[end..].iter().take_while(|&&b| b == b' ').count()) as u64;
    if data[..8] == len.to_le_bytes() {
        return None;
    }
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(rest);
    Some(out)
}

fn check_checkpoint(data: &[u8]) -> Verdict {
    let path = Path::new("model.safetensors");
    let Ok(model) = Model::from_safetensors(data, path, &Device::Cpu) else { return Verdict::Rejected };
    let bytes =
        model.to_safetensors(path).unwrap_or_else(|e| panic!("invariant broken: a loaded model does not save: {e}"));
    let again = Model::from_safetensors(&bytes, path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("invariant broken: a saved model does not load: {e}"));
    same("spec after save + load", again.spec(), model.spec());
    let (a, b) = (tensors(&model), tensors(&again));
    same("tensors after save + load", &b, &a);
    Verdict::Accepted
}

/// Name, shape and the bits of every value of each tensor.
fn tensors(model: &Model) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    model
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("model tensors are f32");
            (name, t.dims().to_vec(), values.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}
