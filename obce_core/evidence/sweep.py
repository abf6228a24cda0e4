"""Task quality against the pruning percentile, retraining-free: ``threshold_sweep``.

Every row is a real evaluation of ``prune(model, scores, plan)`` on the task's dev split (or a
seeded subset, labelled as such), never an interpolation. Rows are appended to a JSON-lines file
as they finish, keyed by everything that decides them (task model weights and head, scores,
split, plan settings), so a cancelled sweep keeps what it finished and the next one resumes; a
finished sweep answers each point from that file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from obce_core.choices import SWEEP_GROUPS, SWEEP_SCORERS  # defined without torch for the CLI's parser
from obce_core.evidence.evaluation import EncodedSplit, encode_split, evaluate_encoded
from obce_core.evidence.parallel import PlanPool
from obce_core.io import append_json_line, read_json_lines
from obce_core.layout import GROUPS
from obce_core.loading import model_fingerprint
from obce_core.pruning.fisher import fisher_fingerprint
from obce_core.pruning.importance import make_importance
from obce_core.pruning.plan import SCORERS, PruningPlan
from obce_core.pruning.surgery import prune
from obce_core.scoring.scores import default_cache_dir
from obce_core.training.trainer import head_fingerprint, parameter_counts
from obce_core.validation import check_choice, check_int

__all__ = ["SWEEP_GROUPS", "SWEEP_SCORERS", "evaluate_plan", "largest_safe_percentile", "read_sweep", "run_sweep_points",
           "sweep_cache_path", "sweep_plan", "sweep_points", "threshold_sweep"]

DEFAULT_PERCENTILES = tuple(range(0, 100, 10))
CACHE_FORMAT = 1

Progress = Callable[[int, int, dict], None]


def sweep_plan(group: str, percentile: float, scorer: str, seed: int, *, skip_layers: int = 0,
               compensation: str | None = None):
    """The ``PruningPlan`` of one sweep point (``group='all'`` sets ffn = v = qk = percentile)."""
    check_choice(group, "group", "sweep_plan", SWEEP_GROUPS)
    sizes = {g: (percentile if group in ("all", g) else 0) for g in GROUPS}
    extra = {} if compensation is None else {"compensation": compensation}
    return PruningPlan(**sizes, scorer=scorer, seed=seed, skip_layers=skip_layers, **extra)


def evaluate_plan(model, scores, plan, encoded: EncodedSplit, *, calibration=None) -> dict:
    """One row: the task metrics of ``prune(model, scores, plan, calibration=...)`` on ``encoded``,
    its sizes and time (``calibration``: what ``auto``/``lsq``/``token-mean`` fit with)."""
    start = time.perf_counter()
    removes_nothing = all(getattr(plan, g) == 0 for g in GROUPS) and not plan.layers
    pruned = model if removes_nothing else prune(model, scores, plan, calibration=calibration)[0]
    metrics = evaluate_encoded(pruned, encoded)
    sizes = parameter_counts(pruned)
    return {
        **metrics,
        "params_total": sizes["total"],
        "params_encoder": sizes["encoder"],
        "eval_s": round(time.perf_counter() - start, 3),
        "n_eval": encoded.n,
        "subset": encoded.is_subset,
    }


def _sweep_key(model, scores, encoded: EncodedSplit, skip_layers: int, compensation: str | None,
               calibration=None) -> str:
    data = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(model),
        "head": head_fingerprint(model),
        "scores": [scores.model_fingerprint, scores.texts_fingerprint, scores.settings.to_dict()],
        "split": [encoded.task, encoded.split, encoded.eval_size, encoded.seed, encoded.max_length],
        "skip_layers": skip_layers,
        "compensation": compensation,
    }
    if calibration is not None:  # only then: keys of uncalibrated sweeps stay what they were
        data["calibration"] = [calibration.model_fingerprint, calibration.n_texts, calibration.n_train]
    fisher = fisher_fingerprint(scores)
    if fisher is not None:  # only then, as above: the fisher rows depend on the examples Fisher was summed over
        data["fisher"] = fisher
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def default_sweep_dir() -> Path:
    return Path(default_cache_dir()) / "sweeps"


def sweep_cache_path(model, scores, encoded: EncodedSplit, *, skip_layers: int = 0, compensation: str | None = None,
                     calibration=None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The JSON-lines file where ``threshold_sweep`` keeps the rows of these settings."""
    key = _sweep_key(model, scores, encoded, skip_layers, compensation, calibration)
    return Path(cache_dir or default_sweep_dir()) / f"{key}.jsonl"


def read_sweep(path: str | os.PathLike) -> pd.DataFrame:
    """The rows finished so far in a sweep cache file (an empty frame when there is none)."""
    rows = list(_read_rows(Path(path)).values())
    return pd.DataFrame(rows, columns=None if rows else ["group", "percentile", "scorer", "seed", "main_score"])


def _read_rows(path: Path) -> dict[tuple, dict]:
    rows: dict[tuple, dict] = {}
    if not path.is_file():
        return rows
    for row in read_json_lines(path):  # a torn line from a killed run is skipped, not fatal
        try:
            rows[(row["group"], float(row["percentile"]), row["scorer"], int(row["seed"]))] = row
        except (ValueError, KeyError, TypeError):
            continue  # a row of another shape is not a finished point
    return rows


def threshold_sweep(model, tokenizer, scores, task: str, *, groups=SWEEP_GROUPS, percentiles=DEFAULT_PERCENTILES,
                    scorers=SWEEP_SCORERS, seeds=(0, 1, 2), skip_layers: int = 0, compensation: str | None = None,
                    glue_dir: str | os.PathLike | None = None, eval_size: int | None = None, eval_seed: int = 0,
                    max_length: int = 128, encoded: EncodedSplit | None = None, calibration=None,
                    cache_dir: str | os.PathLike | None = None, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None, workers: int = 1,
                    devices: Sequence[str] | None = None) -> pd.DataFrame:
    """Task quality of ``prune(model, scores, plan)`` for every (group, percentile, scorer, seed).

    ``model`` is a classifier fine-tuned on ``task``; ``scores`` are ``NeuronScores`` of its
    encoder. Deterministic scorers run once (with the first seed); ``random`` runs every seed.
    Percentile 0 removes nothing: its rows share one evaluation of the unpruned model. Returns one
    row per point with ``group, percentile, scorer, seed, main_score``, the task's metrics,
    ``params_total``, ``params_encoder``, ``eval_s`` (wall time of that evaluation, prune
    included; 0 for a row answered from the cache), ``n_eval``, ``subset`` and ``cached``.
    ``compensation=None`` uses ``PruningPlan``'s default; ``calibration`` (captured from the
    scoring texts) is what ``auto``/``lsq``/``token-mean`` fit with. ``progress(done, total, row)`` after each
    point; ``should_stop()`` ends the sweep early, keeping the finished rows (in the cache too).
    ``workers`` > 1 (or ``devices``, one worker each) evaluates that many points at once in
    ``parallel.PlanPool`` worker processes (one per GPU when there are GPUs); the rows are the same.
    A scorer that needs a column the scores lack (``fisher``) is refused before any work.
    """
    owner = "threshold_sweep"
    points = sweep_points(groups, percentiles, scorers, seeds, owner)
    check_int(skip_layers, "skip_layers", owner, low=0)
    check_int(workers, "workers", owner, low=1, fix="1 evaluates the points here, one after another.")
    for scorer in dict.fromkeys(scorers):
        make_importance(scorer).check_scores(scores)
    if encoded is None:
        encoded = encode_split(tokenizer, task, glue_dir=glue_dir, eval_size=eval_size, seed=eval_seed, max_length=max_length)
    path = sweep_cache_path(model, scores, encoded, skip_layers=skip_layers, compensation=compensation,
                            calibration=calibration, cache_dir=cache_dir)

    def plan(point):
        return sweep_plan(*point, skip_layers=skip_layers, compensation=compensation)

    def measure(*point) -> dict:
        return evaluate_plan(model, scores, plan(point), encoded, calibration=calibration)

    with ExitStack() as stack:
        batch, measure_batch = 1, None
        # Workers only when something is left to evaluate: starting them costs a model load each.
        if (workers > 1 or devices is not None) and _pending(points, path):
            pool = stack.enter_context(PlanPool(model, scores, encoded, calibration=calibration, tokenizer=tokenizer,
                                                workers=workers, devices=devices))
            batch, measure_batch = pool.workers, (lambda todo: pool.evaluate([plan(p) for p in todo]))
        return run_sweep_points(points, path, measure, progress=progress, should_stop=should_stop, batch=batch,
                                measure_batch=measure_batch)


def _append_row(path: Path, row: dict) -> None:
    # One line per finished point; a crash can tear only the line being written, and the next row
    # starts a line of its own (append_json_line), so only the torn point is evaluated again.
    append_json_line(path, row)


def sweep_points(groups, percentiles, scorers, seeds, owner: str) -> list[tuple[str, float, str, int]]:
    """The checked (group, percentile, scorer, seed) points of a sweep: deterministic scorers with
    the first seed only, ``random`` with every seed; percentiles sorted, each in [0, 100)."""
    for g in groups:
        check_choice(g, "groups", owner, SWEEP_GROUPS)
    for s in scorers:
        check_choice(s, "scorers", owner, SCORERS)
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"The 'seeds' parameter of {owner} must name at least one seed; got an empty list.")
    percentiles = sorted({float(p) for p in percentiles})
    if not percentiles or any(not 0 <= p < 100 or math.isnan(p) for p in percentiles):
        raise ValueError(f"The 'percentiles' parameter of {owner} must hold numbers in [0, 100); got {percentiles}.")
    return [(g, p, s, seed) for g in groups for p in percentiles for s in scorers
            for seed in (seeds if s == "random" else seeds[:1])]


def _pending(points, path: Path) -> bool:
    """Whether any point still needs an evaluation (percentile 0 needs one only while none is cached)."""
    done = _read_rows(path)
    has_zero = any(k[1] == 0 for k in done)
    return any(tuple(p) not in done and not (p[1] == 0 and has_zero) for p in points)


def run_sweep_points(points, path: Path, measure: Callable[[str, float, str, int], dict], *,
                     progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                     batch: int = 1, measure_batch: Callable[[list], list[dict]] | None = None) -> pd.DataFrame:
    """One row per point, measured in order by ``measure(group, percentile, scorer, seed)`` or read
    from the JSON-lines cache ``path`` (rows appended as they finish, so a cancelled sweep resumes);
    percentile 0 removes nothing, so it is measured once and its other rows copy it. Rows carry
    ``cached`` and ``eval_s`` (0 for cached rows).

    ``batch`` > 1 with ``measure_batch(points) -> rows``: the next ``batch`` points that need a
    measurement are measured by one call (``PlanPool.evaluate`` runs them at once), then their rows
    are written and reported in point order, as the one-by-one loop would. ``should_stop()`` is
    asked before each batch.
    """
    check_int(batch, "batch", "run_sweep_points", low=1)
    measure_batch = measure_batch or (lambda todo: [measure(*point) for point in todo])
    done = _read_rows(path)
    unpruned: dict | None = next((r for k, r in done.items() if k[1] == 0), None)
    rows, start = [], 0
    while start < len(points):
        if should_stop is not None and should_stop():
            break
        # The points up to (and including) the batch-th one that needs measuring.
        end, todo, zero_claimed = start, [], unpruned is not None
        while end < len(points) and len(todo) < batch:
            point = tuple(points[end])
            if point not in done and not (point[1] == 0 and zero_claimed):
                todo.append(end)
                zero_claimed = zero_claimed or point[1] == 0
            end += 1
        measured = dict(zip(todo, measure_batch([tuple(points[i]) for i in todo])))
        for i in range(start, end):
            group, p, scorer, seed = key = tuple(points[i])
            if key in done:
                row = {**done[key], "cached": True, "eval_s": 0.0}
            else:
                if i in measured:
                    values = measured[i]
                else:  # percentile 0 again: the unpruned model's row, measured once
                    values = {k: v for k, v in unpruned.items() if k not in ("group", "percentile", "scorer", "seed", "cached")}
                row = {"group": group, "percentile": p, "scorer": scorer, "seed": seed, **values}
                if p == 0 and unpruned is None:
                    unpruned = row
                _append_row(path, row)
                done[key] = row
                row = {**row, "cached": False}
            rows.append(row)
            if progress is not None:
                progress(i + 1, len(points), row)
        start = end
    return pd.DataFrame(rows)


def largest_safe_percentile(table: pd.DataFrame, original_score: float, tolerance: float) -> pd.DataFrame:
    """Per group and scorer, the largest swept percentile whose WORST seed stays within
    ``tolerance`` (same units as ``main_score``) of ``original_score``, with every smaller swept
    percentile also within it (a later lucky point does not count)."""
    out = []
    for (group, scorer), part in table.groupby(["group", "scorer"], sort=False):
        worst = part.groupby("percentile")["main_score"].min().sort_index()
        safe = 0.0
        for p, score in worst.items():
            if original_score - score > tolerance:
                break
            safe = float(p)
        out.append({"group": group, "scorer": scorer, "largest_safe_percentile": safe})
    return pd.DataFrame(out)
