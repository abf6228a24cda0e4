"""Integrated gradients of a loss with respect to a mask on every prunable unit, in one sweep.

Every unit ``u`` gets a mask ``m_u`` on its output (``pruning.unit_masks``: 1 = kept, 0 = removed
as ``prune`` removes it). The path runs from every mask at 0 to every mask at 1 TOGETHER,
``m(a) = a * 1``, so one backward pass at each point of the path gives every unit's gradient at
once. With ``L`` the MEAN loss over the objective's examples, integrated gradients (Sundararajan
et al. 2017) of unit ``u`` are ``IG_u = int_0^1 dL/dm_u(a) da``, here by the midpoint rule with
``steps`` points ``a_k = (k + 1/2) / steps`` (error O(1/steps^2) for a smooth path).

obce reports ``attribution_u = -IG_u``: the unit's share of how much the loss FALLS from every unit
removed to every unit kept, so higher = the model leans on the unit more, the direction of every
scorer. Completeness: ``sum_u attribution_u = L(all removed) - L(all kept)`` up to the rule's error
(the same statement as "the IGs add up to L(all kept) - L(all removed)").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from obce_core.forward import model_lock
from obce_core.pruning.unit_masks import MASKED_COMPONENTS, group_widths, unit_masks
from obce_core.validation import check_int

__all__ = ["IntegratedGradients", "integrated_gradients", "masked_mean_loss", "path_points"]

Progress = Callable[[int, int], None]
Masks = dict[tuple[int, str], torch.Tensor]


def path_points(steps: int) -> np.ndarray:
    """The ``steps`` midpoints ``(k + 1/2) / steps`` of the path from all removed (0) to all kept (1)."""
    check_int(steps, "steps", "integrated_gradients", low=2,
              fix="Use at least 2 points on the path from every unit removed to every unit kept (8 is the default).")
    return (np.arange(steps, dtype=np.float64) + 0.5) / steps


@dataclass
class IntegratedGradients:
    """``attribution[layer][group]``: -IG of every unit (see the module docstring), float64."""

    attribution: list[dict[str, np.ndarray]]
    steps: int
    n_examples: int


class _Passes:
    """Forward passes of an objective's batches with masks on, under the model's lock, in eval mode."""

    def __init__(self, model, objective, masks: Masks):
        self.model, self.objective, self.masks = model, objective, masks
        self.device = next(model.parameters()).device

    def batches(self):
        for b, batch in enumerate(self.objective.batches):
            yield b, {k: v.to(self.device) for k, v in batch.items()}


def _run(model, objective, work):
    """``work(passes)`` with mask hooks on ``model``, in eval mode (dropout off), the mode restored after."""
    with model_lock(model), unit_masks(model, {}) as masks:
        was_training = model.training
        model.eval()
        try:
            return work(_Passes(model, objective, masks))
        finally:
            masks.clear()
            model.train(was_training)


def integrated_gradients(model, objective, steps: int = 8, *, progress: Progress | None = None) -> IntegratedGradients:
    """Integrated gradients of ``objective``'s mean loss for every FFN unit, value dim and query/key
    pair of ``model`` (see the module docstring). ``progress(done, total)`` after every batch pass
    (``steps * batches`` in all). The model is left as it was (mode, no hooks)."""
    alphas = path_points(steps)
    widths = group_widths(model)
    totals = [{g: np.zeros(w[g], dtype=np.float64) for g in MASKED_COMPONENTS} for w in widths]
    total_passes = steps * len(objective.batches)

    def work(passes: _Passes) -> None:
        done = 0
        with torch.enable_grad():
            for alpha in alphas:
                for b, batch in passes.batches():
                    # One row per mask, shared by the batch: the gradient is already the batch's sum.
                    for i, w in enumerate(widths):
                        for g in MASKED_COMPONENTS:
                            passes.masks[(i, g)] = torch.full((1, w[g]), float(alpha), device=passes.device,
                                                              requires_grad=True)
                    loss = objective.summed_loss(model, b, batch)
                    keys = list(passes.masks)
                    # allow_unused: a unit no path reaches the loss from has gradient 0.
                    grads = torch.autograd.grad(loss, [passes.masks[k] for k in keys], allow_unused=True)
                    for (i, g), grad in zip(keys, grads):
                        if grad is not None:
                            totals[i][g] += grad.double().sum(dim=0).cpu().numpy()
                    done += 1
                    if progress is not None:
                        progress(done, total_passes)

    _run(model, objective, work)
    scale = -1.0 / (steps * objective.n)  # mean over the path's points and the examples; minus: loss FALL
    return IntegratedGradients([{g: t * scale for g, t in row.items()} for row in totals], int(steps), objective.n)


def masked_mean_loss(model, objective, settings: list[Masks | float], *,
                     progress: Progress | None = None) -> list[float]:
    """The objective's mean loss under each of ``settings``: a float puts that value on every unit's
    mask (1.0 = the model as it is, 0.0 = every unit removed); a dict ``{(layer, group): (width,)
    tensor}`` masks those groups and leaves the others whole. No gradients; ``progress(done,
    total)`` after each setting."""
    widths = group_widths(model)
    out: list[float] = []

    def work(passes: _Passes) -> None:
        with torch.no_grad():
            for setting in settings:
                passes.masks.clear()
                if isinstance(setting, dict):
                    passes.masks.update({k: v.reshape(1, -1).to(passes.device) for k, v in setting.items()})
                elif float(setting) != 1.0:
                    passes.masks.update({(i, g): torch.full((1, w[g]), float(setting), device=passes.device)
                                         for i, w in enumerate(widths) for g in MASKED_COMPONENTS})
                total = sum(float(objective.summed_loss(model, b, batch)) for b, batch in passes.batches())
                out.append(total / objective.n)
                if progress is not None:
                    progress(len(out), len(settings))

    _run(model, objective, work)
    return out
