"""The GLUE evidence table: task models, retraining-free pruning, and prune-then-fine-tune.

One process per unit of work (``--unit``), so a machine with a GPU and many cores runs them side
by side; each unit appends JSON lines to ``--rows``:

* ``original:TASK``  fine-tune the embedded model with the task's CPU preset (``finetune_task_model``),
  then, on that task model (scored on ``--score-n`` training texts at [CLS]), the retraining-free
  sweep of all groups at p = 30/50/70 for rf/std/magnitude/random (3 seeds), for each
  ``--compensations``: the "finetuned" protocol.
  With ``--reuse-task-models`` a task model already saved there with the same recipe (by
  ``python -m obce_core finetune``, say) is swept instead of trained again.
* ``paper:TASK:SCORER:SEED``  the paper's protocol at p = 50: prune the PRE-TRAINED encoder (scored
  on the same training texts) and fine-tune it with the same recipe, then evaluate.

    python benchmarks/glue_evidence.py --all --workers 8 --rows rows.jsonl   # every unit
    python benchmarks/glue_evidence.py --table rows.jsonl                    # the markdown tables

Scores in the tables are x100 (MRPC: accuracy / F1; CoLA: Matthews correlation). Random rows are
the mean ± std over 3 seeds. A task counts in the headline only when the original beats the
majority class by more than 2 points.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

TASKS = ("sst2", "mrpc", "cola", "rte")
PAPER = [("rf", 0), ("std", 0), ("random", 0), ("random", 1), ("random", 2)]
SWEEP_P = (30, 50, 70)


def _emit(path: str, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
    print(row, flush=True)


def _scoring_texts(task, glue_dir, n):
    from obce_core import glue

    return glue.dataset_texts(glue.load_task(task, "train", glue_dir, n=n, seed=0), task)


def _device():
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def run_unit(args) -> None:
    unit, a = args
    import torch

    torch.set_num_threads(max(1, a.threads))
    from obce_core import load_model, score_model
    from obce_core.evidence import encode_split, threshold_sweep
    from obce_core.pruning import PruningPlan, prune
    from obce_core.training import Recipe, evaluate, fine_tune, finetune_task_model, parameter_counts

    kind, task, *rest = unit.split(":")
    recipe = Recipe.for_task(task)
    if a.smoke:  # checks the plumbing in seconds, measures nothing
        recipe = Recipe.preset("smoke", pooling=recipe.pooling, eval_size=None)
    common = {"task": task, "recipe": recipe.to_dict(), "device": _device(), "unit": unit}
    try:
        if kind == "original":
            out = Path(a.models) / task
            info = _reusable_task_model(out, task, recipe) if a.reuse_task_models else None
            if info is None:
                t = time.perf_counter()
                info = finetune_task_model(task, out, model=a.model, recipe=recipe, glue_dir=a.glue_dir, overwrite=True)
                train_s, reused = round(time.perf_counter() - t, 1), False
            else:
                train_s, reused = info.train_s, True
            _emit(a.rows, {**common, "device": info.device, "kind": "original", "metrics": info.metrics,
                           "main_score": info.main_score, "train_s": train_s, "reused": reused})
            model, tok = load_model(str(out), device="cuda" if torch.cuda.is_available() else "cpu")
            scores = score_model(model, tok, _scoring_texts(task, a.glue_dir, a.score_n), max_length=recipe.max_length)
            encoded = encode_split(tok, task, glue_dir=a.glue_dir, max_length=recipe.max_length,
                                   eval_size=64 if a.smoke else None)
            for comp in a.compensations.split(","):
                table = threshold_sweep(model, tok, scores, task, groups=("all",), percentiles=SWEEP_P,
                                        compensation=comp, encoded=encoded, skip_layers=a.skip_layers,
                                        cache_dir=Path(a.models) / "sweeps")
                for row in table.to_dict("records"):
                    _emit(a.rows, {**common, "kind": "finetuned", "compensation": comp, **row})
        elif kind == "paper":
            scorer, seed = rest[0], int(rest[1])
            from transformers import set_seed

            set_seed(recipe.seed)
            model, tok = load_model(a.model, num_labels=_num_labels(task), classifier_pooling=recipe.pooling)
            scores = score_model(model, tok, _scoring_texts(task, a.glue_dir, a.score_n), max_length=recipe.max_length)
            plan = PruningPlan(ffn=50, qk=50, v=50, scorer=scorer, seed=seed, skip_layers=a.skip_layers,
                               compensation=a.paper_compensation)
            pruned, _ = prune(model, scores, plan)
            t = time.perf_counter()
            fine_tune(pruned, tok, task, recipe, glue_dir=a.glue_dir)
            metrics = evaluate(pruned, tok, task, recipe, glue_dir=a.glue_dir)
            _emit(a.rows, {**common, "kind": "paper", "scorer": scorer, "seed": seed, "percentile": 50,
                           "compensation": a.paper_compensation, "metrics": metrics,
                           "main_score": metrics["main_score"],
                           **{f"params_{k}": v for k, v in parameter_counts(pruned).items()},
                           "train_s": round(time.perf_counter() - t, 1)})
        else:
            raise ValueError(f"unknown unit {unit!r}")
    except Exception:
        _emit(a.rows, {**common, "kind": "error", "error": traceback.format_exc(limit=4)[-600:]})


def _reusable_task_model(folder: Path, task: str, recipe):
    """The saved task model's info when ``folder`` holds one of ``task`` trained with ``recipe``, else None."""
    from obce_core.training import read_task_model_info

    info = read_task_model_info(folder)
    return info if info is not None and info.task == task and info.recipe == recipe else None


def _num_labels(task):
    from obce_core import glue

    return glue.get_task(task).num_labels


def _majority(task, glue_dir) -> float:
    import numpy as np

    from obce_core import glue

    labels = np.asarray(glue.load_task(task, "validation", glue_dir)["label"])
    values, counts = np.unique(labels, return_counts=True)
    guess = np.full(len(labels), values[counts.argmax()])
    onehot = np.eye(glue.get_task(task).num_labels)[guess]
    return glue.main_score(task, glue.compute_metrics(task, onehot, labels))


def _original_sizes(task, pooling) -> dict:
    """Parameter counts of the unpruned classifier of ``task`` with that head ``pooling`` (it decides the pooler)."""
    from obce_core import glue, load_model
    from obce_core.training import parameter_counts

    model, _ = load_model(num_labels=glue.get_task(task).num_labels, classifier_pooling=pooling)
    return parameter_counts(model)


def _cell(scores, task_metrics=None) -> str:
    import statistics

    if not scores:
        return "—"
    mean = 100 * statistics.fmean(scores)
    return f"{mean:.1f}" if len(scores) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(scores):.1f}"


def _shown(task, metrics) -> str:
    keys = {"mrpc": ["accuracy", "f1"], "cola": ["matthews_correlation"]}.get(task, ["accuracy"])
    return " / ".join(f"{100 * metrics[k]:.1f}" for k in keys)


def tables(rows_path: str, glue_dir) -> str:
    """The markdown tables of a rows file: retraining-free (finetuned) and paper protocol."""
    import pandas as pd

    rows = [json.loads(line) for line in open(rows_path, encoding="utf-8") if line.strip()]
    originals = {r["task"]: r for r in rows if r["kind"] == "original"}
    tasks = [t for t in TASKS if t in originals]
    out = []
    majority = {t: _majority(t, glue_dir) for t in tasks}
    learned = [t for t in tasks if originals[t]["main_score"] - majority[t] > 0.02]
    out.append("| task | original (dev) | majority class | learned |\n|---|---|---|---|")
    for t in tasks:
        out.append(f"| {t} | {_shown(t, originals[t]['metrics'])} | {100 * majority[t]:.1f} | "
                   f"{'yes' if t in learned else 'no'} |")
    fin = pd.DataFrame([r for r in rows if r["kind"] == "finetuned" and r["percentile"] > 0])
    for comp, part in fin.groupby("compensation", sort=False):
        out.append(f"\nRetraining-free (finetuned protocol), all groups, compensation `{comp}`; "
                   "main score x100 (MRPC: mean of accuracy and F1):\n")
        head = "| scorer | " + " | ".join(f"{t} p={p:g}" for t in tasks for p in SWEEP_P) + " |"
        out += [head, "|" + "---|" * (1 + len(tasks) * len(SWEEP_P))]
        out.append("| original | " + " | ".join(_cell([originals[t]["main_score"]]) for t in tasks for _ in SWEEP_P) + " |")
        for scorer in ("rf", "std", "magnitude", "random"):
            cells = [_cell(list(part[(part.task == t) & (part.scorer == scorer) & (part.percentile == p)]["main_score"]))
                     for t in tasks for p in SWEEP_P]
            out.append(f"| {scorer} | " + " | ".join(cells) + " |")
    paper = pd.DataFrame([r for r in rows if r["kind"] == "paper"])
    if len(paper):
        out.append("\nPaper protocol (prune the pre-trained encoder at p = 50, all groups, then fine-tune with the "
                   "same recipe); main score x100; params % = pruned / unpruned, mean over tasks:\n")
        out += ["| model | params % (all) | params % (encoder) | " + " | ".join(tasks) + " | avg of learned tasks | "
                "/ original |", "|" + "---|" * (5 + len(tasks))]
        base = sum(originals[t]["main_score"] for t in learned) / max(1, len(learned))
        out.append("| original | 100.0 | 100.0 | " + " | ".join(_cell([originals[t]["main_score"]]) for t in tasks)
                   + f" | {100 * base:.1f} | 100.0 % |")
        full = {t: _original_sizes(t, originals[t]["recipe"].get("pooling", "cls")) for t in tasks}
        for scorer in ("rf", "std", "random"):
            part = paper[paper.scorer == scorer]
            if not len(part):
                continue
            means = {t: list(part[part.task == t]["main_score"]) for t in tasks}
            avg = sum(sum(v) / len(v) for t, v in means.items() if t in learned and v) / max(1, len(learned))
            share = {k: 100 * sum(r[f"params_{k}"] / full[r["task"]][k] for _, r in part.iterrows()) / len(part)
                     for k in ("total", "encoder")}
            out.append(f"| {scorer} p=50 | {share['total']:.1f} | {share['encoder']:.1f} | "
                       + " | ".join(_cell(means[t]) for t in tasks) + f" | {100 * avg:.1f} | {100 * avg / base:.1f} % |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unit", action="append", default=[])
    p.add_argument("--all", action="store_true", help="every original and paper unit of --tasks")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--model", default=None)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    p.add_argument("--models", default="artifacts/task_models")
    p.add_argument("--rows", default="benchmarks/data/glue_evidence.jsonl")
    p.add_argument("--score-n", type=int, default=512)
    p.add_argument("--skip-layers", type=int, default=1)
    p.add_argument("--compensations", default="none,cls-mean")
    p.add_argument("--paper-compensation", default="none")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse-task-models", action="store_true",
                   help="an original unit whose --models folder already holds the task model of the same recipe "
                        "sweeps that model instead of fine-tuning a new one")
    p.add_argument("--smoke", action="store_true", help="the smoke recipe: checks the plumbing, measures nothing")
    p.add_argument("--table", default=None, help="print the markdown tables of this rows file and exit")
    a = p.parse_args(argv)
    if a.table:
        print(tables(a.table, a.glue_dir))
        return 0
    units = list(a.unit)
    if a.all:
        for task in a.tasks.split(","):
            units.append(f"original:{task}")
            units += [f"paper:{task}:{s}:{seed}" for s, seed in PAPER]
    # Longest first so that the pool drains evenly.
    weight = {"rte": 0, "sst2": 1, "mrpc": 2, "cola": 3}
    units.sort(key=lambda u: (weight.get(u.split(":")[1], 9), not u.startswith("original")))
    Path(a.rows).parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(units)} units on {a.workers} workers", flush=True)
    if a.workers > 1:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            list(pool.imap_unordered(run_unit, [(u, a) for u in units]))
    else:
        for u in units:
            run_unit((u, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
