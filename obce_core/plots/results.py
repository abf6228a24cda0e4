"""Fine-tuning results: original vs pruned per task, and score against size over every stored run
(the Compare page's figures, drawn from ``comparison_table`` and the results store's frame)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from obce_core.plots.style import CLUSTER_COLORS, LEGEND_BELOW, LEGEND_BELOW_MARGIN, ROLE_COLORS

__all__ = ["comparison_bar_figure", "tradeoff_figure"]



def comparison_bar_figure(table: pd.DataFrame, *, metric: str = "main_score", title: str | None = None,
                          height: int = 320) -> go.Figure:
    """Original vs pruned (vs recovered) per task: bars of one metric of ``jobs.comparison_table``.

    GLUE metrics are fractions; the bars show them x100 like published GLUE tables. With the
    default ``metric="main_score"`` each task's headline row (the table's ``main`` column) is drawn.
    """
    if metric == "main_score" and "main" in table.columns:
        rows = table[table["main"].fillna(False).astype(bool)]
    else:
        rows = table[table["metric"] == metric]
    fig = go.Figure()
    for role in ("original", "pruned", "recovered"):
        if role not in rows.columns or rows[role].isna().all():
            continue
        y = 100.0 * pd.to_numeric(rows[role], errors="coerce").to_numpy(dtype=float)
        fig.add_trace(
            go.Bar(
                x=rows["task"].tolist(), y=y, name=role, marker_color=ROLE_COLORS[role],
                text=[f"{v:.1f}" if np.isfinite(v) else "" for v in y], textposition="outside",
                hovertemplate="%{x} " + role + ": %{y:.2f}<extra></extra>",
            )
        )
    fig.update_layout(title=title, height=height, barmode="group", margin=dict(l=50, r=10, t=50, b=LEGEND_BELOW_MARGIN),
                      legend=LEGEND_BELOW)
    fig.update_yaxes(title=f"{metric.replace('_', ' ')} x100")
    return fig


def _pareto(params: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal parameters AND a higher score)."""
    order = np.lexsort((-score, params))
    best, front = -np.inf, []
    for i in order:
        if score[i] > best:
            front.append(i)
            best = score[i]
    return np.array(front, dtype=int)


def tradeoff_figure(results: pd.DataFrame, *, title: str | None = None, height: int = 420) -> go.Figure:
    """GLUE score vs parameters for every stored run: the trade-off an analyst picks a plan from.

    ``results``: one row per run with ``task``, ``role``, ``main_score``, ``params_total`` and
    optionally ``label`` (hover text, e.g. the plan). One colour per task, one symbol per role;
    per task, a dotted line joins the runs no other run of that task beats with fewer parameters
    and a higher score (the Pareto front).
    """
    fig = go.Figure()
    data = results.dropna(subset=["main_score"])
    symbols = {"original": "circle", "pruned": "diamond", "recovered": "triangle-up"}
    for k, (task, sub) in enumerate(data.groupby("task", sort=True)):
        color = CLUSTER_COLORS[k % len(CLUSTER_COLORS)]
        x = sub["params_total"].to_numpy(dtype=float) / 1e6
        y = 100.0 * sub["main_score"].to_numpy(dtype=float)
        front = _pareto(x, y)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=x[front], y=y[front], mode="lines", line=dict(color=color, width=1, dash="dot"),
                                     hoverinfo="skip", showlegend=False, legendgroup=str(task)))
        labels = sub["label"].astype(str).tolist() if "label" in sub.columns else [""] * len(sub)
        roles = sub["role"].astype(str).tolist()
        fig.add_trace(
            go.Scatter(
                x=x, y=y, mode="markers", name=str(task), legendgroup=str(task),
                marker=dict(color=color, size=11, symbol=[symbols.get(r, "square") for r in roles],
                            line=dict(width=1, color="white")),
                hovertext=[f"{task} {r}<br>{lab}<br>{xx:.2f} M parameters, score {yy:.2f}"
                           for r, lab, xx, yy in zip(roles, labels, x, y)],
                hoverinfo="text",
            )
        )
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 20, b=40),
                      legend=dict(title="task"))
    fig.update_xaxes(title="parameters (millions, whole model)")
    fig.update_yaxes(title="main GLUE score x100")
    return fig
