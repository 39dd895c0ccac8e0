#!/usr/bin/env bash
# Training/inference throughput of tuneforge (cargo xtask bench-step) and PyTorch
# (../shared/bench/torch_throughput.py) on the same machine, interleaved, one JSON line per
# measurement on stdout. Run on a quiet machine:
#
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy scikit-learn
#   cargo build --release -p xtask
#   TORCH_PY=/tmp/torchvenv/bin/python scripts/bench/compare_torch.sh > bench.jsonl
#
# Models: mlp:256 (torch mlp1), mlp:1024,1024 (mlp2), seed-cnn (cnn); batch 32/128/512;
# REPS repetitions each (default 1); THREADS worker threads (default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
TORCH_PY="${TORCH_PY:-python3}"
REPS="${REPS:-1}"
THREADS="${THREADS:-2}"
MODELS="${MODELS:-mlp:256 mlp:1024,1024 seed-cnn}"
BATCHES="${BATCHES:-32 128 512}"
XTASK="${XTASK:-target/release/xtask}"  # or a copy, so that building can go on meanwhile
[ -x "$XTASK" ] || { echo "build first: cargo build --release -p xtask" >&2; exit 1; }
export TUNEFORGE_DATA="$SHARED/datasets" FMNIST_DIR="$SHARED/datasets/fashion-mnist"
# One measurement of each side for the current $model, $bs and $rep.
ours() { RAYON_NUM_THREADS=$THREADS "$XTASK" bench-step --model "$model" --batch-size "$bs" --threads "$THREADS" --seed "$rep"; }
torch() { "$TORCH_PY" "$SHARED/bench/torch_throughput.py" bench --model "$model" --bs "$bs" --reps 1 --threads "$THREADS"; }
for rep in $(seq 1 "$REPS"); do
  for model in $MODELS; do
    for bs in $BATCHES; do
      # Alternate which side goes first, so neither always runs on a warmer (or busier) machine.
      if [ $((rep % 2)) -eq 1 ]; then ours; torch; else torch; ours; fi
    done
  done
done
