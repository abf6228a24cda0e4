"""What a pruning selection does to a model: parameters, bytes, kept units, estimated FLOPs.

``build_report(model, selection)`` computes ``PruningReport`` in closed form from the config and
the selection (the model is not copied); per-layer sizes come from ``obce_core.layout.layer_shapes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from obce_core.layout import GROUPS, base_model
from obce_core.pruning.plan import PruningPlan, hidden_kept_count
from obce_core.validation import check_int

if TYPE_CHECKING:
    from obce_core.pruning.selection import PruningSelection

__all__ = ["DEFAULT_FLOPS_SEQ_LEN", "PruningReport", "build_report", "layer_macs", "layer_params"]

DEFAULT_FLOPS_SEQ_LEN = 128


def layer_params(hidden: int, heads: int, qk: int, v: int, ffn: int) -> dict[str, int]:
    """Closed-form parameter count of one encoder layer, by group.

    qk: query and key Linear (weights + biases); v: value Linear + attention.output.dense's input
    columns; ffn: intermediate Linear + output.dense's input columns; fixed: the two output biases
    and the two LayerNorms, which pruning never touches.
    """
    dqk, dv = heads * qk, heads * v
    out = {
        "qk": 2 * (hidden * dqk + dqk),
        "v": hidden * dv + dv + dv * hidden,
        "ffn": hidden * ffn + ffn + ffn * hidden,
        "fixed": 6 * hidden,
    }
    out["total"] = sum(out.values())
    return out


def layer_macs(hidden: int, heads: int, qk: int, v: int, ffn: int, seq_len: int) -> int:
    """Dense multiply-adds per token of one encoder layer at ``seq_len`` tokens (an estimate: no
    softmax, LayerNorm or GELU)."""
    # Per token: Q,K,V and output projections, attention scores and context, FFN.
    dqk, dv = heads * qk, heads * v
    return 2 * hidden * dqk + hidden * dv + dv * hidden + seq_len * (dqk + dv) + 2 * hidden * ffn


@dataclass
class PruningReport:
    """What a selection does to a model, computed from config + selection (the model is not copied).

    ``params_before``/``params_after``: total, embeddings, encoder, pooler, head. ``layers``: one
    dict per layer with sizes and parameters before/after by group. ``flops_ratio_estimate`` is an
    ESTIMATE: dense matmul multiply-adds per token at ``flops_seq_len`` tokens (projections,
    attention scores and context, FFN), ignoring embeddings, softmax, LayerNorm, GELU and the head.
    ``hidden_before``/``hidden_after``: the width of the residual stream (``plan.hidden`` narrows it:
    the embeddings, every layer, the pooler's input and a "mean" head shrink with it, and every
    term of the FLOPs estimate that reads or writes the stream).
    ``units``: one row per unit (layer, group, unit, score, kept) for a heatmap; for ``qk`` a unit
    is a query/key pair. ``compensations``: one dict per (layer, group) that lost units, saying
    which compensation was requested and which was applied (``auto``'s choice, or a fallback),
    the lsq damping and the held-out errors compared (empty for a report of a selection alone).
    """

    plan: PruningPlan
    model_fingerprint: str
    architecture: str
    params_before: dict[str, int]
    params_after: dict[str, int]
    layers: list[dict[str, Any]]
    flops_ratio_estimate: float
    flops_seq_len: int
    units: pd.DataFrame = field(repr=False)
    compensations: list[dict] = field(default_factory=list)
    hidden_before: int = 0
    hidden_after: int = 0

    BYTES_PER_PARAM = 4  # float32

    @property
    def bytes_before(self) -> int:
        return self.params_before["total"] * self.BYTES_PER_PARAM

    @property
    def bytes_after(self) -> int:
        return self.params_after["total"] * self.BYTES_PER_PARAM

    @property
    def fraction_removed(self) -> float:
        """Share of ALL parameters removed (embeddings included)."""
        return 1 - self.params_after["total"] / self.params_before["total"]

    @property
    def encoder_fraction_removed(self) -> float:
        return 1 - self.params_after["encoder"] / self.params_before["encoder"]

    def kept_frame(self) -> pd.DataFrame:
        """Per layer and group: units kept and before (qk: pairs, v: dims, over all heads)."""
        rows = []
        for info in self.layers:
            for group in GROUPS:
                rows.append(
                    {"layer": info["layer"], "group": group, "kept": info["kept"][group],
                     "total": info["units_before"][group]}
                )
        return pd.DataFrame(rows)

    def to_dict(self, include_units: bool = True) -> dict:
        """JSON-serialisable; ``units`` is stored column-wise to stay compact."""
        data = {
            "plan": self.plan.to_dict(),
            "model_fingerprint": self.model_fingerprint,
            "architecture": self.architecture,
            "params_before": dict(self.params_before),
            "params_after": dict(self.params_after),
            "bytes_before_float32": self.bytes_before,
            "bytes_after_float32": self.bytes_after,
            "fraction_removed": self.fraction_removed,
            "encoder_fraction_removed": self.encoder_fraction_removed,
            "flops_ratio_estimate": self.flops_ratio_estimate,
            "flops_note": (
                f"estimate: dense matmul multiply-adds per token at sequence length {self.flops_seq_len} "
                "(Q/K/V/output projections, attention scores and context, FFN); embeddings, softmax, "
                "LayerNorm, GELU and the task head are ignored"
            ),
            "layers": self.layers,
            "hidden_before": self.hidden_before,
            "hidden_after": self.hidden_after,
            "compensations": [_jsonable_row(row) for row in self.compensations],
        }
        if include_units:
            data["units"] = {
                "layer": self.units["layer"].tolist(),
                "group": self.units["group"].astype(str).tolist(),
                "unit": self.units["unit"].tolist(),
                "score": [None if not math.isfinite(x) else x for x in self.units["score"].tolist()],
                "kept": self.units["kept"].tolist(),
            }
        return data

    def summary(self) -> str:
        """Plain-text report (what the CLI prints)."""
        b, a = self.params_before, self.params_after
        mib = 2**20
        lines = [
            f"Plan: {self.plan.describe()}",
            f"Parameters: {b['total']:,} -> {a['total']:,} ({-100 * self.fraction_removed:+.1f} %)",
            f"  encoder:  {b['encoder']:,} -> {a['encoder']:,} ({-100 * self.encoder_fraction_removed:+.1f} %)",
            (f"  embeddings {b['embeddings']:,}, pooler {b['pooler']:,}, head {b['head']:,} (unchanged)"
             if self.hidden_after == self.hidden_before else
             f"  stream width {self.hidden_before} -> {self.hidden_after}: embeddings {b['embeddings']:,} -> "
             f"{a['embeddings']:,}, pooler {b['pooler']:,} -> {a['pooler']:,}, head {b['head']:,} -> {a['head']:,}"),
            f"Size (float32): {self.bytes_before / mib:.1f} MiB -> {self.bytes_after / mib:.1f} MiB",
            f"FLOPs per token after/before: {self.flops_ratio_estimate:.3f} (estimate, dense matmuls at "
            f"{self.flops_seq_len} tokens)",
            "",
            f"{'layer':>5}  {'qk dims/head':>12}  {'v dims/head':>11}  {'ffn units':>11}  {'params after/before':>22}",
        ]
        for info in self.layers:
            sb, sa = info["sizes_before"], info["sizes_after"]
            lines.append(
                f"{info['layer']:>5}  {sa['qk']:>5} / {sb['qk']:<4}  {sa['v']:>5} / {sb['v']:<3}  "
                f"{sa['ffn']:>5} / {sb['ffn']:<4}  {info['params_after']['total']:>10,} / {info['params_before']['total']:<10,}"
            )
        if self.compensations:
            lines += ["", "Compensation (requested -> applied per layer and group):"]
            for row in self.compensations:
                extra = f" damping {row['damping']:g}" if row.get("damping") is not None else ""
                note = f" ({row['note']})" if row.get("note") else ""
                lines.append(f"  layer {row['layer']} {row['group']}: {row['requested']} -> {row['method']}{extra}{note}")
        return "\n".join(lines)


def _jsonable_row(row: dict) -> dict:
    """A compensation row with NaN errors written as None (JSON has no NaN)."""
    errors = {k: (None if not math.isfinite(v) else v) for k, v in row.get("heldout_mse", {}).items()}
    return {**row, "heldout_mse": errors}


def build_report(model, selection: PruningSelection, *, flops_seq_len: int = DEFAULT_FLOPS_SEQ_LEN,
                 compensations: list[dict] | None = None) -> PruningReport:
    """The report of ``selection`` applied to ``model``, in closed form (nothing is copied).

    ``compensations`` are the per-layer rows ``prune`` records (see ``PruningReport``).
    """
    check_int(flops_seq_len, "flops_seq_len", "build_report", low=1,
              fix="It is the sequence length the FLOPs estimate assumes, e.g. 128.")
    cfg = model.config
    hidden = int(cfg.hidden_size)
    hidden_after = hidden_kept_count(selection.plan.hidden, hidden)
    bert = base_model(model)

    def embeddings(width: int) -> int:
        return (int(cfg.vocab_size) + int(cfg.max_position_embeddings) + int(cfg.type_vocab_size)) * width + 2 * width

    pooler_out = int(bert.pooler.dense.out_features) if getattr(bert, "pooler", None) is not None else 0
    # The pooler reads the stream and keeps its output width (hidden-dim pruning narrows only its input).
    pooler_before, pooler_after = (hidden * pooler_out + pooler_out, hidden_after * pooler_out + pooler_out)
    # The task head is whatever lies outside the encoder; unit pruning never changes it. A head
    # that reads the stream itself ("mean" pooling) loses a column per removed stream dim.
    head = 0
    head_reads_stream = 0
    if bert is not model:
        inner = {id(p) for p in bert.parameters()}
        head = sum(p.numel() for p in model.parameters() if id(p) not in inner)
        classifier = getattr(model, "classifier", None)
        if getattr(cfg, "classifier_pooling", "cls") == "mean" and classifier is not None:
            head_reads_stream = int(classifier.out_features)
    head_after = head - head_reads_stream * (hidden - hidden_after)
    after_sizes = selection.sizes_after()
    layers, enc_before, enc_after, macs_before, macs_after = [], 0, 0, 0, 0
    for i, (sb, sa) in enumerate(zip(selection.shapes, after_sizes)):
        pb = layer_params(hidden, sb["heads"], sb["qk"], sb["v"], sb["ffn"])
        pa = layer_params(hidden_after, sa["heads"], sa["qk"], sa["v"], sa["ffn"])
        enc_before += pb["total"]
        enc_after += pa["total"]
        macs_before += layer_macs(hidden, sb["heads"], sb["qk"], sb["v"], sb["ffn"], flops_seq_len)
        macs_after += layer_macs(hidden_after, sa["heads"], sa["qk"], sa["v"], sa["ffn"], flops_seq_len)
        layers.append(
            {
                "layer": i,
                "sizes_before": {"qk": sb["qk"], "v": sb["v"], "ffn": sb["ffn"]},
                "sizes_after": {"qk": sa["qk"], "v": sa["v"], "ffn": sa["ffn"]},
                "units_before": {g: int(len(selection.scores[i][g])) for g in GROUPS},
                "kept": {g: int(len(selection.kept[i][g])) for g in GROUPS},
                "percent": {g: selection.plan.percent(i, g) for g in GROUPS},
                "params_before": pb,
                "params_after": pa,
            }
        )

    def totals(encoder: int, width: int, pooler: int, head: int) -> dict[str, int]:
        return {"total": embeddings(width) + encoder + pooler + head, "embeddings": embeddings(width),
                "encoder": encoder, "pooler": pooler, "head": head}

    frames = []
    for i in range(selection.num_layers):
        for group in GROUPS:
            sc = selection.scores[i][group]
            kept = np.zeros(len(sc), dtype=bool)
            kept[selection.kept[i][group]] = True
            frames.append((np.full(len(sc), i), np.full(len(sc), GROUPS.index(group)), np.arange(len(sc)), sc, kept))
    cols = [np.concatenate(c) for c in zip(*frames)]
    units = pd.DataFrame(
        {
            "layer": cols[0].astype(np.int64),
            "group": pd.Categorical.from_codes(cols[1], categories=list(GROUPS)),
            "unit": cols[2].astype(np.int64),
            "score": cols[3].astype(np.float64),
            "kept": cols[4],
        }
    )
    return PruningReport(
        plan=selection.plan,
        model_fingerprint=selection.model_fingerprint,
        architecture=type(model).__name__,
        params_before=totals(enc_before, hidden, pooler_before, head),
        params_after=totals(enc_after, hidden_after, pooler_after, head_after),
        layers=layers,
        flops_ratio_estimate=macs_after / macs_before,
        flops_seq_len=flops_seq_len,
        units=units,
        compensations=list(compensations or []),
        hidden_before=hidden,
        hidden_after=hidden_after,
    )
