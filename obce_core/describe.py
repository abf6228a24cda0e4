"""One-line descriptions of a pruning plan, a fine-tuning recipe and a job, as every page and table
shows them (from the objects, their dicts or the JSON text the results store keeps)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from obce_core.jobs.spec import read_spec
from obce_core.jobs.status import SPEC_FILE
from obce_core.pruning.plan import PruningPlan
from obce_core.training.recipe import Recipe

__all__ = ["ORIGINAL", "UNREADABLE_SPEC", "describe_job", "describe_plan", "describe_recipe"]

ORIGINAL = "original (not pruned)"
UNREADABLE_SPEC = "(spec unreadable)"


def _as_dict(value: Any) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, dict):
        return value
    return value.to_dict()


def describe_plan(plan: Any) -> str:
    """``PruningPlan.describe()`` of a plan, its dict or its JSON; ``"original (not pruned)"`` for
    no plan (``None`` or the NaN a results frame holds for an original model)."""
    if plan is None or (isinstance(plan, float) and math.isnan(plan)):
        return ORIGINAL
    if not isinstance(plan, PruningPlan):
        plan = PruningPlan.from_dict(_as_dict(plan))
    return plan.describe()


def describe_recipe(recipe: Any) -> str:
    """A recipe (a ``Recipe``, its dict or its JSON) in one line: sizes, length, batch, lr, seed, head, batching,
    and the distillation settings when it learns from a teacher."""
    r = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(_as_dict(recipe))
    train = f"{r.max_steps} steps" if r.max_steps else f"{r.epochs:g} epoch(s)"
    kd = "" if r.kd_teacher is None else \
        f", distilled from {r.kd_teacher} (T {r.kd_temperature:g}, teacher weight {r.kd_alpha:g})"
    return (f"{r.train_size or 'all'} train / {r.eval_size or 'all'} eval examples, {train}, {r.max_length} tokens, "
            f"batch {r.batch_size}, lr {r.learning_rate:g}, seed {r.seed}, {r.pooling}-pooled head"
            + (", length-grouped batches" if r.group_by_length else "") + kd)


def describe_job(job: Any) -> str:
    """What a job does, in one Markdown line: enough to tell two job lines apart.

    ``job``: a job spec (``obce_core.jobs``: a GLUE comparison, a task-model fine-tune, a sweep...)
    or a job folder, whose ``spec.json`` is read (``UNREADABLE_SPEC`` when it cannot be). Paths
    and model names are code spans, so the underscores of a path never turn into emphasis.
    """
    if isinstance(job, (str, os.PathLike)):
        try:
            job = read_spec(Path(job) / SPEC_FILE)
        except (ValueError, OSError):
            return UNREADABLE_SPEC
    kind = getattr(job, "kind", None)
    if kind == "finetune":
        teacher = f" · distilled from `{job.teacher}`" if job.teacher else ""
        return f"{job.task} · fine-tune into `{job.out}` · recipe: {describe_recipe(job.recipe)} · `{job.model}`{teacher}"
    if kind != "glue":
        recover = f" · then recovered into `{job.recovered_out()}`" if getattr(job, "recover", False) else ""
        return f"{kind} of {getattr(job, 'task', '')} · `{getattr(job, 'model', '')}`{recover}"
    recipes = "; ".join(f"{t}: {describe_recipe(job.recipe_for(t))}" for t in job.tasks) if job.recipes \
        else describe_recipe(job.recipe)
    distill = " · pruned model distilled from the original" if job.distill else ""
    return (f"{', '.join(job.tasks)} · protocol {job.protocol}{distill} · plan `{describe_plan(job.plan)}` · "
            f"recipe: {recipes} · `{job.model}`")
