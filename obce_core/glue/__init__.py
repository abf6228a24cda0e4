"""GLUE: what each task is (``tasks``), how to load it offline first (``data``) and how to score
it (``metrics``).

``load_task`` returns a ``datasets.Dataset`` with the hub's ``nyu-mll/glue`` columns and label
ids, read from a local GLUE download (``glue_dir=`` or ``$OBCE_GLUE_DIR``) or, last, the hub.
``compute_metrics`` gives the GLUE metrics of a task as fractions, ``main_score`` its headline
number and ``glue_average`` the usual GLUE average.
"""

from obce_core.glue.data import (
    GLUE_DIR_ENV,
    HUB_DATASET,
    OFFLINE_ENVS,
    available_local_tasks,
    check_local_splits,
    dataset_texts,
    default_glue_dir,
    hub_offline,
    load_task,
)
from obce_core.glue.metrics import compute_metrics, glue_average, main_score
from obce_core.glue.tasks import COMBINED, KNOWN_METRICS, TASKS, GlueDataError, GlueTask, get_task

__all__ = [
    "COMBINED",
    "GLUE_DIR_ENV",
    "HUB_DATASET",
    "KNOWN_METRICS",
    "OFFLINE_ENVS",
    "TASKS",
    "GlueDataError",
    "GlueTask",
    "available_local_tasks",
    "check_local_splits",
    "compute_metrics",
    "dataset_texts",
    "default_glue_dir",
    "get_task",
    "glue_average",
    "hub_offline",
    "load_task",
    "main_score",
]
