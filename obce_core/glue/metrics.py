"""GLUE metrics: ``compute_metrics`` per task (fractions in [0, 1], not x100), the task's
headline ``main_score`` and the usual ``glue_average``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from obce_core.glue.tasks import COMBINED, GlueTask, get_task

__all__ = ["compute_metrics", "glue_average", "main_score"]


def _as_array(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be array-like numbers; got {type(values).__name__}."
        ) from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{what} must be numbers; got an array of dtype {arr.dtype}.")
    return arr


def _as_ids(arr: np.ndarray, what: str, task: GlueTask) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{what} for {task.name!r} must be label ids (whole numbers); got non-integer "
                "values. Pass logits of shape (n, num_labels) or their argmax."
            )
    ids = arr.astype(np.int64)
    bad = (ids < 0) | (ids >= task.num_labels)
    if bad.any():
        raise ValueError(
            f"{what} for {task.name!r} must be ids in 0..{task.num_labels - 1} "
            f"{list(task.label_names)}; got {sorted(set(ids[bad].tolist()))[:5]}. Test splits "
            "have label -1 (no gold labels): score a split with labels."
        )
    return ids


def compute_metrics(task: str | GlueTask, predictions, references) -> dict[str, float]:
    """The GLUE metrics of ``task`` as plain floats in [0, 1] (correlations in [-1, 1]).

    Keys: cola ``matthews_correlation``; stsb ``pearson``, ``spearmanr``; mrpc and qqp
    ``accuracy``, ``f1`` (f1 of the positive class, id 1); other tasks ``accuracy``.
    ``predictions`` are label ids (floats for stsb) or logits of shape (n, num_labels), which
    are reduced with argmax ((n, 1) is squeezed for stsb). A correlation of constant input is
    NaN, as in scipy.
    """
    # scikit-learn takes seconds to import and only evaluation needs it
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    spec = get_task(task)
    preds = _as_array(predictions, "predictions")
    refs = _as_array(references, "references")
    if preds.ndim == 2:
        if preds.shape[1] != spec.num_labels:
            raise ValueError(
                f"predictions of shape {preds.shape} do not fit {spec.name!r}: logits must have "
                f"shape (n, {spec.num_labels}); label ids shape (n,)."
            )
        preds = preds[:, 0] if spec.is_regression else preds.argmax(axis=1)
    if preds.ndim != 1 or refs.ndim != 1:
        raise ValueError(
            f"predictions must have shape (n,) or (n, {spec.num_labels}) and references (n,); "
            f"got {preds.shape} and {refs.shape}."
        )
    if len(preds) != len(refs):
        raise ValueError(
            f"predictions and references must have the same length; got {len(preds)} and "
            f"{len(refs)}. Score the predictions of exactly the rows you pass as references."
        )
    if len(preds) == 0:
        raise ValueError(f"Cannot score {spec.name!r} on no examples: both inputs are empty.")

    if spec.is_regression:
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
        return {
            "pearson": float(pearsonr(preds, refs)[0]),
            "spearmanr": float(spearmanr(preds, refs)[0]),
        }
    preds = _as_ids(preds, "predictions", spec)
    refs = _as_ids(refs, "references", spec)
    out: dict[str, float] = {}
    for metric in spec.metrics:
        if metric == "matthews_correlation":
            out[metric] = float(matthews_corrcoef(refs, preds))
        elif metric == "accuracy":
            out[metric] = float(accuracy_score(refs, preds))
        elif metric == "f1":
            out[metric] = float(f1_score(refs, preds, pos_label=1, zero_division=0.0))
    return out


def main_score(task: str | GlueTask, metrics: Mapping[str, float]) -> float:
    """The task's headline number: the mean of its metrics for mrpc, qqp and stsb, else the one."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise ValueError(
            f"metrics for {spec.name!r} lack {missing}; got keys {sorted(metrics)}. Pass the dict "
            f"returned by compute_metrics({spec.name!r}, ...)."
        )
    if spec.main_metric == COMBINED:
        return float(np.mean([float(metrics[m]) for m in spec.metrics]))
    return float(metrics[spec.main_metric])


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE average: the mean over tasks of ``main_score``, keyed by task name."""
    if not results:
        raise ValueError(
            "results is empty; pass {task_name: compute_metrics(task_name, ...)} for at least "
            "one task."
        )
    seen: dict[str, str] = {}
    scores = []
    for name, metrics in results.items():
        spec = get_task(name)
        if spec.name in seen:
            raise ValueError(
                f"results name GLUE task {spec.name!r} twice ({seen[spec.name]!r} and {name!r}); "
                "keep one entry per task."
            )
        seen[spec.name] = name
        scores.append(main_score(spec, metrics))
    return float(np.mean(scores))
