"""Durations measured on THIS machine for THIS model, remembered, and the estimates built from them.

Every duration obce shows before work starts is ``seconds measured here x (units of work) x the
load now / the load then``:

* ``MachineLoad``: the 1-minute load average and the cores. A job that wants ``threads`` cores
  while others keep ``load`` of them busy gets ``cores / (load + threads)`` of what it wants, so
  its time scales by ``slowdown = max(1, (load + threads) / cores)``. A measurement is stored as
  its quiet-machine equivalent (divided by the slowdown when it was taken) and an estimate
  multiplies it by the slowdown now.
* ``StepTimes``: the store, one JSON file in the cache folder (``$OBCE_CACHE_DIR/step_times.json``),
  keyed by model fingerprint, device (``device_key``: CPU model, cores, torch threads) and what was
  measured (``train_step:sst2:b32:l64:grouped``, ``eval_example:sst2:l64``, ``model_load``,
  ``job_start``, ``labelfree_point``...), the median of the last few measurements of each. Written
  atomically under a lock.
* ``calibrate_finetune``: a short calibration on the real thing: load the model as a fine-tune does
  (timed), run a few optimizer steps of real training batches of the task (padded per batch, as
  the trainer's collator does; length-grouped when the recipe groups) after one warm-up step, and
  evaluate one batch of dev examples. ``time_job_start`` times a fresh Python importing what a
  job's worker imports (once per machine).
* ``Estimate``: seconds, the parts they add up from, and where the figures came from; ``text()``
  says it is an estimate.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from obce_core import glue
from obce_core.io import write_text_atomic
from obce_core.loading import load_model, model_fingerprint
from obce_core.scoring.scores import default_cache_dir
from obce_core.training.recipe import Recipe
from obce_core.training.task_models import task_model_info
from obce_core.training.trainer import measure_latency

__all__ = ["Estimate", "MachineLoad", "StepTimes", "calibrate_finetune", "compare_latency", "device_key", "eval_example_name",
           "time_job_start", "train_step_name"]

STORE_FILE = "step_times.json"
HISTORY = 5  # measurements of one thing kept; their median is what estimates use
_LOCK = threading.Lock()


@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine is: ``load`` (1-minute load average) on ``cores`` logical CPUs."""

    load: float
    cores: int

    @classmethod
    def now(cls) -> "MachineLoad":
        try:
            load = os.getloadavg()[0]
        except OSError:  # not on this platform: assume a quiet machine, and say so in the text
            load = 0.0
        return cls(load=float(load), cores=os.cpu_count() or 1)

    def slowdown(self, threads: int | None = None) -> float:
        """How much longer work wanting ``threads`` cores (torch's threads) takes than on a quiet machine."""
        threads = threads or torch.get_num_threads()
        return max(1.0, (self.load + min(threads, self.cores)) / self.cores)

    def describe(self) -> str:
        return f"load {self.load:.1f} on {self.cores} cores"


def device_key(device: str | torch.device | None = None) -> str:
    """What a step time depends on besides the model: the device and, on a CPU, its threads."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{os.cpu_count()}cores:{torch.get_num_threads()}threads"


def train_step_name(recipe: Recipe, task: str) -> str:
    return f"train_step:{glue.get_task(task).name}:b{recipe.batch_size}:l{recipe.max_length}" + \
        (":grouped" if recipe.group_by_length else "")


def eval_example_name(recipe: Recipe, task: str) -> str:
    return f"eval_example:{glue.get_task(task).name}:l{recipe.max_length}"


@dataclass
class Estimate:
    """An ESTIMATED duration: ``seconds``, the ``parts`` (name -> seconds) it adds up from, and
    ``basis`` (what was measured where, and the load now)."""

    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    basis: str = ""

    def text(self) -> str:
        s = self.seconds
        when = f"{s / 60:.0f} min" if s >= 600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")
        return f"about {when} (an ESTIMATE: {self.basis})" if self.basis else f"about {when} (an ESTIMATE)"


class StepTimes:
    """The store of measured times (see the module docstring). ``clock`` and ``load`` are for tests."""

    def __init__(self, path: str | os.PathLike | None = None, *, load: Callable[[], MachineLoad] | None = None):
        self.path = Path(path) if path is not None else default_cache_dir() / STORE_FILE
        self.load = load or (lambda: MachineLoad.now())

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # nothing measured yet (or a broken file: measured again, then rewritten)
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _key(model: str, device: str) -> str:
        return f"{model}|{device}"

    def remember(self, model: str, device: str, name: str, seconds: float, *, load: MachineLoad | None = None,
                 threads: int | None = None) -> float:
        """Store ``seconds`` measured under ``load`` (default: now) as its quiet-machine equivalent;
        returns the figure estimates now use: the median of the last ``HISTORY`` such equivalents."""
        load = load or self.load()
        quiet = float(seconds) / load.slowdown(threads)
        with _LOCK:
            data = self._read()
            entries = data.setdefault(self._key(model, device), {})
            # the median of the last few: one measurement on a busy machine is noisy
            history = [*entries.get(name, {}).get("history", []), quiet][-HISTORY:]
            entries[name] = {"quiet_s": statistics.median(history), "history": history, "measured_s": float(seconds),
                             "load": load.load, "cores": load.cores,
                             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_text_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))
        return entries[name]["quiet_s"]

    def entry(self, model: str, device: str, name: str) -> dict | None:
        return self._read().get(self._key(model, device), {}).get(name)

    def seconds(self, model: str, device: str, name: str, *, load: MachineLoad | None = None,
                threads: int | None = None) -> float | None:
        """The time of ``name`` for ``model`` on ``device`` under ``load`` (default: now), or None
        when it was never measured."""
        found = self.entry(model, device, name)
        if found is None:
            return None
        return float(found["quiet_s"]) * (load or self.load()).slowdown(threads)

    def has(self, model: str, device: str, *names: str) -> bool:
        entries = self._read().get(self._key(model, device), {})
        return all(n in entries for n in names)


def _training_batches(tokenizer, task: str, recipe: Recipe, batches: int, glue_dir=None) -> list[dict]:
    """``batches`` real training batches of ``task`` as the trainer makes them: truncated at
    ``max_length``, padded to the batch's longest, of similar lengths when the recipe groups."""
    spec = glue.get_task(task)
    n = recipe.batch_size * batches
    data = glue.load_task(spec, "train", glue_dir, n=n * (4 if recipe.group_by_length else 1), seed=recipe.seed)
    rows = list(zip(glue.dataset_texts(data, spec), data["label"]))
    if recipe.group_by_length:  # the length-grouped sampler draws neighbours in length: pad like it
        rows = sorted(rows, key=lambda r: len(str(r[0])))[::4][:n]
    texts, labels = [r[0] for r in rows], [r[1] for r in rows]
    out = []
    for k in range(batches):
        chunk = texts[k * recipe.batch_size:(k + 1) * recipe.batch_size]
        columns = list(zip(*chunk)) if isinstance(chunk[0], (tuple, list)) else [chunk]
        enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=recipe.max_length, padding=True,
                        return_tensors="pt")
        dtype = torch.float32 if spec.is_regression else torch.long
        enc["labels"] = torch.tensor(labels[k * recipe.batch_size:(k + 1) * recipe.batch_size], dtype=dtype)
        out.append(dict(enc))
    return out


def calibrate_finetune(source: str, task: str, recipe: Recipe, *, store: StepTimes | None = None, steps: int = 3,
                       glue_dir=None, device: str | None = None, clock: Callable[[], float] = time.perf_counter,
                       progress: Callable[[int, int, str], None] | None = None,
                       model_key: str | None = None) -> dict[str, float]:
    """Measure on this machine what a fine-tune of ``source`` on ``task`` under ``recipe`` costs
    per unit: loading the model (``model_load``), one optimizer step (``train_step_name``, the
    median of ``steps`` after one warm-up step) and one evaluated dev example
    (``eval_example_name``); remember them in ``store`` under the model's fingerprint; return
    the measured seconds by name (``model_key``: the fingerprint of the model as the caller loaded
    it, default this load's). A few seconds of work for all-MiniLM on a quiet CPU. A task model keeps
    its head, as a fine-tune of it does."""
    store = store or StepTimes()
    say = progress or (lambda done, total, text: None)
    spec = glue.get_task(task)
    say(0, steps + 3, "loading the model")
    start = clock()
    keep_head = source != "default" and task_model_info(source) is not None
    model, tokenizer = load_model(source, num_labels=spec.num_labels,
                                  classifier_pooling=None if keep_head else recipe.pooling, device=device)
    load_s = clock() - start
    load = store.load()  # before our own work raises it
    model_key = model_key or model_fingerprint(model)  # before the steps below change its weights
    net = model  # loaded here, for this calibration alone: training it changes nothing shared
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.learning_rate)
    dev = next(net.parameters()).device
    batches = _training_batches(tokenizer, task, recipe, steps + 1, glue_dir)
    times = []
    for k, batch in enumerate(batches):
        say(1 + k, steps + 3, f"training step {k + 1} of {steps + 1}")
        start = clock()
        loss = net(**{name: t.to(dev) for name, t in batch.items()}).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k:  # the first step allocates the optimizer's state and warms the kernels
            times.append(clock() - start)
    step_s = sorted(times)[len(times) // 2]
    say(steps + 2, steps + 3, "evaluating dev examples")
    net.eval()
    eval_recipe = recipe.replace(batch_size=recipe.eval_batch_size, group_by_length=False)
    (batch,) = _training_batches(tokenizer, task, eval_recipe, 1, glue_dir)
    batch.pop("labels")
    with torch.inference_mode():
        net(**{name: t.to(dev) for name, t in batch.items()})  # warm-up at this shape
        start = clock()
        net(**{name: t.to(dev) for name, t in batch.items()})
        example_s = (clock() - start) / len(batch["input_ids"])
    where = device_key(dev)
    measured = {"model_load": load_s, train_step_name(recipe, spec.name): step_s,
                eval_example_name(recipe, spec.name): example_s}
    for name, seconds in measured.items():
        store.remember(model_key, where, name, seconds, load=load)
    say(steps + 3, steps + 3, "done")
    return measured


JOB_START_CODE = "import obce_core.jobs.worker"  # what ``python -m obce_core.jobs run`` imports first


def time_job_start(*, store: StepTimes | None = None, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds a fresh Python takes to import a job worker's modules on this machine (remembered
    for every model under ``model="*"``)."""
    store = store or StepTimes()
    load = store.load()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    start = clock()
    subprocess.run([sys.executable, "-c", JOB_START_CODE], check=True, env=env, capture_output=True, timeout=600)
    seconds = clock() - start
    store.remember("*", device_key(), "job_start", seconds, load=load, threads=1)
    return seconds


def compare_latency(original, pruned, tokenizer, texts, *, rounds: int = 7, batch_size: int = 32,
                    max_length: int = 128, measure: Callable[..., float] | None = None,
                    load: Callable[[], MachineLoad] | None = None) -> dict:
    """Forward-pass latency of ``pruned`` against ``original`` measured here: ``rounds`` rounds,
    each timing one batch of ``texts`` through the original and then the pruned model
    (``trainer.measure_latency``, one warm-up pass each), so a change of the machine's load
    touches both alike; the medians, their ratio and the load before and after."""
    measure = measure or measure_latency
    load = load or MachineLoad.now
    before = load()
    original_ms, pruned_ms = [], []
    for _ in range(rounds):
        original_ms.append(measure(original, tokenizer, texts, batch_size=batch_size, max_length=max_length, repeats=1))
        pruned_ms.append(measure(pruned, tokenizer, texts, batch_size=batch_size, max_length=max_length, repeats=1))
    after = load()
    orig, new = sorted(original_ms)[rounds // 2], sorted(pruned_ms)[rounds // 2]
    return {"original_ms": orig, "pruned_ms": new, "speedup": orig / new, "rounds": rounds,
            "batch": min(batch_size, len(list(texts))), "max_length": max_length,
            "original_runs": original_ms, "pruned_runs": pruned_ms, "load_before": before, "load_after": after}
