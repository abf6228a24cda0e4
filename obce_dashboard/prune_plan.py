"""The plan in force and the session's pruned model: what the Prune page sets and the
Persistence and Compare pages read.

The plan's settings (``qk``, ``v``, ``ffn``, ``skip_layers``, ``compensation``, ``scorer``,
``prune_seed``, ``overrides``) are rows of ``obce_dashboard.settings.SETTINGS``, so a shared link
carries them; ``current_plan()`` builds the ``PruningPlan`` they describe (the defaults when the
Prune page was never opened). ``overrides`` is the per-layer table as canonical JSON text
(``{"3": {"ffn": 70}}``). ``Applied`` is one session's pruned model (kept in
``st.session_state``, never in a shared cache). ``calibration_for(loaded, run)`` captures what the
fitted compensations (``auto``, ``lsq``, ``token-mean``) need from the scoring texts, once per
(model, texts) for the whole server; ``calibration_if_needed`` only when the plan's compensation
fits at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import streamlit as st

from obce_core import PruningPlan, PruningReport, PruningSelection, select_units
from obce_core.evidence import CALIBRATED_COMPENSATIONS
from obce_core.pruning import Calibration, capture_calibration
from obce_dashboard.settings import parse_overrides

__all__ = ["Applied", "calibration_for", "calibration_if_needed", "current_plan", "current_selection", "overrides",
           "set_overrides"]


def overrides() -> dict[int, dict[str, float]]:
    """This session's per-layer overrides ``{layer: {group: percent}}``."""
    raw = st.session_state.get("overrides") or "{}"
    return {int(k): dict(v) for k, v in json.loads(raw).items()}


def set_overrides(layers: dict[int, dict[str, float]]) -> None:
    """Replace the overrides; raises ``ValueError`` (with the valid range) for a value out of range."""
    st.session_state["overrides"] = parse_overrides("overrides", json.dumps({str(k): v for k, v in layers.items() if v}))


def current_plan(num_layers: int | None = None) -> PruningPlan:
    """The ``PruningPlan`` of this session's settings. Raises ``ValueError`` (the plan's own check)
    when they do not fit; with ``num_layers``, overrides and ``skip_layers`` beyond the model too."""
    ss = st.session_state
    plan = PruningPlan(
        ffn=float(ss.get("ffn", 0.0)), qk=float(ss.get("qk", 0.0)), v=float(ss.get("v", 0.0)),
        skip_layers=int(ss.get("skip_layers", 0)), compensation=str(ss.get("compensation", "auto")),
        scorer=str(ss.get("scorer", "rf")), seed=int(ss.get("prune_seed", 0)), layers=overrides(),
    )
    if num_layers is not None:
        plan.check_layers(num_layers)
    return plan


def current_selection(scores, model) -> PruningSelection:
    """``select_units`` of the plan in force on ``model``: the one source of every pruned/kept
    shown. Raises ``ValueError`` when the settings or the scores do not fit the model."""
    return select_units(scores, current_plan(), model)  # select_units checks the plan against the model


@st.cache_resource(show_spinner="Capturing calibration tokens for the compensation (once per model and texts)…",
                   max_entries=2)
def _calibration(fingerprint: str, texts_key: str, _model, _tokenizer, _texts: tuple, max_length: int) -> Calibration:  # noqa: ARG001
    return capture_calibration(_model, _tokenizer, list(_texts), max_length=max_length)


def calibration_for(loaded, run) -> Calibration:
    """The calibration of ``loaded``'s model over ``run``'s scoring texts (shared, read-only)."""
    return _calibration(loaded.anatomy.fingerprint, run.key or run.scores.texts_fingerprint, loaded.model,
                        loaded.tokenizer, tuple(run.texts), int(run.scores.settings.max_length))


def calibration_if_needed(loaded, run, plan: PruningPlan) -> Calibration | None:
    """``calibration_for`` when ``plan.compensation`` fits with it, else None (nothing captured)."""
    return calibration_for(loaded, run) if plan.compensation in CALIBRATED_COMPENSATIONS else None


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
