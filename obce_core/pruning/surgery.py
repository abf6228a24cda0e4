"""``prune``: the model surgery that removes the selected units, and what replaces them.

``prune(model, scores, plan) -> (pruned_model, report)`` returns a new, physically smaller
``ObceBertModel`` / ``ObceBertForSequenceClassification``; the input model is untouched. Linear
layers are sliced, the config records the per-layer sizes and the original attention scaling, and
the classifier keeps its pooling.

Compensation (what replaces a removed unit) is computed by ``compensation.compensate`` for every
layer before any weight is written; see that module for the methods and the default ``auto``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import BertForSequenceClassification, BertModel

from obce_core.layout import GROUP_COMPONENTS, GROUP_LAYOUT, GROUP_NAMES, GROUPS, READ_GROUPS, base_model
from obce_core.obce_bert import ObceBertConfig, ObceBertForSequenceClassification, ObceBertModel
from obce_core.pruning.compensation import SEQUENTIAL_LSQ, compensate
from obce_core.pruning.hidden import narrow_stream, plan_hidden_cut
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.rebuild import rebuild
from obce_core.pruning.report import PruningReport, build_report
from obce_core.pruning.selection import PruningSelection, select_units
from obce_core.pruning.sequential import sequential_tune

if TYPE_CHECKING:
    from obce_core.pruning.calibration import Calibration
    from obce_core.pruning.hidden_stream import HiddenStream

__all__ = ["prune"]


def _target_class(model):
    if isinstance(model, BertForSequenceClassification):
        return ObceBertForSequenceClassification, "bert."
    if isinstance(model, BertModel):
        return ObceBertModel, ""
    raise TypeError(
        f"prune supports BertModel and BertForSequenceClassification (and obce's pruned variants); got "
        f"{type(model).__name__}. Load the model with obce_core.load_model(source[, num_labels=...])."
    )


def _refuse_non_finite(values: np.ndarray, what: str, layer: int, group: str) -> None:
    """A NaN or infinite statistic would rank units arbitrarily or poison a bias: refuse it."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        components = "/".join(GROUP_COMPONENTS[group])
        raise ValueError(
            f"The {what} of layer {layer} {components} ({GROUP_NAMES[group]}) is NaN or infinite for "
            f"{len(bad)} unit(s) (first: {bad[:5].tolist()}); nothing was pruned. The scores are broken: "
            "rescore the model with obce_core.score_model (or `python -m obce_core score`)."
        )


def _check_scores(selection: PruningSelection, plan: PruningPlan) -> None:
    """The scorer's scores of every group that loses units, checked finite."""
    for i in range(selection.num_layers):
        for group in GROUPS:
            if len(selection.removed(i, group)):
                _refuse_non_finite(selection.scores[i][group], f"'{plan.scorer}' score", i, group)


def prune(model, scores, plan: PruningPlan, *, calibration: Calibration | None = None,
          hidden_stream: HiddenStream | None = None) -> tuple[torch.nn.Module, PruningReport]:
    """A new, smaller ``ObceBert*`` model with the units of ``select_units`` removed, and its report.

    ``model`` is not changed. ``BertModel`` gives ``ObceBertModel``; ``BertForSequenceClassification``
    gives ``ObceBertForSequenceClassification`` with its head (and pooler, or mean pooling) copied.
    The new config carries the per-layer sizes and the original attention scaling. A plan that
    removes nothing gives a model whose outputs are bit-identical to the input's. NaN or infinite
    scores or compensation values are refused before anything is built.

    ``calibration`` (``capture_calibration(model, tokenizer, texts)``, captured once on this model)
    is what ``token-mean``, ``lsq`` and ``auto`` fit and choose with; ``auto`` without it is ``none``
    (see ``obce_core.pruning.compensation``). ``sequential-lsq`` then re-fits the new model's readers
    in forward order on its own inputs (``obce_core.pruning.sequential``). The report's
    ``compensations`` say what each layer got.

    ``plan.hidden > 0`` then narrows the residual stream (``obce_core.pruning.hidden``), ranked and
    normalised with ``hidden_stream`` (``capture_stream(model, tokenizer, texts)`` on this model).
    """
    cls, prefix = _target_class(model)
    selection = select_units(scores, plan, model)
    _check_scores(selection, plan)
    hidden_cut = plan_hidden_cut(plan, model, hidden_stream)  # checked before any work too
    compensation = compensate(selection, scores, plan, model, calibration)  # before any weight is written
    rows = [c.row() for c in compensation.values()]

    source = {name: t.detach() for name, t in model.state_dict().items()}
    state = dict(source)  # sliced tensors replace their entries below; the rest are cloned at the end

    def take(name: str, dim: int, idx: np.ndarray) -> None:
        t = source[name]
        state[name] = t.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device))

    for i, kept in enumerate(selection.kept):
        p = f"{prefix}encoder.layer.{i}."
        if len(selection.removed(i, "qk")):
            for name in GROUP_LAYOUT["qk"].units:
                take(p + name + ".weight", 0, kept["qk"])
                take(p + name + ".bias", 0, kept["qk"])
            # No Q/K compensation: see the module docstring.
        for group in READ_GROUPS:
            if not len(selection.removed(i, group)):
                continue
            (units,), reader = GROUP_LAYOUT[group].units, GROUP_LAYOUT[group].reader
            fix = compensation[(i, group)]
            take(p + units + ".weight", 0, kept[group])
            take(p + units + ".bias", 0, kept[group])
            take(p + reader + ".weight", 1, kept[group])
            old_bias, old_weight = source[p + reader + ".bias"], source[p + reader + ".weight"]
            if fix.method != "none":
                state[p + reader + ".bias"] = torch.as_tensor(fix.bias, device=old_bias.device).to(old_bias.dtype)
            if fix.weight is not None:
                state[p + reader + ".weight"] = torch.as_tensor(fix.weight, device=old_weight.device).to(old_weight.dtype)

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
    state = {name: t.clone() if t is source.get(name) else t for name, t in state.items()}
    new = rebuild(cls, config, state, model, add_pooling_layer=None if cls is ObceBertForSequenceClassification else has_pooler)
    if plan.compensation == SEQUENTIAL_LSQ:
        rows = sequential_tune(model, new, selection, calibration, rows)
    if hidden_cut is not None:
        new = narrow_stream(new, hidden_cut)
    return new, build_report(model, selection, compensations=rows)

