"""Task models: an encoder fine-tuned on one GLUE task, saved as a classifier directory.

``finetune_task_model`` loads an encoder with a new head (pooling from ``Recipe.pooling``),
fine-tunes it, scores it on the dev split and publishes the directory atomically: config, weights,
tokenizer, a sentence-transformers source's module files (``sentence_transformers_files``) and
``obce_task.json`` (``TaskModelInfo``: task, recipe, dev metrics, main score, training time and
steps, device, source model, creation time, obce version, which splits were sub-sampled and, for a
model distilled from a teacher task model, that teacher). The directory is an ordinary classifier
that ``load_model(DIR)`` reloads; the protocol ``finetuned`` and the retraining-free evaluation prune such models. ``read_task_model_info`` reads the JSON back and
``list_task_models`` finds every task model under a folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import set_seed

from obce_core import glue
from obce_core.io import JsonDataclass, publish_directory, read_json
from obce_core.loading import load_model
from obce_core.sentence_transformers_files import write_sentence_transformers_files
from obce_core.training.held_out import HeldOutRecord, reserve_of
from obce_core.training.distill import check_tokenizers, load_teacher, teacher_fingerprint
from obce_core.training.progress import PhaseEvent, Progress, ShouldStop, TrainingCancelled, is_main_process
from obce_core.training.recipe import Recipe, subset_note
from obce_core.training.recovery import checkpoint_folder, held_out_rows_of, recovery_recipe, resume_point
from obce_core.training.trainer import evaluate, fine_tune

__all__ = ["TASK_MODEL_FILE", "TaskModelInfo", "finetune_task_model", "list_task_models", "load_held_out",
           "read_task_model_info", "task_model_info"]

TASK_MODEL_FILE = "obce_task.json"


def _obce_version() -> str:
    try:
        return importlib.metadata.version("obce")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@dataclass(frozen=True)
class TaskModelInfo(JsonDataclass):
    """What ``obce_task.json`` holds: how a task model was made and what it scores on dev.

    ``metrics`` are ``evaluate``'s (GLUE metrics as fractions plus ``main_score``) on the task's
    validation split under ``recipe`` (its ``eval_size`` subset, when set). ``train_s`` is the
    wall time of the fine-tune alone, ``train_steps`` its optimizer steps. ``distilled_from``: the
    teacher task model (its folder) a distilled model learned from, whose weights
    ``recipe.kd_teacher`` fingerprints; None for a plain fine-tune. ``data_note`` says which splits
    were sub-sampled (``recipe.subset_note``; '' when both were used whole). ``held_out``: the part
    of the training split training never read (``obce_core.training.held_out``; None for a model
    trained before obce reserved one); the plan search judges its tolerance there.
    """

    _json_name = "task model info"

    task: str
    recipe: Recipe
    metrics: dict
    main_score: float
    train_s: float
    train_steps: int
    device: str
    source_model: str
    created_at: str
    obce_version: str
    distilled_from: str | None = None
    data_note: str = ""
    held_out: HeldOutRecord | None = None

    def __post_init__(self):
        object.__setattr__(self, "task", glue.get_task(self.task).name)
        object.__setattr__(self, "recipe", Recipe.from_dict(self.recipe))
        if self.held_out is not None:
            object.__setattr__(self, "held_out", HeldOutRecord.from_dict(self.held_out))
        if (self.distilled_from is None) != (self.recipe.kd_teacher is None):
            raise ValueError(f"A task model info names teacher {self.distilled_from!r} but its recipe's kd_teacher is "
                             f"{self.recipe.kd_teacher!r}: a distilled model needs both, a plain one neither. Rewrite "
                             "the file from the run that trained the model.")

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["recipe"] = self.recipe.to_dict()
        data["held_out"] = None if self.held_out is None else self.held_out.to_dict()
        return data


def read_task_model_info(directory: str | os.PathLike) -> TaskModelInfo | None:
    """The ``TaskModelInfo`` of a task model directory; None when it has no ``obce_task.json``.

    A file that exists but does not parse raises ``ValueError`` naming it.
    """
    path = Path(directory).expanduser() / TASK_MODEL_FILE
    if not path.is_file():
        return None
    return TaskModelInfo.from_json(path)


def load_held_out(directory: str | os.PathLike, glue_dir: str | os.PathLike | None = None):
    """The training rows task model ``directory`` never trained on, as a ``datasets.Dataset`` (the
    task's columns, ``label``, ``idx``); ``ValueError`` naming the fix when it records none or the
    training file changed (``held_out.reserve_of``)."""
    where = repr(str(Path(directory).expanduser()))
    return reserve_of(read_task_model_info(directory), glue_dir, where=where)


def task_model_info(source: str) -> TaskModelInfo | None:
    """The ``TaskModelInfo`` of ``source`` when it is a local task model's folder; None for
    "default", a hub id, a folder without ``obce_task.json`` or one whose file does not parse."""
    path = Path(str(source)).expanduser()
    if source == "default" or not path.is_dir():
        return None
    try:
        return read_task_model_info(path)
    except ValueError:
        return None


def list_task_models(root: str | os.PathLike) -> list[tuple[Path, TaskModelInfo]]:
    """``(directory, info)`` of every task model directly under ``root``, newest first.

    Folders with an unreadable ``obce_task.json`` are skipped; a missing ``root`` lists nothing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue  # publish_directory's temp folders start with "."
        try:
            info = read_task_model_info(child)
        except ValueError:
            continue
        if info is not None:
            found.append((child, info))
    return sorted(found, key=lambda item: item[1].created_at, reverse=True)


def _replaceable(overwrite: bool):
    def replace(directory: Path) -> bool:
        # Only an empty folder or an earlier task model: never a folder of someone else's files.
        return not any(directory.iterdir()) or (overwrite and (directory / TASK_MODEL_FILE).is_file())
    return replace


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not (out.is_dir() and _replaceable(overwrite)(out)):
        what = "an earlier task model; pass overwrite=True (--overwrite) to replace it" \
            if (out / TASK_MODEL_FILE).is_file() else "not an empty folder nor a task model, so it is never replaced"
        raise FileExistsError(f"Output {str(out)!r} exists and is {what}; or choose another directory.")


def _where(source: str | os.PathLike) -> str:
    """A local folder as its absolute path (the record outlives the working directory); a hub id as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def _has_task_head(source: str, spec: glue.GlueTask) -> bool:
    """True when ``source`` is a local classifier with the task's number of labels (e.g. a pruned task model).

    Read from its config.json alone (data, never code), before loading: such a model keeps its
    head and pooling, which ``Recipe.pooling`` (what a NEW head reads) must not replace.
    """
    path = Path(source).expanduser() / "config.json"
    try:
        config = read_json(path, "model config", expect=dict)  # depth-limited; a list is no config
    except (OSError, ValueError):
        return False  # a hub id, or no readable config: load_model reports what is wrong
    architectures = config.get("architectures") or []
    labels = len(config.get("id2label") or {}) or config.get("num_labels")
    return any("SequenceClassification" in a for a in architectures) and labels == spec.num_labels


def finetune_task_model(
    task: str,
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    recipe: Recipe | dict | None = None,
    teacher: str | os.PathLike | None = None,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    overwrite: bool = False,
) -> TaskModelInfo:
    """Fine-tune ``model`` on ``task`` and save the classifier in ``out_dir``; returns its info.

    ``model``: what ``load_model`` takes (default: the embedded all-MiniLM-L6-v2); an encoder gets
    a new head with ``recipe.pooling``, a classifier for the task (e.g. a pruned task model) keeps
    its own. ``recipe``: default the task's CPU preset (``Recipe.for_task``). ``teacher``: a task
    model folder for the same task; the model then learns from its logits as well as the labels
    (knowledge distillation with the recipe's ``kd_temperature`` and ``kd_alpha``), the saved
    recipe's ``kd_teacher`` is the teacher's fingerprint and the info's ``distilled_from`` its
    folder. ``out_dir`` must not exist, be empty, or (with ``overwrite``) hold an earlier task
    model; it is written atomically, so a failure or ``TrainingCancelled`` leaves nothing behind.

    Recovery (a ``teacher``): the default recipe is the ``recover`` preset (lower lr, logit and
    hidden-state distillation, early stopping on the teacher's held-out reserve, which the student
    then never trains on: ``recovery.held_out_rows_of``). Checkpoints go to ``<out_dir>.checkpoints``
    beside ``out_dir``: a cancelled run leaves its last one there and the same call resumes from it;
    the folder is removed once the model is published.
    """
    spec = glue.get_task(task)
    if recipe is None:
        recipe = recovery_recipe(spec.name, task_model_info(str(teacher))) if teacher is not None \
            else Recipe.for_task(spec.name)
    recipe = Recipe.from_dict(recipe)
    out = Path(out_dir).expanduser()
    _check_out_dir(out, overwrite)  # before the slow steps; publish_directory checks again
    say = progress or (lambda event: None)
    source = "default" if model is None or str(model) in ("", "default") else str(model)
    teacher_net = None
    if teacher is not None:
        say(PhaseEvent(f"loading the teacher {teacher}"))
        teacher_net, teacher_tokenizer = load_teacher(teacher, spec.name, device=device)
        fingerprint = teacher_fingerprint(teacher_net)
        if recipe.kd_teacher not in (None, fingerprint):
            raise ValueError(f"The recipe's kd_teacher {recipe.kd_teacher!r} is not the fingerprint of teacher "
                             f"{str(teacher)!r} ({fingerprint}); leave kd_teacher None, it is filled in from the teacher.")
        recipe = recipe.replace(kd_teacher=fingerprint)
    eval_rows = None
    if teacher is not None or recipe.eval_steps:
        where = repr(str(teacher if teacher is not None else source))
        recipe, eval_rows, why = held_out_rows_of(recipe, task_model_info(str(teacher if teacher is not None else source)),
                                                  glue_dir, where=f"task model {where}")
        if why:
            say(PhaseEvent(why))
    checkpoints = checkpoint_folder(out) if teacher is not None else None
    note = subset_note(recipe, spec.name)  # said in the job's line and in obce_task.json
    say(PhaseEvent(f"loading {source} for {spec.name}" + (f" ({note})" if note else "")))
    set_seed(recipe.seed)  # the new head is drawn from this seed
    keep_head = source != "default" and _has_task_head(source, spec)
    net, tokenizer = load_model(source, num_labels=spec.num_labels,
                                classifier_pooling=None if keep_head else recipe.pooling, device=device)
    if teacher_net is not None:
        check_tokenizers(teacher_tokenizer, tokenizer, teacher, source)
    if not spec.is_regression:  # label names in the config, in the hub's id order
        net.config.id2label = dict(enumerate(spec.label_names))
        net.config.label2id = {name: i for i, name in enumerate(spec.label_names)}
    net.config.finetuning_task = spec.name
    say(PhaseEvent(f"{'distilling' if teacher_net is not None else 'fine-tuning'} on {spec.name}"))
    resume = None
    if checkpoints is not None and is_main_process():
        resume = resume_point(checkpoints, {"task": spec.name, "model": _where(source), "teacher": recipe.kd_teacher,
                                            "recipe": recipe.canonical_json()})
        if resume:
            say(PhaseEvent(f"resuming from {resume}"))
    start = time.perf_counter()
    try:
        fine_tune(net, tokenizer, spec.name, recipe, glue_dir=glue_dir, device=device, progress=progress,
                  should_stop=should_stop, teacher=teacher_net, eval_rows=eval_rows, checkpoint_dir=checkpoints,
                  resume_from=resume)
    except TrainingCancelled as exc:
        if checkpoints is None:
            raise
        raise TrainingCancelled(f"{exc} Its last checkpoint is in {str(checkpoints)!r}: run the same command again to "
                                "resume from it.") from None
    train_s = time.perf_counter() - start
    say(PhaseEvent(f"evaluating on {spec.name}"))
    metrics = evaluate(net, tokenizer, spec.name, recipe, glue_dir=glue_dir, device=device)
    info = TaskModelInfo(
        task=spec.name, recipe=recipe, metrics={k: float(v) for k, v in metrics.items()},
        main_score=float(metrics["main_score"]), train_s=round(train_s, 3), train_steps=int(net.obce_train_steps),
        device=str(next(net.parameters()).device), source_model=source,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), obce_version=_obce_version(),
        distilled_from=None if teacher is None else _where(teacher), data_note=note,
        held_out=getattr(net, "obce_held_out", None),
    )
    say(PhaseEvent(f"saving {out}"))

    def fill(tmp: Path) -> None:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_sentence_transformers_files(net, tmp)  # a sentence-transformers source's modules come along
        info.to_json(tmp / TASK_MODEL_FILE)

    if is_main_process():  # one writer under accelerate launch / torchrun
        publish_directory(out, fill, replace=_replaceable(overwrite))
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # published: nothing left to resume
    return info
