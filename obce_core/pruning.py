"""Pruning BERT by per-neuron scores: plan, fast unit selection, report, model surgery, save/reload.

The steps are separate so a dashboard can move a slider without touching the model:

1. ``PruningPlan``: what to remove (a percentile per group, per-layer overrides, scorer,
   compensation). It checks itself and round-trips through JSON.
2. ``select_units(scores, plan, model) -> PruningSelection``: which units each layer keeps.
   Pure index work on the scores table (milliseconds; the model fingerprint and weight-magnitude
   scores are cached per model).
3. ``build_report(model, selection) -> PruningReport``: parameters, bytes, kept units and an
   estimated FLOPs ratio, computed in closed form from the config and the selection (no copy).
4. ``prune(model, scores, plan) -> (pruned_model, report)``: a new, physically smaller
   ``ObceBertModel`` / ``ObceBertForSequenceClassification``; the input model is untouched.
5. ``save_pruned`` / ``load_plan``: an atomic directory that ``transformers`` reloads bit-exactly
   once ``obce_core`` is imported.

Groups and rules
----------------
* ``ffn``: FFN units (``intermediate`` neurons). Percentile ``p`` removes
  ``floor(p * n / 100)`` of the ``n`` units of a layer, capped at ``n - 1`` (one unit always stays).
* ``v``: value dims. ``floor(p * d / 100)`` dims are removed from EVERY head (``d`` = the layer's
  value head size), capped at ``d - 1``; each head keeps its own best-scoring dims. All heads must
  keep the same size because attention views the value projection as ``heads x d``. The share
  removed from a layer is therefore ``floor(p * d / 100) / d``, which can be a little under ``p``
  (for d = 32 and p = 30: 9 of 32 = 28.1 %).
* ``qk``: query and key dims, removed as matched pairs (query dim ``i`` and key dim ``i`` of a head
  meet in one term ``q_i * k_i`` of the attention logit, so removing one without the other is
  meaningless). Same per-head count rule as ``v``. The pair score is the MEAN of the two units'
  scores: a flat factor alone does not make the term ``q_i * k_i`` flat (a constant non-zero query
  dim scales the key's variation straight into the logits), so ``min`` would cut pairs whose other
  half carries signal; the mean ranks a pair low only when both halves score low.
* ``skip_layers = k`` leaves the first ``k`` layers unpruned (at the [CLS] token, layer 0's
  query/key/value see the same input for every sentence, so their rf is 0 and says nothing). An
  explicit ``layers[i]`` override wins over ``skip_layers``.

Scorers (lower = pruned first)
------------------------------
* ``rf`` (default): the unit's 0-D persistence score from the table; ties broken by lower
  ``std``, then lower index (the table's own ranking rule).
* ``std``: the unit's standard deviation over the scored samples (a no-topology control).
* ``magnitude``: the product of the L2 norms of the weights on the two sides of the unit:
  FFN unit ``j``: ``||W_in[j, :]|| * ||W_out[:, j]||``; value dim ``j``:
  ``||W_v[j, :]|| * ||W_o[:, j]||``; Q/K pair ``i``: ``||W_q[i, :]|| * ||W_k[i, :]||`` (the
  bilinear term's weights). A product rather than a sum: rescaling a unit's input weights by ``a``
  and its output weights by ``1/a`` changes the product by nothing and the sum a lot. Biases are
  left out.
* ``random``: uniform scores from ``numpy.random.default_rng([seed, layer, group])``, so each
  group's draw depends only on the seed, not on the other groups' settings.

Compensation (what replaces a removed unit)
-------------------------------------------
A removed FFN unit ``j`` adds ``W_out[:, j] * c_j`` to ``output.dense.bias``; a removed value dim
``j`` adds ``W_o[:, j] * c_j`` to ``attention.output.dense.bias`` (exact for a constant value dim:
softmax rows sum to 1, so the context keeps ``c_j``). ``c_j`` is the unit's ``mean`` in the scores
table (``mean + std`` for ``compensation="mean+std"``; ``none`` adds nothing). With [CLS] scores
the mean is measured at [CLS] and applied at every token: exact for constant units, an
approximation otherwise. Q/K pairs get NO compensation: removing pair ``i`` drops
``q_i * k_i * scale`` from the logit of every (query, key) position; the term varies across key
positions, and softmax is only invariant to shifts that are constant along a row, so no bias can
absorb it. (When the key dim is constant over a sequence the term is such a shift and removing the
pair is already exact.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import BertForSequenceClassification, BertModel

from obce_core.capture import PRUNABLE_COMPONENTS
from obce_core.io import JsonDataclass
from obce_core.models import base_model, encoder_layers, model_fingerprint
from obce_core.modeling import (
    ObceBertConfig,
    ObceBertForSequenceClassification,
    ObceBertModel,
)

__all__ = [
    "GROUPS",
    "COMPENSATIONS",
    "SCORERS",
    "PLAN_FILE",
    "REPORT_FILE",
    "PruningPlan",
    "PruningSelection",
    "PruningReport",
    "select_units",
    "build_report",
    "prune",
    "save_pruned",
    "load_plan",
]

GROUPS = ("ffn", "qk", "v")
COMPENSATIONS = ("none", "mean", "mean+std")
SCORERS = ("rf", "std", "magnitude", "random")
PLAN_FILE = "obce_plan.json"
REPORT_FILE = "obce_report.json"
# The scores-table component(s) behind each group.
_GROUP_COMPONENTS = {"ffn": ("intermediate",), "qk": ("query", "key"), "v": ("value",)}
_GROUP_NAMES = {"ffn": "FFN units", "qk": "query/key dim pairs per head", "v": "value dims per head"}
DEFAULT_FLOPS_SEQ_LEN = 128


# ------------------------------------------------------------------------------------------
# Plan
# ------------------------------------------------------------------------------------------
def _check_percent(value: Any, where: str, group: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{where} must be a number in [0, 100) (the percentage of {_GROUP_NAMES[group]} removed); "
            f"got {value!r}. Use e.g. 30 for 30 %."
        )
    if not 0 <= value < 100:
        raise ValueError(
            f"{where} must be in [0, 100) (the percentage of {_GROUP_NAMES[group]} removed; 100 would "
            f"remove every unit, and each head keeps at least one dim); got {value!r}. Use a value "
            "such as 50."
        )
    return value


def _n_removed(percent: float, n: int) -> int:
    """``floor(percent * n / 100)``, capped at ``n - 1``.

    The rounding guard keeps float noise (29 * 100 / 100 written as 28.999...) from losing a unit.
    """
    if percent <= 0 or n <= 1:
        return 0
    return min(int(math.floor(round(percent * n / 100.0, 9))), n - 1)


@dataclass
class PruningPlan(JsonDataclass):
    """What to prune. Percentiles are in [0, 100); see the module docstring for the rules.

    ``layers`` maps a layer index (int, or its string form as JSON writes it) to overrides such as
    ``{"ffn": 70, "qk": 0}``; an override wins over the global value and over ``skip_layers``.
    """

    _json_name = "pruning plan"
    _json_hint = " (Per-layer settings go under 'layers', e.g. {\"layers\": {\"3\": {\"ffn\": 70}}}.)"

    ffn: float = 0
    qk: float = 0
    v: float = 0
    skip_layers: int = 0
    compensation: str = "mean"
    scorer: str = "rf"
    seed: int = 0
    layers: dict[int, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        for group in GROUPS:
            _check_percent(getattr(self, group), f"PruningPlan.{group}", group)
        if isinstance(self.skip_layers, bool) or not isinstance(self.skip_layers, int) or self.skip_layers < 0:
            raise ValueError(
                f"PruningPlan.skip_layers must be an integer >= 0 (how many first layers stay unpruned); "
                f"got {self.skip_layers!r}. Use 0 to prune every layer."
            )
        if self.compensation not in COMPENSATIONS:
            raise ValueError(
                f"PruningPlan.compensation must be one of {COMPENSATIONS}; got {self.compensation!r}. "
                "'mean' folds each removed unit's mean output into the next bias."
            )
        if self.scorer not in SCORERS:
            raise ValueError(
                f"PruningPlan.scorer must be one of {SCORERS}; got {self.scorer!r}. 'rf' is the paper's "
                "persistence score; std, magnitude and random are controls."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"PruningPlan.seed must be an integer >= 0 (used by scorer 'random'); got {self.seed!r}.")
        if not isinstance(self.layers, dict):
            raise ValueError(
                f"PruningPlan.layers must be a dict {{layer index: {{group: percent}}}}; got "
                f"{type(self.layers).__name__}. Example: {{3: {{'ffn': 70}}}}."
            )
        layers: dict[int, dict[str, float]] = {}
        for key, overrides in self.layers.items():
            try:
                index = int(key)
                if isinstance(key, (bool, float)) or (isinstance(key, str) and key.strip() != str(index)):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"PruningPlan.layers has key {key!r}; keys must be layer indices (0-based integers, "
                    "or their string form such as '3')."
                ) from None
            if index < 0:
                raise ValueError(f"PruningPlan.layers has layer index {index}; layer indices start at 0.")
            if index in layers:
                raise ValueError(f"PruningPlan.layers names layer {index} twice ({key!r}); merge the overrides.")
            if not isinstance(overrides, dict):
                raise ValueError(
                    f"PruningPlan.layers[{index}] must be a dict {{group: percent}}, e.g. {{'ffn': 70}}; "
                    f"got {overrides!r}."
                )
            unknown = [g for g in overrides if g not in GROUPS]
            if unknown:
                raise ValueError(
                    f"PruningPlan.layers[{index}] has unknown group(s) {unknown}; valid groups are "
                    f"{', '.join(GROUPS)} (ffn = FFN units, qk = query/key pairs, v = value dims)."
                )
            for group, value in overrides.items():
                _check_percent(value, f"PruningPlan.layers[{index}][{group!r}]", group)
            layers[index] = dict(overrides)
        self.layers = layers

    # -- rules -----------------------------------------------------------------------------
    def percent(self, layer: int, group: str) -> float:
        """The percentile that applies to ``group`` in ``layer`` (override > skip_layers > global)."""
        if group not in GROUPS:
            raise ValueError(f"Unknown group {group!r}; valid groups are {', '.join(GROUPS)}.")
        override = self.layers.get(layer, {})
        if group in override:
            return override[group]
        if layer < self.skip_layers:
            return 0
        return getattr(self, group)

    def check_layers(self, num_layers: int) -> None:
        """Refuse layer indices and ``skip_layers`` that do not fit a model with ``num_layers``."""
        if self.skip_layers > num_layers:
            raise ValueError(
                f"PruningPlan.skip_layers={self.skip_layers} but the model has {num_layers} layers; "
                f"use 0..{num_layers}."
            )
        bad = sorted(i for i in self.layers if i >= num_layers)
        if bad:
            raise ValueError(
                f"PruningPlan.layers overrides layer(s) {bad} but the model has {num_layers} layers "
                f"(indices 0..{num_layers - 1}); remove or renumber those overrides."
            )

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["layers"] = {str(k): dict(v) for k, v in sorted(self.layers.items())}
        return data

    def describe(self) -> str:
        text = (
            f"ffn={self.ffn:g} qk={self.qk:g} v={self.v:g} skip_layers={self.skip_layers} "
            f"compensation={self.compensation} scorer={self.scorer}"
        )
        if self.scorer == "random":
            text += f" seed={self.seed}"
        if self.layers:
            text += " layers=" + json.dumps({str(k): v for k, v in sorted(self.layers.items())})
        return text


# ------------------------------------------------------------------------------------------
# Per-model caches (the fingerprint hashes every weight: ~0.1 s on all-MiniLM)
# ------------------------------------------------------------------------------------------
_MODEL_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_TABLE_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return -1


def _weights_key(model) -> tuple:
    # An in-place change through the tensor (optimizer step, load_state_dict, `w[...] = x` under
    # no_grad) bumps its _version; a reassignment changes its data_ptr. Writes through `.data`
    # bypass the counter and are not seen: do not edit a cached model that way.
    bert = base_model(model)
    tensors = [*bert.parameters(), *bert.buffers()]
    cfg = model.config
    shape = tuple(str(getattr(cfg, k, None)) for k in ("qk_head_sizes", "v_head_sizes", "intermediate_sizes"))
    return (shape, tuple((t.data_ptr(), _version(t), tuple(t.shape)) for t in tensors))


def _model_entry(model) -> dict:
    key = _weights_key(model)
    entry = _MODEL_CACHE.get(model)
    if entry is None or entry["key"] != key:
        entry = {"key": key}
        _MODEL_CACHE[model] = entry
    return entry


def _cached_fingerprint(model) -> str:
    entry = _model_entry(model)
    if "fingerprint" not in entry:
        entry["fingerprint"] = model_fingerprint(model)
    return entry["fingerprint"]


def _layer_shapes(model) -> list[dict[str, int]]:
    """Per layer: number of heads, Q/K and V head sizes, FFN units, read from the modules."""
    shapes = []
    for layer in encoder_layers(model):
        att = layer.attention.self
        heads = int(att.num_attention_heads)
        shapes.append(
            {
                "heads": heads,
                "qk": int(att.query.out_features) // heads,
                "v": int(att.value.out_features) // heads,
                "ffn": int(layer.intermediate.dense.out_features),
            }
        )
    return shapes


def _in_norms(linear: torch.nn.Linear) -> torch.Tensor:
    """L2 norm of each output unit's incoming weights (row j of the weight)."""
    return linear.weight.detach().float().norm(dim=1)


def _out_norms(linear: torch.nn.Linear) -> torch.Tensor:
    """L2 norm of the weights that read each input unit (column j of the weight)."""
    return linear.weight.detach().float().norm(dim=0)


def _magnitude_scores(model) -> list[dict[str, np.ndarray]]:
    entry = _model_entry(model)
    if "magnitude" not in entry:
        out = []
        with torch.no_grad():
            for layer in encoder_layers(model):
                att = layer.attention.self
                out.append(
                    {
                        "ffn": (_in_norms(layer.intermediate.dense) * _out_norms(layer.output.dense)).cpu().numpy(),
                        "v": (_in_norms(att.value) * _out_norms(layer.attention.output.dense)).cpu().numpy(),
                        "qk": (_in_norms(att.query) * _in_norms(att.key)).cpu().numpy(),
                    }
                )
        entry["magnitude"] = out
    return entry["magnitude"]


def _table_arrays(scores) -> dict:
    """``{(layer, component): {"rf", "std", "mean"}}`` arrays indexed by neuron, cached per table."""
    table = scores.table
    hit = _TABLE_CACHE.get(id(table))
    if hit is not None and hit[0]() is table:
        return hit[1]
    missing = [c for c in ("layer", "component", "neuron", "rf", "std", "mean") if c not in table.columns]
    if missing:
        raise ValueError(
            f"The scores table lacks column(s) {missing}; expected a table made by obce_core.score_model "
            "(or NeuronScores.from_parquet)."
        )
    comp = table["component"].astype(str).to_numpy()
    layer = table["layer"].to_numpy(np.int64)
    neuron = table["neuron"].to_numpy(np.int64)
    keep = np.isin(comp, PRUNABLE_COMPONENTS)
    comp, layer, neuron = comp[keep], layer[keep], neuron[keep]
    values = {c: table[c].to_numpy(np.float64)[keep] for c in ("rf", "std", "mean")}
    order = np.lexsort((neuron, comp, layer))
    comp, layer, neuron = comp[order], layer[order], neuron[order]
    values = {c: v[order] for c, v in values.items()}
    arrays: dict = {}
    starts = np.flatnonzero(np.r_[True, (layer[1:] != layer[:-1]) | (comp[1:] != comp[:-1])])
    ends = np.r_[starts[1:], len(layer)]
    for s, e in zip(starts, ends):
        if not np.array_equal(neuron[s:e], np.arange(e - s)):
            raise ValueError(
                f"The scores table has neurons {neuron[s:e][:5].tolist()}... for layer {layer[s]} "
                f"{comp[s]}; expected 0..n-1 once each. Rescore the model with obce_core.score_model."
            )
        arrays[(int(layer[s]), str(comp[s]))] = {c: v[s:e] for c, v in values.items()}
    # Keep the cache small: the dashboard holds a handful of score tables at most.
    if len(_TABLE_CACHE) > 16:
        _TABLE_CACHE.clear()
    _TABLE_CACHE[id(table)] = (weakref.ref(table), arrays)
    return arrays


# ------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------
@dataclass
class PruningSelection:
    """Which units each layer keeps, and the score every unit was ranked by.

    ``kept[layer][group]`` are sorted indices into the original Linear outputs: FFN units for
    ``ffn``, query (= key) output dims for ``qk``, value output dims for ``v`` (head ``h``, dim
    ``d`` is index ``h * head_size + d``). ``scores[layer][group]`` holds the score of every unit
    (for ``qk`` the pair score); ``shapes[layer]`` the sizes before pruning.
    """

    plan: PruningPlan
    model_fingerprint: str
    shapes: list[dict[str, int]]
    kept: list[dict[str, np.ndarray]]
    scores: list[dict[str, np.ndarray]]

    @property
    def num_layers(self) -> int:
        return len(self.shapes)

    def sizes_after(self) -> list[dict[str, int]]:
        """Per layer: heads, Q/K and V head sizes and FFN units after pruning."""
        out = []
        for shape, kept in zip(self.shapes, self.kept):
            out.append(
                {
                    "heads": shape["heads"],
                    "qk": len(kept["qk"]) // shape["heads"],
                    "v": len(kept["v"]) // shape["heads"],
                    "ffn": len(kept["ffn"]),
                }
            )
        return out

    def removed(self, layer: int, group: str) -> np.ndarray:
        total = self.shapes[layer]["ffn"] if group == "ffn" else self.shapes[layer]["heads"] * self.shapes[layer][group]
        mask = np.ones(total, dtype=bool)
        mask[self.kept[layer][group]] = False
        return np.flatnonzero(mask)

    def is_noop(self) -> bool:
        return all(len(self.removed(i, g)) == 0 for i in range(self.num_layers) for g in GROUPS)


def _unit_scores(plan: PruningPlan, arrays: dict, model, layer: int, group: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) scores of the ``n`` units of one group; lower = pruned first."""
    if plan.scorer == "magnitude":
        primary = _magnitude_scores(model)[layer][group].astype(np.float64)
        return primary, np.zeros(n)
    if plan.scorer == "random":
        rng = np.random.default_rng([plan.seed, layer, GROUPS.index(group)])
        return rng.random(n), np.zeros(n)
    parts = []
    for comp in _GROUP_COMPONENTS[group]:
        got = arrays.get((layer, comp))
        if got is None or len(got["rf"]) != n:
            have = None if got is None else len(got["rf"])
            raise ValueError(
                f"The scores table has {have} {comp} neurons in layer {layer} but the model has {n}; the "
                "scores belong to another model shape. Rescore this model with obce_core.score_model."
            )
        parts.append(got)
    # qk: the mean of the query and key unit scores (see the module docstring for why not min).
    rf = np.mean([p["rf"] for p in parts], axis=0)
    std = np.mean([p["std"] for p in parts], axis=0)
    if plan.scorer == "rf":
        return rf, std
    return std, np.zeros(n)


def select_units(scores, plan: PruningPlan, model) -> PruningSelection:
    """Choose the units to keep in every layer; no model is copied or changed.

    ``scores`` is a ``NeuronScores`` whose ``model_fingerprint`` must equal
    ``model_fingerprint(model)`` (scores of a bare encoder apply to a classifier built on the same
    encoder weights: the head is not part of the fingerprint).

    Takes a few milliseconds on all-MiniLM-L6-v2. The first call on a model hashes its weights for
    the fingerprint (~0.1 s there); the hash and the magnitude scores are cached per model object
    and recomputed when any of its tensors changes in place.
    """
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan; got {type(plan).__name__}. Build one with PruningPlan(ffn=50, ...).")
    shapes = _layer_shapes(model)
    plan.check_layers(len(shapes))
    fingerprint = _cached_fingerprint(model)
    if scores.model_fingerprint != fingerprint:
        raise ValueError(
            f"The scores were computed on a model with fingerprint {scores.model_fingerprint} but this "
            f"{type(model).__name__} has fingerprint {fingerprint}: they describe other encoder weights "
            "(another checkpoint, or a fine-tuned or already pruned model). Rescore this model: "
            "obce_core.score_model(model, tokenizer, texts) or `python -m obce_core score --model ...`."
        )
    # Magnitude and random need no table; rf and std do (checked inside _unit_scores).
    arrays = _table_arrays(scores) if plan.scorer in ("rf", "std") else {}
    kept_all, scores_all = [], []
    for layer, shape in enumerate(shapes):
        kept, unit_scores = {}, {}
        heads = shape["heads"]
        for group in GROUPS:
            per_unit = shape["ffn"] if group == "ffn" else shape[group]
            n = per_unit if group == "ffn" else heads * per_unit
            primary, secondary = _unit_scores(plan, arrays, model, layer, group, n)
            unit_scores[group] = primary
            remove = _n_removed(plan.percent(layer, group), per_unit)
            if remove == 0:
                kept[group] = np.arange(n)
                continue
            rows = 1 if group == "ffn" else heads
            p = primary.reshape(rows, -1)
            s = secondary.reshape(rows, -1)
            idx = np.broadcast_to(np.arange(p.shape[1]), p.shape)
            # Sort each head (or the whole FFN) by score, then secondary, then index; keep the top.
            order = np.lexsort((idx, s, p), axis=-1)
            keep_local = np.sort(order[:, remove:], axis=-1)
            kept[group] = (keep_local + (np.arange(rows) * p.shape[1])[:, None]).reshape(-1)
        kept_all.append(kept)
        scores_all.append(unit_scores)
    return PruningSelection(plan=plan, model_fingerprint=fingerprint, shapes=shapes, kept=kept_all, scores=scores_all)


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def _layer_params(hidden: int, heads: int, qk: int, v: int, ffn: int) -> dict[str, int]:
    """Closed-form parameter count of one encoder layer, by group.

    qk: query and key Linear (weights + biases); v: value Linear + attention.output.dense's input
    columns; ffn: intermediate Linear + output.dense's input columns; fixed: the two output biases
    and the two LayerNorms, which pruning never touches.
    """
    dqk, dv = heads * qk, heads * v
    out = {
        "qk": 2 * (hidden * dqk + dqk),
        "v": hidden * dv + dv + dv * hidden,
        "ffn": hidden * ffn + ffn + ffn * hidden,
        "fixed": 6 * hidden,
    }
    out["total"] = sum(out.values())
    return out


def _layer_macs(hidden: int, heads: int, qk: int, v: int, ffn: int, seq_len: int) -> int:
    # Per token: Q,K,V and output projections, attention scores and context, FFN.
    dqk, dv = heads * qk, heads * v
    return 2 * hidden * dqk + hidden * dv + dv * hidden + seq_len * (dqk + dv) + 2 * hidden * ffn


@dataclass
class PruningReport:
    """What a selection does to a model, computed from config + selection (the model is not copied).

    ``params_before``/``params_after``: total, embeddings, encoder, pooler, head. ``layers``: one
    dict per layer with sizes and parameters before/after by group. ``flops_ratio_estimate`` is an
    ESTIMATE: dense matmul multiply-adds per token at ``flops_seq_len`` tokens (projections,
    attention scores and context, FFN), ignoring embeddings, softmax, LayerNorm, GELU and the head.
    ``units``: one row per unit (layer, group, unit, score, kept) for a heatmap; for ``qk`` a unit
    is a query/key pair.
    """

    plan: PruningPlan
    model_fingerprint: str
    architecture: str
    params_before: dict[str, int]
    params_after: dict[str, int]
    layers: list[dict[str, Any]]
    flops_ratio_estimate: float
    flops_seq_len: int
    units: pd.DataFrame = field(repr=False)

    BYTES_PER_PARAM = 4  # float32

    @property
    def bytes_before(self) -> int:
        return self.params_before["total"] * self.BYTES_PER_PARAM

    @property
    def bytes_after(self) -> int:
        return self.params_after["total"] * self.BYTES_PER_PARAM

    @property
    def fraction_removed(self) -> float:
        """Share of ALL parameters removed (embeddings included)."""
        return 1 - self.params_after["total"] / self.params_before["total"]

    @property
    def encoder_fraction_removed(self) -> float:
        return 1 - self.params_after["encoder"] / self.params_before["encoder"]

    def kept_frame(self) -> pd.DataFrame:
        """Per layer and group: units kept and before (qk: pairs, v: dims, over all heads)."""
        rows = []
        for info in self.layers:
            for group in GROUPS:
                rows.append(
                    {"layer": info["layer"], "group": group, "kept": info["kept"][group],
                     "total": info["units_before"][group]}
                )
        return pd.DataFrame(rows)

    def to_dict(self, include_units: bool = True) -> dict:
        """JSON-serialisable; ``units`` is stored column-wise to stay compact."""
        data = {
            "plan": self.plan.to_dict(),
            "model_fingerprint": self.model_fingerprint,
            "architecture": self.architecture,
            "params_before": dict(self.params_before),
            "params_after": dict(self.params_after),
            "bytes_before_float32": self.bytes_before,
            "bytes_after_float32": self.bytes_after,
            "fraction_removed": self.fraction_removed,
            "encoder_fraction_removed": self.encoder_fraction_removed,
            "flops_ratio_estimate": self.flops_ratio_estimate,
            "flops_note": (
                f"estimate: dense matmul multiply-adds per token at sequence length {self.flops_seq_len} "
                "(Q/K/V/output projections, attention scores and context, FFN); embeddings, softmax, "
                "LayerNorm, GELU and the task head are ignored"
            ),
            "layers": self.layers,
        }
        if include_units:
            data["units"] = {
                "layer": self.units["layer"].tolist(),
                "group": self.units["group"].astype(str).tolist(),
                "unit": self.units["unit"].tolist(),
                "score": [None if not math.isfinite(x) else x for x in self.units["score"].tolist()],
                "kept": self.units["kept"].tolist(),
            }
        return data

    def summary(self) -> str:
        """Plain-text report (what the CLI prints)."""
        b, a = self.params_before, self.params_after
        mib = 2**20
        lines = [
            f"Plan: {self.plan.describe()}",
            f"Parameters: {b['total']:,} -> {a['total']:,} ({-100 * self.fraction_removed:+.1f} %)",
            f"  encoder:  {b['encoder']:,} -> {a['encoder']:,} ({-100 * self.encoder_fraction_removed:+.1f} %)",
            f"  embeddings {b['embeddings']:,}, pooler {b['pooler']:,}, head {b['head']:,} (unchanged)",
            f"Size (float32): {self.bytes_before / mib:.1f} MiB -> {self.bytes_after / mib:.1f} MiB",
            f"FLOPs per token after/before: {self.flops_ratio_estimate:.3f} (estimate, dense matmuls at "
            f"{self.flops_seq_len} tokens)",
            "",
            f"{'layer':>5}  {'qk dims/head':>12}  {'v dims/head':>11}  {'ffn units':>11}  {'params after/before':>22}",
        ]
        for info in self.layers:
            sb, sa = info["sizes_before"], info["sizes_after"]
            lines.append(
                f"{info['layer']:>5}  {sa['qk']:>5} / {sb['qk']:<4}  {sa['v']:>5} / {sb['v']:<3}  "
                f"{sa['ffn']:>5} / {sb['ffn']:<4}  {info['params_after']['total']:>10,} / {info['params_before']['total']:<10,}"
            )
        return "\n".join(lines)


def build_report(model, selection: PruningSelection, *, flops_seq_len: int = DEFAULT_FLOPS_SEQ_LEN) -> PruningReport:
    """The report of ``selection`` applied to ``model``, in closed form (nothing is copied)."""
    if flops_seq_len < 1:
        raise ValueError(f"flops_seq_len must be >= 1; got {flops_seq_len}.")
    cfg = model.config
    hidden = int(cfg.hidden_size)
    bert = base_model(model)
    embeddings = (int(cfg.vocab_size) + int(cfg.max_position_embeddings) + int(cfg.type_vocab_size)) * hidden + 2 * hidden
    pooler = hidden * hidden + hidden if getattr(bert, "pooler", None) is not None else 0
    # The task head is whatever lies outside the encoder; pruning never changes it.
    head = 0
    if bert is not model:
        inner = {id(p) for p in bert.parameters()}
        head = sum(p.numel() for p in model.parameters() if id(p) not in inner)
    after_sizes = selection.sizes_after()
    layers, enc_before, enc_after, macs_before, macs_after = [], 0, 0, 0, 0
    for i, (sb, sa) in enumerate(zip(selection.shapes, after_sizes)):
        pb = _layer_params(hidden, sb["heads"], sb["qk"], sb["v"], sb["ffn"])
        pa = _layer_params(hidden, sa["heads"], sa["qk"], sa["v"], sa["ffn"])
        enc_before += pb["total"]
        enc_after += pa["total"]
        macs_before += _layer_macs(hidden, sb["heads"], sb["qk"], sb["v"], sb["ffn"], flops_seq_len)
        macs_after += _layer_macs(hidden, sa["heads"], sa["qk"], sa["v"], sa["ffn"], flops_seq_len)
        layers.append(
            {
                "layer": i,
                "sizes_before": {"qk": sb["qk"], "v": sb["v"], "ffn": sb["ffn"]},
                "sizes_after": {"qk": sa["qk"], "v": sa["v"], "ffn": sa["ffn"]},
                "units_before": {g: int(len(selection.scores[i][g])) for g in GROUPS},
                "kept": {g: int(len(selection.kept[i][g])) for g in GROUPS},
                "percent": {g: selection.plan.percent(i, g) for g in GROUPS},
                "params_before": pb,
                "params_after": pa,
            }
        )

    def totals(encoder: int) -> dict[str, int]:
        return {"total": embeddings + encoder + pooler + head, "embeddings": embeddings, "encoder": encoder,
                "pooler": pooler, "head": head}

    frames = []
    for i in range(selection.num_layers):
        for group in GROUPS:
            sc = selection.scores[i][group]
            kept = np.zeros(len(sc), dtype=bool)
            kept[selection.kept[i][group]] = True
            frames.append((np.full(len(sc), i), np.full(len(sc), GROUPS.index(group)), np.arange(len(sc)), sc, kept))
    cols = [np.concatenate(c) for c in zip(*frames)]
    units = pd.DataFrame(
        {
            "layer": cols[0].astype(np.int64),
            "group": pd.Categorical.from_codes(cols[1], categories=list(GROUPS)),
            "unit": cols[2].astype(np.int64),
            "score": cols[3].astype(np.float64),
            "kept": cols[4],
        }
    )
    return PruningReport(
        plan=selection.plan,
        model_fingerprint=selection.model_fingerprint,
        architecture=type(model).__name__,
        params_before=totals(enc_before),
        params_after=totals(enc_after),
        layers=layers,
        flops_ratio_estimate=macs_after / macs_before,
        flops_seq_len=flops_seq_len,
        units=units,
    )


# ------------------------------------------------------------------------------------------
# Surgery
# ------------------------------------------------------------------------------------------
def _target_class(model):
    if isinstance(model, BertForSequenceClassification):
        return ObceBertForSequenceClassification, "bert."
    if isinstance(model, BertModel):
        return ObceBertModel, ""
    raise TypeError(
        f"prune supports BertModel and BertForSequenceClassification (and obce's pruned variants); got "
        f"{type(model).__name__}. Load the model with obce_core.load_model(source[, num_labels=...])."
    )


def _compensation_values(arrays: dict, layer: int, component: str, mode: str, n: int) -> np.ndarray:
    got = arrays.get((layer, component))
    if got is None or len(got["mean"]) != n:
        raise ValueError(
            f"Compensation needs the mean of every {component} neuron of layer {layer}, but the scores table "
            "does not have them for this model shape. Rescore this model with obce_core.score_model, or use "
            "compensation='none'."
        )
    return got["mean"] + got["std"] if mode == "mean+std" else got["mean"]


def _fold_into_bias(bias: torch.Tensor, weight: torch.Tensor, removed: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """``bias + weight[:, removed] @ values[removed]`` in float64, cast back to the bias dtype."""
    idx = torch.as_tensor(removed, dtype=torch.long, device=weight.device)
    c = torch.as_tensor(values[removed], dtype=torch.float64, device=weight.device)
    return (bias.double() + weight.index_select(1, idx).double() @ c).to(bias.dtype)


def prune(model, scores, plan: PruningPlan) -> tuple[torch.nn.Module, PruningReport]:
    """A new, smaller ``ObceBert*`` model with the units of ``select_units`` removed, and its report.

    ``model`` is not changed. ``BertModel`` gives ``ObceBertModel``; ``BertForSequenceClassification``
    gives ``ObceBertForSequenceClassification`` with its head (and pooler) copied. The new config
    carries the per-layer sizes and the original attention scaling. A plan that removes nothing
    gives a model whose outputs are bit-identical to the input's.
    """
    cls, prefix = _target_class(model)
    selection = select_units(scores, plan, model)
    report = build_report(model, selection)
    arrays = _table_arrays(scores) if plan.compensation != "none" else {}

    source = model.state_dict()
    state = {name: t.detach().clone() for name, t in source.items()}
    for i, kept in enumerate(selection.kept):
        p = f"{prefix}encoder.layer.{i}."
        shape = selection.shapes[i]

        def take_rows(name: str, idx: np.ndarray) -> None:
            t = source[p + name]
            state[p + name] = t.detach().index_select(0, torch.as_tensor(idx, dtype=torch.long, device=t.device)).clone()

        def take_cols(name: str, idx: np.ndarray) -> None:
            t = source[p + name]
            state[p + name] = t.detach().index_select(1, torch.as_tensor(idx, dtype=torch.long, device=t.device)).clone()

        removed_qk = selection.removed(i, "qk")
        if len(removed_qk):
            for name in ("attention.self.query", "attention.self.key"):
                take_rows(name + ".weight", kept["qk"])
                take_rows(name + ".bias", kept["qk"])
            # No Q/K compensation: see the module docstring.
        for group, into, comp, n in (
            ("v", ("attention.self.value", "attention.output.dense"), "value", shape["heads"] * shape["v"]),
            ("ffn", ("intermediate.dense", "output.dense"), "intermediate", shape["ffn"]),
        ):
            removed = selection.removed(i, group)
            if not len(removed):
                continue
            if plan.compensation != "none":
                values = _compensation_values(arrays, i, comp, plan.compensation, n)
                w_out = source[p + into[1] + ".weight"].detach()
                state[p + into[1] + ".bias"] = _fold_into_bias(source[p + into[1] + ".bias"].detach(), w_out, removed, values)
            take_rows(into[0] + ".weight", kept[group])
            take_rows(into[0] + ".bias", kept[group])
            take_cols(into[1] + ".weight", kept[group])

    sizes = selection.sizes_after()
    cfg = model.config.to_dict()
    for key in ("model_type", "architectures", "qk_head_sizes", "v_head_sizes", "intermediate_sizes",
                "attention_scale_head_size", "transformers_version"):
        cfg.pop(key, None)
    config = ObceBertConfig(
        **cfg,
        qk_head_sizes=[int(s["qk"]) for s in sizes],
        v_head_sizes=[int(s["v"]) for s in sizes],
        intermediate_sizes=[int(s["ffn"]) for s in sizes],
        # Keep the original scaling (an already pruned model carries it in its config).
        attention_scale_head_size=int(
            getattr(model.config, "attention_scale_head_size", None)
            or model.config.hidden_size // model.config.num_attention_heads
        ),
        architectures=[cls.__name__],
        attn_implementation=model.config._attn_implementation,
    )
    has_pooler = getattr(base_model(model), "pooler", None) is not None
    new = cls(config) if cls is ObceBertForSequenceClassification else cls(config, add_pooling_layer=has_pooler)
    first = next(iter(source.values()))
    new.to(device=first.device, dtype=first.dtype)
    new.load_state_dict(state, strict=True)
    new.train(model.training)
    return new, report


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
def save_pruned(
    model,
    tokenizer,
    directory: str | os.PathLike,
    plan: PruningPlan | None = None,
    report: PruningReport | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write model (config + safetensors), tokenizer, plan and report as one directory, atomically.

    Everything goes to a temporary directory next to ``directory`` that is renamed into place, so a
    failure leaves no half-written target. An existing non-empty ``directory`` is refused unless
    ``overwrite=True``.
    """
    directory = Path(directory).expanduser()
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"Output {str(directory)!r} is a file; pass a directory path for the pruned model.")
        if any(directory.iterdir()) and not overwrite:
            raise FileExistsError(
                f"Output directory {str(directory)!r} exists and is not empty; pass overwrite=True "
                "(--overwrite on the command line) to replace it, or choose another directory."
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if plan is not None:
            plan.to_json(tmp / PLAN_FILE)
        if report is not None:
            (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
        if directory.exists():
            # Move the old directory aside first so the swap itself is a rename.
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / "d")
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "d").exists() and not directory.exists():
            os.replace(old / "d", directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def load_plan(directory: str | os.PathLike) -> PruningPlan:
    """The ``PruningPlan`` saved with a pruned model by ``save_pruned``."""
    path = Path(directory).expanduser() / PLAN_FILE
    if not path.is_file():
        raise ValueError(
            f"No {PLAN_FILE} in {str(directory)!r}; expected a directory written by save_pruned(..., plan=plan) "
            "or `python -m obce_core prune`."
        )
    return PruningPlan.from_json(path)
