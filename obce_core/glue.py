"""GLUE tasks: what each task is, how to load it (offline first) and how to score it.

``load_task`` returns a ``datasets.Dataset`` with the same columns and label ids as the hub's
``nyu-mll/glue`` (text column(s), ``label``, ``idx``), whether it is read from a folder in the
standard GLUE download layout (``<glue_dir>/<TASK>/train.tsv, dev.tsv``) or from the hub. Local
folders come first (``glue_dir=`` argument, then the ``OBCE_GLUE_DIR`` environment variable); the
hub is tried last, and never when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set.

The TSV files are read with Python's ``csv`` module and ``quoting=csv.QUOTE_NONE``: several GLUE
files contain unbalanced ``"`` characters, and a quote-aware reader either fails on them or
silently merges fields (RTE keeps its row count while the text changes).

``compute_metrics`` gives the GLUE metrics of a task (as fractions in [0, 1], not x100),
``main_score`` the task's headline number and ``glue_average`` the usual GLUE average.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "GlueDataError",
    "GlueTask",
    "TASKS",
    "GLUE_DIR_ENV",
    "HUB_DATASET",
    "get_task",
    "default_glue_dir",
    "available_local_tasks",
    "load_task",
    "dataset_texts",
    "compute_metrics",
    "main_score",
    "glue_average",
]

GLUE_DIR_ENV = "OBCE_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"
# The name ``main_metric`` takes when a task's headline is the mean of its metrics (the name
# transformers' run_glue uses for the same number).
COMBINED = "combined_score"
_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}
_KNOWN_METRICS = ("matthews_correlation", "accuracy", "f1", "pearson", "spearmanr")


class GlueDataError(ValueError):
    """GLUE data could not be found or read; the message says where and how to fix it."""


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: hub names, metrics, splits and the layout of its files in a GLUE download.

    ``text_columns``, ``label_names`` and the label ids follow the hub's ``nyu-mll/glue`` so a
    model fine-tuned on hub data reads local data the same way. ``tsv_*`` describe the files of
    the standard download: ``tsv_columns`` are the column names of a file without a header
    (CoLA), ``None`` when the file has a header row; ``tsv_text_columns`` and
    ``tsv_label_column`` are the file's names for the text and label columns.
    """

    name: str
    dir_name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    splits: tuple[str, ...]
    split_files: tuple[str, ...]
    tsv_text_columns: tuple[str, ...]
    tsv_label_column: str
    tsv_columns: tuple[str, ...] | None = None
    train_rows: int = 0  # the official training split's size (for estimates before loading it)

    def __post_init__(self) -> None:
        if len(self.text_columns) not in (1, 2):
            raise ValueError(
                f"GlueTask {self.name!r}: text_columns must hold 1 or 2 names; got "
                f"{self.text_columns!r}."
            )
        if len(self.tsv_text_columns) != len(self.text_columns):
            raise ValueError(
                f"GlueTask {self.name!r}: tsv_text_columns {self.tsv_text_columns!r} must match "
                f"text_columns {self.text_columns!r} one to one."
            )
        if self.is_regression:
            if self.num_labels != 1 or self.label_names:
                raise ValueError(
                    f"GlueTask {self.name!r}: a regression task has num_labels=1 and no "
                    f"label_names; got num_labels={self.num_labels}, "
                    f"label_names={self.label_names!r}."
                )
        elif self.num_labels != len(self.label_names) or self.num_labels < 2:
            raise ValueError(
                f"GlueTask {self.name!r}: num_labels={self.num_labels} must equal the number of "
                f"label_names {self.label_names!r} (at least 2)."
            )
        unknown = [m for m in self.metrics if m not in _KNOWN_METRICS]
        if not self.metrics or unknown:
            raise ValueError(
                f"GlueTask {self.name!r}: metrics must be a non-empty subset of "
                f"{_KNOWN_METRICS}; got {self.metrics!r}."
            )
        if self.main_metric not in self.metrics and not (
            self.main_metric == COMBINED and len(self.metrics) > 1
        ):
            raise ValueError(
                f"GlueTask {self.name!r}: main_metric {self.main_metric!r} must be one of "
                f"{self.metrics!r}, or {COMBINED!r} when there are several."
            )
        if len(self.splits) != len(self.split_files) or not self.splits:
            raise ValueError(
                f"GlueTask {self.name!r}: splits {self.splits!r} and split_files "
                f"{self.split_files!r} must pair up one to one."
            )
        if self.tsv_columns is not None:
            needed = (*self.tsv_text_columns, self.tsv_label_column)
            missing = [c for c in needed if c not in self.tsv_columns]
            if missing:
                raise ValueError(
                    f"GlueTask {self.name!r}: tsv_columns {self.tsv_columns!r} lack {missing!r}."
                )

    @property
    def is_pair(self) -> bool:
        """Whether each example is a pair of texts (and the tokenizer takes two inputs)."""
        return len(self.text_columns) == 2

    @property
    def hub_config(self) -> str:
        """The config name of this task in the hub's ``nyu-mll/glue``."""
        return self.name

    def split_file(self, split: str) -> str:
        """The file name of ``split`` in the GLUE download, e.g. ``dev.tsv`` for validation."""
        if split not in self.splits:
            raise GlueDataError(
                f"Unknown split {split!r} for GLUE task {self.name!r}. Valid splits: "
                + ", ".join(f"{s!r} (file {f})" for s, f in zip(self.splits, self.split_files))
                + "."
            )
        return self.split_files[self.splits.index(split)]


_STD_SPLITS = ("train", "validation")
_STD_FILES = ("train.tsv", "dev.tsv")
_BINARY_ACC = dict(metrics=("accuracy",), main_metric="accuracy")
_ACC_F1 = dict(metrics=("accuracy", "f1"), main_metric=COMBINED)
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            name="cola", train_rows=8551, dir_name="CoLA", text_columns=("sentence",),
            label_names=("unacceptable", "acceptable"), num_labels=2, is_regression=False,
            metrics=("matthews_correlation",), main_metric="matthews_correlation",
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence",), tsv_label_column="label",
            tsv_columns=("source", "label", "orig_label", "sentence"),
        ),
        # SST-2 sentences end with a space in the files; the hub keeps it too
        # ('hide new secretions from the parental units '), so texts are never stripped.
        GlueTask(
            name="sst2", train_rows=67349, dir_name="SST-2", text_columns=("sentence",),
            label_names=("negative", "positive"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence",), tsv_label_column="label", **_BINARY_ACC,
        ),
        GlueTask(
            name="mrpc", train_rows=3668, dir_name="MRPC", text_columns=("sentence1", "sentence2"),
            label_names=("not_equivalent", "equivalent"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("#1 String", "#2 String"), tsv_label_column="Quality", **_ACC_F1,
        ),
        GlueTask(
            name="stsb", train_rows=5749, dir_name="STS-B", text_columns=("sentence1", "sentence2"),
            label_names=(), num_labels=1, is_regression=True,
            metrics=("pearson", "spearmanr"), main_metric=COMBINED,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="score",
        ),
        GlueTask(
            name="qqp", train_rows=363846, dir_name="QQP", text_columns=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("question1", "question2"), tsv_label_column="is_duplicate",
            **_ACC_F1,
        ),
        GlueTask(
            name="mnli", train_rows=392702, dir_name="MNLI", text_columns=("premise", "hypothesis"),
            label_names=("entailment", "neutral", "contradiction"), num_labels=3,
            is_regression=False,
            splits=("train", "validation_matched", "validation_mismatched"),
            split_files=("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"),
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="gold_label",
            **_BINARY_ACC,
        ),
        GlueTask(
            name="qnli", train_rows=104743, dir_name="QNLI", text_columns=("question", "sentence"),
            label_names=_NLI2, num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("question", "sentence"), tsv_label_column="label", **_BINARY_ACC,
        ),
        GlueTask(
            name="rte", train_rows=2490, dir_name="RTE", text_columns=("sentence1", "sentence2"),
            label_names=_NLI2, num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="label",
            **_BINARY_ACC,
        ),
        # WNLI's hub order is reversed w.r.t. RTE/QNLI; the file's 1 means entailment, which is
        # hub id 1, so digits map straight through.
        GlueTask(
            name="wnli", train_rows=635, dir_name="WNLI", text_columns=("sentence1", "sentence2"),
            label_names=("not_entailment", "entailment"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="label",
            **_BINARY_ACC,
        ),
    )
}


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in "-_ ")


def get_task(name: str | GlueTask) -> GlueTask:
    """The task called ``name``; case, ``-`` and ``_`` are ignored ("SST-2", "STS_B" work)."""
    if isinstance(name, GlueTask):
        return name
    if not isinstance(name, str):
        raise ValueError(
            f"A GLUE task name must be a string; got {type(name).__name__} {name!r}. "
            f"Valid names: {', '.join(TASKS)}."
        )
    task = TASKS.get(_normalise_name(name))
    if task is None:
        raise ValueError(
            f"Unknown GLUE task {name!r}. Valid names: {', '.join(TASKS)} "
            "(case, '-' and '_' are ignored, so 'SST-2' and 'STS-B' work)."
        )
    return task


# ---------------------------------------------------------------------------------------------
# Where the data is
# ---------------------------------------------------------------------------------------------


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


def _hub_offline() -> bool:
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in _OFFLINE_ENVS):
        return True
    # datasets reads the variables once at import; honour that too in case they were unset since.
    try:
        import datasets.config as dconfig
    except ImportError:  # pragma: no cover - datasets is a hard dependency of this module
        return False
    return bool(getattr(dconfig, "HF_HUB_OFFLINE", False))


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
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            if task.tsv_columns is not None:
                columns = list(task.tsv_columns)
            else:
                columns = next(reader, None)
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
            for row in reader:
                if not row:  # a blank line (e.g. a trailing one) is not a row
                    continue
                line = reader.line_num
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
    import datasets

    feats = {c: datasets.Value("string") for c in task.text_columns}
    feats["label"] = (
        datasets.Value("float32")
        if task.is_regression
        else datasets.ClassLabel(names=list(task.label_names))
    )
    feats["idx"] = datasets.Value("int32")  # the hub's dtype for idx
    return datasets.Features(feats)


def _load_local(task: GlueTask, split: str, root: Path):
    import datasets

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
    if _hub_offline():
        raise GlueDataError(
            _no_data_message(task, "no local copy was given and the hub is switched off "
                             "(HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)")
        )
    import datasets

    try:
        return datasets.load_dataset(HUB_DATASET, task.hub_config, split=split)
    except Exception as exc:  # any hub/network/cache failure means the same thing to the user
        raise GlueDataError(
            _no_data_message(task, f"no local copy was given and the hub failed "
                             f"({type(exc).__name__}: {exc})")
        ) from exc


def _check_subsample_args(n, seed) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(
            f"n must be a positive integer (the number of examples to draw) or None for all; "
            f"got {n!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}.")


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
    _check_subsample_args(n, seed)
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


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _as_array(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be array-like numbers; got {type(values).__name__}."
        ) from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{what} must be numbers; got an array of dtype {arr.dtype}.")
    return arr


def _as_ids(arr: np.ndarray, what: str, task: GlueTask) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{what} for {task.name!r} must be label ids (whole numbers); got non-integer "
                "values. Pass logits of shape (n, num_labels) or their argmax."
            )
    ids = arr.astype(np.int64)
    bad = (ids < 0) | (ids >= task.num_labels)
    if bad.any():
        raise ValueError(
            f"{what} for {task.name!r} must be ids in 0..{task.num_labels - 1} "
            f"{list(task.label_names)}; got {sorted(set(ids[bad].tolist()))[:5]}. Test splits "
            "have label -1 (no gold labels): score a split with labels."
        )
    return ids


def compute_metrics(task: str | GlueTask, predictions, references) -> dict[str, float]:
    """The GLUE metrics of ``task`` as plain floats in [0, 1] (correlations in [-1, 1]).

    Keys: cola ``matthews_correlation``; stsb ``pearson``, ``spearmanr``; mrpc and qqp
    ``accuracy``, ``f1`` (f1 of the positive class, id 1); other tasks ``accuracy``.
    ``predictions`` are label ids (floats for stsb) or logits of shape (n, num_labels), which
    are reduced with argmax ((n, 1) is squeezed for stsb). A correlation of constant input is
    NaN, as in scipy.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    spec = get_task(task)
    preds = _as_array(predictions, "predictions")
    refs = _as_array(references, "references")
    if preds.ndim == 2:
        if preds.shape[1] != spec.num_labels:
            raise ValueError(
                f"predictions of shape {preds.shape} do not fit {spec.name!r}: logits must have "
                f"shape (n, {spec.num_labels}); label ids shape (n,)."
            )
        preds = preds[:, 0] if spec.is_regression else preds.argmax(axis=1)
    if preds.ndim != 1 or refs.ndim != 1:
        raise ValueError(
            f"predictions must have shape (n,) or (n, {spec.num_labels}) and references (n,); "
            f"got {preds.shape} and {refs.shape}."
        )
    if len(preds) != len(refs):
        raise ValueError(
            f"predictions and references must have the same length; got {len(preds)} and "
            f"{len(refs)}. Score the predictions of exactly the rows you pass as references."
        )
    if len(preds) == 0:
        raise ValueError(f"Cannot score {spec.name!r} on no examples: both inputs are empty.")

    if spec.is_regression:
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
        return {
            "pearson": float(pearsonr(preds, refs)[0]),
            "spearmanr": float(spearmanr(preds, refs)[0]),
        }
    preds = _as_ids(preds, "predictions", spec)
    refs = _as_ids(refs, "references", spec)
    out: dict[str, float] = {}
    for metric in spec.metrics:
        if metric == "matthews_correlation":
            out[metric] = float(matthews_corrcoef(refs, preds))
        elif metric == "accuracy":
            out[metric] = float(accuracy_score(refs, preds))
        elif metric == "f1":
            out[metric] = float(f1_score(refs, preds, pos_label=1, zero_division=0.0))
    return out


def main_score(task: str | GlueTask, metrics: Mapping[str, float]) -> float:
    """The task's headline number: the mean of its metrics for mrpc, qqp and stsb, else the one."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise ValueError(
            f"metrics for {spec.name!r} lack {missing}; got keys {sorted(metrics)}. Pass the dict "
            f"returned by compute_metrics({spec.name!r}, ...)."
        )
    if spec.main_metric == COMBINED:
        return float(np.mean([float(metrics[m]) for m in spec.metrics]))
    return float(metrics[spec.main_metric])


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE average: the mean over tasks of ``main_score``, keyed by task name."""
    if not results:
        raise ValueError(
            "results is empty; pass {task_name: compute_metrics(task_name, ...)} for at least "
            "one task."
        )
    seen: dict[str, str] = {}
    scores = []
    for name, metrics in results.items():
        spec = get_task(name)
        if spec.name in seen:
            raise ValueError(
                f"results name GLUE task {spec.name!r} twice ({seen[spec.name]!r} and {name!r}); "
                "keep one entry per task."
            )
        seen[spec.name] = name
        scores.append(main_score(spec, metrics))
    return float(np.mean(scores))
