"""What a plan costs: encoder FLOPs per token, encoder parameters, or measured latency.

The plan search spends a budget unevenly across layers and groups, so it needs the cost of any
per-layer plan without building it. ``PlanCost`` gives it in closed form from the model's layer
shapes and the plan's removal rule (``pruning.plan.n_removed``):

* ``flops``: dense multiply-adds per token of the encoder at ``seq_len`` tokens
  (``pruning.report.layer_macs``, the Prune page's estimate; no embeddings or head);
* ``params``: encoder parameters (``pruning.report.layer_params``);
* ``latency``: milliseconds per batch, an ESTIMATE built from measurements: the unpruned model's
  latency, minus, for each (layer, group), a ``1 / layers`` share of what pruning that group at
  that percentile in EVERY layer saved when measured (``measure_latency_table``). Layers of a
  BERT encoder have one shape, so one measurement per (group, percentile) serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from obce_core.choices import COSTS  # defined without torch for the CLI's parser
from obce_core.layout import GROUPS, layer_shapes
from obce_core.pruning.plan import PruningPlan, n_removed
from obce_core.pruning.report import DEFAULT_FLOPS_SEQ_LEN, layer_macs, layer_params
from obce_core.pruning.surgery import prune
from obce_core.training.trainer import measure_latency
from obce_core.validation import check_choice

__all__ = ["COSTS", "COST_LABELS", "PlanCost", "measure_latency_table"]

COST_LABELS = {"flops": "encoder FLOPs per token (estimate)", "params": "encoder parameters",
               "latency": "latency per batch (estimate from measurements)"}


def _sizes_after(shape: dict[str, int], percents: dict[str, float]) -> dict[str, int]:
    """One layer's heads, head sizes and FFN units after removing ``percents`` of each group."""
    return {"heads": shape["heads"],
            "qk": shape["qk"] - n_removed(percents.get("qk", 0), shape["qk"]),
            "v": shape["v"] - n_removed(percents.get("v", 0), shape["v"]),
            "ffn": shape["ffn"] - n_removed(percents.get("ffn", 0), shape["ffn"])}


@dataclass
class PlanCost:
    """The cost of a plan on one model, in closed form (see the module docstring).

    ``latency_saved[group][percent]``: milliseconds saved per batch when ``group`` loses
    ``percent`` in every layer (``measure_latency_table``); needed for ``cost="latency"`` only.
    """

    kind: str
    shapes: list[dict[str, int]]
    hidden: int
    seq_len: int = DEFAULT_FLOPS_SEQ_LEN
    latency_ms: float | None = None
    latency_saved: dict[str, dict[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        check_choice(self.kind, "cost", "PlanCost", COSTS,
                     fix="flops: encoder multiply-adds per token; params: encoder parameters; latency: measured.")
        if self.kind == "latency" and (self.latency_ms is None or not self.latency_saved):
            raise ValueError("cost='latency' needs measurements: build it with PlanCost.for_model(..., cost='latency', "
                             "latency_table=measure_latency_table(...)).")

    @classmethod
    def for_model(cls, model, cost: str = "flops", *, seq_len: int = DEFAULT_FLOPS_SEQ_LEN,
                  latency_table: tuple[float, dict] | None = None) -> "PlanCost":
        base, saved = latency_table if latency_table is not None else (None, {})
        return cls(kind=cost, shapes=layer_shapes(model), hidden=int(model.config.hidden_size), seq_len=seq_len,
                   latency_ms=base, latency_saved=saved)

    def of(self, plan: PruningPlan) -> float:
        """The cost of ``plan`` (its per-layer percentiles, overrides and skipped layers included)."""
        if self.kind == "latency":
            saved = 0.0
            for i in range(len(self.shapes)):
                for g in GROUPS:
                    p = float(plan.percent(i, g))
                    if p > 0:
                        saved += self._latency_saved(g, p) / len(self.shapes)
            return float(self.latency_ms - saved)
        total = 0
        for i, shape in enumerate(self.shapes):
            after = _sizes_after(shape, {g: plan.percent(i, g) for g in GROUPS})
            if self.kind == "flops":
                total += layer_macs(self.hidden, after["heads"], after["qk"], after["v"], after["ffn"], self.seq_len)
            else:
                total += layer_params(self.hidden, after["heads"], after["qk"], after["v"], after["ffn"])["total"]
        return float(total)

    def _latency_saved(self, group: str, percent: float) -> float:
        table = self.latency_saved.get(group, {})
        if percent in table:
            return table[percent]
        raise ValueError(f"No latency was measured for {group} at {percent:g} %; measure_latency_table must cover "
                         "every percentile the search may use.")

    def unpruned(self) -> float:
        return self.of(PruningPlan(compensation="none"))


def measure_latency_table(model, tokenizer, scores, texts, percents, *, batch_size: int = 32, max_length: int = 128,
                          repeats: int = 5, progress=None) -> tuple[float, dict[str, dict[float, float]]]:
    """The unpruned latency (ms per batch of ``batch_size`` of ``texts``) and, per group and
    percentile, what pruning that group in every layer saves; measured with
    ``training.measure_latency`` (median of ``repeats`` passes after a warm-up)."""
    def latency(m) -> float:
        return measure_latency(m, tokenizer, texts, batch_size=batch_size, max_length=max_length, repeats=repeats)

    base = latency(model)
    saved: dict[str, dict[float, float]] = {}
    todo = [(g, float(p)) for g in GROUPS for p in percents if p > 0]
    for k, (g, p) in enumerate(todo):
        pruned, _ = prune(model, scores, PruningPlan(**{g: p}, compensation="none", scorer="magnitude"))
        saved.setdefault(g, {})[p] = base - latency(pruned)
        if progress is not None:
            progress(k + 1, len(todo))
    return base, saved
