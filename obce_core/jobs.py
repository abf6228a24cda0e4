"""GLUE evaluation jobs that run in their own process, and the SQLite store of their results.

A job is one ``JobSpec`` (model, scores, plan, tasks, recipe, protocol) in its own folder
``<workspace>/jobs/<job_id>/``: ``spec.json``, ``status.json`` (rewritten atomically by the worker),
``worker.log`` and, while cancelling, a ``cancel`` flag file. ``start_job`` launches
``python -m obce_core.jobs run <job_dir>`` in a new session so a dashboard stays responsive;
the CLI runs the same ``run_job`` in its own process. The workspace is ``$OBCE_WORKSPACE`` or
``./obce_workspace``.

``ResultsStore`` keeps one row per run (one model on one task) in ``<workspace>/results.sqlite``
(WAL mode, one transaction per row). A run is keyed by (encoder fingerprint, head fingerprint,
plan, task, recipe, protocol); a run already stored is answered from the store, and each run is
stored as soon as it finishes, so killing a worker loses only the run in progress.

Under ``accelerate launch``/``torchrun`` every process runs the protocols together, and only
rank 0 writes results and status.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from obce_core import glue
from obce_core.finetune import (
    PROTOCOLS,
    Recipe,
    RunResult,
    TrainingCancelled,
    _canonical,
    _is_main_process,
    run_finetuned_protocol,
    run_paper_protocol,
)
from obce_core.io import JsonDataclass, write_text_atomic
from obce_core.pruning import PruningPlan

__all__ = [
    "WORKSPACE_ENV",
    "JOB_STATES",
    "JobError",
    "JobSpec",
    "JobStatus",
    "ResultsStore",
    "default_workspace",
    "create_job",
    "start_job",
    "run_job",
    "job_status",
    "list_jobs",
    "cancel_job",
    "job_results",
    "comparison_table",
    "comparisons",
    "job_log_tail",
    "cancel_requested",
]

log = logging.getLogger(__name__)

WORKSPACE_ENV = "OBCE_WORKSPACE"
STORE_FILE = "results.sqlite"
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
CANCEL_FILE = "cancel"
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
_STATUS_MIN_INTERVAL_S = 0.5


class JobError(ValueError):
    """A job folder is missing, unreadable or in a state that does not allow the request."""


class JobCancelled(TrainingCancelled):
    """The worker got SIGTERM (cancel_job's escalation)."""


def default_workspace() -> Path:
    """``$OBCE_WORKSPACE``, else ``./obce_workspace``."""
    env = os.environ.get(WORKSPACE_ENV, "").strip()
    return Path(env).expanduser() if env else Path("obce_workspace")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: dict) -> None:
    """Readers see the old or the new file, whole."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Results store
# ---------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    head_fingerprint TEXT NOT NULL,
    source_fingerprint TEXT NOT NULL,
    model_source TEXT NOT NULL,
    role TEXT NOT NULL,
    protocol TEXT NOT NULL,
    plan TEXT,
    task TEXT NOT NULL,
    recipe TEXT NOT NULL,
    metrics TEXT NOT NULL,
    main_score REAL,
    params_total INTEGER NOT NULL,
    params_encoder INTEGER NOT NULL,
    latency_ms REAL,
    wall_s REAL NOT NULL,
    device TEXT NOT NULL,
    job_id TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS results_key
    ON results (fingerprint, head_fingerprint, ifnull(plan, ''), task, recipe, protocol);
"""
_COLUMNS = ("id", "fingerprint", "head_fingerprint", "source_fingerprint", "model_source", "role", "protocol",
            "plan", "task", "recipe", "metrics", "main_score", "params_total", "params_encoder", "latency_ms",
            "wall_s", "device", "job_id", "created_at")


def _nan_to_none(value):
    return None if isinstance(value, float) and value != value else value


class ResultsStore:
    """GLUE results in SQLite; see the module docstring for the key and the guarantees.

    Every call opens its own short-lived connection, so one store object may be shared by
    threads (a Streamlit server) and read while a worker writes.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else default_workspace() / STORE_FILE
        if self.path.exists() and self.path.is_dir():
            raise JobError(f"Results store {str(self.path)!r} is a directory; pass a file path such as "
                           f"{str(self.path / STORE_FILE)!r}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self):
        """A connection that is closed on exit (sqlite3's own context manager only commits)."""
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            raise JobError(f"Could not open the results store {str(self.path)!r}: {exc}.") from exc
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _row_to_result(row: sqlite3.Row) -> RunResult:
        data = dict(row)
        for name in ("plan", "recipe", "metrics"):
            data[name] = json.loads(data[name]) if data[name] is not None else None
        data["main_score"] = float("nan") if data["main_score"] is None else data["main_score"]
        return RunResult.from_dict(data)

    def lookup(self, fingerprint: str, plan, task: str, recipe, *, protocol: str = "paper",
               head_fingerprint: str | None = None) -> RunResult | None:
        """The stored run with this key, or None. ``head_fingerprint=None`` matches any head."""
        plan_json = _canonical(_plan_dict(plan))
        recipe_json = _canonical(Recipe.from_dict(recipe).to_dict())
        sql = ("SELECT * FROM results WHERE fingerprint=? AND ifnull(plan, '')=? AND task=? AND recipe=? "
               "AND protocol=?")
        args = [fingerprint, plan_json or "", glue.get_task(task).name, recipe_json, protocol]
        if head_fingerprint is not None:
            sql += " AND head_fingerprint=?"
            args.append(head_fingerprint)
        with self._connect() as conn:
            row = conn.execute(sql + " ORDER BY id LIMIT 1", args).fetchone()
        return None if row is None else self._row_to_result(row)

    def add(self, result: RunResult) -> RunResult:
        """Insert ``result`` in one transaction; returns it with ``id`` and ``created_at``.

        A result whose key is already stored is not inserted again: the stored one is returned.
        """
        if not result.metrics:
            raise ValueError(f"Refusing to store a run of {result.task!r} without metrics; evaluate it first.")
        row = {
            "fingerprint": result.fingerprint, "head_fingerprint": result.head_fingerprint,
            "source_fingerprint": result.source_fingerprint, "model_source": str(result.model_source),
            "role": result.role, "protocol": result.protocol, "plan": _canonical(result.plan),
            "task": glue.get_task(result.task).name, "recipe": _canonical(Recipe.from_dict(result.recipe).to_dict()),
            "metrics": json.dumps(result.metrics, sort_keys=True),
            "main_score": _nan_to_none(float(result.main_score)),
            "params_total": int(result.params_total), "params_encoder": int(result.params_encoder),
            "latency_ms": result.latency_ms, "wall_s": float(result.wall_s), "device": result.device,
            "job_id": result.job_id, "created_at": _now(),
        }
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as conn, conn:  # one transaction: committed whole, or rolled back
            conn.execute(f"INSERT OR IGNORE INTO results ({names}) VALUES ({marks})", list(row.values()))
        stored = self.lookup(result.fingerprint, result.plan, result.task, result.recipe,
                             protocol=result.protocol, head_fingerprint=result.head_fingerprint)
        if stored is None:  # cannot happen: the row was just written or already there
            raise JobError(f"Result of {result.task!r} vanished from {str(self.path)!r} right after writing it.")
        return stored

    def get(self, ids) -> list[RunResult]:
        """The results with these ids, in the order given (unknown ids are skipped)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM results WHERE id IN ({', '.join('?' for _ in ids)})", ids).fetchall()
        by_id = {row["id"]: self._row_to_result(row) for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def all_results(self) -> pd.DataFrame:
        """Every stored run, one row each (JSON columns ``plan``/``recipe``/``metrics`` as text)."""
        with self._connect() as conn:
            frame = pd.read_sql_query("SELECT * FROM results ORDER BY id", conn)
        if frame.empty:
            return pd.DataFrame(columns=list(_COLUMNS))
        frame["plan"] = frame["plan"].astype(object).where(frame["plan"].notna(), None)  # None, not NaN
        return frame

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        with self._connect() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _plan_dict(plan) -> dict | None:
    if plan is None:
        return None
    if isinstance(plan, dict):
        return PruningPlan.from_dict(plan).to_dict()
    return plan.to_dict()


# ---------------------------------------------------------------------------------------------
# Job spec and status
# ---------------------------------------------------------------------------------------------
@dataclass
class JobSpec(JsonDataclass):
    """One GLUE evaluation job; checks itself and round-trips through JSON.

    ``model``: ``"default"``, a local directory or a hub id (a fine-tuned classifier for
    protocol ``finetuned``). ``plan``: a ``PruningPlan`` (or its dict), ``None`` for the original
    alone. ``scores``: a ``.parquet`` written by ``python -m obce_core score --out``; without it
    each task's scores come from ``score_n`` training sentences drawn with ``score_seed``
    (``score_token``, ``score_max_length``). ``recover_steps``: protocol ``finetuned`` only.
    """

    _json_name = "job spec"

    model: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["sst2"])
    plan: PruningPlan | None = None
    recipe: Recipe = field(default_factory=Recipe)
    protocol: str = "paper"
    recover_steps: int = 0
    scores: str | None = None
    score_n: int = 512
    score_seed: int = 0
    score_token: str = "cls"
    score_max_length: int = 128
    glue_dir: str | None = None
    device: str | None = None

    def __post_init__(self):
        from obce_core.capture import TOKEN_MODES

        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"JobSpec.model must be 'default', a model directory or a hub id; got {self.model!r}.")
        tasks = self.tasks.split(",") if isinstance(self.tasks, str) else self.tasks
        if not isinstance(tasks, (list, tuple)) or not tasks:
            raise ValueError(f"JobSpec.tasks must be a non-empty list of GLUE task names; got {self.tasks!r}. "
                             f"Valid names: {', '.join(glue.TASKS)}.")
        names = [glue.get_task(t).name for t in tasks]  # unknown names raise with the valid list
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"JobSpec.tasks names {dupes} more than once; list each task once.")
        self.tasks = names
        if self.plan is not None and not isinstance(self.plan, PruningPlan):
            self.plan = PruningPlan.from_dict(self.plan) if isinstance(self.plan, dict) else PruningPlan.from_json(self.plan)
        self.recipe = Recipe.from_dict(self.recipe)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"JobSpec.protocol must be one of {PROTOCOLS}; got {self.protocol!r}. 'paper' prunes the "
                             "pre-trained model and fine-tunes both; 'finetuned' prunes a fine-tuned classifier.")
        if isinstance(self.recover_steps, bool) or not isinstance(self.recover_steps, int) or self.recover_steps < 0:
            raise ValueError(f"JobSpec.recover_steps must be an integer >= 0; got {self.recover_steps!r}.")
        if self.recover_steps and self.protocol != "finetuned":
            raise ValueError(f"JobSpec.recover_steps={self.recover_steps} applies to protocol 'finetuned' only "
                             "(the paper protocol fine-tunes the pruned model in full); set it to 0.")
        if self.protocol == "finetuned" and len(self.tasks) != 1:
            raise ValueError(f"Protocol 'finetuned' evaluates a classifier fine-tuned for ONE task; got tasks "
                             f"{self.tasks}. Start one job per fine-tuned model.")
        for name in ("score_n", "score_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"JobSpec.{name} must be an integer >= 2; got {value!r}.")
        if isinstance(self.score_seed, bool) or not isinstance(self.score_seed, int):
            raise ValueError(f"JobSpec.score_seed must be an integer; got {self.score_seed!r}.")
        if self.score_token not in TOKEN_MODES:
            raise ValueError(f"JobSpec.score_token must be one of {TOKEN_MODES}; got {self.score_token!r}.")
        if self.scores is not None:
            self.scores = str(self.scores)
            if not Path(self.scores).expanduser().is_file():
                raise ValueError(f"Scores file {self.scores!r} does not exist; write one with `python -m obce_core "
                                 "score --model ... --out scores.parquet`, or leave scores unset to score each task's "
                                 "training sentences.")
        if self.glue_dir is not None:
            self.glue_dir = str(self.glue_dir)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["plan"] = None if self.plan is None else self.plan.to_dict()
        data["recipe"] = self.recipe.to_dict()
        return data

    def absolute(self) -> "JobSpec":
        """A copy whose local paths are absolute, so a worker in another folder finds them."""
        changes = {}
        if self.model not in ("default", "") and Path(self.model).expanduser().exists():
            changes["model"] = str(Path(self.model).expanduser().resolve())
        if self.scores is not None:
            changes["scores"] = str(Path(self.scores).expanduser().resolve())
        root = self.glue_dir if self.glue_dir is not None else glue.default_glue_dir()
        if root is not None:
            changes["glue_dir"] = str(Path(root).expanduser().resolve())
        return dataclasses.replace(self, **changes)

    def check_data(self) -> None:
        """Fail early, naming the file, when a local GLUE folder lacks a split a job needs."""
        root = Path(self.glue_dir).expanduser() if self.glue_dir is not None else glue.default_glue_dir()
        if root is None:
            return  # the hub; load_task reports what went wrong
        for name in self.tasks:
            spec = glue.get_task(name)
            needed = [s for s in spec.splits if s.startswith("validation")]
            if self.protocol == "paper" or self.recover_steps:
                needed.append("train")
            elif self.scores is None and self.plan is not None:
                needed.append("train")  # scored on training sentences
            for split in needed:
                path = root / spec.dir_name / spec.split_file(split)
                if not path.is_file():
                    raise glue.GlueDataError(
                        f"GLUE task {spec.name!r} needs split {split!r}: file {path} does not exist. Copy the "
                        f"{spec.dir_name}/{path.name} file of a GLUE download there, or drop {spec.name!r} "
                        f"from the tasks (found locally: {glue.available_local_tasks(root) or 'none'})."
                    )


@dataclass
class JobStatus:
    """What ``status.json`` holds; ``job_status`` adds the liveness check."""

    job_id: str
    state: str = "queued"
    pid: int | None = None
    detached: bool = False
    task: str | None = None
    phase: str | None = None
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    error: str | None = None
    result_ids: list[int] = field(default_factory=list)
    from_store_ids: list[int] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None

    def __post_init__(self):
        if self.state not in JOB_STATES:
            raise ValueError(f"JobStatus.state must be one of {JOB_STATES}; got {self.state!r}.")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "JobStatus":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _job_dir(job, workspace=None) -> Path:
    path = Path(job).expanduser()
    if not (path / SPEC_FILE).is_file():
        candidate = Path(workspace or default_workspace()).expanduser() / "jobs" / str(job)
        if (candidate / SPEC_FILE).is_file():
            return candidate
        raise JobError(f"{str(job)!r} is not a job folder (no {SPEC_FILE}); pass a folder made by start_job/create_job, "
                       f"or a job id under {str(Path(workspace or default_workspace()) / 'jobs')!r}.")
    return path


def _read_status(job_dir: Path) -> JobStatus:
    path = job_dir / STATUS_FILE
    try:
        return JobStatus.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return JobStatus(job_id=job_dir.name)
    except (json.JSONDecodeError, ValueError) as exc:  # written atomically, so only by hand
        raise JobError(f"{str(path)!r} is not a valid job status: {exc}.") from exc


def _write_status(job_dir: Path, status: JobStatus) -> None:
    if not _is_main_process():
        return
    status.updated_at = _now()
    _write_json_atomic(job_dir / STATUS_FILE, status.to_dict())


# ---------------------------------------------------------------------------------------------
# Creating and starting jobs
# ---------------------------------------------------------------------------------------------
def _new_job_id(spec: JobSpec) -> str:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # Every process of a distributed launch must agree on one folder.
        run = os.environ.get("TORCHELASTIC_RUN_ID") or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        digest = hashlib.sha256((spec.to_json() + run).encode()).hexdigest()[:6]
        return f"dist-{digest}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def create_job(spec: JobSpec, workspace: str | os.PathLike | None = None) -> Path:
    """Check ``spec``, write ``<workspace>/jobs/<job_id>/spec.json`` and a queued status; return the folder."""
    if not isinstance(spec, JobSpec):
        spec = JobSpec.from_dict(spec)
    spec = spec.absolute()
    spec.check_data()
    workspace = Path(workspace).expanduser() if workspace is not None else default_workspace()
    job_id = _new_job_id(spec)
    job_dir = workspace / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    # Under a distributed launch every process writes the same spec (atomically) and reads its
    # own copy; only rank 0 writes status (``_write_status``).
    spec.to_json(job_dir / SPEC_FILE)
    _write_status(job_dir, JobStatus(job_id=job_id))
    return job_dir


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[1])


def start_job(spec: JobSpec, workspace: str | os.PathLike | None = None) -> str:
    """Create the job and run it in a new process (own session); returns the job id at once.

    The worker is ``python -m obce_core.jobs run <job_dir>``, with stdout and stderr in
    ``<job_dir>/worker.log``. Follow it with ``job_status``; stop it with ``cancel_job``.
    """
    job_dir = create_job(spec, workspace)
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    with open(job_dir / LOG_FILE, "ab") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "obce_core.jobs", "run", str(job_dir)],
            stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, close_fds=True,
        )
    _write_json_atomic(job_dir / PID_FILE, {"pid": proc.pid, "start": _proc_start_time(proc.pid), "detached": True})
    return job_dir.name


# ---------------------------------------------------------------------------------------------
# Process liveness
# ---------------------------------------------------------------------------------------------
def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[19]


def _pid_alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    try:  # reap it if it is our own child that has exited (else it lingers as a zombie)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2:].startswith("Z"):
            return False
    except OSError:
        pass
    if start is not None:
        now = _proc_start_time(pid)
        if now is not None and now != start:
            return False
    return True


def _worker_pid(job_dir: Path, status: JobStatus) -> tuple[int | None, str | None, bool]:
    try:
        info = json.loads((job_dir / PID_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    if status.pid:
        same = info.get("pid") == status.pid
        return status.pid, info.get("start") if same else None, bool(status.detached or (same and info.get("detached")))
    return info.get("pid"), info.get("start"), bool(info.get("detached"))


def job_status(job) -> JobStatus:
    """The job's status; a job marked queued/running whose process is gone is reported failed.

    ``job`` is a job folder (or a job id under the default workspace).
    """
    job_dir = _job_dir(job)
    status = _read_status(job_dir)
    if not status.active:
        return status
    pid, start, _ = _worker_pid(job_dir, status)
    if pid is None:
        return status  # created, not started (or start_job is writing the pid right now)
    if not _pid_alive(pid, start):
        status = _read_status(job_dir)  # it may have finished between the two reads
        if status.active:
            cancelled = (job_dir / CANCEL_FILE).exists()
            was = status.state
            status.state = "cancelled" if cancelled else "failed"
            status.error = status.error or (
                "cancelled: the worker was stopped" if cancelled
                else f"worker died: process {pid} is gone while the job was {was} (killed, or out of "
                f"memory); see {job_dir / LOG_FILE}. Runs finished before it died are in the store."
            )
            status.finished_at = _now()
            _write_status(job_dir, status)
    return status


def list_jobs(workspace: str | os.PathLike | None = None) -> list[JobStatus]:
    """Every job under ``<workspace>/jobs``, newest first."""
    root = Path(workspace).expanduser() if workspace is not None else default_workspace()
    jobs = []
    for job_dir in sorted((root / "jobs").glob("*/")):
        if (job_dir / SPEC_FILE).is_file():
            try:
                jobs.append(job_status(job_dir))
            except JobError as exc:
                log.warning("skipping job %s: %s", job_dir, exc)
    return sorted(jobs, key=lambda s: (s.created_at, s.job_id), reverse=True)


def cancel_job(job, *, grace_s: float = 10.0, wait: bool = True) -> JobStatus:
    """Ask a job to stop: a ``cancel`` flag the worker polls every training step; after
    ``grace_s`` seconds without effect, SIGTERM to the worker's process group (then SIGKILL).

    ``wait=False`` returns at once and escalates from a background thread.
    """
    job_dir = _job_dir(job)
    (job_dir / CANCEL_FILE).touch()
    if not wait:
        threading.Thread(target=cancel_job, args=(job_dir,), kwargs={"grace_s": grace_s}, daemon=True).start()
        return job_status(job_dir)
    deadline = time.monotonic() + grace_s
    status = job_status(job_dir)
    while status.active and time.monotonic() < deadline:
        time.sleep(0.2)
        status = job_status(job_dir)
    pid, start, detached = _worker_pid(job_dir, status)
    if not status.active:
        # Stopped: give the process a moment to exit, so its memory (and GPU) is free on return.
        end = max(deadline, time.monotonic() + 5.0)
        while pid is not None and _pid_alive(pid, start) and time.monotonic() < end:
            time.sleep(0.1)
        return status
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        if pid is None or not _pid_alive(pid, start):
            break
        try:
            if detached:
                os.killpg(pid, sig)  # start_job made the worker a session (and group) leader
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait_s
        while _pid_alive(pid, start) and time.monotonic() < end:
            time.sleep(0.1)
    status = _read_status(job_dir)
    if status.active:
        if pid is None:  # never started: nothing will pick it up now
            status.state, status.error, status.finished_at = "cancelled", "cancelled before the worker started", _now()
            _write_status(job_dir, status)
        else:
            status = job_status(job_dir)
    return status


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------
def _scores_provider(spec: JobSpec, task: str):
    """``None`` (no plan), the scores file, or a callable scoring the task's training sentences."""
    if spec.plan is None:
        return None
    if spec.scores is not None:
        from obce_core.scoring import NeuronScores

        return NeuronScores.from_parquet(spec.scores)

    def score(model, tokenizer):
        from obce_core.scoring import score_model

        data = glue.load_task(task, "train", spec.glue_dir, n=spec.score_n, seed=spec.score_seed)
        texts = glue.dataset_texts(data, task)
        return score_model(model, tokenizer, texts, token=spec.score_token, max_length=spec.score_max_length)

    return score


class _JobStore:
    """The store as a job sees it: new results carry the job's id."""

    def __init__(self, store: ResultsStore, job_id: str):
        self.store, self.job_id = store, job_id

    def lookup(self, **key) -> RunResult | None:
        return self.store.lookup(**key)

    def add(self, result: RunResult) -> RunResult:
        result.job_id = self.job_id
        return self.store.add(result)


def run_job(job, *, progress: Callable[[dict], None] | None = None) -> list[RunResult]:
    """Run a created job in THIS process and return its results (the worker's body; the CLI's too).

    Writes ``status.json`` as it goes and each finished run into ``<workspace>/results.sqlite``;
    runs already stored are answered from it. ``progress`` receives the protocol's events (dicts
    with ``phase``, or ``step``/``max_steps``/``loss``/``eta_s``, or ``result``). Cancelling (the
    flag file, or SIGTERM in a worker) ends with state ``cancelled`` and raises
    ``TrainingCancelled``; any other error ends with state ``failed`` and is re-raised.
    """
    job_dir = _job_dir(job)
    spec = JobSpec.from_json(job_dir / SPEC_FILE)
    store = ResultsStore(job_dir.parent.parent / STORE_FILE)
    status = _read_status(job_dir)
    status.state, status.pid, status.started_at, status.error = "running", os.getpid(), _now(), None
    try:
        status.detached = json.loads((job_dir / PID_FILE).read_text()).get("pid") == os.getpid()
    except (OSError, json.JSONDecodeError):
        status.detached = False
    _write_status(job_dir, status)
    cancel_flag = job_dir / CANCEL_FILE
    last_write = [0.0]

    def should_stop() -> bool:
        return cancel_flag.exists()

    def on_event(event: dict) -> None:
        now = time.monotonic()
        force = False
        if "phase" in event:
            status.phase, force = event["phase"], True
            status.step = status.max_steps = status.loss = status.eta_s = None
        if "step" in event:
            status.step, status.max_steps = event["step"], event["max_steps"]
            status.loss, status.eta_s = event.get("loss"), event.get("eta_s")
            force = event["step"] == event["max_steps"] or event["step"] == 1
        result = event.get("result")
        if result is not None and result.id is not None:
            status.result_ids.append(int(result.id))
            if result.from_store:
                status.from_store_ids.append(int(result.id))
        if force or now - last_write[0] >= _STATUS_MIN_INTERVAL_S:
            _write_status(job_dir, status)
            last_write[0] = now
        if progress is not None:
            progress(event)

    results: list[RunResult] = []
    try:
        if should_stop():
            raise TrainingCancelled("Cancelled before the job started.")
        for task in spec.tasks:
            status.task = task
            _write_status(job_dir, status)
            common = dict(glue_dir=spec.glue_dir, device=spec.device, progress=on_event,
                          should_stop=should_stop, store=_JobStore(store, job_dir.name))
            scores = _scores_provider(spec, task)
            if spec.protocol == "paper":
                out = run_paper_protocol(spec.model, scores, spec.plan, task, spec.recipe, **common)
            else:
                out = run_finetuned_protocol(spec.model, scores, spec.plan, task, spec.recipe,
                                             spec.recover_steps, **common)
            results.extend(out.values())
        status.state, status.phase = "done", "done"
        return results
    except TrainingCancelled as exc:
        status.state, status.error = "cancelled", str(exc)
        raise
    except KeyboardInterrupt:
        status.state, status.error = "cancelled", "Cancelled: interrupted (Ctrl-C)."
        raise
    except BaseException as exc:
        status.state = "failed"
        status.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        raise
    finally:
        status.finished_at = _now()
        status.step = status.max_steps = status.eta_s = None
        _write_status(job_dir, status)


def job_results(job, store: ResultsStore | None = None) -> list[RunResult]:
    """The stored results a job produced or was answered with, in run order."""
    job_dir = _job_dir(job)
    store = store or ResultsStore(job_dir.parent.parent / STORE_FILE)
    return store.get(_read_status(job_dir).result_ids)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def comparison_table(results: list[RunResult]) -> pd.DataFrame:
    """Side by side per task and metric: original, pruned (and recovered), difference, params %.

    ``difference`` is the last variant minus the original. ``params_total_pct`` and
    ``params_encoder_pct`` are the pruned model's parameters as a percentage of the original's
    (whole model, and encoder layers alone). With several tasks a ``glue_average`` row (mean of
    ``main_score``) closes the table.
    """
    by_task: dict[str, dict[str, RunResult]] = {}
    for r in results:
        by_task.setdefault(r.task, {})[r.role] = r
    rows = []
    roles = [role for role in ("original", "pruned", "recovered") if any(role in v for v in by_task.values())]
    averages: dict[str, list[float]] = {role: [] for role in roles}
    for task, runs in by_task.items():
        original = runs.get("original")
        variant = runs.get("recovered") or runs.get("pruned")
        metrics = [m for m in (original or variant).metrics if m != "main_score"] + ["main_score"]
        for metric in metrics:
            row = {"task": task, "metric": metric}
            for role in roles:
                row[role] = runs[role].metrics.get(metric) if role in runs else None
            if original is not None and variant is not None and variant is not original:
                row["difference"] = variant.metrics.get(metric, float("nan")) - original.metrics.get(metric, float("nan"))
                row["params_total_pct"] = 100.0 * variant.params_total / original.params_total
                row["params_encoder_pct"] = 100.0 * variant.params_encoder / original.params_encoder
            rows.append(row)
        for role in roles:
            if role in runs:
                averages[role].append(runs[role].main_score)
    if len(by_task) > 1:
        row = {"task": "glue_average", "metric": "main_score"}
        complete = {role: v for role, v in averages.items() if len(v) == len(by_task)}
        for role in roles:
            row[role] = sum(complete[role]) / len(complete[role]) if role in complete else None
        last = roles[-1]
        if "original" in complete and last in complete and last != "original":
            row["difference"] = row[last] - row["original"]
        rows.append(row)
    columns = ["task", "metric", *roles, "difference", "params_total_pct", "params_encoder_pct"]
    return pd.DataFrame(rows).reindex(columns=columns)


# ---------------------------------------------------------------------------------------------
# python -m obce_core.jobs run <job_dir>
# ---------------------------------------------------------------------------------------------
def _worker_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obce_core.jobs", description="obce job worker")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job folder made by create_job/start_job")
    run.add_argument("job_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()

    def on_sigterm(signum, frame):
        raise JobCancelled("Cancelled: the worker received SIGTERM.")

    def report(event: dict) -> None:
        if "phase" in event:
            print(f"[{_now()}] {event['phase']}", flush=True)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run_job(args.job_dir, progress=report)
    except TrainingCancelled as exc:
        print(f"cancelled: {exc}", flush=True)
        return 3
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    # Run the canonical module (not this __main__ copy) so there is one set of classes.
    from obce_core.jobs import _worker_main as _main

    sys.exit(_main())


def job_log_tail(job, lines: int = 30) -> str:
    """The last ``lines`` lines of a job's worker log ('' when there is none yet)."""
    try:
        text = (_job_dir(job) / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def cancel_requested(job) -> bool:
    """Whether someone asked this job to stop (the worker may still be finishing its step)."""
    return (_job_dir(job) / CANCEL_FILE).exists()


def comparisons(frame: pd.DataFrame) -> list[dict]:
    """Stored runs grouped to set side by side, newest first.

    Each group is one pruned configuration (source weights, plan, protocol, recipe) with the
    originals of the same source, protocol, recipe and tasks, and (protocol ``finetuned``) the
    recovered runs of the same plan. A group is a dict: ``ids`` (result ids), ``plan``,
    ``protocol``, ``recipe``, ``tasks`` (sorted), ``newest`` (the newest pruned row as a dict).
    """
    rows = frame.to_dict("records")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["role"] == "pruned":
            groups.setdefault((r["source_fingerprint"], r["plan"], r["protocol"], r["recipe"]), []).append(r)
    out = []
    for (source_fp, plan, protocol, recipe), pruned in groups.items():
        tasks = {r["task"] for r in pruned}
        originals = [r for r in rows if r["role"] == "original" and r["source_fingerprint"] == source_fp
                     and r["protocol"] == protocol and r["recipe"] == recipe and r["task"] in tasks]
        recovered = [r for r in rows if r["role"] == "recovered" and r["source_fingerprint"] == source_fp
                     and r["plan"] == plan and r["task"] in tasks] if protocol == "finetuned" else []
        out.append({"ids": [int(r["id"]) for r in originals + pruned + recovered], "plan": plan, "protocol": protocol,
                    "recipe": recipe, "tasks": sorted(tasks), "newest": max(pruned, key=lambda r: r["id"])})
    return sorted(out, key=lambda g: -g["newest"]["id"])
