"""The tables of RESULTS.md's plan-search section, from ``data/search.jsonl`` and ``data/distill.jsonl``.

    python benchmarks/search_table.py

Prints markdown: one row per search (the newest per task, scorer and tolerance) and one per
distillation run (FLOPs removed computed from the pruned model's ``plan.json`` with ``PlanCost``).
"""

from __future__ import annotations

import json
from pathlib import Path

from obce_core import load_model
from obce_core.pruning import load_plan
from obce_core.search import PlanCost

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


if __name__ == "__main__":
    print(search_rows())
    print()
    print(distill_rows())
