"""Persistence: why one neuron's rf is what it is, and how rf spreads over layers and components."""

import streamlit as st

from obce_core import COMPONENTS, PRUNABLE_COMPONENTS, plots
from obce_dashboard import state

TABLE_COLUMNS = ["layer", "component", "neuron", "rf", "std", "mean", "rank", "rf_ties", "prunable"]
SCOPES = {"group": "this layer & component", "prunable": "all prunable neurons", "all": "all neurons"}


def _set_neuron(neuron: int) -> None:
    st.session_state["neuron"] = int(neuron)


def _select_from_chart() -> None:
    """A click on the rank chart selects that neuron (its id is the point's customdata)."""
    try:
        points = st.session_state["rank_chart"]["selection"]["points"]
    except (KeyError, TypeError):
        return
    if points:
        custom = points[0].get("customdata")
        if isinstance(custom, (list, tuple)):
            custom = custom[0] if custom else None
        if custom is not None:
            _set_neuron(int(custom))


def threshold_ui() -> float:
    with st.sidebar:
        pct = state.widget(st.slider, "Threshold percentile", "percentile", min_value=0.0, max_value=95.0, step=5.0,
                           format="%g%%", help="The share of each group's lowest-rf neurons that pruning would cut first.")
        st.caption("Shared with the other pages and kept in the page's address.")
    return pct


def picker_ui(run: state.ScoredRun):
    sc = run.scores
    layers = sorted(int(x) for x in sc.table["layer"].unique())
    c1, c2, c3, c4 = st.columns([1, 2, 1.3, 2.2], vertical_alignment="bottom")
    with c1:
        layer = state.widget(st.selectbox, "Layer", "layer", options=layers, format_func=lambda i: f"L{i}")
    with c2:
        component = state.widget(st.selectbox, "Component", "component", options=list(COMPONENTS))
    group = sc.group(layer, component)
    with c3:
        neuron = state.widget(st.number_input, "Neuron", "neuron", min_value=0, max_value=len(group) - 1, step=1)
    with c4:
        ranked = group.sort_values("rank")["neuron"].to_numpy()
        b1, b2, b3 = st.columns(3)
        b1.button("Lowest rf", on_click=_set_neuron, args=(ranked[0],), width="stretch")
        b2.button("Median", on_click=_set_neuron, args=(ranked[len(ranked) // 2],), width="stretch")
        b3.button("Highest rf", on_click=_set_neuron, args=(ranked[-1],), width="stretch")
    return layer, component, int(neuron), group


def neuron_ui(run: state.ScoredRun, layer: int, component: str, neuron: int, group, pct: float) -> None:
    sc = run.scores
    row = group[group["neuron"] == neuron].iloc[0]
    values = sc.values(layer, component, neuron)
    diagram = sc.diagram(layer, component, neuron)
    rf, rank, ties = float(row["rf"]), int(row["rank"]), int(row["rf_ties"])
    color = plots.COMPONENT_COLORS[component]
    kept = "kept by the paper's method (it feeds a LayerNorm)" if component not in PRUNABLE_COMPONENTS else (
        "pruned" if rank < plots.threshold_values(group, pct)["n_removed"].iloc[0] else "kept")
    tie_note = f" {ties} neurons of this group share this rf (ties broken by lower std, then index)." if ties > 1 else ""
    st.markdown(
        f"**L{layer} {component} neuron {neuron}**: rf = **{rf:.4g}**, rank {rank} of {len(group)} "
        f"(0 = pruned first); at {pct:g}% it is **{kept}**.{tie_note}"
    )
    if rf == 0:
        why = "all its outputs are equal, so every point merges at 0: it tells no two texts apart."
    else:
        why = (f"its {len(values)} outputs run from {values.min():.4g} to {values.max():.4g}; sorted, the widest gap "
               f"between neighbours (red band) is {rf:.4g}. Growing the filtration, everything has merged once it "
               "reaches that gap: that last merge is the highest finite point in the diagram and the longest finite bar.")
    st.caption("Why: " + why)
    a, b, c = st.columns([5, 4, 4])
    with a:
        st.plotly_chart(plots.values_strip_figure(values, rf, labels=state.sample_labels(run), color=color,
                                                  title="outputs (histogram and one dot per sample)"))
    with b:
        st.plotly_chart(plots.diagram_figure({component: diagram}, rf=rf, title="0-D persistence diagram"))
    with c:
        st.plotly_chart(plots.barcode_figure(diagram, rf=rf, color=color))


def overview_ui(group, component: str, neuron: int, pct: float) -> None:
    st.subheader("Every neuron of this layer and component")
    st.caption("Sorted by rank; grey neurons fall below the threshold. Click a point to inspect that neuron.")
    fig = plots.rf_rank_figure(group, threshold_percentile=pct, selected=neuron)
    st.plotly_chart(fig, key="rank_chart", on_select=_select_from_chart, selection_mode="points")


def distribution_ui(run: state.ScoredRun, pct: float) -> None:
    st.subheader("rf across layers and components")
    a, b = st.columns([1, 3])
    with a:
        kind = st.radio("Plot", ["box", "violin"], horizontal=True, key="dist_kind")
    with b:
        log = st.checkbox("Log scale", key="dist_log", help="Zero rf cannot be drawn on a log axis; each panel counts them.")
    st.plotly_chart(plots.rf_distribution_figure(run.scores.table, pct, log=log, kind=kind))
    st.caption(f"Red bars: the rf below which a group's lowest {pct:g}% of neurons fall (pruning removes per head "
               "for query/key/value, so their cut is close to, not exactly, this line).")


def tables_ui(run: state.ScoredRun, group, layer: int, component: str) -> None:
    st.subheader("Most and least important neurons")
    table = run.scores.table
    a, b = st.columns([3, 1])
    with a:
        scope = st.radio("Among", list(SCOPES), format_func=SCOPES.get, horizontal=True, key="tables_scope")
    with b:
        k = st.number_input("How many", min_value=1, max_value=500, value=10, key="tables_k")
    pool = {"group": group, "prunable": table[table["prunable"]], "all": table}[scope]
    ordered = pool.sort_values(["rf", "std", "layer", "neuron"], kind="stable")[TABLE_COLUMNS]
    least, most = ordered.head(int(k)), ordered.tail(int(k)).iloc[::-1]
    fmt = {c: st.column_config.NumberColumn(format="%.4g") for c in ("rf", "std", "mean")}
    left, right = st.columns(2)
    with left:
        st.markdown("**Least important** (lowest rf: pruned first)")
        st.dataframe(least, hide_index=True, column_config=fmt)
    with right:
        st.markdown("**Most important** (highest rf)")
        st.dataframe(most, hide_index=True, column_config=fmt)
    shown = (least.assign(importance="least"), most.assign(importance="most"))
    name = f"L{layer}_{component}" if scope == "group" else scope
    c1, c2 = st.columns(2)
    c1.download_button("Download these tables (CSV)", data=lambda: _csv(*shown), file_name=f"obce_rf_{name}_top{int(k)}.csv",
                       mime="text/csv", on_click="ignore", icon=":material/download:")
    c2.download_button("Download every neuron (CSV)", data=lambda: table.sort_values(["layer", "component", "rank"])[TABLE_COLUMNS].to_csv(index=False),
                       file_name="obce_rf_all_neurons.csv", mime="text/csv", on_click="ignore", icon=":material/download:")
    if scope != "group":
        st.caption("rf is compared across components here; their scales differ (an FFN unit after GELU and a query "
                   "dimension live on different ranges), so pruning ranks within each layer and component.")


def _csv(*frames) -> str:
    import pandas as pd

    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def main() -> None:
    st.title("Persistence")
    run = state.current_scored()
    if run is None:
        state.no_scores_ui("The Persistence page")
        return
    st.caption(f"Scores of `{run.model_source}` on {run.data_label} ({run.scores.n_samples:,} samples per neuron).")
    pct = threshold_ui()
    layer, component, neuron, group = picker_ui(run)
    neuron_ui(run, layer, component, neuron, group, pct)
    overview_ui(group, component, neuron, pct)
    distribution_ui(run, pct)
    tables_ui(run, group, layer, component)


state.run_page(main)
