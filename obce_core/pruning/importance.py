"""Importance scorers: one score per unit of a group, lower = pruned first.

In the manner of Torch-Pruning's ``importance.py``: each scorer is a small class whose call
returns one score per unit, registered by name in ``IMPORTANCES``; ``select_units`` only ranks and
cuts. Adding a scorer is one class with ``@register_importance``.

Groups: ``ffn`` (FFN units), ``qk`` (query/key dim pairs: query dim ``i`` and key dim ``i`` of a
head meet in one term ``q_i * k_i`` of the attention logit) and ``v`` (value dims). Units are
indexed as the Linear outputs are: head ``h``, dim ``d`` is ``h * head_size + d``.

* ``rf`` (default): the unit's 0-D persistence score from the scores table; ties broken by lower
  ``std`` (then lower index, in the selection).
* ``std``: the unit's standard deviation over the scored samples (a no-topology control).
* ``magnitude``: the product of the L2 norms of the weights on the two sides of the unit:
  FFN unit ``j``: ``||W_in[j, :]|| * ||W_out[:, j]||``; value dim ``j``:
  ``||W_v[j, :]|| * ||W_o[:, j]||``; Q/K pair ``i``: ``||W_q[i, :]|| * ||W_k[i, :]||`` (the
  bilinear term's weights). A product rather than a sum: rescaling a unit's input weights by ``a``
  and its output weights by ``1/a`` changes the product by nothing and the sum a lot. Biases are
  left out.
* ``flap``: the fluctuation score of FLAP (An et al., AAAI 2024): the unit's sample variance over
  the scored samples times the squared L2 norm of the weight column that reads it in the next
  layer. FFN unit ``j``: ``var(h_j) * ||W_out[:, j]||^2``. Value dim ``j``: ``var(v_j) *
  ||W_o[:, j]||^2``; FLAP measures the attention context (the input of ``W_o``), which the scores
  table does not hold, and uses the value output in its place (a convex mix of the value dim
  over positions). FLAP defines no Q/K score; for pair ``i`` obce uses the first-order
  fluctuation of the logit term ``q_i k_i``: ``var(q_i) E[k_i^2] + var(k_i) E[q_i^2]`` (the
  weight that reads ``q_i`` is ``k_i``). Variances and means come from the scores table (at
  [CLS] in the paper's setting; FLAP uses every token: score with ``token='all'`` for that).
* ``fisher``: Kwon et al. 2022's Fisher importance, the squared gradient of the task loss with
  respect to a mask on the unit, summed over labelled training examples (higher = the loss rises
  more when the unit goes). Read from the table's ``fisher`` column, which
  ``obce_core.pruning.fisher.fisher_information`` + ``add_fisher`` put there; the query/key pair's
  value sits on both its query and key rows, so their mean is the pair's value.
* ``random``: uniform scores from ``numpy.random.default_rng([seed, layer, group])``, so each
  group's draw depends only on the seed, not on the other groups' settings.

A table-based ``qk`` pair score is the MEAN of the query and key units' scores: a flat factor alone
does not make the term ``q_i * k_i`` flat (a constant non-zero query dim scales the key's variation
straight into the logits), so ``min`` would cut pairs whose other half carries signal; the mean
ranks a pair low only when both halves score low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from obce_core.layout import GROUP_COMPONENTS, GROUP_NAMES, GROUPS, PRUNABLE_COMPONENTS, encoder_layers, reader, unit_modules
from obce_core.pruning.cache import cached_on, weights_key
from obce_core.validation import check_choice, check_int

__all__ = [
    "FISHER_COLUMN",
    "GROUPS",
    "GROUP_COMPONENTS",
    "GROUP_NAMES",
    "IMPORTANCES",
    "Importance",
    "FisherImportance",
    "FlapImportance",
    "MagnitudeImportance",
    "RandomImportance",
    "RfImportance",
    "StdImportance",
    "UnitScores",
    "make_importance",
    "register_importance",
    "unit_statistics",
]

# The scores-table column the ``fisher`` scorer reads (written by ``pruning.fisher.add_fisher``).
FISHER_COLUMN = "fisher"


@dataclass(frozen=True)
class UnitScores:
    """Scores of the units of one group: ``primary`` ranks, ``secondary`` breaks its ties."""

    primary: np.ndarray
    secondary: np.ndarray


class Importance:
    """Base class: ``scorer(model, scores, layer, group, n)`` -> ``UnitScores`` of the ``n`` units.

    ``scores`` is the ``NeuronScores`` of the plan (scorers that do not read it ignore it).
    """

    name: ClassVar[str] = ""
    uses_table: ClassVar[bool] = False  # reads the scores table (rf, mean, std)
    uses_seed: ClassVar[bool] = False  # built with the plan's seed

    def __call__(self, model, scores, layer: int, group: str, n: int) -> UnitScores:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    def check_scores(self, scores) -> None:
        """Raise ``ValueError`` (saying how to fix it) when ``scores`` lack what this scorer reads.

        Called before slow work (a sweep, a search) so a missing input fails first, not midway.
        """


IMPORTANCES: dict[str, type[Importance]] = {}


def register_importance(cls: type[Importance]) -> type[Importance]:
    """Class decorator: make ``cls`` available as ``PruningPlan(scorer=cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered.")
    IMPORTANCES[cls.name] = cls
    return cls


def make_importance(name: str, *, seed: int = 0) -> Importance:
    """The registered scorer ``name``; ``seed`` is used by scorers that draw at random."""
    check_choice(name, "scorer", "make_importance", IMPORTANCES)
    cls = IMPORTANCES[name]
    return cls(seed=seed) if cls.uses_seed else cls()


# ------------------------------------------------------------------------------------------
# The scores table as arrays per (layer, component), cached on the scores object
# ------------------------------------------------------------------------------------------
def unit_statistics(scores) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """``{(layer, component): {"rf", "std", "mean"}}`` arrays indexed by neuron (and ``"fisher"`` when
    the table has that column).

    Built once per table and kept on ``scores`` (a new table gives new arrays).
    """
    table = scores.table
    return cached_on(scores, "unit_statistics", table, lambda: _statistics_arrays(table))


def _statistics_arrays(table) -> dict:
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
    columns = ("rf", "std", "mean") + ((FISHER_COLUMN,) if FISHER_COLUMN in table.columns else ())
    values = {c: table[c].to_numpy(np.float64)[keep] for c in columns}
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
    return arrays


def group_statistic(scores, layer: int, group: str, n: int, column: str) -> np.ndarray:
    """``column`` ("rf", "std", "mean" or "fisher") of the ``n`` units of a group; qk: the query/key mean."""
    stats = unit_statistics(scores)
    parts = []
    for comp in GROUP_COMPONENTS[group]:
        got = stats.get((layer, comp))
        if got is None or len(got[column]) != n:
            have = None if got is None else len(got[column])
            raise ValueError(
                f"The scores table has {have} {comp} neurons in layer {layer} but the model has {n}; the "
                "scores belong to another model shape. Rescore this model with obce_core.score_model."
            )
        parts.append(got[column])
    return parts[0] if len(parts) == 1 else np.mean(parts, axis=0)


# ------------------------------------------------------------------------------------------
# The scorers
# ------------------------------------------------------------------------------------------
@register_importance
class RfImportance(Importance):
    """The paper's 0-D persistence score; ties broken by lower std."""

    name = "rf"
    uses_table = True

    def __call__(self, model, scores, layer, group, n):
        return UnitScores(group_statistic(scores, layer, group, n, "rf"),
                          group_statistic(scores, layer, group, n, "std"))


@register_importance
class StdImportance(Importance):
    """Standard deviation over the scored samples: the no-topology control."""

    name = "std"
    uses_table = True

    def __call__(self, model, scores, layer, group, n):
        return UnitScores(group_statistic(scores, layer, group, n, "std"), np.zeros(n))


def _in_norms(linear: torch.nn.Linear) -> torch.Tensor:
    """L2 norm of each output unit's incoming weights (row j of the weight)."""
    return linear.weight.detach().float().norm(dim=1)


def _out_norms(linear: torch.nn.Linear) -> torch.Tensor:
    """L2 norm of the weights that read each input unit (column j of the weight)."""
    return linear.weight.detach().float().norm(dim=0)


def _magnitudes(model) -> list[dict[str, np.ndarray]]:
    out = []
    with torch.no_grad():
        for layer in encoder_layers(model):
            query, key = unit_modules(layer, "qk")
            row = {g: (_in_norms(unit_modules(layer, g)[0]) * _out_norms(reader(layer, g))).cpu().numpy()
                   for g in ("ffn", "v")}
            row["qk"] = (_in_norms(query) * _in_norms(key)).cpu().numpy()
            out.append(row)
    return out


@register_importance
class MagnitudeImportance(Importance):
    """Product of the weight norms on the two sides of a unit; kept on the model until it changes."""

    name = "magnitude"

    def __init__(self):
        self._seen: tuple | None = None  # (model, magnitudes): one weights check per selection, not per group

    def __call__(self, model, scores, layer, group, n):
        if self._seen is None or self._seen[0] is not model:
            self._seen = (model, cached_on(model, "magnitude", weights_key(model), lambda: _magnitudes(model)))
        return UnitScores(self._seen[1][layer][group].astype(np.float64), np.zeros(n))


def _sample_variance(scores, layer: int, component: str, n: int) -> np.ndarray:
    """Sample variance (ddof = 1) of one component's units, from the table's population std."""
    stats = unit_statistics(scores).get((layer, component))
    if stats is None or len(stats["std"]) != n:
        raise ValueError(
            f"The scores table has no {n} {component} neurons in layer {layer}; the scores belong to another "
            "model shape. Rescore this model with obce_core.score_model.")
    m = max(int(getattr(scores, "n_samples", 0) or 0), 2)
    return stats["std"] ** 2 * m / (m - 1)


@register_importance
class FlapImportance(Importance):
    """FLAP's fluctuation: sample variance of a unit times the squared norm of its reading column."""

    name = "flap"
    uses_table = True

    def __call__(self, model, scores, layer, group, n):
        block = encoder_layers(model)[layer]
        with torch.no_grad():
            if group in ("ffn", "v"):
                (component,) = GROUP_COMPONENTS[group]
                score = _sample_variance(scores, layer, component, n) * _sq(_out_norms(reader(block, group)))
            else:
                stats = unit_statistics(scores)
                var_q = _sample_variance(scores, layer, "query", n)
                var_k = _sample_variance(scores, layer, "key", n)
                q, k = stats[(layer, "query")], stats[(layer, "key")]
                sq_q, sq_k = q["std"] ** 2 + q["mean"] ** 2, k["std"] ** 2 + k["mean"] ** 2
                score = var_q * sq_k + var_k * sq_q
        return UnitScores(np.asarray(score, dtype=np.float64), np.zeros(n))


def _sq(norms: torch.Tensor) -> np.ndarray:
    return norms.double().cpu().numpy() ** 2


@register_importance
class FisherImportance(Importance):
    """Kwon et al. 2022: summed squared loss gradients of a mask on each unit (the table's ``fisher``)."""

    name = "fisher"
    uses_table = True

    def check_scores(self, scores) -> None:
        if FISHER_COLUMN not in scores.table.columns:
            raise ValueError(
                "The 'fisher' scorer needs Fisher importance in the scores, and these scores have no 'fisher' "
                "column. Compute it on labelled training examples of the task model: table = "
                "obce_core.pruning.fisher_information(model, tokenizer, task, glue_dir=..., n=512); scores = "
                "obce_core.pruning.add_fisher(scores, table), or take the scores from "
                "obce_core.evidence.task_scores(..., scorers=[..., 'fisher']) (what `python -m obce_core sweep "
                "--scorers fisher` does; the Prune page does it for a task model), or pick another scorer.")

    def __call__(self, model, scores, layer, group, n):
        self.check_scores(scores)
        return UnitScores(group_statistic(scores, layer, group, n, FISHER_COLUMN), np.zeros(n))


@register_importance
class RandomImportance(Importance):
    """Uniform scores, seeded per (seed, layer, group)."""

    name = "random"
    uses_seed = True

    def __init__(self, seed: int = 0):
        self.seed = check_int(seed, "seed", "RandomImportance", low=0)

    def __call__(self, model, scores, layer, group, n):
        rng = np.random.default_rng([self.seed, layer, GROUPS.index(group)])
        return UnitScores(rng.random(n), np.zeros(n))
