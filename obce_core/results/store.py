"""``ResultsStore``: GLUE results in SQLite, one row per run (one model evaluated on one task).

The store is ``<workspace>/results.sqlite`` (WAL mode, one transaction per row). A run is keyed by
(encoder fingerprint, head fingerprint, plan, task, recipe, protocol); a run already stored is
answered from the store, and each run is stored as soon as it finishes, so killing a worker loses
only the run in progress. When two callers store the same key, the first row stays and the second
caller gets it back marked ``from_store``: nothing is dropped silently.

A file that is not a readable SQLite database raises ``ResultsStoreError`` naming it;
``quarantine_store`` moves such a file aside (never deletes it) so a new store can start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from obce_core import glue
from obce_core.training import Recipe, RunResult
from obce_core.training.protocols import as_plan
from obce_core.workspace import default_workspace

__all__ = ["STORE_FILE", "ResultsStore", "ResultsStoreError", "quarantine_store"]

log = logging.getLogger(__name__)

STORE_FILE = "results.sqlite"
# SQLite keeps a write-ahead log and a shared-memory index beside the database in WAL mode.
_SIDECARS = ("-wal", "-shm")


class ResultsStoreError(ValueError):
    """The results store cannot be opened or read; the message names the file and the way out."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _canonical(data: dict | None) -> str | None:
    return None if data is None else json.dumps(data, sort_keys=True)


def _plan_json(plan) -> str | None:
    return None if plan is None else _canonical(as_plan(plan).to_dict())


def _recipe_json(recipe) -> str:
    return Recipe.from_dict(recipe).canonical_json()


def quarantine_store(path: str | os.PathLike) -> Path:
    """Move a broken store (and its WAL files) aside as ``<name>.broken-<UTC time>``; returns the new path.

    Nothing is deleted: the file can still be inspected or recovered (``sqlite3 FILE .recover``).
    The next ``ResultsStore`` on ``path`` starts empty.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ResultsStoreError(f"Results store {str(path)!r} is not a file; nothing to move aside.")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    os.replace(path, target)
    for suffix in _SIDECARS:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    log.warning("moved the results store %s aside to %s", path, target)
    return target


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
            raise ResultsStoreError(f"Results store {str(self.path)!r} is a directory; pass a file path such as "
                                    f"{str(self.path / STORE_FILE)!r}.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsStoreError(f"Cannot create the folder of the results store {str(self.path)!r}: {exc}.") from exc
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def _broken(self, exc: sqlite3.Error) -> ResultsStoreError:
        # One line: the CLI prints it as is, the Compare page shows it as its error.
        return ResultsStoreError(
            f"The results store {str(self.path)!r} cannot be read ({type(exc).__name__}: {exc}). If it is "
            "damaged, move it aside with obce_core.results.quarantine_store (nothing is deleted) and a new "
            "store starts empty."
        )

    @contextlib.contextmanager
    def _connect(self):
        """A connection that is closed on exit (sqlite3's own context manager only commits).

        Every SQLite failure inside (a damaged file, a file that is no database, no permission)
        becomes one ``ResultsStoreError`` naming the file.
        """
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise self._broken(exc) from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        except sqlite3.DatabaseError as exc:  # OperationalError too (locked beyond the timeout, read-only)
            raise self._broken(exc) from exc
        finally:
            conn.close()

    @staticmethod
    def _row_to_result(row: sqlite3.Row) -> RunResult:
        data = dict(row)
        for name in ("plan", "recipe", "metrics"):
            data[name] = json.loads(data[name]) if data[name] is not None else None
        data["main_score"] = float("nan") if data["main_score"] is None else data["main_score"]
        data["recipe"] = Recipe.from_dict(data["recipe"]).to_dict()  # every field, defaults included
        return RunResult.from_dict(data)

    def lookup(self, fingerprint: str, plan, task: str, recipe, *, protocol: str = "paper",
               head_fingerprint: str | None = None) -> RunResult | None:
        """The stored run with this key, or None. ``head_fingerprint=None`` matches any head."""
        plan_json = _plan_json(plan)
        recipe_json = _recipe_json(recipe)
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

        A result whose key is already stored (another job stored the same run first) is not
        inserted again: the stored one is returned with ``from_store=True``, so the caller reports it
        as answered from the store instead of silently losing its own numbers.
        """
        if not result.metrics:
            raise ValueError(f"Refusing to store a run of {result.task!r} without metrics; evaluate it first.")
        row = {
            "fingerprint": result.fingerprint, "head_fingerprint": result.head_fingerprint,
            "source_fingerprint": result.source_fingerprint, "model_source": str(result.model_source),
            "role": result.role, "protocol": result.protocol, "plan": _plan_json(result.plan),
            "task": glue.get_task(result.task).name, "recipe": _recipe_json(result.recipe),
            "metrics": json.dumps(result.metrics, sort_keys=True),
            "main_score": _nan_to_none(float(result.main_score)),
            "params_total": int(result.params_total), "params_encoder": int(result.params_encoder),
            "latency_ms": result.latency_ms, "wall_s": float(result.wall_s), "device": result.device,
            "job_id": result.job_id, "created_at": _now(),
        }
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as conn, conn:  # one transaction: committed whole, or rolled back
            inserted = conn.execute(f"INSERT OR IGNORE INTO results ({names}) VALUES ({marks})",
                                    list(row.values())).rowcount
        stored = self.lookup(result.fingerprint, result.plan, result.task, result.recipe,
                             protocol=result.protocol, head_fingerprint=result.head_fingerprint)
        if stored is None:  # cannot happen: the row was just written or already there
            raise ResultsStoreError(f"Result of {result.task!r} vanished from {str(self.path)!r} right after writing it.")
        if not inserted:
            log.warning("run of %s (%s) was already stored as id %s (job %s); keeping that one", result.task,
                        result.role, stored.id, stored.job_id)
            stored.from_store = True
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
