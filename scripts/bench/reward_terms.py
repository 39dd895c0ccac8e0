#!/usr/bin/env python3
"""Splits each bench-tune study's mean reward into its terms, from the studies' study.sqlite.

A trial's reward is  sum of decisions' (ΔF1 + λ·ln ρ) + final F1
                   = 2·F1_final − F1_first + λ·Σ ln ρ,
where F1_first is the validation macro-F1 after the first interval, trained before any
decision with the trial's starting configuration. Strategies that draw random starts
(random, asha, pbt) have trials with a low F1_first, which *raises* their reward; `fixed`, `rl`
and `rl-no-width` all start from the default configuration. This script prints, per
strategy (mean ± sd over seeds of the per-study mean over trials): the reward, F1_first,
2·F1_final, the throughput term, and reward + F1_first (= 2·F1_final + λ·Σ ln ρ, the reward
with the start's head start removed).

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
    rows = db.execute("select id, reward, val_macro_f1, status from trials").fetchall()
    first = dict(db.execute("select trial, macro_f1 from evaluations where idx = 0").fetchall())
    out = []
    for tid, reward, final, status in rows:
        if final is None or status.startswith("failed") or tid not in first:
            continue
        f1_first = first[tid]
        thr = reward - (2 * final - f1_first)
        out.append((reward, f1_first, 2 * final, thr, reward + f1_first))
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

    print("| strategy | studies | reward | F1 after the first interval | 2·final F1 | λ·Σ ln ρ | reward + first F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for strategy, studies in sorted(per.items(), key=lambda kv: -statistics.mean(s[4] for s in kv[1])):
        cols = list(zip(*studies))
        print(f"| {strategy} | {len(studies)} | " + " | ".join(fmt(c) for c in cols) + " |")


if __name__ == "__main__":
    main()
