"""Compensation against task score, retraining-free: scorer x compensation x percentile on a task model.

    python benchmarks/bench_compensation_task.py --model artifacts/task_models/sst2 --task sst2 --max-length 64

Scores from ``--score-texts`` training texts at [CLS]; calibration for ``auto``/``lsq``/``token-mean``
captured once from ``--calibration-texts`` other training texts; every cell is a real evaluation
of the pruned task model on the whole dev split (``threshold_sweep`` rows). Prints the table
(random: mean ± std over 3 seeds, and its worst seed), the drop from the original per cell, and
whether each compensation is never worse than none.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from obce_core import capture_calibration, glue, load_model, score_model
from obce_core.evidence import encode_split, threshold_sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--score-texts", type=int, default=512)
    p.add_argument("--calibration-texts", type=int, default=2048)
    p.add_argument("--compensations", default="none,auto,lsq,cls-mean")
    p.add_argument("--scorers", default="rf,std,magnitude,flap,random")
    p.add_argument("--groups", default="ffn,all")
    p.add_argument("--percentiles", default="30,50")
    p.add_argument("--skip-layers", type=int, default=1)
    p.add_argument("--csv", default=None)
    a = p.parse_args(argv)

    model, tok = load_model(a.model, device="cpu")
    train = glue.load_task(a.task, "train", a.glue_dir, n=a.score_texts + a.calibration_texts, seed=0)
    texts = glue.dataset_texts(train, a.task)
    scores = score_model(model, tok, texts[:a.score_texts], max_length=a.max_length)
    t = time.perf_counter()
    calibration = capture_calibration(model, tok, texts[a.score_texts:], max_length=a.max_length)
    print(f"calibration: {a.calibration_texts} training texts, {time.perf_counter() - t:.1f} s; load avg {os.getloadavg()}")
    encoded = encode_split(tok, a.task, glue_dir=a.glue_dir, max_length=a.max_length)
    rows = []
    for comp in a.compensations.split(","):
        t = time.perf_counter()
        table = threshold_sweep(model, tok, scores, a.task, groups=tuple(a.groups.split(",")),
                                percentiles=(0, *map(float, a.percentiles.split(","))),
                                scorers=tuple(a.scorers.split(",")), skip_layers=a.skip_layers, compensation=comp,
                                encoded=encoded, calibration=calibration if comp in ("auto", "lsq", "token-mean") else None)
        print(f"{comp}: {len(table)} points in {time.perf_counter() - t:.1f} s")
        rows.append(table.assign(compensation=comp))
    table = pd.concat(rows, ignore_index=True)
    original = float(table[table.percentile == 0]["main_score"].iloc[0])
    table = table[table.percentile > 0]
    if a.csv:
        table.drop(columns=["cached"]).to_csv(a.csv, index=False)
    cell = table.groupby(["group", "percentile", "scorer", "compensation"])["main_score"]
    summary = cell.agg(["mean", "std", "min"]).reset_index()
    summary["text"] = [f"{100 * m:.1f}" + ("" if pd.isna(s) else f" ± {100 * s:.1f} (worst {100 * w:.1f})")
                       for m, s, w in zip(summary["mean"], summary["std"], summary["min"])]
    print(f"\noriginal {100 * original:.1f}; dev score x100 (random: mean ± std over 3 seeds, worst seed):\n")
    print(summary.pivot_table(index=["group", "percentile", "scorer"], columns="compensation", values="text",
                              aggfunc="first").to_markdown())
    # Never worse than none: compare per scorer and seed (random: every seed).
    wide = table.pivot_table(index=["group", "percentile", "scorer", "seed"], columns="compensation", values="main_score")
    print()
    for comp in wide.columns:
        if comp == "none":
            continue
        worse = wide[wide[comp] < wide["none"] - 1e-9]
        print(f"{comp}: worse than none in {len(worse)} of {len(wide)} (scorer, seed) cells"
              + (f"; largest loss {100 * (worse['none'] - worse[comp]).max():.1f} points" if len(worse) else ""))
        drops = (original - wide[comp]) / (original - wide["none"]).where(lambda d: d > 0)
        halved = (drops <= 0.5).groupby(level=["group", "percentile"]).mean()
        print(f"   share of cells where {comp} at most halves none's drop, per group/percentile: "
              + ", ".join(f"{g} p={p:g}: {v:.0%}" for (g, p), v in halved.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
