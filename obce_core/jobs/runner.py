"""Creating, starting, following and cancelling jobs (the caller's side; the worker is ``worker``).

``create_job`` checks a spec and writes its folder; ``start_job`` also launches
``python -m obce_core.jobs run <job_dir>`` in its own session. ``job_status`` reads the status
and reports a job whose process is gone as failed; ``cancel_job`` raises the cancel flag, then
escalates to SIGTERM and SIGKILL. Two identical jobs never run at once: ``create_job`` refuses
the second while the first runs, and points at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from obce_core.jobs.process import pid_alive, process_start_time, signal_worker
from obce_core.jobs.spec import FinetuneJobSpec, JobSpec, SearchJobSpec, SweepJobSpec, read_spec, spec_from_dict
from obce_core.jobs.status import (
    CANCEL_FILE,
    LOG_FILE,
    PID_FILE,
    SPEC_FILE,
    JobError,
    JobStatus,
    job_dir,
    now,
    read_status,
    write_json_atomic,
    write_status,
)
from obce_core.results import STORE_FILE, ResultsStore
from obce_core.training import RunResult
from obce_core.training.progress import world_size
from obce_core.workspace import default_workspace

__all__ = [
    "cancel_job",
    "cancel_requested",
    "create_job",
    "job_log_tail",
    "job_results",
    "job_status",
    "list_jobs",
    "model_jobs",
    "start_job",
    "worker_pid",
]

log = logging.getLogger(__name__)


def _new_job_id(spec) -> str:
    if world_size() > 1:
        # Every process of a distributed launch must agree on one folder.
        run = os.environ.get("TORCHELASTIC_RUN_ID") or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        digest = hashlib.sha256((spec.to_json() + run).encode()).hexdigest()[:6]
        return f"dist-{digest}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _identical_running_job(spec, workspace: Path, job_id: str) -> JobStatus | None:
    """An active job of ``workspace`` (other than ``job_id``) whose worker runs the same spec."""
    for status in list_jobs(workspace):
        folder = workspace / "jobs" / status.job_id
        if status.job_id == job_id or not status.active or worker_pid(folder, status)[0] is None:
            continue  # a job never started (its creator died before running it) blocks nothing
        try:
            same = read_spec(folder / SPEC_FILE) == spec
        except ValueError:
            continue
        if same:
            return status
    return None


def create_job(spec: JobSpec | FinetuneJobSpec | SweepJobSpec | SearchJobSpec | dict, workspace: str | os.PathLike | None = None) -> Path:
    """Check ``spec``, write ``<workspace>/jobs/<job_id>/spec.json`` and a queued status; return the folder.

    Refuses (``JobError``) while an identical job runs in the workspace: its results will answer
    this one from the store once it is done, so running both would only train the same runs twice.
    """
    if isinstance(spec, dict):
        spec = spec_from_dict(spec)
    spec = spec.absolute()
    spec.check_data()
    workspace = Path(workspace).expanduser() if workspace is not None else default_workspace()
    job_id = _new_job_id(spec)
    twin = _identical_running_job(spec, workspace, job_id)
    if twin is not None:
        raise JobError(
            f"An identical job, {twin.job_id}, is already {twin.state} in {str(workspace)!r}; follow it (the "
            "Compare page, or job_status) instead of starting it twice. Once it is done, the same job is answered "
            "from the results store at once."
        )
    folder = workspace / "jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    # Under a distributed launch every process writes the same spec (atomically) and reads its
    # own copy; only rank 0 writes status (``write_status``).
    spec.to_json(folder / SPEC_FILE)
    write_status(folder, JobStatus(job_id=job_id, kind=spec.kind))
    return folder


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def start_job(spec: JobSpec | FinetuneJobSpec | SweepJobSpec | SearchJobSpec, workspace: str | os.PathLike | None = None) -> str:
    """Create the job and run it in a new process (own session); returns the job id at once.

    The worker is ``python -m obce_core.jobs run <job_dir>``, with stdout and stderr in
    ``<job_dir>/worker.log``. Follow it with ``job_status``; stop it with ``cancel_job``.
    """
    folder = create_job(spec, workspace)
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    with open(folder / LOG_FILE, "ab") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "obce_core.jobs", "run", str(folder)],
            stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, close_fds=True,
        )
    write_json_atomic(folder / PID_FILE, {"pid": proc.pid, "start": process_start_time(proc.pid), "detached": True})
    return folder.name


def worker_pid(folder: Path, status: JobStatus) -> tuple[int | None, float | None, bool]:
    """(pid, start time, whether it leads its own process group) of the job's worker."""
    try:
        info = json.loads((folder / PID_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    start = info.get("start")
    start = float(start) if isinstance(start, (int, float)) else None  # older files held /proc clock ticks
    if status.pid:
        same = info.get("pid") == status.pid
        return status.pid, start if same else None, bool(status.detached or (same and info.get("detached")))
    return info.get("pid"), start, bool(info.get("detached"))


def job_status(job) -> JobStatus:
    """The job's status; a job marked queued/running whose process is gone is reported failed.

    ``job`` is a job folder (or a job id under the default workspace).
    """
    folder = job_dir(job)
    status = read_status(folder)
    if not status.active:
        return status
    pid, start, _ = worker_pid(folder, status)
    if pid is None:
        return status  # created, not started (or start_job is writing the pid right now)
    if not pid_alive(pid, start):
        status = read_status(folder)  # it may have finished between the two reads
        if status.active:
            cancelled = (folder / CANCEL_FILE).exists()
            was = status.state
            status.state = "cancelled" if cancelled else "failed"
            status.error = status.error or (
                "cancelled: the worker was stopped" if cancelled
                else f"worker died: process {pid} is gone while the job was {was} (killed, or out of "
                f"memory); see {folder / LOG_FILE}. Runs finished before it died are in the store."
            )
            status.finished_at = now()
            write_status(folder, status)
    return status


def list_jobs(workspace: str | os.PathLike | None = None) -> list[JobStatus]:
    """Every job under ``<workspace>/jobs``, newest first."""
    root = Path(workspace).expanduser() if workspace is not None else default_workspace()
    found = []
    for folder in sorted((root / "jobs").glob("*/")):
        if (folder / SPEC_FILE).is_file():
            try:
                found.append(job_status(folder))
            except JobError as exc:
                log.warning("skipping job %s: %s", folder, exc)
    return sorted(found, key=lambda s: (s.created_at, s.job_id), reverse=True)


def model_jobs(workspace: str | os.PathLike | None, kind: str, model: str, task: str) -> list[tuple[Path, JobStatus, object]]:
    """``(folder, status, spec)`` of the ``kind`` jobs ("sweep", "search") of one task model and
    task, newest first; a job whose spec cannot be read is left out."""
    root = Path(workspace).expanduser() if workspace is not None else default_workspace()
    target = str(Path(model).expanduser().resolve())
    found = []
    for status in list_jobs(root):
        if status.kind != kind:
            continue
        folder = root / "jobs" / status.job_id
        try:
            spec = read_spec(folder / SPEC_FILE)
        except (ValueError, OSError):
            continue
        if spec.model == target and spec.task == task:
            found.append((folder, status, spec))
    return found


def cancel_job(job, *, grace_s: float = 10.0, wait: bool = True) -> JobStatus:
    """Ask a job to stop: a ``cancel`` flag the worker polls every training step; after
    ``grace_s`` seconds without effect, SIGTERM to the worker's process group (then SIGKILL).

    ``wait=False`` returns at once and escalates from a background thread.
    """
    folder = job_dir(job)
    (folder / CANCEL_FILE).touch()
    if not wait:
        threading.Thread(target=cancel_job, args=(folder,), kwargs={"grace_s": grace_s}, daemon=True).start()
        return job_status(folder)
    deadline = time.monotonic() + grace_s
    status = job_status(folder)
    while status.active and time.monotonic() < deadline:
        time.sleep(0.2)
        status = job_status(folder)
    pid, start, detached = worker_pid(folder, status)
    if not status.active:
        # Stopped: give the process a moment to exit, so its memory (and GPU) is free on return.
        end = max(deadline, time.monotonic() + 5.0)
        while pid is not None and pid_alive(pid, start) and time.monotonic() < end:
            time.sleep(0.1)
        return status
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        if pid is None or not pid_alive(pid, start) or not signal_worker(pid, sig, group=detached):
            break
        end = time.monotonic() + wait_s
        while pid_alive(pid, start) and time.monotonic() < end:
            time.sleep(0.1)
    status = read_status(folder)
    if status.active:
        if pid is None:  # never started: nothing will pick it up now
            status.state, status.error, status.finished_at = "cancelled", "cancelled before the worker started", now()
            write_status(folder, status)
        else:
            status = job_status(folder)
    return status


def job_results(job, store: ResultsStore | None = None) -> list[RunResult]:
    """The stored results a job produced or was answered with, in run order."""
    folder = job_dir(job)
    store = store or ResultsStore(folder.parent.parent / STORE_FILE)
    return store.get(read_status(folder).result_ids)


def job_log_tail(job, lines: int = 30) -> str:
    """The last ``lines`` lines of a job's worker log ('' when there is none yet)."""
    try:
        text = (job_dir(job) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def cancel_requested(job) -> bool:
    """Whether someone asked this job to stop (the worker may still be finishing its step)."""
    return (job_dir(job) / CANCEL_FILE).exists()
