"""``Recipe``: how a model is fine-tuned and evaluated, its named presets, and a training-time estimate.

Presets (``RECIPE_PRESETS``), named for what they are:

* ``bert-glue``: BERT's GLUE recipe (Devlin et al. 2019): 128 tokens, batch 32, lr 2e-5, 3 epochs.
  It is NOT the OBCE paper's recipe, which fine-tunes for 40 epochs.
* ``obce-40``: the OBCE paper's 40 epochs on top of ``bert-glue``; sized for a GPU.
* ``cpu-<task>``: per-task recipes that make the embedded all-MiniLM-L6-v2 clearly learn the task
  on a 2-core CPU in under 15 minutes. Chosen by a multi-seed search of obce's own training code
  on a GPU (``benchmarks/recipe_search.py``), then trained and timed on the CPU
  (``benchmarks/RESULTS.md``).
  ``cpu`` alone names the CPU preset of the task at hand (``resolve_preset``).
* ``cpu-generic``: the CPU preset of every task without its own (STS-B, QQP, MNLI, QNLI), sized
  per task from its training-set size (``generic_cpu_sizing``): fewer epochs, then a seeded
  training subset, so the ESTIMATED fine-tune stays within 15 minutes on the 2-core CPU.
* ``smoke``: seconds; checks that everything runs and measures nothing.
* ``recover``: recovering a PRUNED model from its teacher (``finetune --model PRUNED --teacher
  TASK_MODEL``'s default): the task's CPU preset at ``RECOVERY_LR_SHARE`` of its learning rate (a
  model that starts near its teacher is pushed away by a from-scratch lr: 1e-4 collapsed MRPC),
  logit plus hidden-state distillation (``RECOVERY_KD``), the held-out reserve scored every
  ``eval_steps`` with the best checkpoint kept and early stopping; epochs cut so that the
  ESTIMATED training fits ``RECOVERY_BUDGET_S`` (``recovery_fields``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from obce_core import glue
from obce_core.io import JsonDataclass
# The names a user picks (CPU_PRESET, RECOVERY_PRESET, PRESET_CHOICES: CPU_PRESET, RECIPE_PRESETS' keys,
# RECOVERY_PRESET) are defined without torch for the CLI's parser.
from obce_core.choices import CLASSIFIER_POOLINGS, CPU_PRESET, PRECISIONS, PRESET_CHOICES, RECOVERY_PRESET
from obce_core.training.held_out import held_out_size
from obce_core.validation import check_choice, check_int, check_number, invalid

__all__ = [
    "CPU_PRESET",
    "CPU_SECONDS_PER_STEP",
    "GENERIC_CPU_BUDGET_S",
    "GENERIC_CPU_PRESET",
    "GENERIC_EVAL_SIZE",
    "PRECISIONS",
    "PRESET_CHOICES",
    "PRESET_DESCRIPTIONS",
    "RECIPE_PRESETS",
    "Recipe",
    "cpu_preset_name",
    "cpu_seconds_per_step",
    "estimate_training",
    "generic_cpu_sizing",
    "preset_fields",
    "resolve_preset",
    "subset_note",
]

# The CPU preset of tasks without their own; sized per task (generic_cpu_sizing).
GENERIC_CPU_PRESET = "cpu-generic"
# cpu-generic's training budget: the ESTIMATED fine-tune time; the rest of 15 minutes is left for
# loading, tokenizing and the dev evaluation.
GENERIC_CPU_BUDGET_S = 12 * 60
# cpu-generic scores larger dev splits (QQP 40k, MNLI 2 x 9.8k, QNLI 5.5k) on a seeded subset of this size.
GENERIC_EVAL_SIZE = 2000

_CPU = {"warmup_ratio": 0.1, "group_by_length": True}
RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    # BERT's GLUE recipe (Devlin et al. 2019): 128 tokens, batch 32, lr 2e-5, 3 epochs. Not the
    # OBCE paper's recipe (40 epochs, below).
    "bert-glue": {},
    # The OBCE paper fine-tunes for 40 epochs; otherwise bert-glue. Hours per task: a GPU recipe.
    "obce-40": {"epochs": 40.0},
    # Per-task CPU recipes for all-MiniLM-L6-v2: each the best mean over seeds of a multi-seed GPU
    # search of obce's own training code (benchmarks/recipe_search.py), then trained and timed on
    # the 2-core CPU (benchmarks/RESULTS.md). Length-grouped batches pad less, which is what lets
    # the whole SST-2 split and 8 RTE epochs fit 15 minutes; all-MiniLM was trained mean-pooled
    # and learns every task at least as well with a mean-pooled head.
    "cpu-sst2": {**_CPU, "max_length": 64, "epochs": 1.0, "learning_rate": 1e-4, "batch_size": 32,
                 "warmup_ratio": 0.06, "pooling": "mean"},
    "cpu-cola": {**_CPU, "max_length": 64, "epochs": 6.0, "learning_rate": 5e-5, "batch_size": 32, "pooling": "mean"},
    "cpu-mrpc": {**_CPU, "max_length": 128, "epochs": 5.0, "learning_rate": 1e-4, "batch_size": 16, "pooling": "mean"},
    "cpu-rte": {**_CPU, "max_length": 128, "epochs": 8.0, "learning_rate": 3e-5, "batch_size": 16, "pooling": "mean"},
    # WNLI is adversarial (dev pairs contradict train pairs); BERT does not beat the majority class
    # on it either, so three epochs of a pair recipe are as good as more.
    "cpu-wnli": {**_CPU, "max_length": 128, "epochs": 3.0, "learning_rate": 5e-5, "batch_size": 16, "pooling": "cls"},
    # Tasks without their own preset: the pair-task settings the per-task searches landed on (128
    # tokens, batch 16, a mean-pooled head, lr inside their 3e-5..1e-4 range), NOT searched for these
    # tasks. Epochs and a training subset are sized per task (generic_cpu_sizing); a regression
    # task (STS-B) gets one output trained with MSE, like any classifier with num_labels=1.
    "cpu-generic": {**_CPU, "max_length": 128, "epochs": 3.0, "learning_rate": 5e-5, "batch_size": 16,
                    "pooling": "mean"},
    # Seconds: checks that everything runs, measures nothing.
    "smoke": {"max_length": 64, "max_steps": 20, "learning_rate": 5e-5, "train_size": 256, "eval_size": 128},
}
# Recovery of a pruned model from its teacher (see the module docstring): a share of the CPU preset's lr,
# the teacher's logits (weight 0.7) and every layer's hidden states (MSE, weight 1), early stopping on
# the held-out reserve after 3 evaluations without gain, and an estimated training time of at most 10
# minutes (the teacher's forward pass counted as RECOVERY_TEACHER_COST of a student step).
RECOVERY_LR_SHARE = 0.3
RECOVERY_KD = {"kd_alpha": 0.7, "kd_temperature": 2.0, "kd_hidden": 1.0, "early_stopping_patience": 3,
               "warmup_ratio": 0.1}
RECOVERY_BUDGET_S = 10 * 60
RECOVERY_TEACHER_COST = 0.35
RECOVERY_EVALUATIONS = 8
# One line per name, for menus and help texts.
PRESET_DESCRIPTIONS: dict[str, str] = {
    CPU_PRESET: "the task's CPU preset (minutes on a 2-core CPU for all-MiniLM-L6-v2)",
    "bert-glue": "BERT's GLUE recipe: whole split, 3 epochs, 128 tokens, lr 2e-5 (GPU)",
    "obce-40": "the OBCE paper's 40 epochs on BERT's GLUE recipe (GPU, hours per task)",
    **{f"{CPU_PRESET}-{t}": f"CPU preset of {t}" for t in ("sst2", "cola", "mrpc", "rte", "wnli")},
    "cpu-generic": "CPU preset of the other tasks, sized from the training-set size to stay within ~15 min",
    "smoke": "20 steps: checks that it runs, measures nothing",
    RECOVERY_PRESET: "recovering a pruned model from its teacher: lower lr, logit + hidden-state distillation, "
                     "early stopping on the held-out reserve, ~10 min estimated",
}


def cpu_preset_name(task: str) -> str:
    """The name of the CPU preset of ``task``: its own (``cpu-sst2``), else ``cpu-generic``."""
    name = f"{CPU_PRESET}-{glue.get_task(task).name}"
    return name if name in RECIPE_PRESETS else GENERIC_CPU_PRESET


def resolve_preset(name: str, task: str | None = None) -> str:
    """A preset name with the ``cpu`` alias resolved for ``task``; ValueError for unknown names,
    and for ``cpu`` or ``cpu-generic`` without a task (both depend on it)."""
    if name in (CPU_PRESET, GENERIC_CPU_PRESET, RECOVERY_PRESET) and task is None:
        raise ValueError(f"Preset {name!r} depends on the task (its CPU preset, sized from its training set); name "
                         f"the task, or one of {', '.join(p for p in RECIPE_PRESETS if p != GENERIC_CPU_PRESET)}.")
    if name == CPU_PRESET:
        return cpu_preset_name(task)
    check_choice(name, "preset", "Recipe.preset", PRESET_CHOICES,
                 fix="bert-glue = BERT's GLUE recipe, obce-40 = the OBCE paper's 40 epochs, cpu = the task's CPU "
                     "preset, smoke = seconds.")
    return name


def preset_fields(name: str, task: str | None = None) -> dict[str, Any]:
    """The fields of preset ``name`` for ``task`` (``cpu-generic`` sized by ``generic_cpu_sizing``)."""
    name = resolve_preset(name, task)
    if name == RECOVERY_PRESET:
        return recovery_fields(task)
    sized = generic_cpu_sizing(task) if name == GENERIC_CPU_PRESET else {}
    return {**RECIPE_PRESETS[name], **sized}


def recovery_fields(task: str) -> dict[str, Any]:
    """The ``recover`` preset for ``task``: its CPU preset at ``RECOVERY_LR_SHARE`` of the lr with
    ``RECOVERY_KD``; epochs cut (to a tenth) so the ESTIMATED training, the teacher's forward pass
    included, fits ``RECOVERY_BUDGET_S``; the held-out reserve scored ``RECOVERY_EVALUATIONS`` times."""
    spec = glue.get_task(task)
    base = preset_fields(cpu_preset_name(spec.name), spec.name)
    fields = {**base, **RECOVERY_KD, "learning_rate": RECOVERY_LR_SHARE * base["learning_rate"], "eval_steps": 1}
    steps, seconds = estimate_training(Recipe(**fields), spec.name)
    seconds *= 1 + RECOVERY_TEACHER_COST
    if seconds > RECOVERY_BUDGET_S:
        fields["epochs"] = max(0.1, math.floor(10 * fields["epochs"] * RECOVERY_BUDGET_S / seconds) / 10)
        steps = estimate_training(Recipe(**fields), spec.name)[0]
    fields["eval_steps"] = max(10, math.ceil(steps / RECOVERY_EVALUATIONS))
    return fields


def generic_cpu_sizing(task: str) -> dict[str, Any]:
    """What ``cpu-generic`` changes for ``task``, from the official split sizes (``GlueTask.train_rows``,
    ``dev_rows``) and the CPU step-time estimate (``cpu_seconds_per_step``).

    Three epochs when they fit ``GENERIC_CPU_BUDGET_S``; else fewer (to a tenth, at least one); else one
    epoch of a seeded training subset that fits. A dev split above ``GENERIC_EVAL_SIZE`` examples is
    scored on a seeded subset of that size (per validation split), so evaluation stays within a minute.
    """
    spec = glue.get_task(task)
    base = RECIPE_PRESETS[GENERIC_CPU_PRESET]
    budget = int(GENERIC_CPU_BUDGET_S // cpu_seconds_per_step(Recipe(**base), spec.name))  # optimizer steps
    per_epoch = math.ceil(spec.train_rows / base["batch_size"])
    if per_epoch * base["epochs"] <= budget:
        out: dict[str, Any] = {}
    elif per_epoch <= budget:
        out = {"epochs": math.floor(10 * budget / per_epoch) / 10}
    else:
        out = {"epochs": 1.0, "train_size": budget * base["batch_size"]}
    if spec.dev_rows > GENERIC_EVAL_SIZE:
        out["eval_size"] = GENERIC_EVAL_SIZE
    return out


def subset_note(recipe: "Recipe", task: str) -> str:
    """One sentence saying which splits ``recipe`` draws a subset of for ``task`` ('' for whole splits)."""
    spec = glue.get_task(task)
    parts = []
    if recipe.train_size and recipe.train_size < spec.train_rows:
        parts.append(f"trains on a seeded {recipe.train_size:,} of the {spec.train_rows:,} training examples")
    if recipe.eval_size and recipe.eval_size < spec.dev_rows:
        several = sum(s.startswith("validation") for s in spec.splits) > 1
        parts.append(f"scores a seeded {recipe.eval_size:,} of the {spec.dev_rows:,} dev examples"
                     + (" (of each validation split)" if several else ""))
    return f"Sub-sampled: {' and '.join(parts)}." if parts else ""


# Fields added after results were stored, with the value every earlier recipe trained with.
_FIELDS_ADDED_LATER = {"pooling": "cls", "group_by_length": False, "kd_temperature": 2.0, "kd_alpha": 0.5,
                       "kd_teacher": None, "held_out": 0.0, "held_out_max": 2000, "kd_hidden": 0.0, "eval_steps": 0,
                       "early_stopping_patience": 0}
# Knowledge distillation's fields: they change nothing without a teacher, so a recipe's key names them only
# when it has one (and then all of them, defaults included: a KD run's key says how it was distilled).
_KD_FIELDS = ("kd_temperature", "kd_alpha", "kd_teacher")


@dataclass(frozen=True)
class Recipe(JsonDataclass):
    """How a model is fine-tuned and evaluated. Every field is part of a result's key.

    ``epochs`` is used unless ``max_steps > 0``, which wins. ``batch_size`` is the global batch
    (split over processes under ``accelerate launch``/``torchrun``). ``warmup_ratio`` is the share
    of steps with a linear warm-up. ``train_size``/``eval_size`` draw seeded subsets (``None`` =
    the whole split) with ``glue.load_task(..., n=, seed=seed)``. ``seed`` also seeds the new task
    head, the data order and dropout. ``precision`` is ``fp32`` or mixed ``bf16``/``fp16`` (GPU).
    ``pooling`` is what a NEW task head reads: ``cls`` (BERT's pooler on [CLS]) or ``mean`` (the
    mean of the real tokens' last hidden states); a classifier that already has a head keeps its own.
    ``group_by_length`` draws training batches of similar lengths (Hugging Face's length-grouped
    sampler: random mega-batches sorted by length), which pads less: on a CPU the same examples
    train in a fraction of the time.
    ``held_out`` reserves that share of the training split (at most ``held_out_max`` examples, drawn
    with ``seed``; ``obce_core.training.held_out``) which training never reads: unseen examples to
    judge a plan search's tolerance on. 0 trains on the whole split (recipes stored before it).

    Knowledge distillation (Hinton et al. 2015), only when ``kd_teacher`` is set: ``kd_teacher``
    identifies the teacher whose logits train the model (``obce_core.training.distill``: the
    fingerprint of its weights, or of the stored run that trained it); it is filled in by the run
    that is given the teacher, not chosen by hand. The loss is ``kd_alpha * T^2 * KL(softmax(t/T) ||
    softmax(s/T)) + (1 - kd_alpha) * CE(s, y)`` with ``T = kd_temperature`` (regression: ``kd_alpha *
    MSE(s, t) + (1 - kd_alpha) * MSE(s, y)``); ``kd_alpha = 1`` learns from the teacher alone.
    ``kd_hidden`` adds that weight times the mean squared difference of every encoder layer's
    hidden states, student vs teacher (``distill.hidden_state_loss``; a pruned model keeps the
    hidden size, so no projection is needed); 0 = logits alone.

    ``eval_steps > 0`` scores the held-out reserve of the teacher (the rows its training never read,
    which the student then never trains on either) every that many steps and keeps the best
    checkpoint; ``early_stopping_patience > 0`` stops after that many scores without a gain.
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
    pooling: str = "cls"
    group_by_length: bool = False
    kd_temperature: float = 2.0
    kd_alpha: float = 0.5
    kd_teacher: str | None = None
    held_out: float = 0.1
    held_out_max: int = 2000
    kd_hidden: float = 0.0
    eval_steps: int = 0
    early_stopping_patience: int = 0

    def __post_init__(self):
        o = "Recipe"
        check_int(self.max_length, "max_length", o, low=8, high=8192,
                  fix="Tokens per example after truncation: BERT uses 128 for GLUE; 64 is a fast CPU setting.")
        check_number(self.epochs, "epochs", o, low=0, low_open=True,
                     fix="Use e.g. 3, or set max_steps > 0 to train for a fixed number of steps.")
        check_int(self.max_steps, "max_steps", o, low=0, fix="0 trains for `epochs`; or give a step count.")
        check_number(self.learning_rate, "learning_rate", o, low=0, high=1, low_open=True, high_open=True,
                     fix="BERT fine-tuning uses 2e-5 to 5e-5; small models on a CPU up to 1e-4.")
        for name in ("batch_size", "eval_batch_size"):
            check_int(getattr(self, name), name, o, low=1, fix="Use e.g. 32 for training, 64 for evaluation.")
        check_number(self.weight_decay, "weight_decay", o, low=0, fix="Use 0.01 (the usual BERT setting) or 0.")
        check_number(self.warmup_ratio, "warmup_ratio", o, low=0, high=1, high_open=True,
                     fix="The share of steps with a linear warm-up: 0 or e.g. 0.1.")
        for name in ("train_size", "eval_size"):
            check_int(getattr(self, name), name, o, low=1, allow_none=True,
                      fix="None is the whole split; otherwise the number of examples to draw.")
        check_int(self.seed, "seed", o, low=0, fix="Use e.g. 42.")
        check_choice(self.precision, "precision", o, PRECISIONS,
                     fix="Mixed precision (bf16/fp16) needs a GPU; use fp32 on the CPU.")
        check_choice(self.pooling, "pooling", o, CLASSIFIER_POOLINGS,
                     fix="'cls' reads BERT's pooler on [CLS]; 'mean' averages the real tokens (mean-pooled "
                         "encoders such as all-MiniLM-L6-v2).")
        if not isinstance(self.group_by_length, bool):
            raise invalid("group_by_length", o, "true or false", self.group_by_length,
                          fix="true draws batches of similar lengths (less padding), false random ones.")
        check_number(self.kd_temperature, "kd_temperature", o, low=0, high=100, low_open=True,
                     fix="The softmax temperature of distillation: 1 is the plain softmax; 2 to 4 is usual.")
        check_number(self.kd_alpha, "kd_alpha", o, low=0, high=1,
                     fix="The weight of the teacher's term: 1 learns from the teacher alone, 0 from the labels alone.")
        if self.kd_teacher is not None and (not isinstance(self.kd_teacher, str) or not self.kd_teacher.strip()):
            raise invalid("kd_teacher", o, "None or the teacher's fingerprint (a non-empty string)", self.kd_teacher,
                          fix="Leave it None: fine_tune / finetune_task_model fill it in from the teacher they are given.")
        check_number(self.held_out, "held_out", o, low=0, high=0.5,
                     fix="The share of the training split never trained on (kept for the plan search): 0.1, or 0 for none.")
        check_int(self.held_out_max, "held_out_max", o, low=1, fix="At most this many reserved examples, e.g. 2000.")
        check_number(self.kd_hidden, "kd_hidden", o, low=0, high=1000,
                     fix="The weight of the hidden-state MSE between student and teacher: 0 (logits alone) or e.g. 1.")
        check_int(self.eval_steps, "eval_steps", o, low=0,
                  fix="0 = no evaluation during training; else score the held-out reserve every that many steps.")
        check_int(self.early_stopping_patience, "early_stopping_patience", o, low=0,
                  fix="0 = no early stopping; else stop after that many held-out scores without a gain.")
        if self.early_stopping_patience and not self.eval_steps:
            raise invalid("early_stopping_patience", o, "0 unless eval_steps > 0", self.early_stopping_patience,
                          fix="Early stopping needs held-out scores: set eval_steps too (the recover preset does).")
        # Canonical types, so equal recipes give equal JSON (3 and 3.0 epochs are one recipe).
        for name in ("epochs", "learning_rate", "weight_decay", "warmup_ratio", "kd_temperature", "kd_alpha",
                     "held_out", "kd_hidden"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("max_length", "max_steps", "batch_size", "eval_batch_size", "seed", "held_out_max", "eval_steps",
                     "early_stopping_patience"):
            object.__setattr__(self, name, int(getattr(self, name)))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, task: str | None = None, **overrides) -> "Recipe":
        """A named recipe (``RECIPE_PRESETS``; ``cpu`` = the CPU preset of ``task``) with some fields replaced."""
        return cls(**{**preset_fields(name, task), **overrides})

    @classmethod
    def for_task(cls, task: str, **overrides) -> "Recipe":
        """The task's CPU preset (``cpu-<task>``, else ``cpu-generic`` sized for it) with some fields replaced."""
        return cls.preset(cpu_preset_name(task), task, **overrides)

    @classmethod
    def from_dict(cls, data) -> "Recipe":
        """A recipe from its dict; a field added later and missing from ``data`` (a record or store key
        written before it, or a canonical key that left it out) takes the value earlier recipes had."""
        if isinstance(data, dict):
            data = {**{k: v for k, v in _FIELDS_ADDED_LATER.items() if k not in _KD_FIELDS}, **data}
        return super().from_dict(data)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def canonical_json(self) -> str:
        """Compact JSON with sorted keys: equal recipes give equal text (the store's key).

        Fields added later are left out at the value that recipes from before them trained with
        (``_FIELDS_ADDED_LATER``), so stored results keep answering the same recipe. The
        distillation fields are left out without a teacher (they change nothing then) and all
        written with one.
        """
        distilled = self.kd_teacher is not None
        data = {k: v for k, v in self.to_dict().items()
                if (distilled and k in _KD_FIELDS)
                or (k not in _KD_FIELDS and (k not in _FIELDS_ADDED_LATER or v != _FIELDS_ADDED_LATER[k]))}
        if not distilled:  # added later than the other KD fields: named only when it distils (and is not 0)
            data.pop("kd_hidden", None)
        return json.dumps(data, sort_keys=True)

    def without_teacher(self) -> "Recipe":
        """This recipe as a plain fine-tune (no distillation): the recipe a KD run's original trained with."""
        return self.replace(kd_teacher=None, kd_hidden=0.0)

    def steps(self, examples: int) -> int:
        """Optimizer steps on ``examples`` training rows, as Trainer counts them: whole batches per
        epoch (the last one short) times the epochs; ``max_steps`` wins when set."""
        return self.max_steps or math.ceil(math.ceil(examples / self.batch_size) * self.epochs)


# Measured on this project's 2-core CPU with nothing else running (0.70 and 0.79 s in two
# sessions): ~0.75 s per optimizer step of 32 randomly drawn SST-2 examples cut at 64 tokens, for
# all-MiniLM-L6-v2; a step scales about linearly with batch x tokens. Larger models take longer.
CPU_SECONDS_PER_STEP = 0.75
# Length-grouped batches pad less, by how much depends on the task's lengths: the share of the
# random-batch time that whole CPU-preset runs took on the same machine. Other tasks: no saving assumed.
_GROUPED_SHARE = {"sst2": 0.35, "cola": 0.33, "mrpc": 0.63, "rte": 0.84}


def estimate_training(recipe: Recipe, task: str, *, runs: int = 1, extra_steps: int = 0) -> tuple[int, float]:
    """(optimizer steps per run, ESTIMATED CPU seconds for ``runs`` runs plus ``extra_steps``).

    Uses the official training-split size when ``recipe.train_size`` is None; an estimate for
    all-MiniLM on a 2-core CPU, not a measurement of the model at hand.
    """
    spec = glue.get_task(task)
    rows = spec.train_rows - held_out_size(spec.train_rows, recipe.held_out, recipe.held_out_max)
    n = min(recipe.train_size or rows, rows) if rows else (recipe.train_size or 0)
    steps = recipe.steps(n)
    return steps, (runs * steps + extra_steps) * cpu_seconds_per_step(recipe, spec.name)


def cpu_seconds_per_step(recipe: Recipe, task: str) -> float:
    """ESTIMATED seconds of one optimizer step of all-MiniLM-L6-v2 on the 2-core CPU under ``recipe``."""
    per_step = CPU_SECONDS_PER_STEP * (recipe.batch_size / 32) * (recipe.max_length / 64)
    if recipe.group_by_length:
        per_step *= _GROUPED_SHARE.get(glue.get_task(task).name, 1.0)
    return per_step
