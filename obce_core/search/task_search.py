"""A plan search of a saved task model, from its directory to an output folder: what the CLI's
``search`` command and the dashboard's "search" job both run.

``search_task_model`` checks everything first (the output folder, the task model and its task,
the local data, the settings), then scores the task's training sentences (``task_scores``, with
Fisher when the scorer is ``fisher``), captures calibration for the fitted compensations, encodes
the SEARCH split (``search_size`` training examples drawn with ``search_seed``) and a smaller
sensitivity split, runs ``search_plan``, and only then reads the dev split, to report the found
plan's score on it. The output folder holds the pruned model (``save_pruned``: reloads with
``load_model``, its plan with ``load_plan``) and ``search_report.json`` (``SearchReport``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from obce_core import glue
from obce_core.evidence.evaluation import encode_split
from obce_core.evidence.parallel import PlanPool
from obce_core.evidence.task_sweep import CALIBRATED_COMPENSATIONS, task_model_problem, task_scores, training_texts
from obce_core.io import JsonDataclass, check_output_path
from obce_core.loading import load_model
from obce_core.pruning.calibration import capture_calibration
from obce_core.pruning.files import is_obce_saved, save_pruned
from obce_core.loading import model_fingerprint
from obce_core.pruning.fisher import fisher_fingerprint
from obce_core.pruning.surgery import prune
from obce_core.scoring import default_cache_dir
from obce_core.search.algorithm import SearchSettings, search_plan
from obce_core.search.measure import task_metrics
from obce_core.search.cost import COST_LABELS, PlanCost, measure_latency_table
from obce_core.training.progress import PhaseEvent, StepEvent, TrainingCancelled
from obce_core.training.trainer import head_fingerprint, measure_latency
from obce_core.validation import check_int

__all__ = ["SEARCH_REPORT_FILE", "SearchReport", "default_search_dir", "read_search_report", "search_task_model"]

SEARCH_REPORT_FILE = "search_report.json"


@dataclass
class SearchReport(JsonDataclass):
    """What a search found and how: ``search_*`` scores are on the search split (training data),
    ``dev_*`` on the task's whole dev split, read only after the search; ``rows``: every plan the
    search evaluated (phase, plan, metrics, cost), in order."""

    _json_name = "search report"

    task: str
    model: str
    num_layers: int
    settings: SearchSettings
    search_split: str
    sensitivity_split: str
    cost_label: str
    cost_before: float
    cost_after: float
    cost_removed: float
    params_before: int
    params_after: int
    search_original: dict
    search_found: dict
    dev_original: dict
    dev_found: dict
    seconds_search: float
    seconds_total: float
    stopped: str | None
    plan: dict
    rows: list = field(default_factory=list)
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    created_at: str = ""

    def __post_init__(self):
        if isinstance(self.settings, dict):
            self.settings = SearchSettings.from_dict(self.settings)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["settings"] = self.settings.to_dict()
        return data

    def summary(self) -> str:
        points = 100 * (self.dev_found["main_score"] - self.dev_original["main_score"])
        return (f"{self.task}: {100 * self.cost_removed:.1f} % of {self.cost_label} removed; search split "
                f"{100 * self.search_found['main_score']:.2f} vs {100 * self.search_original['main_score']:.2f}, dev "
                f"{100 * self.dev_found['main_score']:.2f} vs {100 * self.dev_original['main_score']:.2f} ({points:+.2f} "
                f"points); {len(self.rows)} plans evaluated in {self.seconds_search:.0f} s")


def read_search_report(directory: str | os.PathLike) -> SearchReport:
    """The ``SearchReport`` saved in a search's output folder."""
    path = Path(directory).expanduser() / SEARCH_REPORT_FILE
    if not path.is_file():
        raise ValueError(f"No {SEARCH_REPORT_FILE} in {str(directory)!r}: expected the output folder of "
                         "`python -m obce_core search`.")
    return SearchReport.from_json(path)


def default_search_dir() -> Path:
    """Where search rows are cached (``<OBCE_CACHE_DIR>/searches``), so a rerun resumes."""
    return Path(default_cache_dir()) / "searches"


def _row_cache(model, scores, calibration, search, sensitivity, compensation: str, cache_dir) -> Path:
    data = {"format": 1, "model": model_fingerprint(model), "head": head_fingerprint(model),
            "scores": [scores.model_fingerprint, scores.texts_fingerprint, scores.settings.to_dict(),
                       fisher_fingerprint(scores)],
            "splits": [[s.task, s.split, s.eval_size, s.seed, s.max_length] for s in (search, sensitivity)],
            "compensation": compensation,
            "calibration": None if calibration is None else [calibration.model_fingerprint, calibration.n_texts]}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir or default_search_dir()) / f"{key}.jsonl"


def search_task_model(model_source: str, task: str, out: str | os.PathLike, settings: SearchSettings, *,
                      glue_dir: str | os.PathLike | None = None, search_size: int = 1000, search_seed: int = 1,
                      sensitivity_size: int = 512, score_texts: int = 512, score_seed: int = 0,
                      fisher_examples: int = 512, max_length: int = 128, device: str | None = None,
                      workers: int = 1, overwrite: bool = False, cache_dir: str | os.PathLike | None = None,
                      progress: Callable[[object], None] | None = None, should_stop: Callable[[], bool] | None = None,
                      on_row: Callable[[dict], None] | None = None, on_cache: Callable[[Path], None] | None = None
                      ) -> SearchReport:
    """Search the smallest plan of the task model in ``model_source`` and save it to ``out``
    (see the module docstring). ``progress`` receives ``PhaseEvent``s and ``StepEvent(done, total)``
    per evaluated plan; ``on_cache(path)`` is told the row cache before the first evaluation.
    ``should_stop()`` cancels: ``TrainingCancelled`` is raised, nothing is saved, and the rows stay
    in the cache, so the same search run again resumes. A search that reaches ``time_budget_s``
    saves its best plan so far and says so (``stopped``)."""
    owner = "search_task_model"
    begin = time.perf_counter()
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"settings must be SearchSettings, got {type(settings).__name__}.")
    spec = glue.get_task(task)
    for name, value, low in (("search_size", search_size, 10), ("sensitivity_size", sensitivity_size, 10),
                             ("search_seed", search_seed, 0), ("score_texts", score_texts, 2),
                             ("fisher_examples", fisher_examples, 1), ("workers", workers, 1)):
        check_int(value, name, owner, low=low)
    target = check_output_path(out, overwrite=overwrite, kind="dir", may_replace=is_obce_saved)
    problem = task_model_problem(model_source, spec.name)
    if problem:
        raise ValueError(problem)
    dev = next(s for s in spec.splits if s.startswith("validation"))
    glue.check_local_splits(glue_dir, {spec.name: ["train", dev]})
    say = progress or (lambda event: None)

    say(PhaseEvent(f"loading {model_source}"))
    model, tokenizer = load_model(model_source, device=device)
    scores = task_scores(model, tokenizer, spec.name, scorers=[settings.scorer], glue_dir=glue_dir,
                         score_texts=score_texts, score_seed=score_seed, fisher_examples=fisher_examples,
                         max_length=max_length, progress=say)
    calibration = None
    if settings.compensation in CALIBRATED_COMPENSATIONS:
        say(PhaseEvent(f"capturing calibration for '{settings.compensation}' on the scoring sentences"))
        texts = training_texts(spec.name, glue_dir=glue_dir, n=score_texts, seed=score_seed)
        calibration = capture_calibration(model, tokenizer, texts, max_length=max_length)
    say(PhaseEvent(f"tokenizing the search split ({search_size} {spec.name} training examples, seed {search_seed})"))
    search = encode_split(tokenizer, spec.name, split="train", glue_dir=glue_dir, eval_size=search_size,
                          seed=search_seed, max_length=max_length)
    sensitivity = encode_split(tokenizer, spec.name, split="train", glue_dir=glue_dir,
                               eval_size=min(sensitivity_size, search_size), seed=search_seed + 1, max_length=max_length)
    latency_table = None
    if settings.cost == "latency":
        latency_texts = training_texts(spec.name, glue_dir=glue_dir, n=32, seed=search_seed)
        say(PhaseEvent("measuring latency per group and percentile"))
        latency_table = measure_latency_table(model, tokenizer, scores, latency_texts, settings.levels,
                                              max_length=max_length,
                                              progress=lambda d, t: say(StepEvent(d, t)))
    cost = PlanCost.for_model(model, settings.cost, latency_table=latency_table)
    cache = _row_cache(model, scores, calibration, search, sensitivity, settings.compensation, cache_dir)
    if on_cache is not None:
        on_cache(cache)

    with ExitStack() as stack:
        pools: dict[int, PlanPool] = {}

        def in_workers(plans, encoded):  # one pool per encoded split, started when first needed
            if id(encoded) not in pools:
                pools[id(encoded)] = stack.enter_context(PlanPool(
                    model, scores, encoded, calibration=calibration, tokenizer=tokenizer, workers=workers,
                    function="obce_core.search.measure:measure_plan"))
            return pools[id(encoded)].evaluate(plans)
        say(PhaseEvent(f"searching: {spec.name}, tolerance {settings.tolerance:g} point(s), scorer {settings.scorer}"))
        result = search_plan(model, scores, search, settings, sensitivity=sensitivity, calibration=calibration,
                             cost=cost, cache_path=cache, should_stop=should_stop, on_row=on_row,
                             measure=in_workers if workers > 1 else None,
                             progress=lambda done, total, phase: say(StepEvent(done, total)))

    if result.stopped == "cancelled":
        raise TrainingCancelled(f"Search cancelled after {len(result.rows)} plans; they are kept in {cache}, so the "
                                "same search run again resumes where it stopped.")
    # Only now the dev split: it reports the plan, it never chose it.
    say(PhaseEvent(f"evaluating the found plan on {spec.name} dev"))
    pruned, pruning_report = prune(model, scores, result.plan, calibration=calibration)
    dev_split = encode_split(tokenizer, spec.name, glue_dir=glue_dir, max_length=max_length)
    dev_original, dev_found = task_metrics(model, dev_split), task_metrics(pruned, dev_split)
    latency = (None, None)
    if settings.cost == "latency":
        latency = (measure_latency(model, tokenizer, latency_texts, max_length=max_length),
                   measure_latency(pruned, tokenizer, latency_texts, max_length=max_length))
    report = SearchReport(
        task=spec.name, model=str(model_source), num_layers=len(cost.shapes), settings=settings, search_split=search.describe(),
        sensitivity_split=sensitivity.describe(), cost_label=COST_LABELS[settings.cost],
        cost_before=cost.unpruned(), cost_after=cost.of(result.plan), cost_removed=result.best["cost_removed"],
        params_before=int(pruning_report.params_before["total"]), params_after=int(pruning_report.params_after["total"]),
        search_original=_metrics(result.original), search_found=_metrics(result.best), dev_original=dev_original,
        dev_found=dev_found, seconds_search=result.seconds, seconds_total=0.0, stopped=result.stopped,
        plan=result.plan.to_dict(), rows=result.rows, latency_ms_before=latency[0], latency_ms_after=latency[1],
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    say(PhaseEvent(f"saving to {target}"))
    report.seconds_total = time.perf_counter() - begin
    save_pruned(pruned, tokenizer, target, plan=result.plan, report=pruning_report, overwrite=overwrite,
                extra_files={SEARCH_REPORT_FILE: report.to_json()})
    return report


def _metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("plan", "phase", "feasible", "split")}
