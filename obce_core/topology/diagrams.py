"""Per-layer persistence diagrams of a model's representation: ``layer_diagrams`` -> ``LayerDiagrams``.

Each text's [CLS] (or mean-pooled) vector after a layer is a point; the Vietoris-Rips persistence
of that cloud (H0: clusters merging, H1: loops) shows how the layer arranges the texts. Hidden
state 0 is the embeddings' output (named ``embeddings``); hidden state ``l`` is the output of
encoder layer ``L{l-1}``. All layers come from one forward pass (:func:`layer_clouds`); time and
memory are bounded by ``max_points``, a seeded subsample of the texts, and by a memory budget
checked before each complex is built (:mod:`obce_core.topology.rips`).

A layer whose vectors are all identical (the [CLS] embedding is the same for every text: same
token, same position) gets the trivial diagram, ``n - 1`` zero-length H0 bars and one infinite
bar, and is listed in ``identical``; when every requested layer is like that, ``ValueError``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from obce_core.choices import DEFAULT_MAX_POINTS  # defined without torch for the CLI's parser
from obce_core.io import atomic_path, load_json
from obce_core.persistence import merge_events
from obce_core.scoring import MemoryBudgetError
from obce_core.topology.clouds import POOLINGS, layer_clouds, layer_name, seeded_subsample
from obce_core.topology.distances import consecutive_table
from obce_core.topology.rips import (
    DEFAULT_MEMORY_BUDGET_GB,
    MAX_DIMENSIONS,
    METRICS,
    distance_matrix,
    enclosing_radius,
    rips_diagram_from_distances,
)
from obce_core.validation import check_choice, check_int, check_number

__all__ = ["DEFAULT_MAX_POINTS", "LayerDiagrams", "layer_diagrams"]



@dataclass
class LayerDiagrams:
    """Persistence diagrams of one model's layers on one set of texts.

    ``diagrams[l]`` is an ``(n, 3)`` array of (birth, death, dimension) for hidden state ``l``;
    ``clouds[l]`` the float32 points it was computed from (one row per text in ``text_indices``,
    which index the texts passed in); ``caps[l]`` the edge-length cap (enclosing radius).
    """

    diagrams: dict[int, np.ndarray]
    clouds: dict[int, np.ndarray]
    text_indices: np.ndarray
    n_texts: int
    settings: dict
    caps: dict[int, float]
    identical: tuple[int, ...] = ()
    seconds: dict = field(default_factory=dict)
    _consecutive: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.diagrams))

    @property
    def n_points(self) -> int:
        return int(len(self.text_indices))

    @property
    def subsampled(self) -> bool:
        return self.n_points < self.n_texts

    @staticmethod
    def name(layer: int) -> str:
        return layer_name(layer)

    def merge_edges(self, layer: int) -> list[tuple[int, int, float]]:
        """The H0 merges of a layer as minimum-spanning-tree edges ``(i, j, distance)``, in merge order.

        For the cosine metric the tree is the Euclidean one of the unit vectors (``1 - cos`` is
        ``|u - v|^2 / 2`` there, the same order of edges), with lengths turned back into ``1 - cos``.
        """
        x = self.clouds[layer].astype(np.float64)
        if self.settings["metric"] == "euclidean":
            return merge_events(x)
        units = x / np.linalg.norm(x, axis=1, keepdims=True)
        return [(i, j, length**2 / 2) for i, j, length in merge_events(units)]

    def consecutive(self) -> pd.DataFrame:
        """``consecutive_table(self)``, computed once (bottleneck distances cost ~40 ms a pair)."""
        if self._consecutive is None:
            self._consecutive = consecutive_table(self)
        return self._consecutive

    def summary(self) -> pd.DataFrame:
        """One row per layer: points, H0 total persistence (finite bars), number of H1 bars, their
        total and longest persistence, the edge cap, and the bottleneck distance to the layer before."""
        rows = []
        for layer in self.layers:
            d = self.diagrams[layer]
            h0, h1 = d[(d[:, 2] == 0) & np.isfinite(d[:, 1])], d[d[:, 2] == 1]
            row = {"layer": layer, "name": self.name(layer), "points": self.n_points,
                   "h0_total": float((h0[:, 1] - h0[:, 0]).sum()), "cap": self.caps[layer]}
            if self.settings["max_dimension"] >= 1:
                life = h1[:, 1] - h1[:, 0]
                row.update(h1_bars=int(len(h1)), h1_total=float(life.sum()), h1_longest=float(life.max(initial=0.0)))
            row["identical"] = layer in self.identical
            rows.append(row)
        distances = self.consecutive().drop(columns=["name", "previous"])
        prev = distances.rename(columns=lambda c: c.replace("bottleneck_", "bottleneck_prev_"))
        return pd.DataFrame(rows).merge(prev, on="layer")

    # -- files -----------------------------------------------------------------------------
    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write every diagram, cloud and setting to one ``.npz`` file (atomically)."""
        meta = {"n_texts": self.n_texts, "settings": self.settings, "identical": list(self.identical),
                "caps": {str(k): v for k, v in self.caps.items()}, "seconds": self.seconds,
                "names": {str(k): self.name(k) for k in self.layers}}
        arrays = {f"diagram_{k}": v for k, v in self.diagrams.items()}
        arrays.update({f"cloud_{k}": v for k, v in self.clouds.items()})
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, text_indices=self.text_indices, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "LayerDiagrams":
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files:
                raise ValueError(f"{path} is not a file written by LayerDiagrams.save_npz (no 'meta' entry).")
            meta = load_json(str(data["meta"]), f"the 'meta' entry of {path}", expect=dict)
            layers = sorted(int(k.split("_", 1)[1]) for k in data.files if k.startswith("diagram_"))
            return cls(
                diagrams={k: data[f"diagram_{k}"] for k in layers}, clouds={k: data[f"cloud_{k}"] for k in layers},
                text_indices=data["text_indices"], n_texts=int(meta["n_texts"]), settings=meta["settings"],
                caps={int(k): float(v) for k, v in meta["caps"].items()}, identical=tuple(meta["identical"]),
                seconds=meta.get("seconds", {}),
            )


def _check_layers(layers, num_states: int) -> list[int]:
    if layers is None:
        return list(range(num_states))
    out = sorted({check_int(k, "layers", "layer_diagrams", low=0, high=num_states - 1,
                            fix=f"Hidden states run from 0 (embeddings) to {num_states - 1} (the last layer).")
                  for k in layers})
    if not out:
        raise ValueError("The 'layers' parameter of layer_diagrams is empty; pass None for every layer.")
    return out


def layer_diagrams(
    model,
    tokenizer,
    texts: Sequence,
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "cls",
    max_dimension: int = 1,
    max_points: int = DEFAULT_MAX_POINTS,
    metric: str = "euclidean",
    seed: int = 0,
    max_length: int = 128,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    progress: Callable[[int, int, str], None] | None = None,
) -> LayerDiagrams:
    """The Rips persistence diagram of every requested layer's point cloud (see the module docstring).

    ``layers``: hidden-state indices (0 = embeddings; ``None`` = all). When there are more texts
    than ``max_points``, a subsample chosen by ``seed`` is used (``result.subsampled``).
    ``progress(done, total, message)`` counts the texts of the forward pass, then one per layer.
    Raises ``ValueError`` (with the fix) for too few texts, identical vectors everywhere, a zero
    vector under the cosine metric, and ``MemoryBudgetError`` for a size over ``memory_budget_gb``.
    """
    owner = "layer_diagrams"
    check_choice(pooling, "pooling", owner, POOLINGS)
    check_choice(metric, "metric", owner, METRICS)
    check_choice(max_dimension, "max_dimension", owner, MAX_DIMENSIONS, fix="0 gives clusters (H0), 1 adds loops (H1).")
    check_int(max_points, "max_points", owner, low=2, fix="It bounds the points (texts) per diagram; 256 takes about a second.")
    check_int(seed, "seed", owner, low=0)
    budget = check_number(memory_budget_gb, "memory_budget_gb", owner, low=0, low_open=True)
    num_states = int(model.config.num_hidden_layers) + 1
    chosen = _check_layers(layers, num_states)
    n_texts = len(texts)
    keep = seeded_subsample(n_texts, max_points, seed)
    n = len(keep)
    need_points = 4 if max_dimension >= 1 else 2
    if n < need_points:
        raise ValueError(
            f"{'H1 (loops) needs at least 4 points: 3 points always fill their triangle' if max_dimension else 'A diagram needs at least 2 points'}; "
            f"got {n} text(s). Pass more texts" + (", or max_dimension=0 for H0 only." if max_dimension else ".")
        )
    need_gb = n * n * 8 / 2**30
    if need_gb > budget:
        raise MemoryBudgetError(
            f"{n:,} points need a {need_gb:.2f} GiB distance matrix per layer, over the memory budget of {budget:g} GiB. "
            "Lower max_points or raise memory_budget_gb."
        )
    total = n + len(chosen)

    def tell(done: int, message: str) -> None:
        if progress is not None:
            progress(done, total, message)

    start = time.perf_counter()
    clouds = layer_clouds(model, tokenizer, [texts[i] for i in keep], pooling=pooling, max_length=max_length,
                          progress=lambda done, _n: tell(done, f"Forward pass: {done} of {n} texts"))
    forward = time.perf_counter() - start
    diagrams, caps, identical, kept_clouds = {}, {}, [], {}
    for step, layer in enumerate(chosen, 1):
        tell(n + step - 1, f"Diagram of {layer_name(layer)} ({step} of {len(chosen)})")
        d = distance_matrix(clouds[layer], metric)
        kept_clouds[layer] = clouds[layer]
        caps[layer] = enclosing_radius(d)
        if caps[layer] == 0.0:  # all vectors identical: every point merges at 0, no loop
            identical.append(layer)
            trivial = np.zeros((n, 3))
            trivial[-1, 1] = np.inf
            diagrams[layer] = trivial
            continue
        diagrams[layer] = rips_diagram_from_distances(d, max_dimension=max_dimension, memory_budget_gb=budget)
    tell(total, "Done")
    if len(identical) == len(chosen):
        where = ", ".join(layer_name(k) for k in chosen)
        raise ValueError(
            f"Every text gives the same vector at {where} (all distances are 0), so there is no topology to show. "
            + ("At the embeddings, [CLS] is the same token at the same position for every text: use pooling='mean' "
               "or include later layers. " if pooling == "cls" and chosen == [0] else "")
            + "Pass texts that differ from each other."
        )
    settings = {"pooling": pooling, "metric": metric, "max_dimension": int(max_dimension), "max_points": int(max_points),
                "seed": int(seed), "max_length": int(max_length)}
    result = LayerDiagrams(
        diagrams=diagrams, clouds=kept_clouds, text_indices=keep, n_texts=n_texts, settings=settings, caps=caps,
        identical=tuple(identical), seconds={"forward": forward, "diagrams": time.perf_counter() - start - forward},
    )
    begin = time.perf_counter()
    result.consecutive()  # filled now, so that every copy of the result (a cached one too) carries it
    result.seconds["distances"] = time.perf_counter() - begin
    return result
