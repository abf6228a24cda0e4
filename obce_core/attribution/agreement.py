"""Does a scorer rank high what the model uses? Each scorer's ranking against the attribution.

``with_scorers`` adds every scorer's unit score (``pruning.importance``: rf, std, magnitude, flap,
fisher, random; the scores ``select_units`` ranks by, the query/key pair's being the mean of its
two rows) to an attribution table. ``agreement_table`` then gives, per layer, group and scorer:

* ``spearman``: Spearman's correlation of the scorer's scores with the attribution over the
  group's units, with a percentile bootstrap interval (``low``, ``high``) over units resampled with
  replacement (an ESTIMATE of how precisely these units fix it; the attribution's own sampling
  noise over examples is not in it). NaN where either side is constant (layer 0's query/key/value
  at [CLS] have rf = 0).
* ``removed_in_lowest``: of the units a plan with this scorer removes (at ``percent``, or a given plan's)
  (``select_units``: per head for query/key/value), the share that are also among the same number
  with the LOWEST attribution (per head likewise); ``chance`` is what a random choice would share
  (removed / units). 1 = the scorer removes exactly what the model uses least.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from obce_core.layout import GROUPS, layer_shapes
from obce_core.pruning.importance import make_importance
from obce_core.pruning.plan import SCORERS, PruningPlan, n_removed
from obce_core.pruning.selection import select_units
from obce_core.validation import check_int, check_number, invalid

__all__ = ["AGREEMENT_COLUMNS", "agreement_table", "scorer_problems", "spearman_interval", "with_scorers"]

AGREEMENT_COLUMNS = ["layer", "group", "scorer", "units", "spearman", "low", "high", "removed", "removed_in_lowest",
                     "chance"]


def scorer_problems(scores, scorers=SCORERS) -> dict[str, str]:
    """``{scorer: why it cannot score}`` for the scorers these scores lack an input of (``fisher``
    without its column)."""
    problems = {}
    for name in scorers:
        try:
            make_importance(name).check_scores(scores)
        except ValueError as exc:
            problems[name] = str(exc)
    return problems


def with_scorers(table: pd.DataFrame, model, scores, scorers=SCORERS, *, seed: int = 0) -> pd.DataFrame:
    """``table`` (from ``unit_attribution``) with one column per scorer that can score (NaN for the
    others, listed in ``attrs["missing_scorers"]``). ``scores`` is the model's ``NeuronScores``."""
    problems = scorer_problems(scores, scorers)
    out = table.copy()
    shapes = layer_shapes(model)
    for name in scorers:
        values = np.full(len(out), np.nan)
        if name not in problems:
            importance = make_importance(name, seed=seed)
            for layer, shape in enumerate(shapes):
                for group in GROUPS:
                    rows = np.flatnonzero((out["layer"].to_numpy() == layer) & (out["group"].to_numpy() == group))
                    n = shape["ffn"] if group == "ffn" else shape["heads"] * shape[group]
                    if len(rows) != n:
                        raise ValueError(f"The attribution table has {len(rows)} {group} units in layer {layer} but the "
                                         f"model has {n}: it was computed on another model. Recompute it on this one.")
                    values[rows[np.argsort(out["unit"].to_numpy()[rows])]] = importance(model, scores, layer, group, n).primary
        out[name] = values
    out.attrs = {**table.attrs, "missing_scorers": sorted(problems)}
    return out


def spearman_interval(x, y, *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's correlation (average ranks for ties) of ``x`` and ``y`` and a percentile bootstrap
    interval over pairs resampled with replacement; NaNs when either side is constant."""
    check_int(resamples, "resamples", "spearman_interval", low=10)
    check_number(level, "level", "spearman_interval", low=0, high=1, low_open=True, high_open=True)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = _rank_corr(x[None], y[None])[0]
    if np.isnan(point):
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    draws = _rank_corr(x[idx], y[idx])
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(point), float(low), float(high)


def _rank_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of the rows' ranks; NaN for a constant row."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def _lowest(values: np.ndarray, rows: int, remove: int) -> np.ndarray:
    """Indices of the ``remove`` lowest values of each of ``rows`` equal blocks (heads), lower index first on ties."""
    block = values.reshape(rows, -1)
    order = np.argsort(block, axis=1, kind="stable")[:, :remove]
    return (order + (np.arange(rows) * block.shape[1])[:, None]).reshape(-1)


def agreement_table(table: pd.DataFrame, model, scores, *, percent: float = 50, plan: PruningPlan | None = None,
                    seed: int = 0, resamples: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """Per layer, group and scorer column of ``table`` (``with_scorers``): see the module docstring.

    The removed units are those of ``plan`` (its percentiles, overrides and skipped layers; its
    scorer replaced by each scorer in turn), by default ``PruningPlan(ffn=qk=v=percent)`` with
    ``seed``; a layer and group the plan leaves whole gets NaN. ``resamples``/``level`` set the
    bootstrap."""
    if plan is None:
        check_number(percent, "percent", "agreement_table", low=0, high=100, low_open=True, high_open=True,
                     fix="The percentile of the plan whose removed units are compared, e.g. 50.")
        plan = PruningPlan(ffn=percent, qk=percent, v=percent, seed=seed, compensation="none")
    elif not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan; got {type(plan).__name__}.")
    scorers = [s for s in SCORERS if s in table.columns and table[s].notna().any()]
    if not scorers:
        raise invalid("table", "agreement_table", "a table with scorer columns (with_scorers)", list(table.columns),
                      "Add them with obce_core.attribution.with_scorers(table, model, scores).")
    shapes = layer_shapes(model)
    plan_rows = []
    for name in scorers:
        plan_rows.append((name, select_units(scores, replace(plan, scorer=name), model)))
    rows = []
    for layer, shape in enumerate(shapes):
        for group in GROUPS:
            part = table[(table["layer"] == layer) & (table["group"] == group)].sort_values("unit")
            attribution = part["attribution"].to_numpy(np.float64)
            heads = 1 if group == "ffn" else shape["heads"]
            remove = n_removed(plan.percent(layer, group), len(part) // heads)
            lowest = set(_lowest(attribution, heads, remove).tolist())
            for name, selection in plan_rows:
                rho, low, high = spearman_interval(part[name].to_numpy(), attribution, resamples=resamples,
                                                   level=level, seed=seed)
                removed = selection.removed(layer, group)
                share = len(lowest.intersection(removed.tolist())) / len(removed) if len(removed) else float("nan")
                rows.append({"layer": layer, "group": group, "scorer": name, "units": len(part), "spearman": rho,
                             "low": low, "high": high, "removed": int(len(removed)), "removed_in_lowest": share,
                             "chance": len(removed) / len(part) if len(part) else float("nan")})
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    out.attrs = {"plan": plan.describe(), "percent": float(plan.ffn), "level": float(level), "resamples": int(resamples)}
    return out
