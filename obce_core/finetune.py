"""Fine-tuning and evaluating BERT classifiers on GLUE, and the two OBCE comparison protocols.

One recipe (``Recipe``) drives everything: ``fine_tune`` trains with Hugging Face ``Trainer``, so
the same code runs on the CPU, on one GPU, or on many under ``accelerate launch`` / ``torchrun``
(``Recipe.batch_size`` is the GLOBAL batch: each of ``WORLD_SIZE`` processes gets an equal share,
so results stay comparable across machines). ``evaluate`` predicts through ``Trainer.predict`` and
scores with ``glue.compute_metrics``.

The protocols compare an original model with its pruned copy under the same recipe and seed:

* ``run_paper_protocol`` (the paper's): load the PRE-TRAINED encoder with a new task head, prune
  it with the plan, fine-tune original and pruned alike, evaluate both.
* ``run_finetuned_protocol``: prune an already FINE-TUNED classifier, evaluate it at once, and
  optionally let it recover with a short fine-tune.

Each run of one model on one task gives a ``RunResult``. Protocols accept a result ``store``
(``obce_core.jobs.ResultsStore``): a run whose key (encoder fingerprint, head fingerprint, plan,
task, recipe, protocol) is already stored is answered from the store without training, and every
finished run is stored at once. A pruned run is keyed by the fingerprint of the pruned model, so
the key covers the source weights, the scores and the plan together.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from obce_core import glue
from obce_core.io import JsonDataclass
from obce_core.models import base_model, hash_tensors_, load_model, model_fingerprint

__all__ = [
    "PRECISIONS",
    "PROTOCOLS",
    "RECIPE_PRESETS",
    "Recipe",
    "RunResult",
    "TrainingCancelled",
    "fine_tune",
    "evaluate",
    "measure_latency",
    "parameter_counts",
    "head_fingerprint",
    "run_paper_protocol",
    "run_finetuned_protocol",
    "CPU_SECONDS_PER_STEP",
    "estimate_training",
]

PRECISIONS = ("fp32", "bf16", "fp16")
# How a run's model was obtained; part of every result's key.
PROTOCOLS = ("paper", "finetuned")
RECOVER_PROTOCOL = "finetuned-recover"
ROLES = ("original", "pruned", "recovered")

Progress = Callable[[dict], None]
ShouldStop = Callable[[], bool]


class TrainingCancelled(RuntimeError):
    """``should_stop()`` asked a fine-tune or protocol to stop; nothing half-done was kept."""


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@dataclass(frozen=True)
class Recipe(JsonDataclass):
    """How a model is fine-tuned and evaluated. Every field is part of a result's key.

    ``epochs`` is used unless ``max_steps > 0``, which wins. ``batch_size`` is the global batch
    (split over processes under ``accelerate launch``/``torchrun``). ``warmup_ratio`` is the share
    of steps with a linear warm-up. ``train_size``/``eval_size`` draw seeded subsets (``None`` =
    the whole split) with ``glue.load_task(..., n=, seed=seed)``. ``seed`` also seeds the new task
    head, the data order and dropout. ``precision`` is ``fp32`` or mixed ``bf16``/``fp16`` (GPU).
    """

    _json_name = "recipe"

    max_length: int = 128
    epochs: float = 3.0
    max_steps: int = 0
    learning_rate: float = 2e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    train_size: int | None = None
    eval_size: int | None = None
    seed: int = 42
    precision: str = "fp32"

    def __post_init__(self):
        def bad(name, expected, fix):
            value = getattr(self, name)
            raise ValueError(f"Recipe.{name} must be {expected}; got {value!r}. {fix}")

        if not _is_int(self.max_length) or not 8 <= self.max_length <= 8192:
            bad("max_length", "an integer in [8, 8192] (tokens per example after truncation)",
                "BERT uses 128 for GLUE; 64 is a fast CPU setting.")
        if not _is_number(self.epochs) or self.epochs <= 0:
            bad("epochs", "a number > 0", "Use e.g. 3, or set max_steps > 0 to train for a fixed number of steps.")
        if not _is_int(self.max_steps) or self.max_steps < 0:
            bad("max_steps", "an integer >= 0 (0 = train for `epochs`)", "Use 0 or a positive step count.")
        if not _is_number(self.learning_rate) or not 0 < self.learning_rate < 1:
            bad("learning_rate", "a number in (0, 1)", "BERT fine-tuning uses 2e-5 to 5e-5.")
        for name in ("batch_size", "eval_batch_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an integer >= 1", "Use e.g. 32 for training, 64 for evaluation.")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            bad("weight_decay", "a number >= 0", "Use 0.01 (the usual BERT setting) or 0.")
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", "a number in [0, 1) (the share of steps with a linear warm-up)", "Use 0 or e.g. 0.1.")
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                bad(name, "None (the whole split) or an integer >= 1", "Give the number of examples to draw.")
        if not _is_int(self.seed) or self.seed < 0:
            bad("seed", "an integer >= 0", "Use e.g. 42.")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {PRECISIONS}", "Mixed precision (bf16/fp16) needs a GPU; use fp32 on the CPU.")
        # Canonical types, so equal recipes give equal JSON (3 and 3.0 epochs are one recipe).
        for name in ("epochs", "learning_rate", "weight_decay", "warmup_ratio"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("max_length", "max_steps", "batch_size", "eval_batch_size", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "Recipe":
        """A named recipe (see ``RECIPE_PRESETS``) with some fields replaced."""
        if name not in RECIPE_PRESETS:
            raise ValueError(
                f"Unknown recipe preset {name!r}; valid presets: {', '.join(RECIPE_PRESETS)} "
                "(paper = BERT's GLUE recipe, cpu = a small CPU-sized run, smoke = seconds)."
            )
        return cls(**{**RECIPE_PRESETS[name], **overrides})

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


# Measured on this project's 2-core CPU: ~1.3 s per optimizer step of 32 x 64 tokens for
# all-MiniLM-L6-v2; a step scales about linearly with batch x tokens. Larger models take longer.
CPU_SECONDS_PER_STEP = 1.3


def estimate_training(recipe: "Recipe", task: str, *, runs: int = 1, extra_steps: int = 0) -> tuple[int, float]:
    """(optimizer steps per run, ESTIMATED CPU seconds for ``runs`` runs plus ``extra_steps``).

    Uses the official training-split size when ``recipe.train_size`` is None; an estimate for
    all-MiniLM on a 2-core CPU, not a measurement of the model at hand.
    """
    rows = glue.get_task(task).train_rows
    n = min(recipe.train_size or rows, rows) if rows else (recipe.train_size or 0)
    steps = recipe.max_steps or math.ceil(n / recipe.batch_size * recipe.epochs)
    per_step = CPU_SECONDS_PER_STEP * (recipe.batch_size / 32) * (recipe.max_length / 64)
    return steps, (runs * steps + extra_steps) * per_step


RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    # BERT's GLUE recipe (Devlin et al. 2019): 128 tokens, batch 32, lr 2e-5, 3 epochs.
    "paper": {},
    # What fits the project's 2-core CPU: ~1.3 s per step for all-MiniLM-L6-v2.
    "cpu": {"max_length": 64, "epochs": 1.0, "learning_rate": 5e-5, "train_size": 2000},
    # Seconds: checks that everything runs, measures nothing.
    "smoke": {"max_length": 64, "max_steps": 20, "learning_rate": 5e-5, "train_size": 256, "eval_size": 128},
}


def _canonical(data: dict | None) -> str | None:
    return None if data is None else json.dumps(data, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One model evaluated on one GLUE task (after fine-tuning, unless the protocol skips it).

    Key fields (``key()``): ``fingerprint`` (``model_fingerprint`` of the encoder the run started
    from: the pruned encoder for a pruned run), ``head_fingerprint``, ``plan`` (``None`` for the
    original), ``task``, ``recipe`` and ``protocol`` (``paper``, ``finetuned``, or
    ``finetuned-recover`` for a recovery fine-tune). ``source_fingerprint`` is the unpruned
    encoder's, which ties an original to its pruned copies. ``metrics`` holds
    ``glue.compute_metrics`` plus ``main_score`` (MNLI adds ``accuracy_mismatched``).
    ``latency_ms`` is the median time of one forward pass over ``recipe.eval_batch_size``
    validation examples on ``device``. ``id``/``created_at`` are set by the store.
    """

    task: str
    role: str
    protocol: str
    model_source: str
    fingerprint: str
    head_fingerprint: str
    source_fingerprint: str
    plan: dict | None
    recipe: dict
    metrics: dict[str, float]
    main_score: float
    params_total: int
    params_encoder: int
    latency_ms: float | None
    wall_s: float
    device: str
    id: int | None = None
    created_at: str | None = None
    job_id: str | None = None
    from_store: bool = field(default=False, compare=False)

    def key(self) -> dict:
        """The fields that identify a run (what ``ResultsStore.lookup`` takes)."""
        return {
            "fingerprint": self.fingerprint,
            "head_fingerprint": self.head_fingerprint,
            "plan": self.plan,
            "task": self.task,
            "recipe": self.recipe,
            "protocol": self.protocol,
        }

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("from_store")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
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


def _world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _per_device(batch: int, name: str) -> int:
    world = _world_size()
    if batch % world:
        raise ValueError(
            f"Recipe.{name}={batch} is the global batch and must split evenly over WORLD_SIZE={world} "
            f"processes; use a multiple of {world}."
        )
    return batch // world


def _tokenize(dataset, tokenizer, spec: glue.GlueTask, max_length: int):
    """Token ids (truncated to ``max_length``, unpadded) and ``label``; text columns dropped."""
    from datasets.utils import logging as ds_logging

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


def _training_args(recipe: Recipe, output_dir: str, device, *, logging_steps: int = 1):
    from transformers import TrainingArguments

    device = None if device is None else torch.device(device)
    use_cpu = device is not None and device.type == "cpu"
    cuda = torch.cuda.is_available() and not use_cpu
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=_per_device(recipe.batch_size, "batch_size"),
        per_device_eval_batch_size=max(1, recipe.eval_batch_size // _world_size()),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps if recipe.max_steps > 0 else -1,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        # transformers 5 reads a float in [0, 1) as a ratio of the total steps.
        warmup_steps=recipe.warmup_ratio,
        lr_scheduler_type="linear",
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
    )


def _make_trainer(model, tokenizer, args, train_dataset=None, callbacks=None):
    from transformers import DataCollatorWithPadding, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # Progress goes to our callback (CLI bar, job status), not to stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _check_head(model, spec: glue.GlueTask) -> None:
    num_labels = getattr(model.config, "num_labels", None)
    if not hasattr(model, "classifier") or num_labels != spec.num_labels:
        raise ValueError(
            f"{type(model).__name__} with num_labels={num_labels} cannot be trained or scored on GLUE "
            f"task {spec.name!r}, which needs a sequence classifier with num_labels={spec.num_labels}. "
            f"Load it with obce_core.load_model(source, num_labels={spec.num_labels})."
        )


def _make_progress_callback(progress: Progress | None, should_stop: ShouldStop | None):
    from transformers import TrainerCallback

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
                progress({"step": step, "max_steps": total, "loss": self.loss, "eta_s": eta})
            if should_stop is not None and should_stop():
                self.stopped = True
                control.should_training_stop = True

    return _ObceCallback()


# ---------------------------------------------------------------------------------------------
# Fine-tuning, evaluation, latency
# ---------------------------------------------------------------------------------------------
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
):
    """Fine-tune ``model`` (a sequence classifier) in place on the task's training split.

    Examples are truncated to ``recipe.max_length`` and padded per batch; STS-B trains as
    regression (``num_labels=1``). ``progress(dict(step, max_steps, loss, eta_s))`` is called
    after every optimizer step (``loss``: the latest logged training loss). When
    ``should_stop()`` returns True the step in progress finishes, training stops and
    ``TrainingCancelled`` is raised: a half-trained model is never returned as if it were done.
    ``device``: ``"cpu"`` forces the CPU; otherwise ``Trainer`` picks (a GPU when present, one per
    process under ``accelerate launch``). Returns the trained model, in eval mode, with the
    logged ``(step, loss)`` pairs in ``model.obce_train_losses``.
    """
    recipe = recipe or Recipe()
    spec = glue.get_task(task)
    _check_head(model, spec)
    train = glue.load_task(spec, "train", glue_dir, n=recipe.train_size, seed=recipe.seed)
    train = _tokenize(train, tokenizer, spec, recipe.max_length)
    steps = recipe.max_steps or math.ceil(len(train) / recipe.batch_size * recipe.epochs)
    callback = _make_progress_callback(progress, should_stop)
    out = tempfile.mkdtemp(prefix="obce-finetune-")
    try:
        args = _training_args(recipe, out, device, logging_steps=max(1, min(50, steps // 25)))
        trainer = _make_trainer(model, tokenizer, args, train_dataset=train, callbacks=[callback])
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    model.eval()
    model.obce_train_losses = list(callback.losses)  # (step, loss) pairs, for inspection
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
    _check_head(model, spec)
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
    one warm-up pass is not timed. On CUDA the clock waits for the GPU.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}.")
    batch = list(texts)[:batch_size]
    if not batch:
        raise ValueError("measure_latency needs at least one text.")
    columns = list(zip(*batch)) if isinstance(batch[0], (tuple, list)) else [batch]
    device = next(model.parameters()).device
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt").to(device)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model(**enc)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:  # the first pass warms caches and kernels
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


def _latency_on_task(model, tokenizer, spec, recipe, glue_dir) -> float:
    split = _eval_splits(spec, None)[0]
    data = glue.load_task(spec, split, glue_dir, n=recipe.eval_size, seed=recipe.seed)
    texts = glue.dataset_texts(data, spec)
    return measure_latency(model, tokenizer, texts, batch_size=recipe.eval_batch_size, max_length=recipe.max_length)


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------
def _as_plan(plan):
    if plan is None:
        return None
    from obce_core.pruning import PruningPlan

    if isinstance(plan, PruningPlan):
        return plan
    if isinstance(plan, dict):
        return PruningPlan.from_dict(plan)
    return PruningPlan.from_json(plan)


def _check_stop(should_stop: ShouldStop | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled(f"Cancelled before {what}.")


def _emit(progress: Progress | None, **event) -> None:
    if progress is not None:
        progress(event)


def _prune_for(model, tokenizer, scores, plan):
    from obce_core.pruning import prune

    if callable(scores):
        scores = scores(model, tokenizer)
    if scores is None:
        raise ValueError(
            "A pruning plan was given without scores; pass NeuronScores (obce_core.score_model) or a "
            "callable (model, tokenizer) -> NeuronScores."
        )
    pruned, _report = prune(model, scores, plan)
    return pruned.eval()


def _run_one(*, role, protocol, model, tokenizer, spec, recipe, train_recipe, plan, model_source,
             source_fp, glue_dir, device, progress, should_stop, store) -> RunResult:
    """Fine-tune (when ``train_recipe``) and evaluate one model, or answer it from ``store``."""
    counts = parameter_counts(model)
    result = RunResult(
        task=spec.name, role=role, protocol=protocol, model_source=str(model_source),
        fingerprint=model_fingerprint(model), head_fingerprint=head_fingerprint(model),
        source_fingerprint=source_fp, plan=None if plan is None else plan.to_dict(),
        recipe=(train_recipe or recipe).to_dict(), metrics={}, main_score=float("nan"),
        params_total=counts["total"], params_encoder=counts["encoder"], latency_ms=None, wall_s=0.0,
        device=str(next(model.parameters()).device),
    )
    if store is not None:
        hit = store.lookup(**result.key())
        if hit is not None:
            hit.from_store = True
            _emit(progress, phase=f"{role} on {spec.name}: answered from the store", result=hit)
            return hit
    _check_stop(should_stop, f"the {role} run on {spec.name}")
    start = time.perf_counter()
    if train_recipe is not None:
        _emit(progress, phase=f"fine-tuning {role} on {spec.name}")
        fine_tune(model, tokenizer, spec.name, train_recipe, glue_dir=glue_dir, device=device,
                  progress=progress, should_stop=should_stop)
        _check_stop(should_stop, f"evaluating {role} on {spec.name}")
    _emit(progress, phase=f"evaluating {role} on {spec.name}")
    metrics = evaluate(model, tokenizer, spec.name, recipe, glue_dir=glue_dir, device=device)
    result.latency_ms = _latency_on_task(model, tokenizer, spec, recipe, glue_dir)
    result.metrics = metrics
    result.main_score = float(metrics["main_score"])
    result.wall_s = time.perf_counter() - start
    result.device = str(next(model.parameters()).device)
    if store is not None and _is_main_process():
        result = store.add(result)
    _emit(progress, phase=f"{role} on {spec.name}: done", result=result)
    return result


def run_paper_protocol(
    model_source,
    scores,
    plan,
    task: str,
    recipe: Recipe | None = None,
    *,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    store=None,
) -> dict[str, RunResult]:
    """The paper's protocol: prune the PRE-TRAINED model, fine-tune original and pruned alike.

    ``model_source``: what ``load_model`` takes (``None``/"default", a directory, a hub id); it is
    loaded with a new head for the task, seeded by ``recipe.seed``. ``scores``: ``NeuronScores``
    of that encoder, or a callable ``(model, tokenizer) -> NeuronScores`` called only when the
    pruned run is not already stored. ``plan``: a ``PruningPlan`` (or its dict / JSON), or
    ``None`` to run the original alone. Returns ``{"original": ..., "pruned": ...}``; each
    result is taken from / added to ``store`` when one is given. Raises ``TrainingCancelled``
    when ``should_stop()`` turns True.
    """
    from transformers import set_seed

    spec = glue.get_task(task)
    recipe = Recipe.from_dict(recipe) if recipe is not None else Recipe()
    plan = _as_plan(plan)
    _check_stop(should_stop, f"loading the model for {spec.name}")
    _emit(progress, phase=f"loading {model_source or 'default'} for {spec.name}")
    set_seed(recipe.seed)  # the new task head is drawn from this seed
    model, tokenizer = load_model(model_source, num_labels=spec.num_labels, device=device)
    source_fp = model_fingerprint(model)
    runs = [("original", model, None)]
    if plan is not None:
        _emit(progress, phase=f"pruning for {spec.name}")
        # Pruned from the pre-trained weights, before the original is fine-tuned in place.
        runs.append(("pruned", _prune_for(model, tokenizer, scores, plan), plan))
    common = dict(protocol="paper", tokenizer=tokenizer, spec=spec, recipe=recipe, train_recipe=recipe,
                  model_source=model_source or "default", source_fp=source_fp, glue_dir=glue_dir,
                  device=device, progress=progress, should_stop=should_stop, store=store)
    return {role: _run_one(role=role, model=m, plan=p, **common) for role, m, p in runs}


def run_finetuned_protocol(
    finetuned_source,
    scores,
    plan,
    task: str,
    recipe: Recipe | None = None,
    recover_steps: int = 0,
    *,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    store=None,
) -> dict[str, RunResult]:
    """Prune an already FINE-TUNED classifier and evaluate it at once (no training).

    ``finetuned_source`` must hold a sequence classifier for ``task`` whose label ids follow the
    hub's ``nyu-mll/glue``. ``scores`` are of THIS model's encoder (or a callable, as in
    ``run_paper_protocol``). With ``recover_steps > 0`` the pruned model is then fine-tuned for
    that many steps with ``recipe`` and evaluated again (role ``recovered``, protocol
    ``finetuned-recover``). Returns ``{"original", "pruned"[, "recovered"]}``.
    """
    spec = glue.get_task(task)
    recipe = Recipe.from_dict(recipe) if recipe is not None else Recipe()
    if not _is_int(recover_steps) or recover_steps < 0:
        raise ValueError(f"recover_steps must be an integer >= 0 (0 = no recovery fine-tune); got {recover_steps!r}.")
    plan = _as_plan(plan)
    _check_stop(should_stop, f"loading the model for {spec.name}")
    _emit(progress, phase=f"loading {finetuned_source} for {spec.name}")
    model, tokenizer = load_model(finetuned_source, device=device)
    _check_finetuned(model, spec, finetuned_source)
    source_fp = model_fingerprint(model)
    common = dict(tokenizer=tokenizer, spec=spec, recipe=recipe, model_source=finetuned_source,
                  source_fp=source_fp, glue_dir=glue_dir, device=device, progress=progress,
                  should_stop=should_stop, store=store)
    out = {"original": _run_one(role="original", protocol="finetuned", model=model, plan=None,
                                train_recipe=None, **common)}
    if plan is None:
        return out
    _emit(progress, phase=f"pruning for {spec.name}")
    pruned = _prune_for(model, tokenizer, scores, plan)
    out["pruned"] = _run_one(role="pruned", protocol="finetuned", model=pruned, plan=plan, train_recipe=None, **common)
    if recover_steps:
        recover = recipe.replace(max_steps=int(recover_steps))
        out["recovered"] = _run_one(role="recovered", protocol=RECOVER_PROTOCOL, model=copy.deepcopy(pruned),
                                    plan=plan, train_recipe=recover, **{**common, "recipe": recover})
    return out


def _check_finetuned(model, spec: glue.GlueTask, source) -> None:
    architectures = getattr(model.config, "architectures", None) or []
    if not hasattr(model, "classifier") or not any("SequenceClassification" in a for a in architectures):
        raise ValueError(
            f"Model {str(source)!r} is not a fine-tuned sequence classifier (architectures {architectures}); "
            "the 'finetuned' protocol prunes a classifier already trained on the task. Use protocol "
            "'paper' for a pre-trained encoder."
        )
    if model.config.num_labels != spec.num_labels:
        raise ValueError(
            f"Model {str(source)!r} has {model.config.num_labels} labels but GLUE task {spec.name!r} has "
            f"{spec.num_labels}; it was fine-tuned for another task. Pick the task it was trained on."
        )
    names = [str(model.config.id2label.get(i, "")).lower() for i in range(spec.num_labels)]
    wanted = [n.lower() for n in spec.label_names]
    if wanted and set(names) == set(wanted) and names != wanted:
        raise ValueError(
            f"Model {str(source)!r} orders its labels {names}, but GLUE task {spec.name!r} uses ids "
            f"{wanted} (the hub's nyu-mll/glue). Its predictions would be scored against the wrong "
            "labels; remap the classifier rows or use a model trained with the hub's label ids."
        )
