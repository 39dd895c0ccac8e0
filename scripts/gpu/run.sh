#!/usr/bin/env bash
# tuneforge's GPU run (issue 7), packed by `cargo xtask gpu-bundle` into gpu-bundle/run.sh.
# It builds nothing: it unpacks the cuda binary carried beside it and, on the GPU machine,
#   1. finds the CUDA 13 libraries (../shared/CUDA.md §2) and checks that `ldd` resolves them;
#   2. runs `xtask gpu-check` (fused optimiser against candle-nn and the CPU, widen/narrow,
#      checkpoints);
#   3. measures training samples/s of mlp:256, mlp:1024,1024 and seed-cnn at batch 128 and
#      1024 with `xtask bench-step` and with ../shared/bench/torch_throughput.py on the same
#      card, interleaved, REPS times (default 1), plus the fused optimiser switched off for
#      the A/B of its share;
#   4. runs a 2-minute `xtask tune` on Fashion-MNIST on the GPU, then `xtask predict` with its
#      model on the test split on the GPU and on the CPU.
# Results go to $OUT (the device tool's output folder; /tmp/tuneforge-gpu-out otherwise). Every stage has a
# timeout, and a failing stage does not stop the later ones. About 6 minutes on an H100.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
# Scratch (the unpacked binary, the inflated dataset cache, the study) stays out of the bundle,
# and so do the results when $OUT is not set (a run outside the device tool).
W=${TMPDIR:-/tmp}/tuneforge-gpu-run
rm -rf "$W" && mkdir -p "$W"
OUT=${OUT:-${TMPDIR:-/tmp}/tuneforge-gpu-out}
REPS=${REPS:-1}
mkdir -p "$OUT"
# What comes back (the device tool returns at most 8 files): run.log (everything printed,
# ldd and nvidia-smi included), gpu-check.jsonl, bench.jsonl, tune-summary.json.
exec > >(tee -a "$OUT/run.log") 2>&1
stage() { echo "== $(date -u +%T) $*"; }
status=0
fail() { echo "FAILED: $*"; status=1; }

stage "unpack"
cat "$B/MANIFEST.txt" 2>/dev/null
gunzip -c "$B/xtask.gz" > "$W/xtask" && chmod +x "$W/xtask" || fail "gunzip"

PY=""
for p in python3 /opt/torch/.venv/bin/python3 python; do
  if command -v "$p" >/dev/null && "$p" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then PY=$p; break; fi
done
echo "python with torch+cuda: ${PY:-none}"
[ -n "$PY" ] && "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

stage "CUDA 13 libraries (../shared/CUDA.md §2)"
roots="/usr/local/nvidia /usr/local/cuda /usr/lib/x86_64-linux-gnu /usr/lib64"
[ -n "$PY" ] && roots="$roots $("$PY" -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)"
found=$(timeout 120 find $roots -xdev \( -name 'libcuda.so.1' -o -name 'libcublasLt.so.13*' -o -name 'libcublas.so.13*' \
        -o -name 'libnvrtc.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudart.so.13*' \) -not -path '*stubs*' 2>/dev/null)
libdirs=""
for lib in libcuda.so.1 libcublasLt.so.13 libcublas.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  hit=$(echo "$found" | grep "/$lib" | head -1)
  echo "$lib: ${hit:-not found}"
  [ -n "$hit" ] && libdirs="$libdirs:$(dirname "$hit")"
done
export LD_LIBRARY_PATH="${libdirs#:}:/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$W/xtask" | tee "$W/ldd.txt"
grep -q 'not found' "$W/ldd.txt" && fail "ldd: a library is not found"
nvidia-smi 2>&1 | head -20

export TUNEFORGE_DATA="$B/datasets" TUNEFORGE_CACHE="$W/cache" FMNIST_DIR="$B/datasets/fashion-mnist"
X="$W/xtask"

stage "gpu-check"
timeout 180 "$X" gpu-check --device cuda --out "$OUT/gpu-check.jsonl" || fail "gpu-check"

stage "throughput (tuneforge bench-step and PyTorch, interleaved)"
for rep in $(seq 1 "$REPS"); do
  for model in mlp:256 mlp:1024,1024 seed-cnn; do
    for bs in 128 1024; do
      timeout 120 "$X" bench-step --device cuda --model "$model" --batch-size "$bs" --seed "$rep" \
        | tee -a "$OUT/bench.jsonl" || fail "bench-step $model $bs"
      if [ -n "$PY" ]; then
        timeout 120 "$PY" "$B/torch_throughput.py" bench --device cuda --model "$model" --bs "$bs" --seed "$rep" \
          | tee -a "$OUT/bench.jsonl" || fail "torch $model $bs"
      fi
    done
  done
done
stage "fused optimiser off (A/B of its share)"
for model in mlp:256 mlp:1024,1024; do
  TUNEFORGE_FUSED_OPTIM=off timeout 120 "$X" bench-step --device cuda --model "$model" --batch-size 1024 --seed 1 \
    | tee -a "$OUT/bench.jsonl" || fail "bench-step fused off $model"
done

stage "tune: 2 minutes on Fashion-MNIST"
timeout 240 "$X" tune --dataset fashion-mnist --device cuda --budget 120s --progress plain --out "$W/tune" 2>&1 \
  | tail -40 || fail "tune"
cp "$W/tune/summary.json" "$OUT/tune-summary.json" 2>/dev/null || fail "tune wrote no summary.json"

stage "predict: the tuned model on the test split, on the GPU and on the CPU"
# The GPU-trained model loads on both devices: each prints its accuracy (to compare with the
# study's test_accuracy above), and the two must predict the same classes.
timeout 60 "$X" predict --model "$W/tune" --dataset fashion-mnist-test --device cuda --out "$W/pred-cuda.csv" || fail "predict cuda"
timeout 60 "$X" predict --model "$W/tune" --dataset fashion-mnist-test --device cpu --out "$W/pred-cpu.csv" || fail "predict cpu"
if [ -f "$W/pred-cuda.csv" ] && [ -f "$W/pred-cpu.csv" ]; then
  echo "predict: $(cmp -l "$W/pred-cuda.csv" "$W/pred-cpu.csv" 2>/dev/null | wc -l) bytes differ between cuda and cpu," \
       "$(paste -d'|' "$W/pred-cuda.csv" "$W/pred-cpu.csv" | awk -F'|' '$1 != $2' | wc -l) rows"
fi

stage "done (status $status)"
exit $status
