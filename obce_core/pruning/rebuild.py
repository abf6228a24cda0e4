"""``rebuild``: a new model of class ``cls`` and ``config`` holding a given state dict, like another model.

What unit surgery (``surgery``) and hidden-dim surgery (``hidden``) do once they have sliced the
weights. The model is built on the meta device and filled by assignment: no random
initialisation and no second copy of the weights (together most of a prune's time). The device
context is thread-local, so models other threads build meanwhile are initialised as usual.
"""

from __future__ import annotations

import torch

__all__ = ["rebuild"]


def rebuild(cls, config, state: dict[str, torch.Tensor], like, *, add_pooling_layer: bool | None = None):
    """``cls(config)`` holding ``state`` (tensors taken as they are), in ``like``'s train/eval mode.

    ``add_pooling_layer`` is passed to a bare encoder class; the buffers a state dict leaves out
    (BERT's position and token-type ids) are copied from ``like``.
    """
    with torch.device("meta"):
        new = cls(config) if add_pooling_layer is None else cls(config, add_pooling_layer=add_pooling_layer)
    new.load_state_dict(state, strict=True, assign=True)
    _fill_unsaved_buffers(new, like)
    new.train(like.training)
    return new


def _fill_unsaved_buffers(new, model) -> None:
    """Copy the buffers a state dict leaves out (BERT's position and token-type ids) from ``model``."""
    old = {name.split(".", 1)[-1] if name.startswith(f"{model.base_model_prefix}.") else name: buf
           for name, buf in model.named_buffers()}
    for name, buf in list(new.named_buffers()):
        if not buf.is_meta:
            continue
        key = name.split(".", 1)[-1] if name.startswith(f"{new.base_model_prefix}.") else name
        if key not in old:
            raise RuntimeError(f"Buffer {name!r} of the pruned model has no counterpart in the source model.")
        owner, _, attr = name.rpartition(".")
        module = new.get_submodule(owner) if owner else new
        module.register_buffer(attr, old[key].clone(), persistent=False)  # persistent ones came with the state
