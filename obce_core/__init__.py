"""obce: explain and compress BERT-family models with zero-dimensional persistent homology.

The engine behind the dashboard and the CLI (``python -m obce_core``). It never imports
streamlit. Central names: ``load_model``, ``score_model`` -> ``NeuronScores``,
``zero_dim_persistence`` / ``rf`` / ``rf_batch``, ``PruningPlan`` and ``prune``.
"""

from obce_core.scoring import COMPONENTS, PRUNABLE_COMPONENTS, TOKEN_MODES, Activations, MemoryBudgetError, capture_activations
from obce_core.loading import DEFAULT_MODEL_NAME, ModelLoadError, default_model_dir, load_model, model_fingerprint
from obce_core.persistence import merge_events, persistence_diagram, rf, rf_batch, zero_dim_persistence
from obce_core.scoring import NeuronScores, ScoreSettings, ScoresFileError, score_model
from obce_core.obce_bert import ObceBertConfig, ObceBertForSequenceClassification, ObceBertModel  # registers obce_bert
from obce_core.pruning import (
    PruningPlan,
    PruningReport,
    PruningSelection,
    build_report,
    capture_calibration,
    load_plan,
    prune,
    ranking_stability,
    save_pruned,
    select_units,
)
# GLUE fine-tuning, task models and the comparison protocols. Jobs and the results store live in
# ``obce_core.jobs`` and ``obce_core.results`` (not imported here: ``python -m obce_core.jobs`` is
# the worker's entry point).
from obce_core.training import (
    Recipe,
    RunResult,
    TaskModelInfo,
    TrainingCancelled,
    evaluate,
    fine_tune,
    finetune_task_model,
    list_task_models,
    read_task_model_info,
    run_finetuned_protocol,
    run_paper_protocol,
)

__all__ = [
    "COMPONENTS",
    "PRUNABLE_COMPONENTS",
    "TOKEN_MODES",
    "DEFAULT_MODEL_NAME",
    "Activations",
    "MemoryBudgetError",
    "ModelLoadError",
    "NeuronScores",
    "ScoreSettings",
    "ScoresFileError",
    "capture_activations",
    "default_model_dir",
    "load_model",
    "merge_events",
    "model_fingerprint",
    "persistence_diagram",
    "rf",
    "rf_batch",
    "score_model",
    "zero_dim_persistence",
    "ObceBertConfig",
    "ObceBertModel",
    "ObceBertForSequenceClassification",
    "PruningPlan",
    "PruningReport",
    "PruningSelection",
    "build_report",
    "capture_calibration",
    "load_plan",
    "prune",
    "ranking_stability",
    "save_pruned",
    "select_units",
    "Recipe",
    "RunResult",
    "TaskModelInfo",
    "TrainingCancelled",
    "evaluate",
    "fine_tune",
    "finetune_task_model",
    "list_task_models",
    "read_task_model_info",
    "run_finetuned_protocol",
    "run_paper_protocol",
]
