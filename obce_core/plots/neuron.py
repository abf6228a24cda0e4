"""One neuron's persistence: its 0-D diagram, its barcode and its outputs with the largest gap.

A diagram is an ``(n, 3)`` array of (birth, death, dimension). Infinite deaths stay ``np.inf`` in
the data and are drawn on a dashed "∞" line above the finite range; the diagonal is dashed and
has no hover; both axes share one range (giotto-tda's convention).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.persistence import merge_events
from obce_core.plots.style import (
    CLUSTER_COLORS,
    COMPONENT_COLORS,
    DIMENSION_COLORS,
    HIGHLIGHT_COLOR,
    LEGEND_BELOW,
    LEGEND_BELOW_MARGIN,
    _check_diagram,
    _finite_range,
    _fmt,
    _GUIDE,
    _inf_level,
    _rgba,
)

__all__ = ["diagram_figure", "barcode_figure", "values_strip_figure", "token_highlight_html"]


def diagram_figure(
    diagrams: np.ndarray | Mapping[str, np.ndarray],
    *,
    hover: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    rf: float | None = None,
    radius: float | None = None,
    radius_label: str | None = None,
    title: str | None = None,
    height: int = 380,
) -> go.Figure:
    """A persistence diagram: one point per bar at (birth, death).

    ``diagrams``: one ``(n, 3)`` array (split by homology dimension) or ``{label: array}``; a label
    that names a BERT component gets that component's colour. ``hover``: per-point text (a list,
    or a dict of lists keyed like ``diagrams``). ``rf`` draws a dotted line at that death value.
    ``radius`` shows the filtration as it grows: only bars that died by ``radius`` are drawn, with
    a dashed sweep line at ``radius``, named ``radius_label`` in the legend (default "r = <radius>";
    a caller whose filtration value is a length 2r says so, e.g. "2r = 0.514").
    """
    if isinstance(diagrams, Mapping):
        groups = {str(k): _check_diagram(v, f"diagrams[{k!r}]") for k, v in diagrams.items()}
        hovers = dict(hover) if isinstance(hover, Mapping) else {}
    else:
        d = _check_diagram(diagrams)
        dims = sorted({int(x) for x in d[:, 2]}) or [0]
        groups = {f"H{k}": d[d[:, 2] == k] for k in dims}
        hovers = {}
        if hover is not None and not isinstance(hover, Mapping):
            h = np.asarray(list(hover), dtype=object)
            if len(h) != len(d):
                raise ValueError(f"hover has {len(h)} labels for a diagram of {len(d)} points; pass one per point.")
            hovers = {f"H{k}": h[d[:, 2] == k] for k in dims}

    low, high = _finite_range(list(groups.values()))
    if radius is not None:
        high = max(high, float(radius))
    if rf is not None:
        high = max(high, float(rf))
    inf_y = _inf_level(low, high)
    pad = 0.06 * (inf_y - low)
    lo, hi = low - pad, inf_y + pad

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=_GUIDE, hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[inf_y, inf_y], mode="lines", line=_GUIDE, hoverinfo="skip", showlegend=False))
    fig.add_annotation(x=lo, y=inf_y, text="∞", showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=14))

    for idx, (label, d) in enumerate(groups.items()):
        if radius is not None:
            d = d[d[:, 1] <= radius]
        if label in COMPONENT_COLORS:
            color = COMPONENT_COLORS[label]
        elif label.startswith("H") and label[1:].isdigit():
            color = DIMENSION_COLORS.get(int(label[1:]), "#333333")
        else:
            color = CLUSTER_COLORS[idx % len(CLUSTER_COLORS)]
        deaths = d[:, 1]
        y = np.where(np.isinf(deaths), inf_y, deaths)
        ids = hovers.get(label)
        if ids is not None and radius is not None:
            full = groups[label]
            ids = np.asarray(list(ids), dtype=object)[full[:, 1] <= radius]
        text = [
            (f"{ids[i]}<br>" if ids is not None else "") + f"birth {_fmt(b)}<br>death {_fmt(dd)}"
            for i, (b, dd) in enumerate(d[:, :2])
        ]
        fig.add_trace(
            go.Scatter(
                x=d[:, 0], y=y, mode="markers", name=label, hovertext=text, hoverinfo="text",
                marker=dict(color=color, size=9, opacity=0.75, line=dict(width=0.5, color="white")),
            )
        )
    if rf is not None:
        fig.add_trace(
            go.Scatter(
                x=[lo, hi], y=[rf, rf], mode="lines", name=f"rf = {rf:.4g}", hoverinfo="skip",
                line=dict(color=HIGHLIGHT_COLOR, width=1.5, dash="dot"),
            )
        )
    if radius is not None:
        fig.add_trace(
            go.Scatter(
                x=[lo, hi], y=[radius, radius], mode="lines", name=radius_label or f"r = {radius:.3g}", hoverinfo="skip",
                line=dict(color="#444444", width=1.5, dash="dash"),
            )
        )
    fig.update_layout(
        title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=40),
        # below the diagonal nothing is ever drawn (death >= birth): room for the legend
        legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"),
    )
    fig.update_xaxes(range=[lo, hi], title="birth", zeroline=False)
    fig.update_yaxes(range=[lo, hi], title="death", zeroline=False)
    return fig


def barcode_figure(
    diagram: np.ndarray,
    *,
    rf: float | None = None,
    radius: float | None = None,
    color: str | None = None,
    max_bars: int = 300,
    title: str | None = None,
    height: int = 380,
) -> go.Figure:
    """The barcode of a diagram: one horizontal bar per point, from birth to death, longest on top.

    The infinite bar runs into the dashed "∞" line. With ``radius``, bars stop at ``radius``:
    bars that have already died are solid, bars still alive are pale. Only the ``max_bars``
    longest bars are drawn (the title says so); zero-length bars (tied values) have no length.
    """
    d = _check_diagram(diagram)
    color = color or DIMENSION_COLORS[0]
    n_all = len(d)
    order = np.lexsort((d[:, 0], d[:, 1]))  # by death, then birth
    d = d[order]
    if n_all > max_bars:
        d = d[-max_bars:]
    low, high = _finite_range([d])
    if radius is not None:
        high = max(high, float(radius))
    if rf is not None:
        high = max(high, float(rf))
    inf_x = _inf_level(low, high)
    n = len(d)
    width = float(np.clip(300.0 / max(n, 1), 1.5, 10.0))

    def segments(rows: np.ndarray, ends: np.ndarray, idx: np.ndarray):
        xs, ys = [], []
        for (b, _, _), e, i in zip(rows, ends, idx):
            xs += [b, e, None]
            ys += [i, i, None]
        return xs, ys

    fig = go.Figure()
    idx = np.arange(n)
    deaths = d[:, 1]
    if radius is None:
        ends = np.where(np.isinf(deaths), inf_x, deaths)
        xs, ys = segments(d, ends, idx)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width), name="bars", hoverinfo="skip", showlegend=False))
    else:
        dead = deaths <= radius
        xs, ys = segments(d[dead], deaths[dead], idx[dead])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width), name="died (merged)", hoverinfo="skip"))
        xs, ys = segments(d[~dead], np.full((~dead).sum(), float(radius)), idx[~dead])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=_rgba(color, 0.35), width=width), name="still alive", hoverinfo="skip"))
        fig.add_vline(x=float(radius), line=dict(color="#444444", width=1.5, dash="dash"))
    # Invisible markers at the bar ends carry the hover text.
    ends = np.where(np.isinf(deaths), inf_x, deaths)
    fig.add_trace(
        go.Scatter(
            x=ends, y=idx, mode="markers", marker=dict(size=6, color=color, opacity=0), showlegend=False,
            hovertext=[f"bar [{_fmt(b)}, {_fmt(e)})" for b, e in d[:, :2]], hoverinfo="text",
        )
    )
    fig.add_trace(go.Scatter(x=[inf_x, inf_x], y=[-1, n], mode="lines", line=_GUIDE, hoverinfo="skip", showlegend=False))
    fig.add_annotation(x=inf_x, y=n, text="∞", showarrow=False, yanchor="bottom", font=dict(size=14))
    if rf is not None:
        fig.add_vline(x=float(rf), line=dict(color=HIGHLIGHT_COLOR, width=1.5, dash="dot"),
                      annotation_text=f"rf = {rf:.4g}", annotation_position="bottom left")
    n_zero = int((d[:, 1] == d[:, 0]).sum())
    note = f"longest {n} of {n_all} bars" if n_all > n else f"{n} bars"
    if n_zero:
        note += f"; {n_zero} have zero length (tied values)"
    fig.update_layout(  # the legend (died / still alive, with a radius) below: above, it ran into the title
        title=title or note, height=height, margin=dict(l=40, r=10, t=40, b=LEGEND_BELOW_MARGIN if radius is not None else 40),
        legend=LEGEND_BELOW,
    )
    span = inf_x - low
    fig.update_xaxes(range=[low - 0.03 * span, inf_x + 0.05 * span], title="filtration value", zeroline=False)
    fig.update_yaxes(range=[-1, n + 1], showticklabels=False, title="bars", zeroline=False)
    return fig


def values_strip_figure(
    values,
    rf: float | None = None,
    *,
    labels: Sequence[str] | None = None,
    color: str | None = None,
    max_points: int = 3000,
    title: str | None = None,
    height: int = 380,
) -> go.Figure:
    """A neuron's raw outputs (histogram above, jittered strip below) with the largest gap shaded.

    For a 1-D cloud the 0-D diagram's largest finite death is the largest gap between neighbouring
    sorted values, so the shaded band is *why* rf is what it is. The gap's two ends come from
    :func:`merge_events` (the last merge). ``rf`` is the scored value, which equals the gap under
    the ``length`` convention and half of it under ``radius``. ``labels``: hover text per value.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    color = color or DIMENSION_COLORS[0]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.35, 0.65], vertical_spacing=0.04)
    n = v.size
    if n == 0:
        fig.add_annotation(text="no values", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        return fig.update_layout(height=height)
    events = merge_events(v) if n >= 2 else []
    gap_lo = gap_hi = None
    if events:
        i, j, gap = events[-1]
        gap_lo, gap_hi = sorted((float(v[i]), float(v[j])))
    shown = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(0)
        keep = set(rng.choice(n, size=max_points, replace=False).tolist())
        if events:
            keep |= {events[-1][0], events[-1][1]}
        shown = np.array(sorted(keep))
    jitter = np.random.default_rng(1).uniform(-1.0, 1.0, size=n)
    text = [
        (f"{labels[k]}<br>" if labels is not None else f"sample {k}<br>") + f"output {v[k]:.4g}" for k in shown
    ]
    fig.add_trace(go.Histogram(x=v, nbinsx=min(60, max(10, n // 4)), marker_color=color, opacity=0.8, name="outputs", showlegend=False), row=1, col=1)
    fig.add_trace(
        go.Scatter(
            x=v[shown], y=jitter[shown], mode="markers", hovertext=text, hoverinfo="text", showlegend=False,
            marker=dict(color=color, size=6 if n <= 500 else 4, opacity=0.7),
        ),
        row=2, col=1,
    )
    if gap_lo is not None:
        gap_value = gap_hi - gap_lo
        if gap_value > 0:
            fig.add_vrect(x0=gap_lo, x1=gap_hi, row="all", col=1, fillcolor=HIGHLIGHT_COLOR, opacity=0.18, line_width=0)
        fig.add_trace(
            go.Scatter(
                x=[gap_lo, gap_hi], y=[0, 0], mode="markers+lines", name="largest gap", showlegend=False,
                marker=dict(color=HIGHLIGHT_COLOR, size=11, symbol="diamond"),
                line=dict(color=HIGHLIGHT_COLOR, width=2), hoverinfo="skip",
            ),
            row=2, col=1,
        )
        shown_rf = rf if rf is not None else gap_value
        if gap_value > 0:
            note = f"largest gap {gap_value:.4g} → rf = {shown_rf:.4g}"
        else:
            note = "all outputs are equal → rf = 0 (nothing to tell apart)"
        fig.add_annotation(
            x=(gap_lo + gap_hi) / 2, y=1.15, xref="x2", yref="y2", text=note, showarrow=False,
            font=dict(color=HIGHLIGHT_COLOR), bgcolor="rgba(255,255,255,0.7)",
        )
    subtitle = f"{n} outputs" + (f" ({len(shown)} drawn)" if len(shown) < n else "")
    fig.update_layout(title=title or subtitle, height=height, margin=dict(l=40, r=10, t=40, b=40), bargap=0.02,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.5))
    fig.update_yaxes(title="count", row=1, col=1)
    fig.update_yaxes(range=[-1.4, 1.4], showticklabels=False, title="samples", row=2, col=1)
    fig.update_xaxes(title="output value", row=2, col=1)
    return fig


def token_highlight_html(tokens: Sequence[str], values: Sequence[float], *, low: float, high: float,
                         gap_high: float | None = None, mark: int | None = None, color: str = HIGHLIGHT_COLOR) -> str:
    """One text as HTML spans, each token shaded by the neuron's output on it.

    Shading runs from transparent at ``low`` to ``color`` at ``high`` (the neuron's range over all
    samples, so texts compare); tokens at or above ``gap_high`` (the upper side of the largest gap)
    are underlined, and token ``mark`` is outlined. WordPiece continuations (``##x``) join their
    word. Every token is escaped; the hover title gives its value.
    """
    if len(tokens) != len(values):
        raise ValueError(f"token_highlight_html needs one value per token; got {len(tokens)} tokens, {len(values)} values.")
    span = high - low
    parts = []
    for i, (token, value) in enumerate(zip(tokens, values)):
        share = (float(value) - low) / span if span > 0 else 0.0
        style = f"background:{_rgba(color, round(0.85 * min(max(share, 0.0), 1.0), 3))};padding:1px 2px;border-radius:3px;"
        if gap_high is not None and value >= gap_high:
            style += "text-decoration:underline;text-decoration-thickness:2px;"
        if mark == i:
            style += "outline:2px solid #333;"
        word = token[2:] if token.startswith("##") else token
        sep = "" if token.startswith("##") or i == 0 else " "
        parts.append(f'{sep}<span title="{html.escape(token)}: {float(value):.4g}" style="{style}">{html.escape(word)}</span>')
    return "<div style=\"line-height:1.9;font-family:monospace;\">" + "".join(parts) + "</div>"
