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
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from obce_core.evidence.evaluation import EncodedSplit, evaluate_encoded
from obce_core.pruning.plan import GROUPS, SCORERS
from obce_core.io import write_text_atomic
from obce_core.validation import check_choice, check_int

__all__ = ["SWEEP_GROUPS", "SWEEP_SCORERS", "evaluate_plan", "largest_safe_percentile", "read_sweep", "sweep_cache_path",
           "sweep_plan", "threshold_sweep"]

# "all" prunes every group at the same percentile.
SWEEP_GROUPS = ("ffn", "v", "qk", "all")
# The default scorers: rf and the three controls of issue 8; any registered scorer (e.g. flap) may be asked for.
SWEEP_SCORERS = ("rf", "std", "magnitude", "random")
DEFAULT_PERCENTILES = tuple(range(0, 100, 10))
CACHE_FORMAT = 1

Progress = Callable[[int, int, dict], None]


def sweep_plan(group: str, percentile: float, scorer: str, seed: int, *, skip_layers: int = 0,
               compensation: str | None = None):
    """The ``PruningPlan`` of one sweep point (``group='all'`` sets ffn = v = qk = percentile)."""
    from obce_core.pruning import PruningPlan

    check_choice(group, "group", "sweep_plan", SWEEP_GROUPS)
    sizes = {g: (percentile if group in ("all", g) else 0) for g in GROUPS}
    extra = {} if compensation is None else {"compensation": compensation}
    return PruningPlan(**sizes, scorer=scorer, seed=seed, skip_layers=skip_layers, **extra)


def evaluate_plan(model, scores, plan, encoded: EncodedSplit, *, calibration=None) -> dict:
    """One row: the task metrics of ``prune(model, scores, plan, calibration=...)`` on ``encoded``,
    its sizes and time (``calibration``: what ``auto``/``lsq``/``token-mean`` fit with)."""
    from obce_core.pruning import prune
    from obce_core.training import parameter_counts

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
    from obce_core import model_fingerprint
    from obce_core.training import head_fingerprint

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
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def default_sweep_dir() -> Path:
    from obce_core.scoring import default_cache_dir

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
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            rows[(row["group"], float(row["percentile"]), row["scorer"], int(row["seed"]))] = row
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a killed run is skipped, not fatal
    return rows


def threshold_sweep(model, tokenizer, scores, task: str, *, groups=SWEEP_GROUPS, percentiles=DEFAULT_PERCENTILES,
                    scorers=SWEEP_SCORERS, seeds=(0, 1, 2), skip_layers: int = 0, compensation: str | None = None,
                    glue_dir: str | os.PathLike | None = None, eval_size: int | None = None, eval_seed: int = 0,
                    max_length: int = 128, encoded: EncodedSplit | None = None, calibration=None,
                    cache_dir: str | os.PathLike | None = None, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
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
    """
    owner = "threshold_sweep"
    for g in groups:
        check_choice(g, "groups", owner, SWEEP_GROUPS)
    for s in scorers:
        check_choice(s, "scorers", owner, SCORERS)
    check_int(skip_layers, "skip_layers", owner, low=0)
    if not seeds:
        raise ValueError("The 'seeds' parameter of threshold_sweep must name at least one seed; got an empty list.")
    percentiles = sorted({float(p) for p in percentiles})
    if any(not 0 <= p < 100 or math.isnan(p) for p in percentiles):
        raise ValueError(f"The 'percentiles' parameter of threshold_sweep must hold numbers in [0, 100); got {percentiles}.")
    if encoded is None:
        from obce_core.evidence.evaluation import encode_split

        encoded = encode_split(tokenizer, task, glue_dir=glue_dir, eval_size=eval_size, seed=eval_seed, max_length=max_length)
    points = [(g, p, s, seed) for g in groups for p in percentiles for s in scorers
              for seed in (seeds if s == "random" else seeds[:1])]
    path = sweep_cache_path(model, scores, encoded, skip_layers=skip_layers, compensation=compensation,
                            calibration=calibration, cache_dir=cache_dir)
    done = _read_rows(path)
    unpruned: dict | None = next((r for k, r in done.items() if k[1] == 0), None)
    rows = []
    for i, (group, p, scorer, seed) in enumerate(points):
        if should_stop is not None and should_stop():
            break
        key = (group, p, scorer, seed)
        if key in done:
            row = {**done[key], "cached": True, "eval_s": 0.0}
        else:
            if p == 0 and unpruned is not None:
                measured = {k: v for k, v in unpruned.items() if k not in ("group", "percentile", "scorer", "seed", "cached")}
            else:
                plan = sweep_plan(group, p, scorer, seed, skip_layers=skip_layers, compensation=compensation)
                measured = evaluate_plan(model, scores, plan, encoded, calibration=calibration)
            row = {"group": group, "percentile": p, "scorer": scorer, "seed": seed, **measured}
            if p == 0 and unpruned is None:
                unpruned = row
            _append_row(path, row)
            done[key] = row
            row = {**row, "cached": False}
        rows.append(row)
        if progress is not None:
            progress(i + 1, len(points), row)
    return pd.DataFrame(rows)


def _append_row(path: Path, row: dict) -> None:
    # One line per finished point; a crash can tear only the line being written (skipped on read).
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_text_atomic(path, "")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()


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
