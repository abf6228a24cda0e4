"""What replaces removed units: the compensations, their fits, and the per-layer choice of ``auto``.

A removed FFN unit is read by ``output.dense``, a removed value dim by ``attention.output.dense``
(through the attention context; a constant value dim gives a constant context dim because softmax
rows sum to 1). Each compensation rewrites that reader's bias (and, for ``lsq``, the columns of
its KEPT units) so that the layer's output changes as little as possible:

* ``none``: nothing is added.
* ``cls-mean``: the removed units' mean from the scores table, folded into the bias. In the
  paper's setting (``token='cls'``) that is the mean at [CLS]; it is applied at EVERY token, so a
  unit that fires only at [CLS] shifts all other tokens (issue 9 measured this sinking the
  mean-pooled output). ``cls-mean-std`` adds the std as well (the paper's mean + std).
* ``token-mean``: the removed units' mean over ALL calibration tokens (``Calibration``), or the
  table's mean when the scores were computed with ``token='all'``. It is the best constant in the
  least-squares sense and exact for a unit constant over all tokens.
* ``lsq``: least-squares reconstruction (Kwon et al. 2022 do this after choosing a mask). With
  ``C`` the covariance of the reader's input over the training tokens, ``K`` the kept and ``R``
  the removed units, the kept columns become ``W_K + W_R C_RK (C_KK + lam I)^-1`` and the bias
  ``b + W_R mu_R - dW_K mu_K``: the ridge solution that reconstructs the original output,
  shrunk towards the ORIGINAL kept weights (so a large damping tends to ``token-mean``, not to
  zero). ``lam`` is a relative damping times the mean variance of the kept units, chosen from
  ``Calibration.lsq_dampings`` by the error on held-out tokens. The fit is refused (with a
  warning, falling back to ``none``) when there are fewer than ``min_tokens_per_unit`` training
  tokens per fitted coefficient, when every damping gives a singular system, or when the result
  is not finite.
* ``auto`` (the default): per layer and group, the candidate among ``none``, ``token-mean``,
  ``cls-mean`` and ``lsq`` with the lowest mean squared error of the layer's output AFTER the
  LayerNorm that follows the reader, on held-out tokens (texts the fit did not see); ``none``
  wins ties. After the LayerNorm, not before: a unit that fires hugely at [CLS] only has the
  lowest pre-LayerNorm error with its all-token mean (the error at [CLS] dominates), yet that
  mean shifts every other token, whose residual is small, while [CLS]'s huge residual makes its
  own error small once normalised (measured: random FFN pruning at p = 50 kept cosine 0.73 with
  ``none`` and fell to 0.16 with an ``auto`` that judged before the LayerNorm). It needs calibration data; without it
  ``auto`` is ``none`` everywhere, because no mean is safe blindly (issue 9: random FFN pruning at
  p = 30 kept cosine 0.845 with none, 0.04 with the [CLS] mean, 0.09 with the all-token mean)
  and ``none`` is what the other candidates are measured against. The report says what was
  chosen where.
* ``sequential-lsq``: ``auto`` per layer first, then every reader from the first pruned unit on
  re-fitted in forward order on the PRUNED model's own inputs, against the original model's layer
  output (K-prune's sequential tuning; ``obce_core.pruning.sequential``, run by ``prune`` once the
  model is sliced). It needs calibration data.

Query/key pairs get nothing: removing pair ``i`` drops ``q_i k_i`` from logits that vary along a
softmax row, which no bias can absorb. Fits here are layer-local: each layer is fitted on the ORIGINAL
model's inputs, as if the earlier layers were unpruned (``sequential-lsq`` lifts that).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import torch

from obce_core.choices import COMPENSATIONS, SEQUENTIAL_LSQ  # defined without torch for the CLI's parser
from obce_core.layout import GROUP_COMPONENTS, GROUP_NAMES, READ_GROUPS, encoder_layers, following_norm, reader
from obce_core.pruning.importance import group_statistic

if TYPE_CHECKING:
    from obce_core.pruning.calibration import Calibration
    from obce_core.pruning.plan import PruningPlan
    from obce_core.pruning.selection import PruningSelection

__all__ = [
    "AUTO_CANDIDATES",
    "COMPENSATIONS",
    "COMPENSATION_ALIASES",
    "CompensationWarning",
    "LayerCompensation",
    "SEQUENTIAL_LSQ",
    "compensate",
]

# Names of plans written before the compensations said what they compute.
COMPENSATION_ALIASES = {"mean": "cls-mean", "mean+std": "cls-mean-std"}
AUTO_CANDIDATES = ("none", "token-mean", "cls-mean", "lsq")


class CompensationWarning(UserWarning):
    """A requested compensation could not be computed; the layer fell back to ``none``."""


class _Infeasible(Exception):
    """This candidate cannot be computed here; the message says why."""


@dataclass
class LayerCompensation:
    """What replaces the removed units of one (layer, group), ready to be written.

    ``weight`` is the reader's new kept columns (``None``: the original ones, sliced), ``bias``
    its new bias (float64). ``heldout_mse`` holds the held-out error of every candidate tried
    (mean over tokens and outputs of the squared difference to the original model's layer output
    after the LayerNorm).
    """

    layer: int
    group: str
    requested: str
    method: str
    bias: np.ndarray | None
    weight: np.ndarray | None = None
    damping: float | None = None
    heldout_mse: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def row(self) -> dict:
        """The JSON-friendly summary the report keeps."""
        return {"layer": self.layer, "group": self.group, "requested": self.requested, "method": self.method,
                "damping": self.damping, "heldout_mse": dict(self.heldout_mse), "note": self.note}


class _Layer:
    """The numbers one (layer, group) compensation works with."""

    def __init__(self, selection, scores, calibration, layer: int, group: str, weight, bias, norm=None):
        self.layer, self.group = layer, group
        self.kept = selection.kept[layer][group]
        self.removed = selection.removed(layer, group)
        self.n = len(selection.scores[layer][group])
        self.W = weight  # (out, n) float64
        self.b = bias
        self.scores = scores
        self.reader = None if calibration is None else calibration.readers.get((layer, group))
        self.calibration = calibration
        self._held = None
        self.norm = norm  # the LayerNorm after the reader: errors are measured after it

    def where(self) -> str:
        return f"layer {self.layer} {'/'.join(GROUP_COMPONENTS[self.group])} ({GROUP_NAMES[self.group]})"

    # -- held-out error -----------------------------------------------------------------
    def held(self):
        """(kept inputs, removed units' original contribution) on held-out tokens, float32 torch."""
        if self._held is None:
            x = torch.from_numpy(self.reader.heldout)
            xk, xr = x[:, self.kept], x[:, self.removed]
            self._held = (xk, xr @ torch.from_numpy(self.W[:, self.removed].T).float())
        return self._held

    def heldout_mse(self, bias: np.ndarray, weight: np.ndarray | None) -> float:
        if self.reader is None or not len(self.reader.heldout):
            return float("nan")
        xk, yr = self.held()
        err = torch.from_numpy(bias - self.b).float() - yr
        if weight is not None:
            err = err + xk @ torch.from_numpy((weight - self.W[:, self.kept]).T).float()
        s = self.reader.heldout_sum
        if self.norm is not None and s is not None and len(s) == len(err):
            s = torch.from_numpy(s)
            with torch.no_grad():
                err = self.norm(s + err).float() - self.norm(s).float()
        return float((err.double() ** 2).mean())

    # -- candidates ---------------------------------------------------------------------
    def fold(self, values: np.ndarray, what: str) -> np.ndarray:
        c = values[self.removed]
        if not np.isfinite(c).all():
            bad = self.removed[~np.isfinite(c)]
            raise ValueError(
                f"The {what} of {self.where()} is NaN or infinite for {len(bad)} unit(s) (first: "
                f"{bad[:5].tolist()}); nothing was pruned. The scores are broken: rescore the model with "
                "obce_core.score_model (or `python -m obce_core score`), or use compensation='none'.")
        return self.b + self.W[:, self.removed] @ c

    def table(self, column: str) -> np.ndarray:
        try:
            return group_statistic(self.scores, self.layer, self.group, self.n, column)
        except ValueError:
            raise _Infeasible(f"the scores table has no {column} for every unit of {self.where()}") from None

    def candidate(self, name: str) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """``(bias, kept columns or None, damping)`` of compensation ``name``; ``_Infeasible`` if it cannot."""
        if name == "none":
            return self.b.copy(), None, None
        if name == "cls-mean":
            return self.fold(self.table("mean"), "cls-mean compensation value"), None, None
        if name == "cls-mean-std":
            return self.fold(self.table("mean") + self.table("std"), "cls-mean-std compensation value"), None, None
        if name == "token-mean":
            if self.reader is not None:
                return self.fold(self.reader.mean, "token-mean compensation value"), None, None
            if getattr(getattr(self.scores, "settings", None), "token", None) == "all":
                return self.fold(self.table("mean"), "token-mean compensation value"), None, None
            raise _Infeasible("token-mean needs calibration data (capture_calibration) or scores computed "
                              "with token='all'")
        if name == "lsq":
            return self.least_squares()
        raise ValueError(f"Unknown compensation {name!r}; expected one of {COMPENSATIONS}.")

    def least_squares(self):
        r = self.reader
        if r is None:
            raise _Infeasible("lsq needs calibration data (capture_calibration)")
        k = len(self.kept)
        need = int(np.ceil(self.calibration.min_tokens_per_unit * (k + 1)))
        if r.n_train < need:
            raise _Infeasible(f"lsq needs at least {need:,} training tokens for {k} kept units + bias "
                              f"({self.calibration.min_tokens_per_unit:g} per coefficient) but the calibration "
                              f"has {r.n_train:,}; calibrate on more texts (each adds its tokens)")
        c_kk = r.covariance(self.kept, self.kept)
        rhs = r.covariance(self.kept, self.removed) @ self.W[:, self.removed].T  # (k, out)
        scale = float(np.mean(np.diag(c_kk)))
        if not np.isfinite(scale) or scale <= 0:
            raise _Infeasible("the kept units do not vary over the calibration tokens (singular system)")
        mu = r.mean
        best = None
        dampings = self.calibration.lsq_dampings
        if not len(r.heldout):  # nothing to choose with: the documented default
            dampings = (min(dampings, key=lambda d: abs(np.log10(max(d, 1e-30)) + 3)),)
        for damping in dampings:
            try:
                factor = scipy.linalg.cho_factor(c_kk + damping * scale * np.eye(k), check_finite=False)
            except np.linalg.LinAlgError:
                continue
            delta = scipy.linalg.cho_solve(factor, rhs, check_finite=False).T  # (out, k)
            if not np.isfinite(delta).all():
                continue
            weight = self.W[:, self.kept] + delta
            bias = self.b + self.W[:, self.removed] @ mu[self.removed] - delta @ mu[self.kept]
            if not np.isfinite(bias).all():
                continue
            mse = self.heldout_mse(bias, weight)
            if best is None or mse < best[0]:
                best = (mse, bias, weight, damping)
        if best is None:
            raise _Infeasible(f"every damping in {tuple(dampings)} gave a singular or non-finite system")
        return best[1], best[2], best[3]


def _choose(ctx: _Layer, requested: str, has_calibration: bool) -> LayerCompensation:
    out = LayerCompensation(layer=ctx.layer, group=ctx.group, requested=requested, method="none", bias=None)
    if requested != "auto":
        try:
            bias, weight, damping = ctx.candidate(requested)
        except _Infeasible as why:
            warnings.warn(f"Compensation '{requested}' for {ctx.where()} could not be computed: {why}. That "
                          "layer uses 'none' instead.", CompensationWarning, stacklevel=4)
            out.bias, out.note = ctx.b.copy(), f"fell back to none: {why}"
            return out
        out.method, out.bias, out.weight, out.damping = requested, bias, weight, damping
        if has_calibration:
            out.heldout_mse = {"none": ctx.heldout_mse(ctx.b, None), requested: ctx.heldout_mse(bias, weight)}
        return out
    if not has_calibration or ctx.reader is None or not len(ctx.reader.heldout):
        out.bias, out.note = ctx.b.copy(), "no calibration data with held-out tokens: none"
        return out
    best, notes = None, []
    for name in AUTO_CANDIDATES:
        try:
            bias, weight, damping = ctx.candidate(name)
        except _Infeasible as why:
            notes.append(f"{name} skipped: {why}")
            continue
        except ValueError as why:  # a NaN statistic rules its candidate out, nothing else
            warnings.warn(f"auto compensation skips '{name}' for {ctx.where()}: {why}", CompensationWarning,
                          stacklevel=4)
            notes.append(f"{name} skipped: NaN or infinite statistic")
            continue
        mse = ctx.heldout_mse(bias, weight)
        out.heldout_mse[name] = mse
        if best is None or mse < best[0]:
            best = (mse, name, bias, weight, damping)
    _, out.method, out.bias, out.weight, out.damping = best
    out.note = "; ".join(notes)
    return out


def compensate(selection: PruningSelection, scores, plan: PruningPlan, model,
               calibration: Calibration | None = None) -> dict[tuple[int, str], LayerCompensation]:
    """The compensation of every (layer, group) that loses units, all computed and checked finite.

    Nothing is written here: ``prune`` writes the result only once every layer has one. For
    ``sequential-lsq`` this is ``auto``'s per-layer start, which ``prune`` then tunes in order.
    """
    requested = plan.compensation
    if requested in ("lsq", SEQUENTIAL_LSQ) and calibration is None:
        raise ValueError(f"compensation={requested!r} needs calibration data: pass calibration=capture_calibration("
                         "model, tokenizer, texts) to prune, or choose another compensation.")
    if requested == SEQUENTIAL_LSQ:
        requested = "auto"
    if calibration is not None and calibration.model_fingerprint != selection.model_fingerprint:
        raise ValueError(
            f"The calibration data were captured on a model with fingerprint {calibration.model_fingerprint}, "
            f"not on this one ({selection.model_fingerprint}); capture them again on the model being pruned.")
    layers = encoder_layers(model)
    result = {}
    for i in range(selection.num_layers):
        for group in READ_GROUPS:
            if not len(selection.removed(i, group)):
                continue
            linear = reader(layers[i], group)
            w = linear.weight.detach().double().cpu().numpy()
            b = linear.bias.detach().double().cpu().numpy()
            ctx = _Layer(selection, scores, calibration, i, group, w, b, following_norm(layers[i], group))
            if requested == "none":
                result[(i, group)] = LayerCompensation(i, group, requested, "none", b.copy())
                continue
            key = (selection.model_fingerprint, scores.model_fingerprint, scores.texts_fingerprint,
                   scores.settings.to_json(), i, group, requested, ctx.removed.tobytes())
            result[(i, group)] = _memo(calibration, key, lambda ctx=ctx: _choose(ctx, requested, calibration is not None))
    return result


_MEMO_ATTRIBUTE = "_obce_compensation_memo"
_MEMO_SIZE = 96  # (layer, group) fits kept per calibration: a search's next plan changes one of them
_MEMO_LOCK = threading.Lock()


def _memo(calibration, key: tuple, compute):
    """``compute()``, remembered on ``calibration`` for the same layer, group, removed units, method,
    model and scores: a plan search or sweep re-prunes the other layers the same way every time,
    and an lsq fit of an FFN layer takes seconds. Least recently used entries go first."""
    if calibration is None:
        return compute()
    # A dashboard shares one calibration between sessions (threads): the memo changes under a lock;
    # the fit itself runs outside it (two threads may fit the same layer once each, never wrongly).
    with _MEMO_LOCK:
        memo = calibration.__dict__.setdefault(_MEMO_ATTRIBUTE, {})
        hit = memo.pop(key, None)
        if hit is not None:
            memo[key] = hit  # most recently used last
            return hit
    value = compute()
    with _MEMO_LOCK:
        memo[key] = value
        while len(memo) > _MEMO_SIZE:
            memo.pop(next(iter(memo)))
    return value
