"""What a pruning plan keeps: every unit of every layer in place, and the share kept per layer
(the Prune page's figures, drawn from ``PruningReport.units`` and ``PruningReport.kept_frame()``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.layout import GROUP_LABELS
from obce_core.plots.style import GROUP_COLORS, LEGEND_BELOW, LEGEND_BELOW_MARGIN

__all__ = ["KEPT_COLOR", "REMOVED_COLOR", "pruning_units_figure", "kept_per_layer_figure"]

# Kept and removed in the Okabe-Ito blue and orange, told apart with every common colour-vision
# deficiency (and in grey scale by the darker blue); each runs from a pale shade (low score) to
# the full colour (high score) within its layer.
KEPT_COLOR, REMOVED_COLOR = "#0072B2", "#E69F00"
KEPT_PALE, REMOVED_PALE = "#CFE3F1", "#FBEBC7"


def _within_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank within its array scaled to [0, 1]; tied values share their mean rank
    (a row of equal scores is one flat shade, not a gradient by index)."""
    n = values.size
    if n <= 1:
        return np.full(n, 0.5)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    mean_rank = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    ranks = np.empty(n)
    ranks[order] = mean_rank
    return ranks / (n - 1)


def pruning_units_figure(
    units: pd.DataFrame,
    *,
    heads: int | None = None,
    groups: Sequence[str] = ("ffn", "qk", "v"),
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Which units a pruning plan keeps: one heatmap row per layer, one panel per group.

    ``units`` is ``PruningReport.units`` (layer, group, unit, score, kept). A cell is one unit in
    its original position: kept units blue, removed ones orange (Okabe-Ito, colour-blind safe; a
    legend says which); within each layer the shade follows the unit's score rank (darker = higher
    score), so the low-score units a plan cuts stand out. For ``qk`` a unit is a query/key pair. ``heads`` draws thin lines between
    heads in the qk and v panels. Layers of different widths (an already pruned model) are padded
    with empty cells. The hover gives the layer, unit (head and dim), score and kept/removed.
    """
    group_col = np.asarray(units["group"], dtype=object)  # fast for the report's categorical column
    present = set(pd.unique(group_col))
    groups = [g for g in groups if g in present]
    if not groups:
        raise ValueError("units has no rows for the requested groups; pass PruningReport.units.")
    layer_col = units["layer"].to_numpy(np.int64)
    unit_col = units["unit"].to_numpy(np.int64)
    score_col = units["score"].to_numpy(np.float64)
    kept_col = units["kept"].to_numpy(bool)
    layers = sorted(int(x) for x in np.unique(layer_col))
    row_of = {layer: row for row, layer in enumerate(layers)}
    titles = []
    for g in groups:
        mask = group_col == g
        kept, n = int(kept_col[mask].sum()), int(mask.sum())
        titles.append(f"{GROUP_LABELS.get(g, g)}: {kept:,} of {n:,} kept ({100 * kept / max(n, 1):.1f} %)")
    fig = make_subplots(rows=len(groups), cols=1, subplot_titles=titles, vertical_spacing=0.14 if len(groups) > 1 else 0.0)
    for k, g in enumerate(groups):
        mask = group_col == g
        width = int(unit_col[mask].max()) + 1
        z = np.full((len(layers), width), np.nan)
        by_head = bool(heads) and g in ("qk", "v")
        custom = np.full((len(layers), width, 3 if by_head else 1), np.nan)  # score (, head, dim)
        state = np.full((len(layers), width), "", dtype=object)
        sep_x: list = []
        sep_y: list = []
        for layer in np.unique(layer_col[mask]):
            part = mask & (layer_col == layer)
            row, cols = row_of[int(layer)], unit_col[part]
            s, keep = score_col[part], kept_col[part]
            q = _within_rank(np.nan_to_num(s, nan=-np.inf))
            z[row, cols] = np.where(keep, 0.5 + 0.5 * q, 0.5 * q)
            custom[row, cols, 0] = s
            state[row, cols] = np.where(keep, "kept", "removed")
            n = int(cols.max()) + 1
            if by_head and n % heads == 0:  # this layer's own head size (pruned layers differ)
                per_head = n // heads
                custom[row, :n, 1] = np.arange(n) // per_head
                custom[row, :n, 2] = np.arange(n) % per_head
                for h in range(1, heads):
                    sep_x += [h * per_head - 0.5, h * per_head - 0.5, None]
                    sep_y += [row - 0.5, row + 0.5, None]
        colorscale = [[0.0, REMOVED_PALE], [0.4999, REMOVED_COLOR], [0.5, KEPT_PALE], [1.0, KEPT_COLOR]]
        unit_word = "pair" if g == "qk" else ("dim" if g == "v" else "unit")
        where = f"%{{y}} {unit_word} %{{x}}" + (" (head %{customdata[1]}, dim %{customdata[2]})" if sep_x else "")
        fig.add_trace(
            go.Heatmap(
                z=z, x=np.arange(width), y=np.arange(len(layers)), zmin=0.0, zmax=1.0, colorscale=colorscale,
                showscale=False, customdata=custom, text=state, xgap=0, ygap=2, name=GROUP_LABELS.get(g, g),
                hovertemplate=where + "<br>score %{customdata[0]:.4g}<br>%{text}<extra>" + GROUP_LABELS.get(g, g) + "</extra>",
            ),
            row=k + 1, col=1,
        )
        if sep_x:  # thin white lines between heads, one trace (shapes are slow to add one by one)
            fig.add_trace(go.Scatter(x=sep_x, y=sep_y, mode="lines", line=dict(color="white", width=1), hoverinfo="skip",
                                     showlegend=False), row=k + 1, col=1)
        fig.update_yaxes(autorange="reversed", tickvals=list(range(len(layers))), ticktext=[f"L{i}" for i in layers],
                         zeroline=False, showgrid=False, row=k + 1, col=1)
        fig.update_xaxes(title_text=f"{unit_word} index" + (f" ({heads} heads)" if sep_x else ""), range=[-0.5, width - 0.5],
                         zeroline=False, showgrid=False, row=k + 1, col=1, title_standoff=4)
    for name, color in (("kept", KEPT_COLOR), ("removed", REMOVED_COLOR)):  # the legend: heatmaps have none
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=12, color=color), hoverinfo="skip", showlegend=True),
                      row=1, col=1)
    fig.update_layout(
        title=title, height=height or (110 + 60 * len(groups) + 26 * len(layers) * len(groups)),
        margin=dict(l=40, r=10, t=70 if title else 50, b=40), showlegend=True,
        # Top left: at the top right the legend lay under plotly's toolbar.
        legend=dict(orientation="h", yanchor="top", y=1.0, x=0, xanchor="left", yref="container"),
    )
    return fig


def kept_per_layer_figure(kept: pd.DataFrame, *, title: str | None = None, height: int = 300) -> go.Figure:
    """Share of units kept per layer, one bar per group (``PruningReport.kept_frame()``).

    Bars are percentages of the layer's units before pruning; the hover and the text give the
    counts (qk in pairs, v in dims over all heads).
    """
    fig = go.Figure()
    for g in [x for x in ("ffn", "qk", "v") if x in set(kept["group"].astype(str))]:
        sub = kept[kept["group"].astype(str) == g].sort_values("layer")
        pct = 100.0 * sub["kept"].to_numpy() / sub["total"].to_numpy()
        fig.add_trace(
            go.Bar(
                x=[f"L{int(i)}" for i in sub["layer"]], y=pct, name=GROUP_LABELS.get(g, g),
                marker_color=GROUP_COLORS.get(g, "#333333"),
                text=[f"{int(k)}/{int(t)}" for k, t in zip(sub["kept"], sub["total"])], textposition="outside",
                textangle=-90,  # upright labels of three neighbouring bars ran into each other ("384/384384/384")
                hovertemplate="%{x} " + GROUP_LABELS.get(g, g) + ": %{text} kept (%{y:.1f} %)<extra></extra>",
            )
        )
    fig.update_layout(title=title, height=height, barmode="group", margin=dict(l=50, r=10, t=50, b=LEGEND_BELOW_MARGIN),
                      legend=LEGEND_BELOW,
                      uniformtext=dict(minsize=8, mode="hide"))
    fig.update_yaxes(title="% of units kept", range=[0, 150])  # room above a full bar for its upright label
    return fig

