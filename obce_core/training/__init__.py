"""Training: how a model is fine-tuned (``recipe``), the fine-tune and evaluation themselves
(``trainer``), the two OBCE comparison protocols (``protocols``), task models saved as classifier
directories (``task_models``), recovery by knowledge distillation from a teacher task model
(``distill``), and what all of them report while they run (``progress``).

``Recipe`` drives everything; ``fine_tune`` and ``evaluate`` use Hugging Face ``Trainer`` so the
same code runs on a CPU, a GPU or several. ``run_paper_protocol`` prunes a pre-trained encoder
and fine-tunes original and pruned alike; ``run_finetuned_protocol`` prunes a classifier already
fine-tuned on the task. ``finetune_task_model`` makes such a classifier.
"""

from obce_core.training.distill import hidden_state_loss, kd_loss, load_teacher, run_teacher_id, teacher_fingerprint
from obce_core.training.progress import (
    PhaseEvent,
    Progress,
    ProgressEvent,
    ResultEvent,
    ShouldStop,
    StepEvent,
    TrainingCancelled,
    is_main_process,
)
from obce_core.training.protocols import (
    PROTOCOLS,
    RECOVER_PROTOCOL,
    RunResult,
    run_finetuned_protocol,
    run_paper_protocol,
)
from obce_core.training.recipe import (
    CPU_PRESET,
    CPU_SECONDS_PER_STEP,
    PRECISIONS,
    PRESET_CHOICES,
    PRESET_DESCRIPTIONS,
    RECIPE_PRESETS,
    GENERIC_CPU_PRESET,
    Recipe,
    cpu_preset_name,
    estimate_training,
    generic_cpu_sizing,
    resolve_preset,
    subset_note,
)
from obce_core.training.task_models import (
    TASK_MODEL_FILE,
    TaskModelInfo,
    finetune_task_model,
    list_task_models,
    load_held_out,
    read_task_model_info,
    task_model_info,
)
from obce_core.training.trainer import evaluate, fine_tune, head_fingerprint, measure_latency, parameter_counts

__all__ = [
    "CPU_PRESET",
    "CPU_SECONDS_PER_STEP",
    "GENERIC_CPU_PRESET",
    "PRECISIONS",
    "PRESET_CHOICES",
    "PRESET_DESCRIPTIONS",
    "PROTOCOLS",
    "RECIPE_PRESETS",
    "RECOVER_PROTOCOL",
    "TASK_MODEL_FILE",
    "PhaseEvent",
    "Progress",
    "ProgressEvent",
    "Recipe",
    "ResultEvent",
    "RunResult",
    "ShouldStop",
    "StepEvent",
    "TaskModelInfo",
    "TrainingCancelled",
    "cpu_preset_name",
    "estimate_training",
    "evaluate",
    "fine_tune",
    "finetune_task_model",
    "load_held_out",
    "head_fingerprint",
    "is_main_process",
    "hidden_state_loss",
    "kd_loss",
    "load_teacher",
    "list_task_models",
    "measure_latency",
    "parameter_counts",
    "read_task_model_info",
    "task_model_info",
    "resolve_preset",
    "generic_cpu_sizing",
    "subset_note",
    "run_finetuned_protocol",
    "run_paper_protocol",
    "run_teacher_id",
    "teacher_fingerprint",
]
