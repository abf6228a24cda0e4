"""Layer topology: the H0/H1 persistence of each layer's cloud of text vectors, and what pruning moved."""

import time
from concurrent.futures import ThreadPoolExecutor

import streamlit as st

from obce_core import plots
from obce_core.forward import text_label
from obce_core.loading import model_fingerprint
from obce_core.plots.topology import bottleneck_by_layer_figure, cloud_merges_figure, layer_strip_figure
from obce_core.topology import METRICS, POOLINGS, LayerDiagrams, comparison_table, layer_diagrams
from obce_dashboard import session, ui

POINTS = (32, 64, 128, 256, 512, 1024)
POOLING_LABELS = {"cls": "[CLS] token", "mean": "mean of the tokens"}
METRIC_LABELS = {"euclidean": "Euclidean", "cosine": "cosine (1 - cos)"}


def controls_ui() -> dict:
    a, b, c, d, e = st.columns([1.2, 1.2, 1.6, 0.9, 0.9], vertical_alignment="bottom")
    pooling = a.radio("Vector per text", POOLINGS, format_func=POOLING_LABELS.get, key="topo_pooling", horizontal=True,
                      help="The [CLS] token's vector after each layer, or the mean over the text's tokens.")
    metric = b.radio("Distance", METRICS, format_func=METRIC_LABELS.get, key="topo_metric", horizontal=True)
    max_points = c.select_slider("Points per diagram (at most)", POINTS, value=256, key="topo_points",
                                 help="More texts than this: a seeded subsample, stated under the title. 256 points "
                                      "take a few seconds for all layers (mostly the forward pass); 1024 about half a "
                                      "minute.")
    loops = d.checkbox("Loops (H1)", value=True, key="topo_h1", help="Off: clusters (H0) only.")
    seed = e.number_input("Subsample seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="topo_seed")
    return {"pooling": pooling, "metric": metric, "max_points": int(max_points), "max_dimension": int(loops),
            "seed": int(seed), "max_length": int(st.session_state.get("max_length", 128))}


@st.cache_data(show_spinner=False, max_entries=16)
def _diagrams(fingerprint: str, texts: tuple, options: dict, _model, _tokenizer, _progress) -> LayerDiagrams:  # noqa: ARG001
    return layer_diagrams(_model, _tokenizer, list(texts), progress=_progress, **options)


def _run_with_progress(bar, fn, *args):
    """``fn(*args, progress)`` in a worker thread while this script thread moves ``bar``: a
    ``st.cache_data`` function may not draw on elements made outside it, so the worker only
    records its progress and the bar is drawn from here."""
    seen = {"fraction": 0.0, "message": "Starting…"}

    def progress(done: int, total: int, message: str) -> None:
        seen.update(fraction=min(done / max(total, 1), 1.0), message=message)

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(fn, *args, progress)
        while not future.done():
            bar.progress(seen["fraction"], text=seen["message"])
            time.sleep(0.15)
        return future.result()


def diagrams_ui(model, tokenizer, fingerprint: str, texts: tuple, options: dict, what: str) -> LayerDiagrams | None:
    """The diagrams of ``model`` (cached per weights, texts and options), with progress on first computation."""
    with st.status(f"Diagrams of the {what} model…", expanded=False) as status:
        bar = st.progress(0.0, text="Starting…")
        with ui.errors(f"Could not compute the {what} model's diagrams",
                       hint="On this page, untick **Loops (H1)** for clusters only or lower the points "
                            "per diagram; choose more (or more varied) texts on Model & data.") as outcome:
            result = _run_with_progress(bar, _diagrams, fingerprint, texts, options, model, tokenizer)
        if not outcome.ok:
            status.update(label=f"The {what} model's diagrams failed", state="error", expanded=True)
            return None
        bar.progress(1.0, text="Done")
        seconds = sum(result.seconds.values())
        status.update(label=f"{what.capitalize()} model: {len(result.layers)} diagrams on {result.n_points} points "
                            f"(computed in {seconds:.1f} s)", state="complete", expanded=False)
    return result


def layer_ui(result: LayerDiagrams) -> int:
    names = {result.name(k): k for k in result.layers}
    name = st.select_slider("Layer", list(names), value=list(names)[-1], key="topo_layer",
                            help="embeddings: the input to the first layer; L0...: the output of each encoder layer.")
    return names[name]


def diagram_ui(result: LayerDiagrams, layer: int) -> None:
    d = result.diagrams[layer]
    name = result.name(layer)
    if layer in result.identical:
        st.info(f"At {name} every text gives the same vector (all distances are 0): every point merges at once and "
                "there is no loop. With [CLS] pooling the embeddings are the same token at the same position for "
                "every text; choose the mean of the tokens to see them differ.", icon=":material/info:")
    cols = st.columns(3 if result.settings["max_dimension"] else 2)
    cols[0].plotly_chart(plots.diagram_figure(d, title=f"{name}: persistence diagram"), key="topo_diagram")
    for k, col in enumerate(cols[1:]):
        col.plotly_chart(plots.barcode_figure(d[d[:, 2] == k], color=plots.DIMENSION_COLORS[k],
                                              title=f"H{k} barcode ({int((d[:, 2] == k).sum())} bars)"),
                         key=f"topo_barcode_{k}")
    row = result.summary().set_index("layer").loc[layer]
    text = f"**{name}**: {result.n_points} points; H0 total persistence {row['h0_total']:.4g}"
    if result.settings["max_dimension"]:
        text += f"; {int(row['h1_bars'])} loops (H1 bars), the longest {row['h1_longest']:.4g}"
    st.markdown(text + f". Edges longer than {row['cap']:.4g} (the enclosing radius) cannot change the diagram and "
                "are left out.")


def layers_ui(result: LayerDiagrams, layer: int) -> None:
    st.subheader("All layers")
    st.plotly_chart(layer_strip_figure({result.name(k): result.diagrams[k] for k in result.layers},
                                       selected=result.name(layer)), key="topo_strip")
    st.caption("One diagram per layer, each on its own scale (the spread of the vectors changes by orders of magnitude "
               "from layer to layer).")
    st.plotly_chart(bottleneck_by_layer_figure(result.consecutive().iloc[1:],
                                               title="Where does the representation change? Bottleneck distance to the "
                                                     "layer before"), key="topo_consecutive")
    st.dataframe(result.summary(), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in
                                ("h0_total", "cap", "h1_total", "h1_longest", "bottleneck_prev_h0", "bottleneck_prev_h1")})


def cloud_ui(result: LayerDiagrams, layer: int, texts: tuple) -> None:
    st.subheader("The cloud and its H0 merges")
    labels = [f"#{int(i)}: {text_label(texts[int(i)], 80)}" for i in result.text_indices]
    st.plotly_chart(cloud_merges_figure(result.clouds[layer], result.merge_edges(layer), labels=labels,
                                        title=f"{result.name(layer)}, first two principal axes"), key="topo_cloud")
    st.caption("Each dot is a text. Grey segments join the closest pair of clusters, one merge per finite H0 bar (a "
               "minimum spanning tree); red: the last merges, the longest H0 bars. Lengths are measured in the full "
               "space: the 2-D projection can make a long edge look short.")


def _pruned_fingerprint(applied) -> str:
    """The pruned model's weights fingerprint, hashed once per built model (kept in the session)."""
    ss = st.session_state
    memo = ss.get("_topo_pruned_fp")
    if memo is None or memo[0] is not applied:
        memo = ss["_topo_pruned_fp"] = (applied, model_fingerprint(applied.model))
    return memo[1]


def pruned_ui(result: LayerDiagrams, layer: int, loaded, texts: tuple, options: dict) -> None:
    st.subheader("Original vs pruned")
    applied = st.session_state.get("pruned")
    if applied is None:
        st.info("No pruned model in this session yet. Build one on the Prune page (**Apply**) to compare its diagrams "
                "with the original's, layer by layer.", icon=":material/content_cut:")
        st.page_link(ui.PAGE_PRUNE, label="Go to Prune", icon=":material/content_cut:")
        return
    if applied.source_fingerprint != loaded.anatomy.fingerprint:
        st.info(f"The pruned model of this session was built from `{applied.source}`, not from the model shown here; "
                "build one from this model on the Prune page to compare.", icon=":material/history:")
        return
    pruned = diagrams_ui(applied.model, applied.tokenizer, _pruned_fingerprint(applied), texts, options, "pruned")
    if pruned is None:
        return
    table = comparison_table(result, pruned)
    row = table.set_index("layer").loc[layer]
    name = result.name(layer)
    dims = [k for k in range(result.settings["max_dimension"] + 1)]
    st.markdown(f"Plan `{applied.plan.describe()}`. At **{name}** the bottleneck distance between the two diagrams is "
                + ", ".join(f"**{row[f'bottleneck_h{k}']:.4g}** in H{k}" for k in dims) + ".")
    a, b = st.columns(2)
    a.plotly_chart(plots.diagram_figure(result.diagrams[layer], title=f"{name}, original"), key="topo_original")
    b.plotly_chart(plots.diagram_figure(pruned.diagrams[layer], title=f"{name}, pruned"), key="topo_pruned")
    st.plotly_chart(bottleneck_by_layer_figure(table, title="What did pruning move? Bottleneck distance, original vs "
                                                            "pruned, per layer"), key="topo_pruned_distance")
    st.caption("The same texts go through both models. The bottleneck distance is the largest shift needed to match "
               "one diagram's bars to the other's (a bar may also shrink onto the diagonal): 0 means the same topology.")


def main() -> None:
    st.title("Layer topology")
    st.markdown("Each text is a point: its vector after a layer. The persistence of that cloud shows how the layer "
                "arranges the texts: H0 bars are clusters merging as the distance grows, H1 bars are loops.")
    ss = st.session_state
    with ui.errors("Could not load the model") as outcome:
        loaded = session.load_model_cached(ss.get("model"))
        texts, label = session.current_texts()
    if not outcome.ok:
        st.page_link(ui.PAGE_MODEL, label="Choose a model and texts on Model & data", icon=":material/tune:")
        return
    texts = tuple(tuple(t) if isinstance(t, (list, tuple)) else t for t in texts)
    options = controls_ui()
    result = diagrams_ui(loaded.model, loaded.tokenizer, loaded.anatomy.fingerprint, texts, options, "original")
    if result is None:
        return
    sample = (f"a subsample of **{result.n_points}** of them (seed {options['seed']})" if result.subsampled
              else f"all **{result.n_points}**")
    st.caption(f"`{loaded.source}` on {label}: {sample}. Change the model or the texts on Model & data.")
    layer = layer_ui(result)
    diagram_ui(result, layer)
    layers_ui(result, layer)
    cloud_ui(result, layer, texts)
    pruned_ui(result, layer, loaded, texts, options)


ui.run_page(main)
