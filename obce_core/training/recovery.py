"""Recovering a pruned model: held-out scores with early stopping, and checkpoints a cancelled run resumes from.

``fine_tune`` uses these when the recipe scores a held-out split (``Recipe.eval_steps``, the
``recover`` preset) or when it is given a checkpoint folder (``finetune_task_model`` gives one to
every distillation from a teacher: ``<out>.checkpoints`` beside the output folder).

* ``evaluation_settings``: what ``Trainer`` needs to score the held-out rows every
  ``eval_steps``, keep the best checkpoint (restored at the end) and stop after
  ``early_stopping_patience`` scores without a gain. The rows are the teacher's reserve
  (``held_out.reserve_of``): examples neither the teacher nor, therefore, the student trained on.
* ``checkpoint_folder`` / ``resume_point``: a run writes a checkpoint at every evaluation and at a
  cancel; the next run with the SAME model, recipe and teacher resumes from the last one (weights,
  optimizer, scheduler, data position); a folder left by another run is refused, never mixed in.
  ``finetune_task_model`` removes the folder once the task model is published.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from obce_core import glue
from obce_core.io import write_text_atomic
from obce_core.training.held_out import reserve_of
from obce_core.training.recipe import RECOVERY_PRESET, Recipe

__all__ = ["CHECKPOINT_SUFFIX", "RUN_FILE", "checkpoint_folder", "evaluation_settings", "held_out_rows_of",
           "recovery_recipe", "recovery_started", "resume_point"]

CHECKPOINT_SUFFIX = ".checkpoints"
RUN_FILE = "obce_run.json"
# Trainer's name for the held-out main score (it prefixes "eval_").
_METRIC = "main_score"


def recovery_recipe(task: str, teacher_info=None, **overrides) -> Recipe:
    """The ``recover`` preset for ``task`` with ``overrides``; its seed is the teacher's reserve seed
    (``teacher_info.held_out.seed``) unless ``overrides`` name one, so the student's training
    leaves out exactly the rows the teacher never saw (``held_out_rows_of``)."""
    record = None if teacher_info is None else teacher_info.held_out
    seed = {} if record is None else {"seed": record.seed}
    return Recipe.preset(RECOVERY_PRESET, task, **{**seed, **overrides})


def held_out_rows_of(recipe, info, glue_dir=None, where: str = "the teacher"):
    """``(recipe, rows to score or None, note)``: ``recipe`` aligned with the reserve of the task model
    whose ``TaskModelInfo`` is ``info`` (the teacher's), and that reserve when the recipe scores one.

    The student must never train on the rows early stopping judges it on, so the recipe takes the
    teacher's reserve settings (``held_out``, ``held_out_max``; the reserve is drawn with the seed);
    a recipe with another seed is refused, with the fix. Without a recorded reserve the recipe loses
    its evaluation (``eval_steps``, early stopping) and ``note`` says so. A training file that no
    longer holds the reserve is refused (``held_out.reserve_of``).
    """
    record = None if info is None else info.held_out
    if record is None:
        if not recipe.eval_steps:
            return recipe, None, ""
        return (recipe.replace(eval_steps=0, early_stopping_patience=0), None,
                f"{where} records no held-out reserve (rows it never trained on), so nothing is scored during "
                "training: no early stopping, the last step is kept")
    if recipe.seed != record.seed:
        raise ValueError(f"The recipe's seed {recipe.seed} would draw another held-out reserve than {where}'s (seed "
                         f"{record.seed}), so the student would train on rows early stopping judges it on; use seed "
                         f"{record.seed} (--seed {record.seed}).")
    recipe = recipe.replace(held_out=record.fraction, held_out_max=info.recipe.held_out_max)
    rows = reserve_of(info, glue_dir, where=where) if recipe.eval_steps else None
    return recipe, rows, ""


def checkpoint_folder(out_dir: str | os.PathLike) -> Path:
    """Where the checkpoints of a run that publishes ``out_dir`` live: ``<out_dir>.checkpoints`` beside it."""
    out = Path(out_dir).expanduser()
    return out.parent / f"{out.name}{CHECKPOINT_SUFFIX}"


def recovery_started(out_dir: str | os.PathLike) -> bool:
    """Whether a recovery into ``out_dir`` left checkpoints to resume from (it was cancelled or failed)."""
    return (checkpoint_folder(out_dir) / RUN_FILE).is_file()


def resume_point(folder: str | os.PathLike, run: dict) -> str | None:
    """The last checkpoint in ``folder`` of the run described by ``run`` (None: start afresh).

    ``run`` (model, recipe, teacher, task) is written to ``folder/obce_run.json`` on the first call;
    a folder that holds another run's checkpoints is refused with the fix, before any training.
    """
    from transformers.trainer_utils import get_last_checkpoint  # here: transformers.trainer is heavy

    folder = Path(folder)
    record = folder / RUN_FILE
    text = json.dumps(run, sort_keys=True, default=str)
    if record.is_file():
        found = record.read_text(encoding="utf-8")
        if json.loads(found) != json.loads(text):
            raise ValueError(
                f"Checkpoint folder {str(folder)!r} holds the checkpoints of another run ({found}); this one is "
                f"{text}. Delete that folder to start afresh, or rerun with the model, recipe and teacher it "
                "was started with to resume it.")
        return get_last_checkpoint(str(folder))
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"Checkpoint folder {str(folder)!r} exists and is not one obce wrote (no {RUN_FILE}); "
                         "move it away or choose another output folder.")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, text)
    return None


def evaluation_settings(recipe, spec: glue.GlueTask, checkpointing: bool) -> tuple[dict, list, object]:
    """``(TrainingArguments overrides, callbacks, compute_metrics)`` for ``recipe``.

    With ``recipe.eval_steps``: score every that many steps, save a checkpoint then, restore the
    best at the end, and with ``early_stopping_patience`` stop after that many scores without a
    gain. Without it but ``checkpointing``: a checkpoint every 200 steps. A cancel saves one as well
    (``fine_tune``'s callback). Two checkpoints are kept at most (the last, and the best).
    """
    from transformers import EarlyStoppingCallback

    overrides: dict = {}
    callbacks: list = []
    compute_metrics = None
    if recipe.eval_steps:
        overrides = {"eval_strategy": "steps", "eval_steps": recipe.eval_steps, "save_strategy": "steps",
                     "save_steps": recipe.eval_steps, "load_best_model_at_end": True,
                     "metric_for_best_model": _METRIC, "greater_is_better": True, "save_total_limit": 2}

        def compute_metrics(prediction):
            metrics = glue.compute_metrics(spec, prediction.predictions, prediction.label_ids)
            return {**metrics, _METRIC: glue.main_score(spec, metrics)}

        if recipe.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience))
    elif checkpointing:
        overrides = {"save_strategy": "steps", "save_steps": 200, "save_total_limit": 1}
    return overrides, callbacks, compute_metrics
