"""Which examples a plan search judges its tolerance on: examples the task model never trained on.

A task model has memorised its training split (the CPU SST-2 model scores 95.8 there against 88.3
on dev; MRPC 99.65 against 84.79), so a drop measured on training examples says little about
unseen text. ``choose_search_data`` picks, before any model is loaded:

* ``file``: labelled rows of the user's ``search_data`` file (``read_search_data``: the task's
  columns and labels, at least ``MIN_SEARCH_ROWS`` rows);
* ``held-out``: the part of the training split the model's training never read (its
  ``obce_task.json`` records it; ``training.load_held_out`` draws it again and checks its hash);
* ``dev-halves``: the dev split cut into two seeded halves (``dev_halves``): the search judges on
  one, the other reports the plan, unseen by the search.

``auto`` takes the held-out part where the task model records one and the held-out part's drop was
measured to predict dev's for the task (``HELD_OUT_PREDICTS_DEV``), else the dev halves.
Fisher scores, the scoring sentences and the calibration of fitted compensations may still come
from training examples: they choose WHICH units go, never whether a plan is within the tolerance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from obce_core import glue
from obce_core.choices import MIN_SEARCH_ROWS, SEARCH_SPLITS  # defined without numpy for the CLI's parser
from obce_core.delimited import DELIMITED_SUFFIXES, delimited_rows
from obce_core.glue.data import _features, _parse_label
from obce_core.training.held_out import rows_sha256
from obce_core.training.task_models import load_held_out, task_model_info
from obce_core.validation import check_choice, check_int

__all__ = ["HELD_OUT_PREDICTS_DEV", "MIN_SEARCH_ROWS", "SEARCH_SPLITS", "SEARCH_SPLIT_LABELS", "SearchData",
           "choose_search_data", "dev_halves", "read_search_data", "resolve_split"]

SEARCH_SPLIT_LABELS = {
    "auto": "automatic (the held-out part where it predicts dev, else dev halves)",
    "held-out": "the held-out part of the training split",
    "dev-halves": "one half of dev (the other half reports)",
}

# Whether a drop on the held-out part of the training split predicts the drop on dev, per task,
# as measured on the CPU task models (benchmarks/held_out_vs_dev.py; benchmarks/RESULTS.md, "Plan
# search on unseen examples"). SST-2 (training split mostly short phrases, dev whole sentences):
# dev lost 0.63 +- 0.15 points MORE than the held-out part on 8 of 9 plans within 5 points, a bias
# the size of a tolerance: dev halves there. MRPC: +0.35 +- 0.62 on the 11 plans within 5 points,
# no bias beyond noise (its 366 held-out pairs also measure better than a dev half's 204). A task
# not measured takes the held-out part: its training and dev examples are drawn alike.
HELD_OUT_PREDICTS_DEV: dict[str, bool] = {"sst2": False, "mrpc": True}


@dataclass
class SearchData:
    """The examples a search judges on (``search``), those that report it besides the whole dev
    split (``check``: the other dev half, else None), what they are (``kind``: "held-out", "file"
    or "dev-halves"), a fingerprint of their rows (for the row cache) and ``words``: the sentence a
    report and the page show."""

    kind: str
    search: object
    check: object | None
    fingerprint: str
    words: str
    check_words: str | None = None


def read_search_data(path: str | os.PathLike, task: str):
    """The labelled rows of a .tsv/.csv file as a ``datasets.Dataset`` (the task's columns,
    ``label``, ``idx`` = row number). Columns: the task's (``sentence``; ``sentence1``,
    ``sentence2`` ...) or a GLUE file's own names, and ``label``; labels are ids or names. One
    clear error naming the file and the fix for a missing file or column, an unknown label or
    fewer than ``MIN_SEARCH_ROWS`` rows."""
    import datasets  # seconds to import: only when a file is read

    spec = glue.get_task(task)
    file = Path(path).expanduser()
    if spec.is_regression:
        raise ValueError(f"--search-data is not supported for the regression task {spec.name!r}.")
    if file.suffix.lower() not in DELIMITED_SUFFIXES or not file.is_file():
        raise ValueError(f"Search data {str(path)!r}: expected an existing {' or '.join(DELIMITED_SUFFIXES)} file of "
                         f"labelled {spec.name} examples (columns {[*spec.text_columns, 'label']}).")
    with open(file, encoding="utf-8-sig", newline="") as fh:
        rows = list(delimited_rows(fh, str(file), file.suffix))
    header = rows[0][1] if rows else []
    names = [(spec.text_columns, "label"), (spec.tsv_text_columns, spec.tsv_label_column)]
    found = next(((t, lab) for t, lab in names if all(c in header for c in (*t, lab))), None)
    if found is None:
        missing = [c for c in (*spec.text_columns, "label") if c not in header]
        raise ValueError(f"Search data {str(path)!r}: the header {header} lacks the column(s) {missing}. A "
                         f"{spec.name} file needs {[*spec.text_columns, 'label']} (a header row, then one example "
                         "per row).")
    text_pos = [header.index(c) for c in found[0]]
    label_pos = header.index(found[1])
    out: dict[str, list] = {c: [] for c in (*spec.text_columns, "label", "idx")}
    for line, row in rows[1:]:
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"Search data {str(path)!r}, line {line}: {len(row)} fields, expected {len(header)} "
                             f"({header}). Fix or remove that line.")
        for column, pos in zip(spec.text_columns, text_pos):
            out[column].append(row[pos])
        try:
            out["label"].append(_parse_label(spec, row[label_pos], file, line))
        except glue.GlueDataError as exc:
            raise ValueError(f"Search data: {exc}") from None
        out["idx"].append(len(out["idx"]))
    if len(out["idx"]) < MIN_SEARCH_ROWS:
        raise ValueError(f"Search data {str(path)!r} holds {len(out['idx'])} examples; a search needs at least "
                         f"{MIN_SEARCH_ROWS} to measure a drop to about +-2 points. Add examples, or leave "
                         "--search-data out to search on the held-out part or on half of dev.")
    return datasets.Dataset.from_dict(out, features=_features(spec))


def dev_halves(dev, seed: int):
    """``(search half, report half)`` of the dev split ``dev``: a seeded permutation
    (``numpy.random.default_rng(seed)``) cut in two; the search half has the extra row of an odd split."""
    check_int(seed, "seed", "dev_halves", low=0)
    order = np.random.default_rng(int(seed)).permutation(len(dev))
    cut = (len(dev) + 1) // 2
    return dev.select(np.sort(order[:cut]).tolist()), dev.select(np.sort(order[cut:]).tolist())


def _subset(data, size: int | None, seed: int):
    if size is None or size >= len(data):
        return data
    return data.select(np.sort(np.random.default_rng(int(seed)).choice(len(data), size=size, replace=False)).tolist())


def resolve_split(model_source: str, task: str, split: str, search_data) -> tuple[str, str]:
    """``(kind, why)``: what ``split`` ("auto", "held-out", "dev-halves") with ``search_data``
    (a file or None) means for this model, before anything is loaded; ``why`` says why in words."""
    spec = glue.get_task(task)
    check_choice(split, "search split", "search", SEARCH_SPLITS)
    if search_data is not None:
        if split != "auto":
            raise ValueError(f"--search-data and search split {split!r} both name the search examples: give one.")
        return "file", "the file given"
    info = task_model_info(model_source)
    has_record = info is not None and info.held_out is not None
    if split == "held-out":
        if not has_record:
            raise ValueError(f"{model_source!r} records no held-out part of its training split (trained elsewhere, or "
                             "before obce reserved one): search on dev halves (--search-split dev-halves) or give "
                             "labelled examples it never saw (--search-data FILE).")
        return "held-out", "asked for"
    if split == "dev-halves":
        return "dev-halves", "asked for"
    if not has_record:
        return "dev-halves", "the model records no held-out part of its training split"
    if not HELD_OUT_PREDICTS_DEV.get(spec.name, True):
        return "dev-halves", (f"on {spec.name} the held-out part's drop was measured not to predict dev's "
                              "(benchmarks/RESULTS.md)")
    return "held-out", "the model records one"


def choose_search_data(model_source: str, task: str, *, split: str = "auto", search_data=None,
                       search_size: int | None = None, seed: int = 1,
                       glue_dir: str | os.PathLike | None = None) -> SearchData:
    """The examples a search of ``model_source`` judges on (see the module docstring).
    ``search_size`` caps them with a seeded subset (``seed``), which also cuts the dev halves."""
    spec = glue.get_task(task)
    kind, why = resolve_split(model_source, task, split, search_data)
    check_int(search_size, "search_size", "choose_search_data", low=10, allow_none=True)
    check = check_words = None
    if kind == "file":
        data = _subset(read_search_data(search_data, spec.name), search_size, seed)
        words = f"{len(data):,} labelled {spec.name} examples from {Path(search_data).name} (given)"
    elif kind == "held-out":
        info = task_model_info(model_source)
        data = _subset(load_held_out(model_source, glue_dir), search_size, seed)
        subset = f"{len(data):,} of " if len(data) < info.held_out.size else ""
        words = f"{subset}{info.held_out.describe()} ({why})"
    else:
        dev_name = next(s for s in spec.splits if s.startswith("validation"))
        dev = glue.load_task(spec, dev_name, glue_dir)
        half, check = dev_halves(dev, seed)
        data = _subset(half, search_size, seed)
        words = (f"one half of the {spec.name} dev split ({len(data):,} of its {len(dev):,} examples, seed {seed}; "
                 f"{why})")
        check_words = f"the other half of dev ({len(check):,} examples the search never read)"
    return SearchData(kind=kind, search=data, check=check, fingerprint=rows_sha256(data, spec)[:16], words=words,
                      check_words=check_words)
