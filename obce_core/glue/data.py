"""Loading GLUE splits: local folders in the GLUE download layout first, the hub last.

``load_task`` returns a ``datasets.Dataset`` with the same columns and label ids as the hub's
``nyu-mll/glue`` (text column(s), ``label``, ``idx``), whether it is read from a folder in the
standard GLUE download layout (``<glue_dir>/<TASK>/train.tsv, dev.tsv``) or from the hub. Local
folders come first (``glue_dir=`` argument, then the ``OBCE_GLUE_DIR`` environment variable); the
hub is tried last, and never when ``hub_offline()`` says it is switched off.

The TSV files are read by ``obce_core.delimited`` (no quoting, ``csv.QUOTE_NONE``): several GLUE
files contain unbalanced ``"`` characters, and a quote-aware reader either fails on them or
silently merges fields (RTE keeps its row count while the text changes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from obce_core.delimited import delimited_rows
from obce_core.glue.tasks import TASKS, GlueDataError, GlueTask, get_task
from obce_core.validation import check_int

__all__ = [
    "GLUE_DIR_ENV",
    "HUB_DATASET",
    "OFFLINE_ENVS",
    "available_local_tasks",
    "check_local_splits",
    "dataset_texts",
    "default_glue_dir",
    "hub_offline",
    "load_task",
]

GLUE_DIR_ENV = "OBCE_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def default_glue_dir() -> Path | None:
    """The folder named by ``OBCE_GLUE_DIR``, or None when the variable is unset or empty."""
    value = os.environ.get(GLUE_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def available_local_tasks(glue_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the tasks with at least one split file under ``glue_dir`` (GLUE layout).

    ``glue_dir`` defaults to ``default_glue_dir()``; with neither, or a folder that does not
    exist, the answer is an empty list. A task can be listed with some splits missing (a GLUE
    copy without the large training files, say); ``load_task`` names the missing file.
    """
    root = Path(glue_dir).expanduser() if glue_dir is not None else default_glue_dir()
    if root is None or not root.is_dir():
        return []
    return [
        t.name
        for t in TASKS.values()
        if any((root / t.dir_name / f).is_file() for f in t.split_files)
    ]


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in OFFLINE_ENVS):
        return True
    # datasets reads the variables once at import; honour that too in case they were unset since.
    try:
        import datasets.config as dconfig  # `datasets` takes seconds to import: only when GLUE is read
    except ImportError:  # pragma: no cover - datasets is a hard dependency of this module
        return False
    return bool(getattr(dconfig, "HF_HUB_OFFLINE", False))


def check_local_splits(glue_dir: str | os.PathLike | None, needs: dict[str, list[str]], *,
                       hub_fallback: bool = True) -> None:
    """GlueDataError naming the file when a local GLUE copy lacks a split in ``needs`` (task -> splits).

    Without a local folder the hub is used, and ``load_task`` reports what went wrong, unless
    ``hub_fallback`` is false or the hub is switched off: then the error comes now, before any work.
    """
    root = Path(glue_dir).expanduser() if glue_dir is not None else default_glue_dir()
    if root is None:
        if not hub_fallback or hub_offline():
            first = get_task(next(iter(needs)))
            raise GlueDataError(_no_data_message(first, "no local GLUE folder is set and the hub is off"))
        return
    for name, splits in needs.items():
        spec = get_task(name)
        for split in splits:
            path = root / spec.dir_name / spec.split_file(split)
            if not path.is_file():
                raise GlueDataError(
                    f"GLUE task {spec.name!r} needs split {split!r}: file {path} does not exist. Copy the "
                    f"{spec.dir_name}/{path.name} file of a GLUE download there, or drop {spec.name!r} "
                    f"from the tasks (found locally: {available_local_tasks(root) or 'none'})."
                )


def _no_data_message(task: GlueTask, reason: str) -> str:
    return (
        f"Could not load GLUE task {task.name!r}: {reason}. Either pass glue_dir= (--glue-dir on "
        f"the command line) or set {GLUE_DIR_ENV} to a folder in the standard GLUE layout "
        f"(<folder>/{task.dir_name}/{', '.join(task.split_files)}), or give this machine "
        f"network access to the Hugging Face hub (dataset {HUB_DATASET!r}, config "
        f"{task.hub_config!r}) and unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE."
    )


# ---------------------------------------------------------------------------------------------
# Reading TSV files
# ---------------------------------------------------------------------------------------------


def _parse_label(task: GlueTask, raw: str, path: Path, line: int) -> int | float:
    value = raw.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        # STS-B similarity scores are defined on 0..5; anything else is a broken row.
        if not (0.0 <= score <= 5.0):
            raise GlueDataError(
                f"{path}, line {line}: {task.tsv_label_column!r} is {raw!r}; expected a "
                f"similarity score between 0 and 5 for {task.name!r}. Check that the file is "
                "an unmodified GLUE STS-B file."
            )
        return score
    if value.isdigit() and int(value) < task.num_labels:
        return int(value)
    if value in task.label_names:
        return task.label_names.index(value)
    raise GlueDataError(
        f"{path}, line {line}: label {raw!r} (column {task.tsv_label_column!r}) is not a label of "
        f"GLUE task {task.name!r}. Valid labels: ids 0..{task.num_labels - 1} or names "
        f"{list(task.label_names)} (id order). Check that the file belongs to this task."
    )


def _read_tsv(task: GlueTask, path: Path) -> dict[str, list]:
    """Columns ``text_columns + ['label', 'idx']`` of one GLUE TSV file, in file order."""
    out: dict[str, list] = {c: [] for c in (*task.text_columns, "label", "idx")}
    try:
        # utf-8-sig drops MRPC's byte-order mark, which would otherwise glue itself to the first
        # header name ('\ufeffQuality'). newline='' is what the csv module asks for.
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = delimited_rows(fh, str(path), ".tsv", error=GlueDataError)
            if task.tsv_columns is not None:
                columns = list(task.tsv_columns)
            else:
                columns = next((row for _, row in reader), None)
                if columns is None:
                    raise GlueDataError(
                        f"{path} is empty; expected a header row naming the columns "
                        f"{[*task.tsv_text_columns, task.tsv_label_column]}. Replace it with "
                        f"the {task.dir_name} file of a GLUE download."
                    )
            wanted = (*task.tsv_text_columns, task.tsv_label_column)
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise GlueDataError(
                    f"{path}: the header {columns} lacks the column(s) {missing} that GLUE task "
                    f"{task.name!r} needs. Check that this is the {task.dir_name} file of a GLUE "
                    "download."
                )
            text_pos = [columns.index(c) for c in task.tsv_text_columns]
            label_pos = columns.index(task.tsv_label_column)
            n_fields = len(columns)
            for line, row in reader:
                if not row:  # a blank line (e.g. a trailing one) is not a row
                    continue
                if len(row) != n_fields:
                    raise GlueDataError(
                        f"{path}, line {line}: found {len(row)} tab-separated fields, expected "
                        f"{n_fields} ({columns}). A tab inside the text, or a truncated line? "
                        "Fix or remove that line."
                    )
                for col, pos in zip(task.text_columns, text_pos):
                    out[col].append(row[pos])
                out["label"].append(_parse_label(task, row[label_pos], path, line))
                out["idx"].append(len(out["idx"]))
    except UnicodeDecodeError as exc:
        raise GlueDataError(
            f"{path} is not valid UTF-8 ({exc}). GLUE files are UTF-8; re-download this file."
        ) from exc
    return out


def _features(task: GlueTask):
    import datasets  # seconds to import: only when GLUE is read (obce_core imports this module)

    feats = {c: datasets.Value("string") for c in task.text_columns}
    feats["label"] = (
        datasets.Value("float32")
        if task.is_regression
        else datasets.ClassLabel(names=list(task.label_names))
    )
    feats["idx"] = datasets.Value("int32")  # the hub's dtype for idx
    return datasets.Features(feats)


def _load_local(task: GlueTask, split: str, root: Path):
    import datasets  # seconds to import: only when GLUE is read

    task_dir = root / task.dir_name
    if not task_dir.is_dir():
        found = available_local_tasks(root)
        raise GlueDataError(
            f"GLUE task {task.name!r}: folder {task_dir} does not exist. Expected the standard "
            f"GLUE layout <glue_dir>/{task.dir_name}/{', '.join(task.split_files)}; tasks found "
            f"under {root}: {found or 'none'}. Point glue_dir/{GLUE_DIR_ENV} at the folder that "
            f"holds {task.dir_name}/."
        )
    path = task_dir / task.split_file(split)
    if not path.is_file():
        raise GlueDataError(
            f"GLUE task {task.name!r}, split {split!r}: file {path} does not exist. Copy the "
            f"{task.dir_name}/{path.name} file of a GLUE download there, or pick another split."
        )
    return datasets.Dataset.from_dict(_read_tsv(task, path), features=_features(task))


def _load_hub(task: GlueTask, split: str):
    if hub_offline():
        raise GlueDataError(
            _no_data_message(task, "no local copy was given and the hub is switched off "
                             "(HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)")
        )
    import datasets  # seconds to import: only when GLUE is read

    try:
        return datasets.load_dataset(HUB_DATASET, task.hub_config, split=split)
    except Exception as exc:  # any hub/network/cache failure means the same thing to the user
        raise GlueDataError(
            _no_data_message(task, f"no local copy was given and the hub failed "
                             f"({type(exc).__name__}: {exc})")
        ) from exc


def load_task(
    task: str | GlueTask,
    split: str,
    glue_dir: str | os.PathLike | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
):
    """One split of a GLUE task as a ``datasets.Dataset`` with the hub's columns.

    Columns: the task's ``text_columns``, ``label`` (``ClassLabel`` with ``label_names``, or
    ``float32`` for STS-B) and ``idx`` (``int32``, the row number in the file, from 0).

    Sources, first match wins: ``glue_dir``, then ``$OBCE_GLUE_DIR`` (both folders in the
    standard GLUE layout ``<TASK>/train.tsv, dev.tsv``), then the hub ``nyu-mll/glue`` unless
    ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set. A local folder that lacks the task is an
    error, not a reason to try the hub, so results never silently depend on the network.

    ``n``: draw ``n`` examples without replacement with ``numpy.random.default_rng(seed)``; the
    rows come in the order drawn (not file order), which is fixed for a given ``seed``. Their
    ``idx`` still names the row in the full split. ``n`` at or above the split size returns the
    whole split in file order.

    Raises ``GlueDataError`` (a ``ValueError``) naming the file, line and fix when the data is
    missing or malformed, and ``ValueError`` for an unknown task.
    """
    spec = get_task(task)
    spec.split_file(split)  # rejects unknown splits before touching disk or network
    check_int(n, "n", "load_task", low=1, allow_none=True,
              fix="Give the number of examples to draw (a positive integer), or None for all.")
    check_int(seed, "seed", "load_task")
    root = Path(glue_dir).expanduser() if glue_dir is not None else default_glue_dir()
    ds = _load_local(spec, split, root) if root is not None else _load_hub(spec, split)
    if n is not None and n < len(ds):
        order = np.random.default_rng(int(seed)).choice(len(ds), size=int(n), replace=False)
        ds = ds.select(order.tolist())
    return ds


def dataset_texts(dataset, task: str | GlueTask) -> list[str] | list[tuple[str, str]]:
    """The inputs of each row: strings for single-sentence tasks, (text1, text2) for pairs.

    Pairs stay pairs so the tokenizer can insert its own separator and token type ids.
    """
    spec = get_task(task)
    missing = [c for c in spec.text_columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the text column(s) {missing} of GLUE task {spec.name!r}; it has "
            f"{dataset.column_names}. Load it with load_task({spec.name!r}, ...) or rename "
            "its columns."
        )
    if not spec.is_pair:
        return list(dataset[spec.text_columns[0]])
    first, second = (dataset[c] for c in spec.text_columns)
    return list(zip(first, second))
