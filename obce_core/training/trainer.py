"""Fine-tuning and evaluating one BERT classifier on one GLUE task, with Hugging Face ``Trainer``.

``fine_tune`` trains in place, so the same code runs on the CPU, on one GPU, or on many under
``accelerate launch`` / ``torchrun`` (``Recipe.batch_size`` is the GLOBAL batch: each of
``WORLD_SIZE`` processes gets an equal share, so results stay comparable across machines). Given a
``teacher``, it trains by knowledge distillation instead (``obce_core.training.distill``).
``evaluate`` predicts through ``Trainer.predict`` and scores with ``glue.compute_metrics``.
``measure_latency``, ``parameter_counts`` and ``head_fingerprint`` describe a model for a result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import DataCollatorWithPadding, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from obce_core import glue
from obce_core.forward import locked_eval, model_lock
from obce_core.layout import base_model
from obce_core.loading import hash_tensors_
from obce_core.training.distill import check_distillation, make_distill_trainer
from obce_core.training.held_out import split_held_out
from obce_core.training.progress import Progress, ShouldStop, StepEvent, TrainingCancelled, world_size
from obce_core.training.recipe import Recipe
from obce_core.training.recovery import evaluation_settings

__all__ = [
    "check_head",
    "evaluate",
    "fine_tune",
    "head_fingerprint",
    "latency_on_task",
    "measure_latency",
    "parameter_counts",
    "training_rows",
]


def parameter_counts(model) -> dict[str, int]:
    """``{"total": all parameters, "encoder": the transformer layers alone}`` of a BERT model.

    ``encoder`` leaves out embeddings, pooler and task head: it is the part pruning shrinks.
    """
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in base_model(model).encoder.parameters())
    return {"total": int(total), "encoder": int(encoder)}


def head_fingerprint(model) -> str:
    """A short hash of everything outside the encoder (pooler, classifier); ``""`` for a bare encoder.

    ``model_fingerprint`` leaves the head out on purpose (scores of an encoder apply to any
    classifier on it); a result also depends on the head, so the store keys on both.
    """
    bert = base_model(model)
    digest = hashlib.sha256()
    inner = {id(p) for p in bert.encoder.parameters()} | {id(p) for p in bert.embeddings.parameters()}
    found = hash_tensors_(digest, ((n, p) for n, p in model.named_parameters() if id(p) not in inner))
    return digest.hexdigest()[:16] if found else ""




def _per_device(batch: int, name: str) -> int:
    world = world_size()
    if batch % world:
        raise ValueError(
            f"Recipe.{name}={batch} is the global batch and must split evenly over WORLD_SIZE={world} "
            f"processes; use a multiple of {world}."
        )
    return batch // world


def _tokenize(dataset, tokenizer, spec: glue.GlueTask, max_length: int):
    """Token ids (truncated to ``max_length``, unpadded) and ``label``; text columns dropped."""
    from datasets.utils import logging as ds_logging  # here: datasets is heavy, and only training needs it

    cols = list(spec.text_columns)

    def encode(batch):
        return tokenizer(*(batch[c] for c in cols), truncation=True, max_length=max_length)

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        drop = [c for c in dataset.column_names if c != "label"]
        return dataset.map(encode, batched=True, remove_columns=drop)
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _sampling_args(arguments_class, group_by_length: bool) -> dict:
    # transformers 5.2 replaced the flag ``group_by_length`` by ``train_sampling_strategy``.
    if "train_sampling_strategy" in arguments_class.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


def _training_args(recipe: Recipe, output_dir: str, device, *, logging_steps: int = 1, **overrides):
    device = None if device is None else torch.device(device)
    use_cpu = device is not None and device.type == "cpu"
    cuda = torch.cuda.is_available() and not use_cpu
    return TrainingArguments(**{**dict(
        output_dir=output_dir,
        per_device_train_batch_size=_per_device(recipe.batch_size, "batch_size"),
        per_device_eval_batch_size=max(1, recipe.eval_batch_size // world_size()),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps if recipe.max_steps > 0 else -1,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        # transformers 5 reads a float in [0, 1) as a ratio of the total steps.
        warmup_steps=recipe.warmup_ratio,
        lr_scheduler_type="linear",
        **_sampling_args(TrainingArguments, recipe.group_by_length),
        seed=recipe.seed,
        bf16=recipe.precision == "bf16",
        fp16=recipe.precision == "fp16",
        use_cpu=use_cpu,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        # Every parameter takes part in a BERT classifier's forward pass (pruned or not).
        ddp_find_unused_parameters=False,
    ), **overrides})


def _make_trainer(model, tokenizer, args, train_dataset=None, callbacks=None, *, teacher=None, recipe=None,
                  eval_dataset=None, compute_metrics=None):
    """Hugging Face's Trainer; with a ``teacher``, the distillation Trainer (``recipe``'s KD settings)."""
    from transformers import Trainer  # here: transformers.trainer pulls in datasets (heavy)

    kwargs = dict(model=model, args=args, train_dataset=train_dataset, data_collator=DataCollatorWithPadding(tokenizer),
                  processing_class=tokenizer, callbacks=callbacks, eval_dataset=eval_dataset,
                  compute_metrics=compute_metrics)
    if teacher is None:
        trainer = Trainer(**kwargs)
    else:
        trainer = make_distill_trainer(teacher, temperature=recipe.kd_temperature, alpha=recipe.kd_alpha,
                                       hidden_weight=recipe.kd_hidden, **kwargs)
    # Progress goes to our callback (CLI bar, job status), not to stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def check_head(model, spec: glue.GlueTask) -> None:
    """ValueError unless ``model`` is a sequence classifier with the task's number of labels."""
    num_labels = getattr(model.config, "num_labels", None)
    if not hasattr(model, "classifier") or num_labels != spec.num_labels:
        raise ValueError(
            f"{type(model).__name__} with num_labels={num_labels} cannot be trained or scored on GLUE "
            f"task {spec.name!r}, which needs a sequence classifier with num_labels={spec.num_labels}. "
            f"To train it, load it with obce_core.load_model(source, num_labels={spec.num_labels}); to "
            f"evaluate or prune a task model, fine-tune one first with `python -m obce_core finetune --task "
            f"{spec.name.lower()} --out DIR` (or on the Model & data page) and load that directory."
        )


def _make_progress_callback(progress: Progress | None, should_stop: ShouldStop | None):
    class _ObceCallback(TrainerCallback):
        """Reports step, loss and ETA; stops training when ``should_stop()`` says so."""

        def __init__(self):
            self.loss = None
            self.start = None
            self.stopped = False
            self.losses: list[tuple[int, float]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                self.losses.append((int(state.global_step), self.loss))

        def on_step_end(self, args, state, control, **kwargs):
            step, total = int(state.global_step), int(state.max_steps)
            elapsed = time.perf_counter() - (self.start or time.perf_counter())
            eta = elapsed / step * max(total - step, 0) if step else None
            if progress is not None:
                progress(StepEvent(step=step, max_steps=total, loss=self.loss, eta_s=eta))
            if should_stop is not None and should_stop():
                self.stopped = True
                control.should_training_stop = True
                if args.save_strategy != "no":  # a checkpointed run keeps where it stopped, to resume from
                    control.should_save = True

    return _ObceCallback()


# ---------------------------------------------------------------------------------------------
# Fine-tuning, evaluation, latency
# ---------------------------------------------------------------------------------------------
def training_rows(spec: glue.GlueTask, recipe: Recipe, glue_dir=None):
    """``(rows fine_tune trains on, HeldOutRecord or None)``: the training split without its
    held-out reserve (``recipe.held_out``), then the seeded ``recipe.train_size`` subset of the rest."""
    if not recipe.held_out:
        return glue.load_task(spec, "train", glue_dir, n=recipe.train_size, seed=recipe.seed), None
    rest, _, record = split_held_out(glue.load_task(spec, "train", glue_dir), spec, recipe.held_out,
                                     recipe.held_out_max, recipe.seed)
    if recipe.train_size is not None and recipe.train_size < len(rest):
        # the same draw load_task(n=, seed=) makes, from the rows that are left
        rest = rest.select(np.random.default_rng(recipe.seed).choice(len(rest), size=recipe.train_size,
                                                                     replace=False).tolist())
    return rest, record


def fine_tune(
    model,
    tokenizer,
    task: str,
    recipe: Recipe | None = None,
    *,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    teacher=None,
    eval_rows=None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume_from: str | None = None,
):
    """Fine-tune ``model`` (a sequence classifier) in place on the task's training split.

    Examples are truncated to ``recipe.max_length`` and padded per batch; STS-B trains as
    regression (``num_labels=1``). ``progress(StepEvent(step, max_steps, loss, eta_s))`` is called
    after every optimizer step (``loss``: the latest logged training loss). When
    ``should_stop()`` returns True the step in progress finishes, training stops and
    ``TrainingCancelled`` is raised: a half-trained model is never returned as if it were done.
    ``device``: ``"cpu"`` forces the CPU; otherwise ``Trainer`` picks (a GPU when present, one per
    process under ``accelerate launch``). Returns the trained model, in eval mode, with the
    logged ``(step, loss)`` pairs in ``model.obce_train_losses`` and the optimizer steps taken in
    ``model.obce_train_steps``.

    ``teacher``: a classifier for the same task whose logits the model learns from as well
    (knowledge distillation, ``obce_core.training.distill``; the loss and its weights are the
    recipe's ``kd_*`` fields, and ``recipe.kd_teacher`` must name the teacher). It runs on every
    batch in eval mode without autograd, moved to the model's device; it is not trained.

    ``eval_rows`` (a ``datasets.Dataset`` of the task's columns and labels, rows training never
    reads): scored every ``recipe.eval_steps`` steps, the best checkpoint restored at the end, early
    stopping after ``recipe.early_stopping_patience`` scores without a gain
    (``obce_core.training.recovery``); required when ``recipe.eval_steps > 0``. ``checkpoint_dir``:
    checkpoints go there (and stay: a cancel saves one) instead of a temporary folder;
    ``resume_from``: a checkpoint in it to continue from (``recovery.resume_point``).
    """
    recipe = recipe or Recipe()
    spec = glue.get_task(task)
    check_head(model, spec)
    check_distillation(teacher, model, spec, recipe)
    if recipe.eval_steps and eval_rows is None:
        raise ValueError(f"The recipe scores held-out rows every {recipe.eval_steps} steps (early stopping) but none "
                         "were given; pass eval_rows (the teacher's held-out reserve) or use eval_steps=0.")
    train, held_out = training_rows(spec, recipe, glue_dir)
    train = _tokenize(train, tokenizer, spec, recipe.max_length)
    steps = recipe.steps(len(train))
    callback = _make_progress_callback(progress, should_stop)
    out = str(checkpoint_dir) if checkpoint_dir is not None else tempfile.mkdtemp(prefix="obce-finetune-")
    overrides, callbacks, compute_metrics = evaluation_settings(recipe, spec, checkpoint_dir is not None)
    evaluated = None if not recipe.eval_steps else _tokenize(eval_rows, tokenizer, spec, recipe.max_length)
    try:
        args = _training_args(recipe, out, device, logging_steps=max(1, min(50, steps // 25)), **overrides)
        trainer = _make_trainer(model, tokenizer, args, train_dataset=train, callbacks=[callback, *callbacks],
                                teacher=teacher, recipe=recipe, eval_dataset=evaluated, compute_metrics=compute_metrics)
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if checkpoint_dir is None:
            shutil.rmtree(out, ignore_errors=True)
    model.eval()
    model.obce_held_out = held_out  # what obce_task.json records of the reserve (None: none kept)
    model.obce_train_losses = list(callback.losses)  # (step, loss) pairs, for inspection
    model.obce_train_steps = int(trainer.state.global_step)
    model.obce_best_held_out = trainer.state.best_metric  # the held-out main score kept (None: not scored)
    if callback.stopped:
        raise TrainingCancelled(f"Fine-tuning on {spec.name!r} was cancelled at step {trainer.state.global_step}.")
    return model


def _eval_splits(spec: glue.GlueTask, split: str | None) -> list[str]:
    if split is not None:
        spec.split_file(split)  # rejects unknown splits with the valid ones listed
        return [split]
    return [s for s in spec.splits if s.startswith("validation")]


def evaluate(
    model,
    tokenizer,
    task: str,
    recipe: Recipe | None = None,
    *,
    glue_dir: str | os.PathLike | None = None,
    split: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """GLUE metrics of ``model`` on the task's validation split (or ``split``).

    Returns ``glue.compute_metrics`` plus ``main_score``. With no ``split``, MNLI is scored on
    matched (the metrics, and ``main_score``) and mismatched (``accuracy_mismatched``). Uses
    ``recipe.max_length``, ``eval_batch_size`` and ``eval_size`` (a seeded subset).
    """
    recipe = recipe or Recipe()
    spec = glue.get_task(task)
    check_head(model, spec)
    out: dict[str, float] = {}
    tmp = tempfile.mkdtemp(prefix="obce-eval-")
    try:
        args = _training_args(recipe, tmp, device)
        trainer = _make_trainer(model, tokenizer, args)
        for i, name in enumerate(_eval_splits(spec, split)):
            data = glue.load_task(spec, name, glue_dir, n=recipe.eval_size, seed=recipe.seed)
            pred = trainer.predict(_tokenize(data, tokenizer, spec, recipe.max_length))
            metrics = glue.compute_metrics(spec, pred.predictions, pred.label_ids)
            if i == 0:
                out.update(metrics)
                out["main_score"] = glue.main_score(spec, metrics)
            else:  # MNLI mismatched
                out.update({f"{k}_mismatched": v for k, v in metrics.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    return out


def measure_latency(model, tokenizer, texts, *, batch_size: int = 64, max_length: int = 128,
                    repeats: int = 5) -> float:
    """Median milliseconds of one forward pass over a batch of ``batch_size`` texts.

    The batch is the first ``batch_size`` texts (strings or pairs), padded to its longest;
    one warm-up pass is not timed. On CUDA the clock waits for the GPU. The passes run in
    ``obce_core.forward.locked_eval`` (the model's lock, eval mode, no autograd).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}.")
    batch = list(texts)[:batch_size]
    if not batch:
        raise ValueError("measure_latency needs at least one text.")
    columns = list(zip(*batch)) if isinstance(batch[0], (tuple, list)) else [batch]
    with model_lock(tokenizer):
        enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
    times = []
    with locked_eval(model) as device:
        enc = enc.to(device)
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(**enc)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first pass warms caches and kernels
                times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def latency_on_task(model, tokenizer, spec, recipe, glue_dir) -> float:
    """``measure_latency`` over the first ``recipe.eval_batch_size`` validation examples of the task."""
    split = _eval_splits(spec, None)[0]
    data = glue.load_task(spec, split, glue_dir, n=recipe.eval_size, seed=recipe.seed)
    texts = glue.dataset_texts(data, spec)
    return measure_latency(model, tokenizer, texts, batch_size=recipe.eval_batch_size, max_length=recipe.max_length)
