"""Running a shared BERT model: its lock, the locked eval forward, pooling, tokenizing and batching.

Ground floor with ``layout``: imports nothing from obce_core but ``layout`` and ``validation``.

Models and tokenizers are shared between threads (the dashboard caches one per process for all
sessions). Every forward pass on such a model runs inside :func:`locked_eval`, which holds the
model's :func:`model_lock`, switches to eval mode without autograd and restores the training mode
afterwards; scoring attaches its hooks only while holding the same lock, so no caller ever runs a
model while someone else's hooks are on it.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator, Sequence

import numpy as np
import torch

from obce_core.choices import POOLINGS  # defined without torch for the CLI's parser
from obce_core.layout import base_model
from obce_core.validation import check_choice

__all__ = [
    "POOLINGS",
    "TRUNCATE_CHARS_PER_TOKEN",
    "Text",
    "length_sorted_batches",
    "locked_eval",
    "model_lock",
    "pool",
    "text_label",
    "tokenize_texts",
    "truncate_text",
]

# A text is cut to this many characters per token of max_length BEFORE tokenizing, so a huge
# single-line text costs what a short one does. Every token covers at least one non-space
# character, so the cut changes nothing unless the first max_length tokens are spread over more
# than 20 characters each on average (long runs of whitespace or of characters the tokenizer drops).
TRUNCATE_CHARS_PER_TOKEN = 20

Text = str | tuple[str, str]

# -- sharing models between threads ----------------------------------------------------------
_LOCKS: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(obj) -> threading.RLock:
    """The one re-entrant lock of a shared model (or tokenizer); created on first use.

    Hold it (``with model_lock(model):``) for the whole of anything that attaches hooks to a model,
    switches its train/eval mode or runs a forward pass on it, whenever other threads may reach the
    same model. A head model and its encoder share one lock (the lock belongs to the encoder the
    hooks sit on). Fast tokenizers are not thread-safe either (their truncation settings live in
    Rust state): obce tokenizes under the tokenizer's own lock. Locks go away with their object.
    """
    key = base_model(obj) if isinstance(obj, torch.nn.Module) else obj
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock


@contextlib.contextmanager
def locked_eval(model) -> Iterator[torch.device]:
    """Hold ``model_lock(model)``, run in eval mode without autograd, restore the mode after.

    Yields the device of the model's parameters (where batches must go).
    """
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                yield next(model.parameters()).device
        finally:
            model.train(was_training)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per sequence of ``hidden`` (batch, tokens, features): [CLS] or the masked mean.

    ``"mean"`` averages the tokens whose mask is 1: padding must not dilute the mean
    (sentence-transformers' mean pooling, which all-MiniLM-L6-v2 was trained with, averages the
    real tokens only).
    """
    check_choice(pooling, "pooling", "pool", POOLINGS,
                 fix="'cls' reads the [CLS] token, 'mean' averages the real tokens.")
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


# -- texts -----------------------------------------------------------------------------------
def text_label(text: Text, width: int | None = None) -> str:
    """A text as one line: pairs joined by ' [SEP] ', cut to ``width`` characters with '…'."""
    line = " [SEP] ".join(text) if isinstance(text, (tuple, list)) else str(text)
    if width is not None and len(line) > width:
        return line[: width - 1] + "…"
    return line


def truncate_text(text: str, max_length: int) -> str:
    """``text`` cut to ``TRUNCATE_CHARS_PER_TOKEN * max_length`` characters (see that constant)."""
    return text[: TRUNCATE_CHARS_PER_TOKEN * max_length]


def tokenize_texts(tokenizer, texts: Sequence[Text], max_length: int) -> list[dict]:
    """Unpadded encodings of single texts or (a, b) pairs, truncated to ``max_length`` tokens.

    Texts are cut by characters first (:func:`truncate_text`), so a 50 MB line tokenizes in
    milliseconds instead of minutes and gigabytes.
    """
    if len(texts) == 0:
        raise ValueError("No texts to score: pass at least 2 sentences (the paper uses hundreds).")
    pairs = isinstance(texts[0], (tuple, list))
    if pairs:
        if not all(isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t)
                   for t in texts):
            raise ValueError("Texts mix single sentences and pairs; pass all strings or all (a, b) pairs of strings.")
        first = [truncate_text(t[0], max_length) for t in texts]
        second = [truncate_text(t[1], max_length) for t in texts]
        with model_lock(tokenizer):
            enc = tokenizer(first, second, truncation=True, max_length=max_length)
    else:
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"Text #{bad[0]} is {type(texts[bad[0]]).__name__}, expected str.")
        with model_lock(tokenizer):
            enc = tokenizer([truncate_text(t, max_length) for t in texts], truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def length_sorted_batches(tokenizer, encoded: list[dict], batch_size: int, device):
    """Yield ``(text indices, padded batch on device)``, texts of similar length together."""
    order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        with model_lock(tokenizer):
            batch = tokenizer.pad([encoded[i] for i in idx], padding=True, return_tensors="pt")
        yield idx, {k: v.to(device) for k, v in batch.items()}
