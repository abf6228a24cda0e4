"""Ranking stability: how much of a scorer's ranking is the texts, and how much is noise.

``ranking_stability`` scores two disjoint halves of the texts (or the texts and ``other_texts``)
and compares, per layer, group and scorer, what each half would prune:

* ``spearman``: Spearman's rank correlation of the unit scores of the two halves (NaN where one
  half gives every unit the same score, e.g. rf = 0 for layer 0's query/key/value at [CLS]);
* ``overlap``: the share of the units removed at ``percent`` under the first half's scores that
  are also removed under the second's (per-head cuts, as ``select_units`` makes them);
  ``chance_overlap`` is what two random choices of the same size would share on average.

With ``splits > 1`` the texts are halved that many times (each split a fresh seeded permutation)
and the columns are the mean over splits, with ``spearman_min`` the worst split. Scorers that do
not read the texts (``magnitude``; ``random`` with a fixed seed) are stable by construction and
give 1.

``plan_percents``, ``stability_summary`` and ``median_spearman`` read those rows at the percentile
a plan applies to each layer and group: what the Persistence page's noise panel shows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from obce_core.layout import GROUPS
from obce_core.pruning.importance import IMPORTANCES
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.selection import select_units
from obce_core.scoring.scores import score_model
from obce_core.validation import check_choice, check_int, check_number

__all__ = ["STABILITY_FALLBACK_PERCENT", "compare_rankings", "median_spearman", "plan_percents", "ranking_stability",
           "split_halves", "stability_summary"]

_OWNER = "ranking_stability"
# Where a plan removes nothing from a group, its removed sets are compared at this percentile.
STABILITY_FALLBACK_PERCENT = 50.0


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def compare_rankings(model, scores_a, scores_b, *, scorers: Sequence[str], percent: float) -> pd.DataFrame:
    """One row per layer x group x scorer comparing the selections of two scores of ``model``."""
    rows = []
    for scorer in scorers:
        plan = PruningPlan(ffn=percent, qk=percent, v=percent, scorer=scorer)
        sel_a, sel_b = select_units(scores_a, plan, model), select_units(scores_b, plan, model)
        for layer in range(sel_a.num_layers):
            for group in GROUPS:
                removed_a, removed_b = sel_a.removed(layer, group), sel_b.removed(layer, group)
                n = len(sel_a.scores[layer][group])
                shared = len(np.intersect1d(removed_a, removed_b))
                rows.append({
                    "layer": layer, "group": group, "scorer": scorer,
                    "spearman": _spearman(sel_a.scores[layer][group], sel_b.scores[layer][group]),
                    "overlap": shared / len(removed_a) if len(removed_a) else float("nan"),
                    "chance_overlap": len(removed_a) / n if n else float("nan"),
                    "removed": len(removed_a), "units": n,
                })
    return pd.DataFrame(rows)


def split_halves(texts: Sequence, splits: int, seed: int, *, size: int | None = None) -> list[tuple[list, list]]:
    """``splits`` pairs of disjoint halves of ``texts``, each a seeded permutation (``[seed, split]``).

    A half has ``size`` texts (default ``len(texts) // 2``; at most that). What ``ranking_stability``
    compares, and the sampling-noise baseline of ``obce_core.pruning.domain``.
    """
    half = len(texts) // 2 if size is None else size
    if half < 2 or half > len(texts) // 2:
        raise ValueError(f"Two disjoint halves of {half} texts need at least {2 * max(half, 2)} texts; got {len(texts)}.")
    pairs = []
    for s in range(splits):
        order = np.random.default_rng([seed, s]).permutation(len(texts))
        pairs.append(([texts[i] for i in order[:half]], [texts[i] for i in order[half:2 * half]]))
    return pairs


def ranking_stability(
    model,
    tokenizer,
    texts: Sequence,
    *,
    scorers: Sequence[str] = ("rf", "std", "flap"),
    percent: float = 50.0,
    splits: int = 1,
    seed: int = 0,
    other_texts: Sequence | None = None,
    **score_options,
) -> pd.DataFrame:
    """Per layer x group x scorer: Spearman of the two halves' scores and overlap of their cuts.

    ``texts`` are split into two disjoint halves of ``len(texts) // 2`` (``splits`` times, seeded by
    ``seed``); with ``other_texts`` the two sets are ``texts`` and ``other_texts`` as given (and
    ``splits`` must be 1). ``score_options`` go to ``score_model`` (``token``, ``batch_size``,
    ``max_length``, ``cache_dir``, ``use_cache``...). Columns: layer, group, scorer, spearman,
    spearman_min, overlap, chance_overlap, removed, units, splits.
    """
    for scorer in scorers:
        check_choice(scorer, "scorers", _OWNER, IMPORTANCES)
    check_number(percent, "percent", _OWNER, low=0, high=100, low_open=True, high_open=True,
                 fix="It is the percentile whose removed sets are compared, e.g. 50.")
    check_int(splits, "splits", _OWNER, low=1)
    check_int(seed, "seed", _OWNER, low=0)
    texts = list(texts)
    if other_texts is not None:
        if splits != 1:
            raise ValueError("splits must be 1 when other_texts is given: the two sets are fixed.")
        pairs = [(texts, list(other_texts))]
    else:
        if len(texts) < 4:
            raise ValueError(f"ranking_stability needs at least 4 texts to make two halves of 2; got {len(texts)}.")
        pairs = split_halves(texts, splits, seed)
    frames = []
    for s, (a, b) in enumerate(pairs):
        scores_a = score_model(model, tokenizer, a, **score_options)
        scores_b = score_model(model, tokenizer, b, **score_options)
        frames.append(compare_rankings(model, scores_a, scores_b, scorers=scorers, percent=percent).assign(split=s))
    every = pd.concat(frames, ignore_index=True)
    keys = ["layer", "group", "scorer"]
    out = every.groupby(keys, sort=False).agg(
        spearman=("spearman", "mean"), spearman_min=("spearman", "min"), overlap=("overlap", "mean"),
        chance_overlap=("chance_overlap", "first"), removed=("removed", "first"), units=("units", "first"),
        splits=("split", "nunique"),
    )
    return out.reset_index()


def plan_percents(plan: PruningPlan | None, num_layers: int, *,
                  fallback: float = STABILITY_FALLBACK_PERCENT) -> dict[tuple[int, str], float]:
    """``{(layer, group): percentile}`` that ``plan`` applies; ``fallback`` where it removes nothing (or no plan)."""
    check_int(num_layers, "num_layers", "plan_percents", low=1)
    return {(layer, group): (plan.percent(layer, group) if plan is not None else 0) or fallback
            for layer in range(num_layers) for group in GROUPS}


def stability_summary(stability: pd.DataFrame, percents: dict[tuple[int, str], float],
                      scorers: Sequence[str]) -> pd.DataFrame:
    """One row per layer x group of ``percents``: its percentile ``p``, the ``chance overlap`` and, per
    scorer, ``<scorer> Spearman`` and ``<scorer> overlap`` read at ``p``.

    ``stability``: ``ranking_stability`` rows of every percentile in ``percents``, told apart by a
    ``percent`` column. A missing row raises ``ValueError`` naming the layer, group and percentile.
    """
    rows = []
    for (layer, group, p), at in rows_at_plan(stability, percents, scorers, "ranking_stability"):
        row = {"layer": layer, "group": group, "p": p, "chance overlap": float(at["chance_overlap"].iloc[0])}
        for scorer in scorers:
            row[f"{scorer} Spearman"] = float(at.loc[scorer, "spearman"])
            row[f"{scorer} overlap"] = float(at.loc[scorer, "overlap"])
        rows.append(row)
    return pd.DataFrame(rows)


def rows_at_plan(table: pd.DataFrame, percents: dict[tuple[int, str], float], scorers: Sequence[str], made_by: str):
    """``((layer, group, p), rows indexed by scorer)`` for each layer x group of ``percents``, read off a
    per-percentile ``table`` (``made_by``'s output); a missing scorer raises ``ValueError`` naming the
    layer, group and percentile."""
    for (layer, group), p in percents.items():
        at = table[(table["layer"] == layer) & (table["group"] == group) & (table["percent"] == p)]
        at = at.set_index("scorer")
        missing = [s for s in scorers if s not in at.index]
        if missing:
            raise ValueError(f"No {made_by} rows for layer {layer}, group {group!r} at percent {p:g} and "
                             f"scorer(s) {missing}; run {made_by} at that percent with those scorers first.")
        yield (layer, group, p), at


def median_spearman(summary: pd.DataFrame, scorers: Sequence[str]) -> pd.DataFrame:
    """Per scorer, the median ``<scorer> Spearman`` of a ``stability_summary`` over the attention
    groups (``qkv``: query/key and value) and over FFN units (``ffn``); NaN where none is defined.

    NaN Spearmans are left out: one half scored every unit alike (rf = 0 at layer 0's [CLS]).
    """
    attention = summary["group"] != "ffn"
    rows = []
    for scorer in scorers:
        row = {"scorer": scorer}
        for part, mask in (("qkv", attention), ("ffn", ~attention)):
            values = summary.loc[mask, f"{scorer} Spearman"].dropna()
            row[part] = float(np.median(values)) if len(values) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["scorer", "qkv", "ffn"])
