"""Scoring every neuron by the 0-D persistence of its outputs, with an on-disk cache.

``score_model`` captures activations, computes ``rf`` (plus mean and std) for every neuron and
ranks neurons inside each (layer, component). Ties are common: at [CLS], layer-0 query/key/value
see the same input for every sentence, so all of them have rf = 0. Ties are shown (``rf_ties``)
and broken by one documented rule: lower rf, then lower std, then lower neuron index, ranks lower
(``rank`` 0 = least important = pruned first).

Scores are trusted by nothing: a fresh result is checked before it enters the cache, and a file
is checked when it is read (:mod:`obce_core.scoring.checks`), because pruning folds ``mean`` into
biases and a tampered value would silently break the pruned model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from obce_core.io import JsonDataclass, JsonInputError, atomic_path, load_json, publish_directory
from obce_core.loading import check_max_length, model_fingerprint
from obce_core.persistence import CONVENTIONS, persistence_diagram, rf_mean_std_batch
from obce_core.scoring.capture import (
    COMPONENTS,
    DEFAULT_MEMORY_BUDGET_GB,
    PRUNABLE_COMPONENTS,
    TOKEN_MODES,
    CaptureError,
    Text,
    capture_activations,
    check_memory_budget,
)
from obce_core.scoring.checks import ScoresFileError, activations_problem, metadata_problem, table_problem
from obce_core.validation import check_choice, check_int

__all__ = [
    "NeuronScores",
    "ScoreSettings",
    "ScoresFileError",
    "cached_scores",
    "default_cache_dir",
    "score_model",
    "scores_from_activations",
    "texts_fingerprint",
]

CACHE_FORMAT = 1


@dataclass
class ScoreSettings(JsonDataclass):
    """How activations are captured and measured; every field is part of the cache key.

    ``batch_size`` is in the key because batching changes the scores by float rounding: padded
    batches of other sizes take other matrix-product paths. Measured on all-MiniLM-L6-v2 with 128
    demo sentences, batch 32 vs batch 1: activations differ by up to 5e-5 and rf by up to 4e-6,
    which reorders 412 of 20,736 ranks (near-ties, e.g. layer 0's rf = 0 ties broken by std).
    Equal settings give bit-identical scores, so a cached result is exactly what a rerun gives.
    """

    _json_name = "score settings"

    token: str = "cls"
    max_length: int = 128
    batch_size: int = 32
    convention: str = "length"

    def __post_init__(self):
        check_choice(self.token, "token", "ScoreSettings", TOKEN_MODES, fix="'cls' is the paper's setting.")
        check_choice(self.convention, "convention", "ScoreSettings", CONVENTIONS)
        check_int(self.max_length, "max_length", "ScoreSettings", low=2)
        check_int(self.batch_size, "batch_size", "ScoreSettings", low=1)


@dataclass
class NeuronScores:
    """Per-neuron scores of one model on one set of texts.

    ``table`` has one row per neuron: ``layer`` (0-based), ``component``, ``neuron``, ``rf``,
    ``mean``, ``std``, ``prunable``, ``rank`` (0 = lowest within its layer and component),
    ``rf_ties`` (how many neurons of that group share this rf; 1 = no tie) and ``column`` (the
    neuron's column in ``activations``). ``activations`` (float32, samples x columns) lets a
    viewer draw any neuron's outputs and diagram; it is absent when loaded from a parquet file.
    """

    table: pd.DataFrame
    settings: ScoreSettings
    model_fingerprint: str
    texts_fingerprint: str
    n_texts: int
    n_samples: int
    activations: np.ndarray | None = field(default=None, repr=False)
    sample_text: np.ndarray | None = field(default=None, repr=False)

    # -- lookups ---------------------------------------------------------------------------
    def group(self, layer: int, component: str) -> pd.DataFrame:
        sel = self.table[(self.table["layer"] == layer) & (self.table["component"] == component)]
        if sel.empty:
            raise KeyError(
                f"No neurons for layer {layer}, component {component!r}; layers are "
                f"0..{int(self.table['layer'].max())}, components {list(COMPONENTS)}."
            )
        return sel

    def values(self, layer: int, component: str, neuron: int) -> np.ndarray:
        """The neuron's output for every sample (what its persistence is computed on)."""
        if self.activations is None:
            raise ValueError(
                "These scores were loaded without activations (a parquet file keeps only the table); "
                "rescore with score_model to draw a neuron's outputs."
            )
        group = self.group(layer, component)
        row = group[group["neuron"] == neuron]
        if row.empty:
            raise KeyError(f"Layer {layer} {component} has neurons 0..{len(group) - 1}; got {neuron}.")
        return self.activations[:, int(row["column"].iloc[0])]

    def diagram(self, layer: int, component: str, neuron: int) -> np.ndarray:
        """The neuron's 0-D persistence diagram, ``(n, 3)`` birth/death/dimension."""
        return persistence_diagram(self.values(layer, component, neuron), convention=self.settings.convention)

    def summary(self) -> pd.DataFrame:
        """Per layer and component: count, rf quantiles and ties at zero (what the CLI prints)."""
        g = self.table.groupby(["layer", "component"], observed=True)["rf"]
        out = pd.DataFrame(
            {
                "count": g.size(),
                "rf_min": g.min(),
                "rf_q25": g.quantile(0.25),
                "rf_median": g.median(),
                "rf_q75": g.quantile(0.75),
                "rf_max": g.max(),
                "zero_rf": g.apply(lambda s: int((s == 0).sum())),
            }
        )
        return out.reset_index()

    # -- files -----------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "settings": self.settings.to_dict(),
            "model_fingerprint": self.model_fingerprint,
            "texts_fingerprint": self.texts_fingerprint,
            "n_texts": self.n_texts,
            "n_samples": self.n_samples,
        }

    def problem(self) -> tuple[str, str] | None:
        """``(field, what is wrong)`` for the first inconsistency, or None when the scores are sound."""
        return (metadata_problem(self._meta(), CACHE_FORMAT) or table_problem(self.table)
                or activations_problem(self.activations, self.sample_text, self.n_texts, self.n_samples, len(self.table)))

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write the table (and the metadata that ties it to a model) atomically."""
        arrow = pa.Table.from_pandas(self.table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"obce": json.dumps(self._meta()).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(arrow, tmp)
        return Path(path)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> "NeuronScores":
        """Read a scores file, refusing (``ScoresFileError`` naming file and field) anything inconsistent."""
        path = Path(path)
        if not path.is_file():
            raise ScoresFileError(f"Scores file {str(path)!r} does not exist; create it with `python -m obce_core score ... --out {path}`.")
        try:
            arrow = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ScoresFileError(f"Scores file {str(path)!r} is not a readable parquet file: {exc}") from exc
        raw = (arrow.schema.metadata or {}).get(b"obce")
        if raw is None:
            raise ScoresFileError(
                f"{str(path)!r} is a parquet file without obce metadata; expected a file written by "
                "`python -m obce_core score` (NeuronScores.to_parquet)."
            )
        try:
            meta = load_json(raw, "the obce metadata", expect=dict)  # depth-limited: a file may come from anyone
        except JsonInputError as exc:
            raise ScoresFileError.at(path, "obce metadata", f"is not usable ({exc})") from exc
        problem = metadata_problem(meta, CACHE_FORMAT)
        if problem is None:
            try:
                settings = ScoreSettings.from_dict(meta["settings"])
            except ValueError as exc:
                problem = ("settings", f"is not valid: {exc}")
        if problem is None:
            table = arrow.to_pandas()
            if "component" in table:
                table["component"] = pd.Categorical(table["component"].astype(str), categories=COMPONENTS)
            problem = table_problem(table)
        if problem is not None:
            raise ScoresFileError.at(path, *problem)
        return cls(
            table=table,
            settings=settings,
            model_fingerprint=meta["model_fingerprint"],
            texts_fingerprint=meta["texts_fingerprint"],
            n_texts=int(meta["n_texts"]),
            n_samples=int(meta["n_samples"]),
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write table, activations and metadata as one directory, atomically (temp dir + rename).

        Replaces an existing directory only if it holds a scores table (a cache entry).
        """

        def fill(tmp: Path) -> None:
            self.to_parquet(tmp / "table.parquet")
            if self.activations is not None:
                np.save(tmp / "activations.npy", self.activations)
                np.save(tmp / "sample_text.npy", self.sample_text)

        return publish_directory(directory, fill, replace=lambda d: (d / "table.parquet").exists())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "NeuronScores":
        """Read a directory written by :meth:`save`, checking the activations' shapes too."""
        directory = Path(directory)
        scores = cls.from_parquet(directory / "table.parquet")
        if (directory / "activations.npy").is_file():
            try:
                scores.activations = np.load(directory / "activations.npy")
                scores.sample_text = np.load(directory / "sample_text.npy")
            except (OSError, ValueError) as exc:
                raise ScoresFileError.at(directory / "activations.npy", "activations", f"is unreadable ({exc})") from exc
            problem = activations_problem(scores.activations, scores.sample_text, scores.n_texts,
                                          scores.n_samples, len(scores.table))
            if problem is not None:
                raise ScoresFileError.at(directory / "activations.npy", *problem)
        return scores


def default_cache_dir() -> Path:
    """``$OBCE_CACHE_DIR``, else ``~/.cache/obce``."""
    env = os.environ.get("OBCE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "obce"


def texts_fingerprint(texts: Sequence[Text]) -> str:
    items = [list(t) if isinstance(t, (tuple, list)) else t for t in texts]
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def _rank_table(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``rank`` and ``rf_ties`` by the documented rule (rf, then std, then neuron index)."""
    ordered = table.sort_values(["layer", "component", "rf", "std", "neuron"], kind="stable")
    ranks = ordered.groupby(["layer", "component"], observed=True).cumcount()
    table["rank"] = ranks.reindex(table.index).astype(np.int64)
    table["rf_ties"] = table.groupby(["layer", "component", "rf"], observed=True)["neuron"].transform("size").astype(np.int64)
    return table


def scores_from_activations(values: np.ndarray, columns: pd.DataFrame, settings: ScoreSettings) -> pd.DataFrame:
    """The per-neuron table for a captured activation matrix."""
    table = columns.copy()
    rf, mean, std = rf_mean_std_batch(torch.from_numpy(values), convention=settings.convention)
    table["rf"], table["mean"], table["std"] = rf.numpy(), mean.numpy(), std.numpy()
    table["prunable"] = table["component"].isin(PRUNABLE_COMPONENTS).to_numpy()
    table["column"] = np.arange(len(table), dtype=np.int64)
    return _rank_table(table)


def _cache_entry(fingerprint: str, text_key: str, settings: ScoreSettings, cache_dir) -> Path:
    key_data = {"format": CACHE_FORMAT, "model": fingerprint, "texts": text_key, **settings.to_dict()}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / "scores" / key


def _read_cache(entry: Path, fingerprint: str, text_key: str, settings: ScoreSettings) -> "NeuronScores | None":
    """The cached scores in ``entry`` when they are these scores; None when absent or damaged."""
    if not (entry / "table.parquet").is_file():
        return None
    try:
        cached = NeuronScores.load(entry)
    except (ScoresFileError, OSError, ValueError):
        return None  # a damaged entry is recomputed (and overwritten) by score_model
    same = (cached.model_fingerprint, cached.texts_fingerprint, cached.settings) == (fingerprint, text_key, settings)
    return cached if same else None


def cached_scores(model, texts: Sequence[Text], *, token: str = "cls", max_length: int = 128, batch_size: int = 32,
                  convention: str = "length", cache_dir: str | os.PathLike | None = None) -> "NeuronScores | None":
    """What :func:`score_model` with these arguments would answer from its disk cache, without
    computing anything: the scores, or None when they are not cached (or the entry is damaged)."""
    settings = ScoreSettings(token=token, max_length=max_length, batch_size=batch_size, convention=convention)
    if len(texts) < 2:
        return None
    fingerprint, text_key = model_fingerprint(model), texts_fingerprint(texts)
    return _read_cache(_cache_entry(fingerprint, text_key, settings, cache_dir), fingerprint, text_key, settings)


def score_model(
    model,
    tokenizer,
    texts: Sequence[Text],
    *,
    token: str = "cls",
    max_length: int = 128,
    batch_size: int = 32,
    convention: str = "length",
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> NeuronScores:
    """Score every neuron of ``model`` on ``texts``; identical calls are answered from the cache.

    The cache key is the model fingerprint, the texts and every field of :class:`ScoreSettings`
    (batch size included); ``cache_dir`` defaults to :func:`default_cache_dir`. A result enters
    the cache only after it passed its consistency check (one sample per text, or per token for
    ``token='all'``; one row per neuron; every value finite); otherwise ``CaptureError`` is raised
    and nothing is written. Safe to call from several threads on one shared model (the capture
    holds the model's lock). ``progress(done, total)`` is called after every batch.
    """
    settings = ScoreSettings(token=token, max_length=max_length, batch_size=batch_size, convention=convention)
    check_memory_budget(memory_budget_gb, "score_model")
    # Longer inputs than the model has positions end in a tensor-size error deep in the forward pass.
    check_max_length(max_length, getattr(model.config, "max_position_embeddings", None), None)
    if len(texts) < 2:
        raise ValueError(f"Scoring needs at least 2 texts to measure a spread; got {len(texts)}.")
    fingerprint = model_fingerprint(model)
    text_key = texts_fingerprint(texts)
    entry = _cache_entry(fingerprint, text_key, settings, cache_dir)
    if use_cache:
        cached = _read_cache(entry, fingerprint, text_key, settings)
        if cached is not None:
            return cached
    acts = capture_activations(
        model, tokenizer, texts, token=token, batch_size=batch_size, max_length=max_length,
        memory_budget_gb=memory_budget_gb, progress=progress,
    )
    scores = NeuronScores(
        table=scores_from_activations(acts.values, acts.columns, settings),
        settings=settings,
        model_fingerprint=fingerprint,
        texts_fingerprint=text_key,
        n_texts=len(texts),
        n_samples=acts.values.shape[0],
        activations=acts.values,
        sample_text=acts.sample_text,
    )
    problem = scores.problem()
    if problem is not None:
        raise CaptureError(f"The scores of this run are inconsistent: field {problem[0]!r} {problem[1]}; nothing was cached.")
    if use_cache:
        try:
            scores.save(entry)
        except OSError:
            pass  # a read-only or full cache must not lose the result the caller is waiting for
    return scores
