"""Compare: fine-tune and evaluate original vs pruned on GLUE in a background job, then read the results."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from obce_core import jobs, plots, results, training
from obce_core.describe import describe_job, describe_plan, describe_recipe
from obce_core.export import scores_file
from obce_core.glue import TASKS
from obce_core.pruning import PruningPlan
from obce_core.training import CPU_PRESET, PRESET_CHOICES, PRESET_DESCRIPTIONS, Recipe
from obce_core.training.recipe import RECOVERY_PRESET
from obce_dashboard import prune_plan, session, ui
from obce_dashboard.form_link import field, remember
from obce_dashboard.estimates import job_estimate_ui
from obce_dashboard.job_panel import job_panel, minutes
from obce_dashboard.paths import check_model_source

PROTOCOL_LABELS = {
    "paper": "Paper: prune the pre-trained model, then fine-tune original and pruned alike",
    "finetuned": "Fine-tuned: prune a classifier already trained on the task, evaluate at once",
}
MAX_JOBS_SHOWN = 6
ROLE_ORDER = ("original", "pruned", "recovered")
FORM = "form"  # the query parameter that keeps the form (widget keys "compare_...") across a refresh
MISSING = "—"
_minutes = minutes


# ---------------------------------------------------------------------------------------------
# Starting a job
# ---------------------------------------------------------------------------------------------


def no_glue_ui(where: str) -> None:
    st.info(
        f"**No GLUE data to fine-tune on** ({where}). Either:\n"
        "1. point obce at a GLUE copy in the standard layout (`SST-2/train.tsv`, `SST-2/dev.tsv`, `CoLA/…`, as written "
        "by GLUE's `download_glue_data.py`): `export OBCE_GLUE_DIR=/path/to/glue`, then restart "
        "`streamlit run app.py`; or\n"
        "2. allow network access to the Hugging Face hub (unset `HF_HUB_OFFLINE` and `HF_DATASETS_OFFLINE`), and the "
        "tasks are read from `nyu-mll/glue`.\n\n"
        "Jobs and results stored earlier are still listed below.",
        icon=":material/dataset:",
    )


def model_ui(run: session.ScoredRun | None) -> tuple[str, str, int]:
    """(model source, scores choice 'current'/'task', score_n)."""
    source = run.model_source if run is not None else (st.session_state.get("model") or "default")
    st.markdown(f"**Model:** `{source}` (the one scored on **Model & data**).")
    options = (["current"] if run is not None else []) + ["task"]
    labels = {"current": f"the current scores ({run.scores.n_texts:,} texts of {run.data_label})" if run else "",
              "task": "score each task's training sentences"}
    a, b = st.columns([3, 1], vertical_alignment="bottom")
    with a:
        choice = st.radio("Scores to prune by", options, format_func=labels.get, horizontal=True,
                          key=field("compare_scores", options[0], param=FORM, options=options), persist_state="session",
                          help="The current scores give the plan exactly what the Prune page showed; scoring each "
                               "task's training sentences is the paper's setting.")
    with b:
        score_n = st.number_input("Sentences per task", min_value=16, max_value=4096, step=64,
                                  key=field("compare_score_n", 512, param=FORM, low=16, high=4096),
                                  persist_state="session", disabled=choice != "task")
    return source, choice, int(score_n)


def recipe_ui(task: str, distill: bool = False) -> Recipe:
    presets = [p for p in PRESET_CHOICES if p != RECOVERY_PRESET]  # recover: a pruned TASK model's recipe
    preset = st.selectbox("Recipe", presets, format_func=lambda p: f"{p}: {PRESET_DESCRIPTIONS.get(p, '')}",
                          key=field("compare_preset", CPU_PRESET, param=FORM, options=presets), persist_state="session",
                          help=f"The same recipe and seed fine-tune the original and the pruned model ('{CPU_PRESET}': "
                               f"the CPU preset of {task}).")
    try:
        base = Recipe.preset(preset, task)
    except ValueError as exc:  # e.g. a task with no CPU preset
        st.warning(str(exc))
        base = Recipe()
    k = f"compare_{preset}_"

    def key(name: str, default, low, high=None) -> str:
        return field(k + name, default, param=FORM, low=low, high=high)

    c = st.columns(5)
    train = c[0].number_input("Training examples (0 = all)", min_value=0, step=250, key=key("train", base.train_size or 0, 0),
                              persist_state="session")
    evals = c[1].number_input("Evaluation examples (0 = all)", min_value=0, step=100, key=key("eval", base.eval_size or 0, 0),
                              persist_state="session")
    epochs = c[2].number_input("Epochs", min_value=0.1, max_value=20.0, step=0.5, key=key("epochs", float(base.epochs), 0.1, 20.0),
                               persist_state="session")
    steps = c[3].number_input("Max steps (0 = epochs)", min_value=0, step=10, key=key("steps", base.max_steps, 0),
                              persist_state="session")
    length = c[4].number_input("Max tokens", min_value=8, max_value=512, step=8, key=key("length", base.max_length, 8, 512),
                               persist_state="session")
    with st.expander("More recipe settings"):
        d = st.columns(3)
        batch = d[0].number_input("Batch size", min_value=1, max_value=512, key=key("batch", base.batch_size, 1, 512),
                                  persist_state="session")
        lr = d[1].number_input("Learning rate", min_value=1e-6, max_value=1e-2, format="%.0e", step=1e-5,
                               key=key("lr", float(base.learning_rate), 1e-6, 1e-2), persist_state="session")
        seed = d[2].number_input("Seed", min_value=0, max_value=2**31 - 1, key=key("seed", base.seed, 0, 2**31 - 1),
                                 persist_state="session")
        kd = {}
        if distill:
            e = st.columns(3)
            kd["kd_temperature"] = float(e[0].number_input(
                "Distillation temperature", min_value=0.5, max_value=20.0, step=0.5,
                key=key("kd_t", float(base.kd_temperature), 0.5, 20.0), persist_state="session",
                help="Softens the teacher's and the student's class probabilities before they are compared; 1 is "
                     "the plain softmax, 2 to 4 is usual."))
            kd["kd_alpha"] = float(e[1].number_input(
                "Teacher weight", min_value=0.0, max_value=1.0, step=0.1, key=key("kd_alpha", float(base.kd_alpha), 0.0, 1.0),
                persist_state="session", help="1 learns from the original's outputs alone, 0 from the labels alone."))
            kd["kd_hidden"] = float(e[2].number_input(
                "Hidden-state weight", min_value=0.0, max_value=100.0, step=0.5,
                key=key("kd_hidden", float(base.kd_hidden), 0.0, 100.0), persist_state="session",
                help="Layer-wise distillation: the weight of the mean squared difference between every layer's "
                     "hidden states, pruned model vs original (pruning keeps the hidden size); 0 = outputs alone."))
    return base.replace(train_size=int(train) or None, eval_size=int(evals) or None, epochs=float(epochs),
                        max_steps=int(steps), max_length=int(length), batch_size=int(batch), learning_rate=float(lr),
                        seed=int(seed), **kd)


def estimate_ui(recipe: Recipe, tasks: list[str], protocol: str, recover_steps: int, distill: bool = False, *,
                source: str = "default", plan: PruningPlan | None = None, scored: bool = False,
                score_n: int = 512) -> None:
    """The job's training steps, and its duration ESTIMATED from step times measured on this machine
    for this model (``obce_dashboard.estimates``)."""
    parts = []
    for task in tasks:
        if protocol == "paper":  # original and pruned
            steps = training.estimate_training(recipe, task)[0]
            parts.append(f"{task}: 2 x {steps:,} steps")
        else:
            parts.append(f"{task}: no training" + (f", {recover_steps} recovery steps" if recover_steps else ""))
    st.caption(f"Training: {'; '.join(parts)}. The job runs in its own process: you can leave this page and come back."
               + (" Distillation adds the original's forward pass to each step of the pruned model." if distill else ""))
    if not tasks:
        return
    with ui.errors("Could not estimate the duration"):
        spec = jobs.JobSpec(model=source, tasks=tasks, plan=plan, recipe=recipe, protocol=protocol,
                            recover_steps=recover_steps, distill=distill, score_n=score_n)
        job_estimate_ui(spec, source, prefix="Duration of the whole job (loading, scoring, training, evaluation): ",
                        scores_given=scored)


def plan_ui() -> PruningPlan | None:
    with ui.errors("The Prune page's settings do not make a plan") as outcome:
        plan = prune_plan.current_plan()
    if not outcome.ok:
        return None
    st.markdown(f"**Plan:** `{plan.describe()}` (from the **Prune** page's settings).")
    st.page_link(ui.PAGE_PRUNE, label="Change the plan on the Prune page", icon=":material/content_cut:")
    if not (plan.qk or plan.v or plan.ffn or any(any(o.values()) for o in plan.layers.values())):
        st.warning("This plan removes nothing: the pruned model would be the original.")
    return plan


def start_ui(workspace: Path, run: session.ScoredRun | None) -> None:
    tasks_available, where = session.glue_tasks_available()
    if not tasks_available:
        no_glue_ui(where)
        return
    protocol = st.radio("Protocol", list(PROTOCOL_LABELS), format_func=PROTOCOL_LABELS.get, persist_state="session",
                        key=field("compare_protocol", "paper", param=FORM, options=list(PROTOCOL_LABELS)))
    first = "sst2" if "sst2" in tasks_available else tasks_available[0]
    if protocol == "paper":
        tasks = st.multiselect("GLUE tasks", tasks_available, persist_state="session",
                               key=field("compare_tasks", [first], param=FORM, options=tasks_available),
                               format_func=lambda t: f"{TASKS[t].dir_name} ({t})", help=f"From {where}.")
        recover_steps = 0
        distill = st.checkbox(
            "Recover by distillation from the original", persist_state="session",
            key=field("compare_distill", False, param=FORM),
            help="The pruned model learns from the fine-tuned original's outputs as well as from the labels (knowledge "
                 "distillation), instead of from the labels alone. Its result is stored apart from the plain fine-tune, "
                 "so both can be compared.")
    else:
        distill = False
        a, b = st.columns([3, 1])
        task = a.selectbox("GLUE task (the one the classifier was trained on)", tasks_available, persist_state="session",
                           key=field("compare_task", first, param=FORM, options=tasks_available),
                           format_func=lambda t: f"{TASKS[t].dir_name} ({t})", help=f"From {where}.")
        recover_steps = int(b.number_input("Recovery steps", min_value=0, max_value=100_000, step=50,
                                           key=field("compare_recover", 0, param=FORM, low=0, high=100_000),
                                           persist_state="session",
                                           help="Optionally fine-tune the pruned model for this many steps and evaluate again."))
        tasks = [task]
    source, scores_choice, score_n = model_ui(run)
    fine_tuned_ok = True
    if protocol == "finetuned":
        with ui.errors("Could not load the model") as outcome:
            architecture = session.load_model_cached(source).anatomy.architecture
        fine_tuned_ok = outcome.ok and "SequenceClassification" in architecture
        if outcome.ok and not fine_tuned_ok:
            st.warning(f"`{source}` is a {architecture}, not a fine-tuned classifier: the fine-tuned protocol "
                       "needs one (choose it on **Model & data** and score it), or use the paper protocol.")
    plan = plan_ui()
    recipe = recipe_ui(tasks[0] if tasks else tasks_available[0], distill)
    estimate_ui(recipe, tasks, protocol, recover_steps, distill, source=source, plan=plan,
                scored=scores_choice == "current", score_n=score_n)
    remember(FORM, "compare_")  # a refreshed page opens with this form, so Start starts what it shows
    ready = bool(tasks) and plan is not None and fine_tuned_ok
    if st.button("Start the job", type="primary", icon=":material/play_arrow:", disabled=not ready):
        with ui.errors("Could not start the job") as outcome:
            scores = str(scores_file(run.scores, workspace)) if scores_choice == "current" and run is not None else None
            spec = jobs.JobSpec(model=check_model_source(source), tasks=tasks, plan=plan, recipe=recipe, protocol=protocol,
                                recover_steps=recover_steps, distill=distill, scores=scores, score_n=score_n)
            job_id = jobs.start_job(spec, workspace)
        if outcome.ok:
            limit = jobs.max_parallel_jobs()
            st.success(f"Started job `{job_id}`: follow it below. Jobs run {'one at a time' if limit == 1 else f'{limit} at a time'}"
                       f" (set {jobs.MAX_PARALLEL_ENV} before starting the dashboard to change it); a job started while "
                       "another runs waits in the queue.", icon=":material/rocket_launch:")


# ---------------------------------------------------------------------------------------------
# Following jobs
# ---------------------------------------------------------------------------------------------


def job_ui(workspace: Path, status: jobs.JobStatus) -> None:
    stored = len(status.from_store_ids)
    done = (f"Finished {(status.finished_at or '')[:19].replace('T', ' ')}; {len(status.result_ids)} result(s)"
            + (f", {stored} answered from the store (already run with the same key)" if stored else "") + ".")
    job_panel(workspace / "jobs" / status.job_id, status, describe_job(workspace / "jobs" / status.job_id), done=done)


def _jobs_panel(workspace: Path, polling: bool) -> None:
    with ui.errors("Could not read the jobs"):
        listed = jobs.list_jobs(workspace)
        if polling and not any(s.active for s in listed):
            st.rerun(scope="app")  # a job just ended: redraw the results, stop polling
        for status in listed[:MAX_JOBS_SHOWN]:
            job_ui(workspace, status)
        older = listed[MAX_JOBS_SHOWN:]
        if older:
            with st.expander(f"{len(older)} older job(s)"):
                st.dataframe(pd.DataFrame([{"job": s.job_id, "state": s.state, "created": s.created_at,
                                            "results": len(s.result_ids), "error": s.error} for s in older]),
                             hide_index=True)


def jobs_ui(workspace: Path) -> None:
    st.subheader("Jobs")
    listed = jobs.list_jobs(workspace)
    if not listed:
        st.caption(f"No jobs yet in `{workspace.resolve()}` (the workspace; set OBCE_WORKSPACE to use another).")
        return
    active = any(s.active for s in listed)
    limit = jobs.max_parallel_jobs()
    st.caption(f"Jobs run {'one at a time' if limit == 1 else f'up to {limit} at a time'}, in the order they were "
               f"started (`{jobs.MAX_PARALLEL_ENV}={limit}`): a job started meanwhile waits in the queue, so each job's "
               "timings and latency are its own.")
    # While a job runs the panel refreshes itself every 2 s; the rest of the page stays put.
    st.fragment(_jobs_panel, run_every=2 if active else None)(workspace, active)
    if not active:
        st.button("Refresh", icon=":material/refresh:", key="jobs_refresh")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _experiments(frame: pd.DataFrame) -> list[dict]:
    """The core's comparison groups, each with a label for the picker."""
    out = []
    for group in results.comparisons(frame):
        newest = group["newest"]
        label = (f"{describe_plan(group['plan'])} · {newest['model_source']} · {group['protocol']}"
                 f"{' (distilled)' if group['distilled'] else ''} · "
                 f"{', '.join(group['tasks'])} · {str(newest['created_at'])[:16].replace('T', ' ')}")
        out.append({**group, "label": label})
    return out


def _styled(frame: pd.DataFrame, numbers: list[str], fmt: str) -> pd.DataFrame:
    """``frame`` with numbers formatted as text and empty cells as "—" (st.dataframe draws a missing
    number as "None" whatever a Styler says, so the cells are written out here)."""
    frame = frame.copy()
    for c in frame.columns:
        if c in numbers:
            values = pd.to_numeric(frame[c], errors="coerce")
            frame[c] = [MISSING if pd.isna(v) else fmt.format(v) for v in values]
        elif frame[c].dtype == object:
            frame[c] = [MISSING if v is None or (isinstance(v, float) and pd.isna(v)) else v for v in frame[c]]
    return frame


def comparison_ui(store: results.ResultsStore, frame: pd.DataFrame, contended: set[int]) -> None:
    experiments = _experiments(frame)
    if not experiments:
        st.caption("No pruned run stored yet: the side-by-side table appears when a job has evaluated a pruned model.")
        return
    pick = st.selectbox("Comparison", range(len(experiments)), format_func=lambda i: experiments[i]["label"],
                        key="compare_experiment", help="Newest first. Each pruned configuration with its original.")
    chosen = experiments[pick]
    runs = store.get(chosen["ids"])
    table = results.comparison_table(runs)
    shown = table.copy()
    roles = [r for r in ROLE_ORDER if r in shown.columns]
    for col in [*roles, "difference"]:
        shown[col] = 100.0 * pd.to_numeric(shown[col], errors="coerce")
    shown = shown.rename(columns={"params_total_pct": "params % (all)", "params_encoder_pct": "params % (encoder)",
                                  "main": "headline"})
    numbers = [*roles, "difference", "params % (all)", "params % (encoder)"]
    st.dataframe(_styled(shown, numbers, "{:.2f}"), hide_index=True, key="comparison_table",
                 column_config={"headline": st.column_config.CheckboxColumn(
                     help="The task's headline score (its one metric, or the mean of its metrics for mrpc, qqp, stsb).")})
    st.caption(f"Scores x100 (difference in points: {roles[-1]} minus original); params %: the pruned model's parameters "
               f"as a share of the original's; {MISSING}: not measured for that model. "
               f"Recipe: {describe_recipe(chosen['recipe'])}.")
    st.plotly_chart(plots.comparison_bar_figure(table, title="main score per task"), key="comparison_bars")
    latency = [r for r in runs if r.latency_ms is not None]
    if latency:  # full width: in a side column the table's last columns (the ratio, alone/contended) were cut off
        latency_ui(latency, contended, Recipe.from_dict(json.loads(chosen["recipe"])).eval_batch_size)


def latency_ms_text(ms: float) -> str:
    """Milliseconds as people read them: '11,700', '250', '12.5' (never '1.17e+04')."""
    return f"{ms:,.0f}" if abs(ms) >= 100 else f"{ms:.1f}"


def latency_ui(latency: list, contended: set[int], batch: int) -> None:
    st.markdown("**Latency (measured)**")
    lat = results.latency_table(latency, contended)
    shown = lat.copy()
    for c in lat.columns:
        if c.endswith(" ms"):
            shown[c] = [MISSING if pd.isna(v) else latency_ms_text(float(v)) for v in lat[c]]
    if "pruned / original" in lat.columns:
        shown["pruned / original"] = [MISSING if pd.isna(v) else f"{v:.2f}" for v in lat["pruned / original"]]
    st.dataframe(shown, hide_index=True, key="latency_table")
    devices = sorted({r.device for r in latency})
    st.caption(f"Latency: median ms of one forward pass over {batch} validation examples on {', '.join(devices)}. "
               "*alone*: no other job ran meanwhile (jobs queue for this); *contended*: another job shared the machine "
               "during the run, so the ratio is not to be trusted. Other programs on the machine are not seen: on a "
               "shared CPU, indicative only. **pruned / original** is measured time (below 1 = faster). The Prune "
               "page's speed-up is an estimate from the FLOPs of the matrix multiplies pruning shrinks; a measured run "
               "also spends time on what it does not shrink (embeddings, softmax, LayerNorm, the head, per-call "
               "overhead), and small pruned matrices use the CPU less efficiently, so the measured gain is smaller "
               "than the FLOPs estimate, sometimes none.")


def history_ui(frame: pd.DataFrame, contended: set[int]) -> None:
    st.subheader("Every stored result")
    data = frame.assign(plan_text=[describe_plan(p) for p in frame["plan"]],
                        recipe_text=[describe_recipe(r) for r in frame["recipe"]])
    protocols = sorted(data["protocol"].unique())
    if len(protocols) > 1:
        keep = st.selectbox("Protocol", protocols, key="history_protocol",
                            help="Runs of different protocols are not comparable; the chart shows one at a time.")
        data = data[data["protocol"] == keep]
    data = data.assign(label=[f"{p} · {m}<br>{r}" for p, m, r in zip(data["plan_text"], data["model_source"], data["recipe_text"])])
    st.plotly_chart(plots.tradeoff_figure(data, title="score vs size: every plan tried"), key="tradeoff")
    st.caption("Each point is one model on one task (circle: original, diamond: pruned, triangle: recovered); dotted: "
               "the runs no other run of the task beats with fewer "
               "parameters. Pick the plan on that front that costs what you can afford." +
               (f" {data['recipe_text'].nunique()} recipes are mixed here (hover for each)." if data["recipe_text"].nunique() > 1 else ""))
    data = data.assign(latency=["contended" if i in contended else "alone" for i in data["id"]])
    cols = ["id", "created_at", "task", "role", "protocol", "model_source", "plan_text", "main_score", "params_total",
            "params_encoder", "latency_ms", "latency", "wall_s", "device", "job_id"]
    table = data[cols].rename(columns={"plan_text": "plan", "latency": "latency measured"}).sort_values("id", ascending=False)
    table = table.astype({"job_id": object}).where(table.notna(), None)
    styled = (table.style.format("{:.4f}", subset=["main_score"], na_rep=MISSING)
              .format("{:.1f}", subset=["latency_ms"], na_rep=MISSING).format("{:.0f}", subset=["wall_s"], na_rep=MISSING)
              .format(na_rep=MISSING, subset=["created_at", "model_source", "plan", "device", "job_id"]))
    st.dataframe(styled, hide_index=True, key="history_table")


def results_ui(workspace: Path) -> None:
    st.subheader("Results")
    path = workspace / results.STORE_FILE
    if not path.is_file():
        st.caption("No results stored yet: they appear here as soon as a job finishes a run.")
        return
    store = results.ResultsStore(path)
    frame = store.all_results()
    if frame.empty:
        st.caption("No results stored yet: they appear here as soon as a job finishes a run.")
        return
    contended = {i for s in jobs.list_jobs(workspace) for i in s.contended_ids}
    comparison_ui(store, frame, contended)
    history_ui(frame, contended)


def main() -> None:
    st.title("Compare")
    st.markdown("Does the pruned model still do the job? Fine-tune and evaluate the original and the pruned model on "
                "GLUE with the same recipe, in a background job, and set the scores side by side.")
    workspace = jobs.default_workspace()
    run = session.current_scored()
    with st.container(border=True):
        st.subheader("Start a comparison")
        start_ui(workspace, run)
    jobs_ui(workspace)
    results_ui(workspace)


ui.run_page(main)
