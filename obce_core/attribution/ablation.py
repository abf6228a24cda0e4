"""The exact effect of removing one unit alone, on a seeded sample of units: what checks the IG.

``ablation_effect`` of unit ``u`` = ``L(every unit kept but u) - L(every unit kept)``, the mean loss
of the objective with ``u``'s mask at 0 (``pruning.unit_masks``: the same model ``prune`` makes
when it removes ``u`` alone with no compensation) minus the unmasked model's. Higher = the model
loses more without it, the direction of the attribution. It costs one pass over the examples per
unit, so it is measured on a sample: ``sample_units`` draws the same number from every (layer,
group), seeded.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from obce_core.attribution.integrated import masked_mean_loss
from obce_core.layout import GROUPS
from obce_core.pruning.unit_masks import group_widths
from obce_core.validation import check_int

__all__ = ["ablation_effects", "sample_units"]


def sample_units(model, n: int, seed: int = 0) -> pd.DataFrame:
    """``layer, group, unit`` of about ``n`` units: ``ceil(n / groups)`` from every (layer, group) (all
    of a smaller group), drawn with ``numpy.random.default_rng([seed, layer, group])``; 0 gives none."""
    check_int(n, "ablation_units", "sample_units", low=0, fix="0 skips the exact check; 36 is the default.")
    check_int(seed, "seed", "sample_units", low=0)
    widths = group_widths(model)
    per = -(-n // (len(widths) * len(GROUPS))) if n else 0
    rows = []
    for layer, w in enumerate(widths):
        for gi, group in enumerate(GROUPS):
            take = min(per, w[group])
            units = np.sort(np.random.default_rng([seed, layer, gi]).choice(w[group], size=take, replace=False))
            rows += [(layer, group, int(u)) for u in units]
    return pd.DataFrame(rows, columns=["layer", "group", "unit"]).astype({"layer": np.int64, "unit": np.int64})


def ablation_effects(model, objective, units: pd.DataFrame, *, baseline: float | None = None,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``L(without u) - L(all kept)`` for each row ``(layer, group, unit)`` of ``units``, in row order.

    ``baseline`` is ``L(all kept)`` when the caller already has it (``masked_mean_loss(..., [1.0])``).
    """
    widths = group_widths(model)
    settings = []
    for layer, group, unit in units[["layer", "group", "unit"]].itertuples(index=False):
        mask = torch.ones(widths[int(layer)][group])
        mask[int(unit)] = 0.0
        settings.append({(int(layer), str(group)): mask})
    if baseline is None:
        settings.insert(0, 1.0)
    losses = masked_mean_loss(model, objective, settings, progress=progress)
    if baseline is None:
        baseline, losses = losses[0], losses[1:]
    return np.asarray(losses, dtype=np.float64) - float(baseline)
