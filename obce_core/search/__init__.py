"""The smallest plan within a tolerance: a budgeted search over per-layer, per-group percentiles.

* ``cost``: what a plan costs (``PlanCost``: encoder FLOPs per token, parameters, or latency
  estimated from measurements), in closed form from the layer shapes.
* ``algorithm``: ``search_plan`` over one task model, its scores and an encoded SEARCH split of
  training examples (``SearchSettings`` in, ``SearchResult`` out; every evaluated plan is a row).
* ``task_search``: ``search_task_model``, from a task model's folder to an output folder with the
  pruned model, ``plan.json`` and ``search_report.json`` (``SearchReport``); what the CLI's
  ``search`` command and the dashboard's search job run.
"""

from obce_core.search.algorithm import DEFAULT_LEVELS, SearchResult, SearchSettings, best_row, search_plan
from obce_core.search.measure import measure_plan, task_loss, task_metrics
from obce_core.search.cost import COST_LABELS, COSTS, PlanCost, measure_latency_table
from obce_core.search.task_search import SEARCH_REPORT_FILE, SearchReport, read_search_report, search_task_model

__all__ = [
    "COSTS",
    "COST_LABELS",
    "DEFAULT_LEVELS",
    "PlanCost",
    "SEARCH_REPORT_FILE",
    "SearchReport",
    "SearchResult",
    "SearchSettings",
    "best_row",
    "measure_latency_table",
    "measure_plan",
    "read_search_report",
    "search_plan",
    "search_task_model",
    "task_loss",
    "task_metrics",
]
