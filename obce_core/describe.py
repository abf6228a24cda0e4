"""One-line descriptions of a pruning plan and a fine-tuning recipe, as every page and table
shows them (from the objects, their dicts or the JSON text the results store keeps)."""

from __future__ import annotations

import json
import math
from typing import Any

from obce_core import PruningPlan, Recipe

__all__ = ["ORIGINAL", "describe_plan", "describe_recipe"]

ORIGINAL = "original (not pruned)"


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
    """A recipe (a ``Recipe``, its dict or its JSON) in one line: sizes, length, batch, lr, seed, head, batching."""
    r = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(_as_dict(recipe))
    train = f"{r.max_steps} steps" if r.max_steps else f"{r.epochs:g} epoch(s)"
    return (f"{r.train_size or 'all'} train / {r.eval_size or 'all'} eval examples, {train}, {r.max_length} tokens, "
            f"batch {r.batch_size}, lr {r.learning_rate:g}, seed {r.seed}, {r.pooling}-pooled head"
            + (", length-grouped batches" if r.group_by_length else ""))
