"""A plan search's trail: the task score of every evaluated plan against the cost it removes."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from obce_core.plots.style import ROLE_COLORS

__all__ = ["PHASE_COLORS", "search_front_figure"]

# One hue per search phase (Okabe-Ito), the feasible front in the "pruned" role colour.
PHASE_COLORS = {"original": ROLE_COLORS["original"], "uniform": "#e69f00", "sensitivity": "#999999",
                "path": "#56b4e9", "refine": "#009e73", "exhaustive": "#cc79a7"}


def search_front_figure(rows: Sequence[dict], original_score: float, tolerance: float, *,
                        best: dict | None = None, cost_label: str = "cost") -> go.Figure:
    """Every evaluated plan (``SearchResult.rows``: ``cost_removed``, ``main_score``, ``phase``,
    ``feasible``) as a point, main score x100 against the share of ``cost_label`` removed; the
    tolerance floor dashed, infeasible plans hollow, ``best`` ringed."""
    fig = go.Figure()
    for phase in dict.fromkeys(r["phase"] for r in rows):
        sub = [r for r in rows if r["phase"] == phase]
        fig.add_trace(go.Scatter(
            x=[100 * r["cost_removed"] for r in sub], y=[100 * r["main_score"] for r in sub], mode="markers",
            name=phase, marker=dict(color=PHASE_COLORS.get(phase, "#333333"), size=8,
                                    symbol=["circle" if r["feasible"] else "circle-open" for r in sub]),
            hovertemplate="%{x:.1f} % removed, score %{y:.2f}<extra>" + phase + "</extra>"))
    floor = 100 * original_score - tolerance
    fig.add_hline(y=floor, line_dash="dash", line_color=ROLE_COLORS["original"],
                  annotation_text=f"original {100 * original_score:.2f} - {tolerance:g}", annotation_position="bottom left")
    if best is not None:
        fig.add_trace(go.Scatter(x=[100 * best["cost_removed"]], y=[100 * best["main_score"]], mode="markers",
                                 name="best within tolerance", hoverinfo="skip",
                                 marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=2, color=ROLE_COLORS["pruned"]))))
    fig.update_layout(xaxis_title=f"{cost_label} removed (%)", yaxis_title="main score on the search split (x100)",
                      height=380, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="phase")
    return fig
