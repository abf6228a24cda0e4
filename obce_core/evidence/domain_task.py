"""Another domain, in task terms: a task model's score under one plan ranked on different texts.

``plan_score_by_source`` scores the model on each text source (``score_model``, cached), prunes
it with the same plan and evaluates every pruned model on the same labelled split
(``task_sweep.score_plan``, with a bootstrap interval). A plan ranked on the task's own texts
against one ranked on another source answers "does the ranking carry over?" in the only unit a
user cares about. The rankings themselves are compared by ``obce_core.pruning.domain``.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from obce_core.evidence.evaluation import EncodedSplit
from obce_core.evidence.task_sweep import score_plan
from obce_core.pruning import PruningPlan
from obce_core.pruning.domain import check_distinct_sources
from obce_core.scoring import score_model

__all__ = ["plan_score_by_source"]


def plan_score_by_source(model, tokenizer, plan: PruningPlan, encoded: EncodedSplit, sources: dict[str, list], *,
                         progress: Callable[[int, int], None] | None = None, **score_options) -> pd.DataFrame:
    """One row per source: ``source``, ``n_texts``, ``main_score`` and its bootstrap interval
    (``low``, ``high``: an estimate over the examples of ``encoded``), ``params_total``.

    ``sources``: name -> texts; at least two, no two holding the same texts (refused before any
    work). ``score_options`` go to ``score_model``.
    """
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan; got {type(plan).__name__}.")
    names = list(sources)
    if len(names) < 2:
        raise ValueError(f"plan_score_by_source compares at least two text sources; got {names}.")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            check_distinct_sources(sources[a], sources[b], a, b)
    rows = []
    for k, name in enumerate(names):
        scores = score_model(model, tokenizer, list(sources[name]), **score_options)
        result = score_plan(model, scores, plan, encoded)
        interval = result["interval"]
        rows.append({"source": name, "n_texts": len(sources[name]), "main_score": result["metrics"]["main_score"],
                     "low": interval.low, "high": interval.high, "params_total": result["params_total"]})
        if progress is not None:
            progress(k + 1, len(names))
    return pd.DataFrame(rows)
