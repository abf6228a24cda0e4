"""Which scored neurons a pruning plan removes: the "pruned/kept" every page shows.

Every verdict is read off one ``PruningSelection`` (``select_units(scores, plan, model)``), so it
follows the plan in force exactly: per-head selection of query/key/value, the query/key pair
score, ``skip_layers``, per-layer overrides and the chosen scorer. Nothing here ranks or counts
on its own.

A scored component maps to the pruning group that removes it (``COMPONENT_GROUPS``); query dim
``i`` and key dim ``i`` go together as pair ``i``. The attention output and the FFN output feed a
LayerNorm and are never pruned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["COMPONENT_GROUPS", "PRUNED", "KEPT", "NOT_PRUNABLE", "neuron_verdict", "neuron_verdicts", "plan_cuts"]

# The pruning group whose units are a scored component's neurons (query and key: one pair each).
COMPONENT_GROUPS: dict[str, str] = {"intermediate": "ffn", "query": "qk", "key": "qk", "value": "v"}
PRUNED, KEPT, NOT_PRUNABLE = "pruned", "kept", "not prunable"


def _check_layer(selection, layer: int) -> None:
    if not 0 <= int(layer) < selection.num_layers:
        raise ValueError(
            f"layer must be in [0, {selection.num_layers - 1}] (the model has {selection.num_layers} layers); "
            f"got {layer!r}."
        )


def neuron_verdict(selection, layer: int, component: str, neuron: int) -> str:
    """``"pruned"``, ``"kept"`` or ``"not prunable"`` for one scored neuron under ``selection``."""
    group = COMPONENT_GROUPS.get(str(component))
    if group is None:
        return NOT_PRUNABLE
    _check_layer(selection, layer)
    return PRUNED if int(neuron) in set(selection.removed(int(layer), group).tolist()) else KEPT


def neuron_verdicts(selection, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a scores table: layer, component, neuron, ...) with a boolean column ``pruned``.

    Neurons of components that are never pruned get ``False``.
    """
    layer = table["layer"].to_numpy(np.int64)
    component = table["component"].astype(str).to_numpy()
    neuron = table["neuron"].to_numpy(np.int64)
    pruned = np.zeros(len(table), dtype=bool)
    for comp, group in COMPONENT_GROUPS.items():
        in_comp = component == comp
        if not in_comp.any():
            continue
        for i in np.unique(layer[in_comp]):
            _check_layer(selection, int(i))
            rows = np.flatnonzero(in_comp & (layer == i))
            pruned[rows] = np.isin(neuron[rows], selection.removed(int(i), group))
    return table.assign(pruned=pruned)


def plan_cuts(selection, table: pd.DataFrame) -> pd.DataFrame:
    """Per prunable (layer, component): how many neurons the plan removes and the rf line it implies.

    Columns: layer, component, n, n_removed, rf_cut (the highest rf among the removed neurons, NaN
    when none is removed), kept_below (kept neurons whose rf is lower than ``rf_cut``). With the rf
    scorer on FFN units ``kept_below`` is 0 and ``rf_cut`` is a true threshold; per-head selection
    of query/key/value, the pair score and the control scorers remove neurons that do not sit
    below one rf line, and ``kept_below`` says how far from it they are.
    """
    marked = neuron_verdicts(selection, table[table["component"].astype(str).isin(list(COMPONENT_GROUPS))])
    rows = []
    for (layer, component), g in marked.groupby(["layer", "component"], observed=True, sort=True):
        rf = g["rf"].to_numpy(np.float64)
        removed = g["pruned"].to_numpy()
        cut = float(rf[removed].max()) if removed.any() else float("nan")
        below = int((rf[~removed] < cut).sum()) if removed.any() else 0
        rows.append({"layer": int(layer), "component": str(component), "n": int(rf.size),
                     "n_removed": int(removed.sum()), "rf_cut": cut, "kept_below": below})
    return pd.DataFrame(rows, columns=["layer", "component", "n", "n_removed", "rf_cut", "kept_below"])
