"""Is a job's worker process still alive? psutil, with the process's start time telling a reused
pid apart from the worker that once had it.
"""

from __future__ import annotations

import os

import psutil

__all__ = ["pid_alive", "process_start_time", "signal_worker"]


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def pid_alive(pid: int | None, start: float | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when ``start`` is given, is the process that started then."""
    if not pid:
        return False
    try:  # reap it if it is our own child that has exited (else it lingers as a zombie)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except OSError:  # not our child
        pass
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # create_time is rounded differently across reads; a reused pid differs by far more.
        return start is None or abs(proc.create_time() - float(start)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process with that pid: it exists


def signal_worker(pid: int, sig: int, *, group: bool) -> bool:
    """Send ``sig`` to ``pid`` (to its whole process group when ``group``); False when it is gone."""
    try:
        if group:
            os.killpg(pid, sig)  # start_job made the worker a session (and group) leader
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
