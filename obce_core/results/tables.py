"""Tables of stored GLUE results: one comparison side by side, and the comparisons the store holds.

``comparison_table`` sets original, pruned (and recovered) runs side by side per task and metric;
``comparisons`` groups the rows of ``ResultsStore.all_results`` into such comparisons.
"""

from __future__ import annotations

import json

import pandas as pd

from obce_core import glue
from obce_core.training import Recipe, RunResult

__all__ = ["ROLES", "comparison_table", "comparisons", "latency_table"]

# A run's role in a comparison, in table order.
ROLES = ("original", "pruned", "recovered")


def _headline_metric(task: str, metrics: dict) -> str:
    """The metric whose value ``main_score`` repeats (the task's one metric), else ``main_score``."""
    try:
        main = glue.get_task(task).main_metric
    except ValueError:
        return "main_score"
    if main in metrics and metrics.get(main) == metrics.get("main_score"):
        return main
    return "main_score"


def comparison_table(results: list[RunResult]) -> pd.DataFrame:
    """Side by side per task and metric: original, pruned (and recovered), difference, params %.

    ``difference`` is the last variant minus the original. ``params_total_pct`` and
    ``params_encoder_pct`` are the pruned model's parameters as a percentage of the original's
    (whole model, and encoder layers alone). ``main`` marks each task's headline row: its one
    metric (``main_score`` is then the same number and gets no row of its own), or ``main_score``
    for tasks that average several (mrpc, qqp, stsb). With several tasks a ``glue_average`` row
    (mean of ``main_score``) closes the table.
    """
    by_task: dict[str, dict[str, RunResult]] = {}
    for r in results:
        by_task.setdefault(r.task, {})[r.role] = r
    rows = []
    roles = [role for role in ROLES if any(role in v for v in by_task.values())]
    averages: dict[str, list[float]] = {role: [] for role in roles}
    for task, runs in by_task.items():
        original = runs.get("original")
        variant = runs.get("recovered") or runs.get("pruned")
        headline = _headline_metric(task, (original or variant).metrics)
        metrics = [m for m in (original or variant).metrics if m != "main_score"]
        metrics += [] if headline != "main_score" else ["main_score"]
        for metric in metrics:
            row = {"task": task, "metric": metric, "main": metric == headline}
            for role in roles:
                row[role] = runs[role].metrics.get(metric) if role in runs else None
            if original is not None and variant is not None and variant is not original:
                row["difference"] = variant.metrics.get(metric, float("nan")) - original.metrics.get(metric, float("nan"))
                row["params_total_pct"] = 100.0 * variant.params_total / original.params_total
                row["params_encoder_pct"] = 100.0 * variant.params_encoder / original.params_encoder
            rows.append(row)
        for role in roles:
            if role in runs:
                averages[role].append(runs[role].main_score)
    if len(by_task) > 1:
        row = {"task": "glue_average", "metric": "main_score", "main": True}
        complete = {role: v for role, v in averages.items() if len(v) == len(by_task)}
        for role in roles:
            row[role] = sum(complete[role]) / len(complete[role]) if role in complete else None
        last = roles[-1]
        if "original" in complete and last in complete and last != "original":
            row["difference"] = row[last] - row["original"]
        rows.append(row)
    columns = ["task", "metric", "main", *roles, "difference", "params_total_pct", "params_encoder_pct"]
    return pd.DataFrame(rows).reindex(columns=columns)



def latency_table(results: list[RunResult], contended_ids=()) -> pd.DataFrame:
    """Per task: each role's latency (``<role> ms``), ``pruned / original``, and ``measured``.

    Runs without a latency are left out. ``measured`` is ``contended`` when any run of the task is
    in ``contended_ids`` (another job shared the machine meanwhile, so the ratio is not to be
    trusted), else ``alone``. Columns: task, the roles' ms in ``ROLES`` order, the ratio when both
    original and pruned were timed, measured; an empty frame for no timed run.
    """
    contended = set(contended_ids)
    by_task: dict[str, dict] = {}
    for r in results:
        if r.latency_ms is None:
            continue
        row = by_task.setdefault(r.task, {"task": r.task, "measured": "alone"})
        row[f"{r.role} ms"] = r.latency_ms
        if r.id in contended:
            row["measured"] = "contended"
    if not by_task:
        return pd.DataFrame(columns=["task", "measured"])
    frame = pd.DataFrame(list(by_task.values()))
    roles = [f"{role} ms" for role in ROLES if f"{role} ms" in frame.columns]
    if "original ms" in frame.columns and "pruned ms" in frame.columns:
        frame["pruned / original"] = frame["pruned ms"] / frame["original ms"]
        roles.append("pruned / original")
    return frame[["task", *roles, "measured"]]


def _without_teacher(recipe_json: str) -> str:
    """A stored recipe's canonical JSON with distillation dropped: the recipe its original trained with."""
    return Recipe.from_dict(json.loads(recipe_json)).without_teacher().canonical_json()


def comparisons(frame: pd.DataFrame) -> list[dict]:
    """Stored runs grouped to set side by side, newest first.

    Each group is one pruned configuration (source weights, plan, protocol, recipe) with the
    originals of the same source, protocol, recipe and tasks, and (protocol ``finetuned``) the
    recovered runs of the same plan. A pruned run distilled from its original (``kd_teacher``
    set) is matched with the originals of its recipe without the teacher, which trained them.
    A group is a dict: ``ids`` (result ids), ``plan``, ``protocol``, ``recipe``, ``tasks``
    (sorted), ``newest`` (the newest pruned row as a dict), ``distilled`` (the pruned runs
    learned from their original).
    """
    rows = frame.to_dict("records")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["role"] == "pruned":
            groups.setdefault((r["source_fingerprint"], r["plan"], r["protocol"], r["recipe"]), []).append(r)
    out = []
    for (source_fp, plan, protocol, recipe), pruned in groups.items():
        tasks = {r["task"] for r in pruned}
        plain = _without_teacher(recipe)
        originals = [r for r in rows if r["role"] == "original" and r["source_fingerprint"] == source_fp
                     and r["protocol"] == protocol and _without_teacher(r["recipe"]) == plain and r["task"] in tasks]
        recovered = [r for r in rows if r["role"] == "recovered" and r["source_fingerprint"] == source_fp
                     and r["plan"] == plan and r["task"] in tasks] if protocol == "finetuned" else []
        out.append({"ids": [int(r["id"]) for r in originals + pruned + recovered], "plan": plan, "protocol": protocol,
                    "recipe": recipe, "tasks": sorted(tasks), "newest": max(pruned, key=lambda r: r["id"]),
                    "distilled": json.loads(recipe).get("kd_teacher") is not None})
    return sorted(out, key=lambda g: -g["newest"]["id"])
