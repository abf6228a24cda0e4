"""A plan search's trail (the task score of every evaluated plan against the cost it removes, with
the confidence bound that judged it) and its report's drops with their intervals."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from obce_core.plots.style import ROLE_COLORS

__all__ = ["PHASE_COLORS", "search_drop_figure", "search_front_figure"]

# One hue per search phase (Okabe-Ito), the feasible front in the "pruned" role colour.
PHASE_COLORS = {"original": ROLE_COLORS["original"], "uniform": "#e69f00", "sensitivity": "#999999",
                "path": "#56b4e9", "refine": "#009e73", "exhaustive": "#cc79a7"}


def search_front_figure(rows: Sequence[dict], original_score: float, tolerance: float, *,
                        best: dict | None = None, cost_label: str = "cost") -> go.Figure:
    """Every evaluated plan (``SearchResult.rows``: ``cost_removed``, ``main_score``, ``phase``,
    ``feasible``) as a point, main score x100 against the share of ``cost_label`` removed; the
    tolerance floor dashed, infeasible plans hollow, ``best`` ringed. A row with a paired bound
    (``drop``, ``drop_upper``) hangs a bar down to the score its bound allows: a plan is within the
    tolerance when its bar stays above the floor."""
    fig = go.Figure()
    for phase in dict.fromkeys(r["phase"] for r in rows):
        sub = [r for r in rows if r["phase"] == phase]
        below = [max(r["drop_upper"] - r["drop"], 0.0) if "drop_upper" in r else 0.0 for r in sub]
        fig.add_trace(go.Scatter(
            x=[100 * r["cost_removed"] for r in sub], y=[100 * r["main_score"] for r in sub], mode="markers",
            name=phase, marker=dict(color=PHASE_COLORS.get(phase, "#333333"), size=8,
                                    symbol=["circle" if r["feasible"] else "circle-open" for r in sub]),
            error_y=dict(type="data", symmetric=False, array=[0.0] * len(sub), arrayminus=below, thickness=1,
                         width=0, color=PHASE_COLORS.get(phase, "#333333")),
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


def search_drop_figure(drops: Sequence[tuple[str, dict]], tolerance: float) -> go.Figure:
    """A report's paired drops (points; ``PairedDrop`` dicts: ``drop``, ``low``, ``high``, and on
    the search row ``upper`` at its ``confidence``), one row per ``(label, drop)``: the point, its
    95 % interval as a bar, the bound that judged the plan as a tick; the tolerance dashed."""
    fig = go.Figure()
    labels = [label for label, _ in drops]
    fig.add_trace(go.Scatter(
        x=[d["drop"] for _, d in drops], y=labels, mode="markers", name="drop (95 % interval, estimate)",
        marker=dict(size=10, color=ROLE_COLORS["pruned"]),
        error_x=dict(type="data", symmetric=False, array=[d["high"] - d["drop"] for _, d in drops],
                     arrayminus=[d["drop"] - d["low"] for _, d in drops], thickness=2, width=6),
        hovertemplate="%{y}: drop %{x:+.2f} points<extra></extra>"))
    bounded = [(label, d) for label, d in drops if d.get("upper") is not None]
    if bounded:
        fig.add_trace(go.Scatter(
            x=[d["upper"] for _, d in bounded], y=[label for label, _ in bounded], mode="markers",
            name=f"bound that judged the plan ({bounded[0][1]['confidence']:g} %, one-sided)",
            marker=dict(symbol="line-ns-open", size=18, line=dict(width=3, color=ROLE_COLORS["original"])),
            hovertemplate="%{y}: at most %{x:+.2f} points<extra></extra>"))
    fig.add_vline(x=tolerance, line_dash="dash", line_color=ROLE_COLORS["original"],
                  annotation_text=f"tolerance {tolerance:g}", annotation_position="top")
    fig.add_vline(x=0, line_color="#cccccc")
    fig.update_layout(xaxis_title="points lost against the original, on the same examples (x100)",
                      yaxis=dict(autorange="reversed"), height=120 + 50 * len(drops),
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.35))
    return fig
