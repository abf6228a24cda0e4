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
fits at all. ``with_fisher(loaded, run)`` adds the ``fisher`` column when the plan ranks by it
(``fisher_missing`` says whether that is still to compute, ``fisher_table`` computes it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import streamlit as st

from obce_core import PruningPlan, PruningReport, PruningSelection, select_units
from obce_core.evidence import CALIBRATED_COMPENSATIONS
from obce_core.pruning import FISHER_COLUMN, Calibration, add_fisher, capture_calibration, fisher_information
from obce_core.training import task_model_info
from obce_dashboard import session, settings
from obce_dashboard.settings import parse_overrides

__all__ = ["Applied", "FISHER_EXAMPLES", "calibration_for", "calibration_if_needed", "current_plan", "current_selection",
           "fisher_missing", "fisher_table", "overrides", "set_overrides", "with_fisher"]

# Labelled training examples the ``fisher`` scorer sums over on this page (the CLI's default too).
FISHER_EXAMPLES = 512


def overrides() -> dict[int, dict[str, float]]:
    """This session's per-layer overrides ``{layer: {group: percent}}``."""
    raw = settings.value("overrides") or "{}"
    return {int(k): dict(v) for k, v in json.loads(raw).items()}


def set_overrides(layers: dict[int, dict[str, float]]) -> None:
    """Replace the overrides; raises ``ValueError`` (with the valid range) for a value out of range."""
    st.session_state["overrides"] = parse_overrides("overrides", json.dumps({str(k): v for k, v in layers.items() if v}))


def current_plan() -> PruningPlan:
    """The ``PruningPlan`` of this session's settings (``SETTINGS``' defaults for those not set yet).
    Raises ``ValueError`` (the plan's own check) when they do not fit."""
    value = settings.value
    return PruningPlan(
        ffn=float(value("ffn")), qk=float(value("qk")), v=float(value("v")), skip_layers=int(value("skip_layers")),
        compensation=str(value("compensation")), scorer=str(value("scorer")), seed=int(value("prune_seed")),
        layers=overrides(),
    )


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


@st.cache_resource(show_spinner=f"Computing Fisher importance on {FISHER_EXAMPLES} labelled training examples "
                                "(once per task model; about a minute for all-MiniLM on a CPU)…", max_entries=4)
def _fisher_table(fingerprint: str, source: str, task: str, _model, _tokenizer):  # noqa: ARG001 (keys of the cache)
    return fisher_information(_model, _tokenizer, task, n=FISHER_EXAMPLES, seed=0)


def fisher_missing(loaded, run) -> str | None:
    """The task whose ``fisher`` column the plan in force needs and ``run`` lacks, else None.
    Raises ``ValueError`` saying what to load when the model is not a task model (Fisher needs the
    task's labels and loss)."""
    if st.session_state.get("scorer") != "fisher" or FISHER_COLUMN in run.scores.table.columns:
        return None
    info = task_model_info(loaded.source)
    if info is None:
        raise ValueError(
            f"fisher needs a task model: it sums squared loss gradients over labelled training examples, and "
            f"`{loaded.source}` has no task head (no obce_task.json). Load a task model on Model & data (Task "
            "models, or fine-tune one there), or rank by another scorer.")
    return info.task


def fisher_table(loaded, task: str):
    """The Fisher table of ``loaded``'s task model on ``task`` (computed once per task model; slow:
    the Prune page calls it in the background)."""
    # The source too: the fingerprint covers the encoder, and Fisher depends on the head as well.
    return _fisher_table(loaded.anatomy.fingerprint, loaded.source, task, loaded.model, loaded.tokenizer)


def with_fisher(loaded, run):
    """``run`` with the ``fisher`` column in its scores when the plan in force ranks by ``fisher``
    (``fisher_table``, then made this session's run); otherwise ``run`` unchanged. Raises
    ``ValueError`` as ``fisher_missing`` does."""
    task = fisher_missing(loaded, run)
    if task is None:
        return run
    run = replace(run, scores=add_fisher(run.scores, fisher_table(loaded, task)))
    session.set_current_scored(run)  # every page of this session now ranks by the same column
    return run


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
