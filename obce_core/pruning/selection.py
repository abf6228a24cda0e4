"""``select_units``: which units each layer keeps under a plan (ranks and cuts, nothing else).

Every "pruned" or "kept" verdict obce shows comes from here. The scores come from the plan's
importance scorer (``importance``); the counts from the plan's rules (``plan``). Pure index work
on arrays: a few milliseconds on all-MiniLM-L6-v2, so a dashboard can move a slider without
touching the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from obce_core.layout import GROUPS, layer_shapes
from obce_core.pruning.cache import cached_fingerprint
from obce_core.pruning.importance import make_importance
from obce_core.pruning.plan import PruningPlan, n_removed

__all__ = ["PruningSelection", "select_units"]


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
        return [
            {"heads": shape["heads"], "qk": len(kept["qk"]) // shape["heads"],
             "v": len(kept["v"]) // shape["heads"], "ffn": len(kept["ffn"])}
            for shape, kept in zip(self.shapes, self.kept)
        ]

    def removed(self, layer: int, group: str) -> np.ndarray:
        """Sorted indices of the units of ``group`` in ``layer`` that the plan removes."""
        mask = np.ones(len(self.scores[layer][group]), dtype=bool)
        mask[self.kept[layer][group]] = False
        return np.flatnonzero(mask)


def select_units(scores, plan: PruningPlan, model) -> PruningSelection:
    """Choose the units to keep in every layer; no model is copied or changed.

    ``scores`` is a ``NeuronScores`` whose ``model_fingerprint`` must equal
    ``model_fingerprint(model)`` (scores of a bare encoder apply to a classifier built on the same
    encoder weights: the head is not part of the fingerprint).

    Within a head (or a layer's FFN) units are ranked by the scorer's primary score, then its
    secondary score, then index; the lowest ``n_removed(percent, size)`` go. The first call on a
    model hashes its weights for the fingerprint (~0.1 s on all-MiniLM-L6-v2); the hash is kept on
    the model and recomputed when any of its tensors changes in place.
    """
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan; got {type(plan).__name__}. Build one with PruningPlan(ffn=50, ...).")
    shapes = layer_shapes(model)
    plan.check_layers(len(shapes))
    fingerprint = cached_fingerprint(model)
    if scores.model_fingerprint != fingerprint:
        raise ValueError(
            f"The scores were computed on a model with fingerprint {scores.model_fingerprint} but this "
            f"{type(model).__name__} has fingerprint {fingerprint}: they describe other encoder weights "
            "(another checkpoint, or a fine-tuned or already pruned model). Rescore this model: "
            "obce_core.score_model(model, tokenizer, texts) or `python -m obce_core score --model ...`."
        )
    importance = make_importance(plan.scorer, seed=plan.seed)
    kept_all, scores_all = [], []
    for layer, shape in enumerate(shapes):
        kept, unit_scores = {}, {}
        heads = shape["heads"]
        for group in GROUPS:
            per_row = shape[group]  # units per head (qk, v) or per layer (ffn)
            rows = 1 if group == "ffn" else heads
            n = rows * per_row
            ranked = importance(model, scores, layer, group, n)
            unit_scores[group] = ranked.primary
            remove = n_removed(plan.percent(layer, group), per_row)
            if remove == 0:
                kept[group] = np.arange(n)
                continue
            p = ranked.primary.reshape(rows, -1)
            s = ranked.secondary.reshape(rows, -1)
            idx = np.broadcast_to(np.arange(per_row), p.shape)
            # Sort each head (or the whole FFN) by score, then secondary, then index; keep the top.
            order = np.lexsort((idx, s, p), axis=-1)
            keep_local = np.sort(order[:, remove:], axis=-1)
            kept[group] = (keep_local + (np.arange(rows) * per_row)[:, None]).reshape(-1)
        kept_all.append(kept)
        scores_all.append(unit_scores)
    return PruningSelection(plan=plan, model_fingerprint=fingerprint, shapes=shapes, kept=kept_all, scores=scores_all)
