"""Recording every neuron's outputs while a dataset flows through a BERT encoder.

One forward pass with hooks on each encoder layer records, per sample, the outputs of attention
``query``/``key``/``value``, the FFN ``intermediate`` module after its activation function, and
(for display) the ``attention_output`` and ``output`` dense layers that feed a LayerNorm.
A sample is the [CLS] token (``cls``, the paper's setting), every non-padding token (``all``),
or the mean over non-padding tokens (``mean``).

Models and tokenizers are shared between threads (the dashboard caches one per process for all
sessions). Hooks are attached only while :func:`model_lock` of the model is held, and they record
only the forward passes of the capture that attached them; every other forward pass on a shared
model (``cls_embeddings`` here, latency checks, ...) holds the same lock, so no caller ever runs a
model while someone else's hooks are on it. ``output_hidden_states`` would avoid hooks, but it
gives only layer outputs, not query/key/value or the FFN's inner activations.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from obce_core.loading import base_model, encoder_layers
from obce_core.validation import check_choice, check_int, check_number

__all__ = [
    "COMPONENTS",
    "DEFAULT_MEMORY_BUDGET_GB",
    "PRUNABLE_COMPONENTS",
    "TOKEN_MODES",
    "TRUNCATE_CHARS_PER_TOKEN",
    "Activations",
    "CaptureError",
    "MemoryBudgetError",
    "capture_activations",
    "check_memory_budget",
    "cls_embeddings",
    "component_modules",
    "length_sorted_batches",
    "model_lock",
    "tokenize_texts",
    "truncate_text",
]

# Order matters: it is the column order of every activation matrix and scores table.
COMPONENTS = ("query", "key", "value", "intermediate", "attention_output", "output")
PRUNABLE_COMPONENTS = ("query", "key", "value", "intermediate")
TOKEN_MODES = ("cls", "all", "mean")
DEFAULT_MEMORY_BUDGET_GB = 4.0
# A text is cut to this many characters per token of max_length BEFORE tokenizing, so a huge
# single-line text costs what a short one does. Every token covers at least one non-space
# character, so the cut changes nothing unless the first max_length tokens are spread over more
# than 20 characters each on average (long runs of whitespace or of characters the tokenizer drops).
TRUNCATE_CHARS_PER_TOKEN = 20

Text = str | tuple[str, str]


class MemoryBudgetError(ValueError):
    """The requested capture would not fit the memory budget; nothing was run."""


class CaptureError(RuntimeError):
    """A capture's result failed its consistency check (a hook missed a batch, a value is not finite)."""


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


@dataclass
class Activations:
    """Captured outputs: ``values[sample, column]``, with ``columns`` naming each column."""

    values: np.ndarray  # float32 (n_samples, n_columns)
    columns: pd.DataFrame  # layer, component, neuron; row i describes values[:, i]
    sample_text: np.ndarray  # int64 (n_samples,): which input text each sample came from
    token: str


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


def _width(module: torch.nn.Module) -> int:
    linear = module.dense if hasattr(module, "dense") else module
    return int(linear.out_features)


def _column_table(model) -> pd.DataFrame:
    rows = []
    for layer_idx, layer in enumerate(encoder_layers(model)):
        for component, module in component_modules(layer).items():
            width = _width(module)
            rows.append(
                pd.DataFrame({"layer": layer_idx, "component": component, "neuron": np.arange(width)})
            )
    table = pd.concat(rows, ignore_index=True)
    table["component"] = pd.Categorical(table["component"], categories=COMPONENTS)
    return table


# -- tokenizing ----------------------------------------------------------------------------
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


# -- capture -------------------------------------------------------------------------------
def capture_activations(
    model,
    tokenizer,
    texts: Sequence[Text],
    *,
    token: str = "cls",
    batch_size: int = 32,
    max_length: int = 128,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    progress: Callable[[int, int], None] | None = None,
) -> Activations:
    """Run ``texts`` through ``model`` once and record every neuron's output per sample.

    Batches are formed from texts of similar length (dynamic padding keeps the forward cheap)
    and results are written back in input order. Padding changes the float rounding of the
    matrix products, so different batch sizes agree to about 1e-5, not bit for bit (which is why
    the batch size is part of the score cache's key). The memory needed (samples x neurons x 4
    bytes) is checked before anything runs. Hooks stay on the model only while
    :func:`model_lock` is held and record only this call's forward passes; the result is checked
    (every hook fired once per batch, every value finite) or ``CaptureError`` is raised.
    """
    owner = "capture_activations"
    check_choice(token, "token", owner, TOKEN_MODES, fix="'cls' is the paper's setting.")
    check_int(batch_size, "batch_size", owner, low=1)
    check_int(max_length, "max_length", owner, low=2)
    check_memory_budget(memory_budget_gb, owner)
    encoded = tokenize_texts(tokenizer, texts, max_length)
    columns = _column_table(model)
    lengths = np.array([len(e["input_ids"]) for e in encoded])
    n_samples = int(lengths.sum()) if token == "all" else len(encoded)
    need_gb = n_samples * len(columns) * 4 / 2**30
    if need_gb > memory_budget_gb:
        raise MemoryBudgetError(
            f"Capturing {n_samples:,} samples x {len(columns):,} neurons (float32) needs "
            f"{need_gb:.2f} GiB, over the memory budget of {memory_budget_gb:.2f} GiB. Lower the "
            "number of texts (--n), use token='cls' or 'mean' instead of 'all', lower max_length, "
            "or raise the budget (memory_budget_gb / --memory-budget-gb)."
        )

    # NaN marks rows no hook has written yet; the check at the end finds any left.
    values = np.full((n_samples, len(columns)), np.nan, dtype=np.float32)
    # Each text's first sample row in `values`: token='all' gives a text one row per token.
    row_start = np.concatenate([[0], np.cumsum(lengths)])[:-1] if token == "all" else np.arange(len(encoded))
    sample_text = (
        np.repeat(np.arange(len(encoded)), lengths) if token == "all" else np.arange(len(encoded))
    ).astype(np.int64)

    with model_lock(model):
        _run_hooked(model, tokenizer, encoded, values, row_start, lengths, token, batch_size, progress)
    _check_finite(values, columns)
    return Activations(values=values, columns=columns, sample_text=sample_text, token=token)


def _run_hooked(model, tokenizer, encoded, values, row_start, lengths, token, batch_size, progress) -> None:
    """The forward passes with hooks attached; the caller holds ``model_lock(model)``."""
    device = next(model.parameters()).device
    me = threading.get_ident()
    state: dict = {"active": False}
    modules = [m for layer in encoder_layers(model) for m in component_modules(layer).values()]
    fired = np.zeros(len(modules), dtype=np.int64)

    def make_hook(k: int, c0: int, c1: int):
        def hook(_module, _inputs, output):
            # Only this capture's own forward passes are recorded: a pass by another thread that
            # skipped the lock, or a nested one from `progress`, leaves `values` alone.
            if not state["active"] or threading.get_ident() != me:
                return
            out = output[0] if isinstance(output, tuple) else output
            mask = state["mask"]
            if token == "cls":
                sel = out[:, 0, :]
            elif token == "mean":
                m = mask.unsqueeze(-1).to(out.dtype)
                sel = (out * m).sum(1) / m.sum(1).clamp_min(1)
            else:
                sel = out[mask]
            values[state["rows"], c0:c1] = sel.float().cpu().numpy()
            fired[k] += 1

        return hook

    hooks, col = [], 0
    was_training = model.training
    try:
        for k, module in enumerate(modules):
            width = _width(module)
            hooks.append(module.register_forward_hook(make_hook(k, col, col + width)))
            col += width
        model.eval()
        done = 0
        with torch.inference_mode():
            for n_batch, (idx, batch) in enumerate(length_sorted_batches(tokenizer, encoded, batch_size, device), 1):
                state["mask"] = batch["attention_mask"].bool()
                if token == "all":
                    # out[mask] walks texts in batch order, tokens in position order.
                    state["rows"] = np.concatenate([row_start[i] + np.arange(lengths[i]) for i in idx])
                else:
                    state["rows"] = row_start[idx]
                state["active"] = True
                try:
                    model(**batch)
                finally:
                    state["active"] = False
                if (fired != n_batch).any():
                    k = int(np.flatnonzero(fired != n_batch)[0])
                    raise CaptureError(
                        f"Capture hook {k} fired {int(fired[k])} times in {n_batch} batches; the model's "
                        "forward pass does not call each encoder module once. Nothing was scored."
                    )
                done += len(idx)
                if progress is not None:
                    progress(done, len(encoded))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _check_finite(values: np.ndarray, columns: pd.DataFrame) -> None:
    finite = np.isfinite(values)
    if finite.all():
        return
    bad_col = int(np.flatnonzero(~finite.all(axis=0))[0])
    where = columns.iloc[bad_col]
    raise CaptureError(
        f"{int((~finite).sum()):,} captured value(s) are NaN or infinite, first at layer {int(where['layer'])} "
        f"{where['component']} neuron {int(where['neuron'])}: the model's weights are broken (NaN or "
        "overflowing). Nothing was scored; reload the model."
    )


def check_memory_budget(memory_budget_gb, owner: str) -> float:
    """The memory budget as a finite positive number of GiB (NaN would switch the check off)."""
    return check_number(memory_budget_gb, "memory_budget_gb", owner, low=0, low_open=True,
                        fix="Pass the GiB that captured activations may use, e.g. 4.")


def cls_embeddings(model, tokenizer, texts: Sequence[Text], *, max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """The encoder's last hidden state at [CLS] for every text, in input order (float32, CPU).

    What the pruning fidelity checks compare between an original and a pruned model; a task head,
    if any, is bypassed. Runs under :func:`model_lock`, in eval mode.
    """
    bert = base_model(model)
    encoded = tokenize_texts(tokenizer, texts, max_length)
    out = torch.empty(len(encoded), int(model.config.hidden_size))
    device = next(model.parameters()).device
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
                    out[torch.as_tensor(idx)] = bert(**batch).last_hidden_state[:, 0].float().cpu()
        finally:
            model.train(was_training)
    return out
