"""Model & data's "Task models" section: the task models in the workspace, loaded with one click,
and a form that fine-tunes a new one as a background job (its progress and cancel button survive a
refresh: the job's status is on disk).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from obce_core import glue, jobs
from obce_core.describe import describe_recipe
from obce_core.training import (CPU_PRESET, PRESET_CHOICES, PRESET_DESCRIPTIONS, Recipe, estimate_training,
                                list_task_models, subset_note)
from obce_core.workspace import default_workspace
from obce_dashboard import ui
from obce_dashboard.estimates import job_estimate_ui
from obce_dashboard.job_panel import job_panel, poll
from obce_dashboard.paths import TASK_MODELS_FOLDER, save_target

__all__ = ["task_models_ui"]

_RECENT_JOBS = 3


def _load(path: str) -> None:
    """Make the task model in ``path`` the session's model (before the model widgets are drawn)."""
    ss = st.session_state
    ss["model_kind"], ss["model_text"], ss["model"] = "local", path, path


def list_ui(root: Path) -> None:
    found = list_task_models(root)
    if not found:
        st.caption(f"No task model in `{root.resolve()}` yet: train one below, or with "
                   "`python -m obce_core finetune --task sst2 --out DIR` into that folder.")
        return
    current = st.session_state.get("model")
    table = pd.DataFrame([{"name": path.name, "task": info.task, "dev score": 100 * info.main_score,
                           "recipe": describe_recipe(info.recipe), "trained": info.created_at[:16].replace("T", " "),
                           "train s": info.train_s} for path, info in found])
    st.dataframe(table, hide_index=True, column_config={"dev score": st.column_config.NumberColumn(format="%.2f")})
    for path, info in found:
        source = str(path.resolve())
        loaded = current == source
        st.button(f"{'Loaded' if loaded else 'Load'} {path.name} ({info.task}, dev {100 * info.main_score:.2f})",
                  key=f"load_task_model_{path.name}", on_click=_load, args=(source,), disabled=loaded,
                  icon=":material/check:" if loaded else ":material/upload:")


def _follow_default_name(default: str) -> None:
    """The Name field follows the Task and Recipe (``<task>-<recipe>``) until the user types a name
    of their own. (A keyed widget keeps its first value whatever ``value=`` says later, so the
    field's state is set here, before it is drawn.)"""
    ss = st.session_state
    if ss.get("tm_name") in (None, ss.get("_tm_name_default")):
        ss["tm_name"] = default
    ss["_tm_name_default"] = default


def train_ui(workspace: Path) -> None:
    local = glue.available_local_tasks()
    if not local:
        st.info("Training needs a task's data: set OBCE_GLUE_DIR to a local GLUE copy (<TASK>/train.tsv, dev.tsv).")
        return
    current = st.session_state.get("model", "default")
    a, b = st.columns(2)
    task = a.selectbox("Task", local, format_func=lambda t: f"{glue.get_task(t).dir_name} ({t})", key="tm_task")
    preset = b.selectbox("Recipe", list(PRESET_CHOICES), index=list(PRESET_CHOICES).index(CPU_PRESET),
                         format_func=lambda p: f"{p}: {PRESET_DESCRIPTIONS.get(p, '')}", key="tm_preset")
    recipe = Recipe.preset(preset, task)
    steps = estimate_training(recipe, task)[0]
    note = subset_note(recipe, task)
    st.caption(f"{describe_recipe(recipe)}: {steps:,} steps." + (f" {note}" if note else ""))
    c, d = st.columns(2)
    bases = ["default"] + ([current] if current and current != "default" else [])
    base = c.selectbox("Start from", bases, key="tm_base",
                       format_func=lambda m: "embedded all-MiniLM-L6-v2" if m == "default" else f"the loaded model ({m})")
    with ui.errors("Could not estimate the duration"):  # from step times measured here (obce_dashboard.estimates)
        job_estimate_ui(jobs.FinetuneJobSpec(task=task, out="estimate", model=base, recipe=recipe), base)
    _follow_default_name(f"{task}-{preset}")
    name = d.text_input("Name", key="tm_name",
                        help=f"A folder name: the model goes to {TASK_MODELS_FOLDER}/<name> in the workspace.")
    if st.button("Train the task model", icon=":material/model_training:", key="tm_start"):
        with ui.errors("Could not start the training"):
            out = save_target(name, workspace, folder=TASK_MODELS_FOLDER)
            if out.exists() and any(out.iterdir()):
                raise ValueError(f"{TASK_MODELS_FOLDER}/{out.name} already exists; choose another name.")
            job_id = jobs.start_job(jobs.FinetuneJobSpec(task=task, out=str(out), model=base, recipe=recipe), workspace)
            st.success(f"Started job `{job_id}`: its progress shows below.")


def jobs_ui(workspace: Path) -> None:
    listed = [s for s in jobs.list_jobs(workspace) if s.kind == "finetune"][:_RECENT_JOBS]
    if not listed:
        return
    active = any(s.active for s in listed)

    def draw() -> bool:
        now = [jobs.job_status(workspace / "jobs" / s.job_id) for s in listed]
        for status in now:
            if status.active or status.state in ("failed", "cancelled"):
                spec = jobs.read_spec(workspace / "jobs" / status.job_id / jobs.SPEC_FILE)
                job_panel(workspace / "jobs" / status.job_id, status, f"fine-tune on {spec.task} into `{Path(spec.out).name}`")
        return not any(s.active for s in now)

    poll(draw, active)


def task_models_ui() -> None:
    """The section (see the module docstring)."""
    workspace = default_workspace()
    root = workspace / TASK_MODELS_FOLDER
    st.subheader("Task models")
    st.caption("Encoders fine-tuned on one GLUE task: prune one and the Prune page shows what each plan costs on "
               "its task. Load one, then score it.")
    with ui.errors("Could not list the task models"):
        list_ui(root)
    with st.expander("Train a new task model"):
        with ui.errors("Could not prepare the training form"):
            train_ui(workspace)
    with ui.errors("Could not read the training jobs"):
        jobs_ui(workspace)  # after the form: a job started just now shows at once
