"""``unit_attribution``: one row per prunable unit with its attribution, cached on disk.

The table has ``layer, group, unit, attribution`` (``integrated``: -IG of the objective's mean loss,
higher = the model leans on the unit more) and ``ablation`` (``ablation``: the exact loss change
when that unit alone is removed; NaN outside the seeded sample). ``attrs`` say what was explained
and how well the path's rule held: ``loss_kept``/``loss_removed`` (mean loss with every unit kept
/ removed) and ``completeness_gap`` = sum of attributions - (loss_removed - loss_kept).

Results are cached like Fisher tables: ``<OBCE_CACHE_DIR>/attribution/<key>.parquet``, keyed by the
encoder and head weights, the objective (examples, labels, pooling, tokenization) and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from obce_core.attribution.ablation import ablation_effects, sample_units
from obce_core.attribution.integrated import integrated_gradients, masked_mean_loss, path_points
from obce_core.io import JsonDataclass, atomic_path
from obce_core.layout import GROUPS
from obce_core.loading import model_fingerprint
from obce_core.pruning.unit_masks import group_widths
from obce_core.scoring import default_cache_dir
from obce_core.training.progress import PhaseEvent, StepEvent
from obce_core.training.trainer import head_fingerprint
from obce_core.validation import check_int

__all__ = ["AttributionSettings", "default_attribution_dir", "read_attribution", "unit_attribution", "write_attribution"]

CACHE_FORMAT = 1
_META = b"obce_attribution"
Progress = Callable[[object], None]


@dataclass(frozen=True)
class AttributionSettings(JsonDataclass):
    """``steps``: points on the mask path (midpoint rule); ``ablation_units``: how many units get the
    exact check (0: none), drawn with ``seed``."""

    _json_name = "attribution settings"

    steps: int = 8
    ablation_units: int = 36
    seed: int = 0

    def __post_init__(self):
        path_points(self.steps)  # steps >= 2, with the fix in the message
        check_int(self.ablation_units, "ablation_units", "AttributionSettings", low=0,
                  fix="0 skips the exact check; 36 is the default.")
        check_int(self.seed, "seed", "AttributionSettings", low=0)


def default_attribution_dir() -> Path:
    """Where attribution tables are cached: ``<OBCE_CACHE_DIR>/attribution``."""
    return Path(default_cache_dir()) / "attribution"


def _cache_path(model, objective, settings: AttributionSettings, cache_dir) -> Path:
    data = {"format": CACHE_FORMAT, "model": model_fingerprint(model), "head": head_fingerprint(model),
            "objective": [objective.kind, objective.key], "settings": settings.to_dict()}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir or default_attribution_dir()) / f"{key}.parquet"


def write_attribution(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` (with its ``attrs``, as JSON metadata) atomically; ``read_attribution`` reads it back."""
    attrs = {k: v for k, v in table.attrs.items() if not isinstance(v, pd.DataFrame)}
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _META: json.dumps(attrs).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return Path(path)


def read_attribution(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by ``unit_attribution``'s cache or the CLI's ``--out``, with its ``attrs``.

    Raises ``ValueError`` naming the file when it is not such a table."""
    try:
        arrow = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{str(path)!r} is not a readable parquet file ({exc}); write it with "
                         "`python -m obce_core attribution --out FILE.parquet`.") from exc
    raw = (arrow.schema.metadata or {}).get(_META)
    table = arrow.to_pandas()
    missing = [c for c in ("layer", "group", "unit", "attribution") if c not in table.columns]
    if raw is None or missing:
        raise ValueError(f"{str(path)!r} is not an obce attribution table (no metadata, or no column(s) {missing}); "
                         "write it with `python -m obce_core attribution --out FILE.parquet`.")
    table.attrs = json.loads(raw)
    return table


def _shape_matches(table: pd.DataFrame, model) -> bool:
    want = {(i, g): n for i, w in enumerate(group_widths(model)) for g, n in w.items()}
    have = table.groupby(["layer", "group"]).size().to_dict()
    return {(int(k[0]), str(k[1])): int(v) for k, v in have.items()} == want


def unit_attribution(model, objective, settings: AttributionSettings = AttributionSettings(), *,
                     progress: Progress | None = None, cache_dir: str | os.PathLike | None = None,
                     use_cache: bool = True) -> pd.DataFrame:
    """Attribution (and, on a seeded sample, the exact ablation effect) of every FFN unit, value dim
    and query/key pair of ``model`` for ``objective`` (``TaskObjective`` / ``SentenceObjective``).

    ``progress`` receives a ``PhaseEvent`` per phase and ``StepEvent(done, total)`` per pass. An
    identical call is answered from the cache (see the module docstring).
    """
    if not isinstance(settings, AttributionSettings):
        raise TypeError(f"settings must be an AttributionSettings; got {type(settings).__name__}.")
    say = progress or (lambda event: None)
    path = _cache_path(model, objective, settings, cache_dir)
    if use_cache and path.is_file():
        try:
            cached = read_attribution(path)
        except ValueError:
            cached = None  # an unreadable entry is recomputed and replaced
        if cached is not None and _shape_matches(cached, model):
            say(PhaseEvent(f"attribution read from the cache ({path.name})"))
            return cached

    def steps(done: int, total: int) -> None:
        say(StepEvent(done, total))

    say(PhaseEvent(f"integrated gradients: {settings.steps} points x {len(objective.batches)} batches "
                   f"({objective.describe()})"))
    ig = integrated_gradients(model, objective, settings.steps, progress=steps)
    say(PhaseEvent("loss with every unit kept and with every unit removed (completeness)"))
    loss_kept, loss_removed = masked_mean_loss(model, objective, [1.0, 0.0], progress=steps)
    sample = sample_units(model, settings.ablation_units, settings.seed)
    effects = np.zeros(0)
    if len(sample):
        say(PhaseEvent(f"exact ablation of {len(sample)} sampled units, one at a time"))
        effects = ablation_effects(model, objective, sample, baseline=loss_kept, progress=steps)
    parts = [pd.DataFrame({"layer": np.int64(layer), "group": group, "unit": np.arange(len(values), dtype=np.int64),
                           "attribution": values})
             for layer, row in enumerate(ig.attribution) for group in GROUPS for values in [row[group]]]
    table = pd.concat(parts, ignore_index=True)
    checked = sample.assign(ablation=effects)
    table = table.merge(checked, on=["layer", "group", "unit"], how="left")
    total = float(table["attribution"].sum())
    table.attrs = {"objective": objective.describe(), "kind": objective.kind, "n_examples": int(objective.n),
                   "steps": int(settings.steps), "ablation_units": int(len(sample)), "seed": int(settings.seed),
                   "loss_kept": float(loss_kept), "loss_removed": float(loss_removed),
                   "completeness_gap": total - (float(loss_removed) - float(loss_kept)),
                   "model_fingerprint": model_fingerprint(model)}
    if use_cache:
        try:
            write_attribution(table, path)
        except OSError:
            pass  # a read-only or full cache must not lose the result the caller is waiting for
    return table
