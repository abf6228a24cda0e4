"""Persistence: why one neuron's rf is what it is, how rf spreads over layers and components, and
how much of the ranking survives a change of texts."""

import numpy as np
import pandas as pd
import streamlit as st

from obce_core import COMPONENTS, plots, ranking_stability
from obce_core.layout import GROUP_TAGS
from obce_core.pruning.stability import STABILITY_FALLBACK_PERCENT, median_spearman, plan_percents, stability_summary
from obce_core.neurons import EXAMPLE_VIEWS, neuron_examples, text_tokens, token_values
from obce_core.verdicts import NOT_PRUNABLE, neuron_verdict, neuron_verdicts, plan_cuts
from obce_dashboard import prune_plan, session, settings, ui
from obce_dashboard.attribution_ui import attribution_panel, neuron_attribution_line
from obce_dashboard.domain_panel import domain_ui

TABLE_COLUMNS = ["layer", "component", "neuron", "rf", "std", "mean", "rank", "rf_ties", "prunable"]
VERDICT_TEXT = {"pruned": "**pruned**", "kept": "**kept**",
                NOT_PRUNABLE: "**kept**: it feeds a LayerNorm, which the method never prunes"}
SCOPES = {"group": "this layer & component", "prunable": "all prunable neurons", "all": "all neurons"}
STABILITY_SCORERS = ("rf", "std", "flap")  # the method and the two stable controls of benchmarks/RESULTS.md


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


def plan_ui(run: session.ScoredRun):
    """The selection of the plan in force (the Prune page's settings), or None when they do not
    make a plan for this model (the error says why)."""
    with ui.errors("Could not load the scored model") as outcome:
        loaded = session.load_model_cached(run.model_source)
    if not outcome.ok:
        return None
    with ui.errors("The Prune page's settings do not make a plan for this model",
                   hint="Change them on the Prune page; the verdicts below wait for a valid plan.") as outcome:
        selection = prune_plan.current_selection(run.scores, loaded.model)
    return selection if outcome.ok else None


def _informative_start(run: session.ScoredRun) -> None:
    """A first visit opens on the median-rf FFN unit of a middle layer, not on a dead neuron 0."""
    ss = st.session_state
    layers = sorted(int(x) for x in run.scores.table["layer"].unique())
    if ss.get("layer") is not None and ss["layer"] not in layers:  # e.g. a link's layer=99, or another model's
        st.warning(f"`layer={ss['layer']}` is not a layer of this model (L{layers[0]} to L{layers[-1]}): showing the "
                   "default neuron instead.", icon=":material/warning:")
        ss["layer"] = ss["neuron"] = None
    if ss.get("layer") is None:
        ss["layer"], ss["component"] = layers[len(layers) // 2], "intermediate"
    if ss.get("neuron") is None:
        group = run.scores.group(int(ss["layer"]), ss["component"])
        ranked = group.sort_values("rank")["neuron"].to_numpy()
        ss["neuron"] = int(ranked[len(ranked) // 2])


def picker_ui(run: session.ScoredRun):
    sc = run.scores
    _informative_start(run)
    layers = sorted(int(x) for x in sc.table["layer"].unique())
    c1, c2, c3, c4 = st.columns([1, 2, 1.3, 2.2], vertical_alignment="bottom")
    with c1:
        layer = settings.widget(st.selectbox, "Layer", "layer", options=layers, format_func=lambda i: f"L{i}")
    with c2:
        component = settings.widget(st.selectbox, "Component", "component", options=list(COMPONENTS))
    group = sc.group(layer, component)
    with c3:
        neuron = settings.widget(st.number_input, "Neuron", "neuron", min_value=0, max_value=len(group) - 1, step=1,
                                 help=f"A neuron id from 0 to {len(group) - 1}.")
    with c4:
        ranked = group.sort_values("rank")["neuron"].to_numpy()
        b1, b2, b3 = st.columns(3)
        b1.button("Min rf", help="The neuron with the lowest rf in this group", on_click=_set_neuron, args=(ranked[0],), width="stretch")
        b2.button("Median", help="The neuron with the median rf in this group", on_click=_set_neuron, args=(ranked[len(ranked) // 2],), width="stretch")
        b3.button("Max rf", help="The neuron with the highest rf in this group", on_click=_set_neuron, args=(ranked[-1],), width="stretch")
    return layer, component, int(neuron), group


def neuron_ui(run: session.ScoredRun, layer: int, component: str, neuron: int, group, selection) -> None:
    sc = run.scores
    row = group[group["neuron"] == neuron].iloc[0]
    values = sc.values(layer, component, neuron)
    diagram = sc.diagram(layer, component, neuron)
    rf, rank, ties = float(row["rf"]), int(row["rank"]), int(row["rf_ties"])
    color = plots.COMPONENT_COLORS[component]
    tie_note = f" {ties} neurons of this group share this rf (ties broken by lower std, then index)." if ties > 1 else ""
    if selection is None:
        verdict = "the Prune page's settings make no plan for this model, so no verdict"
    else:
        verdict = (f"under the Prune page's plan (`{selection.plan.describe()}`) it is "
                   + VERDICT_TEXT[neuron_verdict(selection, layer, component, neuron)])
    st.markdown(
        f"**L{layer} {component} neuron {neuron}**: rf = **{rf:.4g}**, rank {rank} of {len(group)} by rf "
        f"(0 = lowest); {verdict}.{tie_note}"
    )
    if rf == 0:
        why = "all its outputs are equal, so every point merges at 0: it tells no two texts apart."
    else:
        why = (f"its {len(values)} outputs run from {values.min():.4g} to {values.max():.4g}; sorted, the widest gap "
               f"between neighbours (red band) is {rf:.4g}. Growing the filtration, everything has merged once it "
               "reaches that gap: that last merge is the highest finite point in the diagram and the longest finite bar.")
    st.caption("Why: " + why)
    neuron_attribution_line(run, layer, component, neuron)
    a, b, c = st.columns([5, 4, 4])
    with a:
        st.plotly_chart(plots.values_strip_figure(values, rf, labels=session.sample_labels(run), color=color,
                                                  title="outputs: histogram and dots"))
    with b:
        st.plotly_chart(plots.diagram_figure({component: diagram}, rf=rf, title="0-D persistence diagram"))
    with c:
        st.plotly_chart(plots.barcode_figure(diagram, rf=rf, color=color))


def separates_ui(run: session.ScoredRun, layer: int, component: str, neuron: int) -> None:
    """The texts (or tokens) on each side of the neuron's largest gap, and its top and bottom outputs."""
    sc = run.scores
    st.subheader("What does this neuron separate?")
    all_tokens = sc.settings.token == "all"
    unit = "tokens" if all_tokens else "texts"
    k = int(st.number_input("How many per list", min_value=1, max_value=50, value=5, key="examples_k"))
    tokenizer = None
    if all_tokens:
        with ui.errors("Could not load the scored model's tokenizer") as outcome:
            tokenizer = session.load_model_cached(run.model_source).tokenizer
        if not outcome.ok:
            return
    table = neuron_examples(sc, run.texts, layer, component, neuron, k=k, tokenizer=tokenizer)
    values = sc.values(layer, component, neuron)
    below = table[table["view"] == "below gap"]
    above = table[table["view"] == "above gap"]
    n_above = int((values >= above["value"].min()).sum()) if len(above) else 0
    st.caption(f"The largest gap splits the {len(values):,} samples into {len(values) - n_above:,} below and "
               f"{n_above:,} above: the two clusters the last merge joins. Each list shows the {unit} nearest "
               "the gap on its side, then the most extreme outputs." + (
                   " In token mode `all` a sample is one token in its text (bold = position)." if all_tokens else ""))
    shown = ["rank", "value", "token", "text"] if all_tokens else ["rank", "value", "text_index", "text"]
    # A static table, not st.dataframe: the grid cuts each text to its column width, and the whole
    # text is the point of these lists.
    for left_view, right_view in (("below gap", "above gap"), ("bottom", "top")):
        left, right = st.columns(2)
        for col, view in ((left, left_view), (right, right_view)):
            with col:
                st.markdown(f"**{view.capitalize()}**: {EXAMPLE_VIEWS[view]}")
                st.table(table[table["view"] == view][shown].style.format({"value": "{:.4g}"}), hide_index=True)
    if all_tokens:
        _tokens_in_context(run, layer, component, neuron, table, tokenizer, values,
                           float(above["value"].min()) if len(above) else None)
    st.download_button("Download these lists (CSV)", data=lambda: table.to_csv(index=False),
                       file_name=f"obce_neuron_L{layer}_{component}_{neuron}_examples.csv", mime="text/csv",
                       on_click="ignore", icon=":material/download:")


def _tokens_in_context(run, layer, component, neuron, table, tokenizer, values, gap_high) -> None:
    """Each listed text with every token shaded by the neuron's output (underlined: above the gap)."""
    st.markdown("**Tokens in context**: shade = output on that token (over this neuron's whole range); "
                "underlined = above the largest gap; outlined = the listed token.")
    low, high = float(values.min()), float(values.max())
    seen: set[int] = set()
    for view in ("top", "above gap", "below gap", "bottom"):
        for row in table[table["view"] == view].head(3).itertuples():
            if row.text_index in seen:
                continue
            seen.add(row.text_index)
            tokens = text_tokens(tokenizer, run.texts[row.text_index], run.scores.settings.max_length)
            outputs = token_values(run.scores, layer, component, neuron, row.text_index)
            if len(tokens) != len(outputs):  # a tokenizer changed since scoring: show nothing wrong
                continue
            st.html(f"<small>{view}, text #{row.text_index}</small>" + plots.token_highlight_html(
                tokens, outputs, low=low, high=high, gap_high=gap_high, mark=int(row.position),
                color=plots.COMPONENT_COLORS[component]))


def overview_ui(group, neuron: int, selection) -> None:
    st.subheader("Every neuron of this layer and component")
    st.caption("Sorted by rf; grey neurons are the ones the Prune page's plan removes (per head for query/key/value, "
               "ranked by the plan's scorer). Click a point to inspect that neuron.")
    marked = neuron_verdicts(selection, group) if selection is not None else group
    fig = plots.rf_rank_figure(marked, selected=neuron)
    st.plotly_chart(fig, key="rank_chart", on_select=_select_from_chart, selection_mode="points")


def distribution_ui(run: session.ScoredRun, selection) -> None:
    st.subheader("rf across layers and components")
    a, b = st.columns([1, 3])
    with a:
        kind = st.radio("Plot", ["box", "violin"], horizontal=True, key="dist_kind")
    with b:
        log = st.checkbox("Log scale", key="dist_log", help="Zero rf cannot be drawn on a log axis; each panel counts them.")
    cuts = plan_cuts(selection, run.scores.table) if selection is not None else None
    st.plotly_chart(plots.rf_distribution_figure(run.scores.table, cuts, log=log, kind=kind))
    st.caption("Red bars: the highest rf that the Prune page's plan removes in each layer. With the rf scorer on FFN "
               "units it is a clean cut; per-head selection of query/key/value, the query/key pair score and the "
               "control scorers also keep some neurons below it (the hover counts them).")


@st.cache_data(show_spinner=False, max_entries=8)
def _ranking_stability(model_fingerprint: str, texts_key: str, settings: tuple, scorers: tuple, percents: tuple,
                       _model, _tokenizer, _texts: tuple) -> pd.DataFrame:  # noqa: ARG001 (the key is the scores')
    """``ranking_stability`` of the scoring texts at each of ``percents`` (column ``percent``). The
    halves are scored once: later percentiles read them back from obce_core's score cache."""
    token, max_length, batch_size = settings
    return pd.concat([ranking_stability(_model, _tokenizer, list(_texts), scorers=list(scorers), percent=p, token=token,
                                        max_length=max_length, batch_size=batch_size).assign(percent=p)
                      for p in percents], ignore_index=True)


def stability_reading(medians: pd.DataFrame) -> str:
    """One line from ``median_spearman``: each scorer's median split-half Spearman for Q/K/V and for FFN units."""
    def fmt(value: float) -> str:
        return "n/a" if np.isnan(value) else f"{value:.2f}"

    parts = [f"{row.scorer} {fmt(row.qkv)} (Q/K/V) and {fmt(row.ffn)} (FFN)" for row in medians.itertuples()]
    return ("Median split-half Spearman here: " + "; ".join(parts) + ". On SST-2 at [CLS], rf ranks of Q/K/V are "
            "close to chance (Spearman 0.07-0.24, removed-set overlap about chance): see benchmarks/RESULTS.md, Method.")


def stability_ui(run: session.ScoredRun, selection) -> None:
    """Score two disjoint halves of the texts and compare what each would prune (on a click: it scores twice)."""
    st.subheader("How much of this ranking is noise?")
    st.caption("The texts are split into two disjoint halves, each half is scored, and for every layer and group the "
               "two rankings are compared: Spearman's correlation of the unit scores (1 = the same order) and the share "
               "of the units removed at the plan's percentile under one half that the other half removes too, against "
               "what two random choices would share. A blank Spearman means one half gives every unit the same score "
               "(layer 0's query/key/value at [CLS]): its overlap then only repeats the tie-break by index. Each half "
               "has half the texts, so the whole set's ranking is somewhat steadier than this.")
    with ui.errors("Could not load the scored model") as outcome:
        loaded = session.load_model_cached(run.model_source)
    if not outcome.ok:
        return
    scoring = run.scores.settings
    scorers = tuple(dict.fromkeys([*STABILITY_SCORERS, *([selection.plan.scorer] if selection is not None else [])]))
    percents = plan_percents(selection.plan if selection is not None else None, loaded.anatomy.layers)
    key = (loaded.anatomy.fingerprint, run.key or run.scores.texts_fingerprint,
           (scoring.token, int(scoring.max_length), int(scoring.batch_size)), scorers,
           tuple(sorted(set(percents.values()))))
    if st.button(f"Measure it (scores two halves of {len(run.texts) // 2:,} texts)", key="stability_run"):
        st.session_state["_stability_key"] = key
    if st.session_state.get("_stability_key") != key:
        return
    with ui.errors("Could not measure the ranking stability") as outcome:
        with st.status("Scoring two halves of the texts…", expanded=False) as status:
            stability = _ranking_stability(*key, loaded.model, loaded.tokenizer, tuple(run.texts))
            status.update(label=f"Scored two halves of {len(run.texts) // 2:,} texts", state="complete")
    if not outcome.ok:
        return
    table = stability_summary(stability, percents, scorers)
    st.markdown(stability_reading(median_spearman(table, scorers)))
    shown, column_config = stability_table_shown(table, selection)
    st.dataframe(shown, hide_index=True, column_config=column_config, key="stability_table")


def stability_table_shown(table: pd.DataFrame, selection) -> tuple[pd.DataFrame, dict]:
    """The noise table as shown, with its column config: what the plan does to each layer and group
    (a skipped layer says so, not the fallback percentile the overlap is read at), and a Spearman
    that does not exist as a blank cell, as the caption says (a missing number would read "None")."""
    plan = selection.plan if selection is not None else None
    shown = table.copy()
    does = []
    for row in table.itertuples():
        p = plan.percent(int(row.layer), row.group) if plan is not None else 0
        skipped = plan is not None and not p and int(row.layer) < plan.skip_layers
        does.append(f"removes {p:g} %" if p else ("skips this layer" if skipped else "removes nothing"))
    shown.insert(2, "plan", does)
    shown["group"] = shown["group"].map(GROUP_TAGS)
    for c in [c for c in shown.columns if c.endswith(" Spearman")]:
        shown[c] = ["" if pd.isna(v) else f"{v:.2f}" for v in shown[c]]
    fmt = {c: st.column_config.NumberColumn(format="%.2f") for c in shown.columns if c.endswith(("overlap",))}
    fmt["p"] = st.column_config.NumberColumn(
        "overlap at p (%)", format="%g", help="The percentile at which the two halves' removed sets are compared: the "
        f"plan's, or {STABILITY_FALLBACK_PERCENT:g} where the plan removes nothing there.")
    return shown, fmt


def tables_ui(run: session.ScoredRun, group, layer: int, component: str) -> None:
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
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def main() -> None:
    st.title("Persistence")
    run = session.current_scored()
    if run is None:
        ui.no_scores_ui("The Persistence page")
        return
    st.caption(f"Scores of `{run.model_source}` on {run.data_label} ({run.scores.n_samples:,} samples per neuron).")
    selection = plan_ui(run)
    layer, component, neuron, group = picker_ui(run)
    neuron_ui(run, layer, component, neuron, group, selection)
    separates_ui(run, layer, component, neuron)
    st.page_link(ui.PAGE_PRUNE, label="Change the plan on the Prune page", icon=":material/content_cut:")
    overview_ui(group, neuron, selection)
    distribution_ui(run, selection)
    stability_ui(run, selection)
    attribution_panel(run, layer, component, neuron, selection)
    domain_ui(run, selection)
    tables_ui(run, group, layer, component)


ui.run_page(main)
