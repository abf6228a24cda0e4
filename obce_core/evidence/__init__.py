"""Evidence for choosing a threshold: what a pruning plan costs a task model, without retraining.

* ``evaluation``: a task's dev split tokenized once (``EncodedSplit``) and scored by plain forward
  passes in length-sorted batches: the same metrics as ``obce_core.training.evaluate`` (which runs
  through Hugging Face ``Trainer``), several times faster, with a bootstrap interval for subsets.
* ``sweep``: ``threshold_sweep`` evaluates ``prune(model, scores, plan)`` for every (group,
  percentile, scorer, seed) on the dev split; rows are cached on disk as they finish, so a
  cancelled sweep keeps them and a later one resumes. ``evaluate_plan`` is one such row, for the
  Prune page's current plan.
* ``parallel``: ``PlanPool``, worker processes (one per GPU, or N CPU workers) that evaluate
  independent plans at once, for sweeps (``threshold_sweep(..., workers=N)``) and searches.
* ``task_sweep``: ``sweep_task_model``, the sweep of a saved task model from its directory (scores
  of its task's training sentences, calibration, dev split): what the CLI's ``sweep`` command and
  the "sweep" job run; ``task_scores`` (the scores a sweep or search ranks with, Fisher included
  when asked for); ``score_plan`` (one plan with its bootstrap interval, for the Prune page), ``sweep_summary``
  (mean ± std over seeds) and ``task_model_problem``.
* ``embedding``, ``embedding_sweep``, ``pairs``: label-free evidence for any model (head or not):
  its own sentence output on held-out texts, pruned vs original (cosine, similarity structure,
  neighbours kept), the zero-shot Spearman on labelled sentence pairs, and their sweep over
  percentiles (``sweep_encoder``: what ``sweep`` runs for a model without a task head).
"""

from obce_core.lazy import lazy_exports

# Each name -> its module, imported on first use (obce_core.lazy): the command line's parser imports
# obce_core.evidence.cli without loading torch.
_EXPORTS = {
    "obce_core.evidence.evaluation": ("EncodedSplit", "ScoreInterval", "encode_split", "evaluate_encoded",
                                      "predict_logits", "score_interval"),
    "obce_core.evidence.parallel": ("PlanPool", "WorkerError", "default_devices"),
    "obce_core.evidence.sweep": ("SWEEP_GROUPS", "SWEEP_SCORERS", "evaluate_plan", "largest_safe_percentile",
                                 "read_sweep", "sweep_cache_path", "sweep_plan", "threshold_sweep"),
    "obce_core.evidence.task_sweep": ("CALIBRATED_COMPENSATIONS", "TaskSweep", "score_plan", "sweep_summary",
                                      "sweep_task_model", "task_model_problem", "task_scores", "training_texts"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [name for names in _EXPORTS.values() for name in names]
