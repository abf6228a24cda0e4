"""What the Prune and Compare pages share: the pruning settings, the current plan, and the pruned model.

Importing this module registers the pruning settings with ``state`` (``qk``, ``v``, ``ffn``,
``skip_layers``, ``compensation``, ``scorer``, ``prune_seed`` and ``overrides``, all kept in the
URL), so both pages must import it before ``state.run_page(main)``. ``current_plan()`` builds the
``PruningPlan`` those settings describe; the Compare page uses it as "the plan on the Prune page"
(with the defaults when the Prune page was never opened).

``overrides`` is the per-layer table as canonical JSON text (``{"3": {"ffn": 70}}``), so a shared
link carries it. ``Applied`` is one session's pruned model (kept in ``st.session_state``, never in
a shared cache); ``model_zip`` packs it as a zip of the directory ``save_pruned`` writes;
``cls_similarity`` is the sanity check shown after Apply.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from obce_core.capture import cls_embeddings
from obce_core.pruning import COMPENSATIONS, SCORERS, PruningPlan, PruningReport, save_pruned
from obce_dashboard import state

__all__ = [
    "MAX_PERCENT",
    "PLAN_SETTINGS",
    "SIMILARITY_TEXTS",
    "Applied",
    "current_plan",
    "parse_overrides",
    "overrides",
    "set_overrides",
    "model_zip",
    "cls_similarity",
]

MAX_PERCENT = 95.0
SIMILARITY_TEXTS = 32
PLAN_SETTINGS = ("qk", "v", "ffn", "skip_layers", "compensation", "scorer", "prune_seed", "overrides")


def _percent(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= MAX_PERCENT:
        raise ValueError(f"expected a percentage in [0, {MAX_PERCENT:g}]")
    return value


def _nonneg_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _choice(options):
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {list(options)}")
        return raw

    return parse


def parse_overrides(raw: str) -> str:
    """Per-layer overrides as canonical JSON text; raises ``ValueError`` (with the fix) on junk."""
    try:
        data = json.loads(raw) if str(raw).strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f'expected JSON such as {{"3": {{"ffn": 70}}}} ({exc})') from None
    plan = PruningPlan(layers=data)  # checks layer indices, group names and percentages
    return json.dumps({str(k): {g: float(v) for g, v in sorted(o.items())} for k, o in sorted(plan.layers.items())},
                      sort_keys=True, separators=(",", ":"))


# Defaults: 30 % of every group, the first layer left whole (at [CLS] its query/key/value rf are
# all 0, so the scores cannot rank them), the mean of each removed unit folded into the next bias.
for _name, _default, _parse in (
    ("qk", 30.0, _percent),
    ("v", 30.0, _percent),
    ("ffn", 30.0, _percent),
    ("skip_layers", 1, _nonneg_int),
    ("compensation", "mean", _choice(COMPENSATIONS)),
    ("scorer", "rf", _choice(SCORERS)),
    ("prune_seed", 0, _nonneg_int),
    ("overrides", "{}", parse_overrides),
):
    state.register_setting(_name, _default, _parse)


def overrides() -> dict[int, dict[str, float]]:
    """This session's per-layer overrides ``{layer: {group: percent}}``."""
    raw = st.session_state.get("overrides") or "{}"
    return {int(k): dict(v) for k, v in json.loads(raw).items()}


def set_overrides(layers: dict[int, dict[str, float]]) -> None:
    st.session_state["overrides"] = parse_overrides(json.dumps({str(k): v for k, v in layers.items() if v}))


def current_plan(num_layers: int | None = None) -> PruningPlan:
    """The ``PruningPlan`` of this session's settings. Raises ``ValueError`` (the plan's own check)
    when they do not fit; with ``num_layers``, overrides and ``skip_layers`` beyond the model too."""
    ss = st.session_state
    layers = overrides()
    plan = PruningPlan(
        ffn=float(ss.get("ffn", 0.0)), qk=float(ss.get("qk", 0.0)), v=float(ss.get("v", 0.0)),
        skip_layers=int(ss.get("skip_layers", 0)), compensation=str(ss.get("compensation", "mean")),
        scorer=str(ss.get("scorer", "rf")), seed=int(ss.get("prune_seed", 0)), layers=layers,
    )
    if num_layers is not None:
        plan.check_layers(num_layers)
    return plan


@dataclass(frozen=True)
class Applied:
    """One session's pruned model and what it came from (per user: lives in ``st.session_state``)."""

    model: Any
    tokenizer: Any  # the source's tokenizer, shared and read-only
    plan: PruningPlan
    report: PruningReport
    source: str
    source_fingerprint: str
    similarity: dict | None
    seconds: float

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


def model_zip(model, tokenizer, plan: PruningPlan | None = None, report: PruningReport | None = None,
              name: str = "obce-pruned") -> bytes:
    """A zip of the directory ``save_pruned`` writes (config, weights, tokenizer, plan, report),
    under one top folder ``name``. Built in a temporary directory that is removed afterwards."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="obce-zip-") as tmp:
        out = save_pruned(model, tokenizer, Path(tmp) / name, plan=plan, report=report)
        with zipfile.ZipFile(buf, "w") as zf:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                # float weights barely compress: store them, deflate the text files
                method = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".bin") else zipfile.ZIP_DEFLATED
                zf.write(path, f"{name}/{path.relative_to(out).as_posix()}", compress_type=method)
    return buf.getvalue()


def cls_similarity(original, pruned, tokenizer, texts, *, max_length: int = 128, n: int = SIMILARITY_TEXTS) -> dict:
    """Cosine similarity of the [CLS] last hidden state, pruned vs original, on the first ``n`` texts.

    Texts are strings or (first, second) pairs. Returns ``{"n", "mean", "min", "median"}``.
    """
    batch = list(texts)[:n]
    if not batch:
        raise ValueError("The sanity check needs at least one text; score some texts first.")
    a = cls_embeddings(original, tokenizer, batch, max_length=max_length).double()
    b = cls_embeddings(pruned, tokenizer, batch, max_length=max_length).double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
    return {"n": int(cos.size), "mean": float(cos.mean()), "min": float(cos.min()), "median": float(np.median(cos))}

