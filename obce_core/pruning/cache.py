"""Caches that live on the object they describe (a model, a scores object), never in a module.

A model's fingerprint (a hash of every weight, ~0.1 s on all-MiniLM-L6-v2) and its weight
magnitudes are kept on the model itself; the per-unit arrays of a scores table on the scores
object. Each entry carries a key that says which state it was computed from, so it is recomputed
when that state changes and dies with its owner.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from obce_core.layout import base_model
from obce_core.loading import model_fingerprint

__all__ = ["cached_fingerprint", "cached_on", "weights_key"]

_ATTRIBUTE = "_obce_cache"


def cached_on(owner: Any, name: str, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept on ``owner`` under ``name`` for as long as ``key`` stays the same.

    A tuple key is compared by value, any other key by identity (a DataFrame cannot be compared
    cheaply; the entry holds it, so its identity cannot be reused while cached). Objects without a
    ``__dict__`` are not cached.
    """
    store = getattr(owner, "__dict__", None)
    if store is None:
        return compute()
    entries = store.setdefault(_ATTRIBUTE, {})
    hit = entries.get(name)
    if hit is not None and (hit[0] is key or (isinstance(key, tuple) and hit[0] == key)):
        return hit[1]
    value = compute()
    entries[name] = (key, value)
    return value


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return -1


def weights_key(model) -> tuple:
    """Changes whenever any encoder tensor of ``model`` is changed or replaced, or its shape does.

    An in-place change through the tensor (optimizer step, load_state_dict, ``w[...] = x`` under
    no_grad) bumps its ``_version``; a reassignment changes its ``data_ptr``. Writes through
    ``.data`` bypass the counter and are not seen: do not edit a cached model that way.
    """
    bert = base_model(model)
    tensors = [*bert.parameters(), *bert.buffers()]
    cfg = model.config
    shape = tuple(str(getattr(cfg, k, None)) for k in ("qk_head_sizes", "v_head_sizes", "intermediate_sizes"))
    return (shape, tuple((t.data_ptr(), _version(t), tuple(t.shape)) for t in tensors))


def cached_fingerprint(model) -> str:
    """``model_fingerprint(model)``, recomputed only after the weights change."""
    return cached_on(model, "fingerprint", weights_key(model), lambda: model_fingerprint(model))
