"""Layer topology figures: every layer's H0/H1 diagram in a strip, a layer's cloud in 2-D with its
H0 merges, and bottleneck distances per layer (between consecutive layers, or original vs pruned).

Diagrams follow the shared convention (``neuron.diagram_figure``): ``(n, 3)`` arrays of birth,
death, dimension, ``inf`` drawn on a dashed "∞" line, one colour per homology dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.plots.style import LEGEND_BELOW, LEGEND_BELOW_MARGIN, DIMENSION_COLORS, HIGHLIGHT_COLOR, _check_diagram, _finite_range, _GUIDE, _inf_level

__all__ = ["bottleneck_by_layer_figure", "cloud_merges_figure", "layer_strip_figure", "pca_2d"]


def layer_strip_figure(diagrams: Mapping[str, np.ndarray], *, selected: str | None = None, height: int = 230) -> go.Figure:
    """Small multiples: one persistence diagram per layer, left to right, each on its own scale
    (layers differ by orders of magnitude). ``selected`` gets a red title."""
    names = list(diagrams)
    fig = make_subplots(rows=1, cols=max(len(names), 1), subplot_titles=names, horizontal_spacing=0.025)
    for col, name in enumerate(names, 1):
        d = _check_diagram(diagrams[name], f"diagrams[{name!r}]")
        low, high = _finite_range([d])
        inf_y = _inf_level(low, high)
        pad = 0.06 * (inf_y - low)
        lo, hi = low - pad, inf_y + pad
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=_GUIDE, hoverinfo="skip", showlegend=False),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[inf_y, inf_y], mode="lines", line=_GUIDE, hoverinfo="skip",
                                 showlegend=False), row=1, col=col)
        for k in sorted({int(x) for x in d[:, 2]}):
            part = d[d[:, 2] == k]
            y = np.where(np.isinf(part[:, 1]), inf_y, part[:, 1])
            fig.add_trace(go.Scatter(x=part[:, 0], y=y, mode="markers", name=f"H{k}", legendgroup=f"H{k}",
                                     showlegend=col == 1, hoverinfo="skip",
                                     marker=dict(color=DIMENSION_COLORS.get(k, "#333333"), size=5, opacity=0.7)),
                          row=1, col=col)
        fig.update_xaxes(range=[lo, hi], showticklabels=False, zeroline=False, row=1, col=col)
        fig.update_yaxes(range=[lo, hi], showticklabels=False, zeroline=False, row=1, col=col)
    for annotation in fig.layout.annotations:
        if annotation.text == selected:
            annotation.font = dict(color=HIGHLIGHT_COLOR)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.15, x=0))
    return fig


def pca_2d(points) -> tuple[np.ndarray, np.ndarray]:
    """``(coordinates (n, 2), share of variance of each axis)`` of the rows of ``points`` on their
    first two principal axes (centred SVD; signs fixed so the largest loading is positive)."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0)
    if x.shape[0] < 2 or not np.any(x):
        return np.zeros((x.shape[0], 2)), np.zeros(2)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, len(s))
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = u[:, :k] * s[:k] * signs
    share = np.zeros(2)
    share[:k] = s[:k] ** 2 / (s**2).sum()
    return coords, share


def cloud_merges_figure(
    points,
    merges: Sequence[tuple[int, int, float]],
    *,
    labels: Sequence[str] | None = None,
    highlight: int = 3,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """A layer's cloud on its first two principal axes with the H0 merges (minimum-spanning-tree
    edges) drawn between the points they join; the ``highlight`` last merges (the longest H0 bars:
    the gaps between the biggest clusters) in red. Distances are those of the full space: the
    projection can make a long edge look short."""
    coords, share = pca_2d(points)
    merges = sorted(merges, key=lambda e: e[2])
    last = merges[-highlight:] if highlight > 0 else []
    fig = go.Figure()
    for edges, color, width, name in ((merges[: len(merges) - len(last)], "#9e9e9e", 1, "H0 merges (MST edges)"),
                                      (last, HIGHLIGHT_COLOR, 2.5, f"last {len(last)} merges")):
        xs, ys = [], []
        for i, j, _ in edges:
            xs += [coords[i, 0], coords[j, 0], None]
            ys += [coords[i, 1], coords[j, 1], None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width), name=name,
                                     hoverinfo="skip"))
    text = list(labels) if labels is not None else [f"point {i}" for i in range(len(coords))]
    fig.add_trace(go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="markers", name="texts", hovertext=text,
                             hoverinfo="text", marker=dict(color=DIMENSION_COLORS[0], size=7, line=dict(width=0.5, color="white"))))
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=10, t=40 if title else 10, b=LEGEND_BELOW_MARGIN),
                      legend=LEGEND_BELOW)
    fig.update_xaxes(title=f"PC1 ({100 * share[0]:.0f} % of variance)", zeroline=False)
    fig.update_yaxes(title=f"PC2 ({100 * share[1]:.0f} % of variance)", zeroline=False, scaleanchor="x")
    return fig


def bottleneck_by_layer_figure(table: pd.DataFrame, *, title: str | None = None, height: int = 300) -> go.Figure:
    """Bottleneck distance per layer, one line per homology dimension (columns ``bottleneck_h0``,
    ``bottleneck_h1`` of a consecutive or comparison table; ``name`` labels the x axis)."""
    fig = go.Figure()
    for column in [c for c in table.columns if c.startswith("bottleneck_h")]:
        k = int(column.rsplit("h", 1)[1])
        fig.add_trace(go.Scatter(x=table["name"], y=table[column], mode="lines+markers", name=f"H{k}",
                                 line=dict(color=DIMENSION_COLORS.get(k, "#333333")),
                                 hovertemplate=f"%{{x}}: H{k} bottleneck %{{y:.4g}}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=LEGEND_BELOW_MARGIN),
                      legend=LEGEND_BELOW)
    fig.update_yaxes(title="bottleneck distance", rangemode="tozero")
    fig.update_xaxes(title="layer")
    return fig
