"""Attribution figures: a scorer's score against the attribution for one layer and group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from obce_core.layout import GROUP_LABELS
from obce_core.plots.style import GROUP_COLORS, HIGHLIGHT_COLOR

__all__ = ["attribution_scatter"]


def attribution_scatter(part: pd.DataFrame, scorer: str = "rf", *, selected: int | None = None,
                        spearman: float | None = None, title: str | None = None, height: int = 360) -> go.Figure:
    """One point per unit of ``part`` (rows of one layer and group of ``with_scorers``' table):
    x = the ``scorer`` column, y = ``attribution``; ``selected`` (a unit) is ringed in red. Each point
    carries its unit as ``customdata``."""
    group = str(part["group"].iloc[0]) if len(part) else "ffn"
    x, y = part[scorer].to_numpy(np.float64), part["attribution"].to_numpy(np.float64)
    hover = [f"unit {int(u)}<br>{scorer} {a:.4g}<br>attribution {b:.4g}" for u, a, b in zip(part["unit"], x, y)]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers", customdata=part["unit"], hovertext=hover, hoverinfo="text",
                               marker=dict(color=GROUP_COLORS.get(group, "#333333"), size=5 if len(part) > 500 else 7,
                                           opacity=0.7), showlegend=False, name="units"))
    if selected is not None:
        row = part[part["unit"] == selected]
        if len(row):
            fig.add_trace(go.Scatter(x=row[scorer], y=row["attribution"], mode="markers", name=f"unit {selected}",
                                     hoverinfo="skip", marker=dict(size=16, color="rgba(0,0,0,0)",
                                                                   line=dict(color=HIGHLIGHT_COLOR, width=2))))
    fig.add_hline(y=0, line=dict(color="#888888", width=1, dash="dash"))
    if title is None and spearman is not None:
        title = f"{GROUP_LABELS.get(group, group)}: Spearman {spearman:.2f}" if np.isfinite(spearman) else \
            f"{GROUP_LABELS.get(group, group)}: Spearman n/a ({scorer} is constant here)"
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=10, t=40 if title else 10, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    fig.update_xaxes(title=scorer)
    fig.update_yaxes(title="attribution (loss fall it carries)")
    return fig
