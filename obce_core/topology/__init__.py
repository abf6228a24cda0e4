"""Topology of a model's representation, layer by layer: H0/H1 persistence diagrams with gudhi.

- ``clouds``: one forward pass with ``output_hidden_states`` gives each text's [CLS] or mean
  vector after every layer (hidden state 0 = ``embeddings``, then ``L0`` ... the encoder layers).
- ``rips``: the Vietoris-Rips diagram of one cloud, exact, capped at the enclosing radius, H1 by
  gudhi's Ripser (no triangles built) and a memory budget checked first.
- ``diagrams``: ``layer_diagrams`` -> ``LayerDiagrams`` (diagrams, clouds, summary table, .npz).
- ``distances``: bottleneck distances per dimension; consecutive-layer and original-vs-pruned tables.
- ``cli``: the ``python -m obce_core layers`` subcommand.
"""

from obce_core.topology.clouds import POOLINGS, layer_clouds, layer_name, seeded_subsample
from obce_core.topology.diagrams import DEFAULT_MAX_POINTS, LayerDiagrams, layer_diagrams
from obce_core.topology.distances import bottleneck, comparison_table, consecutive_table
from obce_core.topology.rips import METRICS, distance_matrix, enclosing_radius, rips_diagram, rips_diagram_from_distances

__all__ = [
    "DEFAULT_MAX_POINTS",
    "METRICS",
    "POOLINGS",
    "LayerDiagrams",
    "bottleneck",
    "comparison_table",
    "consecutive_table",
    "distance_matrix",
    "enclosing_radius",
    "layer_clouds",
    "layer_diagrams",
    "layer_name",
    "rips_diagram",
    "rips_diagram_from_distances",
    "seeded_subsample",
]
