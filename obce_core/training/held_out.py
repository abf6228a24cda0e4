"""The held-out part of a task's training split: examples a task model never trained on.

A task model obce trains reserves a seeded part of the training split (``Recipe.held_out``, a
fraction, at most ``Recipe.held_out_max`` examples) that ``fine_tune`` never reads. The plan search
judges its tolerance there: the rest of the training split is memorised (an SST-2 task model scores
95.8 on it against 88.3 on dev), so a drop measured on it says little about unseen text, and dev
stays untouched until the report.

``HeldOutRecord`` is what ``obce_task.json`` keeps (seed, size, fraction and a SHA-256 of the
reserved rows' ids, texts and labels), ``held_out_rows`` draws the reserve, ``split_held_out``
cuts a loaded training split in two and ``reserve_of`` draws a task model's reserve again,
refusing it when the training file no longer holds the same rows (``task_models.load_held_out``
does that for a task model's folder).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from obce_core import glue
from obce_core.io import JsonDataclass
from obce_core.validation import check_int, check_number

__all__ = ["HeldOutRecord", "held_out_rows", "held_out_size", "reserve_of", "rows_sha256", "split_held_out"]

# A second entropy word, so the reserve's draw never coincides with a ``train_size`` subset drawn
# with ``default_rng(seed)`` from the same seed.
_RESERVE_STREAM = 0x4E1D


@dataclass(frozen=True)
class HeldOutRecord(JsonDataclass):
    """A task model's reserve: ``size`` training rows drawn with ``seed`` (``held_out_rows``) as
    ``fraction`` of the split (capped); ``ids_sha256`` hashes their ids, texts and labels
    (``rows_sha256``), so a changed training file is noticed before the reserve is trusted."""

    _json_name = "held-out record"

    seed: int
    size: int
    fraction: float
    ids_sha256: str

    def __post_init__(self):
        check_int(self.seed, "seed", "HeldOutRecord", low=0, fix="The recipe's seed that drew the reserve.")
        check_int(self.size, "size", "HeldOutRecord", low=1, fix="The number of reserved training rows.")
        check_number(self.fraction, "fraction", "HeldOutRecord", low=0, high=1, low_open=True, high_open=True,
                     fix="The share of the training split reserved, e.g. 0.1.")
        if not isinstance(self.ids_sha256, str) or len(self.ids_sha256) != 64:
            raise ValueError(f"HeldOutRecord's ids_sha256 must be a SHA-256 hex digest; got {self.ids_sha256!r}. "
                             "Rewrite obce_task.json from the run that trained the model.")

    def describe(self) -> str:
        return (f"{self.size:,} training examples the model never trained on (a seeded {self.fraction:.0%} of the "
                f"training split, seed {self.seed})")


def held_out_size(rows: int, fraction: float, max_size: int) -> int:
    """How many of ``rows`` training rows a reserve of ``fraction`` (capped at ``max_size``) takes."""
    if fraction <= 0:
        return 0
    return int(min(max_size, np.floor(fraction * rows)))


def held_out_rows(rows: int, fraction: float, max_size: int, seed: int) -> np.ndarray:
    """The reserved row positions of a training split of ``rows`` rows, sorted."""
    size = held_out_size(rows, fraction, max_size)
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), _RESERVE_STREAM])
    return np.sort(rng.choice(rows, size=size, replace=False))


def rows_sha256(dataset, spec: glue.GlueTask) -> str:
    """SHA-256 of the rows' ``idx``, texts and label, in ``idx`` order: same rows, same digest."""
    digest = hashlib.sha256()
    columns = [dataset[c] for c in ("idx", *spec.text_columns, "label")]
    for row in sorted(zip(*columns), key=lambda r: r[0]):
        digest.update(("\t".join(str(v) for v in row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def split_held_out(train, spec: glue.GlueTask, fraction: float, max_size: int, seed: int):
    """``(rest, reserve, record)`` of a whole training split: ``reserve`` the rows ``held_out_rows``
    draws, ``rest`` every other row in file order; ``record`` is None when nothing is reserved."""
    reserved = held_out_rows(len(train), fraction, max_size, seed)
    if reserved.size == 0:
        return train, None, None
    keep = np.ones(len(train), dtype=bool)
    keep[reserved] = False
    reserve = train.select(reserved.tolist())
    record = HeldOutRecord(seed=int(seed), size=len(reserve), fraction=float(fraction),
                           ids_sha256=rows_sha256(reserve, spec))
    return train.select(np.flatnonzero(keep).tolist()), reserve, record


def reserve_of(info, glue_dir: str | os.PathLike | None = None, *, where: str = "the task model"):
    """The reserved training rows of a task model whose ``TaskModelInfo`` is ``info``.

    ``ValueError`` naming the fix when it records none (trained elsewhere or before obce reserved
    one) or when the task's training file no longer holds the reserved rows (the hash differs).
    """
    if info is None or info.held_out is None:
        raise ValueError(f"{where} records no held-out part of its training split "
                         f"({'no obce_task.json' if info is None else 'trained before obce reserved one, or elsewhere'}); "
                         "give labelled examples it never saw (--search-data FILE) or split dev in two halves.")
    record, spec = info.held_out, glue.get_task(info.task)
    train = glue.load_task(spec, "train", glue_dir)
    _, reserve, found = split_held_out(train, spec, record.fraction, info.recipe.held_out_max, record.seed)
    if found is None or found.ids_sha256 != record.ids_sha256 or found.size != record.size:
        raise ValueError(f"The held-out record of {where} does not match the {spec.name} training file found now "
                         f"(its rows' hash differs): the file changed since the model was trained. Point --glue-dir "
                         "at the copy it was trained on, or give --search-data FILE.")
    return reserve
