#!/usr/bin/env bash
# What a one-off `report` of a study kept in PostgreSQL costs (wall, peak memory), from the
# database alone and with the worker's folder: one worker runs the default digits study for
# BUDGET on a throw-away server (.ci/postgres.sh, as root), then the report runs RUNS times
# each way. Usage: XTASK=target/release/xtask BUDGET=60s RUNS=3 bash scripts/bench/report_pg.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
XTASK="${XTASK:-target/release/xtask}"
BUDGET="${BUDGET:-60s}"
RUNS="${RUNS:-3}"
source .ci/postgres.sh
trap tuneforge_pg_stop EXIT
export RUST_BACKTRACE=0
work="$(mktemp -d /tmp/report-pg.XXXXXX)"
"$XTASK" tune --storage "$TUNEFORGE_PG_URL" --study big --worker w1 --budget "$BUDGET" \
    --out "$work/w1" --trial-lines none 2>&1 | tail -1
for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "database alone: %e s wall, %M KB peak" \
        "$XTASK" report --storage "$TUNEFORGE_PG_URL" --study big "$work/db" 2>&1 | tail -2
    /usr/bin/time -f "with --worker-dir: %e s wall, %M KB peak" \
        "$XTASK" report --storage "$TUNEFORGE_PG_URL" --study big --worker-dir "$work/w1" "$work/dir" 2>&1 | tail -1
done
rm -rf "$work"
