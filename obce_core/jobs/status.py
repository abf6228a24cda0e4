"""A job's folder and its status file.

``<workspace>/jobs/<job_id>/`` holds ``spec.json`` (what to do), ``status.json`` (``JobStatus``,
rewritten atomically by the worker), ``worker.pid`` (the process ``start_job`` launched),
``worker.log`` and, while cancelling, a ``cancel`` flag file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from obce_core.io import JsonDataclass, write_text_atomic
from obce_core.training import is_main_process
from obce_core.validation import check_choice
from obce_core.workspace import default_workspace

__all__ = [
    "ACTIVE_STATES",
    "CANCEL_FILE",
    "JOB_STATES",
    "LOG_FILE",
    "PID_FILE",
    "SPEC_FILE",
    "STATUS_FILE",
    "JobError",
    "JobStatus",
    "job_dir",
    "read_status",
    "write_json_atomic",
    "write_status",
]

SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
CANCEL_FILE = "cancel"
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")


class JobError(ValueError):
    """A job folder is missing, unreadable or in a state that does not allow the request."""


def now() -> str:
    # Milliseconds: the queue starts a job within a second of the previous one's end, and the
    # contended-latency check must tell "after" from "during".
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomic(path: Path, data: dict) -> None:
    """Readers see the old or the new file, whole."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


@dataclass
class JobStatus(JsonDataclass):
    """What ``status.json`` holds; ``job_status`` adds the liveness check.

    ``phase``/``step``/``max_steps``/``loss``/``eta_s`` mirror the latest progress event (``eta_s``:
    this run); ``run`` of ``runs`` and ``job_eta_s`` (an estimate from measured step times) describe
    the whole job; ``contended_ids`` are results whose run overlapped another job (their latency is
    not to be trusted);
    ``result_ids`` are the stored results of a GLUE job (``from_store_ids`` those answered from the
    store); ``output`` is the task model directory of a finetune job.
    """

    _json_name = "job status"

    job_id: str
    kind: str = "glue"
    state: str = "queued"
    pid: int | None = None
    detached: bool = False
    task: str | None = None
    phase: str | None = None
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    run: int | None = None
    runs: int | None = None
    job_eta_s: float | None = None
    contended_ids: list[int] = field(default_factory=list)
    error: str | None = None
    result_ids: list[int] = field(default_factory=list)
    from_store_ids: list[int] = field(default_factory=list)
    output: str | None = None
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None

    def __post_init__(self):
        check_choice(self.state, "state", "JobStatus", JOB_STATES)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def job_dir(job, workspace=None) -> Path:
    """The folder of ``job``: a job folder, or a job id under ``workspace`` (default the workspace)."""
    path = Path(job).expanduser()
    if not (path / SPEC_FILE).is_file():
        candidate = Path(workspace or default_workspace()).expanduser() / "jobs" / str(job)
        if (candidate / SPEC_FILE).is_file():
            return candidate
        raise JobError(f"{str(job)!r} is not a job folder (no {SPEC_FILE}); pass a folder made by start_job/create_job, "
                       f"or a job id under {str(Path(workspace or default_workspace()) / 'jobs')!r}.")
    return path


def read_status(folder: Path) -> JobStatus:
    """The status file's ``JobStatus``; a fresh queued one when the file is not written yet."""
    path = folder / STATUS_FILE
    try:
        return JobStatus.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return JobStatus(job_id=folder.name)
    except (json.JSONDecodeError, ValueError) as exc:  # written atomically, so only by hand
        raise JobError(f"{str(path)!r} is not a valid job status: {exc}") from exc


def write_status(folder: Path, status: JobStatus) -> None:
    """Write ``status`` atomically (rank 0 only under a distributed launch)."""
    if not is_main_process():
        return
    status.updated_at = now()
    write_json_atomic(folder / STATUS_FILE, status.to_dict())
