"""Fisher importance of every prunable unit (Kwon et al. 2022), and adding it to a scores table.

"A Fast Post-Training Pruning Framework for Transformers" (Kwon et al., NeurIPS 2022) scores a
unit by the empirical Fisher information of a mask on it: put a mask ``m`` (all ones) on the unit's
output, and sum over labelled examples the SQUARED gradient of the task loss with respect to
``m``. It is the second-order (Fisher) estimate of the loss increase when the unit is removed.

Units, each with one mask per example, broadcast over that example's tokens (the hooks of
``unit_masks``, which integrated gradients share):

* FFN unit ``j``: the mask multiplies ``intermediate`` output ``j`` (after the activation).
* value dim ``j``: the mask multiplies the value Linear's output dim ``j``.
* query/key pair ``i``: the mask multiplies query output dim ``i``. In the attention logit
  ``sum_i q_i k_i`` that scales exactly the term ``q_i k_i``, which is what removing the pair
  removes (a mask on key dim ``i`` would scale the same term: the two gradients are equal). The
  pair's value is written on the query row AND the key row of the table, so the mean of the two
  (how ``importance`` builds a pair score from a table) is the pair's value.

Per-EXAMPLE squared gradients: each example in a batch gets its own mask row, so one backward
pass of the summed loss yields every example's own gradient (row ``b`` of the mask only touches
example ``b``); Fisher is the sum over examples of their squares, never the square of a batch sum.
Loss: cross-entropy for classification, squared error for a regression head (``num_labels == 1``),
the rule of the model's own loss (``ObceBertForSequenceClassification._loss``), summed over
examples.

``fisher_information`` returns one row per (layer, component, neuron); ``add_fisher`` puts that
into a ``NeuronScores`` table as its ``fisher`` column (kept by ``to_parquet``/``from_parquet``),
which the ``fisher`` scorer reads. Results are cached on disk, keyed by the encoder and head
weights, the examples, their labels and ``max_length``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from obce_core import glue
from obce_core.forward import length_sorted_batches, model_lock, tokenize_texts
from obce_core.io import atomic_path
from obce_core.layout import COMPONENTS, GROUP_COMPONENTS, PRUNABLE_COMPONENTS, layer_shapes
from obce_core.loading import model_fingerprint
from obce_core.pruning.importance import FISHER_COLUMN
from obce_core.pruning.unit_masks import MASKED_COMPONENTS, group_widths, unit_masks
from obce_core.scoring import default_cache_dir
from obce_core.training.trainer import check_head, head_fingerprint
from obce_core.validation import check_int, invalid

__all__ = ["FISHER_COLUMN", "add_fisher", "default_fisher_dir", "fisher_fingerprint", "fisher_information",
           "summed_task_loss", "task_labels"]

CACHE_FORMAT = 1
_OWNER = "fisher_information"

Progress = Callable[[int, int], None]


def default_fisher_dir() -> Path:
    """Where Fisher tables are cached: ``<OBCE_CACHE_DIR>/fisher``."""
    return Path(default_cache_dir()) / "fisher"


def _examples(spec, texts_and_labels, glue_dir, n: int, seed: int) -> tuple[list, np.ndarray, str]:
    if texts_and_labels is not None:
        try:
            texts, labels = texts_and_labels
        except (TypeError, ValueError):
            raise invalid("texts_and_labels", _OWNER, "a pair (texts, labels) of equal length",
                          type(texts_and_labels).__name__,
                          "Pass (list of sentences or sentence pairs, list of labels).") from None
        texts, labels = list(texts), np.asarray(labels)
        if len(texts) != len(labels) or len(texts) == 0:
            raise invalid("texts_and_labels", _OWNER, "a pair (texts, labels) of equal, non-zero length",
                          f"{len(texts)} texts and {len(labels)} labels")
        return texts, labels, "given examples"
    check_int(n, "n", _OWNER, low=1, fix="Give the number of labelled training examples to use, e.g. 512.")
    check_int(seed, "seed", _OWNER)
    # Always the TRAINING split: the dev split reports scores and must not choose what is pruned.
    data = glue.load_task(spec, "train", glue_dir, n=n, seed=seed)
    return glue.dataset_texts(data, spec), np.asarray(data["label"]), f"{len(data)} {spec.name} train examples (seed {seed})"


def task_labels(spec, labels: np.ndarray, owner: str = _OWNER) -> torch.Tensor:
    """``labels`` as the tensor the task's loss takes, refused (naming the fix) when they are not the task's."""
    if spec.num_labels == 1:
        if not np.issubdtype(labels.dtype, np.number) or not np.isfinite(labels.astype(np.float64)).all():
            raise invalid("labels", owner, "finite numbers for a regression task", labels[:5].tolist())
        return torch.as_tensor(labels.astype(np.float32))
    ok = np.issubdtype(labels.dtype, np.integer) and ((labels >= 0) & (labels < spec.num_labels)).all()
    if not ok:
        raise invalid("labels", owner, f"integers in 0..{spec.num_labels - 1} ({spec.name}'s classes)",
                      labels[:5].tolist(), "Load the examples with glue.load_task, whose labels are class ids.")
    return torch.as_tensor(labels.astype(np.int64))


def summed_task_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """The task loss summed over the examples: cross-entropy, or squared error for one label."""
    # The model's own rule, summed rather than averaged so each example's gradient is its own.
    # Computed here instead of passing labels= to the model: that sets config.problem_type on a
    # model other threads may share.
    if num_labels == 1:
        return torch.nn.functional.mse_loss(logits.view(-1).float(), labels.view(-1), reduction="sum")
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")


def _cache_key(model, texts, labels: np.ndarray, max_length: int) -> str:
    items = [list(t) if isinstance(t, (tuple, list)) else t for t in texts]
    data = {"format": CACHE_FORMAT, "model": model_fingerprint(model), "head": head_fingerprint(model),
            "texts": hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest(),
            "labels": hashlib.sha256(np.ascontiguousarray(labels.astype(np.float64)).tobytes()).hexdigest(),
            "max_length": max_length}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def fisher_information(model, tokenizer, task: str, *, texts_and_labels: tuple[Sequence, Sequence] | None = None,
                       glue_dir: str | os.PathLike | None = None, n: int = 512, seed: int = 0, max_length: int = 128,
                       batch_size: int = 16, progress: Progress | None = None,
                       cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> pd.DataFrame:
    """Fisher importance of every FFN unit, value dim and query/key pair of a task model.

    ``model`` is a sequence classifier for ``task`` (checked first, before any data is read).
    Examples: ``texts_and_labels=(texts, labels)``, or ``n`` examples of the task's TRAINING split
    drawn with ``seed`` from ``glue_dir`` (``glue.load_task``). Returns a DataFrame with columns
    ``layer, component, neuron, fisher``: components ``intermediate``, ``value``, ``query`` and
    ``key`` (the query/key pair's value on both rows), and ``attrs`` saying where it came from
    (``task``, ``n_examples``, ``examples``, ``max_length``, ``model_fingerprint``).
    ``progress(done, total)`` is called after every batch with the examples done. The model is
    left as it was (mode, no hooks, no gradients on its parameters).
    """
    spec = glue.get_task(task)
    check_head(model, spec)
    check_int(max_length, "max_length", _OWNER, low=8, high=8192)
    check_int(batch_size, "batch_size", _OWNER, low=1)
    texts, labels, source = _examples(spec, texts_and_labels, glue_dir, n, seed)
    label_tensor = task_labels(spec, labels)
    path = Path(cache_dir or default_fisher_dir()) / f"{_cache_key(model, texts, labels, max_length)}.parquet"
    if use_cache and path.is_file():
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError):
            table = None  # an unreadable entry is recomputed and replaced
        if table is not None and _shape_matches(table, model):
            table.attrs = _attrs(model, spec, len(texts), source, max_length)
            if progress is not None:
                progress(len(texts), len(texts))
            return table
    sums = _squared_gradient_sums(model, tokenizer, texts, label_tensor, spec.num_labels, max_length,
                                  batch_size, progress)
    table = _table(sums)
    if use_cache:
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
    table.attrs = _attrs(model, spec, len(texts), source, max_length)
    return table


def _attrs(model, spec, n_examples: int, source: str, max_length: int) -> dict:
    return {"task": spec.name, "n_examples": int(n_examples), "examples": source, "max_length": int(max_length),
            "model_fingerprint": model_fingerprint(model)}


def _squared_gradient_sums(model, tokenizer, texts, labels: torch.Tensor, num_labels: int, max_length: int,
                           batch_size: int, progress: Progress | None) -> list[dict[str, np.ndarray]]:
    encoded = tokenize_texts(tokenizer, texts, max_length)
    with model_lock(model), unit_masks(model, {}) as masks:
        widths = group_widths(model)
        sums = [{g: np.zeros(w[g], dtype=np.float64) for g in MASKED_COMPONENTS} for w in widths]
        was_training = model.training
        model.eval()  # Kwon et al. measure the deployed (dropout-free) network
        device = next(model.parameters()).device
        done = 0
        try:
            with torch.enable_grad():
                for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
                    rows = len(idx)
                    for i, w in enumerate(widths):
                        for g in MASKED_COMPONENTS:
                            masks[(i, g)] = torch.ones(rows, w[g], device=device, requires_grad=True)
                    logits = model(**batch).logits
                    loss = summed_task_loss(logits, labels[torch.as_tensor(idx)].to(device), num_labels)
                    keys = list(masks)
                    # allow_unused: a unit no path reaches the loss from (a layer pruned to nothing) has Fisher 0.
                    grads = torch.autograd.grad(loss, [masks[k] for k in keys], allow_unused=True)
                    for (i, g), grad in zip(keys, grads):
                        if grad is None:
                            continue
                        sums[i][g] += grad.double().pow(2).sum(dim=0).cpu().numpy()
                    done += rows
                    if progress is not None:
                        progress(done, len(texts))
        finally:
            masks.clear()
            model.train(was_training)
    return sums


def _table(sums: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    parts = []
    for layer, groups in enumerate(sums):
        for group, components in GROUP_COMPONENTS.items():
            for component in components:
                values = groups[group]
                parts.append(pd.DataFrame({"layer": np.int64(layer), "component": component,
                                           "neuron": np.arange(len(values), dtype=np.int64), FISHER_COLUMN: values}))
    return pd.concat(parts, ignore_index=True)


def _shape_matches(table: pd.DataFrame, model) -> bool:
    want = {(i, c): n for i, s in enumerate(layer_shapes(model))
            for c, n in (("intermediate", s["ffn"]), ("value", s["heads"] * s["v"]),
                         ("query", s["heads"] * s["qk"]), ("key", s["heads"] * s["qk"]))}
    have = table.groupby(["layer", "component"]).size().to_dict()
    return {(int(k[0]), str(k[1])): int(v) for k, v in have.items()} == want


def add_fisher(scores, fisher_table: pd.DataFrame):
    """``scores`` (``NeuronScores``) with a ``fisher`` column from ``fisher_information``'s table.

    Every prunable unit of the scores must have one finite, non-negative Fisher value; other rows
    (attention_output, output) get NaN. Refuses a table computed on other encoder weights when the
    table says which (``attrs["model_fingerprint"]``). Returns a new object; ``scores`` is unchanged.
    """
    owner = "add_fisher"
    if not isinstance(fisher_table, pd.DataFrame):
        raise invalid("fisher_table", owner, "a DataFrame from fisher_information", type(fisher_table).__name__)
    missing = [c for c in ("layer", "component", "neuron", FISHER_COLUMN) if c not in fisher_table.columns]
    if missing:
        raise invalid("fisher_table", owner, "a table with columns layer, component, neuron, fisher",
                      f"a table without {missing}", "Build it with obce_core.pruning.fisher_information(...).")
    values = fisher_table[FISHER_COLUMN].to_numpy(np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise invalid("fisher_table", owner, "finite, non-negative Fisher values",
                      "a table with NaN, infinite or negative values",
                      "Recompute it with fisher_information; a NaN means the model's loss was not finite.")
    made_on = fisher_table.attrs.get("model_fingerprint")
    if made_on is not None and made_on != scores.model_fingerprint:
        raise ValueError(
            f"The Fisher table was computed on a model with fingerprint {made_on}, the scores on "
            f"{scores.model_fingerprint}: they describe other encoder weights. Compute Fisher on the model the "
            "scores belong to (fisher_information(model, tokenizer, task, ...)).")
    right = fisher_table[["layer", "component", "neuron", FISHER_COLUMN]].copy()
    right["layer"] = right["layer"].astype(np.int64)
    right["neuron"] = right["neuron"].astype(np.int64)
    right["component"] = right["component"].astype(str)
    if right.duplicated(["layer", "component", "neuron"]).any():
        raise invalid("fisher_table", owner, "one row per (layer, component, neuron)", "a table with duplicate rows")
    table = scores.table.drop(columns=[FISHER_COLUMN], errors="ignore")
    keys = pd.DataFrame({"layer": table["layer"].to_numpy(np.int64), "component": table["component"].astype(str).to_numpy(),
                         "neuron": table["neuron"].to_numpy(np.int64)})
    merged = keys.merge(right, on=["layer", "component", "neuron"], how="left", validate="one_to_one")
    prunable = keys["component"].isin(PRUNABLE_COMPONENTS).to_numpy()
    lacking = prunable & merged[FISHER_COLUMN].isna().to_numpy()
    if lacking.any():
        first = keys[lacking].iloc[0]
        raise ValueError(
            f"The Fisher table has no value for {int(lacking.sum())} prunable unit(s) of the scores (first: layer "
            f"{first['layer']} {first['component']} neuron {first['neuron']}): it was computed on another model "
            "shape. Compute Fisher on the model the scores belong to.")
    table = table.copy()
    table[FISHER_COLUMN] = np.where(prunable, merged[FISHER_COLUMN].to_numpy(np.float64), np.nan)
    return replace(scores, table=table)


def fisher_fingerprint(scores) -> str | None:
    """A short hash of the scores' ``fisher`` column (None without one): what cache keys add."""
    if FISHER_COLUMN not in scores.table.columns:
        return None
    table = scores.table
    order = np.lexsort((table["neuron"].to_numpy(), pd.Categorical(table["component"], categories=COMPONENTS).codes,
                        table["layer"].to_numpy()))
    values = np.nan_to_num(table[FISHER_COLUMN].to_numpy(np.float64)[order], nan=-1.0)
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]
