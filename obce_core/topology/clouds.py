"""One point cloud per layer: each text's [CLS] or mean-pooled vector after every layer.

A single forward pass with ``output_hidden_states=True`` gives the embeddings' output (hidden
state 0) and every encoder layer's output (hidden state ``l`` is the output of encoder layer
``l - 1``, which the dashboard calls ``L{l-1}``). No hooks are attached: the pass runs in
``obce_core.forward.locked_eval``, like every other forward pass on a model that sessions share.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from obce_core.forward import POOLINGS, Text, length_sorted_batches, locked_eval, pool, tokenize_texts
from obce_core.layout import base_model
from obce_core.validation import check_choice, check_int

__all__ = ["POOLINGS", "layer_clouds", "layer_name", "seeded_subsample"]


def layer_name(index: int) -> str:
    """The name of hidden state ``index``: ``embeddings`` for 0, else the encoder layer ``L{index-1}``."""
    return "embeddings" if index == 0 else f"L{index - 1}"


def seeded_subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, max_points)`` of ``range(n)``, chosen without replacement by ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def layer_clouds(
    model,
    tokenizer,
    texts: Sequence[Text],
    *,
    pooling: str = "cls",
    max_length: int = 128,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Every text's pooled vector at every hidden state: float32 ``(num_layers + 1, n_texts, hidden)``.

    ``pooling="cls"`` takes the [CLS] token, ``"mean"`` the mean over the non-padding tokens (what
    sentence-transformers' all-MiniLM-L6-v2 was trained with). A task head, if any, is bypassed.
    Rows are in input order whatever the batching. ``progress(done, total)`` counts texts.
    """
    owner = "layer_clouds"
    check_choice(pooling, "pooling", owner, POOLINGS, fix="'cls' reads the [CLS] token, 'mean' averages the tokens.")
    check_int(batch_size, "batch_size", owner, low=1)
    check_int(max_length, "max_length", owner, low=2)
    bert = base_model(model)
    encoded = tokenize_texts(tokenizer, texts, max_length)
    num_states = int(model.config.num_hidden_layers) + 1
    out = np.empty((num_states, len(encoded), int(model.config.hidden_size)), dtype=np.float32)
    done = 0
    with locked_eval(model) as device:
        for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
            states = bert(**batch, output_hidden_states=True, return_dict=True).hidden_states
            for k, h in enumerate(states):
                out[k, idx] = pool(h.float(), batch["attention_mask"], pooling).cpu().numpy()
            done += len(idx)
            if progress is not None:
                progress(done, len(encoded))
    if not np.isfinite(out).all():
        raise ValueError(
            "The model's hidden states contain NaN or infinite values, so their distances are undefined. "
            "Check the model (a broken checkpoint, or an overflow in float16?)."
        )
    return out
