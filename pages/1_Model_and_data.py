"""Model & data: choose a model and the texts to feed it, score every neuron, read the summary."""

import streamlit as st

from obce_dashboard.navigation import ensure_app_navigation

ensure_app_navigation()  # before the title: a deep link first after a restart (see that module)
# The landing page draws its title before the imports below: on a fresh server they load PyTorch
# and transformers, which takes seconds, and the visitor should see the page arrive meanwhile.
st.title("Model & data")
with st.spinner("Starting obce: loading PyTorch and transformers (only on the server's first page view)…"):
    from obce_core import TOKEN_MODES, plots
    from obce_core.anatomy import ModelAnatomy
    from obce_core.glue import TASKS
    from obce_core.loading import looks_like_path
    from obce_dashboard import session, settings, ui, uploads
    from obce_dashboard.paths import MODEL_DIRS_ENV
    from obce_dashboard.task_models import task_models_ui

MODEL_KINDS = {
    "default": "Embedded default (all-MiniLM-L6-v2)",
    "hub": "Hugging Face hub id",
    "local": "Local directory",
}
DATA_LABELS = {"demo": "Demo corpus (shipped)", "glue": "GLUE task", "upload": "Upload a file"}
TOKEN_LABELS = {"cls": "[CLS] (paper)", "all": "every token", "mean": "mean over tokens"}


def _widths(xs: tuple[int, ...]) -> str:
    return str(xs[0]) if len(set(xs)) == 1 else ", ".join(map(str, xs))


def anatomy_ui(a: ModelAnatomy) -> None:
    top = st.columns(3)
    top[0].metric("Layers", a.layers)
    top[1].metric("Hidden size", a.hidden)
    top[2].metric("Heads", a.heads)
    bottom = st.columns(3)
    bottom[0].metric("FFN units", a.ffn[0] if len(set(a.ffn)) == 1 else "per layer")
    bottom[1].metric("Parameters", f"{a.parameters / 1e6:.1f}M")
    bottom[2].metric("Pruned", "yes" if a.pruned else "no")
    extra = f"{a.architecture} ({a.model_type}) on {a.device}, weights fingerprint `{a.fingerprint}`"
    if a.pruned:
        extra += (f". Pruned by obce: FFN units per layer {_widths(a.ffn)}; query/key width {_widths(a.query_key_width)}; "
                  f"value width {_widths(a.value_width)}")
    st.caption(extra)


def model_ui() -> session.LoadedModel | None:
    ss = st.session_state
    if "model_kind" not in ss:  # derived once per session from the model setting (and so the URL)
        source = ss["model"]
        ss["model_kind"] = "default" if source == "default" else ("local" if looks_like_path(source) else "hub")
        ss["model_text"] = "" if source == "default" else source
    kind = settings.widget(st.radio, "Model", "model_kind", options=list(MODEL_KINDS), format_func=MODEL_KINDS.get, horizontal=True)
    if kind == "default":
        source = "default"
    else:
        hub = kind == "hub"
        source = settings.widget(
            st.text_input,
            "Hub id" if hub else "Model directory",
            "model_text",
            placeholder="e.g. google-bert/bert-base-uncased" if hub else "e.g. obce_workspace/pruned/qk30-v30-ffn30",
            help=(
                "Needs network access to the Hugging Face hub; offline, download it elsewhere and use a local directory."
                if hub
                else "A folder written by save_pretrained (a BERT checkpoint, a fine-tuned classifier, or a model pruned "
                f"by obce), inside the workspace or a folder listed in {MODEL_DIRS_ENV}."
            ),
        ).strip()
        if not source:
            st.info("Enter a " + ("hub id" if hub else "directory") + " and press Enter.")
            return None
    ss["model"] = source
    with ui.errors("Could not load the model") as outcome:
        loaded = session.load_model_cached(source)
    if not outcome.ok:
        return None
    anatomy_ui(loaded.anatomy)
    return loaded


def data_ui() -> tuple[list, str] | None:
    glue_tasks, glue_where = session.glue_tasks_available()
    sources = ["demo"] + (["glue"] if glue_tasks else []) + ["upload"]
    data = settings.widget(st.radio, "Scoring texts", "data", options=sources, format_func=DATA_LABELS.get, horizontal=True)
    if data != "upload":
        uploads.forget_refusal()
    if data == "glue":
        settings.widget(st.selectbox, "GLUE task", "task", options=glue_tasks,
                     format_func=lambda t: f"{TASKS[t].dir_name} ({t})")
        st.caption(f"Validation split, from {glue_where}. Pair tasks feed both sentences, as in fine-tuning.")
    elif data == "upload":
        uploads.upload_ui()
        if uploads.upload_error() and not st.session_state.get("uploaded"):
            return None  # the refusal above is the one message
    else:
        st.caption("400 varied English sentences shipped with obce: works with no network and no GLUE copy."
                   + ("" if glue_tasks else f" GLUE: {glue_where}."))
    left, right = st.columns(2)
    with left:
        settings.widget(st.number_input, "Number of texts", "n", min_value=2, max_value=settings.MAX_TEXTS, step=16,
                     help="Drawn without replacement with the seed below; more texts give a finer picture and take longer.")
    with right:
        settings.widget(st.radio, "Sample per text", "token", options=list(TOKEN_MODES), format_func=TOKEN_LABELS.get, horizontal=True,
                     help="What one point of a neuron's cloud is: its output at [CLS] (the paper), at every token, or averaged.")
    with st.expander("More settings"):
        a, b = st.columns(2)
        with a:
            settings.widget(st.number_input, "Seed", "seed", min_value=0, max_value=2**31 - 1, step=1)
        with b:
            settings.widget(st.number_input, "Max tokens per text", "max_length", min_value=8, max_value=512, step=8)
    with ui.errors("Could not get the texts") as outcome:
        texts, label = session.current_texts()
    if not outcome.ok:
        return None
    st.info(f"Texts in use: **{label}**", icon=":material/description:")
    return texts, label


def score_ui(loaded: session.LoadedModel | None, chosen: tuple[list, str] | None) -> None:
    ss = st.session_state
    ready = loaded is not None and chosen is not None
    if st.button("Score neurons", type="primary", disabled=not ready,
                 help="Run the texts through the model, record every neuron's outputs and compute their rf."):
        texts, label = chosen
        with st.status(f"Scoring {len(texts)} texts…", expanded=True) as status:
            bar = st.progress(0.0, text="Starting…")

            def progress(done: int, total: int) -> None:
                bar.progress(min(done / max(total, 1), 1.0), text=f"{done} of {total} texts through the model")

            with ui.errors("Scoring failed") as outcome:
                run = session.score_texts(loaded, texts, data_label=label, token=ss["token"],
                                        max_length=int(ss["max_length"]), progress=progress)
            if outcome.ok:
                session.set_current_scored(run)
                bar.progress(1.0, text="Done")
                status.update(label=f"Scored {len(run.scores.table):,} neurons on {run.scores.n_samples:,} samples",
                              state="complete", expanded=False)
            else:
                status.update(label="Scoring failed", state="error", expanded=True)


def results_ui(run: session.ScoredRun) -> None:
    sc = run.scores
    st.subheader("Scores")
    changed = session.changed_settings(run)
    if changed:
        st.warning(f"These scores were made with other settings ({', '.join(changed)} changed since). "
                   "Press **Score neurons** to update them.")
    cols = st.columns(4)
    cols[0].metric("Neurons", f"{len(sc.table):,}")
    cols[1].metric("Samples", f"{sc.n_samples:,}")
    cols[2].metric("Texts", f"{sc.n_texts:,}")
    cols[3].metric("Neurons with rf = 0", f"{int((sc.table['rf'] == 0).sum()):,}")
    st.caption(f"Model `{run.model_source}` on {run.data_label}; sample = {TOKEN_LABELS[sc.settings.token]}, "
               f"max {sc.settings.max_length} tokens; took {run.seconds:.1f} s (a repeat comes from the cache).")
    summary = sc.summary()
    left, right = st.columns([3, 2])
    with left:
        st.dataframe(
            summary, hide_index=True, height=320,
            column_config={c: st.column_config.NumberColumn(format="%.4g") for c in ("rf_min", "rf_q25", "rf_median", "rf_q75", "rf_max")},
        )
    with right:
        st.plotly_chart(plots.summary_heatmap(summary, "rf_median", title="median rf per layer"))
    st.caption("rf quantiles per layer and component (the heatmap's colour: each value as a share of its "
               "component's largest, so components on different scales compare); `zero_rf` counts ties at zero. At [CLS], layer 0's "
               "query/key/value see the same input for every text, so all their rf are 0: they say nothing, "
               "which is why pruning usually skips layer 0 there.")
    st.page_link(ui.PAGE_PERSISTENCE, label="See why each neuron scores what it does: Persistence", icon=":material/scatter_plot:")


def main() -> None:
    st.markdown("Feed a set of texts through a BERT model, record every neuron's output, and score each neuron "
                "by the 0-D persistent homology of those outputs (**rf**: the largest gap between its sorted values).")
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Model")
        loaded = model_ui()
    with right:
        st.subheader("Texts")
        chosen = data_ui()
    score_ui(loaded, chosen)
    task_models_ui()
    run = session.current_scored()
    if run is not None:
        results_ui(run)


ui.run_page(main)
