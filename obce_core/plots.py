"""Plotly figures for obce: persistence diagrams, barcodes, one neuron's outputs, rf distributions.

Every builder returns a ``plotly.graph_objects.Figure`` and never shows it, so the dashboard, a
notebook and a test can all use the same figures. This module imports plotly, never streamlit.

Conventions (shared by every page):

* A diagram is an ``(n, 3)`` array of (birth, death, dimension). Infinite deaths stay ``np.inf``
  in the data and are drawn on a dashed "∞" line above the finite range; the diagonal is dashed
  and has no hover; both axes share one range.
* Each BERT component has one fixed colour (``COMPONENT_COLORS``), each homology dimension one
  (``DIMENSION_COLORS``); thresholds and the rf are drawn in ``HIGHLIGHT_COLOR``.
* The teaching figures (``learn_figure``) take the merge events from
  :func:`obce_core.persistence.merge_events`; nothing here recomputes persistence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from obce_core.capture import COMPONENTS, PRUNABLE_COMPONENTS
from obce_core.persistence import merge_events

__all__ = [
    "COMPONENT_COLORS",
    "DIMENSION_COLORS",
    "HIGHLIGHT_COLOR",
    "CLUSTER_COLORS",
    "diagram_figure",
    "barcode_figure",
    "values_strip_figure",
    "rf_distribution_figure",
    "rf_rank_figure",
    "summary_heatmap",
    "threshold_values",
    "learn_figure",
]

# One colour per component, on every page (tab10 hues; FFN in purple, LayerNorm-feeding in brown/pink).
COMPONENT_COLORS: dict[str, str] = {
    "query": "#1f77b4",
    "key": "#ff7f0e",
    "value": "#2ca02c",
    "intermediate": "#9467bd",
    "attention_output": "#8c564b",
    "output": "#e377c2",
}
DIMENSION_COLORS: dict[int, str] = {0: "#17becf", 1: "#bcbd22", 2: "#7f7f7f"}
HIGHLIGHT_COLOR = "#d62728"
# Connected components on the teaching page: distinct from the component colours on purpose.
CLUSTER_COLORS = (
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
    "#999999", "#8dd3c7", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#bc80bd",
)
_GUIDE = dict(color="#888888", width=1, dash="dash")


def _fmt(x: float) -> str:
    return "∞" if np.isinf(x) else f"{x:.4g}"


def _check_diagram(diagram, what: str = "diagram") -> np.ndarray:
    d = np.asarray(diagram, dtype=np.float64)
    if d.size == 0:
        return np.empty((0, 3))
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(
            f"{what} must be an (n, 3) array of birth, death, dimension; got shape {d.shape}. "
            "Build one with obce_core.persistence_diagram(points)."
        )
    return d


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _finite_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """(low, high) over the finite births and deaths of all diagrams (0, 0 when there are none)."""
    vals = [a[:, :2][np.isfinite(a[:, :2])] for a in arrays if a.size]
    vals = np.concatenate(vals) if vals else np.empty(0)
    if vals.size == 0:
        return 0.0, 0.0
    return float(min(vals.min(), 0.0)), float(vals.max())


def _inf_level(low: float, high: float) -> float:
    """Where the "∞" line goes: 10 % of the finite span above the finite range (1 if no span)."""
    span = high - low
    return high + (0.1 * span if span > 0 else 1.0)


# ---------------------------------------------------------------------------------------------
# Diagrams and barcodes
# ---------------------------------------------------------------------------------------------


def diagram_figure(
    diagrams: np.ndarray | Mapping[str, np.ndarray],
    *,
    hover: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    rf: float | None = None,
    radius: float | None = None,
    title: str | None = None,
    height: int = 380,
) -> go.Figure:
    """A persistence diagram: one point per bar at (birth, death).

    ``diagrams``: one ``(n, 3)`` array (split by homology dimension) or ``{label: array}``; a label
    that names a BERT component gets that component's colour. ``hover``: per-point text (a list,
    or a dict of lists keyed like ``diagrams``). ``rf`` draws a dotted line at that death value.
    ``radius`` shows the filtration as it grows: only bars that died by ``radius`` are drawn, with
    a dashed sweep line at ``radius``.
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
                x=[lo, hi], y=[radius, radius], mode="lines", name=f"r = {radius:.3g}", hoverinfo="skip",
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
    fig.update_layout(
        title=title or note, height=height, margin=dict(l=40, r=10, t=40, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"),
    )
    span = inf_x - low
    fig.update_xaxes(range=[low - 0.03 * span, inf_x + 0.05 * span], title="filtration value", zeroline=False)
    fig.update_yaxes(range=[-1, n + 1], showticklabels=False, title="bars", zeroline=False)
    return fig


# ---------------------------------------------------------------------------------------------
# One neuron
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Many neurons
# ---------------------------------------------------------------------------------------------


def threshold_values(table: pd.DataFrame, percentile: float) -> pd.DataFrame:
    """Per (layer, component): the rf of the lowest neuron kept when ``percentile`` % are cut.

    A group of ``n`` neurons loses its ``floor(percentile * n / 100)`` lowest-ranked neurons
    (capped at ``n - 1``; the pruning rule for FFN units, applied per head for query/key/value).
    Columns: layer, component, n, n_removed, threshold.
    """
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100); got {percentile!r}. Use e.g. 30 for 30 %.")
    rows = []
    for (layer, component), g in table.groupby(["layer", "component"], observed=True):
        rf_sorted = np.sort(g["rf"].to_numpy())
        n = rf_sorted.size
        k = min(int(np.floor(round(percentile * n / 100.0, 9))), n - 1)
        rows.append({"layer": int(layer), "component": str(component), "n": n, "n_removed": k, "threshold": float(rf_sorted[k])})
    return pd.DataFrame(rows, columns=["layer", "component", "n", "n_removed", "threshold"])


def rf_distribution_figure(
    table: pd.DataFrame,
    threshold_percentile: float | None = None,
    *,
    log: bool = False,
    kind: str = "box",
    components: Sequence[str] = COMPONENTS,
    height: int = 560,
) -> go.Figure:
    """rf per layer, one panel per component (box or violin), with the percentile threshold marked.

    The threshold marker (a red bar) sits at the rf of the first neuron kept at
    ``threshold_percentile`` (see :func:`threshold_values`); it is drawn only for prunable
    components. ``log`` puts rf on a log axis; zero rf cannot be drawn there and is counted in
    the panel title instead.
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
    thresholds = threshold_values(table, threshold_percentile) if threshold_percentile is not None else None
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
        if thresholds is not None and c in PRUNABLE_COMPONENTS:
            th = thresholds[thresholds["component"] == c]
            if log:
                th = th[th["threshold"] > 0]
            if len(th):
                fig.add_trace(
                    go.Scatter(
                        x=[f"L{int(layer)}" for layer in th["layer"]], y=th["threshold"], mode="markers",
                        # an open symbol is stroked in marker.color, so both are set
                        marker=dict(symbol="line-ew-open", size=34, color=HIGHLIGHT_COLOR, line=dict(width=3, color=HIGHLIGHT_COLOR)),
                        name=f"{threshold_percentile:g}% threshold", showlegend=not legend_done,
                        hovertext=[f"{threshold_percentile:g}%: {int(rm)} of {int(nn)} below rf {t:.4g}"
                                   for rm, nn, t in zip(th["n_removed"], th["n"], th["threshold"])],
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
    threshold_percentile: float | None = None,
    selected: int | None = None,
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """All neurons of one (layer, component) sorted by rank: x = rank, y = rf, hover = neuron id.

    Neurons cut at ``threshold_percentile`` are grey, the kept ones in the component's colour;
    ``selected`` (a neuron index) is ringed. Each point carries its neuron id as ``customdata``,
    so a click can select it.
    """
    g = group.sort_values("rank")
    component = str(g["component"].iloc[0]) if len(g) else ""
    color = COMPONENT_COLORS.get(component, "#333333")
    n = len(g)
    cut = 0
    if threshold_percentile is not None and n:
        cut = int(threshold_values(g, threshold_percentile)["n_removed"].iloc[0]) if component in PRUNABLE_COMPONENTS else 0
    colors = np.where(g["rank"].to_numpy() < cut, "#bbbbbb", color)
    hover = [
        f"neuron {int(nn)}<br>rf {r:.4g}<br>rank {int(k)}" + (f" ({int(t)} share this rf)" if t > 1 else "")
        for nn, r, k, t in zip(g["neuron"], g["rf"], g["rank"], g["rf_ties"])
    ]
    fig = go.Figure(
        go.Scatter(
            x=g["rank"], y=g["rf"], mode="markers", customdata=g["neuron"], hovertext=hover, hoverinfo="text",
            marker=dict(color=colors, size=6 if n <= 500 else 4), showlegend=False, name="neurons",
        )
    )
    if cut:
        fig.add_vline(x=cut - 0.5, line=dict(color=HIGHLIGHT_COLOR, dash="dash", width=1.5),
                      annotation_text=f"{threshold_percentile:g}%: {cut} cut", annotation_position="top left")
    if selected is not None:
        row = g[g["neuron"] == selected]
        if len(row):
            fig.add_trace(
                go.Scatter(
                    x=row["rank"], y=row["rf"], mode="markers", name=f"neuron {selected}", hoverinfo="skip",
                    marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#000000", width=2)),
                )
            )
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"))
    fig.update_xaxes(title="rank (0 = pruned first)")
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
            customdata=z, colorscale="Viridis",
            colorbar=dict(title="share of the<br>column's max" if per_component else value),
            hovertemplate="%{y} %{x}<br>" + value + " %{customdata:.4g}<extra></extra>",
        )
    )
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


# ---------------------------------------------------------------------------------------------
# Teaching
# ---------------------------------------------------------------------------------------------


def _components(n: int, events: Sequence[tuple[int, int, float]], radius: float) -> np.ndarray:
    """Component label (its smallest point index) of every point after the merges up to ``radius``."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, value in events:
        if value <= radius:
            ri, rj = find(i), find(j)
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(a) for a in range(n)])


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
    labels = _components(len(x), events, radius)
    roots = list(dict.fromkeys(labels.tolist()))
    color_of = {r: CLUSTER_COLORS[k % len(CLUSTER_COLORS)] for k, r in enumerate(roots)}
    colors = [color_of[r] for r in labels]
    merged = [(i, j, v) for i, j, v in events if v <= radius]
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


# ---------------------------------------------------------------------------------------------
# Pruning and comparison (the Prune and Compare pages)
# ---------------------------------------------------------------------------------------------

__all__ += [
    "GROUP_COLORS",
    "GROUP_LABELS",
    "ROLE_COLORS",
    "pruning_units_figure",
    "kept_per_layer_figure",
    "comparison_bar_figure",
    "tradeoff_figure",
]

# A pruning group takes the colour of the component it cuts (qk: the query's).
GROUP_COLORS: dict[str, str] = {
    "ffn": COMPONENT_COLORS["intermediate"],
    "qk": COMPONENT_COLORS["query"],
    "v": COMPONENT_COLORS["value"],
}
GROUP_LABELS: dict[str, str] = {"ffn": "FFN units", "qk": "query/key pairs", "v": "value dims"}
# Original vs pruned models (Okabe-Ito hues, apart from the component colours).
ROLE_COLORS: dict[str, str] = {"original": "#666666", "pruned": "#0072b2", "recovered": "#009e73"}
_REMOVED_LOW, _REMOVED_HIGH = "#f2f2f2", "#b8b8b8"


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
    its original position: kept units in the group's colour, removed ones in grey; within each
    layer the shade follows the unit's score rank (darker = higher score), so the low-score units a
    plan cuts stand out. For ``qk`` a unit is a query/key pair. ``heads`` draws thin lines between
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
        color = GROUP_COLORS.get(g, "#333333")
        colorscale = [[0.0, _REMOVED_LOW], [0.4999, _REMOVED_HIGH], [0.5, _rgba(color, 0.2)], [1.0, color]]
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
    fig.update_layout(
        title=title, height=height or (90 + 60 * len(groups) + 26 * len(layers) * len(groups)),
        margin=dict(l=40, r=10, t=50 if title else 30, b=40),
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
                hovertemplate="%{x} " + GROUP_LABELS.get(g, g) + ": %{text} kept (%{y:.1f} %)<extra></extra>",
            )
        )
    fig.update_layout(title=title, height=height, barmode="group", margin=dict(l=50, r=10, t=50, b=30),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
                      uniformtext=dict(minsize=8, mode="hide"))
    fig.update_yaxes(title="% of units kept", range=[0, 115])
    return fig


def comparison_bar_figure(table: pd.DataFrame, *, metric: str = "main_score", title: str | None = None,
                          height: int = 320) -> go.Figure:
    """Original vs pruned (vs recovered) per task: bars of one metric of ``jobs.comparison_table``.

    GLUE metrics are fractions; the bars show them x100 like published GLUE tables.
    """
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
    fig.update_layout(title=title, height=height, barmode="group", margin=dict(l=50, r=10, t=50, b=30),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"))
    fig.update_yaxes(title=f"{metric} x100")
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
