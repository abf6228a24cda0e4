"""The teaching figure: a small point cloud with a ball around every point, coloured by the
connected component it belongs to at the current radius (the Learn page).

The merge events come from :func:`obce_core.persistence.merge_events`; the components at a radius
are scipy's connected components of the graph of the merges made by then.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from obce_core.persistence import merge_events
from obce_core.plots.style import CLUSTER_COLORS, _rgba

__all__ = ["label_levels", "learn_figure"]


def _component_labels(n: int, merged: list[tuple[int, int, float]]) -> np.ndarray:
    """Each point's component, named by the smallest point index in it."""
    rows = [i for i, _, _ in merged]
    cols = [j for _, j, _ in merged]
    graph = coo_matrix((np.ones(len(merged)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


def label_levels(xs, min_gap: float) -> np.ndarray:
    """A text row (0, 1, 2, ...) for the label of each 1-D point so that labels in one row are at
    least ``min_gap`` apart: greedily, in x order, the first row whose last label is far enough."""
    xs = np.asarray(xs, dtype=np.float64)
    levels = np.zeros(len(xs), dtype=int)
    last: list[float] = []
    for k in np.argsort(xs, kind="stable"):
        row = next((i for i, x in enumerate(last) if xs[k] - x >= min_gap), len(last))
        if row == len(last):
            last.append(xs[k])
        last[row] = xs[k]
        levels[k] = row
    return levels


def learn_figure(points, radius: float, *, convention: str = "radius", labels=None, title: str | None = None,
                 height: int | None = None) -> go.Figure:
    """A small point cloud with balls of the current radius, coloured by connected component.

    1-D ``points`` (``(n,)`` or ``(n, 1)``) are drawn on a line with an interval around each
    point; 2-D ``(n, 2)`` points with a disc. With ``convention="radius"`` a ball has radius
    ``radius`` (two balls touch when the points are ``2 * radius`` apart); with ``"length"`` the
    ball radius is ``radius / 2``, so both merge at the same filtration value. Edges that have
    merged two components by ``radius`` (from :func:`merge_events`) are drawn as lines. The title
    says ``r`` (3 decimals) and how many components there are. ``labels`` names the points (default
    0, 1, ...; the Learn page passes its point table's numbers); in 1-D, labels of points closer than
    their text would need go on separate rows below the line, so they never overlap.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] not in (1, 2) or len(x) == 0:
        raise ValueError(f"points must be (n,), (n, 1) or (n, 2) with n >= 1; got shape {np.shape(points)}.")
    events = merge_events(x, convention=convention)
    ball = float(radius) if convention == "radius" else float(radius) / 2.0
    merged = [(i, j, v) for i, j, v in events if v <= radius]
    labels_c = _component_labels(len(x), merged)
    roots = list(dict.fromkeys(labels_c.tolist()))
    color_of = {r: CLUSTER_COLORS[k % len(CLUSTER_COLORS)] for k, r in enumerate(roots)}
    colors = [color_of[r] for r in labels_c]
    names = [str(v) for v in (range(len(x)) if labels is None else labels)]
    if len(names) != len(x):
        raise ValueError(f"labels must name every point: got {len(names)} labels for {len(x)} points.")
    fig = go.Figure()
    hover = [
        f"point {names[k]}: " + ", ".join(f"{c:.3g}" for c in x[k]) + f"<br>component of point {names[labels_c[k]]}"
        for k in range(len(x))
    ]
    if x.shape[1] == 1:
        xs = x[:, 0]
        for k in range(len(xs)):
            fig.add_trace(go.Scatter(x=[xs[k] - ball, xs[k] + ball], y=[0, 0], mode="lines", hoverinfo="skip", showlegend=False,
                                     line=dict(color=_rgba(colors[k], 0.3), width=26)))
        for i, j, v in merged:
            fig.add_trace(go.Scatter(x=[xs[i], xs[j]], y=[0.35, 0.35], mode="lines+markers", showlegend=False,
                                     line=dict(color=colors[i], width=2), marker=dict(size=5, color=colors[i]),
                                     hovertext=f"points {names[i]} and {names[j]} merged at {v:.3g}", hoverinfo="text"))
        fig.add_trace(go.Scatter(x=xs, y=np.zeros_like(xs), mode="markers", marker=dict(size=11, color=colors,
                                 line=dict(width=1, color="white")), hovertext=hover, hoverinfo="text", showlegend=False))
        span = float(xs.max() - xs.min()) or 1.0
        lo, hi = xs.min() - ball - 0.08 * span, xs.max() + ball + 0.08 * span
        # A label is ~2 characters wide: about 3 % of a 600 px plot's x range per label.
        levels = label_levels(xs, 0.035 * (hi - lo) * max(len(n) for n in names) / 1.5)
        fig.add_trace(go.Scatter(x=xs, y=-0.3 - 0.22 * levels, mode="text", text=names, textposition="middle center",
                                 hoverinfo="skip", showlegend=False, name="point numbers"))
        fig.update_xaxes(range=[lo, hi], title="value", zeroline=False)
        fig.update_yaxes(range=[-0.4 - 0.22 * max(int(levels.max()), 2), 1], showticklabels=False, zeroline=False,
                         showgrid=False)
    else:
        for k, (px, py) in enumerate(x):
            fig.add_shape(type="circle", x0=px - ball, x1=px + ball, y0=py - ball, y1=py + ball,
                          fillcolor=_rgba(colors[k], 0.18), line=dict(color=_rgba(colors[k], 0.6), width=1), layer="below")
        for i, j, v in merged:
            fig.add_trace(go.Scatter(x=[x[i, 0], x[j, 0]], y=[x[i, 1], x[j, 1]], mode="lines", showlegend=False,
                                     line=dict(color=colors[i], width=2),
                                     hovertext=f"points {names[i]} and {names[j]} merged at {v:.3g}", hoverinfo="text"))
        fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers+text", text=names,
                                 textposition="top center", marker=dict(size=11, color=colors, line=dict(width=1, color="white")),
                                 hovertext=hover, hoverinfo="text", showlegend=False))
        lo = x.min(axis=0) - ball
        hi = x.max(axis=0) + ball
        pad = 0.08 * float(max(hi - lo))
        fig.update_xaxes(range=[lo[0] - pad, hi[0] + pad], zeroline=False, title="x")
        fig.update_yaxes(range=[lo[1] - pad, hi[1] + pad], zeroline=False, title="y", scaleanchor="x", scaleratio=1)
    n_comp = len(roots)
    fig.update_layout(
        title=title or f"r = {radius:.3f}: {n_comp} component{'s' if n_comp != 1 else ''}",
        height=height or (300 if x.shape[1] == 1 else 480), margin=dict(l=40, r=10, t=40, b=40),
    )
    return fig
