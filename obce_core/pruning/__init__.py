"""Pruning BERT by per-neuron scores, one concept per module.

The steps are separate so a dashboard can move a slider without touching the model:

- ``plan``: ``PruningPlan``, what to remove (a percentile per group, per-layer overrides, scorer,
  compensation); it checks itself and round-trips through JSON.
- ``importance``: the scorers (rf, std, magnitude, flap, fisher, random), each an object returning
  one score per unit of a group, registered by name.
- ``fisher``: ``fisher_information`` (Kwon et al. 2022's squared mask gradients on labelled
  examples) and ``add_fisher``, which puts it into a scores table for the ``fisher`` scorer.
- ``unit_masks``: a mask on every unit's output through forward hooks (what Fisher differentiates
  and ``obce_core.attribution`` integrates along).
- ``selection``: ``select_units(scores, plan, model) -> PruningSelection``, which units each layer
  keeps: ranks and cuts only. Every pruned/kept verdict comes from here.
- ``report``: ``build_report(model, selection) -> PruningReport`` (parameters, bytes, kept units,
  estimated FLOPs, in closed form) and ``layer_shapes(model)``, the per-layer sizes.
- ``calibration``: ``capture_calibration``, the inputs of the layers that read pruned units,
  captured once from the scoring texts (what ``token-mean``, ``lsq`` and ``auto`` fit with).
- ``compensation``: what replaces removed units (none, token-mean, cls-mean, cls-mean-std, lsq)
  and ``auto``'s per-layer choice on held-out tokens.
- ``surgery``: ``prune(model, scores, plan, calibration=...) -> (pruned_model, report)``, slicing
  and writing the compensation.
- ``hidden_stream``: ``capture_stream``, the residual stream on the scoring texts (what ranks
  hidden dims and fits the narrowed LayerNorms); ``hidden``: the hidden-dim surgery
  (``PruningPlan(hidden=P)``), which ``prune`` runs after the unit surgery; ``rebuild``: a model
  built around a sliced state dict (both surgeries).
- ``domain``: ``domain_shift``, the same comparison across two text sources beside two halves of
  one (domain shift told apart from sampling noise); ``text_source`` reads ``demo``,
  ``glue:TASK`` or a file.
- ``stability``: ``ranking_stability``, how much of a scorer's ranking survives a change of texts.
- ``files``: ``save_pruned`` / ``load_plan``, a pruned model as one directory on disk.
- ``cache``: caches kept on the model or scores object they describe.
"""

from obce_core.lazy import lazy_exports

# Each name -> its module, imported on first use (obce_core.lazy): the command line's parser imports
# obce_core.pruning.cli without loading torch.
_EXPORTS = {
    "obce_core.pruning.calibration": ("DEFAULT_LSQ_DAMPINGS", "Calibration", "capture_calibration"),
    "obce_core.pruning.compensation": ("AUTO_CANDIDATES", "COMPENSATION_ALIASES", "COMPENSATIONS",
                                       "CompensationWarning", "LayerCompensation"),
    "obce_core.pruning.fisher": ("FISHER_COLUMN", "add_fisher", "fisher_fingerprint", "fisher_information"),
    "obce_core.pruning.files": ("PLAN_FILE", "REPORT_FILE", "is_obce_saved", "load_plan", "save_pruned"),
    "obce_core.layout": ("GROUPS", "layer_shapes"),
    "obce_core.pruning.importance": ("IMPORTANCES", "Importance", "UnitScores", "make_importance",
                                     "register_importance"),
    "obce_core.pruning.plan": ("SCORERS", "PruningPlan", "n_removed"),
    "obce_core.pruning.report": ("DEFAULT_FLOPS_SEQ_LEN", "PruningReport", "build_report"),
    "obce_core.pruning.selection": ("PruningSelection", "select_units"),
    "obce_core.pruning.hidden_stream": ("HIDDEN_NORMS", "HIDDEN_SCORERS", "HiddenStream", "capture_stream"),
    "obce_core.pruning.stability": ("ranking_stability",),
    "obce_core.pruning.surgery": ("prune",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [name for names in _EXPORTS.values() for name in names]
