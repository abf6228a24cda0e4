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

__all__ = ["learn_figure"]


def _component_labels(n: int, merged: list[tuple[int, int, float]]) -> np.ndarray:
    """Each point's component, named by the smallest point index in it."""
    rows = [i for i, _, _ in merged]
    cols = [j for _, j, _ in merged]
    graph = coo_matrix((np.ones(len(merged)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


def learn_figure(points, radius: float, *, convention: str = "radius", title: str | None = None, height: int | None = None) -> go.Figure:
    """A small point cloud with balls of the current radius, coloured by connected component.

    1-D ``points`` (``(n,)`` or ``(n, 1)``) are drawn on a line with an interval around each
    point; 2-D ``(n, 2)`` points with a disc. With ``convention="radius"`` a ball has radius
    ``radius`` (two balls touch when the points are ``2 * radius`` apart); with ``"length"`` the
    ball radius is ``radius / 2``, so both merge at the same filtration value. Edges that have
    merged two components by ``radius`` (from :func:`merge_events`) are drawn as lines. The title
    says ``r`` (3 decimals) and how many components there are.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] not in (1, 2) or len(x) == 0:
        raise ValueError(f"points must be (n,), (n, 1) or (n, 2) with n >= 1; got shape {np.shape(points)}.")
    events = merge_events(x, convention=convention)
    ball = float(radius) if convention == "radius" else float(radius) / 2.0
    merged = [(i, j, v) for i, j, v in events if v <= radius]
    labels = _component_labels(len(x), merged)
    roots = list(dict.fromkeys(labels.tolist()))
    color_of = {r: CLUSTER_COLORS[k % len(CLUSTER_COLORS)] for k, r in enumerate(roots)}
    colors = [color_of[r] for r in labels]
    fig = go.Figure()
    hover = [
        f"point {k}: " + ", ".join(f"{c:.3g}" for c in x[k]) + f"<br>component of point {labels[k]}" for k in range(len(x))
    ]
    if x.shape[1] == 1:
        xs = x[:, 0]
        for k in range(len(xs)):
            fig.add_trace(go.Scatter(x=[xs[k] - ball, xs[k] + ball], y=[0, 0], mode="lines", hoverinfo="skip", showlegend=False,
                                     line=dict(color=_rgba(colors[k], 0.3), width=26)))
        for i, j, v in merged:
            fig.add_trace(go.Scatter(x=[xs[i], xs[j]], y=[0.35, 0.35], mode="lines+markers", showlegend=False,
                                     line=dict(color=colors[i], width=2), marker=dict(size=5, color=colors[i]),
                                     hovertext=f"points {i} and {j} merged at {v:.3g}", hoverinfo="text"))
        fig.add_trace(go.Scatter(x=xs, y=np.zeros_like(xs), mode="markers+text", text=[str(k) for k in range(len(xs))],
                                 textposition="bottom center", marker=dict(size=11, color=colors, line=dict(width=1, color="white")),
                                 hovertext=hover, hoverinfo="text", showlegend=False))
        span = float(xs.max() - xs.min()) or 1.0
        fig.update_xaxes(range=[xs.min() - ball - 0.08 * span, xs.max() + ball + 0.08 * span], title="value", zeroline=False)
        fig.update_yaxes(range=[-1, 1], showticklabels=False, zeroline=False, showgrid=False)
    else:
        for k, (px, py) in enumerate(x):
            fig.add_shape(type="circle", x0=px - ball, x1=px + ball, y0=py - ball, y1=py + ball,
                          fillcolor=_rgba(colors[k], 0.18), line=dict(color=_rgba(colors[k], 0.6), width=1), layer="below")
        for i, j, v in merged:
            fig.add_trace(go.Scatter(x=[x[i, 0], x[j, 0]], y=[x[i, 1], x[j, 1]], mode="lines", showlegend=False,
                                     line=dict(color=colors[i], width=2), hovertext=f"points {i} and {j} merged at {v:.3g}",
                                     hoverinfo="text"))
        fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers+text", text=[str(k) for k in range(len(x))],
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
