"""Fast retraining-free evaluation of a sequence classifier on a GLUE split.

The split is tokenized once into length-sorted batches (each padded to its own longest example),
then every model evaluated on it costs only its forward passes: this is what lets an analyst move
a slider and see a task score in seconds. Metrics come from ``glue.compute_metrics``, so they are
the numbers ``training.evaluate`` reports for the same examples and ``max_length``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from obce_core import glue
from obce_core.forward import length_sorted_batches, locked_eval, tokenize_texts
from obce_core.training.trainer import check_head
from obce_core.validation import check_int, check_number

__all__ = ["EncodedSplit", "ScoreInterval", "encode_dataset", "encode_split", "evaluate_encoded", "predict_logits", "score_interval"]


@dataclass
class EncodedSplit:
    """A GLUE split, tokenized, in length-sorted padded batches.

    ``labels`` and ``idx`` are in the order the examples were drawn (``glue.load_task`` with
    ``n=eval_size, seed=seed``); ``batches`` hold the same examples sorted by length, and
    ``order[i]`` is the drawn position of the i-th example across the batches.
    """

    task: str
    split: str
    eval_size: int | None
    seed: int
    max_length: int
    labels: np.ndarray
    idx: np.ndarray
    batches: list[dict[str, torch.Tensor]]
    order: np.ndarray

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def is_subset(self) -> bool:
        return self.eval_size is not None

    def describe(self) -> str:
        what = f"a seeded subset of {self.n} examples (seed {self.seed})" if self.is_subset else f"all {self.n} examples"
        return f"{glue.get_task(self.task).name} {self.split}, {what}"


def encode_split(tokenizer, task: str, *, split: str | None = None, glue_dir: str | os.PathLike | None = None,
                 eval_size: int | None = None, seed: int = 0, max_length: int = 128,
                 batch_size: int = 64) -> EncodedSplit:
    """Tokenize a split of ``task`` once (default: its validation split; MNLI: matched)."""
    spec = glue.get_task(task)
    owner = "encode_split"
    check_int(eval_size, "eval_size", owner, low=1, allow_none=True, fix="Give a number of examples, or None for the whole split.")
    check_int(max_length, "max_length", owner, low=8, high=8192)
    check_int(batch_size, "batch_size", owner, low=1)
    split = split or next(s for s in spec.splits if s.startswith("validation"))
    data = glue.load_task(spec, split, glue_dir, n=eval_size, seed=seed)
    if eval_size is not None and len(data) < eval_size:
        eval_size = None  # asked for more than the split holds: it is the whole split
    return encode_dataset(tokenizer, spec.name, data, split=split, eval_size=eval_size, seed=seed,
                          max_length=max_length, batch_size=batch_size)


def encode_dataset(tokenizer, task: str, data, *, split: str, eval_size: int | None = None, seed: int = 0,
                   max_length: int = 128, batch_size: int = 64) -> EncodedSplit:
    """Tokenize labelled rows of ``task`` already loaded (a ``datasets.Dataset`` with the task's
    columns, ``label`` and ``idx``, e.g. a held-out part of a split); ``split``, ``eval_size`` and
    ``seed`` name them in the ``EncodedSplit``."""
    spec = glue.get_task(task)
    # The scoring package's tokenizer path: texts cut by characters first, the tokenizer under its lock.
    encoded = tokenize_texts(tokenizer, glue.dataset_texts(data, spec), max_length)
    batches, order = [], []
    for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, "cpu"):
        batches.append(batch)
        order.extend(int(i) for i in idx)
    order = np.asarray(order, dtype=np.int64)
    return EncodedSplit(
        task=spec.name, split=split, eval_size=eval_size, seed=seed, max_length=max_length,
        labels=np.asarray(data["label"]), idx=np.asarray(data["idx"]), batches=batches, order=order,
    )


def predict_logits(model, encoded: EncodedSplit) -> np.ndarray:
    """Logits for every example of ``encoded``, in drawn order (no gradients, eval mode).

    Runs under the model's lock, so a model shared by dashboard sessions is never forwarded while
    another caller's capture hooks are attached.
    """
    outputs = []
    with locked_eval(model) as device:
        for batch in encoded.batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs.append(model(**batch).logits.float().cpu())
    logits = torch.cat(outputs).numpy()
    drawn = np.empty_like(logits)
    drawn[encoded.order] = logits
    return drawn


def evaluate_encoded(model, encoded: EncodedSplit) -> dict[str, float]:
    """``glue.compute_metrics`` plus ``main_score`` of ``model`` on ``encoded``."""
    spec = glue.get_task(encoded.task)
    check_head(model, spec)
    logits = predict_logits(model, encoded)
    metrics = glue.compute_metrics(spec, logits, encoded.labels)
    metrics["main_score"] = glue.main_score(spec, metrics)
    return metrics


@dataclass(frozen=True)
class ScoreInterval:
    """A bootstrap percentile interval of a task's main score (an ESTIMATE, labelled as such)."""

    score: float
    low: float
    high: float
    level: float
    n: int
    resamples: int


def score_interval(task: str, logits: np.ndarray, labels: np.ndarray, *, level: float = 0.95,
                   resamples: int = 1000, seed: int = 0) -> ScoreInterval:
    """Bootstrap interval of the main score over examples (resampled with replacement)."""
    check_number(level, "level", "score_interval", low=0, high=1, low_open=True, high_open=True)
    check_int(resamples, "resamples", "score_interval", low=10)
    spec = glue.get_task(task)
    labels = np.asarray(labels)
    score = glue.main_score(spec, glue.compute_metrics(spec, logits, labels))
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        draws.append(glue.main_score(spec, glue.compute_metrics(spec, logits[pick], labels[pick])))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return ScoreInterval(float(score), float(low), float(high), float(level), int(n), int(resamples))

