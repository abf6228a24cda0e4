"""Work that must never sit on a widget's path: one worker thread per server, results kept per key.

A slider move reruns the whole page script; anything slower than a selection (pruning a model,
evaluating it, measuring a machine) is handed to ``Background`` instead, under a key that names
everything the result depends on (model fingerprint, scores, plan, data). The page then shows the
result if that key is done, or the previous result marked stale with the new one's progress, and
polls in a fragment until it is ready, so the sliders stay free the whole time.

``Background.submit(key, fn, slot=...)`` starts ``fn(report)`` once per key (a finished key is a
cache hit, up to ``max_entries`` keys; a failure is kept ``RETRY_AFTER_S``); a newer submission in the same ``slot`` (one session's
plan evidence, say) drops the older one if it has not started yet, and the most recent waiting
task runs first, so a run of slider moves costs only the plan the user stopped at.
``report(done, total, text)`` updates the task's progress (``total`` 0: a phase, said in ``text``). ``wait_idle`` is for tests and
benchmarks. ``background_section`` is the page side: draw, mark stale, poll.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from obce_dashboard import ui

__all__ = ["Background", "Task", "background", "background_section", "session_slot"]

_THREAD_NAME = "obce-background"
RETRY_AFTER_S = 30.0  # a failed key is answered with its error this long, then computed again on request


class _QuietWorkerThread(logging.Filter):
    """Streamlit warns 'missing ScriptRunContext' whenever a cached function runs outside a script
    run; on the worker thread that is expected (it draws nothing), so the warning is dropped there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName == _THREAD_NAME and "ScriptRunContext" in record.getMessage())


for _name in ("streamlit.runtime.scriptrunner_utils.script_run_context", "streamlit"):
    logging.getLogger(_name).addFilter(_QuietWorkerThread())


@dataclass
class Task:
    """One piece of background work and what is known about it."""

    key: Hashable
    label: str
    fn: Callable[[Callable[..., None]], Any] = field(repr=False)
    slot: str | None = None
    state: str = "queued"  # queued -> running -> done | failed; "dropped" when superseded in its slot
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: BaseException | None = None
    done: int = 0
    total: int = 0
    text: str = ""

    @property
    def ready(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def seconds(self) -> float | None:
        """Seconds it ran (so far, while running)."""
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started

    def report(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total, self.text = int(done), int(total), text


class Background:
    """A worker thread and the tasks it ran (see the module docstring)."""

    def __init__(self, max_entries: int = 512):
        self.max_entries = max_entries
        self._tasks: OrderedDict[Hashable, Task] = OrderedDict()
        self._waiting: list[Task] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._seconds: dict[str, float] = {}  # label -> how long the last finished task of that label took
        self._thread = threading.Thread(target=self._work, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    def get(self, key: Hashable) -> Task | None:
        with self._lock:
            return self._tasks.get(key)

    def last_seconds(self, label: str) -> float | None:
        """How long the last finished task labelled ``label`` took on this machine (None: none yet)."""
        with self._lock:
            return self._seconds.get(label)

    def submit(self, key: Hashable, fn: Callable[[Callable[..., None]], Any], *, label: str = "",
               slot: str | None = None) -> Task:
        """The task of ``key``: the existing one (running, waiting or finished), else a new one."""
        with self._lock:
            task = self._tasks.get(key)
            retry = task is not None and task.state == "failed" and time.monotonic() - task.finished > RETRY_AFTER_S
            if task is not None and task.state != "dropped" and not retry:
                self._tasks.move_to_end(key)
                if task.state == "queued" and task in self._waiting:  # wanted again: to the front
                    self._waiting.remove(task)
                    self._waiting.append(task)
                return task
            if slot is not None:  # what this slot asked for before and nobody started is not wanted now
                for old in [t for t in self._waiting if t.slot == slot]:
                    self._waiting.remove(old)
                    old.state = "dropped"
                    self._tasks.pop(old.key, None)
            task = Task(key=key, label=label, fn=fn, slot=slot)
            self._tasks[key] = task
            self._waiting.append(task)
            self._trim()
            self._wake.notify()
            return task

    def _trim(self) -> None:
        while len(self._tasks) > self.max_entries:
            old_key = next((k for k, t in self._tasks.items() if t.ready), None)
            if old_key is None:
                return
            self._tasks.pop(old_key)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._wake.wait()
                task = self._waiting.pop()  # the most recent first: the plan the user looks at now
                task.state, task.started = "running", time.monotonic()
                self._busy += 1
            try:
                result, error = task.fn(task.report), None
            except BaseException as exc:  # noqa: BLE001 - shown on the page that asked for it
                result, error = None, exc
            with self._lock:
                task.result, task.error, task.finished = result, error, time.monotonic()
                task.state = "failed" if error is not None else "done"
                if error is None and task.label:
                    self._seconds[task.label] = task.finished - task.started
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until nothing waits or runs (True), or ``timeout`` seconds passed (False)."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._waiting or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


@st.cache_resource(show_spinner=False)
def background() -> Background:
    """The server's one ``Background`` (shared by every session)."""
    return Background()


def session_slot(name: str) -> str:
    """A slot name private to this browser session (``name`` says which section)."""
    sid = st.session_state.setdefault("_background_session", uuid.uuid4().hex)
    return f"{sid}:{name}"


def _stale_note(task: Task, shown_for: str, expected_s: float | None) -> None:
    running = task.state == "running"
    elapsed = task.seconds or 0.0
    what = task.label + (f" ({task.text})" if task.text else "")
    if task.total:  # units of one kind (points of a sweep): the live estimate from the ones done
        left = ""
        if running and task.done and task.done < task.total:
            left = f" · about {elapsed / task.done * (task.total - task.done):.0f} s left (estimate from the ones so far)"
        st.progress(min(task.done / task.total, 1.0), text=f"{what}: {task.done:,} of {task.total:,}{left}")
    elif running and expected_s:
        st.progress(min(elapsed / expected_s, 0.99),
                    text=f"{what}: {elapsed:.0f} s of about {expected_s:.0f} s (an estimate: the last one took "
                         f"{expected_s:.1f} s here)")
    else:
        st.caption(f"{what}: " + (f"running for {elapsed:.0f} s…" if running else "waiting for the worker…"))
    if shown_for:
        st.caption(f":orange[**Stale:**] the numbers below are for the earlier plan `{shown_for}`; the current plan's "
                   "replace them when ready. The sliders stay free meanwhile.")


def background_section(name: str, key: Hashable, compute: Callable[[Callable[..., None]], Any],
                       render: Callable[[Any], None], *, label: str, shown_as: str = "", context: Hashable = None,
                       error: str = "", every: float = 1.0) -> Task:
    """Draw the result of ``compute`` for ``key`` with ``render``; start it in the background when
    it is not there yet. Until it is ready, the section shows its progress and the session's last
    result of ``name`` marked stale (``shown_as`` says what a result is for, e.g. the plan), and
    polls every ``every`` s in a fragment; when it is ready the page reruns once. A last result is
    shown stale only under the same ``context`` (e.g. the model and scores: another model's numbers
    would mislead). ``error`` heads the message of a failed computation (``ui.errors``)."""
    bg = background()
    task = bg.submit(key, compute, label=label, slot=session_slot(name))
    ss = st.session_state
    last_key = f"_background_last_{name}"
    waiting = not task.ready

    def body() -> bool:
        now = bg.get(key) or task
        if now.ready:
            if now.state == "failed":
                with ui.errors(error or f"Could not finish: {label}"):
                    raise now.error
            else:
                ss[last_key] = (shown_as, now.result, context)
                with ui.errors(error or f"Could not show: {label}"):
                    render(now.result)
            return True
        last = ss.get(last_key)
        if last is not None and last[2] != context:
            last = None
        _stale_note(now, last[0] if last else "", bg.last_seconds(label))
        if last is not None:
            with ui.errors(error or f"Could not show: {label}"):
                render(last[1])
        return False

    def fragment() -> None:
        if body() and waiting:
            st.rerun(scope="app")  # once: the page drops the poll and every section sees the result

    st.fragment(fragment, run_every=every if waiting else None)()
    return task
