"""The worker: ``run_job`` runs one job folder in THIS process, and ``main`` is its command line
(``python -m obce_core.jobs run <job_dir>``, what ``start_job`` launches; the CLI calls ``run_job``
directly).

A GLUE job runs a protocol per task with the results store as its memory; a finetune job runs
``finetune_task_model``; a sweep job runs ``obce_core.evidence.sweep_task_model`` (its rows cached
per point, the cache file named in ``status.output``). A job first waits for its turn in the
workspace's queue (``queue.wait_for_turn``). Progress events become ``status.json`` (rewritten at
most every half second, and at every phase) with whole-job progress from ``progress.JobClock``;
the ``cancel`` flag file, or SIGTERM in a worker, stops the job between training steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from transformers.utils import logging as hf_logging

from obce_core import glue
from obce_core.io import append_json_line
from obce_core.evidence.task_sweep import sweep_task_model
from obce_core.jobs.progress import JobClock, planned_runs
from obce_core.jobs.queue import overlapping_jobs, wait_for_turn
from obce_core.jobs.spec import FinetuneJobSpec, JobSpec, SearchJobSpec, SweepJobSpec, read_spec
from obce_core.jobs.status import CANCEL_FILE, PID_FILE, SPEC_FILE, JobStatus, job_dir, now, read_status, write_status
from obce_core.results import STORE_FILE, ResultsStore
from obce_core.scoring.scores import NeuronScores, score_model
from obce_core.search.report import SEARCH_REPORT_FILE, SearchReport
from obce_core.search.task_search import search_task_model
from obce_core.training import (
    PhaseEvent,
    Progress,
    ProgressEvent,
    ResultEvent,
    RunResult,
    StepEvent,
    TrainingCancelled,
    finetune_task_model,
    run_finetuned_protocol,
    run_paper_protocol,
)
from obce_core.training.recovery import recovery_started

__all__ = ["JobCancelled", "main", "run_job"]

_STATUS_MIN_INTERVAL_S = 0.5


class JobCancelled(TrainingCancelled):
    """The worker got SIGTERM (cancel_job's escalation)."""


def _scores_provider(spec: JobSpec, task: str):
    """``None`` (no plan), the scores file, or a callable scoring the task's training sentences."""
    if spec.plan is None:
        return None
    if spec.scores is not None:
        return NeuronScores.from_parquet(spec.scores)

    def score(model, tokenizer):
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


class _StatusWriter:
    """Turns progress events into ``status.json`` updates (throttled), then passes them on."""

    def __init__(self, folder: Path, status: JobStatus, progress: Progress | None, clock: JobClock):
        self.folder, self.status, self.progress, self.clock = folder, status, progress, clock
        self.last_write = 0.0
        self.run_began = time.time()
        status.run, status.runs = clock.run, clock.runs

    def _check_contention(self, result) -> None:
        """Mark a run's result when another job ran at some moment of it (its latency is then unsure)."""
        if result.id is None or result.from_store:
            return
        try:
            others = overlapping_jobs(self.folder, self.run_began)
        except (OSError, ValueError):  # a damaged job folder beside this one must not fail the job
            others = []
        if others:
            self.status.contended_ids.append(int(result.id))

    def __call__(self, event: ProgressEvent) -> None:
        status, force = self.status, False
        self.clock(event)
        if isinstance(event, (PhaseEvent, ResultEvent)):
            status.phase, force = event.phase, True
            status.step = status.max_steps = status.loss = status.eta_s = None
        if isinstance(event, StepEvent):
            status.step, status.max_steps, status.loss, status.eta_s = event.step, event.max_steps, event.loss, event.eta_s
            force = event.step in (1, event.max_steps)
        if isinstance(event, ResultEvent) and event.result.id is not None:
            status.result_ids.append(int(event.result.id))
            if event.result.from_store:
                status.from_store_ids.append(int(event.result.id))
            self._check_contention(event.result)
        if isinstance(event, ResultEvent):
            self.run_began = time.time()
        status.run, status.runs, status.job_eta_s = self.clock.run, self.clock.runs, self.clock.eta_s()
        if force or time.monotonic() - self.last_write >= _STATUS_MIN_INTERVAL_S:
            write_status(self.folder, status)
            self.last_write = time.monotonic()
        if self.progress is not None:
            self.progress(event)


def _run_glue(spec: JobSpec, folder: Path, status: JobStatus, on_event, should_stop) -> list[RunResult]:
    # Opened here, inside run_job's try: a damaged store fails the job with its reason.
    store = _JobStore(ResultsStore(folder.parent.parent / STORE_FILE), folder.name)
    results: list[RunResult] = []
    for task in spec.tasks:
        status.task = task
        write_status(folder, status)
        common = dict(glue_dir=spec.glue_dir, device=spec.device, progress=on_event, should_stop=should_stop,
                      store=store)
        scores = _scores_provider(spec, task)
        if spec.protocol == "paper":
            out = run_paper_protocol(spec.model, scores, spec.plan, task, spec.recipe_for(task), distill=spec.distill,
                                     **common)
        else:
            out = run_finetuned_protocol(spec.model, scores, spec.plan, task, spec.recipe_for(task),
                                         spec.recover_steps, **common)
        results.extend(out.values())
    return results


def _run_finetune(spec: FinetuneJobSpec, folder: Path, status: JobStatus, on_event, should_stop):
    status.task, status.output = spec.task, spec.out
    write_status(folder, status)
    return finetune_task_model(spec.task, spec.out, model=spec.model, recipe=spec.recipe, teacher=spec.teacher,
                               glue_dir=spec.glue_dir, device=spec.device, progress=on_event, should_stop=should_stop,
                               overwrite=spec.overwrite)


def _run_sweep(spec: SweepJobSpec, folder: Path, status: JobStatus, on_event, should_stop):
    status.task = spec.task
    write_status(folder, status)

    def on_path(path: Path) -> None:
        status.output = str(path)  # where the page reads the rows, finished ones included
        write_status(folder, status)

    swept = sweep_task_model(
        spec.model, spec.task, glue_dir=spec.glue_dir, groups=spec.groups, percentiles=spec.percentiles,
        scorers=spec.scorers, seeds=spec.seeds, skip_layers=spec.skip_layers, compensation=spec.compensation,
        eval_size=spec.eval_size, eval_seed=spec.eval_seed, score_texts=spec.score_texts, score_seed=spec.score_seed,
        max_length=spec.max_length, device=spec.device, progress=on_event, should_stop=should_stop, on_path=on_path,
    )
    if should_stop():
        raise TrainingCancelled(f"Cancelled after {len(swept.table)} sweep points; they are kept in {swept.path}.")
    return swept


# The trail of a search job: one JSON line per evaluated plan, which the Prune page draws while it runs.
SEARCH_ROWS_FILE = "search_rows.jsonl"


def _run_search(spec: SearchJobSpec, folder: Path, status: JobStatus, on_event, should_stop):
    status.task, status.output = spec.task, str(folder / SEARCH_ROWS_FILE)
    write_status(folder, status)
    rows = folder / SEARCH_ROWS_FILE
    rows.unlink(missing_ok=True)  # a rerun of this job starts its trail again (its cached rows answer at once)

    def on_row(row: dict) -> None:
        append_json_line(rows, row, sort_keys=False)

    if spec.recover and recovery_started(spec.recovered_out()) and (Path(spec.out) / SEARCH_REPORT_FILE).is_file():
        report = SearchReport.from_json(Path(spec.out) / SEARCH_REPORT_FILE)  # cancelled while recovering: resume that
    else:
        report = search_task_model(spec.model, spec.task, spec.out, spec.settings, glue_dir=spec.glue_dir,
                                   search_size=spec.search_size, search_seed=spec.search_seed,
                                   score_texts=spec.score_texts, fisher_examples=spec.fisher_examples,
                                   device=spec.device, overwrite=spec.overwrite, progress=on_event,
                                   should_stop=should_stop, on_row=on_row)
    if spec.recover:
        on_event(PhaseEvent(f"recovering the found plan from {spec.model} into {spec.recovered_out()}"))
        info = finetune_task_model(spec.task, spec.recovered_out(), model=spec.out, teacher=spec.model,
                                   glue_dir=spec.glue_dir, device=spec.device, progress=on_event,
                                   should_stop=should_stop, overwrite=spec.overwrite)
        on_event(PhaseEvent(f"recovered into {spec.recovered_out()}: dev main score {100 * info.main_score:.2f} "
                            f"({info.train_steps} steps)"))
    return report


_RUNNERS = {JobSpec: _run_glue, FinetuneJobSpec: _run_finetune, SweepJobSpec: _run_sweep, SearchJobSpec: _run_search}


def run_job(job, *, progress: Progress | None = None):
    """Run a created job in THIS process and return what it made (the worker's body; the CLI's too).

    A GLUE job returns its ``RunResult`` list (each run also in ``<workspace>/results.sqlite``;
    runs already stored are answered from it); a finetune job returns the ``TaskModelInfo`` of the
    saved model; a sweep job its ``TaskSweep``; a search job its ``SearchReport``. Writes ``status.json`` as it goes; ``progress`` receives the same events.
    Cancelling (the flag file, or SIGTERM in a worker) ends with state ``cancelled`` and raises
    ``TrainingCancelled``; any other error (a damaged results store included) ends with state
    ``failed``, its reason in ``status.error``, and is re-raised.
    """
    folder = job_dir(job)
    spec = read_spec(folder / SPEC_FILE)
    status = read_status(folder)
    status.pid, status.error = os.getpid(), None
    try:
        status.detached = json.loads((folder / PID_FILE).read_text()).get("pid") == os.getpid()
    except (OSError, ValueError):
        status.detached = False
    write_status(folder, status)
    cancel_flag = folder / CANCEL_FILE

    def should_stop() -> bool:
        return cancel_flag.exists()

    try:
        if should_stop():
            raise TrainingCancelled("Cancelled before the job started.")
        wait_for_turn(folder, status, should_stop)
        status.state, status.started_at, status.phase = "running", now(), None
        on_event = _StatusWriter(folder, status, progress, JobClock(planned_runs(spec)))
        write_status(folder, status)
        run = _RUNNERS[type(spec)]
        made = run(spec, folder, status, on_event, should_stop)
        status.state, status.phase = "done", "done"
        return made
    except TrainingCancelled as exc:
        status.state, status.error = "cancelled", str(exc)
        raise
    except KeyboardInterrupt:
        status.state, status.error = "cancelled", "Cancelled: interrupted (Ctrl-C)."
        raise
    except BaseException as exc:
        status.state = "failed"
        status.error = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        status.finished_at = now()
        status.step = status.max_steps = status.eta_s = status.job_eta_s = None
        write_status(folder, status)


def main(argv=None) -> int:
    """``python -m obce_core.jobs run <job_dir>``: 0 done, 3 cancelled, 1 failed (traceback in the log)."""
    parser = argparse.ArgumentParser(prog="python -m obce_core.jobs", description="obce job worker")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job folder made by create_job/start_job")
    run.add_argument("job_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()

    def on_sigterm(signum, frame):
        raise JobCancelled("Cancelled: the worker received SIGTERM.")

    def report(event: ProgressEvent) -> None:
        if isinstance(event, (PhaseEvent, ResultEvent)):
            print(f"[{now()}] {event.phase}", flush=True)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run_job(args.job_dir, progress=report)
    except TrainingCancelled as exc:
        print(f"cancelled: {exc}", flush=True)
        return 3
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the entry point is python -m obce_core.jobs
    sys.exit(main())
