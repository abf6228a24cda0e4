"""Search fine-tuning recipes for the embedded all-MiniLM-L6-v2 on the GLUE tasks at hand.

Each grid point is a real ``fine_tune`` + ``evaluate`` run of obce's own training code; the dev
metrics and the optimizer-step count go to a CSV, one row per run. The grid is sized for what a
2-core CPU can train in 15 minutes; on a GPU the same grid runs in minutes, several runs at once
(``--workers``), which is how the CPU presets in ``obce_core`` were chosen. The chosen presets are
then re-run and timed on the CPU (``python -m obce_core finetune``) before being published.

    python benchmarks/recipe_search.py --tasks cola,mrpc,rte,sst2 --workers 8 --out search.csv

``--pooling mean`` also tries each point with a masked mean over tokens in place of the [CLS]
pooler (``Recipe.pooling``; all-MiniLM-L6-v2 ships no pooler weights and was trained mean-pooled).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import multiprocessing as mp
import os
import sys
import time
import traceback

GRID = {
    # (train_size, epochs, learning rate, batch, max_length, warmup)
    "sst2": [(n, 1.0, lr, 32, 64, 0.06) for n in (20000, 30000) for lr in (1e-4, 2e-4)],
    "cola": [(None, ep, lr, bs, 64, 0.1) for ep in (3.0, 5.0) for lr in (5e-5, 1e-4, 2e-4) for bs in (16, 32)],
    "mrpc": [(None, ep, lr, bs, 128, 0.1) for ep in (3.0, 5.0) for lr in (5e-5, 1e-4, 2e-4) for bs in (16, 32)],
    "rte": [(None, ep, lr, bs, 128, 0.1) for ep in (4.0, 6.0) for lr in (5e-5, 1e-4, 2e-4) for bs in (16, 32)],
}


def run_one(args):
    model_src, glue_dir, task, point, pooling, seed = args
    import torch

    torch.set_num_threads(2)
    from obce_core import Recipe, evaluate, fine_tune, load_model
    from obce_core import glue

    n, epochs, lr, bs, max_len, warmup = point
    recipe = Recipe(max_length=max_len, epochs=epochs, learning_rate=lr, batch_size=bs,
                    warmup_ratio=warmup, train_size=n, seed=seed, pooling=pooling)
    spec = glue.get_task(task)
    row = {"task": task, **recipe.to_dict()}
    try:
        model, tok = load_model(model_src, num_labels=spec.num_labels, classifier_pooling=recipe.pooling)
        model = model.float()
        start = time.perf_counter()
        fine_tune(model, tok, task, recipe, glue_dir=glue_dir)
        row["train_s"] = round(time.perf_counter() - start, 1)
        metrics = evaluate(model, tok, task, recipe, glue_dir=glue_dir)
        row.update({k: round(float(v), 4) for k, v in metrics.items()})
        row["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception:  # a failed point is a row with its error, the rest goes on
        row["error"] = traceback.format_exc(limit=3)[-400:]
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model directory (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--glue-dir", default=None)
    p.add_argument("--tasks", default="sst2,cola,mrpc,rte")
    p.add_argument("--pooling", default="cls", help="cls, mean or cls,mean")
    p.add_argument("--seeds", default="42")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    jobs = [(a.model, a.glue_dir, task, point, pooling, int(seed))
            for task in a.tasks.split(",") for point in GRID[task]
            for pooling in a.pooling.split(",") for seed in a.seeds.split(",")]
    # Longest tasks first so the pool drains evenly.
    order = {"rte": 0, "mrpc": 1, "sst2": 2, "cola": 3}
    jobs.sort(key=lambda j: order.get(j[2], 9))
    print(f"{len(jobs)} runs on {a.workers} workers", flush=True)
    rows = []
    if a.workers > 1:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            for row in pool.imap_unordered(run_one, jobs):
                rows.append(row)
                _write(a.out, rows)
    else:
        for job in jobs:
            rows.append(run_one(job))
            _write(a.out, rows)
    return 0


def _write(path, rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
