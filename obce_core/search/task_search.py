"""A plan search of a saved task model, from its directory to an output folder: what the CLI's
``search`` command and the dashboard's "search" job both run.

``search_task_model`` checks everything first (the output folder, the task model and its task,
the local data, the settings, the search examples: ``search.splits.choose_search_data``), then
scores the task's training sentences (``task_scores``, with Fisher when the scorer is ``fisher``),
captures calibration for the fitted compensations, encodes the SEARCH examples (the held-out part
of the training split, a labelled file, or one seeded half of dev) and a seeded subset of them for
the sensitivity probes, runs ``search_plan`` (a plan is within the tolerance when its paired bound
is: ``search.bound``), and only then scores the found plan on the whole dev split (and, with dev
halves, on the half the search never read), with the paired drop's 95 % interval. The output folder holds the pruned model (``save_pruned``: reloads with
``load_model``, its plan with ``load_plan``) and ``search_report.json`` (``SearchReport``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from obce_core import glue
from obce_core.evidence.evaluation import encode_dataset, encode_split
from obce_core.evidence.parallel import PlanPool
from obce_core.evidence.task_sweep import CALIBRATED_COMPENSATIONS, task_model_problem, task_scores, training_texts
from obce_core.io import check_output_path
from obce_core.loading import load_model
from obce_core.pruning.calibration import capture_calibration
from obce_core.pruning.files import is_obce_saved, save_pruned
from obce_core.loading import model_fingerprint
from obce_core.pruning.fisher import fisher_fingerprint
from obce_core.pruning.surgery import prune
from obce_core.scoring import default_cache_dir
from obce_core.search.algorithm import SearchSettings, search_plan
from obce_core.search.bound import PairedBootstrap, predictions_of
from obce_core.search.report import SEARCH_REPORT_FILE, SearchReport, bound_note, promise_of, read_search_report
from obce_core.search.splits import choose_search_data
from obce_core.search.measure import task_metrics
from obce_core.search.cost import COST_LABELS, PlanCost, measure_latency_table
from obce_core.training.progress import PhaseEvent, StepEvent, TrainingCancelled
from obce_core.training.trainer import head_fingerprint, measure_latency
from obce_core.validation import check_int

__all__ = ["SEARCH_REPORT_FILE", "SearchReport", "default_search_dir", "read_search_report", "search_task_model"]

def default_search_dir() -> Path:
    """Where search rows are cached (``<OBCE_CACHE_DIR>/searches``), so a rerun resumes."""
    return Path(default_cache_dir()) / "searches"


def _row_cache(model, scores, calibration, search, sensitivity, compensation: str, cache_dir) -> Path:
    data = {"format": 2, "model": model_fingerprint(model), "head": head_fingerprint(model),
            "scores": [scores.model_fingerprint, scores.texts_fingerprint, scores.settings.to_dict(),
                       fisher_fingerprint(scores)],
            "splits": [[s.task, s.split, s.eval_size, s.seed, s.max_length] for s in (search, sensitivity)],
            "compensation": compensation,
            "calibration": None if calibration is None else [calibration.model_fingerprint, calibration.n_texts]}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir or default_search_dir()) / f"{key}.jsonl"


def search_task_model(model_source: str, task: str, out: str | os.PathLike, settings: SearchSettings, *,
                      glue_dir: str | os.PathLike | None = None, search_size: int | None = None, search_seed: int = 1,
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
    saves its best plan so far and says so (``stopped``). ``settings.split``/``search_data`` choose
    the search examples (``search.splits``); ``search_size`` caps them (a subset drawn with
    ``search_seed``, which also cuts dev halves and seeds the bootstrap); ``sensitivity_size`` of them
    feed the sensitivity probes."""
    owner = "search_task_model"
    begin = time.perf_counter()
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"settings must be SearchSettings, got {type(settings).__name__}.")
    spec = glue.get_task(task)
    check_int(search_size, "search_size", owner, low=10, allow_none=True)
    for name, value, low in (("sensitivity_size", sensitivity_size, 10),
                             ("search_seed", search_seed, 0), ("score_texts", score_texts, 2),
                             ("fisher_examples", fisher_examples, 1), ("workers", workers, 1)):
        check_int(value, name, owner, low=low)
    target = check_output_path(out, overwrite=overwrite, kind="dir", may_replace=is_obce_saved)
    problem = task_model_problem(model_source, spec.name)
    if problem:
        raise ValueError(problem)
    dev = next(s for s in spec.splits if s.startswith("validation"))
    glue.check_local_splits(glue_dir, {spec.name: ["train", dev]})
    # The examples the tolerance is judged on, before any model is loaded: a bad file or a reserve
    # whose training file changed is refused here.
    data = choose_search_data(model_source, spec.name, split=settings.split, search_data=settings.search_data,
                              search_size=search_size, seed=search_seed, glue_dir=glue_dir)
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
    say(PhaseEvent(f"tokenizing the search examples: {data.words}"))
    search = encode_dataset(tokenizer, spec.name, data.search, split=f"{data.kind}:{data.fingerprint}",
                            eval_size=len(data.search), seed=search_seed, max_length=max_length)
    probes = data.search
    if sensitivity_size < len(probes):
        probes = probes.shuffle(seed=search_seed + 1).select(range(sensitivity_size))
    sensitivity = encode_dataset(tokenizer, spec.name, probes, split=f"{data.kind}:{data.fingerprint}",
                                 eval_size=len(probes), seed=search_seed + 1, max_length=max_length)
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
    # Only now the whole dev split: it reports the plan, it never chose it (with dev halves, the
    # half the search never read reports it too).
    say(PhaseEvent(f"evaluating the found plan on {spec.name} dev"))
    pruned, pruning_report = prune(model, scores, result.plan, calibration=calibration)
    dev_split = encode_split(tokenizer, spec.name, glue_dir=glue_dir, max_length=max_length)
    dev_original, dev_found, dev_drop = _paired_scores(model, pruned, dev_split, settings.confidence, search_seed)
    check = (None, None, None)
    if data.check is not None:
        check_split = encode_dataset(tokenizer, spec.name, data.check, split=f"dev-half-report:{search_seed}",
                                     eval_size=len(data.check), seed=search_seed, max_length=max_length)
        check = _paired_scores(model, pruned, check_split, settings.confidence, search_seed)
    latency = (None, None)
    if settings.cost == "latency":
        latency = (measure_latency(model, tokenizer, latency_texts, max_length=max_length),
                   measure_latency(pruned, tokenizer, latency_texts, max_length=max_length))
    search_drop = _drop_of(result.best, settings.confidence, search.n)
    fresh = check[2] if check[2] is not None else dev_drop  # the split that reports the plan unseen
    report = SearchReport(
        task=spec.name, model=str(model_source), num_layers=len(cost.shapes), settings=settings, search_split=data.words,
        sensitivity_split=f"{sensitivity.n:,} of the search examples (seed {search_seed + 1})",
        cost_label=COST_LABELS[settings.cost],
        cost_before=cost.unpruned(), cost_after=cost.of(result.plan), cost_removed=result.best["cost_removed"],
        params_before=int(pruning_report.params_before["total"]), params_after=int(pruning_report.params_after["total"]),
        search_original=_metrics(result.original), search_found=_metrics(result.best), dev_original=dev_original,
        dev_found=dev_found, seconds_search=result.seconds, seconds_total=0.0, stopped=result.stopped,
        plan=result.plan.to_dict(), rows=result.rows, latency_ms_before=latency[0], latency_ms_after=latency[1],
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), search_kind=data.kind,
        search_drop=search_drop, dev_drop=dev_drop.to_dict(), promise=promise_of(search_drop, result.rows, fresh.n),
        check_split=data.check_words, check_original=check[0], check_found=check[1],
        check_drop=None if check[2] is None else check[2].to_dict(),
        bound_note=bound_note(result.rows, settings.tolerance, settings.confidence, search.n))
    say(PhaseEvent(f"saving to {target}"))
    report.seconds_total = time.perf_counter() - begin
    save_pruned(pruned, tokenizer, target, plan=result.plan, report=pruning_report, overwrite=overwrite,
                extra_files={SEARCH_REPORT_FILE: report.to_json()})
    return report


def _metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("plan", "phase", "feasible", "split")}


def _paired_scores(model, pruned, encoded, confidence: float, seed: int):
    """``task_metrics`` of both models on ``encoded`` and the paired drop between them."""
    original, logits = task_metrics(model, encoded, with_logits=True)
    found, pruned_logits = task_metrics(pruned, encoded, with_logits=True)
    bootstrap = PairedBootstrap(encoded.task, encoded.labels, predictions_of(encoded.task, logits), seed=seed)
    return original, found, bootstrap.drop(predictions_of(encoded.task, pruned_logits), confidence)


def _drop_of(row: dict, confidence: float, n: int) -> dict:
    """The paired drop of a trail row (``search_plan`` bounds every row it keeps) as a report dict."""
    return {"drop": row["drop"], "upper": row["drop_upper"], "low": row["drop_low"], "high": row["drop_high"],
            "confidence": confidence, "n": n}
