#!/bin/bash
# One PostgreSQL worker on a fresh server: where its time goes (docs/benchmarks.md, "An `rl`
# PostgreSQL worker" and "ASHA on PostgreSQL").
#
#   XTASK=target/release/xtask STRATEGY=rl BUDGET=180 bash scripts/bench/pg_worker.sh [LABEL]
#
# Starts a throw-away server with .ci/postgres.sh (pg_stat_statements loaded), runs
# `$XTASK tune --storage ... --worker w1` on the default dataset (digits) for BUDGET seconds,
# then prints one JSON line: trials, trials per 30 s, statuses, the study store's seconds
# (`store_s`: the trials' own writes; `worker_store_s`: claims, lookups and merges) and the
# server's 12 most expensive statements (ms in all, calls, ms per call). Stops the server.
# Run it alone on the machine (never beside a build or another benchmark); the trial count
# of one binary moves by up to 20% between runs on a 2-core VM, the store seconds much less.
set -euo pipefail
cd "$(dirname "$0")/../.."
XTASK="${XTASK:-target/release/xtask}"
STRATEGY="${STRATEGY:-rl}"
BUDGET="${BUDGET:-180}"
LABEL="${1:-$STRATEGY}"
[ -x "$XTASK" ] || { echo "no binary at $XTASK (cargo build --release -p xtask)" >&2; exit 2; }
source .ci/postgres.sh >&2
trap tuneforge_pg_stop EXIT
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$TUNEFORGE_PG_DATA/postgresql.conf"
su postgres -c "$TUNEFORGE_PG_BIN/pg_ctl -D $TUNEFORGE_PG_DATA -w restart >/dev/null"
psql "$TUNEFORGE_PG_URL" -qc "create extension pg_stat_statements"
OUT="$(mktemp -d /tmp/tuneforge-pg-bench.XXXXXX)"
start=$(date +%s.%N)
"$XTASK" tune --storage "$TUNEFORGE_PG_URL" --study bench --worker w1 --strategy "$STRATEGY" \
    --budget "${BUDGET}s" --out "$OUT/run" --progress off >"$OUT/stdout" 2>"$OUT/stderr" \
    || { cat "$OUT/stderr" >&2; exit 1; }
end=$(date +%s.%N)
per30=$(psql "$TUNEFORGE_PG_URL" -Atc "select string_agg(n::text, ',' order by b) from (select floor((started_unix - (select min(started_unix) from trials where study = 'bench')) / 30) b, count(*) n from trials where study = 'bench' group by b) t")
statuses=$(psql "$TUNEFORGE_PG_URL" -Atc "select json_object_agg(status, n) from (select status, count(*) n from trials where study = 'bench' group by status) t")
statements=$(psql "$TUNEFORGE_PG_URL" -Atc "select json_agg(json_build_array(round(total_exec_time::numeric), calls, round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\s+', ' ', 'g'), 120))) from (select * from pg_stat_statements where query not like '%pg_stat_statements%' order by total_exec_time desc limit 12) s")
python3 - "$OUT/run/summary.json" "$LABEL" "$STRATEGY" "$BUDGET" "$start" "$end" "$per30" "$statuses" "$statements" <<'PY'
import json, sys
summary, label, strategy, budget, start, end, per30, statuses, statements = sys.argv[1:]
s = json.load(open(summary))
print(json.dumps({
    "label": label, "strategy": strategy, "budget_s": float(budget), "wall_s": round(float(end) - float(start), 1),
    "trials": len(s["trials"]), "trials_per_30s": [int(x) for x in per30.split(",") if x],
    "statuses": json.loads(statuses), "store_s": round(s["store_seconds"], 2),
    "worker_store_s": round(s["worker_store_seconds"], 2),
    "store_ms_per_trial": round(1000 * (s["store_seconds"] + s["worker_store_seconds"]) / max(1, len(s["trials"])), 2),
    "statements": json.loads(statements),
}))
PY
rm -rf "$OUT"
