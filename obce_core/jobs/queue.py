"""The job queue: jobs of one workspace run one at a time (``$OBCE_MAX_PARALLEL_JOBS`` allows more).

The worker decides, not the page: ``wait_for_turn`` keeps a started job ``queued`` (its phase says
which job it waits for) until fewer than the allowed number of older jobs are still active, first
come first served by creation time. Two jobs sharing a small CPU each take twice as long and
their latencies mean nothing; ``overlapping_jobs`` tells the worker when another job ran beside a
run anyway (more allowed, or a job of the CLI), so its latency is marked as contended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from obce_core.jobs.runner import list_jobs, worker_pid
from obce_core.jobs.status import JobStatus, write_status
from obce_core.training import TrainingCancelled
from obce_core.training.progress import world_size
from obce_core.validation import invalid, is_int

__all__ = ["MAX_PARALLEL_ENV", "jobs_ahead", "max_parallel_jobs", "overlapping_jobs", "wait_for_turn"]

MAX_PARALLEL_ENV = "OBCE_MAX_PARALLEL_JOBS"
_POLL_S = 1.0


def max_parallel_jobs() -> int:
    """How many jobs of a workspace may run at once: ``$OBCE_MAX_PARALLEL_JOBS``, default 1."""
    raw = os.environ.get(MAX_PARALLEL_ENV, "").strip()
    if not raw:
        return 1
    value = int(raw) if raw.lstrip("-").isdigit() else raw
    if not is_int(value) or value < 1:
        raise invalid(MAX_PARALLEL_ENV, "the job queue", "an integer >= 1", raw,
                      "1 runs jobs one at a time (the default); 2 lets two share the machine.")
    return int(value)


def _order(status: JobStatus) -> tuple[str, str]:
    return status.created_at, status.job_id


def jobs_ahead(folder: Path) -> list[JobStatus]:
    """Active jobs of ``folder``'s workspace created before it whose worker has started, oldest first.

    A job created but never started (no worker pid) holds no place: its creator may have died.
    """
    me = folder.name
    listed = list_jobs(folder.parent.parent)
    mine = next((s for s in listed if s.job_id == me), None)
    if mine is None:
        return []
    ahead = [s for s in listed if s.job_id != me and s.active and _order(s) < _order(mine)
             and worker_pid(folder.parent / s.job_id, s)[0] is not None]
    return sorted(ahead, key=_order)


def wait_for_turn(folder: Path, status: JobStatus, should_stop: Callable[[], bool], *,
                  limit: int | None = None, poll_s: float = _POLL_S, sleep=time.sleep) -> None:
    """Keep the job ``queued`` until fewer than ``limit`` older jobs are active (phase: whom it waits for).

    Raises ``TrainingCancelled`` when ``should_stop()`` turns True while waiting. Processes of one
    distributed launch never wait: they must start together.
    """
    limit = max_parallel_jobs() if limit is None else limit
    if world_size() > 1:
        return
    said = None
    while True:
        ahead = jobs_ahead(folder)
        if len(ahead) < limit:
            return
        if should_stop():
            raise TrainingCancelled("Cancelled while queued, before the job started.")
        running = [s for s in ahead if s.state == "running"] or ahead
        phase = f"queued (waiting for job {running[0].job_id}" + (f" and {len(ahead) - 1} more" if len(ahead) > 1 else "") + ")"
        if phase != said:
            status.phase = said = phase
            write_status(folder, status)
        sleep(poll_s)


def _time(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def overlapping_jobs(folder: Path, start: float, end: float | None = None) -> list[str]:
    """Ids of the other jobs of the workspace that ran at some moment in [start, end] (epoch seconds;
    ``end`` None: now). Times are stored to the millisecond; a job that ended before this one began
    does not overlap it."""
    end = time.time() if end is None else end
    out = []
    for s in list_jobs(folder.parent.parent):
        began = _time(s.started_at)
        if s.job_id == folder.name or began is None:
            continue
        finished = _time(s.finished_at) if not s.active else None
        finished = end if finished is None else finished
        if began <= end and finished > start:
            out.append(s.job_id)
    return out
