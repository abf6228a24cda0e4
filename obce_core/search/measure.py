"""What one plan scores: the task's metrics, main score and loss of a pruned model on an encoded split.

The plan search needs the loss beside the metrics (its sensitivity probes read how much the
task loss rises), which ``evidence.evaluate_encoded`` does not give; the rest is the same path:
``predict_logits`` on length-sorted batches, ``glue.compute_metrics``.
"""

from __future__ import annotations

import time

import numpy as np

from obce_core import glue
from obce_core.evidence.evaluation import EncodedSplit, predict_logits
from obce_core.layout import GROUPS
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.surgery import prune
from obce_core.search.bound import predictions_of

__all__ = ["measure_plan", "task_loss", "task_metrics"]


def task_loss(task: str, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``logits`` against class ``labels`` (mean squared error for regression)."""
    spec = glue.get_task(task)
    if spec.num_labels == 1:
        return float(np.mean((logits.reshape(-1) - labels.astype(np.float64)) ** 2))
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels.astype(np.int64)].mean())


def task_metrics(model, encoded: EncodedSplit, *, with_logits: bool = False):
    """GLUE metrics, ``main_score`` and task loss (``task_loss``) of ``model`` on ``encoded``; with
    ``with_logits``, ``(metrics, logits)`` (logits in drawn order)."""
    logits = predict_logits(model, encoded)
    spec = glue.get_task(encoded.task)
    metrics = glue.compute_metrics(spec, logits, encoded.labels)
    metrics = {**metrics, "main_score": glue.main_score(spec, metrics), "loss": task_loss(spec.name, logits, encoded.labels)}
    return (metrics, logits) if with_logits else metrics


def measure_plan(model, scores, plan: PruningPlan, encoded: EncodedSplit, *, calibration=None) -> dict:
    """``task_metrics`` of ``prune(model, scores, plan, calibration=...)`` on ``encoded``, the seconds
    it took and ``predictions`` (``bound.predictions_of``, in drawn order: what a paired bound pairs)."""
    start = time.perf_counter()
    removes_nothing = all(getattr(plan, g) == 0 for g in GROUPS) and not any(any(v.values()) for v in plan.layers.values())
    pruned = model if removes_nothing else prune(model, scores, plan, calibration=calibration)[0]
    metrics, logits = task_metrics(pruned, encoded, with_logits=True)
    return {**metrics, "eval_s": round(time.perf_counter() - start, 3),
            "predictions": predictions_of(encoded.task, logits).tolist()}
