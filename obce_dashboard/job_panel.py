"""One background job on a page: its progress bar, phase, cancel button and outcome.

The job's state lives on disk (``<workspace>/jobs/<id>/status.json``), so a refreshed page finds it
again; ``job_panel`` draws it and ``poll(fn, active)`` re-runs ``fn`` every 2 s as a fragment while
a job runs, so the rest of the page stays put.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from obce_core import jobs

__all__ = ["job_panel", "poll"]

_ICONS = {"queued": "⏳", "running": "▶️", "done": "✅", "failed": "❌", "cancelled": "⏹️"}


def _cancel(job_dir: Path) -> None:
    try:
        jobs.cancel_job(job_dir, wait=False)  # the flag now; SIGTERM later from a background thread
    except (ValueError, OSError) as exc:
        st.session_state[f"_cancel_error_{job_dir.name}"] = f"**Could not cancel the job.** {exc}"


def job_panel(job_dir: Path, status: jobs.JobStatus, what: str, *, unit: str = "step") -> None:
    """Draw ``status`` of the job in ``job_dir`` (``what`` says what it makes)."""
    with st.container(border=True):
        st.markdown(f"{_ICONS.get(status.state, '')} **{status.state}** · job `{status.job_id}` · {what}")
        if status.active:
            cancelling = jobs.cancel_requested(job_dir)
            a, b = st.columns([5, 1], vertical_alignment="center")
            with a:
                phase = status.phase or "waiting for the worker to start"
                if status.step is not None and status.max_steps:
                    eta = f", about {status.eta_s / 60:.1f} min left" if status.eta_s is not None else ""
                    st.progress(min(status.step / status.max_steps, 1.0),
                                text=f"{phase}: {unit} {status.step:,} of {status.max_steps:,}{eta}")
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
        elif status.state == "cancelled":
            st.caption(status.error or "cancelled")


def poll(fn: Callable[[], None], active: bool) -> None:
    """Run ``fn`` as a fragment that re-runs every 2 s while ``active``; when it was active and a
    re-run finds ``fn`` returned True (the job ended), the whole page re-runs once."""

    def body() -> None:
        if fn() and active:
            st.rerun(scope="app")

    st.fragment(body, run_every=2 if active else None)()
