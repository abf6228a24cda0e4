"""The smallest plan within a tolerance: a budgeted search over per-layer, per-group percentiles.

* ``cost``: what a plan costs (``PlanCost``: encoder FLOPs per token, parameters, or latency
  estimated from measurements), in closed form from the layer shapes.
* ``algorithm``: ``search_plan`` over one task model, its scores and an encoded SEARCH split
  (examples it never trained on) (``SearchSettings`` in, ``SearchResult`` out; every evaluated plan is a row).
* ``bound``: ``PairedBootstrap``, the paired bootstrap of a pruned model's drop against the
  original on the same examples; a plan is within the tolerance when its upper bound is.
* ``splits``: ``choose_search_data``, the examples a search judges on: the held-out part of the
  training split, a labelled file, or one seeded half of dev; never examples the model trained on.
* ``report``: ``SearchReport`` (``search_report.json``) and ``bound_note``.
* ``task_search``: ``search_task_model``, from a task model's folder to an output folder with the
  pruned model, ``obce_plan.json`` and ``search_report.json`` (``SearchReport``); what the CLI's
  ``search`` command and the dashboard's search job run.
"""

from obce_core.lazy import lazy_exports

# Each name -> its module, imported on first use (obce_core.lazy): the command line's parser imports
# obce_core.search.cli without loading torch.
_EXPORTS = {
    "obce_core.search.algorithm": ("DEFAULT_LEVELS", "SearchResult", "SearchSettings", "best_row", "search_plan"),
    "obce_core.search.measure": ("measure_plan", "task_loss", "task_metrics"),
    "obce_core.search.cost": ("COST_LABELS", "COSTS", "PlanCost", "measure_latency_table"),
    "obce_core.search.bound": ("DEFAULT_CONFIDENCE", "PairedBootstrap", "PairedDrop"),
    "obce_core.search.report": ("SEARCH_REPORT_FILE", "SearchReport", "read_search_report"),
    "obce_core.search.splits": ("SEARCH_SPLIT_LABELS", "SEARCH_SPLITS", "choose_search_data", "read_search_data"),
    "obce_core.search.task_search": ("search_task_model",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [name for names in _EXPORTS.values() for name in names]
