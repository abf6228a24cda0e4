"""Bottleneck distances between persistence diagrams, per homology dimension, and the two tables
built from them: consecutive layers ("where does the representation change?") and an original
against a pruned model at each layer ("what did pruning move?").

Infinite bars are handled apart from gudhi's matching, explicitly: a finite bar can never be
matched to an infinite one, so two diagrams with different numbers of infinite bars in a dimension
are at distance ``inf``; with the same number, the infinite bars are matched by sorted birth (the
optimal matching on a line) and the largest birth difference counts. Rips H0 diagrams always have
exactly one infinite bar born at 0, so for them only the finite bars matter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gudhi
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # only for annotations: diagrams imports this module
    from obce_core.topology.diagrams import LayerDiagrams

__all__ = ["bottleneck", "comparison_table", "consecutive_table"]


def _bars(diagram, dimension: int) -> np.ndarray:
    d = np.asarray(diagram, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(
            f"A persistence diagram is an (n, 3) array of birth, death, dimension; got shape {d.shape}."
        )
    return d[d[:, 2] == dimension, :2]


def bottleneck(a, b, dimension: int) -> float:
    """The bottleneck distance between the ``dimension`` bars of two ``(n, 3)`` diagrams.

    Finite bars: ``gudhi.bottleneck_distance`` (exact; a bar may be matched to the diagonal at
    half its length). Infinite bars: see the module docstring.
    """
    pa, pb = _bars(a, dimension), _bars(b, dimension)
    inf_a, inf_b = np.isinf(pa[:, 1]), np.isinf(pb[:, 1])
    if inf_a.sum() != inf_b.sum():
        return float("inf")
    essential = float(np.max(np.abs(np.sort(pa[inf_a, 0]) - np.sort(pb[inf_b, 0])), initial=0.0))
    fa, fb = pa[~inf_a], pb[~inf_b]
    if len(fa) == 0 and len(fb) == 0:
        finite = 0.0
    else:
        # e=0: gudhi's exact algorithm (its default tolerance reports identical diagrams as 1e-308)
        finite = float(gudhi.bottleneck_distance(fa.reshape(-1, 2), fb.reshape(-1, 2), 0))
    return max(finite, essential)


def _dimensions(result: "LayerDiagrams") -> range:
    return range(int(result.settings["max_dimension"]) + 1)


def consecutive_table(result: "LayerDiagrams") -> pd.DataFrame:
    """Per layer, the bottleneck distance to the layer before it (NaN for the first): columns
    ``layer``, ``name``, ``previous`` and ``bottleneck_h0`` (``bottleneck_h1`` with H1)."""
    rows = []
    previous = None
    for layer in result.layers:
        row = {"layer": layer, "name": result.name(layer), "previous": None if previous is None else result.name(previous)}
        for k in _dimensions(result):
            row[f"bottleneck_h{k}"] = (np.nan if previous is None
                                       else bottleneck(result.diagrams[previous], result.diagrams[layer], k))
        rows.append(row)
        previous = layer
    return pd.DataFrame(rows)


def comparison_table(original: "LayerDiagrams", pruned: "LayerDiagrams") -> pd.DataFrame:
    """Per layer, the bottleneck distance between an original and a pruned model's diagrams.

    Both must come from the same texts and settings (the same points, pooling, metric and
    dimensions), or the distance says nothing about pruning.
    """
    keys = ("pooling", "metric", "max_dimension", "max_length")
    differ = [k for k in keys if original.settings.get(k) != pruned.settings.get(k)]
    if differ:
        raise ValueError(
            f"The two results differ in {', '.join(differ)}; compute both with the same settings to compare them."
        )
    if not np.array_equal(original.text_indices, pruned.text_indices) or original.n_texts != pruned.n_texts:
        raise ValueError(
            "The two results are not on the same texts (or not the same subsample of them); compute both from the "
            "same texts with the same max_points and seed."
        )
    if original.layers != pruned.layers:
        raise ValueError(
            f"The two results cover different layers ({list(original.layers)} and {list(pruned.layers)}); a pruned "
            "model keeps its number of layers, so pass the same `layers` to both."
        )
    rows = []
    for layer in original.layers:
        row = {"layer": layer, "name": original.name(layer)}
        for k in _dimensions(original):
            row[f"bottleneck_h{k}"] = bottleneck(original.diagrams[layer], pruned.diagrams[layer], k)
        rows.append(row)
    return pd.DataFrame(rows)
