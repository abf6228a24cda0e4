"""Independent plan evaluations spread over worker processes: ``PlanPool``.

A sweep's points and a search's candidates do not depend on one another, so each can be pruned and
evaluated on another device. ``PlanPool`` starts one worker process per device
(``torch.multiprocessing`` with ``spawn``, the start method CUDA requires): one per GPU when GPUs are
present, else N CPU workers that split this process's torch threads between them. Each worker loads
the task model once (from its directory, or from a copy the pool saves of a model object), reads the
scores, calibration and ``EncodedSplit`` once from a pickle in the pool's temp folder, then prunes and
evaluates every plan it is sent with ``obce_core.evidence.sweep.evaluate_plan``: the rows are the ones
a sequential loop returns. ``evaluate(plans)`` hands the plans to whichever worker is free and returns
the rows in submission order; an exception in a worker is re-raised here, its type and message kept,
chained to the worker's traceback. Use it as a context manager: leaving the block (a cancel
included) stops the workers and removes the temp folder.

Bounded and never orphaned: a pool asks for no more workers than ``machine.max_workers`` allows (one
per GPU or usable core, and the free memory at about ``WORKER_BYTES`` plus the model's weights each).
A worker never blocks on its queue: it polls, and watches its parent through the pipe
``multiprocessing.parent_process()`` holds; when the parent is gone (killed, even with SIGKILL) the
worker removes the pool's temp folder (the model copy) and exits within about ``_POLL_S`` seconds.
A new pool also removes the folders of earlier pools whose parent process no longer runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import pickle
import queue
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Sequence

import torch
import torch.multiprocessing as mp

from obce_core.loading import load_model
from obce_core.machine import WORKER_BYTES, check_workers
from obce_core.pruning.plan import PruningPlan
from obce_core.validation import check_int, invalid

__all__ = ["PlanPool", "WorkerError", "default_devices"]

_PAYLOAD_FILE = "payload.pkl"
_FOLDER_PREFIX = "obce-pool-"  # then the parent's pid and a dash: a later pool knows whose folder it is
_MODEL_DIR = "model"
_POLL_S = 1.0  # how often a waiting parent checks that its workers still live
# What a worker runs on each plan, as "module:function": a function (model, scores, plan, encoded,
# *, calibration) -> row. A name, not the function: a spawned child imports it by name, and sweep
# (which imports this module) stays out of this module's imports.
DEFAULT_FUNCTION = "obce_core.evidence.sweep:evaluate_plan"


class WorkerError(RuntimeError):
    """A worker process failed: its traceback, or how it died, is the message."""


def default_devices(workers: int | None = None) -> list[str]:
    """One device per worker: every GPU (``workers`` of them at most) when there are GPUs, else
    ``workers`` CPU workers (default 1)."""
    check_int(workers, "workers", "default_devices", low=1, allow_none=True,
              fix="Give the number of worker processes, or None for one per GPU (one CPU worker without GPUs).")
    gpus = torch.cuda.device_count()
    if gpus:
        return [f"cuda:{i}" for i in range(min(workers or gpus, gpus))]
    return ["cpu"] * (workers or 1)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (to cross the process boundary), else a WorkerError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception type may refuse to pickle
        return WorkerError(f"{type(exc).__name__}: {exc}")


def _resolve(function: str):
    """``"package.module:name"`` -> the function it names."""
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError): alive, and not ours to clean
        return True
    return True


def _remove_orphaned_folders(temp_dir: Path) -> None:
    """Remove the temp folders of pools whose parent process is gone (a parent killed with its workers)."""
    for folder in temp_dir.glob(f"{_FOLDER_PREFIX}*-*"):
        pid = folder.name[len(_FOLDER_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _orphaned(folder: Path, results) -> None:
    """The parent died: remove the pool's temp folder (its model copy) and leave without flushing."""
    if folder.name.startswith(_FOLDER_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    results.cancel_join_thread()  # nobody reads the results any more: do not wait to flush them


def _next_task(tasks, parent, folder: Path, results):
    """The next item of ``tasks``, or None once the parent process is gone (then the folder is removed)."""
    while True:
        if parent is not None and not parent.is_alive():
            _orphaned(folder, results)
            return None
        try:
            return tasks.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def _worker(index: int, device: str, threads: int, model_dir: str, payload: str, tasks, results,
            function: str = DEFAULT_FUNCTION) -> None:
    """A worker's body: load once, then evaluate plans from ``tasks`` until a ``None`` arrives or the
    parent process is gone."""
    parent = multiprocessing.parent_process()  # its sentinel is a pipe that closes when the parent dies
    folder = Path(payload).parent
    try:
        evaluate_plan = _resolve(function)
        torch.set_num_threads(threads)  # this process's own setting: the CPU workers share the cores
        model, _ = load_model(model_dir, device=device)
        with open(payload, "rb") as fh:
            scores, calibration, encoded = pickle.load(fh)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("failed", None, _portable(exc), traceback.format_exc()))
        return
    while True:
        item = _next_task(tasks, parent, folder, results)
        if item is None:
            return
        batch, position, plan = item
        try:
            row = evaluate_plan(model, scores, PruningPlan.from_dict(plan), encoded, calibration=calibration)
            results.put(("row", (batch, position), row, None))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            results.put(("error", (batch, position), _portable(exc), traceback.format_exc()))


def _model_bytes(model) -> int:
    """The size of a model's weights: its parameters, or the weight files of its folder."""
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model).expanduser()
        return sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    return sum(p.numel() * p.element_size() for p in model.parameters())


class PlanPool:
    """Worker processes that evaluate pruning plans of one task model on one ``EncodedSplit``.

    ``model``: a task model's directory, or the model object itself (then ``tokenizer`` is needed:
    both are saved to the pool's temp folder for the workers to load). ``devices``: one worker per
    entry (``["cuda:0", "cuda:1"]``, ``["cpu", "cpu"]``); default ``default_devices(workers)``.
    ``threads``: torch threads per CPU worker, default this process's threads split evenly. Workers
    start at once and load while the caller goes on; the first ``evaluate`` waits for them.
    ``function``: what evaluates a plan, as ``"module:name"`` (default ``sweep.evaluate_plan``; the
    plan search passes ``search.algorithm.measure_plan``).
    """

    def __init__(self, model, scores, encoded, *, calibration=None, tokenizer=None, workers: int | None = None,
                 devices: Sequence[str] | None = None, threads: int | None = None,
                 function: str = DEFAULT_FUNCTION):
        owner = "PlanPool"
        if devices is not None and (isinstance(devices, str) or not list(devices)):
            raise invalid("devices", owner, "a non-empty list of devices such as ['cuda:0', 'cuda:1']", devices,
                          "Give one entry per worker, or leave it None to use every GPU (or `workers` CPU workers).")
        self.devices = list(devices) if devices is not None else default_devices(workers)
        check_workers(len(self.devices), f"{owner}: workers", WORKER_BYTES + _model_bytes(model),
                      on_gpus=all(str(d).startswith("cuda") for d in self.devices))
        cpu_workers = sum(1 for d in self.devices if str(d) == "cpu")
        default_threads = max(1, torch.get_num_threads() // max(cpu_workers, 1))
        self.threads = check_int(threads, "threads", owner, low=1, allow_none=True) or default_threads
        _remove_orphaned_folders(Path(tempfile.gettempdir()))
        self._folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
        self._batch = 0
        self._processes: list = []
        try:
            model_dir = self._model_dir(model, tokenizer)
            light = dataclasses.replace(scores, activations=None, sample_text=None)  # pruning reads only the table
            with open(self._folder / _PAYLOAD_FILE, "wb") as fh:
                pickle.dump((light, calibration, encoded), fh, protocol=pickle.HIGHEST_PROTOCOL)
            context = mp.get_context("spawn")
            self._tasks, self._results = context.Queue(), context.Queue()
            for i, device in enumerate(self.devices):
                process = context.Process(
                    target=_worker, name=f"obce-plan-worker-{i}", daemon=True,
                    args=(i, str(device), self.threads if str(device) == "cpu" else 1, model_dir,
                          str(self._folder / _PAYLOAD_FILE), self._tasks, self._results, function),
                )
                process.start()
                self._processes.append(process)
        except BaseException:
            self.close(wait=False)
            raise

    def _model_dir(self, model, tokenizer) -> str:
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            if not path.is_dir():
                raise invalid("model", "PlanPool", "a task model's directory or a model object", str(model),
                              "Pass the folder the task model was saved in (config.json, weights, tokenizer).")
            return str(path.resolve())
        if tokenizer is None:
            raise invalid("tokenizer", "PlanPool", "the model's tokenizer when the model is an object", None,
                          "Pass tokenizer=..., so the workers can load the copy the pool saves.")
        target = self._folder / _MODEL_DIR
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        return str(target)

    @property
    def workers(self) -> int:
        return len(self._processes)

    def __len__(self) -> int:
        return self.workers

    def _check_alive(self) -> None:
        for process in self._processes:
            if not process.is_alive():
                code = process.exitcode
                self.close(wait=False)
                raise WorkerError(f"Worker {process.name} stopped (exit code {code}) before it finished: killed, or "
                                  "out of memory. Run with fewer workers, or a smaller evaluation split.")

    def evaluate(self, plans) -> list[dict]:
        """The ``evaluate_plan`` row of every plan, in the order given (see the module docstring)."""
        plans = list(plans)
        if not self._processes:
            raise WorkerError("This PlanPool is closed; make a new one.")
        self._batch += 1
        for position, plan in enumerate(plans):
            self._tasks.put((self._batch, position, plan.to_dict()))
        rows: dict[int, dict] = {}
        errors: dict[int, tuple[BaseException, str]] = {}
        while len(rows) + len(errors) < len(plans):
            try:
                kind, where, value, trace = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            if kind == "failed":  # a worker could not load: nothing it would have evaluated will come
                self.close(wait=False)
                raise value from WorkerError(trace)
            batch, position = where
            if batch != self._batch:
                continue  # a late answer of an earlier, abandoned call
            if kind == "row":
                rows[position] = value
            else:
                errors[position] = (value, trace)
        if errors:  # every answer of this call has come, so the pool stays usable
            exc, trace = errors[min(errors)]
            raise exc from WorkerError(f"in a worker, evaluating {plans[min(errors)].describe()}:\n{trace}")
        return [rows[i] for i in range(len(plans))]

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers (``wait``: let each finish its plan first, 30 s at most) and remove the temp folder."""
        processes, self._processes = self._processes, []
        if wait:
            for _ in processes:
                self._tasks.put(None)
            for process in processes:
                process.join(timeout=30)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        if processes:
            # Plans no worker will take must not hold this process at exit (the queue's feeder thread).
            self._tasks.cancel_join_thread()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> "PlanPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(wait=exc_type is None)

    def __del__(self):  # a pool dropped without close() must not leave processes behind
        if getattr(self, "_processes", None):
            self.close(wait=False)
