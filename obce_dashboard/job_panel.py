"""One background job on a page: its progress bar, phase, cancel button and outcome.

The job's state lives on disk (``<workspace>/jobs/<id>/status.json``), so a refreshed page finds it
again; ``job_panel`` draws it (a queued job says which job it waits for; a running one its run of
the job, step and the whole job's estimated time left) and ``poll(fn, active)`` re-runs ``fn`` every 2 s as a fragment while
a job runs, so the rest of the page stays put.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from obce_core import jobs

__all__ = ["job_panel", "minutes", "poll", "progress_text"]

# Streamlit's Material Symbols (its own web font), not emoji: Debian's fonts draw ⏳ ▶️ ✅ as empty boxes.
_ICONS = {"queued": ":material/schedule:", "running": ":material/play_circle:", "done": ":material/check_circle:",
          "failed": ":material/error:", "cancelled": ":material/stop_circle:"}


def minutes(seconds: float) -> str:
    """A duration for people: '45 s', '2.5 min', '14 min'."""
    return f"{seconds / 60:.0f} min" if seconds >= 600 else (f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s")


def progress_text(status: jobs.JobStatus, unit: str = "step") -> str:
    """'run 2 of 4 · fine-tuning pruned on sst2: step 37 of 120 · about 3.5 min left for the whole job
    (estimate from measured step times)'; a queued job says whom it waits for."""
    if status.state == "queued":
        return status.phase or "queued: waiting for the worker to start"
    parts = [f"run {status.run} of {status.runs}"] if status.runs and status.runs > 1 else []
    phase = status.phase or "starting"
    if status.step is not None and status.max_steps:
        phase += f": {unit} {status.step:,} of {status.max_steps:,}"
        if status.loss is not None:
            phase += f", loss {status.loss:.3f}"
    parts.append(phase)
    if status.job_eta_s is not None:
        parts.append(f"about {minutes(status.job_eta_s)} left for the whole job (estimate from measured step times)")
    elif status.eta_s is not None:
        parts.append(f"about {minutes(status.eta_s)} left in this run (estimate)")
    return " · ".join(parts)


def _cancel(job_dir: Path) -> None:
    try:
        jobs.cancel_job(job_dir, wait=False)  # the flag now; SIGTERM later from a background thread
    except (ValueError, OSError) as exc:
        st.session_state[f"_cancel_error_{job_dir.name}"] = f"**Could not cancel the job.** {exc}"


def job_panel(job_dir: Path, status: jobs.JobStatus, what: str, *, unit: str = "step", done: str = "") -> None:
    """Draw ``status`` of the job in ``job_dir`` (``what`` says what it makes; ``done`` what a
    finished one says)."""
    with st.container(border=True):
        st.markdown(f"{_ICONS.get(status.state, '')} **{status.state}** · job `{status.job_id}` · {what}")
        if status.active:
            cancelling = jobs.cancel_requested(job_dir)
            a, b = st.columns([5, 1], vertical_alignment="center")
            with a:
                text = progress_text(status, unit)
                if status.state == "running" and status.step is not None and status.max_steps:
                    st.progress(min(status.step / status.max_steps, 1.0), text=text)
                else:
                    st.caption(f"{text}…")
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
        elif status.state == "cancelled":
            st.caption(status.error or "cancelled")
        elif done:
            st.caption(done)


def poll(fn: Callable[[], None], active: bool) -> None:
    """Run ``fn`` as a fragment that re-runs every 2 s while ``active``; when it was active and a
    re-run finds ``fn`` returned True (the job ended), the whole page re-runs once."""

    def body() -> None:
        if fn() and active:
            st.rerun(scope="app")

    st.fragment(body, run_every=2 if active else None)()
