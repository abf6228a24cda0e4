"""BERT's layout facts, in one place: layers, components, prunable groups and who reads them.

The ground floor of obce_core: it imports nothing from the package but ``validation``. Everything
that walks a BERT-family model's modules (scoring hooks, importance scorers, calibration,
compensation, surgery, reports, anatomy) asks here instead of spelling module paths itself.

* A **component** is a module whose output the scoring records, per encoder layer
  (:data:`COMPONENTS`, :func:`component_modules`).
* A **group** is what pruning removes units of (:data:`GROUPS`): FFN units, query/key dim pairs,
  value dims. :data:`GROUP_LAYOUT` is the one table of each group's scores-table components,
  labels, the Linear(s) whose outputs are its units, the Linear that READS them (its input
  columns) and the LayerNorm that follows that reader. Query/key pairs have no reader Linear: they
  meet in the attention logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from obce_core.choices import GROUPS  # defined without torch for the CLI's parser; GROUP_LAYOUT's keys
from obce_core.validation import check_choice

__all__ = [
    "COMPONENTS",
    "GROUPS",
    "GROUP_COMPONENTS",
    "GROUP_LABELS",
    "GROUP_LAYOUT",
    "GROUP_NAMES",
    "GROUP_TAGS",
    "PRUNABLE_COMPONENTS",
    "READ_GROUPS",
    "GroupLayout",
    "ModelLoadError",
    "base_model",
    "component_modules",
    "encoder_layers",
    "following_norm",
    "layer_shapes",
    "reader",
    "unit_modules",
]

# Order matters: it is the column order of every activation matrix and scores table.
COMPONENTS = ("query", "key", "value", "intermediate", "attention_output", "output")
PRUNABLE_COMPONENTS = ("query", "key", "value", "intermediate")


class ModelLoadError(ValueError):
    """A model could not be loaded, or is not a BERT-family encoder; the message says how to fix it."""


@dataclass(frozen=True)
class GroupLayout:
    """Where one prunable group lives in a ``BertLayer`` and what it is called.

    ``components``: the scores-table components behind it; ``tag``/``label``/``name``: a word, a
    short label (plots, tables) and the long name (messages); ``units``: the Linear(s) whose
    outputs are the units; ``reader``/``norm``: the Linear whose input columns the units feed and
    the LayerNorm after it (``None`` for query/key pairs).
    """

    components: tuple[str, ...]
    tag: str
    label: str
    name: str
    units: tuple[str, ...]
    reader: str | None
    norm: str | None


GROUP_LAYOUT: dict[str, GroupLayout] = {
    "ffn": GroupLayout(("intermediate",), "FFN", "FFN units", "FFN units", ("intermediate.dense",),
                       "output.dense", "output.LayerNorm"),
    "qk": GroupLayout(("query", "key"), "query/key", "query/key pairs", "query/key dim pairs per head",
                      ("attention.self.query", "attention.self.key"), None, None),
    "v": GroupLayout(("value",), "value", "value dims", "value dims per head", ("attention.self.value",),
                     "attention.output.dense", "attention.output.LayerNorm"),
}
GROUP_COMPONENTS = {g: info.components for g, info in GROUP_LAYOUT.items()}
GROUP_TAGS = {g: info.tag for g, info in GROUP_LAYOUT.items()}
GROUP_LABELS = {g: info.label for g, info in GROUP_LAYOUT.items()}
GROUP_NAMES = {g: info.name for g, info in GROUP_LAYOUT.items()}
# The groups whose units a Linear reads (what compensation can rewrite), in GROUPS order.
READ_GROUPS = tuple(g for g, info in GROUP_LAYOUT.items() if info.reader is not None)


def base_model(model):
    """The bare encoder (``BertModel``) inside any BERT head model."""
    return getattr(model, model.base_model_prefix, model) if hasattr(model, "base_model_prefix") else model


def encoder_layers(model):
    """The ``BertLayer`` list of a BERT-family model, with or without a task head."""
    bert = base_model(model)
    try:
        return bert.encoder.layer
    except AttributeError as exc:
        raise ModelLoadError(
            f"{type(model).__name__} has no `encoder.layer` list; obce needs a BERT-family encoder."
        ) from exc


def layer_shapes(model) -> list[dict[str, int]]:
    """Per encoder layer: ``heads``, ``qk`` and ``v`` (dims per head) and ``ffn`` (units).

    Read from the modules, so it holds for BERT, obce_bert and any model pruned in between.
    """
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


def component_modules(layer) -> dict[str, torch.nn.Module]:
    """The module whose output is each component, for one ``BertLayer``."""
    return {
        "query": layer.attention.self.query,
        "key": layer.attention.self.key,
        "value": layer.attention.self.value,
        "intermediate": layer.intermediate,  # its output is after the activation function
        "attention_output": layer.attention.output.dense,
        "output": layer.output.dense,
    }


def _group(group: str, owner: str) -> GroupLayout:
    check_choice(group, "group", owner, GROUPS)
    return GROUP_LAYOUT[group]


def unit_modules(layer, group: str) -> tuple[torch.nn.Linear, ...]:
    """The Linear(s) of one ``BertLayer`` whose output features are ``group``'s units."""
    return tuple(layer.get_submodule(path) for path in _group(group, "unit_modules").units)


def _read_side(layer, group: str, owner: str, field: str) -> torch.nn.Module:
    info = _group(group, owner)
    path = getattr(info, field)
    if path is None:
        raise ValueError(f"{owner}: group {group!r} ({info.name}) has no reader Linear (its units meet in the "
                         f"attention logits), so nothing reads or normalises them. Groups with a reader: {READ_GROUPS}.")
    return layer.get_submodule(path)


def reader(layer, group: str) -> torch.nn.Linear:
    """The Linear of one ``BertLayer`` whose input columns ``group``'s units feed (ffn, v)."""
    return _read_side(layer, group, "reader", "reader")


def following_norm(layer, group: str) -> torch.nn.LayerNorm:
    """The LayerNorm that normalises ``group``'s reader output plus the residual (ffn, v)."""
    return _read_side(layer, group, "following_norm", "norm")
