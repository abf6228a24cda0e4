"""The Prune page's evidence: what the current plan costs a task model, and the sweep's curves.

For a task model (a directory with ``obce_task.json``), ``evidence_ui`` shows the task score of the
plan in force, first on a seeded 256-example subset of the dev split with its 95 % bootstrap
interval, then, on request, on the whole split; both computed in the background (a slider move
never waits: the last plan's score shows, marked stale, until the new one is ready) and cached per
(model, scores, plan, split). Beside it,
the curves of a finished (or running) threshold sweep of the same model, read from the sweep's
row cache, with the largest percentile within a tolerance per group and scorer. A sweep is started
here as a background job (``SweepJobSpec``), its duration estimated from step times measured here. Any other model gets the label-free evidence of
``embedding_evidence`` (also on request for a task model) and a note on how to make a task model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from obce_core import glue, jobs, plots
from obce_core.evidence import encode_split, largest_safe_percentile, read_sweep, score_plan
from obce_core.jobs.estimate import TASK_POINT, TASK_POINT_EXAMPLES
from obce_core.pruning import PruningPlan
from obce_core.training import task_model_info
from obce_core.workspace import default_workspace
from obce_dashboard import prune_plan, ui
from obce_dashboard.background import background_section
from obce_dashboard.embedding_evidence import embedding_evidence_ui
from obce_dashboard.estimates import job_estimate_ui, remember_point_seconds
from obce_dashboard.job_panel import job_panel, poll

__all__ = ["ESTIMATE_SIZE", "evidence_ui"]

ESTIMATE_SIZE = TASK_POINT_EXAMPLES  # also the size a sweep's per-point time is measured at
_NO_PLAN = PruningPlan(compensation="none")  # removes nothing: the original's score on the same examples


@st.cache_resource(show_spinner="Tokenizing the dev split…", max_entries=4)
def _encoded(source: str, fingerprint: str, task: str, eval_size: int | None, _tokenizer):  # noqa: ARG001
    return encode_split(_tokenizer, task, eval_size=eval_size, seed=0)


@st.cache_data(show_spinner=False, max_entries=512)
def _plan_score(source: str, fingerprint: str, scores_key: str, plan_json: str, task: str, eval_size: int | None,
                _loaded, _run) -> dict:
    """``score_plan`` of one plan, cached per model (source and weights), scores, plan and split."""
    plan = PruningPlan.from_dict(json.loads(plan_json))
    encoded = _encoded(source, fingerprint, task, eval_size, _loaded.tokenizer)
    calibration = prune_plan.calibration_if_needed(_loaded, _run, plan)
    out = score_plan(_loaded.model, _run.scores, plan, encoded, calibration=calibration)
    return {**out, "n": encoded.n, "subset": encoded.is_subset}


def _score(loaded, run, plan: PruningPlan, task: str, eval_size: int | None) -> dict:
    return _plan_score(loaded.source, loaded.anatomy.fingerprint, run.key, plan.to_json(), task, eval_size, loaded, run)


def no_task_model_ui(source: str) -> None:
    st.info(
        f"`{source}` has no task head, so no task score can be shown. Train a task model in the **Task models** "
        "section of Model & data (it loads with one click), or on the command line: "
        "`python -m obce_core finetune --task sst2 --out DIR`, then load DIR as a local directory and score it.",
        icon=":material/school:",
    )
    st.page_link(ui.PAGE_MODEL, label="Task models on Model & data", icon=":material/tune:")


def _scores_of(loaded, run, plan: PruningPlan, task: str, eval_size: int | None):
    """The background work of one plan's score: (the plan's, the original's) on the same examples."""

    def compute(report) -> tuple[dict, dict]:
        report(0, 0, "pruning and evaluating the plan")
        estimate = _score(loaded, run, plan, task, eval_size)
        if eval_size == TASK_POINT_EXAMPLES:
            remember_point_seconds(loaded, TASK_POINT, estimate["eval_s"])  # what a sweep's point costs here
        report(0, 0, "evaluating the original on the same examples")
        original = _score(loaded, run, _NO_PLAN, task, eval_size)
        return estimate, original

    return compute


def _estimate_ui(scored: tuple[dict, dict], plan: PruningPlan, task: str) -> None:
    estimate, original = scored
    score, iv = estimate["metrics"]["main_score"], estimate["interval"]
    label = f"estimate on {estimate['n']} dev examples" if estimate["subset"] else f"all {estimate['n']} dev examples"
    st.metric(f"{task} score of this plan ({label})", f"{100 * score:.2f}",
              delta=f"{100 * (score - original['metrics']['main_score']):+.2f} vs original "
                    f"({100 * original['metrics']['main_score']:.2f})", delta_color="normal",
              help=f"{int(100 * iv.level)} % bootstrap interval {100 * iv.low:.2f} to {100 * iv.high:.2f} over "
                   f"{iv.resamples} resamples of the same examples. Pruned with this plan, no retraining.")
    st.caption(f"95 % interval {100 * iv.low:.2f} – {100 * iv.high:.2f} (seeded subset of the dev split); "
               f"pruned and evaluated in {estimate['eval_s']:.1f} s.")
    applied = pd.Series([row["method"] for row in estimate["compensations"]]).value_counts()
    if len(applied):
        st.caption(f"Compensation {plan.compensation}: " + ", ".join(f"{m} in {n}" for m, n in applied.items())
                   + " layer group(s).")


def _full_ui(scored: tuple[dict, dict], task: str) -> None:
    full, full_original = scored
    st.metric(f"{task} score of this plan (all {full['n']} dev examples)", f"{100 * full['metrics']['main_score']:.2f}",
              delta=f"{100 * (full['metrics']['main_score'] - full_original['metrics']['main_score']):+.2f} vs "
                    f"original ({100 * full_original['metrics']['main_score']:.2f})")


def current_score_ui(loaded, run, plan: PruningPlan, task: str) -> None:
    """The plan's task score, computed in the background (``background_section``): a slider move
    never waits for it; until it is ready the last plan's score shows, marked stale."""
    ss = st.session_state
    context = (loaded.source, loaded.anatomy.fingerprint, run.key, task)
    background_section(
        "task_score", ("task_score", *context, plan.to_json(), ESTIMATE_SIZE),
        _scores_of(loaded, run, plan, task, ESTIMATE_SIZE), lambda r: _estimate_ui(r, plan, task),
        label=f"Evaluating the plan on {ESTIMATE_SIZE} {task} dev examples", shown_as=plan.describe(), context=context,
        error="Could not evaluate this plan")
    key = (loaded.source, run.key, plan.to_json(), task)
    refined = ss.setdefault("_refined_plans", set())
    if st.button("Refine on the full dev split", icon=":material/done_all:", key="refine_full"):
        refined.add(key)
    if key in refined:
        background_section(
            "task_score_full", ("task_score", *context, plan.to_json(), None),
            _scores_of(loaded, run, plan, task, None), lambda r: _full_ui(r, task),
            label=f"Evaluating the plan on all of {task} dev", shown_as=plan.describe(), context=context,
            error="Could not evaluate this plan on the full dev split")


@st.cache_data(show_spinner=False, max_entries=16)
def _sweep_rows(path: str, mtime_ns: int, size: int) -> pd.DataFrame:  # noqa: ARG001  (file state is the key)
    return read_sweep(path)


def _rows(path: str | None) -> pd.DataFrame:
    p = Path(path) if path else None
    if p is None or not p.is_file():
        return pd.DataFrame()  # the job has not reached its first point
    stat = p.stat()
    return _sweep_rows(str(p), stat.st_mtime_ns, stat.st_size)


def curves_ui(rows: pd.DataFrame, spec: jobs.SweepJobSpec, plan: PruningPlan) -> None:
    if rows.empty:
        st.caption("No sweep point has finished yet.")
        return
    at_zero = rows[rows["percentile"] == 0]["main_score"]
    original = float(at_zero.mean()) if len(at_zero) else None
    current = {"ffn": plan.ffn, "v": plan.v, "qk": plan.qk}
    if plan.ffn == plan.v == plan.qk:
        current["all"] = plan.ffn
    where = f"a seeded subset of {int(rows['n_eval'].iloc[0])}" if bool(rows["subset"].iloc[0]) else \
        f"all {int(rows['n_eval'].iloc[0])}"
    st.plotly_chart(plots.sweep_curves_figure(rows, original, current=current), key="sweep_curves")
    st.caption(f"{spec.task} dev ({where} examples), each point a real evaluation of the pruned task model (no "
               f"retraining); scores from {spec.score_texts} training sentences at [CLS]; skip {spec.skip_layers} "
               f"layer(s), compensation {spec.compensation or 'auto'}. Bands: range over {len(spec.seeds)} random "
               "seed(s). Dashed: the original; dotted: this page's sliders.")
    if original is None:
        st.caption("The sweep has no percentile 0, so no safe percentile can be read from it.")
        return
    tolerance = st.number_input("Tolerance (points)", min_value=0.0, max_value=100.0, value=1.0, step=0.5,
                                key="evidence_tolerance",
                                help="How much of the original's main score (x100) a percentile may lose (worst seed).")
    safe = largest_safe_percentile(rows, original, tolerance / 100)
    table = safe.pivot_table(index="group", columns="scorer", values="largest_safe_percentile", sort=False)
    st.caption(f"Largest swept percentile within {tolerance:g} point(s) of the original, every smaller one too:")
    st.dataframe(table, column_config={c: st.column_config.NumberColumn(format="%g %%") for c in table.columns})


def start_sweep_ui(workspace: Path, source: str, task: str, plan: PruningPlan) -> None:
    from obce_core.evidence import SWEEP_GROUPS, SWEEP_SCORERS
    from obce_core.pruning import SCORERS

    with st.container(border=True):  # not a form: the duration estimate follows every setting at once
        st.markdown("**Start a sweep** (a background job; progress shows here, a refresh keeps it)")
        a, b, c = st.columns(3)
        step = a.selectbox("Percentile step", [10, 20, 25], key="sweep_step")
        seeds = b.number_input("Random seeds", min_value=1, max_value=5, value=3, key="sweep_seeds")
        size = c.selectbox("Dev examples", [ESTIMATE_SIZE, "all"], index=1, key="sweep_size")
        groups = st.multiselect("Groups", list(SWEEP_GROUPS), default=list(SWEEP_GROUPS), key="sweep_groups")
        # fisher (a gradient pass over 512 labelled training examples) and flap are offered, not defaults.
        scorers = st.multiselect("Scorers", list(dict.fromkeys([*SWEEP_SCORERS, *SCORERS])), default=list(SWEEP_SCORERS),
                                 key="sweep_scorers")
        st.caption(f"Uses this page's skip layers ({plan.skip_layers}) and compensation ({plan.compensation}); "
                   "finished points are kept if you cancel.")
        spec = None
        with ui.errors("These sweep settings do not make a sweep"):
            spec = jobs.SweepJobSpec(model=source, task=task, groups=groups, scorers=scorers,
                                     percentiles=list(range(0, 100, int(step))), seeds=list(range(int(seeds))),
                                     skip_layers=plan.skip_layers, compensation=plan.compensation,
                                     eval_size=None if size == "all" else int(size))
            job_estimate_ui(spec, source, prefix="Duration of this sweep: ")
        go = st.button("Start the sweep", icon=":material/play_arrow:", disabled=spec is None or not groups or not scorers)
    if go and spec is not None:
        with ui.errors("Could not start the sweep"):
            job_id = jobs.start_job(spec, workspace)
            st.success(f"Started sweep job `{job_id}`.")
            st.rerun()


def sweep_ui(source: str, task: str, plan: PruningPlan) -> None:
    workspace = default_workspace()
    found = jobs.model_jobs(workspace, "sweep", source, task)
    latest = found[0] if found else None
    if latest is None:
        st.caption("No sweep of this model yet: start one to see task score against percentile for rf and its "
                   "controls.")
        start_sweep_ui(workspace, source, task, plan)
        return
    folder, status, spec = latest
    active = status.active

    def draw() -> bool:
        now = jobs.job_status(folder)
        if now.active or now.state in ("failed", "cancelled"):
            job_panel(folder, now, f"sweep of {spec.task}", unit="point")
        curves_ui(_rows(now.output), spec, plan)
        return not now.active

    poll(draw, active)
    if not active:
        with st.expander("Start another sweep"):
            start_sweep_ui(workspace, source, task, plan)


def evidence_ui(loaded, run, plan: PruningPlan) -> None:
    """The evidence section for the model in ``loaded`` under ``plan`` (see the module docstring)."""
    st.subheader("What this plan costs the task")
    info = task_model_info(loaded.source)
    if info is None:  # no task head: the model's own job, its sentence output, measured without labels
        st.caption("No task head, so the evidence is label-free: what this plan does to the model's own sentence "
                   "output on texts that were not scored.")
        embedding_evidence_ui(loaded, run, plan)
        no_task_model_ui(loaded.source)
        return
    task = info.task
    ss = st.session_state
    if ss.get("data") == "glue" and ss.get("task") not in (None, task):
        st.warning(f"This task model was fine-tuned on **{task}**, but the texts chosen on Model & data come from "
                   f"**{ss['task']}**. Its head predicts {task}'s labels, so the scores below are on {task} dev. To "
                   f"see {ss['task']}, load a task model fine-tuned on {ss['task']}.", icon=":material/warning:")
    if task not in glue.available_local_tasks() and glue.hub_offline():
        st.info(f"No {task} data here: set OBCE_GLUE_DIR to a local GLUE copy holding {glue.get_task(task).dir_name}/, "
                "or allow the Hugging Face hub (unset HF_HUB_OFFLINE).")
        return
    st.caption(f"Task model fine-tuned on {task} (dev {100 * info.main_score:.2f} when saved, {info.created_at[:10]}).")
    left, right = st.columns([1, 2], gap="large")
    with left:
        with ui.errors("Could not evaluate this plan"):
            current_score_ui(loaded, run, plan, task)
    with right:
        with ui.errors("Could not read the sweep"):
            sweep_ui(loaded.source, task, plan)
    if st.toggle("Also show the label-free evidence (the encoder's sentence output)", key="embedding_for_task_model"):
        embedding_evidence_ui(loaded, run, plan)
