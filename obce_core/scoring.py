"""Scoring every neuron by the 0-D persistence of its outputs, with an on-disk cache.

``score_model`` captures activations, computes ``rf`` (plus mean and std) for every neuron and
ranks neurons inside each (layer, component). Ties are common: at [CLS], layer-0 query/key/value
see the same input for every sentence, so all of them have rf = 0. Ties are shown (``rf_ties``)
and broken by one documented rule: lower rf, then lower std, then lower neuron index, ranks lower
(``rank`` 0 = least important = pruned first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from obce_core.capture import (
    COMPONENTS,
    DEFAULT_MEMORY_BUDGET_GB,
    PRUNABLE_COMPONENTS,
    TOKEN_MODES,
    Text,
    capture_activations,
)
from obce_core.io import JsonDataclass
from obce_core.models import model_fingerprint
from obce_core.persistence import CONVENTIONS, persistence_diagram, rf_mean_std_batch

__all__ = ["ScoreSettings", "NeuronScores", "ScoresFileError", "score_model", "default_cache_dir", "texts_fingerprint"]

CACHE_FORMAT = 1


class ScoresFileError(ValueError):
    """A scores file is missing, unreadable or not written by obce."""


@dataclass
class ScoreSettings(JsonDataclass):
    """How activations are captured and measured; part of the cache key."""

    _json_name = "score settings"

    token: str = "cls"
    max_length: int = 128
    batch_size: int = 32
    convention: str = "length"

    def __post_init__(self):
        if self.token not in TOKEN_MODES:
            raise ValueError(f"token must be one of {TOKEN_MODES}; got {self.token!r}. 'cls' is the paper's setting.")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}; got {self.convention!r}.")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2; got {self.max_length!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {self.batch_size!r}.")


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

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write the table (and the metadata that ties it to a model) atomically."""
        path = Path(path)
        arrow = pa.Table.from_pandas(self.table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"obce": json.dumps(self._meta()).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(arrow, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> "NeuronScores":
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
        meta = json.loads(raw)
        table = arrow.to_pandas()
        table["component"] = pd.Categorical(table["component"].astype(str), categories=COMPONENTS)
        return cls(
            table=table,
            settings=ScoreSettings.from_dict(meta["settings"]),
            model_fingerprint=meta["model_fingerprint"],
            texts_fingerprint=meta["texts_fingerprint"],
            n_texts=meta["n_texts"],
            n_samples=meta["n_samples"],
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write table, activations and metadata as one directory, atomically (temp dir + rename)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            self.to_parquet(tmp / "table.parquet")
            if self.activations is not None:
                np.save(tmp / "activations.npy", self.activations)
                np.save(tmp / "sample_text.npy", self.sample_text)
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "NeuronScores":
        directory = Path(directory)
        scores = cls.from_parquet(directory / "table.parquet")
        if (directory / "activations.npy").is_file():
            scores.activations = np.load(directory / "activations.npy")
            scores.sample_text = np.load(directory / "sample_text.npy")
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

    The cache key is the model fingerprint, the texts and the settings; ``cache_dir`` defaults to
    :func:`default_cache_dir`. ``progress(done, total)`` is called after every batch.
    """
    settings = ScoreSettings(token=token, max_length=max_length, batch_size=batch_size, convention=convention)
    if len(texts) < 2:
        raise ValueError(f"Scoring needs at least 2 texts to measure a spread; got {len(texts)}.")
    fingerprint = model_fingerprint(model)
    text_key = texts_fingerprint(texts)
    # batch_size changes nothing in the result (texts are written back in order), so it is not in the key.
    key_data = {"format": CACHE_FORMAT, "model": fingerprint, "texts": text_key, **settings.to_dict()}
    key_data.pop("batch_size")
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    entry = Path(cache_dir or default_cache_dir()) / "scores" / key
    if use_cache and (entry / "table.parquet").is_file():
        try:
            return NeuronScores.load(entry)
        except (ScoresFileError, OSError, ValueError):
            pass  # a damaged entry is recomputed and overwritten below
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
    if use_cache:
        try:
            scores.save(entry)
        except OSError:
            pass  # a read-only or full cache must not lose the result the caller is waiting for
    return scores
