#!/usr/bin/env bash
# Peak memory and wall time of `predict` on a large input, predictions to a file. One JSON
# line per binary and run on stdout; give BEFORE=path/to/older/xtask to measure an older
# build beside XTASK in the same run (their outputs must be equal).
#   INPUT=csv: the committed digits rows repeated to ROWS rows (~147 MB at 1,000,000), a
#              model from a 5-s `tune`.
#   INPUT=idx: Fashion-MNIST's 10,000 test images repeated to ROWS images (an IDX file of
#              784 bytes an image: ~157 MB at 200,000), a model from one epoch of
#              `train --model mlp:256` (needs TUNEFORGE_DATA, default ../shared/datasets).
#   INPUT=jsonl: the SpamAssassin e-mails (6,046, 34 MB of JSON lines) repeated to ROWS lines
#              (~565 MB at 100,000), a model from one epoch of `train` on them (TUNEFORGE_DATA).
#   XTASK=target/release/xtask BEFORE=/tmp/xtask-before ROWS=1000000 RUNS=2 bash scripts/bench/predict_memory.sh
#   INPUT=idx XTASK=target/release/xtask BEFORE=/tmp/xtask-before ROWS=200000 RUNS=2 bash scripts/bench/predict_memory.sh
set -euo pipefail
XTASK=${XTASK:-target/release/xtask}
INPUT=${INPUT:-csv}
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export RUST_BACKTRACE=0
export TUNEFORGE_DATA=${TUNEFORGE_DATA:-../shared/datasets}

case "$INPUT" in
  csv)
    "$XTASK" tune --budget 5s --out "$TMP/model" --progress off > "$TMP/train.log" 2>&1
    python3 - "$TMP/big" "$ROWS" <<'PY'
import sys
lines = open("datasets/digits.csv").read().splitlines()
head, rows = lines[0], lines[1:]
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write(head + "\n")
    for i in range(n):
        f.write(rows[i % len(rows)] + "\n")
PY
    ;;
  idx)
    "$XTASK" train --dataset fashion-mnist --model mlp:256 --epochs 1 --out "$TMP/model" > "$TMP/train.log" 2>&1
    python3 - "$TMP/big" "$ROWS" "$TUNEFORGE_DATA/fashion-mnist/t10k-images-idx3-ubyte.gz" <<'PY'
import gzip, struct, sys
raw = gzip.open(sys.argv[3]).read()
n, rows, cols = struct.unpack(">III", raw[4:16])
images, size = raw[16:], rows * cols
want = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack(">IIII", 0x803, want, rows, cols))
    for start in range(0, want, n):
        f.write(images[: min(n, want - start) * size])
PY
    ;;
  jsonl)
    spam="$TUNEFORGE_DATA/spamassassin/spamassassin.jsonl.gz"
    "$XTASK" train --dataset "jsonl:$spam" --model text-bag:64,64 --epochs 1 --out "$TMP/model" > "$TMP/train.log" 2>&1
    python3 - "$TMP/big" "$ROWS" "$spam" <<'PY'
import gzip, sys
lines = gzip.open(sys.argv[3]).read().splitlines(keepends=True)
want = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    for i in range(want):
        f.write(lines[i % len(lines)])
PY
    ;;
  *) echo "INPUT must be csv, idx or jsonl, not $INPUT" >&2; exit 2 ;;
esac
bytes=$(stat -c %s "$TMP/big")
for side in XTASK ${BEFORE:+BEFORE}; do
  bin=${!side}
  for run in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M' -o "$TMP/time" "$bin" predict --model "$TMP/model" --dataset "$INPUT:$TMP/big" \
      --out "$TMP/$side.csv" 2> "$TMP/$side.log"
    read -r wall rss < "$TMP/time"
    echo "{\"binary\":\"$side\",\"input\":\"$INPUT\",\"run\":$run,\"rows\":$ROWS,\"input_bytes\":$bytes,\"wall_s\":$wall,\"max_rss_kb\":$rss}"
  done
done
if [ -n "${BEFORE:-}" ]; then
  cmp "$TMP/XTASK.csv" "$TMP/BEFORE.csv" && echo '{"outputs":"equal"}'
fi
