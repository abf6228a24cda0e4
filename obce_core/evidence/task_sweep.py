"""A threshold sweep of a saved task model, from its directory: what the CLI's ``sweep`` command and
the dashboard's "sweep" job both run.

``sweep_task_model`` loads the model, checks that it is a classifier for the task (its
``obce_task.json`` names the task it was fine-tuned on), scores ``score_texts`` training
sentences of the task (``task_scores``: ``score_model``, plus Fisher importance over labelled
training examples when the ``fisher`` scorer is asked for; both cached on disk), captures
calibration from the same sentences when the compensation fits with it, and runs
``threshold_sweep``. ``task_scores`` is also what a plan search ranks units with. ``sweep_summary``
turns its rows into mean ± std over seeds, and ``task_model_problem`` says, in one sentence with
the fix, why a model cannot be swept on a task.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from obce_core import glue
from obce_core.evidence.evaluation import encode_split, evaluate_encoded, predict_logits, score_interval
from obce_core.evidence.sweep import (DEFAULT_PERCENTILES, SWEEP_GROUPS, SWEEP_SCORERS, sweep_cache_path,
                                      sweep_points, threshold_sweep)
from obce_core.loading import load_model
from obce_core.pruning.calibration import capture_calibration
from obce_core.pruning.fisher import add_fisher, fisher_information
from obce_core.pruning.plan import SCORERS, PruningPlan
from obce_core.pruning.surgery import prune
from obce_core.scoring.scores import score_model
from obce_core.training.progress import PhaseEvent, StepEvent
from obce_core.training.task_models import read_task_model_info
from obce_core.training.trainer import check_head
from obce_core.validation import check_choice, check_int

__all__ = ["CALIBRATED_COMPENSATIONS", "TaskSweep", "score_plan", "sweep_summary", "sweep_task_model", "task_model_problem",
           "task_scores", "training_texts"]

# Compensations that fit on calibration tokens (without them ``auto`` is ``none``).
CALIBRATED_COMPENSATIONS = ("auto", "lsq", "token-mean", "sequential-lsq")

Progress = Callable[[object], None]


def task_model_problem(source: str, task: str) -> str | None:
    """Why ``source`` cannot be pruned and evaluated on ``task`` (None when it can)."""
    spec = glue.get_task(task)
    how = (f"Fine-tune one with `python -m obce_core finetune --task {spec.name} --out DIR` (or in the Task models "
           "section of the Model & data page) and load that directory.")
    path = Path(str(source)).expanduser()
    info = read_task_model_info(path) if path.is_dir() else None
    if info is None:
        return f"{source!r} is not a task model (no obce_task.json with the task it was fine-tuned on). {how}"
    if info.task != spec.name:
        return (f"{source!r} was fine-tuned on {info.task}, not {spec.name}: its head predicts {info.task}'s labels. "
                f"Sweep it on {info.task}, or load a task model fine-tuned on {spec.name}. {how}")
    return None


def score_plan(model, scores, plan, encoded, *, calibration=None, level: float = 0.95, resamples: int = 1000) -> dict:
    """The task score of ``prune(model, scores, plan, calibration=...)`` on ``encoded`` with a
    bootstrap interval: ``metrics`` (``main_score`` included), ``interval`` (``ScoreInterval``),
    ``compensations`` (what each layer got, from the report), ``params_total`` and ``eval_s``."""
    spec = glue.get_task(encoded.task)
    check_head(model, spec)
    start = time.perf_counter()
    pruned, report = prune(model, scores, plan, calibration=calibration)
    logits = predict_logits(pruned, encoded)
    metrics = glue.compute_metrics(spec, logits, encoded.labels)
    metrics["main_score"] = glue.main_score(spec, metrics)
    interval = score_interval(spec.name, logits, encoded.labels, level=level, resamples=resamples)
    return {"metrics": metrics, "interval": interval, "compensations": report.compensations,
            "params_total": report.params_after["total"], "eval_s": time.perf_counter() - start}


def training_texts(task: str, *, glue_dir: str | os.PathLike | None = None, n: int = 512, seed: int = 0) -> list:
    """``n`` inputs of ``task``'s TRAINING split drawn with ``seed`` (sentences, or pairs): what
    ``task_scores`` scores and what calibration is captured from. Never the dev split, which reports."""
    check_int(n, "n", "training_texts", low=2, fix="Give the number of training sentences to score, e.g. 512.")
    spec = glue.get_task(task)
    return glue.dataset_texts(glue.load_task(spec, "train", glue_dir, n=n, seed=seed), spec)


def task_scores(model, tokenizer, task: str, *, scorers=SWEEP_SCORERS, glue_dir: str | os.PathLike | None = None,
                score_texts: int = 512, score_seed: int = 0, fisher_examples: int = 512, max_length: int = 128,
                progress: Progress | None = None):
    """The ``NeuronScores`` a sweep or a plan search of a task model ranks units with.

    ``score_texts`` training sentences of ``task`` (``training_texts`` with ``score_seed``) scored
    at [CLS] by ``score_model`` (cached on disk); when ``"fisher"`` is among ``scorers``, plus the
    ``fisher`` column: ``fisher_information`` over ``fisher_examples`` LABELLED training examples
    drawn with the same seed (cached on disk too). ``model`` must be a classifier for ``task``
    when Fisher is asked for (checked before any scoring). ``progress`` receives a ``PhaseEvent``
    per phase. The dev split is never read.
    """
    owner = "task_scores"
    spec = glue.get_task(task)
    scorers = list(scorers)
    for s in scorers:
        check_choice(s, "scorers", owner, SCORERS)
    check_int(score_texts, "score_texts", owner, low=2)
    check_int(score_seed, "score_seed", owner, low=0)
    check_int(max_length, "max_length", owner, low=8, high=8192)
    with_fisher = "fisher" in scorers
    if with_fisher:
        check_int(fisher_examples, "fisher_examples", owner, low=1,
                  fix="Give the number of labelled training examples Fisher sums over, e.g. 512.")
        check_head(model, spec)  # before the scoring: Fisher needs the task's loss, so the task's head
    say = progress or (lambda event: None)
    say(PhaseEvent(f"scoring {score_texts} {spec.name} training sentences at [CLS]"))
    texts = training_texts(spec.name, glue_dir=glue_dir, n=score_texts, seed=score_seed)
    scores = score_model(model, tokenizer, texts, token="cls", max_length=max_length)
    if with_fisher:
        say(PhaseEvent(f"Fisher importance on {fisher_examples} labelled {spec.name} training examples"))
        table = fisher_information(model, tokenizer, spec.name, glue_dir=glue_dir, n=fisher_examples, seed=score_seed,
                                   max_length=max_length)
        scores = add_fisher(scores, table)
    return scores


@dataclass
class TaskSweep:
    """What ``sweep_task_model`` made: the rows, the unpruned model's score on the same examples,
    where the rows are cached, and what was evaluated."""

    table: pd.DataFrame
    original_score: float
    path: Path
    split: str
    n_eval: int
    subset: bool


def sweep_task_model(model_source: str, task: str, *, glue_dir: str | os.PathLike | None = None,
                     groups=SWEEP_GROUPS, percentiles=DEFAULT_PERCENTILES, scorers=SWEEP_SCORERS, seeds=(0, 1, 2),
                     skip_layers: int = 0, compensation: str | None = None, eval_size: int | None = None,
                     eval_seed: int = 0, score_texts: int = 512, score_seed: int = 0, fisher_examples: int = 512,
                     max_length: int = 128, device: str | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                     on_path: Callable[[Path], None] | None = None, workers: int = 1) -> TaskSweep:
    """Sweep the task model saved in ``model_source`` on ``task``'s dev split (see the module docstring).

    Units are ranked by ``task_scores`` (with the ``fisher`` column when ``"fisher"`` is among
    ``scorers``, summed over ``fisher_examples`` labelled training examples). ``progress``
    receives ``PhaseEvent`` per phase and ``StepEvent(done, total)`` per point (the events of
    ``obce_core.training``, so a job's status file follows it); ``on_path(path)`` is told the
    cache file before the first point. ``should_stop()`` ends early, keeping the rows.
    ``workers`` > 1 evaluates that many points at once in worker processes (``threshold_sweep``).
    """
    owner = "sweep_task_model"
    spec = glue.get_task(task)
    check_int(score_texts, "score_texts", owner, low=2)
    check_int(fisher_examples, "fisher_examples", owner, low=1)
    check_int(workers, "workers", owner, low=1, fix="1 evaluates the points in this process, one after another.")
    sweep_points(groups, percentiles, scorers, seeds, owner)  # bad settings fail here, before the model loads
    problem = task_model_problem(model_source, spec.name)
    if problem:
        raise ValueError(problem)
    say = progress or (lambda event: None)
    say(PhaseEvent(f"loading {model_source}"))
    model, tokenizer = load_model(model_source, device=device)
    scores = task_scores(model, tokenizer, spec.name, scorers=scorers, glue_dir=glue_dir, score_texts=score_texts,
                         score_seed=score_seed, fisher_examples=fisher_examples, max_length=max_length, progress=say)
    plan_compensation = PruningPlan(**({} if compensation is None else {"compensation": compensation})).compensation
    calibration = None
    if plan_compensation in CALIBRATED_COMPENSATIONS:
        say(PhaseEvent(f"capturing calibration for '{plan_compensation}' on the same sentences"))
        texts = training_texts(spec.name, glue_dir=glue_dir, n=score_texts, seed=score_seed)
        calibration = capture_calibration(model, tokenizer, texts, max_length=max_length)
    say(PhaseEvent(f"tokenizing {spec.name} dev"))
    encoded = encode_split(tokenizer, spec.name, glue_dir=glue_dir, eval_size=eval_size, seed=eval_seed,
                           max_length=max_length)
    path = sweep_cache_path(model, scores, encoded, skip_layers=skip_layers, compensation=compensation,
                            calibration=calibration, cache_dir=cache_dir)
    if on_path is not None:
        on_path(path)
    say(PhaseEvent(f"sweeping {spec.name} on {encoded.describe()}"
                   + (f" with {workers} workers" if workers > 1 else "")))
    table = threshold_sweep(model, tokenizer, scores, spec.name, groups=groups, percentiles=percentiles,
                            scorers=scorers, seeds=seeds, skip_layers=skip_layers, compensation=compensation,
                            encoded=encoded, calibration=calibration, cache_dir=cache_dir,
                            progress=lambda done, total, row: say(StepEvent(done, total)), should_stop=should_stop,
                            workers=workers)
    at_zero = table[table["percentile"] == 0] if len(table) else table
    original = float(at_zero["main_score"].iloc[0]) if len(at_zero) else float(evaluate_encoded(model, encoded)["main_score"])
    return TaskSweep(table=table, original_score=original, path=path, split=encoded.split, n_eval=encoded.n,
                     subset=encoded.is_subset)


def sweep_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (population std over seeds; 0 for one seed) and number of seeds of ``main_score``
    per group, scorer and percentile, in the sweep's order."""
    if table.empty:
        return pd.DataFrame(columns=["group", "scorer", "percentile", "mean", "std", "seeds"])
    grouped = table.groupby(["group", "scorer", "percentile"], sort=False)["main_score"]
    return grouped.agg(mean="mean", std=lambda s: float(s.std(ddof=0)), seeds="count").reset_index()
