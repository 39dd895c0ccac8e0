#!/usr/bin/env python3
"""Median-of-rounds markdown table of JSON lines from ab_step.sh or compare_torch.sh: one row
per model and batch, a column pair per label, and the ratio second ÷ first label (in the
order first seen, or `--order FIRST,SECOND`). On a machine whose speed drifts, the medians
alone can mislead, so each ratio is followed by the rounds the second label won, pairing the
n-th measurement of one label with the n-th of the other (both scripts run the two sides of
a round back to back):

    python3 scripts/bench/ab_table.py [--order torch,tuneforge] FILE.jsonl...
"""
import json
import statistics
import sys
from collections import defaultdict

TORCH_NAMES = {"mlp1": "mlp:256", "mlp2": "mlp:1024,1024", "cnn": "seed-cnn"}


def normalise(r):
    """compare_torch.sh's lines (tuneforge's bench-step JSON, torch_throughput.py's) in
    ab_step.sh's form."""
    if "v" in r:
        return r
    return {
        "v": r["system"],
        "model": TORCH_NAMES.get(r["model"], r["model"]),
        "bs": r.get("batch_size", r.get("bs")),
        "train": r.get("train_samples_per_s", r.get("train_sps")),
        "infer": r.get("infer_samples_per_s", r.get("infer_sps")),
    }


args = sys.argv[1:]
order = None
if args[:1] == ["--order"]:
    order, args = args[1].split(","), args[2:]
rows = [normalise(json.loads(line)) for path in args for line in open(path) if line.strip()]
labels = order or list(dict.fromkeys(r["v"] for r in rows))
if len(labels) != 2 or not all(any(r["v"] == v for r in rows) for v in labels):
    sys.exit(f"expected two labels, found {labels}")
a, b = labels
cell = defaultdict(list)
for r in rows:
    cell[(r["model"], r["bs"], r["v"])].append(r)
keys = list(dict.fromkeys((r["model"], r["bs"]) for r in rows))
print(f"| model | batch | train {a} | train {b} | ratio (won) | infer {a} | infer {b} | ratio (won) | rounds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for model, bs in keys:
    med = {}
    for v in (a, b):
        rs = cell[(model, bs, v)]
        med[v] = (statistics.median(r["train"] for r in rs), statistics.median(r["infer"] for r in rs), len(rs))
    (ta, ia, n), (tb, ib, _) = med[a], med[b]
    pairs = list(zip(cell[(model, bs, a)], cell[(model, bs, b)]))
    won = {m: f"{sum(rb[m] > ra[m] for ra, rb in pairs)}/{len(pairs)}" for m in ("train", "infer")}
    print(
        f"| {model} | {bs} | {ta:,.0f} | {tb:,.0f} | {tb / ta:.2f}× ({won['train']}) "
        f"| {ia:,.0f} | {ib:,.0f} | {ib / ia:.2f}× ({won['infer']}) | {n} |"
    )
