"""A model's anatomy as data: layers, widths per layer, parameters, weights fingerprint.

What the Model & data page shows about a loaded model; a pruned model has per-layer widths,
so every width is a tuple with one entry per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from obce_core.layout import layer_shapes
from obce_core.loading import model_fingerprint

__all__ = ["ModelAnatomy", "model_anatomy"]


@dataclass(frozen=True)
class ModelAnatomy:
    """What a model is made of. Widths are per layer: FFN units, query/key and value output dims."""

    architecture: str
    model_type: str
    pruned: bool
    layers: int
    hidden: int
    heads: int
    ffn: tuple[int, ...]
    query_key_width: tuple[int, ...]
    value_width: tuple[int, ...]
    parameters: int
    fingerprint: str
    device: str


def model_anatomy(model) -> ModelAnatomy:
    """The anatomy of a BERT-family model (with or without a task head, pruned or not)."""
    cfg = model.config
    shapes = layer_shapes(model)
    return ModelAnatomy(
        architecture=type(model).__name__,
        model_type=str(cfg.model_type),
        pruned=cfg.model_type != "bert",
        layers=len(shapes),
        hidden=int(cfg.hidden_size),
        heads=int(cfg.num_attention_heads),
        ffn=tuple(s["ffn"] for s in shapes),
        query_key_width=tuple(s["heads"] * s["qk"] for s in shapes),
        value_width=tuple(s["heads"] * s["v"] for s in shapes),
        parameters=int(sum(p.numel() for p in model.parameters())),
        fingerprint=model_fingerprint(model),
        device=str(next(model.parameters()).device),
    )
