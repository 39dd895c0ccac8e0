#!/usr/bin/env python3
"""Splits each bench-tune study's mean reward into its terms, from the studies' study.sqlite.

A trial's reward is  (F1 after the first interval − untrained F1)        [the start's reward]
                   + sum of decisions' (ΔF1 + λ·ln ρ) + final F1
                   = 2·F1_final − F1_untrained + λ·Σ ln ρ,
where F1_untrained is the validation macro-F1 of the untrained model (`untrained_val_f1` in
the trial's record). Studies written before the start's reward existed (no
`untrained_val_f1`) are read with the old formula, 2·F1_final − F1_first + λ·Σ ln ρ, F1_first
being the F1 after the first interval. This script prints, per strategy (mean ± sd over seeds
of the per-study mean over trials): the reward, the F1 it starts from, 2·final F1 and the
throughput term.

    python3 scripts/bench/reward_terms.py runs/bench-tune
"""
import json
import os
import sqlite3
import statistics
import sys
from collections import defaultdict


def study_terms(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute("select id, reward, val_macro_f1, status, record from trials").fetchall()
    first = dict(db.execute("select trial, macro_f1 from evaluations where idx = 0").fetchall())
    out = []
    for tid, reward, final, status, record in rows:
        if final is None or status.startswith("failed"):
            continue
        start = json.loads(record).get("untrained_val_f1")
        if start is None:
            start = first.get(tid)
        if start is None:
            continue
        thr = reward - (2 * final - start)
        out.append((reward, start, 2 * final, thr))
    return [statistics.mean(col) for col in zip(*out)] if out else None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "runs/bench-tune"
    per = defaultdict(list)
    for name in sorted(os.listdir(root)):
        db = os.path.join(root, name, "study.sqlite")
        if not os.path.exists(db):
            continue
        strategy = name.rsplit("-seed", 1)[0]
        terms = study_terms(db)
        if terms:
            per[strategy].append(terms)

    def fmt(xs):
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"

    print("| strategy | studies | reward | F1 it starts from | 2·final F1 | λ·Σ ln ρ |")
    print("|---|---:|---:|---:|---:|---:|")
    for strategy, studies in sorted(per.items(), key=lambda kv: -statistics.mean(s[0] for s in kv[1])):
        cols = list(zip(*studies))
        print(f"| {strategy} | {len(studies)} | " + " | ".join(fmt(c) for c in cols) + " |")


if __name__ == "__main__":
    main()
