"""Consistency checks of scores: what a scores file or a fresh result must satisfy to be used.

Each check returns ``(field, what is wrong)`` for the first problem, or None. Readers turn a
problem into ``ScoresFileError`` naming the file and the field; ``score_model`` refuses to cache
a result with a problem. Limits: rf, std >= 0; rf, mean, std finite and at most
``MAX_ABS_STATISTIC`` in size. A finite 1e30 ``mean`` is as harmful as NaN (pruning folds means
into biases, so it overflows the pruned model's outputs to inf/NaN), and no working BERT produces
activations anywhere near 1e6: its layer inputs are LayerNorm-ed and its weights of order 1
(all-MiniLM-L6-v2 at [CLS] over 128 demo sentences: largest |mean| 193, in one outlier
dimension; largest rf 1.1).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from obce_core.layout import COMPONENTS

__all__ = ["MAX_ABS_STATISTIC", "ScoresFileError", "activations_problem", "metadata_problem", "table_problem"]

MAX_ABS_STATISTIC = 1e6
REQUIRED_METADATA = ("model_fingerprint", "texts_fingerprint", "settings", "n_texts", "n_samples")
REQUIRED_COLUMNS = ("layer", "component", "neuron", "rf", "mean", "std", "prunable", "rank", "rf_ties", "column")

Problem = tuple[str, str] | None


class ScoresFileError(ValueError):
    """A scores file is missing, unreadable, not written by obce, or fails its consistency check."""

    @classmethod
    def at(cls, path: str | os.PathLike, field: str, problem: str) -> "ScoresFileError":
        return cls(
            f"Scores file {str(path)!r} is refused: field {field!r} {problem}. Rescore the model "
            "(`python -m obce_core score ... --out FILE` or obce_core.score_model) instead of editing the file."
        )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def metadata_problem(meta, cache_format: int) -> Problem:
    """The obce metadata of a scores table: required keys, types and the sample count."""
    if not isinstance(meta, dict):
        return "obce metadata", f"is a {type(meta).__name__}, expected a JSON object"
    for key in REQUIRED_METADATA:
        if key not in meta:
            return key, "is missing from the metadata"
    fmt = meta.get("format", cache_format)
    if not _is_int(fmt) or fmt > cache_format:
        return "format", f"is {fmt!r}; this obce reads formats up to {cache_format}"
    for key in ("model_fingerprint", "texts_fingerprint"):
        if not isinstance(meta[key], str) or not meta[key]:
            return key, f"is {meta[key]!r}, expected a non-empty string"
    if not isinstance(meta["settings"], dict):
        return "settings", f"is {meta['settings']!r}, expected a JSON object"
    n_texts, n_samples = meta["n_texts"], meta["n_samples"]
    if not _is_int(n_texts) or n_texts < 2:
        return "n_texts", f"is {n_texts!r}, expected an integer >= 2"
    if not _is_int(n_samples) or n_samples < n_texts:
        return "n_samples", f"is {n_samples!r}, expected an integer >= n_texts ({n_texts})"
    if meta["settings"].get("token") in ("cls", "mean") and n_samples != n_texts:
        return "n_samples", f"is {n_samples}, expected one sample per text ({n_texts}) for token={meta['settings']['token']!r}"
    return None


def table_problem(table: pd.DataFrame) -> Problem:
    """The per-neuron table: columns present, known components, finite non-negative statistics."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        return missing[0], "is missing from the table"
    if len(table) == 0:
        return "table", "has no rows"
    if table["component"].isna().any():
        return "component", f"holds a value outside {list(COMPONENTS)}"
    for name in ("layer", "neuron", "rank", "rf_ties", "column"):
        col = table[name]
        if not pd.api.types.is_integer_dtype(col) or (col < 0).any():
            return name, "holds a value that is not a non-negative integer"
    for name in ("rf", "mean", "std"):
        col = table[name]
        if not pd.api.types.is_float_dtype(col) and not pd.api.types.is_integer_dtype(col):
            return name, f"has dtype {col.dtype}, expected numbers"
        v = col.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            return name, f"holds {int(bad.sum())} NaN or infinite value(s) (first at row {int(np.flatnonzero(bad)[0])})"
        if name != "mean" and (v < 0).any():
            return name, f"holds {int((v < 0).sum())} negative value(s) (first at row {int(np.flatnonzero(v < 0)[0])})"
        big = np.abs(v) > MAX_ABS_STATISTIC
        if big.any():
            return name, (f"holds {int(big.sum())} value(s) beyond +-{MAX_ABS_STATISTIC:g} (first {v[big][0]:g}), "
                          "which no working BERT produces")
    return None


def activations_problem(activations, sample_text, n_texts: int, n_samples: int, n_columns: int) -> Problem:
    """The activation matrix (when kept): its shape, each text's samples, finite values."""
    if activations is None:
        return None
    if not isinstance(activations, np.ndarray) or activations.shape != (n_samples, n_columns):
        shape = getattr(activations, "shape", None)
        return "activations", f"has shape {shape}, expected ({n_samples}, {n_columns}) (samples x neurons)"
    if not isinstance(sample_text, np.ndarray) or sample_text.shape != (n_samples,) or not _is_int_array(sample_text):
        return "sample_text", f"is not {n_samples} integer text indices"
    if n_samples and (sample_text.min() < 0 or sample_text.max() >= n_texts
                      or (np.bincount(sample_text, minlength=n_texts) == 0).any()):
        return "sample_text", f"does not give each of the {n_texts} texts at least one sample"
    if not np.isfinite(activations).all():
        return "activations", "holds NaN or infinite values"
    return None


def _is_int_array(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)
