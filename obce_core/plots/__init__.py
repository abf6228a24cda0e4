"""Plotly figures for obce, one module per figure family; every builder returns a
``plotly.graph_objects.Figure`` and never shows it, and nothing here imports streamlit.

- ``style``: the shared colours (one per component, pruning group, homology dimension, model role).
- ``neuron``: one neuron's persistence diagram, barcode and outputs with the largest gap, and a
  text's tokens shaded by its output.
- ``scores``: rf over layers and components, one group's neurons by rank, the summary heatmap.
- ``teaching``: the Learn page's point cloud with balls and components.
- ``pruning``: the units a plan keeps, in place, and the share kept per layer.
- ``results``: original vs pruned scores per task and the score/size trade-off.
- ``evidence``: the threshold sweep's task score against the percentile, per group and scorer.
- ``topology``: every layer's H0/H1 diagrams, a layer's cloud and bottleneck distances per layer.
"""

from obce_core.plots.evidence import sweep_curves_figure
from obce_core.plots.neuron import barcode_figure, diagram_figure, token_highlight_html, values_strip_figure
from obce_core.plots.pruning import kept_per_layer_figure, pruning_units_figure
from obce_core.plots.results import comparison_bar_figure, tradeoff_figure
from obce_core.plots.search import search_drop_figure, search_front_figure
from obce_core.plots.scores import rf_distribution_figure, rf_rank_figure, summary_heatmap
from obce_core.plots.style import (
    CLUSTER_COLORS,
    COMPONENT_COLORS,
    DIMENSION_COLORS,
    GROUP_COLORS,
    HIGHLIGHT_COLOR,
    REMOVED_COLOR,
    ROLE_COLORS,
    SCORER_COLORS,
)
from obce_core.plots.teaching import learn_figure

__all__ = [
    "CLUSTER_COLORS",
    "COMPONENT_COLORS",
    "DIMENSION_COLORS",
    "GROUP_COLORS",
    "HIGHLIGHT_COLOR",
    "REMOVED_COLOR",
    "ROLE_COLORS",
    "SCORER_COLORS",
    "barcode_figure",
    "search_drop_figure",
    "search_front_figure",
    "comparison_bar_figure",
    "diagram_figure",
    "kept_per_layer_figure",
    "learn_figure",
    "pruning_units_figure",
    "rf_distribution_figure",
    "rf_rank_figure",
    "summary_heatmap",
    "sweep_curves_figure",
    "token_highlight_html",
    "tradeoff_figure",
    "values_strip_figure",
]
