"""The threshold sweep's curves: task score (or a label-free measure) against the pruning percentile, one panel per group."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.layout import GROUP_LABELS
from obce_core.plots.style import ROLE_COLORS, SCORER_COLORS, _rgba

__all__ = ["sweep_curves_figure"]

_PANEL_TITLES = {**GROUP_LABELS, "all": "all groups at once"}


def sweep_curves_figure(table: pd.DataFrame, original_score: float | None = None, *,
                        current: Mapping[str, float] | None = None, title: str | None = None,
                        metric: str = "main_score", scale: float = 100.0,
                        y_title: str = "main score (x100)") -> go.Figure:
    """Main score (x100) against percentile per scorer: the mean over seeds as a line, the range
    over seeds as a band (only where there are several seeds), one panel per group in the table's
    order. ``original_score`` (a fraction) is a dashed horizontal line; ``current`` maps a group
    to the slider's percentile, drawn as a dotted vertical line in that panel. ``metric`` (a
    column), ``scale`` (its plotted multiple; ``original_score`` in the column's units) and
    ``y_title`` draw any other column, e.g. the label-free sweep's cosines."""
    digits = 2 if scale >= 10 else 3  # cosines and correlations near 1 need the third digit
    groups = list(dict.fromkeys(table["group"])) if len(table) else []
    fig = make_subplots(rows=1, cols=max(len(groups), 1), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[_PANEL_TITLES.get(g, g) for g in groups] or [""])
    shown: set[str] = set()
    for col, group in enumerate(groups, start=1):
        part = table[table["group"] == group]
        for scorer, rows in part.groupby("scorer", sort=False):
            stats = (rows.groupby("percentile")[metric].agg(["mean", "min", "max", "count"])
                     .sort_index() * [scale, scale, scale, 1])
            color = SCORER_COLORS.get(scorer, "#333333")
            x = stats.index.to_list()
            if (stats["count"] > 1).any():
                fig.add_trace(go.Scatter(x=x + x[::-1], y=stats["max"].to_list() + stats["min"].to_list()[::-1],
                                         fill="toself", fillcolor=_rgba(color, 0.15), line=dict(width=0),
                                         hoverinfo="skip", showlegend=False, legendgroup=scorer,
                                         name=f"{scorer} range over seeds"), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=stats["mean"].to_list(), mode="lines+markers", name=scorer, legendgroup=scorer,
                showlegend=scorer not in shown, line=dict(color=color, width=3 if scorer == "rf" else 2),
                customdata=stats[["min", "max", "count"]].to_numpy().tolist(),
                hovertemplate=f"{scorer}, p=%{{x:g}}: %{{y:.{digits}f}} (seeds: %{{customdata[2]}}, "
                              f"min %{{customdata[0]:.{digits}f}}, max %{{customdata[1]:.{digits}f}})<extra></extra>",
            ), row=1, col=col)
            shown.add(scorer)
        if original_score is not None:
            # annotation_text=None draws plotly's placeholder "new text": label the first panel only.
            label = {"annotation_text": "original"} if col == 1 else {}
            fig.add_hline(y=scale * original_score, line=dict(color=ROLE_COLORS["original"], dash="dash", width=1),
                          row=1, col=col, **label)
        if current is not None and group in current:
            fig.add_vline(x=float(current[group]), line=dict(color="#000000", dash="dot", width=1), row=1, col=col)
        fig.update_xaxes(title_text="percentile removed", row=1, col=col)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, height=360, margin=dict(l=50, r=20, t=60, b=40), legend_title_text="scorer",
                      hovermode="closest")
    return fig
