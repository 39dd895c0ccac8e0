//! Target of the optimiser crate: checkpoints kept as one byte string in the study store.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use tuneforge_optim::Checkpoint;

use crate::{Verdict, same};

/// Bytes as `Checkpoint::from_bytes` reads them (manifest length, JSON manifest,
/// safetensors buffers), tried twice: as given, and with the manifest's record of the
/// buffers' length and hash made to fit (so that the fuzzer gets past the hash check). An
/// accepted checkpoint encodes to bytes that decode and encode to the same bytes; its
/// schedule gives finite, non-negative rates; and it restores into an optimiser built for
/// parameters shaped like its buffers, which then steps, or refuses with a typed error.
pub fn optim_checkpoint(data: &[u8]) -> Verdict {
    let as_given = check(data);
    let fitted = fit_hash(data).map_or(Verdict::Rejected, |fixed| check(&fixed));
    if as_given == Verdict::Accepted || fitted == Verdict::Accepted { Verdict::Accepted } else { Verdict::Rejected }
}

fn check(data: &[u8]) -> Verdict {
    let origin = Path::new("checkpoint");
    let Ok(checkpoint) = Checkpoint::from_bytes(data, origin) else { return Verdict::Rejected };
    let first =
        checkpoint.to_bytes().unwrap_or_else(|e| panic!("invariant broken: a loaded checkpoint does not encode: {e}"));
    let again = Checkpoint::from_bytes(&first, origin)
        .unwrap_or_else(|e| panic!("invariant broken: an encoded checkpoint does not decode: {e}"));
    let second = again.to_bytes().unwrap_or_else(|e| panic!("invariant broken: {e}"));
    same("checkpoint → bytes → checkpoint → bytes", &second, &first);

    if let Some(schedule) = &checkpoint.schedule {
        for step in [0, 1, schedule.step(), schedule.step().saturating_add(1), u64::MAX / 2, u64::MAX] {
            let lr = schedule.lr_at(step);
            assert!(lr.is_finite() && lr >= 0.0, "invariant broken: schedule rate {lr} at step {step}: {schedule:?}");
        }
    }

    let vars: Vec<(String, Var)> = checkpoint
        .optimizer
        .params
        .iter()
        .map(|(name, p)| {
            let shape = p.buffers.values().next().map_or_else(|| vec![1], |t| t.dims().to_vec());
            let var = Var::zeros(shape, DType::F32, &Device::Cpu).expect("a small variable");
            (name.clone(), var)
        })
        .collect();
    if let Ok(mut optimizer) = checkpoint.optimizer.config.build(vars.clone())
        && checkpoint.restore(optimizer.as_mut()).is_ok()
    {
        let loss =
            vars.iter().try_fold(Tensor::zeros((), DType::F32, &Device::Cpu).expect("a scalar"), |acc, (_, v)| {
                v.as_tensor().sqr().and_then(|s| s.sum_all()).and_then(|s| acc.add(&s))
            });
        if let Ok(loss) = loss {
            let _ = optimizer.backward_step(&loss);
        }
    }
    Verdict::Accepted
}

/// `data` with the manifest's `tensors.bytes` and `tensors.xxh3` set to the length and
/// hash of the bytes after the manifest; `None` when there is no JSON object to edit.
fn fit_hash(data: &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)).ok()?;
    let manifest = data.get(8..8usize.checked_add(len)?)?;
    let buffers = &data[8 + len..];
    let mut value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let tensors = value.as_object_mut()?.entry("tensors").or_insert_with(|| serde_json::json!({}));
    let tensors = tensors.as_object_mut()?;
    tensors.insert("bytes".into(), (buffers.len() as u64).into());
    tensors.insert("xxh3".into(), xxhash_rust::xxh3::xxh3_64(buffers).into());
    let json = serde_json::to_vec(&value).ok()?;
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(buffers);
    Some(out)
}
