"""The tables of RESULTS.md's plan-search sections, from ``data/search.jsonl`` and ``data/distill.jsonl``.

    python benchmarks/search_table.py                 # issue 17's tables (newest search per task, scorer, tolerance)
    python benchmarks/search_table.py --run NAME      # one set of bench_search.py --run NAME: per seed and per scorer

Prints markdown. Without ``--run``: one row per search (the newest per task, scorer and tolerance)
and one per distillation run (FLOPs removed computed from the pruned model's ``plan.json`` with
``PlanCost``). With ``--run``: one row per search (seed), then per task and scorer the mean +- sd
over seeds of the FLOPs removed and of the drops, and in words whether rf differs from each control
beyond that spread (the rule: the two means differ by more than the sum of the two sds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from obce_core import load_model
from obce_core.pruning import load_plan
from obce_core.search import PlanCost
from obce_core.search.bound import promised_interval

DATA = Path(__file__).resolve().parent / "data"


def _lines(name: str) -> list[dict]:
    path = DATA / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def search_rows() -> str:
    newest = {}
    for r in _lines("search.jsonl"):
        newest[(r["task"], r["tolerance"], r["scorer"])] = r
    out = ["| task | tolerance (search split) | scorer | FLOPs removed | search split: original -> found | dev: original -> found (drop) | first plan | whole run | plans |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (task, tol, scorer), r in sorted(newest.items()):
        out.append(f"| {task} | {tol:g} | {scorer} | {100 * r['flops_removed']:.1f} % | {100 * r['search_original']:.2f} -> "
                   f"{100 * r['search_found']:.2f} | {100 * r['dev_original']:.2f} -> {100 * r['dev_found']:.2f} "
                   f"({r['dev_drop_points']:+.2f}) | {r['first_plan_s']:.0f} s | {r['total_s']:.0f} s | {r['plans']} |")
    return "\n".join(out)


def distill_rows() -> str:
    out = ["| task | pruned model | FLOPs removed | teacher dev | pruned, no training | + plain fine-tune | + distillation | steps | time plain / KD |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in _lines("distill.jsonl"):
        model, _ = load_model(r["teacher"], device="cpu")
        cost = PlanCost.for_model(model, "flops")
        removed = 1 - cost.of(load_plan(r["model"])) / cost.unpruned()
        plain, kd = r["runs"]["plain"], r["runs"]["distilled"]
        out.append(f"| {r['task']} | {Path(r['model']).name} | {100 * removed:.1f} % | {100 * r['teacher_main_score']:.2f} | "
                   f"{100 * r['untrained_main_score']:.2f} | {100 * plain['main_score']:.2f} | {100 * kd['main_score']:.2f} | "
                   f"{kd['train_steps']} | {plain['train_s']:.0f} s / {kd['train_s']:.0f} s |")
    return "\n".join(out)


def _mean_sd(values) -> tuple[float, float]:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def _inside(drop: float, interval: dict | None) -> bool:
    return interval is not None and interval["low"] <= drop <= interval["high"]


def _promise(r: dict) -> dict:
    """What the search could promise for the whole dev split (``bound.promised_interval``): its rows
    hold the original and every plan it judged on the search examples."""
    return promised_interval(r["search_drop"], max(1, r["plans"] - 1), r["dev_drop"]["n"])


def _run_rows(run: str) -> list[dict]:
    """The searches of ``run``, the newest per task, scorer and seed (a search rerun replaces its first try)."""
    newest = {}
    for r in _lines("search.jsonl"):
        if r.get("run") == run:
            newest[(r["task"], r["scorer"], r["seed"])] = r
    return list(newest.values())


def seed_rows(run: str) -> str:
    rows = _run_rows(run)
    out = ["| task | scorer | seed | searched on (n) | FLOPs removed | search drop (bound) | dev drop [95 % interval] | "
           "inside the search's 95 % interval | promised for the whole dev (95 %, after the choice) | inside the "
           "promise | other dev half: drop | first plan | whole run | plans |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["scorer"], r["seed"])):
        sd, dd, cd, promise = r["search_drop"], r["dev_drop"], r.get("check_drop"), _promise(r)
        other = f"{cd['drop']:+.2f}" if cd else "-"
        first = f"{r['first_plan_s']:.0f} s" if r["first_plan_s"] is not None else "none"
        out.append(f"| {r['task']} | {r['scorer']} | {r['seed']} | {r['search_kind']} ({r['n_search']}) | "
                   f"{100 * r['flops_removed']:.1f} % | {sd['drop']:+.2f} (<= {sd['upper']:+.2f}) | {dd['drop']:+.2f} "
                   f"[{dd['low']:+.2f}, {dd['high']:+.2f}] | {'yes' if _inside(dd['drop'], sd) else 'NO'} | "
                   f"[{promise['low']:+.2f}, {promise['high']:+.2f}] | "
                   f"{'yes' if _inside(dd['drop'], promise) else 'NO'} | {other} | "
                   f"{first} | {r['total_s']:.0f} s | {r['plans']} |")
    return "\n".join(out)


def scorer_summary(run: str) -> str:
    rows = _run_rows(run)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["scorer"]), []).append(r)
    out = ["| task | scorer | seeds | FLOPs removed (mean +- sd) | dev drop, whole dev (mean +- sd) | "
           "drop on the other dev half | dev drop inside the search's 95 % interval | inside the promise | "
           "dev drop <= tolerance | first plan (mean) | whole run (mean) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    stats = {}
    for (task, scorer), rs in sorted(groups.items()):
        flops = _mean_sd([100 * r["flops_removed"] for r in rs])
        dev = _mean_sd([r["dev_drop"]["drop"] for r in rs])
        other = _mean_sd([r["check_drop"]["drop"] if r.get("check_drop") else None for r in rs])
        inside = sum(_inside(r["dev_drop"]["drop"], r["search_drop"]) for r in rs)
        promised = sum(_inside(r["dev_drop"]["drop"], _promise(r)) for r in rs)
        within = sum(r["dev_drop"]["drop"] <= r["tolerance"] for r in rs)
        first = _mean_sd([r["first_plan_s"] for r in rs])[0]
        stats[(task, scorer)] = (flops, dev)
        other_text = "-" if math.isnan(other[0]) else f"{other[0]:+.2f} +- {other[1]:.2f}"
        out.append(f"| {task} | {scorer} | {len(rs)} | {flops[0]:.1f} +- {flops[1]:.1f} % | {dev[0]:+.2f} +- {dev[1]:.2f} | "
                   f"{other_text} | {inside}/{len(rs)} | {promised}/{len(rs)} | {within}/{len(rs)} | "
                   f"{'none' if math.isnan(first) else f'{first:.0f} s'} | {_mean_sd([r['total_s'] for r in rs])[0]:.0f} s |")
    words = []
    for task in sorted({t for t, _ in stats}):
        if (task, "rf") not in stats:
            continue
        (rf_flops, rf_dev) = stats[(task, "rf")]
        for control in ("std", "fisher", "random", "magnitude"):
            if (task, control) not in stats:
                continue
            flops, dev = stats[(task, control)]
            seeds = (len(groups[(task, "rf")]), len(groups[(task, control)]))
            if min(seeds) < 2:
                words.append(f"- {task}, rf vs {control}: {seeds[0]} and {seeds[1]} seed(s): too few to judge a spread.")
                continue
            verdicts = []
            for name, a, b in (("FLOPs removed", rf_flops, flops), ("dev drop", rf_dev, dev)):
                beyond = abs(a[0] - b[0]) > a[1] + b[1]
                verdicts.append(f"{name} {a[0]:.2f} vs {b[0]:.2f}: "
                                f"{'differs beyond the spread' if beyond else 'within the spread (no real difference shown)'}")
            words.append(f"- {task}, rf vs {control}: " + "; ".join(verdicts) + ".")
    return "\n".join(out) + "\n\n" + "\n".join(words)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="the bench_search.py --run name to tabulate per seed and scorer")
    args = ap.parse_args()
    if args.run:
        print(seed_rows(args.run))
        print()
        print(scorer_summary(args.run))
    else:
        print(search_rows())
        print()
        print(distill_rows())
