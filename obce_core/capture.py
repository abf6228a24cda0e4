"""Recording every neuron's outputs while a dataset flows through a BERT encoder.

One forward pass with hooks on each encoder layer records, per sample, the outputs of attention
``query``/``key``/``value``, the FFN ``intermediate`` module after its activation function, and
(for display) the ``attention_output`` and ``output`` dense layers that feed a LayerNorm.
A sample is the [CLS] token (``cls``, the paper's setting), every non-padding token (``all``),
or the mean over non-padding tokens (``mean``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from obce_core.models import base_model, encoder_layers

__all__ = [
    "COMPONENTS",
    "PRUNABLE_COMPONENTS",
    "TOKEN_MODES",
    "Activations",
    "MemoryBudgetError",
    "capture_activations",
    "cls_embeddings",
    "component_modules",
    "length_sorted_batches",
    "tokenize_texts",
]

# Order matters: it is the column order of every activation matrix and scores table.
COMPONENTS = ("query", "key", "value", "intermediate", "attention_output", "output")
PRUNABLE_COMPONENTS = ("query", "key", "value", "intermediate")
TOKEN_MODES = ("cls", "all", "mean")
DEFAULT_MEMORY_BUDGET_GB = 4.0

Text = str | tuple[str, str]


class MemoryBudgetError(ValueError):
    """The requested capture would not fit the memory budget; nothing was run."""


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


def tokenize_texts(tokenizer, texts: Sequence[Text], max_length: int) -> list[dict]:
    """Unpadded encodings of single texts or (a, b) pairs, truncated to ``max_length``."""
    if len(texts) == 0:
        raise ValueError("No texts to score: pass at least 2 sentences (the paper uses hundreds).")
    pairs = isinstance(texts[0], (tuple, list))
    if pairs:
        if not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
            raise ValueError("Texts mix single sentences and pairs; pass all strings or all (a, b) pairs.")
        enc = tokenizer([t[0] for t in texts], [t[1] for t in texts], truncation=True, max_length=max_length)
    else:
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"Text #{bad[0]} is {type(texts[bad[0]]).__name__}, expected str.")
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def length_sorted_batches(tokenizer, encoded: list[dict], batch_size: int, device):
    """Yield ``(text indices, padded batch on device)``, texts of similar length together."""
    order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad([encoded[i] for i in idx], padding=True, return_tensors="pt")
        yield idx, {k: v.to(device) for k, v in batch.items()}


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
    and results are written back in input order, so the output does not depend on batching.
    The memory needed (samples x neurons x 4 bytes) is checked before anything runs.
    """
    if token not in TOKEN_MODES:
        raise ValueError(f"token must be one of {TOKEN_MODES}; got {token!r}. 'cls' is the paper's setting.")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2; got {batch_size} and {max_length}.")
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

    values = np.empty((n_samples, len(columns)), dtype=np.float32)
    # Each text's first sample row in `values`: token='all' gives a text one row per token.
    row_start = np.concatenate([[0], np.cumsum(lengths)])[:-1] if token == "all" else np.arange(len(encoded))
    sample_text = (
        np.repeat(np.arange(len(encoded)), lengths) if token == "all" else np.arange(len(encoded))
    ).astype(np.int64)

    device = next(model.parameters()).device
    state: dict = {}
    hooks = []
    col = 0
    for layer in encoder_layers(model):
        for module in component_modules(layer).values():
            width = _width(module)

            def hook(_module, _inputs, output, c0=col, c1=col + width):
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

            hooks.append(module.register_forward_hook(hook))
            col += width

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
                mask = batch["attention_mask"].bool()
                state["mask"] = mask
                if token == "all":
                    # out[mask] walks texts in batch order, tokens in position order.
                    state["rows"] = np.concatenate([row_start[i] + np.arange(lengths[i]) for i in idx])
                else:
                    state["rows"] = row_start[idx]
                model(**batch)
                if progress is not None:
                    state["done"] = state.get("done", 0) + len(idx)
                    progress(state["done"], len(encoded))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return Activations(values=values, columns=columns, sample_text=sample_text, token=token)


def cls_embeddings(model, tokenizer, texts: Sequence[Text], *, max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """The encoder's last hidden state at [CLS] for every text, in input order (float32, CPU).

    What the pruning fidelity checks compare between an original and a pruned model; a task head,
    if any, is bypassed.
    """
    bert = base_model(model)
    encoded = tokenize_texts(tokenizer, texts, max_length)
    out = torch.empty(len(encoded), int(model.config.hidden_size))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
            out[torch.as_tensor(idx)] = bert(**batch).last_hidden_state[:, 0].float().cpu()
    return out
