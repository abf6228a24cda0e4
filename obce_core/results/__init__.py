"""Results: the SQLite store of GLUE runs (``store``) and the tables that compare them (``tables``).

``ResultsStore`` keeps one row per run (one model evaluated on one task), keyed so that a run
already stored is answered without training. ``quarantine_store`` moves a damaged store aside.
``comparison_table`` and ``comparisons`` turn stored runs into side-by-side comparisons;
``latency_table`` sets their forward-pass times side by side.
"""

from obce_core.results.store import STORE_FILE, ResultsStore, ResultsStoreError, quarantine_store
from obce_core.results.tables import ROLES, comparison_table, comparisons, latency_table

__all__ = [
    "ROLES",
    "STORE_FILE",
    "ResultsStore",
    "ResultsStoreError",
    "comparison_table",
    "comparisons",
    "latency_table",
    "quarantine_store",
]
