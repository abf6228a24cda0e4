"""Topology of a model's representation, layer by layer: H0/H1 persistence diagrams with gudhi.

- ``clouds``: one forward pass with ``output_hidden_states`` gives each text's [CLS] or mean
  vector after every layer (hidden state 0 = ``embeddings``, then ``L0`` ... the encoder layers).
- ``rips``: the Vietoris-Rips diagram of one cloud, exact, capped at the enclosing radius, H1 by
  gudhi's Ripser (no triangles built) and a memory budget checked first.
- ``diagrams``: ``layer_diagrams`` -> ``LayerDiagrams`` (diagrams, clouds, summary table, .npz).
- ``distances``: bottleneck distances per dimension; consecutive-layer and original-vs-pruned tables.
- ``cli``: the ``python -m obce_core layers`` subcommand.
"""

from obce_core.lazy import lazy_exports

# Each name -> its module, imported on first use (obce_core.lazy): the command line's parser imports
# obce_core.topology.cli without loading torch.
_EXPORTS = {
    "obce_core.topology.clouds": ("POOLINGS", "layer_clouds", "layer_name", "seeded_subsample"),
    "obce_core.topology.diagrams": ("DEFAULT_MAX_POINTS", "LayerDiagrams", "layer_diagrams"),
    "obce_core.topology.distances": ("bottleneck", "comparison_table", "consecutive_table"),
    "obce_core.topology.rips": ("METRICS", "distance_matrix", "enclosing_radius", "rips_diagram",
                                "rips_diagram_from_distances"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [name for names in _EXPORTS.values() for name in names]
