"""Many neurons at once: rf per layer and component, one group's neurons by rank, and a layer x
component summary (the Model & data and Persistence pages).

The pruned/kept marks come from the plan in force, never from a percentile worked out here:
``rf_rank_figure`` reads a ``pruned`` column and ``rf_distribution_figure`` the cuts of
:func:`obce_core.verdicts.plan_cuts`, both computed from ``select_units``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.plots.style import COMPONENT_COLORS, HIGHLIGHT_COLOR, REMOVED_COLOR, _rgba
from obce_core.layout import COMPONENTS, PRUNABLE_COMPONENTS

__all__ = ["rf_distribution_figure", "rf_rank_figure", "summary_heatmap"]


def rf_distribution_figure(
    table: pd.DataFrame,
    cuts: pd.DataFrame | None = None,
    *,
    log: bool = False,
    kind: str = "box",
    components: Sequence[str] = COMPONENTS,
    height: int = 560,
) -> go.Figure:
    """rf per layer, one panel per component (box or violin), with the plan's cut marked.

    ``cuts`` is :func:`obce_core.verdicts.plan_cuts` for the plan in force: a red bar marks, in
    each layer where the plan removes neurons, the highest rf it removes (its hover says how many
    kept neurons lie below that line: none for a pure rf cut). ``log`` puts rf on a log axis; zero
    rf cannot be drawn there and is counted in the panel title instead.
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin'; got {kind!r}.")
    components = [c for c in components if c in set(table["component"].astype(str))]
    if not components:
        raise ValueError("The table has no rows for the requested components; score a model first.")
    cols = 3 if len(components) > 2 else len(components)
    rows = int(np.ceil(len(components) / cols))
    titles = []
    comp_col = table["component"].astype(str)
    for c in components:
        t = c if c in PRUNABLE_COMPONENTS else f"{c} (kept: feeds LayerNorm)"
        if log:
            zeros = int(((comp_col == c) & (table["rf"] <= 0)).sum())
            if zeros:
                t += f"<br><sup>{zeros} zero rf not shown</sup>"
        titles.append(t)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.16)
    legend_done = False
    for k, c in enumerate(components):
        r, cc = k // cols + 1, k % cols + 1
        sub = table[comp_col == c]
        if log:
            sub = sub[sub["rf"] > 0]
        x = [f"L{int(layer)}" for layer in sub["layer"]]
        hover = [f"L{int(layer)} {c} neuron {int(nn)}" for layer, nn in zip(sub["layer"], sub["neuron"])]
        color = COMPONENT_COLORS.get(c, "#333333")
        if kind == "box":
            trace = go.Box(x=x, y=sub["rf"], name=c, marker_color=color, boxpoints="outliers", hovertext=hover,
                           marker=dict(size=3), showlegend=False, line=dict(width=1.2))
        else:
            trace = go.Violin(x=x, y=sub["rf"], name=c, line_color=color, fillcolor=_rgba(color, 0.35), box_visible=True,
                              meanline_visible=False, points=False, spanmode="hard", showlegend=False, scalemode="width")
        fig.add_trace(trace, row=r, col=cc)
        if cuts is not None and c in PRUNABLE_COMPONENTS:
            th = cuts[(cuts["component"].astype(str) == c) & (cuts["n_removed"] > 0)]
            if log:
                th = th[th["rf_cut"] > 0]
            if len(th):
                fig.add_trace(
                    go.Scatter(
                        x=[f"L{int(layer)}" for layer in th["layer"]], y=th["rf_cut"], mode="markers",
                        # an open symbol is stroked in marker.color, so both are set
                        marker=dict(symbol="line-ew-open", size=34, color=HIGHLIGHT_COLOR, line=dict(width=3, color=HIGHLIGHT_COLOR)),
                        name="the plan's cut (highest rf removed)", showlegend=not legend_done,
                        hovertext=[f"the plan removes {int(rm)} of {int(nn)}; highest rf removed {t:.4g}"
                                   + (f"; {int(b)} kept neurons lie below it (not a pure rf cut)" if b else "")
                                   for rm, nn, t, b in zip(th["n_removed"], th["n"], th["rf_cut"], th["kept_below"])],
                        hoverinfo="text",
                    ),
                    row=r, col=cc,
                )
                legend_done = True
        fig.update_xaxes(categoryorder="array", categoryarray=[f"L{i}" for i in sorted(table["layer"].unique())], row=r, col=cc)
        if log:
            fig.update_yaxes(type="log", row=r, col=cc)
    fig.update_yaxes(title_text="rf", col=1)
    fig.update_layout(height=height, margin=dict(l=50, r=10, t=60, b=30),
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    return fig


def rf_rank_figure(
    group: pd.DataFrame,
    *,
    selected: int | None = None,
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """All neurons of one (layer, component) sorted by rank: x = rank, y = rf, hover = neuron id.

    With a boolean ``pruned`` column (:func:`obce_core.verdicts.neuron_verdicts`), the neurons the
    plan removes are grey and the kept ones in the component's colour; when the removed neurons
    are exactly the lowest ranks, a dashed line marks the cut. ``selected`` (a neuron index) is
    ringed. Each point carries its neuron id as ``customdata``, so a click can select it.
    """
    g = group.sort_values("rank")
    component = str(g["component"].iloc[0]) if len(g) else ""
    color = COMPONENT_COLORS.get(component, "#333333")
    n = len(g)
    pruned = g["pruned"].to_numpy(bool) if "pruned" in g.columns else np.zeros(n, dtype=bool)
    cut = int(pruned.sum())
    colors = np.where(pruned, REMOVED_COLOR, color)
    hover = [
        f"neuron {int(nn)}<br>rf {r:.4g}<br>rank {int(k)}" + (f" ({int(t)} share this rf)" if t > 1 else "")
        + ("<br>pruned by the plan" if p else "")
        for nn, r, k, t, p in zip(g["neuron"], g["rf"], g["rank"], g["rf_ties"], pruned)
    ]
    fig = go.Figure(
        go.Scatter(
            x=g["rank"], y=g["rf"], mode="markers", customdata=g["neuron"], hovertext=hover, hoverinfo="text",
            marker=dict(color=colors, size=6 if n <= 500 else 4), showlegend=False, name="neurons",
        )
    )
    if cut and pruned[:cut].all():  # the plan removes exactly the lowest ranks: one cut
        fig.add_vline(x=cut - 0.5, line=dict(color=HIGHLIGHT_COLOR, dash="dash", width=1.5),
                      annotation_text=f"the plan removes {cut}", annotation_position="top left")
    if selected is not None:
        row = g[g["neuron"] == selected]
        if len(row):
            fig.add_trace(
                go.Scatter(
                    x=row["rank"], y=row["rf"], mode="markers", name=f"neuron {selected}", hoverinfo="skip",
                    marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#000000", width=2)),
                )
            )
    # The legend inside the plot's top left (low ranks have low rf: nothing is drawn there); at the
    # top right it lay under plotly's toolbar.
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=40),
                      legend=dict(orientation="h", yanchor="top", y=0.99, x=0.01, xanchor="left",
                                  bgcolor="rgba(255,255,255,0.7)"))
    fig.update_xaxes(title="rank by rf (0 = lowest)")
    fig.update_yaxes(title="rf")
    return fig


def summary_heatmap(
    summary: pd.DataFrame,
    value: str = "rf_median",
    *,
    per_component: bool = True,
    title: str | None = None,
    height: int = 320,
) -> go.Figure:
    """A layer x component heatmap of one column of ``NeuronScores.summary()`` (default the median rf).

    Components live on different scales (an FFN unit after GELU, a query dimension, a dense output
    feeding a LayerNorm), so by default each column is coloured relative to its own maximum; the
    cell text and the hover always give the value itself.
    """
    if value not in summary.columns:
        raise ValueError(f"value must be a column of the summary {list(summary.columns)}; got {value!r}.")
    s = summary.copy()
    s["component"] = s["component"].astype(str)
    grid = s.pivot(index="layer", columns="component", values=value)
    grid = grid[[c for c in COMPONENTS if c in grid.columns]]
    z = grid.to_numpy(dtype=float)
    colour = z
    if per_component:
        top = np.nanmax(np.abs(z), axis=0)
        colour = np.divide(z, top, out=np.zeros_like(z), where=top > 0)
    text = [[f"{x:.3g}" for x in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=colour, x=list(grid.columns), y=[f"L{i}" for i in grid.index], text=text, texttemplate="%{text}",
            textfont=dict(size=11),  # plotly shrinks cell text to fit, down to about 5 px in a narrow column
            customdata=z, colorscale="Viridis",
            colorbar=dict(title="share of the<br>column's max" if per_component else value),
            hovertemplate="%{y} %{x}<br>" + value + " %{customdata:.4g}<extra></extra>",
        )
    )
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig
