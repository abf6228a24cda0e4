"""Sequential least-squares tuning: each reader re-fitted on the PRUNED model's own inputs, first layer to last.

``lsq`` and ``auto`` (``obce_core.pruning.compensation``) fit every layer on the ORIGINAL model's
activations, as if the layers before it were unpruned; once several layers lose units, each
layer's input has drifted and the fits' errors add up. K-prune (Park et al., ICLR 2024) removes
that: sublayer by sublayer, in forward order, the output projection's kept weights are re-solved
by least squares so that, fed what the ALREADY-PRUNED model gives it, the sublayer reproduces the
original model's output. Here, for every reader (``attention.output.dense`` then ``output.dense``
of layer 0, then layer 1, ...):

* inputs: the reader's input ``h'`` (kept units) and the residual ``x'`` that joins it before the
  LayerNorm, both from the pruned model as tuned so far, at the calibration's training tokens;
* target: the original model's LayerNorm input ``s`` (reader output plus residual) at the same
  tokens, so the fit also absorbs the drift of the residual stream;
* solve ``min ||W h' + b + x' - s||^2 + lam ||W - W0||^2`` (``W0``: the reader's weights before
  the refit, so a large damping tends to leaving it as it is); ``lam`` is a relative damping from
  ``Calibration.lsq_dampings`` times the mean variance of ``h'``.

Each candidate (every damping, and leaving the reader as it was) is judged by the mean squared
error of the layer's output AFTER the LayerNorm on the calibration's held-out tokens, and the
lowest wins, so a refit never makes that layer's held-out error worse. A reader is refitted once
anything before it lost units (including query/key pairs of its own layer); readers before the
first pruned unit are left untouched, so a plan that removes nothing changes nothing. The starting
point is ``auto``'s per-layer compensation (what a refit that is not better leaves in place).

``prune(..., compensation="sequential-lsq")`` runs this after slicing; it needs calibration data
captured by ``capture_calibration`` on the original (which keeps its batches for this). Cost: one
forward pass of the original and one partial pass of the pruned model per layer over the
calibration texts (the FFN's inputs follow from the attention's token by token), plus one ``k x k``
solve per damping.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import torch

from obce_core.forward import locked_eval, model_lock
from obce_core.layout import GROUP_LAYOUT, encoder_layers, following_norm, reader

if TYPE_CHECKING:
    from obce_core.pruning.calibration import Calibration
    from obce_core.pruning.selection import PruningSelection

__all__ = ["SEQUENTIAL_ORDER", "sequential_tune"]

# Forward order inside a layer: attention (its value dims, read by attention.output.dense) first.
SEQUENTIAL_ORDER = ("v", "ffn")
_SPLITS = ("train", "heldout")


class _Stop(Exception):
    """Raised by a hook once it has what it needs: the rest of the forward pass is not needed."""


def _block(layer, group: str):
    """The module ``forward(h, residual)`` that holds ``group``'s reader and its LayerNorm."""
    return layer.get_submodule(GROUP_LAYOUT[group].reader.rsplit(".", 1)[0])


def _run(model, batches, hooks: dict, stop: bool) -> None:
    """Forward ``batches`` through ``model`` with ``hooks`` ``{module: fn(args, rows)}`` as pre-hooks."""
    state = {}
    with locked_eval(model) as device:
        handles = []
        for module, fn in hooks.items():
            def pre(_module, args, fn=fn):
                fn(args, state["rows"])
                if stop:
                    raise _Stop
            handles.append(module.register_forward_pre_hook(pre))
        try:
            for batch, rows in batches:
                state["rows"] = {s: tuple(c.to(device) for c in r) for s, r in rows.items()}
                try:
                    model(**{k: v.to(device) for k, v in batch.items()})
                except _Stop:
                    pass
        finally:
            for h in handles:
                h.remove()


def _original_targets(model, calibration: Calibration) -> dict:
    """``{(layer, group): {split: s}}``: the original's LayerNorm inputs at the calibration tokens."""
    got = {}
    hooks = {}
    for i, layer in enumerate(encoder_layers(model)):
        for group in SEQUENTIAL_ORDER:
            store = got[(i, group)] = {s: [] for s in _SPLITS}

            def keep(args, rows, store=store):
                for split in _SPLITS:
                    store[split].append(args[0][rows[split]].float().cpu())
            hooks[following_norm(layer, group)] = keep
    _run(model, calibration.batches, hooks, stop=False)
    return {key: {s: torch.cat(v) for s, v in parts.items()} for key, parts in got.items()}


def _pruned_inputs(model, calibration: Calibration, layer: int, group: str) -> dict:
    """``{split: (h', x')}``: the reader's input and the residual in the pruned model, at the same tokens."""
    got = {s: ([], []) for s in _SPLITS}

    def keep(args, rows):
        for split in _SPLITS:
            got[split][0].append(args[0][rows[split]].float().cpu())
            got[split][1].append(args[1][rows[split]].float().cpu())
    _run(model, calibration.batches, {_block(encoder_layers(model)[layer], group): keep}, stop=True)
    return {s: (torch.cat(h), torch.cat(x)) for s, (h, x) in got.items()}


def _cpu_norm(norm):
    """``norm`` (a LayerNorm, on any device) as a function on CPU float32 tensors; the module stays where it is."""
    weight, bias = norm.weight.detach().float().cpu(), norm.bias.detach().float().cpu()
    return lambda t: torch.nn.functional.layer_norm(t, norm.normalized_shape, weight, bias, norm.eps)


def _post_norm_mse(norm, h, x, s, weight, bias) -> float:
    """Mean squared difference after ``norm`` between ``W h + b + x`` and the original's ``s``."""
    with torch.no_grad():
        pred = x + h @ weight.T + bias
        return float(((norm(pred) - norm(s)).double() ** 2).mean())


def _refits(h, y, w0, dampings):
    """``(damping, W, b)`` of every damping that gives a finite solution of the ridge problem above."""
    n = len(h)
    mu_h, mu_y = h.double().mean(0), y.double().mean(0)
    hc, yc = (h.double() - mu_h).float(), (y.double() - mu_y).float()
    c_hh = (hc.T @ hc).double().numpy() / n
    c_hy = (hc.T @ yc).double().numpy() / n
    w0 = w0.double().numpy()
    rhs = c_hy - c_hh @ w0.T  # (k, out): what the original weights miss
    scale = float(np.mean(np.diag(c_hh)))
    if not np.isfinite(scale) or scale <= 0:
        return []
    out = []
    for damping in dampings:
        try:
            factor = scipy.linalg.cho_factor(c_hh + damping * scale * np.eye(len(c_hh)), check_finite=False)
        except np.linalg.LinAlgError:
            continue
        weight = w0 + scipy.linalg.cho_solve(factor, rhs, check_finite=False).T
        bias = mu_y.numpy() - weight @ mu_h.numpy()
        if np.isfinite(weight).all() and np.isfinite(bias).all():
            out.append((damping, torch.from_numpy(weight).float(), torch.from_numpy(bias).float()))
    return out


def _changed(selection: PruningSelection, layer: int, group: str) -> bool:
    """Whether anything before ``group``'s reader in ``layer`` (or its own units) lost units."""
    if any(len(selection.removed(i, g)) for i in range(layer) for g in ("qk", "v", "ffn")):
        return True
    before = ("qk", "v") if group == "v" else ("qk", "v", "ffn")
    return any(len(selection.removed(layer, g)) for g in before)


def _ffn_inputs(model, i: int, attention_inputs: dict) -> dict:
    """``{split: (h', x')}`` of the FFN's reader, computed token by token from the attention's reader
    inputs (context and residual) through the (just refitted) attention output and the intermediate
    layer: no forward pass of the model is needed for the second reader of a layer."""
    layer = encoder_layers(model)[i]
    out = {}
    with locked_eval(model) as device:  # eval mode: no dropout, as in the forward passes
        for split, (ctx, residual) in attention_inputs.items():
            a = layer.attention.output(ctx.to(device), residual.to(device))
            out[split] = (layer.intermediate(a).float().cpu(), a.float().cpu())
    return out


def _tune_one(original_targets, pruned, calibration, selection, i, group, initial: dict | None,
              inputs: dict | None = None) -> tuple[dict, dict]:
    """The report row of (layer ``i``, ``group``) and the reader inputs it was fitted on."""
    layer = encoder_layers(pruned)[i]
    linear, norm = reader(layer, group), _cpu_norm(following_norm(layer, group))
    w0, b0 = linear.weight.detach().float().cpu(), linear.bias.detach().float().cpu()
    if inputs is None:
        inputs = _pruned_inputs(pruned, calibration, i, group)
    (h, x), (hh, xh) = inputs["train"], inputs["heldout"]
    s, sh = original_targets[(i, group)]["train"], original_targets[(i, group)]["heldout"]
    # A reader that lost no units of its own starts as the original's (nothing was compensated there).
    before = (initial or {}).get("method", "original" if not len(selection.removed(i, group)) else "auto")
    row = {"layer": i, "group": group, "requested": "sequential-lsq", "method": before, "damping": None,
           "heldout_mse": {}, "note": ""}
    k = h.shape[1]
    need = int(math.ceil(calibration.min_tokens_per_unit * (k + 1)))
    if len(h) < need:
        row["note"] = (f"not refitted: {len(h):,} training tokens for {k} inputs + bias, needs {need:,}; kept "
                       f"{before}")
        return row, inputs
    dampings = calibration.lsq_dampings
    if not len(hh):  # nothing to choose with: the damping lsq documents as its default
        dampings = (min(dampings, key=lambda d: abs(np.log10(max(d, 1e-30)) + 3)),)
    fits = _refits(h, s - x, w0, dampings)
    if not fits:
        row["note"] = f"not refitted: every damping gave a singular or non-finite system; kept {before}"
        return row, inputs
    if len(hh):
        kept_error = _post_norm_mse(norm, hh, xh, sh, w0, b0)
        scored = [(_post_norm_mse(norm, hh, xh, sh, w, b), d, w, b) for d, w, b in fits]
        error, damping, weight, bias = min(scored, key=lambda c: c[0])
        row["heldout_mse"] = {f"{before} (as before)": kept_error, "sequential-lsq": error}
        if not error < kept_error:
            row["note"] = "the refit was not better on held-out tokens; kept " + before
            return row, inputs
    else:
        damping, weight, bias = fits[0]
    with model_lock(pruned), torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight))
        linear.bias.copy_(bias.to(linear.bias))
    row.update(method="sequential-lsq", damping=float(damping),
               note=f"refitted on the pruned model's inputs (per-layer start: {before})")
    return row, inputs


def sequential_tune(original, pruned, selection: PruningSelection, calibration: Calibration,
                    rows: list[dict] | None = None, progress=None) -> list[dict]:
    """Re-fit ``pruned``'s readers in place, first layer to last (see the module docstring).

    ``rows``: the per-layer compensation rows ``prune`` computed first (their ``method`` is what a
    refit that is not better keeps). Returns one row per reader looked at, for the report.
    ``progress(done, total)`` is called after each reader.
    """
    batches = getattr(calibration, "batches", None)
    if not batches:
        raise ValueError("compensation='sequential-lsq' needs calibration data with its batches: pass "
                         "calibration=capture_calibration(model, tokenizer, texts) to prune (a Calibration built "
                         "by hand has none), or choose another compensation.")
    initial = {(r["layer"], r["group"]): r for r in rows or []}
    todo = [(i, g) for i in range(selection.num_layers) for g in SEQUENTIAL_ORDER if _changed(selection, i, g)]
    if not todo:
        return list(rows or [])
    targets = _original_targets(original, calibration)
    out, fitted = [], {}
    for done, (i, group) in enumerate(todo, 1):
        given = _ffn_inputs(pruned, i, fitted.pop(i)) if group == "ffn" and i in fitted else None
        row, used = _tune_one(targets, pruned, calibration, selection, i, group, initial.get((i, group)), given)
        if group == "v":  # what the FFN's inputs of this layer follow from; nothing else is kept
            fitted[i] = used
        out.append(row)
        if progress is not None:
            progress(done, len(todo))
    return out
