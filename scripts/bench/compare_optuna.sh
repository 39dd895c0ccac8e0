#!/usr/bin/env bash
# `cargo xtask tune` against Optuna (TPE sampler + median pruner,
# ../shared/bench/optuna_hpo.py) on Fashion-MNIST: the same machine, the same wall-clock
# budget and threads, the two sides one after the other for each seed (alternating which goes
# first). Then `scripts/bench/optuna_table.py "$OUT"` prints the comparison. Run on a quiet
# machine:
#
#   python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch optuna numpy scikit-learn
#   cargo build --release -p xtask
#   TORCH_PY=/tmp/torchvenv/bin/python scripts/bench/compare_optuna.sh
#
# SEEDS (default "0 1 2"), BUDGET seconds per study (default 600, the Optuna script's
# reference), THREADS (default 2), MODEL tuneforge starts from (default mlp:256: Optuna's
# space is one hidden layer of 32–1024 units), STRATEGY (default rl), OUT (default
# /tmp/compare-optuna; must not hold earlier results, unless ONLY is set). Extra tune flags:
# TUNE_ARGS. ONLY=tuneforge (or optuna) runs one side: e.g. another STRATEGY into an OUT that
# holds the Optuna runs already, which the table then shows beside the first.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
TORCH_PY="${TORCH_PY:-python3}"
SEEDS="${SEEDS:-0 1 2}"
BUDGET="${BUDGET:-600}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-mlp:256}"
STRATEGY="${STRATEGY:-rl}"
OUT="${OUT:-/tmp/compare-optuna}"
XTASK="${XTASK:-target/release/xtask}"  # or a copy, so that building can go on meanwhile
[ -x "$XTASK" ] || { echo "build first: cargo build --release -p xtask" >&2; exit 1; }
ONLY="${ONLY:-}"
case "$ONLY" in ""|tuneforge|optuna) ;; *) echo "ONLY is tuneforge or optuna, not $ONLY" >&2; exit 1 ;; esac
if [ "$ONLY" != tuneforge ]; then
  "$TORCH_PY" -c 'import optuna, torch, sklearn' || { echo "TORCH_PY needs torch, optuna and scikit-learn" >&2; exit 1; }
fi
if [ -z "$ONLY" ] && [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "$OUT holds earlier results; give another OUT (or ONLY=tuneforge to add a strategy)" >&2; exit 1
fi
mkdir -p "$OUT/optuna"
export TUNEFORGE_DATA="$SHARED/datasets" FMNIST_DIR="$SHARED/datasets/fashion-mnist"
{ date -u +%FT%TZ; nproc; grep -m1 'model name' /proc/cpuinfo || true; git rev-parse HEAD; } >> "$OUT/machine.txt"
ours() {
  echo "tuneforge $STRATEGY seed $seed" >&2
  RAYON_NUM_THREADS=$THREADS "$XTASK" tune --dataset fashion-mnist --model "$MODEL" --strategy "$STRATEGY" \
    --budget "${BUDGET}s" --seed "$seed" --out "$OUT/tuneforge-$STRATEGY-s$seed" --progress off ${TUNE_ARGS:-} \
    > "$OUT/tuneforge-$STRATEGY-s$seed.log" 2>&1
}
optuna() {
  echo "optuna seed $seed" >&2
  OPTUNA_OUT="$OUT/optuna" "$TORCH_PY" "$SHARED/bench/optuna_hpo.py" --seed "$seed" --budget "$BUDGET" \
    --threads "$THREADS" > "$OUT/optuna-s$seed.log" 2>&1
}
i=0
for seed in $SEEDS; do
  case "$ONLY" in
    tuneforge) ours ;;
    optuna) optuna ;;
    *) if [ $((i % 2)) -eq 0 ]; then ours; optuna; else optuna; ours; fi ;;
  esac
  i=$((i + 1))
done
python3 scripts/bench/optuna_table.py "$OUT"
