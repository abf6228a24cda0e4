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

from obce_core.search.algorithm import DEFAULT_LEVELS, SearchResult, SearchSettings, best_row, search_plan
from obce_core.search.measure import measure_plan, task_loss, task_metrics
from obce_core.search.cost import COST_LABELS, COSTS, PlanCost, measure_latency_table
from obce_core.search.bound import DEFAULT_CONFIDENCE, PairedBootstrap, PairedDrop
from obce_core.search.report import SEARCH_REPORT_FILE, SearchReport, read_search_report
from obce_core.search.splits import SEARCH_SPLIT_LABELS, SEARCH_SPLITS, choose_search_data, read_search_data
from obce_core.search.task_search import search_task_model

__all__ = [
    "COSTS",
    "COST_LABELS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_LEVELS",
    "PairedBootstrap",
    "PairedDrop",
    "PlanCost",
    "SEARCH_REPORT_FILE",
    "SEARCH_SPLITS",
    "SEARCH_SPLIT_LABELS",
    "SearchReport",
    "SearchResult",
    "SearchSettings",
    "best_row",
    "choose_search_data",
    "measure_latency_table",
    "measure_plan",
    "read_search_data",
    "read_search_report",
    "search_plan",
    "search_task_model",
    "task_loss",
    "task_metrics",
]
