#!/usr/bin/env python3
"""The table of scripts/bench/compare_optuna.sh: tuneforge's studies against Optuna's, per seed
and as means, from the directory the script wrote (OUT).

For each side and seed: the model each returns (tuneforge: summary.json's best trial; Optuna:
the best completed trial's model), its validation and test macro-F1; the number of trials;
and the seconds from the study's start until a validation macro-F1 of 0.86 / 0.88 was first
seen, at any evaluation and from a completed trial (Optuna: its curve's "epoch" and
"complete" rows; tuneforge: study.sqlite's validation evaluations and its completed trials'
final figures, against the study's created_unix, taken when its data were ready, as Optuna's
clock starts after loading), and the best completed trial's validation macro-F1 at 60 / 150 /
300 s. The two sides' validation sets differ (Optuna: 10,000 of the 60,000 training images;
tuneforge: 10% of them, 6,000, by its own seeded split); the test set is the same 10,000
images. OUT's tuneforge studies are its folders named tuneforge* (compare_optuna.sh writes
tuneforge-STRATEGY-sSEED; a row is labelled by the name between "tuneforge-" and "-sSEED",
else by the study's strategy): studies of several strategies or settings are shown side by
side, each against Optuna seed by seed. Usage: optuna_table.py OUT [--json FILE]
"""
import argparse
import csv
import glob
import json
import os
import re
import sqlite3
import statistics
import sys

THRESHOLDS = (0.86, 0.88)
AT = (60, 150, 300)


def first_reach(points, th):
    """Seconds of the first (t, f1) in time order with f1 >= th, or None."""
    return next((t for t, f in sorted(points) if f is not None and f >= th), None)


def best_by(points, t_max):
    vals = [f for t, f in points if t <= t_max and f is not None]
    return max(vals) if vals else None


def label(d):
    """The variant a study folder's name gives: tuneforge-asha-s0 → "asha", tuneforge-s0 → ""."""
    return re.sub(r"-?s\d+$", "", os.path.basename(os.path.normpath(d)).removeprefix("tuneforge").lstrip("-"))


def tuneforge(d):
    s = json.load(open(os.path.join(d, "summary.json")))
    db = sqlite3.connect(f"file:{os.path.join(d, 'study.sqlite')}?mode=ro", uri=True)
    (t0,) = db.execute("SELECT created_unix FROM study").fetchone()
    evals = [(at - t0, f) for at, f in db.execute(
        "SELECT at_unix, macro_f1 FROM evaluations WHERE split = 'validation'")]
    trials = db.execute("SELECT status, val_macro_f1, ended_unix FROM trials").fetchall()
    done = [(end - t0, f) for st, f, end in trials if st == "completed" and end is not None]
    best = s["best"] or {}
    hp = next((t["final_hparams"] for t in s["trials"] if t["id"] == best.get("trial")), None)
    return dict(
        side=f"tuneforge {label(d) or s['strategy']}", seed=s["seed"], wall_s=s["wall_s"], trials=len(trials), completed=len(done),
        best_val=best.get("val_macro_f1"), test=best.get("test_macro_f1"),
        best_any=max((f for _, f in evals if f is not None), default=None),
        reach_any={th: first_reach(evals, th) for th in THRESHOLDS},
        reach_done={th: first_reach(done, th) for th in THRESHOLDS},
        done_at={t: best_by(done, t) for t in AT},
        model=hp and f'lr {hp["lr"]:.2g}, batch {hp["batch_size"]}, {hp["widths"]} (at its end)',
    )


def optuna(summary_path):
    s = json.load(open(summary_path))
    curve = summary_path.replace("_summary.json", "_curve.csv")
    done = []
    with open(curve) as f:
        for r in csv.DictReader(f):
            if r["event"] == "complete":
                done.append((float(r["elapsed_s"]), float(r["val_f1"])))
    g = lambda m, th: m.get(str(th))
    return dict(
        side="Optuna", seed=s["seed"], wall_s=s["wall_s"], trials=s["n_trials"], completed=s["n_complete"],
        best_val=s["best_val_macro_f1"], test=s["test_macro_f1"], best_any=s["best_any_epoch_val_f1"],
        reach_any={th: g(s["time_to_val_f1_any_epoch"], th) for th in THRESHOLDS},
        reach_done={th: g(s["time_to_val_f1_completed_trial"], th) for th in THRESHOLDS},
        done_at={t: best_by(done, t) for t in AT},
        model=(p := s["kept_model_params"]) and f'lr {p["lr"]:.2g}, batch {p["batch_size"]}, [{p["hidden"]}]',
    )


def fmt(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def mean_sd(vals, digits):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    m = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def row(r):
    cells = [r["side"], str(r["seed"]), f'{r["trials"]} ({r["completed"]})', r["model"] or "—", fmt(r["best_val"]),
             fmt(r["test"])]
    cells += [fmt(r["reach_any"][th], 0) + " / " + fmt(r["reach_done"][th], 0) for th in THRESHOLDS]
    cells += [fmt(r["done_at"][t]) for t in AT]
    return "| " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--json", help="also write the per-seed figures here")
    a = ap.parse_args()
    ours = []
    for d in sorted(glob.glob(os.path.join(a.out, "tuneforge*"))):
        if not os.path.isdir(d):
            continue
        if not os.path.exists(os.path.join(d, "summary.json")):
            print(f"skipping {d}: no summary.json (still running, or it failed: see {d}.log)", file=sys.stderr)
            continue
        ours.append(tuneforge(d))
    theirs = [optuna(p) for p in sorted(glob.glob(os.path.join(a.out, "optuna", "optuna_seed*_summary.json")))]
    head = ["side", "seed", "trials (completed)", "returned model", "best val macro-F1", "test macro-F1"]
    head += [f"s to val ≥ {th} (any eval / completed trial)" for th in THRESHOLDS]
    head += [f"best completed val at {t} s" for t in AT]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * 2 + "---:|" + "---|" + "---:|" * (len(head) - 4))
    sides = {}
    for r in theirs + ours:
        sides.setdefault(r["side"], []).append(r)
    for rs in sides.values():
        for r in sorted(rs, key=lambda r: r["seed"]):
            print(row(r))
    print()
    print("| side | seeds | best val macro-F1 | test macro-F1 | trials |")
    print("|---|---:|---:|---:|---:|")
    for side, rs in sides.items():
        print(f'| {side} | {len(rs)} | {mean_sd([r["best_val"] for r in rs], 4)} | '
              f'{mean_sd([r["test"] for r in rs], 4)} | {mean_sd([float(r["trials"]) for r in rs], 1)} |')
    pairs = {r["seed"]: r for r in theirs}
    for side, rs in sides.items():
        if side == "Optuna":
            continue
        diffs = [(r["seed"], r["test"] - pairs[r["seed"]]["test"]) for r in sorted(rs, key=lambda r: r["seed"])
                 if r["seed"] in pairs and r["test"] is not None and pairs[r["seed"]]["test"] is not None]
        if diffs:
            won = sum(d > 0 for _, d in diffs)
            print(f"\ntest macro-F1, {side} − Optuna, seed by seed: "
                  f"{', '.join(f'{d:+.4f} ({s})' for s, d in diffs)}; {side} higher in {won} of {len(diffs)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(optuna=theirs, tuneforge=ours), f, indent=1, default=str)


if __name__ == "__main__":
    main()
