"""What an attribution explains: a loss over fixed examples, tokenized once.

* ``TaskObjective``: a task model on LABELLED examples; the loss is the model's own (cross-entropy,
  squared error for a regression head), the rule Fisher importance uses (``fisher.summed_task_loss``).
* ``SentenceObjective``: a model without a task head, on TEXTS; the loss of a text is ``1 - cosine``
  between its sentence output now (under whatever masks are on) and the unmasked model's, pooled as
  the model was trained (``evidence.embedding.sentence_pooling``): the label-free evidence's cosine.
  It is 0 with every unit kept.

Both hold their examples in length-sorted padded batches, and ``summed_loss(model, b, batch)``
returns batch ``b``'s loss SUMMED over its examples (the mean loss is the sum over batches / ``n``).
At least ``MIN_EXAMPLES`` examples: fewer give attributions dominated by single sentences.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from obce_core import glue
from obce_core.evidence.embedding import SentencePooling
from obce_core.forward import length_sorted_batches, locked_eval, pool, tokenize_texts
from obce_core.layout import base_model
from obce_core.pruning.fisher import summed_task_loss, task_labels
from obce_core.training.trainer import check_head
from obce_core.validation import check_int, invalid

__all__ = ["MIN_EXAMPLES", "SentenceObjective", "TaskObjective", "check_example_count", "task_objective"]

MIN_EXAMPLES = 32


def check_example_count(n: int, what: str, owner: str) -> None:
    """Refuse fewer than ``MIN_EXAMPLES`` examples, naming the fix."""
    if n < MIN_EXAMPLES:
        raise invalid(what, owner, f"at least {MIN_EXAMPLES} examples", f"{n} examples",
                      f"Give {MIN_EXAMPLES} or more (512 is the benchmark's setting): with fewer, a unit's "
                      "attribution is decided by a handful of sentences.")


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:20]


def _batches(tokenizer, texts, max_length: int, batch_size: int) -> tuple[list, list]:
    encoded = tokenize_texts(tokenizer, list(texts), max_length)
    rows, batches = [], []
    for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, "cpu"):
        rows.append(torch.as_tensor(idx, dtype=torch.long))
        batches.append(batch)
    return rows, batches


@dataclass
class TaskObjective:
    """The task loss of a classifier on labelled examples (see the module docstring)."""

    task: str
    num_labels: int
    labels: torch.Tensor
    rows: list[torch.Tensor] = field(repr=False)
    batches: list[dict[str, torch.Tensor]] = field(repr=False)
    key: str = ""

    kind = "task"

    @classmethod
    def build(cls, model, tokenizer, task: str, texts, labels, *, max_length: int = 128,
              batch_size: int = 32) -> "TaskObjective":
        owner = "TaskObjective"
        spec = glue.get_task(task)
        check_head(model, spec)
        texts, labels = list(texts), np.asarray(labels)
        if len(texts) != len(labels):
            raise invalid("labels", owner, f"one label per text ({len(texts)})", f"{len(labels)} labels")
        check_example_count(len(texts), "texts", owner)
        check_int(max_length, "max_length", owner, low=8, high=8192)
        check_int(batch_size, "batch_size", owner, low=1)
        label_tensor = task_labels(spec, labels, owner)
        rows, batches = _batches(tokenizer, texts, max_length, batch_size)
        items = [list(t) if isinstance(t, (tuple, list)) else t for t in texts]
        key = _digest({"task": spec.name, "texts": items, "labels": labels.astype(np.float64).tolist(),
                       "max_length": max_length, "batch_size": batch_size})
        return cls(spec.name, spec.num_labels, label_tensor, rows, batches, key)

    @property
    def n(self) -> int:
        return int(len(self.labels))

    def describe(self) -> str:
        return f"{self.task} task loss on {self.n} labelled examples"

    def summed_loss(self, model, index: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**batch).logits
        labels = self.labels[self.rows[index]].to(logits.device)
        return summed_task_loss(logits, labels, self.num_labels)


@dataclass
class SentenceObjective:
    """``1 - cosine`` of each text's sentence output to the unmasked model's (see the module docstring)."""

    pooling: SentencePooling
    targets: list[torch.Tensor] = field(repr=False)
    rows: list[torch.Tensor] = field(repr=False)
    batches: list[dict[str, torch.Tensor]] = field(repr=False)
    n_texts: int = 0
    key: str = ""

    kind = "sentence"

    @classmethod
    def build(cls, model, tokenizer, texts, pooling: SentencePooling, *, max_length: int = 128,
              batch_size: int = 32) -> "SentenceObjective":
        owner = "SentenceObjective"
        texts = list(texts)
        check_example_count(len(texts), "texts", owner)
        check_int(max_length, "max_length", owner, low=2, high=8192)
        check_int(batch_size, "batch_size", owner, low=1)
        rows, batches = _batches(tokenizer, texts, max_length, batch_size)
        items = [list(t) if isinstance(t, (tuple, list)) else t for t in texts]
        key = _digest({"texts": items, "pooling": pooling.to_dict(), "max_length": max_length,
                       "batch_size": batch_size})
        objective = cls(pooling, [], rows, batches, len(texts), key)
        with locked_eval(model) as device:  # the unmasked model's outputs: what every later pass is compared to
            targets = [objective._sentence(model, {k: v.to(device) for k, v in b.items()}) for b in batches]
        # Cloned outside inference mode: an inference tensor cannot be saved for a backward pass.
        objective.targets = [t.clone() for t in targets]
        return objective

    @property
    def n(self) -> int:
        return self.n_texts

    def describe(self) -> str:
        return f"1 - cosine to the original's sentence output ({self.pooling.describe()}) on {self.n} texts"

    def _sentence(self, model, batch) -> torch.Tensor:
        hidden = base_model(model)(**batch).last_hidden_state
        return pool(hidden, batch.get("attention_mask"), self.pooling.pooling).float()

    def summed_loss(self, model, index: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = self._sentence(model, batch)
        target = self.targets[index].to(vectors.device)
        # Normalize's unit length does not change a cosine, so it is left out.
        return (1.0 - torch.nn.functional.cosine_similarity(vectors, target, dim=1)).sum()


def task_objective(model, tokenizer, task: str, *, split: str | None = None, n: int | None = 512, seed: int = 0,
                   glue_dir=None, max_length: int = 128, batch_size: int = 32) -> TaskObjective:
    """``TaskObjective`` on ``n`` labelled examples of ``task``'s ``split`` (default: validation,
    examples the model never trained on and the scorers never read), drawn with ``seed``; None: all.
    The head and the count are checked before any data is read."""
    owner = "task_objective"
    spec = glue.get_task(task)
    check_head(model, spec)
    if n is not None:
        check_int(n, "n", owner, low=1)
        check_example_count(n, "n", owner)
    split = split or next(s for s in spec.splits if s.startswith("validation"))
    data = glue.load_task(spec, split, glue_dir, n=n, seed=seed)
    return TaskObjective.build(model, tokenizer, spec.name, glue.dataset_texts(data, spec), np.asarray(data["label"]),
                               max_length=max_length, batch_size=batch_size)
