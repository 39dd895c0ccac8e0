#!/usr/bin/env bash
# Makes crates/agent/policies/digits.json, the policy an `rl` study starts from with
# `--policy digits` (the default start is untrained): an rl study on the embedded digits dataset (tune's defaults: MLP 64, batch 32,
# trials of 300 × 32 rows, a decision every 30 × 32, λ 0.01/9), started from an untrained policy, for BUDGET
# (default 60s); its final policy state, pretty-printed. Throughput enters the reward, so the
# result depends a little on the machine; the shipped file was made on the 2-core dev machine,
# before commit 54f5320 (then λ was 0.14/9 and every trial started at the defaults and ran to
# its end): rerunning this makes a different prior (see crates/agent/policies/README.md).
#
#     scripts/pretrain-policy.sh [BUDGET]
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60s}"
out=runs/pretrain-digits
rm -rf "$out"
cargo xtask tune --dataset digits --strategy rl --policy untrained --budget "$budget" --seed 0 --out "$out"
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), indent=1); open(sys.argv[2], "a").write("\n")' \
    "$out/policy.json" crates/agent/policies/digits.json
echo "wrote crates/agent/policies/digits.json from $out/policy.json"
