"""Does the model use what a scorer ranks high? Attribution of every prunable unit, one concept per module.

- ``objective``: what is explained: a task model's loss on labelled examples (``TaskObjective``,
  ``task_objective``), or, for a model without a head, ``1 - cosine`` of its sentence output to the
  unmasked model's (``SentenceObjective``).
- ``integrated``: integrated gradients of that loss with respect to a mask on every FFN unit, value
  dim and query/key pair, all masks scaled together from 0 to 1 (``integrated_gradients``), and the
  loss under given masks (``masked_mean_loss``). The masks are ``pruning.unit_masks``, Fisher's.
- ``ablation``: the exact loss change when one unit alone is removed, on a seeded sample (the check).
- ``table``: ``unit_attribution``, one row per unit, cached on disk; ``read_attribution``.
- ``agreement``: every scorer's scores beside the attribution (``with_scorers``) and, per layer and
  group, Spearman with a bootstrap interval and the removed units' share in the attribution's
  lowest part (``agreement_table``).
- ``cli``: ``python -m obce_core attribution``.
"""

from obce_core.lazy import lazy_exports

# Each name -> its module, imported on first use (obce_core.lazy): the command line's parser imports
# obce_core.attribution.cli without loading torch.
_EXPORTS = {
    "obce_core.attribution.ablation": ("ablation_effects", "sample_units"),
    "obce_core.attribution.agreement": ("AGREEMENT_COLUMNS", "agreement_table", "scorer_problems",
                                        "spearman_interval", "with_scorers"),
    "obce_core.attribution.integrated": ("IntegratedGradients", "integrated_gradients", "masked_mean_loss",
                                         "path_points"),
    "obce_core.attribution.objective": ("MIN_EXAMPLES", "SentenceObjective", "TaskObjective",
                                        "check_example_count", "task_objective"),
    "obce_core.attribution.table": ("AttributionSettings", "default_attribution_dir", "read_attribution",
                                    "unit_attribution", "write_attribution"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [name for names in _EXPORTS.values() for name in names]
