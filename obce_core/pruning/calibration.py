"""Calibration data for compensation: what the layers that read pruned units see, captured once.

A removed FFN unit is read by ``output.dense``; a removed value dim by ``attention.output.dense``
(through the attention context, whose dim ``j`` is the attention-weighted mix of value dim ``j``).
``capture_calibration`` runs the scoring texts through the ORIGINAL model once and keeps, for
each layer and each of these two readers, what a compensation needs:

* ``train``: the shifted first and second moments of the reader's input over the training tokens
  (float64, ``(n + 1) x (n + 1)`` per reader, memory independent of the number of tokens). From
  them come each unit's mean over all tokens (``token-mean``) and the covariance that the
  least-squares refit (``lsq``) solves with.
* ``heldout``: the reader's input at up to ``max_heldout_tokens`` tokens of OTHER texts (float32),
  and ``heldout_sum``, the input of the LayerNorm that follows the reader (reader output plus
  residual) at the same tokens: on these ``auto`` compares the candidate compensations and
  ``lsq`` chooses its damping, by the error of the layer's real output (after the LayerNorm).

Texts, not tokens, are split between the two (tokens of one sentence are correlated, so a
held-out token of a training sentence would flatter the fit). Every non-padding token counts,
[CLS] and [SEP] included; when a split has more tokens than its budget, a seeded uniform sample
of them is kept. Moments are accumulated around a shift (the first batch's mean) so that a unit
with a large mean and a tiny spread keeps its variance in float64.

The padded batches (token ids, on the CPU) and which of their tokens are training and held-out
ones are kept as well (``Calibration.batches``): sequential tuning
(``obce_core.pruning.sequential``) runs the PRUNED model over the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from obce_core.forward import length_sorted_batches, locked_eval, tokenize_texts
from obce_core.layout import GROUP_LAYOUT, READ_GROUPS, encoder_layers, following_norm, reader
from obce_core.pruning.cache import cached_fingerprint
from obce_core.validation import check_int, check_number

__all__ = [
    "DEFAULT_LSQ_DAMPINGS",
    "Calibration",
    "ReaderMoments",
    "capture_calibration",
]

# Relative ridge dampings that lsq tries (times the mean variance of the kept units); the one
# with the lowest held-out error wins. 1e-3 is what the prototype of issue 9 used.
DEFAULT_LSQ_DAMPINGS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class ReaderMoments:
    """What one reader Linear saw: moments over training tokens, raw held-out inputs."""

    shift: np.ndarray  # (n,) float64: the accumulation origin
    sum1: np.ndarray  # (n,) float64: sum of (x - shift)
    sum2: np.ndarray  # (n, n) float64: sum of (x - shift)(x - shift)^T
    n_train: int
    heldout: np.ndarray  # (m, n) float32
    heldout_sum: np.ndarray | None = None  # (m, hidden) float32: the following LayerNorm's input

    @property
    def mean(self) -> np.ndarray:
        """Each unit's mean over the training tokens."""
        return self.shift + self.sum1 / max(self.n_train, 1)

    def covariance(self, idx: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
        """The (population) covariance over training tokens, rows ``idx`` x columns ``cols``."""
        idx = slice(None) if idx is None else idx
        cols = slice(None) if cols is None else cols
        d = self.sum1 / max(self.n_train, 1)
        return self.sum2[idx][:, cols] / max(self.n_train, 1) - np.outer(d[idx], d[cols])


@dataclass
class Calibration:
    """Reader inputs of a model over calibration texts (see the module docstring).

    ``readers[(layer, group)]`` for ``group`` in ``ffn`` and ``v``. ``lsq_dampings`` are the
    relative ridge dampings ``lsq`` tries; ``min_tokens_per_unit`` is how many training tokens
    ``lsq`` requires per fitted coefficient (kept units + bias) before it fits at all.
    """

    model_fingerprint: str
    n_texts: int
    readers: dict[tuple[int, str], ReaderMoments] = field(repr=False)
    lsq_dampings: tuple[float, ...] = DEFAULT_LSQ_DAMPINGS
    min_tokens_per_unit: float = 4.0
    # (padded batch on the CPU, {"train"/"heldout": (batch rows, token positions)}), in capture order.
    batches: list[tuple[dict, dict]] = field(default_factory=list, repr=False)

    @property
    def n_train(self) -> int:
        return min(r.n_train for r in self.readers.values())

    @property
    def n_heldout(self) -> int:
        return min(len(r.heldout) for r in self.readers.values())

    def nbytes(self) -> int:
        return sum(r.sum2.nbytes + r.heldout.nbytes + (0 if r.heldout_sum is None else r.heldout_sum.nbytes)
                   for r in self.readers.values())


def _split_texts(n_texts: int, heldout_share: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out texts: a seeded ``heldout_share`` of them (at least one of each)."""
    rng = np.random.default_rng(seed)
    n_held = min(max(1, int(round(heldout_share * n_texts))), n_texts - 1) if heldout_share > 0 else 0
    held = np.zeros(n_texts, dtype=bool)
    held[rng.permutation(n_texts)[:n_held]] = True
    return held


def _token_picks(lengths: np.ndarray, texts: np.ndarray, budget: int, rng) -> dict[int, np.ndarray]:
    """``{text: token positions}`` of a uniform sample of at most ``budget`` tokens of ``texts``."""
    owners = np.repeat(texts, lengths[texts])
    positions = np.concatenate([np.arange(lengths[t]) for t in texts]) if len(texts) else np.empty(0, int)
    if len(owners) > budget:
        pick = np.sort(rng.choice(len(owners), size=budget, replace=False))
        owners, positions = owners[pick], positions[pick]
    return {int(t): positions[owners == t] for t in np.unique(owners)}


def capture_calibration(
    model,
    tokenizer,
    texts: Sequence,
    *,
    max_train_tokens: int = 8192,
    max_heldout_tokens: int = 2048,
    heldout_share: float = 0.25,
    seed: int = 0,
    max_length: int = 128,
    batch_size: int = 32,
    lsq_dampings: Sequence[float] = DEFAULT_LSQ_DAMPINGS,
    min_tokens_per_unit: float = 4.0,
) -> Calibration:
    """Capture the readers' inputs over ``texts`` once (see the module docstring).

    Memory: per layer ``(n+1)^2`` float64 moments plus ``max_heldout_tokens x n`` float32 for each
    reader (about 0.2 GiB for all-MiniLM-L6-v2 with the defaults). Runs under the model's lock,
    in eval mode, without gradients. Use texts the model will not be evaluated on.
    """
    owner = "capture_calibration"
    check_int(max_train_tokens, "max_train_tokens", owner, low=1)
    check_int(max_heldout_tokens, "max_heldout_tokens", owner, low=0)
    check_number(heldout_share, "heldout_share", owner, low=0, high=1, high_open=True,
                 fix="It is the share of texts kept aside to choose the compensation, e.g. 0.25.")
    check_int(seed, "seed", owner, low=0)
    check_number(min_tokens_per_unit, "min_tokens_per_unit", owner, low=1)
    dampings = tuple(float(check_number(d, "lsq_dampings", owner, low=0)) for d in lsq_dampings)
    if not dampings:
        raise ValueError("lsq_dampings is empty; pass at least one relative damping, e.g. (1e-3,).")
    if len(texts) < 2:
        raise ValueError(f"Calibration needs at least 2 texts (one to fit, one held out); got {len(texts)}.")
    encoded = tokenize_texts(tokenizer, texts, max_length)
    lengths = np.array([len(e["input_ids"]) for e in encoded])
    held = _split_texts(len(encoded), heldout_share, seed)
    rng = np.random.default_rng([seed, 1])
    picks = {"train": _token_picks(lengths, np.flatnonzero(~held), max_train_tokens, rng),
             "heldout": _token_picks(lengths, np.flatnonzero(held), max_heldout_tokens, rng)}

    layers = encoder_layers(model)
    modules = {(i, g): reader(layer, g) for i, layer in enumerate(layers) for g in READ_GROUPS}
    norms = {(i, g): following_norm(layer, g) for i, layer in enumerate(layers) for g in READ_GROUPS}
    acc = {key: {"shift": None, "sum1": 0.0, "sum2": 0.0, "n": 0, "held": [], "held_sum": []} for key in modules}
    state: dict = {}
    kept_batches = []

    def make_norm_hook(key):
        def hook(_module, inputs):
            rows = state["rows"]["heldout"]
            if len(rows[0]):
                acc[key]["held_sum"].append(inputs[0][rows].float().cpu().numpy())
        return hook

    def make_hook(key):
        def hook(_module, inputs):
            x = inputs[0]
            a = acc[key]
            for split, rows in state["rows"].items():
                if not len(rows[0]):
                    continue
                sel = x[rows].double()
                if split == "heldout":
                    a["held"].append(sel.float().cpu().numpy())
                    continue
                if a["shift"] is None:
                    a["shift"] = sel.mean(0)
                d = sel - a["shift"]
                a["sum1"] = a["sum1"] + d.sum(0)
                # float32 within a batch (a few hundred tokens, shifted, so small sums), float64
                # across batches: the float64 product would double the capture's time.
                d32 = d.float()
                a["sum2"] = a["sum2"] + (d32.T @ d32).double()
                a["n"] += len(d)
        return hook

    with locked_eval(model) as device:
        hooks = [m.register_forward_pre_hook(make_hook(k)) for k, m in modules.items()]
        hooks += [m.register_forward_pre_hook(make_norm_hook(k)) for k, m in norms.items()]
        try:
            for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
                rows = {}
                for split, chosen in picks.items():
                    b, t = [], []
                    for row, text in enumerate(idx):
                        pos = chosen.get(int(text))
                        if pos is not None:
                            b.append(np.full(len(pos), row)), t.append(pos)
                    cat = (np.concatenate(b), np.concatenate(t)) if b else (np.empty(0, int), np.empty(0, int))
                    rows[split] = tuple(torch.as_tensor(c, dtype=torch.long, device=device) for c in cat)
                if not any(len(r[0]) for r in rows.values()):
                    continue
                state["rows"] = rows
                kept_batches.append(({k: v.cpu() for k, v in batch.items()},
                                     {split: tuple(c.cpu() for c in r) for split, r in rows.items()}))
                model(**batch)
        finally:
            for h in hooks:
                h.remove()

    readers = {}
    for key, a in acc.items():
        width = modules[key].in_features
        held_x = np.concatenate(a["held"]) if a["held"] else np.empty((0, width), np.float32)
        if a["n"] == 0:
            raise ValueError("No training tokens were captured; pass more texts (at least 2).")
        readers[key] = ReaderMoments(
            shift=a["shift"].cpu().numpy(), sum1=a["sum1"].cpu().numpy(), sum2=a["sum2"].cpu().numpy(),
            n_train=int(a["n"]), heldout=held_x,
            heldout_sum=np.concatenate(a["held_sum"]) if a["held_sum"] else None)
        if not (np.isfinite(readers[key].sum2).all() and np.isfinite(held_x).all()):
            raise ValueError(
                f"The inputs of layer {key[0]} {GROUP_LAYOUT[key[1]].reader} are NaN or infinite on the calibration texts: "
                "the model's weights are broken. Reload the model.")
    return Calibration(model_fingerprint=cached_fingerprint(model), n_texts=len(texts), readers=readers,
                       lsq_dampings=dampings, min_tokens_per_unit=float(min_tokens_per_unit), batches=kept_batches)
