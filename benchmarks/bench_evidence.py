"""Retraining-free evidence on a task model: timings, the threshold sweep, and its curves.

    python benchmarks/bench_evidence.py --model artifacts/task_models/sst2 --task sst2 \
        --csv benchmarks/data/sweep_sst2.csv --figure docs/figures/sweep_sst2.png

Measures (side by side, interleaved rounds): one plan evaluated on the full dev split, prune
included, against a bare forward pass of the original over the same split; the Prune page's first
answer (256-example seeded subset with a 95 % bootstrap interval); the whole sweep (4 groups x 10
percentiles x rf/std/magnitude + random x 3 seeds) and a cached point. Then prints the sweep as a
table (mean and spread over seeds), the largest percentile per scorer within 1 point of the
original, and draws the curves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from obce_core import glue, load_model, score_model
from obce_core.evidence import (encode_split, evaluate_plan, largest_safe_percentile, predict_logits, score_interval,
                                sweep_plan, threshold_sweep)


def scoring_texts(task: str, glue_dir, n: int, seed: int = 0):
    data = glue.load_task(task, "train", glue_dir, n=n, seed=seed)
    return glue.dataset_texts(data, task)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    grouped = table.groupby(["group", "scorer", "percentile"])["main_score"]
    out = grouped.agg(["mean", "std", "min", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def draw(summary: pd.DataFrame, original: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(summary["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), sharey=True)
    colours = {"rf": "#0072B2", "std": "#E69F00", "magnitude": "#009E73", "random": "#CC79A7"}
    for ax, group in zip(np.atleast_1d(axes), groups):
        part = summary[summary["group"] == group]
        for scorer, line in part.groupby("scorer"):
            line = line.sort_values("percentile")
            ax.plot(line["percentile"], 100 * line["mean"], marker="o", ms=3, label=scorer, color=colours.get(scorer))
            if (line["count"] > 1).any():
                ax.fill_between(line["percentile"], 100 * (line["mean"] - line["std"]), 100 * (line["mean"] + line["std"]),
                                alpha=0.2, color=colours.get(scorer))
        ax.axhline(100 * original, color="black", lw=0.8, ls="--", label="original")
        ax.set_title(f"{group}")
        ax.set_xlabel("percentile removed")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("dev score (x100)")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a task model directory (python -m obce_core finetune)")
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--score-texts", type=int, default=512, help="training examples scored (seeded subset)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--groups", default="ffn,v,qk,all")
    p.add_argument("--percentiles", default="0,10,20,30,40,50,60,70,80,90")
    p.add_argument("--compensation", default=None)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--csv", default=None)
    p.add_argument("--figure", default=None)
    a = p.parse_args(argv)

    model, tok = load_model(a.model, device="cpu")
    print(f"model {a.model}, task {a.task}, torch threads {torch.get_num_threads()}, load avg {os.getloadavg()}")
    texts = scoring_texts(a.task, a.glue_dir, a.score_texts)
    t = time.perf_counter()
    scores = score_model(model, tok, texts, max_length=a.max_length)
    print(f"scores: {len(texts)} training texts at [CLS], {time.perf_counter() - t:.1f} s (cached after the first run)")
    full = encode_split(tok, a.task, glue_dir=a.glue_dir, max_length=a.max_length)
    plan = sweep_plan("all", 50, "rf", 0, compensation=a.compensation)

    if not a.skip_timing:
        bare, planned = [], []
        for _ in range(a.rounds):
            t = time.perf_counter()
            predict_logits(model, full)
            bare.append(time.perf_counter() - t)
            planned.append(evaluate_plan(model, scores, plan, full)["eval_s"])
        print(f"\n(a) full dev split ({full.n} examples), {a.rounds} interleaved rounds")
        print(f"bare forward of the original: median {statistics.median(bare):.2f} s  {[f'{x:.2f}' for x in bare]}")
        print(f"one plan (all groups p=50, rf), prune + forward + metrics: median {statistics.median(planned):.2f} s  "
              f"{[f'{x:.2f}' for x in planned]}")
        print(f"ratio of medians {statistics.median(planned) / statistics.median(bare):.2f}")

        t = time.perf_counter()
        small = encode_split(tok, a.task, glue_dir=a.glue_dir, eval_size=256, seed=0, max_length=a.max_length)
        t_enc = time.perf_counter() - t
        times = []
        for _ in range(a.rounds):
            t = time.perf_counter()
            from obce_core.pruning import prune

            pruned = prune(model, scores, plan)[0]
            logits = predict_logits(pruned, small)
            interval = score_interval(a.task, logits, small.labels)
            times.append(time.perf_counter() - t)
        print(f"\n(b) first answer on a seeded 256-example subset with a 95 % bootstrap interval: median "
              f"{statistics.median(times):.2f} s {[f'{x:.2f}' for x in times]} (+ {t_enc:.2f} s to encode the subset once); "
              f"score {100 * interval.score:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]")

    groups = tuple(a.groups.split(","))
    percentiles = tuple(float(x) for x in a.percentiles.split(","))
    done = []
    t = time.perf_counter()
    table = threshold_sweep(model, tok, scores, a.task, groups=groups, percentiles=percentiles, encoded=full,
                            compensation=a.compensation,
                            progress=lambda i, n, row: done.append(i) if i % 20 else print(f"  {i}/{n}", flush=True))
    sweep_s = time.perf_counter() - t
    fresh = int((~table["cached"]).sum())
    print(f"\n(c) sweep: {len(table)} points ({fresh} evaluated now, {len(table) - fresh} from the cache) in {sweep_s:.1f} s")
    t = time.perf_counter()
    again = threshold_sweep(model, tok, scores, a.task, groups=groups, percentiles=percentiles, encoded=full,
                            compensation=a.compensation)
    per_point = (time.perf_counter() - t) / len(again) * 1000
    print(f"    the same sweep again, all from the cache: {per_point:.2f} ms per point")

    original = float(table[table["percentile"] == 0]["main_score"].iloc[0])
    summary = summarise(table)
    print(f"\noriginal dev score {100 * original:.2f}; mean (std over seeds) of the dev score x100:")
    wide = summary.assign(cell=[f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if c > 1 else "")
                                for m, s, c in zip(summary["mean"], summary["std"], summary["count"])])
    print(wide.pivot_table(index=["group", "scorer"], columns="percentile", values="cell", aggfunc="first").to_markdown())
    safe = largest_safe_percentile(table, original, 0.01)
    print("\nlargest percentile whose worst seed stays within 1 point of the original:")
    print(safe.pivot_table(index="scorer", columns="group", values="largest_safe_percentile").to_markdown())
    if a.csv:
        Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
        table.drop(columns=["cached"]).to_csv(a.csv, index=False)
    if a.figure:
        draw(summary, original, Path(a.figure), f"{glue.get_task(a.task).name} dev, retraining-free ({Path(a.model).name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
