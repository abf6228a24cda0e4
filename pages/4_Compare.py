"""Compare: fine-tune and evaluate original vs pruned on GLUE in a background job, then read the results."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from obce_core import jobs, plots, results, training
from obce_core.describe import describe_plan, describe_recipe
from obce_core.export import scores_file
from obce_core.glue import TASKS
from obce_core.pruning import PruningPlan
from obce_core.training import CPU_PRESET, PRESET_CHOICES, PRESET_DESCRIPTIONS, Recipe
from obce_dashboard import prune_plan, session, ui
from obce_dashboard.paths import check_model_source

PROTOCOL_LABELS = {
    "paper": "Paper: prune the pre-trained model, then fine-tune original and pruned alike",
    "finetuned": "Fine-tuned: prune a classifier already trained on the task, evaluate at once",
}
STATE_ICONS = {"queued": ":material/schedule:", "running": ":material/progress_activity:", "done": ":material/check_circle:",
               "failed": ":material/error:", "cancelled": ":material/cancel:"}
MAX_JOBS_SHOWN = 6
ROLE_ORDER = ("original", "pruned", "recovered")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else (f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s")


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
        choice = st.radio("Scores to prune by", options, format_func=labels.get, horizontal=True, key="compare_scores",
                          persist_state="session",
                          help="The current scores give the plan exactly what the Prune page showed; scoring each "
                               "task's training sentences is the paper's setting.")
    with b:
        score_n = st.number_input("Sentences per task", min_value=16, max_value=4096, value=512, step=64, key="compare_score_n",
                                  persist_state="session", disabled=choice != "task")
    return source, choice, int(score_n)


def recipe_ui(task: str) -> Recipe:
    presets = list(PRESET_CHOICES)
    preset = st.selectbox("Recipe", presets, index=presets.index(CPU_PRESET),
                          format_func=lambda p: f"{p}: {PRESET_DESCRIPTIONS.get(p, '')}", key="compare_preset",
                          persist_state="session",
                          help=f"The same recipe and seed fine-tune the original and the pruned model ('{CPU_PRESET}': "
                               f"the CPU preset of {task}).")
    try:
        base = Recipe.preset(preset, task)
    except ValueError as exc:  # e.g. a task with no CPU preset
        st.warning(str(exc))
        base = Recipe()
    k = f"compare_{preset}_"
    c = st.columns(5)
    train = c[0].number_input("Training examples (0 = all)", min_value=0, value=base.train_size or 0, step=250,
                              key=k + "train", persist_state="session")
    evals = c[1].number_input("Evaluation examples (0 = all)", min_value=0, value=base.eval_size or 0, step=100,
                              key=k + "eval", persist_state="session")
    epochs = c[2].number_input("Epochs", min_value=0.1, max_value=20.0, value=float(base.epochs), step=0.5,
                               key=k + "epochs", persist_state="session")
    steps = c[3].number_input("Max steps (0 = epochs)", min_value=0, value=base.max_steps, step=10, key=k + "steps",
                              persist_state="session")
    length = c[4].number_input("Max tokens", min_value=8, max_value=512, value=base.max_length, step=8, key=k + "length",
                               persist_state="session")
    with st.expander("More recipe settings"):
        d = st.columns(3)
        batch = d[0].number_input("Batch size", min_value=1, max_value=512, value=base.batch_size, key=k + "batch",
                                  persist_state="session")
        lr = d[1].number_input("Learning rate", min_value=1e-6, max_value=1e-2, value=base.learning_rate, format="%.0e",
                               step=1e-5, key=k + "lr", persist_state="session")
        seed = d[2].number_input("Seed", min_value=0, max_value=2**31 - 1, value=base.seed, key=k + "seed",
                                 persist_state="session")
    return base.replace(train_size=int(train) or None, eval_size=int(evals) or None, epochs=float(epochs),
                        max_steps=int(steps), max_length=int(length), batch_size=int(batch), learning_rate=float(lr),
                        seed=int(seed))


def estimate_ui(recipe: Recipe, tasks: list[str], protocol: str, recover_steps: int) -> None:
    parts, total = [], 0.0
    for task in tasks:
        if protocol == "paper":  # original and pruned (the pruned model's steps are a little faster)
            steps, seconds = training.estimate_training(recipe, task, runs=2)
            parts.append(f"{task}: 2 x {steps:,} steps ≈ {_minutes(seconds)}")
        else:
            _, seconds = training.estimate_training(recipe, task, runs=0, extra_steps=recover_steps or 0)
            parts.append(f"{task}: no training" + (f", {recover_steps} recovery steps ≈ {_minutes(seconds)}" if recover_steps else ""))
        total += seconds
    per_step = training.estimate_training(recipe, tasks[0], runs=0, extra_steps=1)[1] if tasks else 0.0
    st.caption(
        f"Duration estimate (training only; scoring and evaluation add to it): {'; '.join(parts)}; ≈ **{_minutes(total)}** "
        f"in all. Measured: ~{training.CPU_SECONDS_PER_STEP} s per step of 32 x 64 tokens on this CPU for all-MiniLM "
        f"(here {recipe.batch_size} x {recipe.max_length} tokens ≈ {per_step:.1f} s per step); larger models take longer. "
        "The job runs in its own process: you can leave this page and come back."
    )


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
    protocol = st.radio("Protocol", list(PROTOCOL_LABELS), format_func=PROTOCOL_LABELS.get, key="compare_protocol",
                        persist_state="session")
    if protocol == "paper":
        default = ["sst2"] if "sst2" in tasks_available else tasks_available[:1]
        tasks = st.multiselect("GLUE tasks", tasks_available, default=default, key="compare_tasks", persist_state="session",
                               format_func=lambda t: f"{TASKS[t].dir_name} ({t})", help=f"From {where}.")
        recover_steps = 0
    else:
        a, b = st.columns([3, 1])
        task = a.selectbox("GLUE task (the one the classifier was trained on)", tasks_available, key="compare_task",
                           persist_state="session", format_func=lambda t: f"{TASKS[t].dir_name} ({t})", help=f"From {where}.")
        recover_steps = int(b.number_input("Recovery steps", min_value=0, max_value=100_000, value=0, step=50,
                                           key="compare_recover", persist_state="session",
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
    recipe = recipe_ui(tasks[0] if tasks else tasks_available[0])
    estimate_ui(recipe, tasks, protocol, recover_steps)
    ready = bool(tasks) and plan is not None and fine_tuned_ok
    if st.button("Start the job", type="primary", icon=":material/play_arrow:", disabled=not ready):
        with ui.errors("Could not start the job") as outcome:
            scores = str(scores_file(run.scores, workspace)) if scores_choice == "current" and run is not None else None
            spec = jobs.JobSpec(model=check_model_source(source), tasks=tasks, plan=plan, recipe=recipe, protocol=protocol,
                                recover_steps=recover_steps, scores=scores, score_n=score_n)
            job_id = jobs.start_job(spec, workspace)
        if outcome.ok:
            st.success(f"Started job `{job_id}`: follow it below.", icon=":material/rocket_launch:")


# ---------------------------------------------------------------------------------------------
# Following jobs
# ---------------------------------------------------------------------------------------------


def _spec_line(job_dir: Path) -> str:
    try:
        spec = jobs.read_spec(job_dir / jobs.SPEC_FILE)
    except (ValueError, OSError):
        return "(spec unreadable)"
    if isinstance(spec, jobs.FinetuneJobSpec):
        return f"{spec.task} · fine-tune into `{spec.out}` · `{spec.model}`"
    plan = describe_plan(spec.plan)
    return f"{', '.join(spec.tasks)} · {spec.protocol} · `{plan}` · `{spec.model}`"


def _cancel(job_dir: Path) -> None:
    """Ask the worker to stop (the flag file; escalation to SIGTERM runs in a background thread)."""
    try:
        jobs.cancel_job(job_dir, wait=False)
    except (ValueError, OSError) as exc:  # JobError is a ValueError: the folder went away meanwhile
        st.session_state[f"_cancel_error_{job_dir.name}"] = f"**Could not cancel the job.** {exc}"


def job_ui(workspace: Path, status: jobs.JobStatus) -> None:
    job_dir = workspace / "jobs" / status.job_id
    with st.container(border=True):
        st.markdown(f"{STATE_ICONS.get(status.state, '')} **{status.state}** · job `{status.job_id}` · {_spec_line(job_dir)}")
        if status.active:
            cancelling = jobs.cancel_requested(job_dir)
            a, b = st.columns([5, 1], vertical_alignment="center")
            with a:
                phase = status.phase or "waiting for the worker to start"
                if status.step is not None and status.max_steps:
                    eta = f", about {_minutes(status.eta_s)} left" if status.eta_s is not None else ""
                    loss = f", loss {status.loss:.3f}" if status.loss is not None else ""
                    st.progress(min(status.step / status.max_steps, 1.0),
                                text=f"{phase}: step {status.step:,} of {status.max_steps:,}{loss}{eta}")
                else:
                    st.caption(f"{phase}…")
            with b:
                st.button("Cancelling…" if cancelling else "Cancel", key=f"cancel_{status.job_id}", disabled=cancelling,
                          icon=":material/stop_circle:", on_click=_cancel, args=(job_dir,))
            problem = st.session_state.get(f"_cancel_error_{status.job_id}")
            if problem:
                st.error(problem, icon=":material/error:")
        elif status.state == "failed":
            st.error(status.error or "failed", icon=":material/error:")
            with st.expander("Worker log (last lines)"):
                st.code(jobs.job_log_tail(job_dir) or "(no log)", language="text")
        else:
            stored = len(status.from_store_ids)
            st.caption(f"Finished {status.finished_at or ''}; {len(status.result_ids)} result(s)"
                       + (f", {stored} answered from the store (already run with the same key)" if stored else "")
                       + (f". {status.error}" if status.state == "cancelled" and status.error else "."))


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
        label = (f"{describe_plan(group['plan'])} · {newest['model_source']} · {group['protocol']} · "
                 f"{', '.join(group['tasks'])} · {str(newest['created_at'])[:16].replace('T', ' ')}")
        out.append({**group, "label": label})
    return out


def comparison_ui(store: results.ResultsStore, frame: pd.DataFrame) -> None:
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
    shown = shown.rename(columns={"params_total_pct": "params % (all)", "params_encoder_pct": "params % (encoder)"})
    fmt = {c: st.column_config.NumberColumn(format="%.2f") for c in [*roles, "difference", "params % (all)", "params % (encoder)"]}
    st.dataframe(shown, hide_index=True, column_config=fmt, key="comparison_table")
    st.caption(f"Scores x100 (difference in points: {roles[-1]} minus original); params %: the pruned model's parameters "
               f"as a share of the original's. Recipe: {describe_recipe(chosen['recipe'])}.")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(plots.comparison_bar_figure(table, title="main score per task"), key="comparison_bars")
    latency = [r for r in runs if r.latency_ms is not None]
    if latency:
        right.markdown("**Latency**")
        by_task: dict[str, dict] = {}
        for r in latency:
            by_task.setdefault(r.task, {"task": r.task})[f"{r.role} ms"] = r.latency_ms
        lat = pd.DataFrame(list(by_task.values()))
        if "original ms" in lat.columns and "pruned ms" in lat.columns:
            lat["pruned / original"] = lat["pruned ms"] / lat["original ms"]
        right.dataframe(lat, hide_index=True,
                        column_config={c: st.column_config.NumberColumn(format="%.3g") for c in lat.columns if c != "task"})
        devices = sorted({r.device for r in latency})
        right.caption(f"Latency: median ms of one forward pass over {Recipe.from_dict(json.loads(chosen['recipe'])).eval_batch_size} "
                   f"validation examples on {', '.join(devices)}; on a shared CPU, indicative only.")


def history_ui(frame: pd.DataFrame) -> None:
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
    cols = ["id", "created_at", "task", "role", "protocol", "model_source", "plan_text", "main_score", "params_total",
            "params_encoder", "latency_ms", "wall_s", "device", "job_id"]
    table = data[cols].rename(columns={"plan_text": "plan"}).sort_values("id", ascending=False)
    st.dataframe(table, hide_index=True, key="history_table",
                 column_config={"main_score": st.column_config.NumberColumn(format="%.4f"),
                                "latency_ms": st.column_config.NumberColumn(format="%.1f"),
                                "wall_s": st.column_config.NumberColumn(format="%.0f")})


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
    comparison_ui(store, frame)
    history_ui(frame)


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
