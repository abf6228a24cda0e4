"""``PruningPlan``: what to remove, checked on creation and round-tripped through JSON.

Rules
-----
* ``ffn``: FFN units (``intermediate`` neurons). Percentile ``p`` removes
  ``floor(p * n / 100)`` of the ``n`` units of a layer, capped at ``n - 1`` (one unit always stays).
* ``v``: value dims. ``floor(p * d / 100)`` dims are removed from EVERY head (``d`` = the layer's
  value head size), capped at ``d - 1``; each head keeps its own best-scoring dims. All heads must
  keep the same size because attention views the value projection as ``heads x d``. The share
  removed from a layer is therefore ``floor(p * d / 100) / d``, which can be a little under ``p``
  (for d = 32 and p = 30: 9 of 32 = 28.1 %).
* ``qk``: query and key dims, removed as matched pairs. Same per-head count rule as ``v``.
* ``skip_layers = k`` leaves the first ``k`` layers unpruned (at the [CLS] token, layer 0's
  query/key/value see the same input for every sentence, so their rf is 0 and says nothing). An
  explicit ``layers[i]`` override wins over ``skip_layers``.
* ``scorer`` names a registered importance (``obce_core.pruning.importance``); ``seed`` feeds the
  random one. ``compensation`` is what replaces a removed unit (``obce_core.pruning.compensation``):
  ``auto`` (the default), ``none``, ``token-mean``, ``cls-mean``, ``cls-mean-std`` or ``lsq``. Plans
  written before these names existed said ``mean`` (read as ``cls-mean``, what it computed) and
  ``mean+std`` (read as ``cls-mean-std``); a plan read back says the new name.
* ``hidden``: dims of the residual stream (the model's ``hidden_size``), removed from every layer
  at once: ``floor(p * H / 100)`` of the ``H`` dims, ranked by the plan's scorer over the stream's
  coordinates (``obce_core.pruning.hidden_stream``; rf, std, magnitude or random), and at least
  ``MIN_HIDDEN_KEPT`` dims stay (a LayerNorm over one dim outputs its bias whatever the input).
  Per-layer overrides do not apply: every layer reads and writes the same stream.
  ``hidden_norm`` says how the narrowed LayerNorms normalise (``HIDDEN_NORMS``). A plan with
  ``hidden = 0`` writes neither key, so its JSON is what it was before hidden dims existed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from obce_core.choices import SCORERS  # IMPORTANCES' names, defined without torch for the CLI's parser
from obce_core.io import JsonDataclass
from obce_core.layout import GROUP_NAMES, GROUPS
from obce_core.pruning.compensation import COMPENSATION_ALIASES, COMPENSATIONS
from obce_core.pruning.hidden_stream import HIDDEN_NORMS, HIDDEN_SCORERS
from obce_core.pruning.importance import IMPORTANCES
from obce_core.validation import check_choice, check_int, check_number, invalid

__all__ = ["COMPENSATIONS", "GROUPS", "MIN_HIDDEN_KEPT", "SCORERS", "PruningPlan", "hidden_kept_count", "n_removed"]

_OWNER = "PruningPlan"
MIN_HIDDEN_KEPT = 2


def _check_percent(value, name: str, group: str) -> None:
    check_number(value, name, _OWNER, low=0, high=100, high_open=True,
                 fix=f"It is the percentage of {GROUP_NAMES[group]} removed, e.g. 30 for 30 % "
                     "(100 would remove every unit; each head keeps at least one dim).")


def n_removed(percent: float, n: int) -> int:
    """``floor(percent * n / 100)``, capped at ``n - 1``.

    The rounding guard keeps float noise (29 * 100 / 100 written as 28.999...) from losing a unit.
    """
    if percent <= 0 or n <= 1:
        return 0
    return min(int(math.floor(round(percent * n / 100.0, 9))), n - 1)


@dataclass
class PruningPlan(JsonDataclass):
    """What to prune. Percentiles are in [0, 100); see the module docstring for the rules.

    ``layers`` maps a layer index (int, or its string form as JSON writes it) to overrides such as
    ``{"ffn": 70, "qk": 0}``; an override wins over the global value and over ``skip_layers``.
    """

    _json_name = "pruning plan"
    _json_hint = " (Per-layer settings go under 'layers', e.g. {\"layers\": {\"3\": {\"ffn\": 70}}}.)"

    ffn: float = 0
    qk: float = 0
    v: float = 0
    skip_layers: int = 0
    compensation: str = "auto"
    scorer: str = "rf"
    seed: int = 0
    layers: dict[int, dict[str, float]] = field(default_factory=dict)
    hidden: float = 0
    hidden_norm: str = "kept"

    def __post_init__(self):
        for group in GROUPS:
            _check_percent(getattr(self, group), group, group)
        check_int(self.skip_layers, "skip_layers", _OWNER, low=0,
                  fix="It is how many first layers stay unpruned; use 0 to prune every layer.")
        if isinstance(self.compensation, str):
            self.compensation = COMPENSATION_ALIASES.get(self.compensation, self.compensation)
        check_choice(self.compensation, "compensation", _OWNER, COMPENSATIONS,
                     fix="'auto' picks, per layer, what reconstructs the layer's output best on held-out "
                         "tokens (none without calibration data); 'none' adds nothing.")
        check_choice(self.scorer, "scorer", _OWNER, IMPORTANCES,
                     fix="'rf' is the paper's persistence score; std, magnitude, flap, fisher and random are controls.")
        check_int(self.seed, "seed", _OWNER, low=0, fix="It seeds scorer 'random'.")
        check_number(self.hidden, "hidden", _OWNER, low=0, high=100, high_open=True,
                     fix="It is the percentage of the residual stream's dims removed, e.g. 10 for 10 %.")
        check_choice(self.hidden_norm, "hidden_norm", _OWNER, HIDDEN_NORMS,
                     fix="'kept' normalises over the kept dims; 'std-ratio' and 'fitted' correct that "
                         "with factors measured on the scoring texts.")
        if self.hidden > 0 and self.scorer not in HIDDEN_SCORERS:
            raise invalid("scorer", _OWNER, f"one of {', '.join(HIDDEN_SCORERS)} when hidden > 0", self.scorer,
                          f"Hidden dims have no '{self.scorer}' score (it is defined on FFN units and heads); "
                          "use scorer 'rf', 'std', 'magnitude' or 'random', or hidden=0.")
        if not isinstance(self.layers, dict):
            raise invalid("layers", _OWNER, "a dict {layer index: {group: percent}}", self.layers,
                          "Example: {3: {'ffn': 70}}.")
        layers: dict[int, dict[str, float]] = {}
        for key, overrides in self.layers.items():
            index = _layer_index(key)
            if index in layers:
                raise invalid("layers", _OWNER, "a dict naming each layer once", self.layers,
                              f"Layer {index} appears twice; merge its overrides.")
            if not isinstance(overrides, dict):
                raise invalid(f"layers[{index}]", _OWNER, "a dict {group: percent}", overrides,
                              "Example: {'ffn': 70}.")
            unknown = [g for g in overrides if g not in GROUPS]
            if unknown:
                raise invalid(f"layers[{index}]", _OWNER, f"a dict whose keys are among {', '.join(GROUPS)}",
                              overrides, f"Unknown group(s) {unknown}: ffn = FFN units, qk = query/key pairs, "
                                         "v = value dims.")
            for group, value in overrides.items():
                _check_percent(value, f"layers[{index}][{group!r}]", group)
            layers[index] = dict(overrides)
        self.layers = layers

    # -- rules -----------------------------------------------------------------------------
    def percent(self, layer: int, group: str) -> float:
        """The percentile that applies to ``group`` in ``layer`` (override > skip_layers > global)."""
        check_choice(group, "group", "PruningPlan.percent", GROUPS)
        override = self.layers.get(layer, {})
        if group in override:
            return override[group]
        if layer < self.skip_layers:
            return 0
        return getattr(self, group)

    def percent_table(self, num_layers: int) -> list[dict]:
        """One row per layer, ``{"layer": "L3", "qk": .., "v": .., "ffn": ..}``: the percent in force."""
        return [{"layer": f"L{i}", **{g: float(self.percent(i, g)) for g in ("qk", "v", "ffn")}} for i in range(num_layers)]

    def check_hidden(self, hidden_size: int) -> int:
        """The stream dims ``hidden`` keeps of ``hidden_size``; ``ValueError`` when fewer than
        ``MIN_HIDDEN_KEPT`` would stay."""
        kept = hidden_kept_count(self.hidden, hidden_size)
        if kept < MIN_HIDDEN_KEPT:
            most = 100.0 * (hidden_size - MIN_HIDDEN_KEPT) / hidden_size
            raise invalid("hidden", _OWNER, f"a percentage that keeps at least {MIN_HIDDEN_KEPT} of the model's "
                                            f"{hidden_size} stream dims", self.hidden,
                          f"It keeps {kept}: every LayerNorm would be left with {kept} dim(s) and output a "
                          f"constant. Use at most {most:.4g}.")
        return kept

    def check_layers(self, num_layers: int) -> None:
        """Refuse layer indices and ``skip_layers`` that do not fit a model with ``num_layers``."""
        if self.skip_layers > num_layers:
            raise invalid("skip_layers", _OWNER, f"at most the model's {num_layers} layers", self.skip_layers,
                          f"Use 0..{num_layers}.")
        bad = sorted(i for i in self.layers if i >= num_layers)
        if bad:
            raise invalid("layers", _OWNER, f"overrides of layers 0..{num_layers - 1} (the model has "
                                            f"{num_layers} layers)", {i: self.layers[i] for i in bad},
                          "Remove or renumber those overrides.")

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["layers"] = {str(k): dict(v) for k, v in sorted(self.layers.items())}
        if not self.hidden:
            # Plans without hidden dims keep the JSON they had before (stores key results by it).
            del data["hidden"], data["hidden_norm"]
        return data

    def describe(self) -> str:
        text = (
            f"ffn={self.ffn:g} qk={self.qk:g} v={self.v:g} skip_layers={self.skip_layers} "
            f"compensation={self.compensation} scorer={self.scorer}"
        )
        if self.scorer == "random":
            text += f" seed={self.seed}"
        if self.hidden:
            text += f" hidden={self.hidden:g} hidden_norm={self.hidden_norm}"
        if self.layers:
            text += " layers=" + json.dumps({str(k): v for k, v in sorted(self.layers.items())})
        return text


def hidden_kept_count(percent: float, hidden_size: int) -> int:
    """Stream dims left after removing ``percent`` % of ``hidden_size`` (``n_removed``'s rule, not capped
    at one: ``PruningPlan.check_hidden`` refuses fewer than ``MIN_HIDDEN_KEPT``)."""
    if percent <= 0:
        return hidden_size
    return hidden_size - int(math.floor(round(percent * hidden_size / 100.0, 9)))


def _layer_index(key) -> int:
    """A ``layers`` key as a layer index: an int, or its string form as JSON writes it."""
    try:
        index = int(key)
        if isinstance(key, (bool, float)) or (isinstance(key, str) and key.strip() != str(index)):
            raise ValueError
    except (TypeError, ValueError):
        raise invalid("layers", _OWNER, "a dict keyed by layer indices (0-based integers, or their "
                                        "string form such as '3')", key,
                      f"Rename the key {key!r} to the index of the layer it overrides.") from None
    if index < 0:
        raise invalid("layers", _OWNER, "a dict keyed by layer indices >= 0 (layer indices start at 0)", index)
    return index
