#!/usr/bin/env bash
# Peak memory and wall time of `predict` on a large CSV table: the committed digits rows
# repeated to ROWS rows (~147 MB at 1,000,000), a model from a 5-s `tune`, predictions to a
# file. One JSON line per binary and run on stdout; give BEFORE=path/to/older/xtask to
# measure an older build beside XTASK in the same run (their outputs must be equal).
#   XTASK=target/release/xtask BEFORE=/tmp/xtask-before ROWS=1000000 RUNS=2 bash scripts/bench/predict_memory.sh
set -euo pipefail
XTASK=${XTASK:-target/release/xtask}
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export RUST_BACKTRACE=0

"$XTASK" tune --budget 5s --out "$TMP/model" --progress off > "$TMP/tune.log" 2>&1
python3 - "$TMP/big.csv" "$ROWS" <<'PY'
import sys
lines = open("datasets/digits.csv").read().splitlines()
head, rows = lines[0], lines[1:]
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write(head + "\n")
    for i in range(n):
        f.write(rows[i % len(rows)] + "\n")
PY
bytes=$(stat -c %s "$TMP/big.csv")
for side in XTASK ${BEFORE:+BEFORE}; do
  bin=${!side}
  for run in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M' -o "$TMP/time" "$bin" predict --model "$TMP/model" --dataset "csv:$TMP/big.csv" \
      --out "$TMP/$side.csv" 2> "$TMP/$side.log"
    read -r wall rss < "$TMP/time"
    echo "{\"binary\":\"$side\",\"run\":$run,\"rows\":$ROWS,\"csv_bytes\":$bytes,\"wall_s\":$wall,\"max_rss_kb\":$rss}"
  done
done
if [ -n "${BEFORE:-}" ]; then
  cmp "$TMP/XTASK.csv" "$TMP/BEFORE.csv" && echo '{"outputs":"equal"}'
fi
