"""Colours and small drawing helpers every obce figure shares (one colour per component, group,
homology dimension and model role, so the same thing looks the same on every page)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "COMPONENT_COLORS",
    "DIMENSION_COLORS",
    "HIGHLIGHT_COLOR",
    "CLUSTER_COLORS",
    "LEGEND_BELOW",
    "LEGEND_BELOW_MARGIN",
    "GROUP_COLORS",
    "ROLE_COLORS",
    "REMOVED_COLOR",
    "SCORER_COLORS",
]

COMPONENT_COLORS: dict[str, str] = {
    "query": "#1f77b4",
    "key": "#ff7f0e",
    "value": "#2ca02c",
    "intermediate": "#9467bd",
    "attention_output": "#8c564b",
    "output": "#e377c2",
}
DIMENSION_COLORS: dict[int, str] = {0: "#17becf", 1: "#bcbd22", 2: "#7f7f7f"}
HIGHLIGHT_COLOR = "#d62728"
# A horizontal legend along the bottom edge of the figure, under the x axis's title (give the figure
# LEGEND_BELOW_MARGIN px at the bottom). Above the plot, a legend ran into the title in a narrow
# column or lay under plotly's toolbar at the top right.
LEGEND_BELOW = dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0.0, xanchor="left")
LEGEND_BELOW_MARGIN = 70
# Connected components on the teaching page: distinct from the component colours on purpose.
CLUSTER_COLORS = (
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
    "#999999", "#8dd3c7", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#bc80bd",
)
_GUIDE = dict(color="#888888", width=1, dash="dash")
# A pruning group takes the colour of the component it cuts (qk: the query's).
GROUP_COLORS: dict[str, str] = {
    "ffn": COMPONENT_COLORS["intermediate"],
    "qk": COMPONENT_COLORS["query"],
    "v": COMPONENT_COLORS["value"],
}
# Original vs pruned models (Okabe-Ito hues, apart from the component colours).
ROLE_COLORS: dict[str, str] = {"original": "#666666", "pruned": "#0072b2", "recovered": "#009e73"}
# Scorers on the evidence curves: rf stands out, the controls in muted hues.
SCORER_COLORS: dict[str, str] = {"rf": "#d62728", "std": "#0072b2", "magnitude": "#009e73", "flap": "#cc79a7",
                                 "random": "#7f7f7f"}
# A unit the plan in force removes.
REMOVED_COLOR = "#bbbbbb"


def _fmt(x: float) -> str:
    return "∞" if np.isinf(x) else f"{x:.4g}"


def _check_diagram(diagram, what: str = "diagram") -> np.ndarray:
    d = np.asarray(diagram, dtype=np.float64)
    if d.size == 0:
        return np.empty((0, 3))
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(
            f"{what} must be an (n, 3) array of birth, death, dimension; got shape {d.shape}. "
            "Build one with obce_core.persistence_diagram(points)."
        )
    return d


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _finite_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """(low, high) over the finite births and deaths of all diagrams (0, 0 when there are none)."""
    vals = [a[:, :2][np.isfinite(a[:, :2])] for a in arrays if a.size]
    vals = np.concatenate(vals) if vals else np.empty(0)
    if vals.size == 0:
        return 0.0, 0.0
    return float(min(vals.min(), 0.0)), float(vals.max())


def _inf_level(low: float, high: float) -> float:
    """Where the "∞" line goes: 10 % of the finite span above the finite range (1 if no span)."""
    span = high - low
    return high + (0.1 * span if span > 0 else 1.0)
