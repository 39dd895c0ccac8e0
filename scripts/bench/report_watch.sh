#!/usr/bin/env bash
# CPU cost of keeping report.html up to date while a study runs: `report --watch SECS`
# (incremental: the event log is parsed once over all rewrites) against a one-off `report`
# every SECS seconds (each parses the whole log). Each side watches its own `tune` of
# BUDGET on the committed digits; one JSON line per side on stdout.
#   XTASK=target/release/xtask BUDGET=60s SECS=5 bash scripts/bench/report_watch.sh
set -euo pipefail
XTASK=${XTASK:-target/release/xtask}
BUDGET=${BUDGET:-60s}
SECS=${SECS:-5}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export RUST_BACKTRACE=0

cpu_of() { # user+sys seconds from /usr/bin/time -f '%U %S' output file
  awk '{ s += $1 + $2 } END { printf "%.3f", s }' "$1"
}

# Side 1: --watch.
"$XTASK" tune --budget "$BUDGET" --out "$TMP/watch" --progress off > "$TMP/watch.tune" 2>&1 &
/usr/bin/time -f '%U %S' -o "$TMP/watch.time" "$XTASK" report "$TMP/watch" --watch "$SECS" > "$TMP/watch.out"
wait
writes=$(grep -c '^wrote' "$TMP/watch.out")
trials=$(sed -n 's/.* \([0-9]*\) trials in .*/\1/p' "$TMP/watch.tune")
events=$(stat -c %s "$TMP/watch/events.jsonl")
echo "{\"side\":\"watch\",\"secs\":$SECS,\"budget\":\"$BUDGET\",\"writes\":$writes,\"cpu_s\":$(cpu_of "$TMP/watch.time"),\"trials\":$trials,\"events_bytes\":$events}"

# Side 2: a one-off report every SECS seconds until the study is finished.
"$XTASK" tune --budget "$BUDGET" --out "$TMP/once" --progress off > "$TMP/once.tune" 2>&1 &
tune=$!
: > "$TMP/once.time"
writes=0
while :; do
  done_=0
  kill -0 "$tune" 2>/dev/null || done_=1
  if [ -f "$TMP/once/study.sqlite" ]; then
    /usr/bin/time -f '%U %S' -a -o "$TMP/once.time" "$XTASK" report "$TMP/once" > /dev/null 2>&1 && writes=$((writes + 1))
  fi
  [ "$done_" = 1 ] && break
  sleep "$SECS"
done
wait
trials=$(sed -n 's/.* \([0-9]*\) trials in .*/\1/p' "$TMP/once.tune")
events=$(stat -c %s "$TMP/once/events.jsonl")
echo "{\"side\":\"once\",\"secs\":$SECS,\"budget\":\"$BUDGET\",\"writes\":$writes,\"cpu_s\":$(cpu_of "$TMP/once.time"),\"trials\":$trials,\"events_bytes\":$events}"
