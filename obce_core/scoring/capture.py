"""Recording every neuron's outputs while a dataset flows through a BERT encoder.

One forward pass with hooks on each encoder layer records, per sample, the outputs of attention
``query``/``key``/``value``, the FFN ``intermediate`` module after its activation function, and
(for display) the ``attention_output`` and ``output`` dense layers that feed a LayerNorm.
A sample is the [CLS] token (``cls``, the paper's setting), every non-padding token (``all``),
or the mean over non-padding tokens (``mean``).

Models and tokenizers are shared between threads (the dashboard caches one per process for all
sessions). Hooks are attached only while :func:`obce_core.forward.model_lock` of the model is held,
and they record only the forward passes of the capture that attached them; every other forward
pass on a shared model runs in :func:`obce_core.forward.locked_eval`, under the same lock, so no
caller ever runs a model while someone else's hooks are on it. ``output_hidden_states`` would avoid hooks, but it
gives only layer outputs, not query/key/value or the FFN's inner activations.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from obce_core.forward import (
    TRUNCATE_CHARS_PER_TOKEN,
    Text,
    length_sorted_batches,
    locked_eval,
    model_lock,
    pool,
    tokenize_texts,
    truncate_text,
)
from obce_core.choices import TOKEN_MODES  # defined without torch for the CLI's parser
from obce_core.layout import COMPONENTS, PRUNABLE_COMPONENTS, base_model, component_modules, encoder_layers
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

DEFAULT_MEMORY_BUDGET_GB = 4.0


class MemoryBudgetError(ValueError):
    """The requested capture would not fit the memory budget; nothing was run."""


class CaptureError(RuntimeError):
    """A capture's result failed its consistency check (a hook missed a batch, a value is not finite)."""


@dataclass
class Activations:
    """Captured outputs: ``values[sample, column]``, with ``columns`` naming each column."""

    values: np.ndarray  # float32 (n_samples, n_columns)
    columns: pd.DataFrame  # layer, component, neuron; row i describes values[:, i]
    sample_text: np.ndarray  # int64 (n_samples,): which input text each sample came from
    token: str


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
    :func:`obce_core.forward.model_lock` is held and record only this call's forward passes; the result is checked
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

    with locked_eval(model) as device:
        _run_hooked(model, tokenizer, encoded, values, row_start, lengths, token, batch_size, progress, device)
    _check_finite(values, columns)
    return Activations(values=values, columns=columns, sample_text=sample_text, token=token)


def _run_hooked(model, tokenizer, encoded, values, row_start, lengths, token, batch_size, progress, device) -> None:
    """The forward passes with hooks attached; the caller is inside ``locked_eval(model)``."""
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
            sel = out[mask] if token == "all" else pool(out, mask, token)
            values[state["rows"], c0:c1] = sel.float().cpu().numpy()
            fired[k] += 1

        return hook

    hooks, col = [], 0
    try:
        for k, module in enumerate(modules):
            width = _width(module)
            hooks.append(module.register_forward_hook(make_hook(k, col, col + width)))
            col += width
        done = 0
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
    if any, is bypassed. Runs in :func:`obce_core.forward.locked_eval`.
    """
    bert = base_model(model)
    encoded = tokenize_texts(tokenizer, texts, max_length)
    out = torch.empty(len(encoded), int(model.config.hidden_size))
    with locked_eval(model) as device:
        for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
            out[torch.as_tensor(idx)] = pool(bert(**batch).last_hidden_state, None, "cls").float().cpu()
    return out
