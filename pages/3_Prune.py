"""Prune: choose how much of each group to cut, see what it saves at once, then build and save the model."""

import time

import pandas as pd
import streamlit as st

from obce_core import PruningPlan, build_report, plots, prune, save_pruned
from obce_core.export import cls_similarity, model_zip
from obce_core.export_process import model_onnx_in_child
from obce_core.io import check_output_path
from obce_core.training import task_model_info
from obce_core.pruning import COMPENSATIONS, GROUPS, SCORERS, is_obce_saved
from obce_core.workspace import default_workspace
from obce_dashboard import prune_plan, session, settings, ui
from obce_dashboard.background import background_section
from obce_dashboard.speed import measured_speed_ui
from obce_dashboard.evidence import evidence_ui
from obce_dashboard.search_ui import search_ui
from obce_dashboard.paths import SAVE_FOLDER, save_target

SLIDERS = {
    "qk": ("Query/key pairs removed per head (%)",
           "Query dim i and key dim i meet in one term of the attention score, so they go as a pair; "
           "every head loses the same number (its own lowest-scoring pairs)."),
    "v": ("Value dims removed per head (%)",
          "Every head loses the same number of value dims (attention views them as heads x dims)."),
    "ffn": ("FFN units removed per layer (%)", "Intermediate (feed-forward) units of each layer, lowest score first."),
}
SCORER_LABELS = {"rf": "rf (persistence: the paper)", "std": "std (control)", "magnitude": "weight magnitude (control)",
                 "flap": "FLAP fluctuation (control)",
                 "fisher": "Fisher (control; task models only)", "random": "random (control)"}
COMPENSATION_LABELS = {  # short: a longer choice was cut off in its box at 1280 px (the help says more)
    "auto": "auto: the best fit per layer",
    "none": "none",
    "token-mean": "token mean into next bias",
    "cls-mean": "[CLS] mean into next bias",
    "cls-mean-std": "[CLS] mean + std into next bias",
    "lsq": "least-squares refit",
    "sequential-lsq": "least-squares refits, in order",
}


def plan_ui(num_layers: int, task_model: bool) -> None:
    """The plan's widgets; ``fisher`` is offered only for a task model (it needs the task's labels)."""
    cols = st.columns(3)
    for col, name in zip(cols, ("qk", "v", "ffn")):
        label, help_text = SLIDERS[name]
        with col:
            settings.widget(st.slider, label, name, min_value=0.0, max_value=settings.MAX_PERCENT, step=1.0,
                            format="%g%%", help=help_text)
    a, b, c, d = st.columns([1, 1.4, 1.4, 1])
    with a:
        settings.widget(st.number_input, "Skip first layers", "skip_layers", min_value=0, max_value=num_layers, step=1,
                        help="Leave the first N layers whole. At [CLS], layer 0's query/key/value outputs are the same "
                             "for every text, so their rf are all 0 and cannot rank them.")
    with b:
        if not task_model and st.session_state.get("scorer") == "fisher":
            st.warning("Fisher needs a task model (labelled loss gradients); this model has no task head, so units "
                       "are ranked by rf.", icon=":material/warning:")
        scorer = settings.widget(st.selectbox, "Rank units by", "scorer",
                                 options=[s for s in SCORERS if task_model or s != "fisher"],
                                 format_func=lambda name: SCORER_LABELS.get(name, name),
                                 help="Lower = removed first. std, weight magnitude, FLAP, Fisher and random are controls: "
                                      "they show whether the topology adds anything. Fisher (Kwon et al. 2022: squared "
                                      "loss gradients of a mask on each unit, over 512 labelled training examples) "
                                      "needs a task model and is computed on first use.")
    with c:
        settings.widget(st.selectbox, "Compensation", "compensation",
                        options=list(COMPENSATIONS), format_func=lambda name: COMPENSATION_LABELS.get(name, name),
                        help="What replaces a removed FFN unit or value dim. auto, token-mean and lsq fit on the "
                             "scoring texts' tokens (captured once per model and texts); auto picks, per layer, the "
                             "candidate with the lowest error on held-out texts. Query/key pairs get none: no bias "
                             "can absorb them.")
    with d:
        settings.widget(st.number_input, "Seed (random)", "prune_seed", min_value=0, max_value=2**31 - 1, step=1,
                        disabled=scorer != "random", help="Seed of the random scorer.")


def overrides_ui(num_layers: int) -> None:
    """A layer x group table of the percentages in force; an edited cell becomes a per-layer override."""
    ss = st.session_state
    layers = prune_plan.overrides()
    base = prune_plan.current_plan()  # with overrides
    plain = PruningPlan(**{**base.to_dict(), "layers": {}})  # what each cell would be without them
    table = pd.DataFrame(base.percent_table(num_layers))
    version = ss.setdefault("_overrides_version", 0)
    key = f"_overrides_editor_{version}"

    def on_edit() -> None:
        merged = prune_plan.overrides()
        for row, cells in ss[key].get("edited_rows", {}).items():
            layer = int(row)
            for group, value in cells.items():
                if group not in GROUPS:
                    continue
                entry = merged.setdefault(layer, {})
                if value is None or float(value) == float(plain.percent(layer, group)):
                    entry.pop(group, None)
                else:
                    entry[group] = float(value)
        try:
            prune_plan.set_overrides(merged)
        except ValueError as exc:  # e.g. 150 %: refused with the valid range, never clamped
            ss["_overrides_error"] = str(exc)
        ss["_overrides_version"] = version + 1  # a fresh editor that shows the new overrides as its data

    def clear() -> None:
        prune_plan.set_overrides({})
        ss["_overrides_version"] = version + 1

    title = "Per-layer overrides" + (f" ({sum(len(v) for v in layers.values())} set)" if layers else "")
    with st.expander(title, expanded=bool(layers)):
        st.caption("The percentage in force for each layer and group. Edit a cell to override the sliders (and the "
                   "skipped layers) for that layer; set it back to the slider's value to drop the override.")
        # No min/max on the column: the browser would clamp an out-of-range entry silently; the
        # settings' own check refuses it with a message instead.
        pct = st.column_config.NumberColumn(step=1.0, format="%g %%")
        st.data_editor(table, key=key, on_change=on_edit, hide_index=True, num_rows="fixed", disabled=["layer"],
                       column_config={"layer": st.column_config.TextColumn("layer"), "qk": pct, "v": pct, "ffn": pct})
        problem = ss.pop("_overrides_error", None)
        if problem:
            st.error(f"**That override was not kept.** {problem}", icon=":material/error:")
        if layers:
            shown = "; ".join(f"L{i}: " + ", ".join(f"{g} {v:g} %" for g, v in sorted(o.items())) for i, o in sorted(layers.items()))
            st.caption(f"Overrides: {shown}.")
            st.button("Clear the overrides", on_click=clear, icon=":material/restart_alt:")


def metrics_ui(report) -> None:
    b, a = report.params_before, report.params_after
    mib = 2**20
    cols = st.columns(4)
    cols[0].metric("Parameters after (whole model)", f"{a['total']:,}",
                   delta=f"{100 * a['total'] / b['total']:.1f} % of {b['total']:,} kept", delta_color="off", delta_arrow="off",
                   help=f"Embeddings ({b['embeddings']:,}), pooler ({b['pooler']:,}) and task head ({b['head']:,}) are never pruned.")
    cols[1].metric("Encoder parameters after", f"{a['encoder']:,}",
                   delta=f"{100 * a['encoder'] / b['encoder']:.1f} % of {b['encoder']:,} kept", delta_color="off",
                   delta_arrow="off", help="The transformer layers alone: the part pruning shrinks.")
    cols[2].metric("Size (float32)", f"{report.bytes_after / mib:.1f} MiB", delta=f"from {report.bytes_before / mib:.1f} MiB",
                   delta_color="off", delta_arrow="off")
    ratio = report.flops_ratio_estimate
    cols[3].metric("Speed-up (FLOPs estimate)", f"{1 / ratio:.2f}x", delta=f"FLOPs per token x{ratio:.3f}",
                   delta_color="off", delta_arrow="off",
                   help=f"An ESTIMATE from dense matrix multiplies per token at {report.flops_seq_len} tokens (projections, "
                        "attention scores and context, FFN); embeddings, softmax, LayerNorm, GELU and the head are "
                        "ignored. Measured CPU latency gains are smaller: build the model below and measure it on this "
                        "machine.")


def charts_ui(report, heads: int) -> None:
    st.plotly_chart(plots.pruning_units_figure(report.units, heads=heads), key="units_heatmap")
    st.caption("One row per layer, one cell per unit in its place in the weights: blue = kept, orange = removed "
               "(colours told apart with any colour vision); within a layer, darker = higher score. Hover a cell for "
               "its score.")
    st.plotly_chart(plots.kept_per_layer_figure(report.kept_frame(), title="Units kept per layer"), key="kept_bars")


def _tag(plan: PruningPlan) -> str:
    tag = f"qk{plan.qk:g}-v{plan.v:g}-ffn{plan.ffn:g}-skip{plan.skip_layers}-{plan.scorer}"
    return tag + (f"{plan.seed}" if plan.scorer == "random" else "") + ("-custom" if plan.layers else "")


def apply_ui(loaded: session.LoadedModel, run: session.ScoredRun, plan: PruningPlan) -> None:
    ss = st.session_state
    st.subheader("Build the pruned model")
    st.caption("Makes a new, physically smaller model for this session (the loaded model stays as it is).")
    if st.button("Apply: build the pruned model", type="primary", icon=":material/content_cut:"):
        start = time.perf_counter()  # the whole apply: calibration, pruning and the [CLS] check
        with st.status("Building the pruned model…", expanded=True) as status:
            with ui.errors("Could not prune the model") as outcome:
                calibration = prune_plan.calibration_if_needed(loaded, run, plan)
                model, report = prune(loaded.model, run.scores, plan, calibration=calibration)
            if outcome.ok:
                pruned_s = time.perf_counter() - start
                st.write(f"Pruned in {pruned_s:.1f} s; comparing [CLS] outputs with the original…")
                similarity = None
                with ui.errors("Could not run the sanity check"):
                    similarity = cls_similarity(loaded.model, model, loaded.tokenizer, run.texts,
                                                max_length=run.scores.settings.max_length)
                seconds = time.perf_counter() - start
                ss["pruned"] = prune_plan.Applied(
                    model=model, tokenizer=loaded.tokenizer, plan=plan, report=report, source=loaded.source,
                    source_fingerprint=loaded.anatomy.fingerprint, similarity=similarity, seconds=seconds,
                )
                ss.pop("_onnx", None)  # an ONNX file of the previous model no longer applies
                status.update(label=f"Built the pruned model in {seconds:.1f} s (pruning {pruned_s:.1f} s, "
                                    f"[CLS] check {seconds - pruned_s:.1f} s)", state="complete", expanded=False)
            else:
                status.update(label=f"Pruning failed after {time.perf_counter() - start:.1f} s", state="error",
                              expanded=True)
    applied = ss.get("pruned")
    if applied is not None:
        applied_ui(applied, loaded, run, plan)


def applied_ui(applied: prune_plan.Applied, loaded: session.LoadedModel, run: session.ScoredRun,
               plan: PruningPlan) -> None:
    if applied.source_fingerprint != loaded.anatomy.fingerprint or applied.plan != plan:
        st.info(f"The model below was built earlier from `{applied.source}` with plan `{applied.plan.describe()}`. "
                "Press **Apply** to build one with the current settings.", icon=":material/history:")
    before = applied.report.params_before["total"]
    cols = st.columns(3)
    cols[0].metric("Parameters of the built model", f"{applied.parameters:,}",
                   delta=f"{100 * applied.parameters / before:.1f} % of {before:,}", delta_color="off", delta_arrow="off",
                   help="Counted on the model itself (sum of its tensors' sizes).")
    sim = applied.similarity
    if sim is not None:
        cols[1].metric("[CLS] cosine, pruned vs original", f"{sim['mean']:.4f}",
                       delta=f"min {sim['min']:.4f} over {sim['n']} texts", delta_color="off", delta_arrow="off")
        cols[2].caption(f"Sanity check, not a task score: the mean cosine similarity of the last layer's [CLS] output of "
                        f"the pruned and the original model on {sim['n']} of the texts the scores came from (in-sample). "
                        "1 = unchanged. Fine-tune and evaluate on **Compare** for what the pruning costs on a task.")
    if applied.source_fingerprint == loaded.anatomy.fingerprint:
        measured_speed_ui(applied, loaded, run)
    compensation_ui(applied.report, run)
    with st.expander("Report"):
        st.code(applied.report.summary(), language="text")
    tag = _tag(applied.plan)
    a, b, c = st.columns(3)
    a.download_button("Download the plan (JSON)", data=applied.plan.to_json(), file_name=f"obce_plan_{tag}.json",
                      mime="application/json", on_click="ignore", icon=":material/download:")
    b.download_button("Download the model (zip)",
                      data=lambda: model_zip(applied.model, applied.tokenizer, applied.plan, applied.report, f"obce-{tag}"),
                      file_name=f"obce-{tag}.zip", mime="application/zip", on_click="ignore", icon=":material/download:",
                      help="config, safetensors weights, tokenizer, plan and report; reload with obce_core.load_model(folder).")
    with c:
        onnx_ui(applied, tag)
    save_ui(applied, tag)


def onnx_ui(applied: prune_plan.Applied, tag: str) -> None:
    """Build the ONNX file on request (it takes seconds), check it in ONNX Runtime, then offer it."""
    ss = st.session_state
    built = ss.get("_onnx")
    if built is None or built["model"] is not applied.model:
        if st.button("Build the ONNX file", icon=":material/memory:", key="build_onnx",
                     help="Exports the pruned model to ONNX for CPU runtimes, runs it in ONNX Runtime and compares "
                          "its outputs with PyTorch's. Takes several seconds."):
            start = time.perf_counter()
            with st.status("Exporting to ONNX and checking it in ONNX Runtime…", expanded=False) as status:
                with ui.errors("Could not export the model to ONNX") as outcome:
                    # In a child process: after an export in the server, the server ignored SIGTERM.
                    data, report = model_onnx_in_child(applied.model, applied.tokenizer)
                if outcome.ok:
                    ss["_onnx"] = built = {"model": applied.model, "data": data, "report": report}
                    status.update(label=f"ONNX file built and checked in {time.perf_counter() - start:.1f} s",
                                  state="complete")
                else:
                    status.update(label="ONNX export failed", state="error", expanded=True)
        if built is None or built["model"] is not applied.model:
            return
    report = built["report"]
    st.download_button("Download the model (ONNX)", data=built["data"], file_name=f"obce-{tag}.onnx",
                       mime="application/octet-stream", on_click="ignore", icon=":material/download:", key="onnx_download",
                       help="Run it with onnxruntime.InferenceSession(path); inputs " + ", ".join(map(str, report.inputs)) + ".")
    ok = report.max_abs_diff <= report.tolerance
    st.caption(f"{report.size_bytes / 1e6:.1f} MB, opset {report.opset}, output `{report.output}`. ONNX Runtime vs "
               f"PyTorch on {report.n_texts} texts: max |diff| **{report.max_abs_diff:.2e}** "
               f"({'within' if ok else 'ABOVE'} the tolerance {report.tolerance:.0e}).")


def compensation_ui(report, run: session.ScoredRun) -> None:
    """Which compensation each (layer, group) got: ``auto``'s choice, or a fallback with its reason,
    said above the fold when the requested one could not be fitted."""
    rows = report.compensations
    if not rows:
        return
    methods = pd.Series([r["method"] for r in rows]).value_counts()
    requested = rows[0]["requested"]
    st.caption(f"Compensation requested: **{requested}**; applied: "
               + ", ".join(f"{m} in {n} layer group(s)" for m, n in methods.items()) + ".")
    fell_back = [r for r in rows if r["method"] != requested and str(r.get("note", "")).startswith("fell back")]
    skipped = [r for r in rows if "lsq skipped" in str(r.get("note", ""))]
    if skipped and not fell_back:  # auto: lsq was a candidate but could not be fitted there
        st.caption(f"lsq (the least-squares refit) was not a candidate in {len(skipped)} of {len(rows)} layer group(s): "
                   f"too few calibration tokens from the {len(run.texts):,} scored texts. Score more texts on "
                   "**Model & data** to let it compete.")
    if fell_back:
        where = ", ".join(f"L{r['layer']} {r['group']}" for r in fell_back)
        st.warning(f"**{requested}** could not be fitted in {len(fell_back)} of {len(rows)} layer group(s) ({where}); "
                   f"they got **{fell_back[0]['method']}** instead. {fell_back[0]['note']}. The calibration tokens come "
                   f"from the {len(run.texts):,} scored texts: score more texts on **Model & data** to give the fit more "
                   "tokens.", icon=":material/warning:")
    with st.expander("Compensation per layer"):
        st.dataframe(pd.DataFrame([{"layer": r["layer"], "group": r["group"], "applied": r["method"],
                                    "lsq damping": r.get("damping"), "note": r.get("note", "")} for r in rows]),
                     hide_index=True)


def save_ui(applied: prune_plan.Applied, tag: str) -> None:
    workspace = default_workspace()
    a, b = st.columns([4, 1], vertical_alignment="bottom")
    with a:
        name = st.text_input("Save as", value=tag, key=f"save_name_{tag}",
                             help=f"A folder name (letters, digits, '.', '_', '-'), not a path: the model goes to "
                                  f"{SAVE_FOLDER}/<name> in the workspace ({workspace.resolve()}). Load it again on "
                                  "Model & data as a local directory.")
    with b:
        overwrite = st.checkbox("Overwrite", key="save_overwrite",
                                help="Replace a model obce saved under this name before (nothing else is ever replaced).")
    if st.button("Save", icon=":material/save:", disabled=not name.strip()):
        with ui.errors("Could not save the pruned model") as outcome:
            target = save_target(name, workspace)
            target.parent.mkdir(parents=True, exist_ok=True)  # the workspace's own folder; the visitor names only `name`
            check_output_path(target, overwrite=overwrite, kind="dir", flag="Save as", may_replace=is_obce_saved,
                              option="**Overwrite**", elsewhere="choose another name")
            path = save_pruned(applied.model, applied.tokenizer, target, plan=applied.plan, report=applied.report,
                               overwrite=overwrite)
        if outcome.ok:
            st.success(f"Saved to `{path.resolve()}`. Load it on **Model & data** as a local directory to score or prune it again.")


def fisher_ready(loaded: session.LoadedModel, run: session.ScoredRun) -> bool:
    """Whether the ``fisher`` column the plan needs is there; if not, it is computed in the
    background (about a minute for all-MiniLM on a CPU) with its progress, and the page waits below
    the sliders, which stay free."""
    with ui.errors("These settings do not make a pruning plan for this model") as outcome:
        task = prune_plan.fisher_missing(loaded, run)
    if not outcome.ok:
        return False
    if task is None:
        return True
    key = ("fisher", loaded.anatomy.fingerprint, loaded.source, task)
    done = background_section(
        "fisher", key, lambda report: prune_plan.fisher_table(loaded, task), lambda table: None,
        label=f"Computing Fisher importance on {prune_plan.FISHER_EXAMPLES} labelled {task} training examples "
              "(once per task model)", context=key, error="Could not compute the Fisher importance")
    return done.state == "done"


def main() -> None:
    st.title("Prune")
    run = session.current_scored()
    if run is None:
        ui.no_scores_ui("The Prune page")
        return
    st.markdown("Remove each layer's lowest-scoring units. The counts, sizes and charts below follow the sliders at "
                "once (nothing is copied or rebuilt until **Apply**); what a plan costs (it prunes and runs the model) "
                "is measured in the background and shows when ready, the previous plan's figures marked stale meanwhile.")
    st.caption(f"Scores of `{run.model_source}` on {run.data_label} ({run.scores.n_samples:,} samples per neuron).")
    with ui.errors("Could not load the scored model") as outcome:
        loaded = session.load_model_cached(run.model_source)
    if not outcome.ok:
        return
    num_layers, heads = loaded.anatomy.layers, loaded.anatomy.heads
    info = task_model_info(loaded.source)
    plan_ui(num_layers, task_model=info is not None)
    overrides_ui(num_layers)
    if not fisher_ready(loaded, run):
        return
    with ui.errors("These settings do not make a pruning plan for this model") as outcome:
        run = prune_plan.with_fisher(loaded, run)  # the fisher column, computed already (fisher_ready)
        selection = prune_plan.current_selection(run.scores, loaded.model)
        plan = selection.plan
        report = build_report(loaded.model, selection)
    if not outcome.ok:
        return
    metrics_ui(report)
    evidence_ui(loaded, run, plan)
    if info is not None:
        st.subheader("Find the smallest plan within X points")
        with ui.errors("Could not read the plan search"):
            search_ui(loaded.source, info.task, plan, num_layers)
    charts_ui(report, heads)
    apply_ui(loaded, run, plan)
    st.page_link(ui.PAGE_COMPARE, label="Fine-tune and evaluate original vs pruned on GLUE: Compare",
                 icon=":material/compare_arrows:")


ui.run_page(main)
