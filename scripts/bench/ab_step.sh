#!/usr/bin/env bash
# A/B of `xtask bench-step` between two builds, interleaved, one JSON line per measurement
# on stdout ({"v": LABEL, "model", "bs", "round", "train", "infer"}). Run on a quiet machine:
#
#   A=/path/to/old/xtask B=target/release/xtask LABEL_A=before LABEL_B=after REPS=3 \
#     SHARED=../shared scripts/bench/ab_step.sh > ab.jsonl
#   python3 scripts/bench/ab_table.py ab.jsonl
#
# MODELS (default: mlp:256 mlp:1024,1024 seed-cnn), BATCHES (default: 32 128 512),
# THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
: "${A:?path of build A}" "${B:?path of build B}"
LABEL_A="${LABEL_A:-A}"
LABEL_B="${LABEL_B:-B}"
REPS="${REPS:-3}"
THREADS="${THREADS:-2}"
MODELS="${MODELS:-mlp:256 mlp:1024,1024 seed-cnn}"
BATCHES="${BATCHES:-32 128 512}"
export TUNEFORGE_DATA="$SHARED/datasets"
one() { # label binary model batch round
  RAYON_NUM_THREADS=$THREADS "$2" bench-step --model "$3" --batch-size "$4" --threads "$THREADS" --seed "$5" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print(json.dumps({"v": sys.argv[1], "model": sys.argv[2], "bs": int(sys.argv[3]), "round": int(sys.argv[4]), "train": r["train_samples_per_s"], "infer": r["infer_samples_per_s"]}))' "$1" "$3" "$4" "$5"
}
for round in $(seq 1 "$REPS"); do
  for model in $MODELS; do
    for bs in $BATCHES; do
      # Alternate which build goes first, so neither always runs on a warmer machine.
      if [ $((round % 2)) -eq 1 ]; then
        one "$LABEL_A" "$A" "$model" "$bs" "$round"; one "$LABEL_B" "$B" "$model" "$bs" "$round"
      else
        one "$LABEL_B" "$B" "$model" "$bs" "$round"; one "$LABEL_A" "$A" "$model" "$bs" "$round"
      fi
    done
  done
done
