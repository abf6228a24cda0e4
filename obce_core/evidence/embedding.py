"""Label-free evidence: what a plan does to the model's own sentence output, on held-out texts.

An encoder without a task head still has a job: its sentence embeddings. ``sentence_pooling``
finds the pooling the model was trained with (a sentence-transformers config when the folder has
one, else the task head's pooling, else [CLS]); ``sentence_embeddings`` computes it. Comparing the
pruned model's embeddings with the original's on texts the scores were NOT computed on
(``heldout_texts``) needs no labels and no training:

* ``mean_cosine`` / ``min_cosine``: cosine of each text's pruned vs original embedding;
* ``similarity_spearman``: Spearman correlation of all pairwise cosine similarities (upper
  triangle), original vs pruned: does the similarity structure survive;
* ``knn_overlap``: per text, the share of its k nearest neighbours (by cosine, itself excluded)
  under the original that are still among its k nearest under the pruned model, averaged.

``evidence.embedding_sweep.EmbeddingProbe`` keeps the original's embeddings, so each plan of a
sweep costs only the pruned model's forward passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from obce_core.forward import POOLINGS, length_sorted_batches, locked_eval, pool, tokenize_texts
from obce_core.io import JsonDataclass, read_json
from obce_core.layout import base_model
from obce_core.sentence_transformers_files import (MODULES_FILE, is_sentence_transformers_dir, model_source_dir,
                                                   sentence_transformers_modules)
from obce_core.validation import check_choice, check_int, invalid

__all__ = ["DEFAULT_K", "PoolingError", "SentencePooling", "compare_embeddings",
           "embedding_evidence", "heldout_texts", "rank_correlation", "resolve_max_length", "sentence_embeddings",
           "sentence_pooling"]

DEFAULT_K = 10
DEFAULT_MAX_LENGTH = 128  # tokens, for models that do not say (BERT's GLUE setting)
MIN_TEXTS = 3  # fewer distinct texts give no pairwise similarity structure to compare
_ST_KNOWN = ("Transformer", "Pooling", "Normalize")


class PoolingError(ValueError):
    """The sentence pooling of a model could not be determined; the message names the fix."""


@dataclass(frozen=True)
class SentencePooling(JsonDataclass):
    """How a model turns token states into its sentence output, and which source said so.

    ``pooling``: ``"cls"`` or ``"mean"`` (``obce_core.forward.pool``); ``normalize``: a
    sentence-transformers Normalize module follows (unit-length output; cosines are unchanged);
    ``max_length``: the sentence-transformers ``max_seq_length`` when known.
    """

    _json_name = "sentence pooling"

    pooling: str = "cls"
    normalize: bool = False
    source: str = "default"
    max_length: int | None = None

    def __post_init__(self):
        check_choice(self.pooling, "pooling", "SentencePooling", POOLINGS,
                     fix="'cls' reads the [CLS] token, 'mean' averages the real tokens.")
        if not isinstance(self.normalize, bool):
            raise invalid("normalize", "SentencePooling", "True or False", self.normalize)
        check_int(self.max_length, "max_length", "SentencePooling", low=2, allow_none=True)

    def describe(self) -> str:
        what = "[CLS]" if self.pooling == "cls" else "mean of the real tokens"
        return what + (", unit length" if self.normalize else "") + f" (from {self.source})"


def _st_pooling_mode(config: dict, path: Path) -> str:
    """The one pooling mode of a sentence-transformers ``1_Pooling/config.json`` (old or new keys)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        legacy = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
        modes = [m for key, m in legacy.items() if config.get(key)] or ["mean"]  # ST's own fallback
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise PoolingError(
            f"{path}: the sentence-transformers pooling is {modes}; obce computes one of {list(POOLINGS)} "
            "('cls' or 'mean'), so this model's sentence output cannot be reproduced. Pass "
            "pooling=SentencePooling(pooling='cls' or 'mean') explicitly to compare that output instead."
        )
    return modes[0]


def _read_json(path: Path) -> object:
    try:
        return read_json(path, path.name)
    except (OSError, ValueError) as exc:
        raise PoolingError(f"Could not read {path} ({exc}); restore the model folder's sentence-transformers "
                           f"files, or delete {MODULES_FILE} to fall back to the model's own pooling.") from exc


def _st_pooling(folder: Path) -> SentencePooling:
    try:  # the same layout check as the save path (one reading of modules.json)
        modules = sentence_transformers_modules(folder) or []
    except ValueError as exc:
        raise PoolingError(f"{exc} Restore it from the original model, or pass pooling=SentencePooling(...) "
                           "explicitly.") from exc
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unknown = [k for k in kinds if k not in _ST_KNOWN]
    if unknown:
        raise PoolingError(
            f"{folder / MODULES_FILE} lists module(s) {unknown} after the encoder; obce reproduces only "
            f"{list(_ST_KNOWN)}, so the sentence output cannot be determined. Pass "
            "pooling=SentencePooling(...) explicitly to compare the pooled output before those modules."
        )
    if "Pooling" not in kinds:
        raise PoolingError(f"{folder / MODULES_FILE} has no Pooling module; add one, or pass pooling=... explicitly.")
    entry = modules[kinds.index("Pooling")]
    config_path = folder / (entry["path"] or "1_Pooling") / "config.json"
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise PoolingError(f"{config_path} is not a JSON object; restore it from the original model.")
    mode = _st_pooling_mode(config, config_path)
    bert_config = folder / "sentence_bert_config.json"
    settings = _read_json(bert_config) if bert_config.is_file() else {}
    max_length = settings.get("max_seq_length") if isinstance(settings, dict) else None
    return SentencePooling(pooling=mode, normalize="Normalize" in kinds, max_length=max_length,
                           source=f"sentence-transformers config ({config_path.parent.name}/config.json)")


def sentence_pooling(model, source_dir: str | os.PathLike | None = None) -> SentencePooling:
    """The pooling ``model`` was trained with (see the module docstring).

    ``source_dir``: the model's folder (default: the folder it was loaded from, or its hub-cache
    snapshot: ``sentence_transformers_files.model_source_dir``). Its ``modules.json`` decides
    first; then a classifier's ``config.classifier_pooling`` ('cls' is the last hidden state of
    [CLS], before BERT's pooler); then [CLS]. Raises ``PoolingError`` naming the fix when the
    folder asks for a pooling or a module obce does not compute.
    """
    folder = Path(source_dir).expanduser() if source_dir is not None else model_source_dir(model)
    if is_sentence_transformers_dir(folder):
        return _st_pooling(folder)
    is_classifier = base_model(model) is not model and hasattr(model, "classifier")
    if is_classifier:
        head = getattr(model.config, "classifier_pooling", "cls")
        if head not in POOLINGS:
            raise PoolingError(f"The task head's classifier_pooling is {head!r}; obce computes {list(POOLINGS)}. "
                               "Pass pooling=SentencePooling(...) explicitly.")
        return SentencePooling(pooling=head, source=f"the task head (classifier_pooling {head!r})")
    return SentencePooling(pooling="cls", source="no sentence-transformers config and no task head: BERT's [CLS]")


def sentence_embeddings(model, tokenizer, texts, pooling: SentencePooling, *, max_length: int | None = None,
                        batch_size: int = 64) -> np.ndarray:
    """The sentence output of every text (rows in input order, float32), pooled as ``pooling`` says.

    ``max_length``: tokens per text; default the model's own (``pooling.max_length``, what
    ``SentenceTransformer.encode`` truncates at), else 128. Runs the encoder (a head model's too) under the model lock, in eval mode, without autograd;
    padding never enters a mean (``obce_core.forward.pool``).
    """
    max_length = resolve_max_length(pooling, max_length)
    check_int(batch_size, "batch_size", "sentence_embeddings", low=1)
    encoded = tokenize_texts(tokenizer, list(texts), max_length)
    out = np.empty((len(encoded), model.config.hidden_size), dtype=np.float32)
    encoder = base_model(model)
    with locked_eval(model) as device:
        for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
            hidden = encoder(**batch).last_hidden_state
            vectors = pool(hidden, batch.get("attention_mask"), pooling.pooling)
            if pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out[idx] = vectors.float().cpu().numpy()
    return out


def resolve_max_length(pooling: SentencePooling, max_length: int | None) -> int:
    """``max_length`` when given, else the model's own (``pooling.max_length``), else 128."""
    chosen = max_length if max_length is not None else (pooling.max_length or DEFAULT_MAX_LENGTH)
    return check_int(chosen, "max_length", "sentence_embeddings", low=2)


def heldout_texts(candidates, exclude=(), *, n: int | None = None, seed: int = 0) -> list[str]:
    """Distinct texts of ``candidates`` that are not in ``exclude`` (the scoring texts), a seeded
    draw of ``n`` of them (all when None). Raises ``ValueError`` naming the fix when fewer than
    3 distinct texts remain (e.g. texts that are all identical)."""
    check_int(n, "n", "heldout_texts", low=MIN_TEXTS, allow_none=True)
    excluded = {t for t in exclude if isinstance(t, str)}
    distinct = list(dict.fromkeys(t for t in candidates if isinstance(t, str) and t.strip() and t not in excluded))
    if len(distinct) < MIN_TEXTS:
        raise ValueError(
            f"Label-free evidence needs at least {MIN_TEXTS} distinct held-out texts; found {len(distinct)} "
            f"(of {len(list(candidates))} given, after removing duplicates and the {len(excluded)} scoring texts). "
            "Give more varied texts (a file with one text per line, a GLUE task's dev split, or the demo corpus)."
        )
    if n is not None and n < len(distinct):
        picked = np.sort(np.random.default_rng(seed).choice(len(distinct), size=n, replace=False))
        distinct = [distinct[i] for i in picked]
    return distinct


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=np.float64)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=np.float64)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _neighbours(similarity: np.ndarray, k: int) -> np.ndarray:
    sim = similarity.copy()
    np.fill_diagonal(sim, -np.inf)  # a text is not its own neighbour
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def compare_embeddings(original: np.ndarray, pruned: np.ndarray, *, k: int = DEFAULT_K) -> dict:
    """The label-free columns for two embeddings of the same texts (rows aligned); see the module
    docstring. ``k`` is capped at n - 1."""
    if original.shape != pruned.shape or original.ndim != 2 or len(original) < MIN_TEXTS:
        raise invalid("pruned", "compare_embeddings", f"an (n >= {MIN_TEXTS}, dim) array shaped like the original "
                      f"{original.shape}", pruned.shape)
    check_int(k, "k", "compare_embeddings", low=1)
    a, b = _unit(original), _unit(pruned)
    cosine = np.sum(a * b, axis=1)
    sim_a, sim_b = a @ a.T, b @ b.T
    upper = np.triu_indices(len(a), k=1)
    k = min(k, len(a) - 1)
    na, nb = _neighbours(sim_a, k), _neighbours(sim_b, k)
    kept = [len(set(x).intersection(y)) / k for x, y in zip(na.tolist(), nb.tolist())]
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "similarity_spearman": rank_correlation(sim_a[upper], sim_b[upper]),
            "knn_overlap": float(np.mean(kept)), "k": int(k), "n_texts": int(len(a))}


def embedding_evidence(model, pruned, tokenizer, texts, pooling: SentencePooling, *, k: int = DEFAULT_K,
                       max_length: int | None = None) -> dict:
    """``compare_embeddings`` of ``model`` and ``pruned`` on ``texts`` (held-out texts: see
    ``heldout_texts``) with the sentence output ``pooling``."""
    texts = heldout_texts(texts)
    original = sentence_embeddings(model, tokenizer, texts, pooling, max_length=max_length)
    return compare_embeddings(original, sentence_embeddings(pruned, tokenizer, texts, pooling, max_length=max_length), k=k)
