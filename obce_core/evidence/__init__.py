"""Evidence for choosing a threshold: what a pruning plan costs a task model, without retraining.

* ``evaluation``: a task's dev split tokenized once (``EncodedSplit``) and scored by plain forward
  passes in length-sorted batches: the same metrics as ``obce_core.training.evaluate`` (which runs
  through Hugging Face ``Trainer``), several times faster, with a bootstrap interval for subsets.
* ``sweep``: ``threshold_sweep`` evaluates ``prune(model, scores, plan)`` for every (group,
  percentile, scorer, seed) on the dev split; rows are cached on disk as they finish, so a
  cancelled sweep keeps them and a later one resumes. ``evaluate_plan`` is one such row, for the
  Prune page's current plan.
"""

from obce_core.evidence.evaluation import EncodedSplit, ScoreInterval, encode_split, evaluate_encoded, predict_logits, score_interval
from obce_core.evidence.sweep import SWEEP_GROUPS, SWEEP_SCORERS, evaluate_plan, largest_safe_percentile, sweep_plan, threshold_sweep

__all__ = [
    "EncodedSplit",
    "ScoreInterval",
    "SWEEP_GROUPS",
    "SWEEP_SCORERS",
    "encode_split",
    "evaluate_encoded",
    "evaluate_plan",
    "largest_safe_percentile",
    "predict_logits",
    "score_interval",
    "sweep_plan",
    "threshold_sweep",
]
