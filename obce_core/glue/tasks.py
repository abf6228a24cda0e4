"""The GLUE tasks: names, label ids, metrics and the layout of each task's files in a GLUE download.

``TASKS`` is the registry, ``get_task`` looks a task up by a forgiving name ("SST-2", "sts_b").
Label ids and text columns follow the hub's ``nyu-mll/glue`` so a model fine-tuned on hub data
reads local data the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMBINED", "GlueDataError", "GlueTask", "TASKS", "KNOWN_METRICS", "get_task"]

# The name ``main_metric`` takes when a task's headline is the mean of its metrics (the name
# transformers' run_glue uses for the same number).
COMBINED = "combined_score"
KNOWN_METRICS = ("matthews_correlation", "accuracy", "f1", "pearson", "spearmanr")


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
    dev_rows: int = 0  # the official size of the first validation split (MNLI: matched)

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
        unknown = [m for m in self.metrics if m not in KNOWN_METRICS]
        if not self.metrics or unknown:
            raise ValueError(
                f"GlueTask {self.name!r}: metrics must be a non-empty subset of "
                f"{KNOWN_METRICS}; got {self.metrics!r}."
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
            name="cola", train_rows=8551, dev_rows=1043, dir_name="CoLA", text_columns=("sentence",),
            label_names=("unacceptable", "acceptable"), num_labels=2, is_regression=False,
            metrics=("matthews_correlation",), main_metric="matthews_correlation",
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence",), tsv_label_column="label",
            tsv_columns=("source", "label", "orig_label", "sentence"),
        ),
        # SST-2 sentences end with a space in the files; the hub keeps it too
        # ('hide new secretions from the parental units '), so texts are never stripped.
        GlueTask(
            name="sst2", train_rows=67349, dev_rows=872, dir_name="SST-2", text_columns=("sentence",),
            label_names=("negative", "positive"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence",), tsv_label_column="label", **_BINARY_ACC,
        ),
        GlueTask(
            name="mrpc", train_rows=3668, dev_rows=408, dir_name="MRPC", text_columns=("sentence1", "sentence2"),
            label_names=("not_equivalent", "equivalent"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("#1 String", "#2 String"), tsv_label_column="Quality", **_ACC_F1,
        ),
        GlueTask(
            name="stsb", train_rows=5749, dev_rows=1500, dir_name="STS-B", text_columns=("sentence1", "sentence2"),
            label_names=(), num_labels=1, is_regression=True,
            metrics=("pearson", "spearmanr"), main_metric=COMBINED,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="score",
        ),
        GlueTask(
            name="qqp", train_rows=363846, dev_rows=40430, dir_name="QQP", text_columns=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"), num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("question1", "question2"), tsv_label_column="is_duplicate",
            **_ACC_F1,
        ),
        GlueTask(
            name="mnli", train_rows=392702, dev_rows=9815, dir_name="MNLI", text_columns=("premise", "hypothesis"),
            label_names=("entailment", "neutral", "contradiction"), num_labels=3,
            is_regression=False,
            splits=("train", "validation_matched", "validation_mismatched"),
            split_files=("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"),
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="gold_label",
            **_BINARY_ACC,
        ),
        GlueTask(
            name="qnli", train_rows=104743, dev_rows=5463, dir_name="QNLI", text_columns=("question", "sentence"),
            label_names=_NLI2, num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("question", "sentence"), tsv_label_column="label", **_BINARY_ACC,
        ),
        GlueTask(
            name="rte", train_rows=2490, dev_rows=277, dir_name="RTE", text_columns=("sentence1", "sentence2"),
            label_names=_NLI2, num_labels=2, is_regression=False,
            splits=_STD_SPLITS, split_files=_STD_FILES,
            tsv_text_columns=("sentence1", "sentence2"), tsv_label_column="label",
            **_BINARY_ACC,
        ),
        # WNLI's hub order is reversed w.r.t. RTE/QNLI; the file's 1 means entailment, which is
        # hub id 1, so digits map straight through.
        GlueTask(
            name="wnli", train_rows=635, dev_rows=71, dir_name="WNLI", text_columns=("sentence1", "sentence2"),
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
