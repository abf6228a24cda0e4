"""obce: explain and compress BERT-family models with zero-dimensional persistent homology.

The engine behind the dashboard and the CLI (``python -m obce_core``). It never imports
streamlit. Central names: ``load_model``, ``score_model`` -> ``NeuronScores``,
``zero_dim_persistence`` / ``rf`` / ``rf_batch``, ``PruningPlan`` and ``prune``.
"""

from obce_core import registration
from obce_core.lazy import lazy_exports

# Each public name -> the module that defines it, imported on first use (obce_core.lazy): the command
# line's `--help` and `import obce_core` stay free of torch and transformers (seconds of imports).
_EXPORTS = {
    "obce_core.scoring": ("COMPONENTS", "PRUNABLE_COMPONENTS", "TOKEN_MODES", "Activations", "MemoryBudgetError",
                          "capture_activations", "NeuronScores", "ScoreSettings", "ScoresFileError", "score_model"),
    "obce_core.loading": ("DEFAULT_MODEL_NAME", "ModelLoadError", "default_model_dir", "load_model", "model_fingerprint"),
    "obce_core.persistence": ("merge_events", "persistence_diagram", "rf", "rf_batch", "zero_dim_persistence"),
    "obce_core.obce_bert": ("ObceBertConfig", "ObceBertForSequenceClassification", "ObceBertModel"),
    "obce_core.pruning": ("PruningPlan", "PruningReport", "PruningSelection", "build_report", "capture_calibration",
                          "load_plan", "prune", "ranking_stability", "save_pruned", "select_units"),
    # GLUE fine-tuning, task models and the comparison protocols. Jobs and the results store live in
    # ``obce_core.jobs`` and ``obce_core.results`` (``python -m obce_core.jobs`` is the worker's entry point).
    "obce_core.training": ("Recipe", "RunResult", "TaskModelInfo", "TrainingCancelled", "evaluate", "fine_tune",
                           "finetune_task_model", "list_task_models", "read_task_model_info", "run_finetuned_protocol",
                           "run_paper_protocol"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# A saved pruned model (model_type obce_bert) loads through transformers' Auto classes and
# SentenceTransformer once transformers loads them (obce_core.registration).
registration.install()

__all__ = [name for names in _EXPORTS.values() for name in names]
