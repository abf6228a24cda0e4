"""Masks on prunable units: each unit's output multiplied by a factor, through forward hooks.

What Fisher importance (``fisher``) differentiates and what integrated gradients
(``obce_core.attribution``) integrate along: a mask of 1 leaves the model as it is, a mask of 0
removes the unit exactly as ``prune`` does without compensation.

* FFN unit ``j``: the mask multiplies ``intermediate`` output ``j`` (after the activation), the
  input column ``j`` of ``output.dense`` reads.
* value dim ``j``: the mask multiplies the value Linear's output dim ``j`` (bias included); the
  attention context's dim ``j`` is a convex mix of it, so it scales what ``attention.output.dense``
  reads in column ``j``.
* query/key pair ``i``: the mask multiplies query output dim ``i`` (bias included). In the
  attention logit ``sum_i q_i k_i`` that scales exactly the term ``q_i k_i``, which is what
  removing the pair removes (``prune`` keeps the original attention scaling).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from obce_core.layout import component_modules, encoder_layers, layer_shapes

__all__ = ["MASKED_COMPONENTS", "group_widths", "unit_masks"]

# The component whose output each group's mask multiplies (``layout.component_modules``).
MASKED_COMPONENTS = {"ffn": "intermediate", "v": "value", "qk": "query"}


def group_widths(model) -> list[dict[str, int]]:
    """Per encoder layer: how many units each group has (``ffn`` units, ``v`` and ``qk`` dims of all heads)."""
    return [{"ffn": s["ffn"], "v": s["heads"] * s["v"], "qk": s["heads"] * s["qk"]} for s in layer_shapes(model)]


@contextlib.contextmanager
def unit_masks(model, masks: dict[tuple[int, str], torch.Tensor]) -> Iterator[dict[tuple[int, str], torch.Tensor]]:
    """Inside the block, every forward pass of ``model`` multiplies the outputs of group ``g``'s
    units in layer ``i`` by ``masks[(i, g)]``, a ``(rows, width)`` tensor broadcast over tokens: one
    row per example of the batch, or a single row for all of them.

    Entries are read at each forward pass, so the caller may put new ones in ``masks`` between
    passes (what a gradient wants: fresh leaf tensors); a key that is absent leaves that group
    unmasked. The hooks are removed on exit. The caller holds ``forward.model_lock(model)`` when the
    model is shared: hooks on a shared model would change other callers' outputs.
    """

    def hook(key):
        def multiply(module, inputs, output):
            mask = masks.get(key)
            return output if mask is None else output * mask[:, None, :].to(output.dtype)
        return multiply

    handles = [component_modules(layer)[component].register_forward_hook(hook((i, group)))
               for i, layer in enumerate(encoder_layers(model)) for group, component in MASKED_COMPONENTS.items()]
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()
