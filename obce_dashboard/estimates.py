"""Durations shown before work starts, from times measured on this machine for this model.

``job_estimate_ui(spec, source)`` draws a job's ESTIMATED duration (``obce_core.jobs.estimate``):
when a figure it needs was never measured here for this model, a short calibration runs first in
the background (``obce_core.training.step_timing.calibrate_finetune``, remembered on disk per
model and device), with its progress, and the estimate appears when it is done. Once the job runs,
its panel shows the live estimate from its own step times instead.
``remember_point_seconds`` keeps a per-point time measured on the Prune page (a label-free point,
a task-score point) and ``points_estimate_text`` turns it into the duration of N points.
"""

from __future__ import annotations

import streamlit as st

from obce_core.jobs.estimate import TASK_POINT, estimate_job, needed_measurements
from obce_core.jobs.spec import SweepJobSpec
from obce_core.training.step_timing import (MachineLoad, StepTimes, calibrate_finetune, device_key, eval_example_name,
                                            time_job_start, train_step_name)
from obce_dashboard import session
from obce_dashboard.background import background_section

__all__ = ["TASK_POINT", "job_estimate_ui", "points_estimate_text", "remember_point_seconds"]


def _device(model) -> str:
    return device_key(next(model.parameters()).device)


def remember_point_seconds(loaded, name: str, seconds: float) -> None:
    """Remember that one ``name`` point (prune + measure) of ``loaded``'s model took ``seconds`` here."""
    StepTimes().remember(loaded.anatomy.fingerprint, _device(loaded.model), name, seconds)


def points_estimate_text(loaded, name: str, points: int) -> str:
    """'about 2.5 min (an ESTIMATE: ...)' for ``points`` points of ``name``, or what is missing."""
    store = StepTimes()
    load = MachineLoad.now()
    per_point = store.seconds(loaded.anatomy.fingerprint, _device(loaded.model), name, load=load)
    if per_point is None:
        return "no time per point measured on this machine for this model yet (the plan's evidence above measures one)"
    s = per_point * points
    when = f"{s / 60:.0f} min" if s >= 600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")
    return (f"about {when} in all (an ESTIMATE: {per_point:.1f} s per point, from one measured here for this model, "
            f"scaled to the {load.describe()} now)")


def _calibrate(source: str, spec):
    def compute(report) -> str:
        loaded = session.load_model_cached(source)
        key, where = loaded.anatomy.fingerprint, _device(loaded.model)
        store = StepTimes()
        if not store.has("*", device_key(), "job_start"):
            report(0, 1, "timing a job's start on this machine")
            time_job_start(store=store)
        for recipe, task in needed_measurements(spec):
            if not store.has(key, where, "model_load", train_step_name(recipe, task), eval_example_name(recipe, task)):
                calibrate_finetune(source, task, recipe, store=store, progress=report, model_key=key,
                                   glue_dir=getattr(spec, "glue_dir", None))
        return key

    return compute


def _missing(store: StepTimes, model_key: str, where: str, spec) -> bool:
    if not store.has("*", device_key(), "job_start"):
        return True
    return any(not store.has(model_key, where, "model_load", train_step_name(r, t), eval_example_name(r, t))
               for r, t in needed_measurements(spec))


def job_estimate_ui(spec, source: str, *, prefix: str = "Duration: ", scores_given: bool | None = None) -> None:
    """The ESTIMATED duration of ``spec`` (see the module docstring). What was measured before is
    read at once; a model never measured here gets a button that measures it in the background."""
    loaded = session.load_model_cached(source)
    model_key, where = loaded.anatomy.fingerprint, _device(loaded.model)
    ss = st.session_state
    needs = tuple((train_step_name(r, t), eval_example_name(r, t)) for r, t in needed_measurements(spec))
    key = ("calibrate", source, model_key, needs)

    def render(_=None) -> None:
        estimate = estimate_job(spec, model_key, scores_given=scores_given)
        if estimate is None:
            what = ("the time of one pruned and evaluated plan (the plan's score on this page measures it)"
                    if isinstance(spec, SweepJobSpec) else "a step time")
            st.caption(f"{prefix}not estimated yet: {what} has not been measured on this machine for this model.")
            return
        parts = "; ".join(f"{name} {seconds:.0f} s" for name, seconds in estimate.parts.items() if seconds >= 0.5)
        st.caption(f"{prefix}**{estimate.text()}**. Parts: {parts}. Once it runs, its panel shows the live estimate "
                   "from its own measured steps.")

    if not _missing(StepTimes(), model_key, where, spec):
        render()
        return
    if ss.get("_calibrate_key") != key:
        st.caption(f"{prefix}no estimate yet: this model's step times have never been measured on this machine.")
        if st.button("Measure this machine (a few training steps, once per model)", icon=":material/timer:",
                     key=f"calibrate_{spec.kind}",
                     help="Loads the model, times a few real training steps and a batch of evaluation on this "
                          "machine, and remembers them; every estimate for this model then comes from them."):
            ss["_calibrate_key"] = key
            st.rerun()
        return
    background_section("job_estimate", key, _calibrate(source, spec), render,
                       label="Measuring this model's step times on this machine (once per model)",
                       context=("calibrate", source), error="Could not measure this machine's step times")
