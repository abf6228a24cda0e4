"""The Persistence page's "Does the model use what rf ranks high?" panel, and a neuron's attribution.

Integrated gradients of every unit (``obce_core.attribution``) cost minutes on all-MiniLM, so they
run only after a click, in the background worker (``background_section``: progress, sliders free),
and are kept there and in obce_core's disk cache. What is explained: a task model's loss on
labelled dev examples of its task; any other model's sentence output (``1 - cosine`` to its own)
on the scored texts. The scorers' scores are those of the page's scores (Fisher only when they have
it) and the removed units those of the Prune page's plan with each scorer in turn.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from obce_core.attribution import (AttributionSettings, SentenceObjective, agreement_table, check_example_count,
                                   spearman_interval, task_objective, unit_attribution, with_scorers)
from obce_core.evidence.embedding import sentence_pooling
from obce_core.layout import GROUP_LABELS
from obce_core.plots.attribution import attribution_scatter
from obce_core.pruning import SCORERS, PruningPlan
from obce_core.scoring.texts import subsample
from obce_core.training import task_model_info
from obce_core.training.progress import PhaseEvent, StepEvent
from obce_dashboard import session, ui
from obce_dashboard.background import background, background_section

__all__ = ["COMPONENT_GROUP", "attribution_panel", "neuron_attribution_line"]

COMPONENT_GROUP = {"query": "qk", "key": "qk", "value": "v", "intermediate": "ffn"}
DEFAULT_EXAMPLES, DEFAULT_STEPS, PAGE_RESAMPLES = 128, 8, 500
_CLICKED = "_attribution_clicked"  # (model fingerprint, scores key, examples, steps) of the last click


def _compute(loaded, run, n: int, steps: int, plan: PruningPlan):
    """What the worker runs: ``(table with scorers, agreement, what was explained)``; draws nothing."""

    def compute(report):
        phase = {"text": "Attribution"}

        def progress(event) -> None:
            if isinstance(event, PhaseEvent):
                phase["text"] = event.phase[:1].upper() + event.phase[1:]
            elif isinstance(event, StepEvent):
                report(event.step, event.max_steps, phase["text"])

        info = task_model_info(run.model_source)
        if info is not None:
            objective = task_objective(loaded.model, loaded.tokenizer, info.task, n=n, seed=0)
        else:
            texts = subsample(list(run.texts), n, 0)
            check_example_count(len(texts), "the scored texts", "the attribution panel")
            objective = SentenceObjective.build(loaded.model, loaded.tokenizer, texts, sentence_pooling(loaded.model))
        table = unit_attribution(loaded.model, objective, AttributionSettings(steps=steps), progress=progress)
        report(0, 0, "Ranking every scorer against the attribution")
        table = with_scorers(table, loaded.model, run.scores, seed=plan.seed)
        agreement = agreement_table(table, loaded.model, run.scores, plan=plan, resamples=PAGE_RESAMPLES)
        return table, agreement

    return compute


def _result(run):
    """The finished result of this session's last click for ``run`` (None before one)."""
    clicked = st.session_state.get(_CLICKED)
    if clicked is None or clicked[0][1:2] != (run.key,):
        return None
    task = background().get(clicked[1])
    return task.result if task is not None and task.state == "done" else None


def neuron_attribution_line(run, layer: int, component: str, neuron: int) -> None:
    """Beside the neuron's rf: its attribution and rank, once the panel below computed them."""
    group = COMPONENT_GROUP.get(component)
    result = _result(run) if group is not None else None
    if result is None:
        return
    table = result[0]
    part = table[(table["layer"] == layer) & (table["group"] == group)]
    row = part[part["unit"] == neuron]
    if row.empty:
        return
    value = float(row["attribution"].iloc[0])
    rank = int((part["attribution"] < value).sum())
    pair = " (its query/key pair's)" if group == "qk" else ""
    st.caption(f"Attribution{pair}: **{value:.3g}**, rank {rank} of {len(part)} by attribution in L{layer} "
               f"{GROUP_LABELS[group]} (0 = the model leans on it least): the share of the loss fall from every unit "
               "removed to every unit kept that integrated gradients give it (see \"Does the model use what rf "
               "ranks high?\" below).")


def _wide(agreement: pd.DataFrame) -> pd.DataFrame:
    cell = agreement.apply(lambda r: "n/a" if np.isnan(r.spearman) else f"{r.spearman:+.2f} [{r.low:+.2f}, {r.high:+.2f}]",
                           axis=1)
    wide = agreement.assign(cell=cell).pivot_table(index=["layer", "group"], columns="scorer", values="cell",
                                                   aggfunc="first", sort=False).reset_index()
    wide["group"] = wide["group"].map(GROUP_LABELS)
    return wide[["layer", "group", *[s for s in SCORERS if s in wide.columns]]]


def _render(result, layer: int, component: str, neuron: int) -> None:
    table, agreement = result
    a = table.attrs
    checked = table.dropna(subset=["ablation"])
    rho = spearman_interval(checked["attribution"], checked["ablation"], resamples=PAGE_RESAMPLES)
    st.markdown(f"Explained: {a['objective']}, {a['steps']} points on the path. Mean loss with every unit kept "
                f"**{a['loss_kept']:.4g}**, with every unit removed **{a['loss_removed']:.4g}**; the attributions add "
                f"up to **{table['attribution'].sum():.4g}** (completeness gap {a['completeness_gap']:+.2g}). Exact "
                f"check: removing {len(checked)} sampled units one at a time, Spearman with their attribution "
                f"**{rho[0]:.2f}** (95 % bootstrap estimate {rho[1]:.2f} to {rho[2]:.2f}).")
    group = COMPONENT_GROUP.get(component)
    if group is None:
        st.caption(f"{component} feeds a LayerNorm and is never pruned, so it has no attribution; pick query, key, "
                   "value or intermediate to see its layer's scatter.")
    else:
        scorers = [s for s in SCORERS if s in table.columns and table[s].notna().any()]
        scorer = st.radio("Against", scorers, horizontal=True, key="attribution_scorer",
                          help="Which scorer's scores make the x axis (rf is the paper's).")
        part = table[(table["layer"] == layer) & (table["group"] == group)].sort_values("unit")
        row = agreement[(agreement["layer"] == layer) & (agreement["group"] == group) & (agreement["scorer"] == scorer)]
        st.plotly_chart(attribution_scatter(part, scorer, selected=neuron, spearman=float(row["spearman"].iloc[0])),
                        key="attribution_scatter")
    st.markdown("**Spearman of each scorer with the attribution** (95 % bootstrap interval over units, an estimate), "
                "every layer and group:")
    st.dataframe(_wide(agreement), hide_index=True, key="attribution_table")
    share = agreement.groupby("scorer", sort=False)[["removed_in_lowest", "chance"]].mean().reset_index()
    st.markdown(f"**Removed units among the lowest attributions** under the plan `{agreement.attrs['plan']}` with each "
                "scorer (mean over layers and groups; chance = what a random choice shares):")
    st.dataframe(share, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.2f")
                                                        for c in ("removed_in_lowest", "chance")})
    missing = table.attrs.get("missing_scorers") or []
    if missing:
        st.caption(f"Not ranked: {', '.join(missing)} (these scores have no Fisher column: the Prune page adds it for "
                   "a task model).")


def attribution_panel(run, layer: int, component: str, neuron: int, selection) -> None:
    """The panel (see the module docstring); ``selection`` is the Prune page's (None: no valid plan)."""
    st.subheader("Does the model use what rf ranks high?")
    info = task_model_info(run.model_source)
    what = (f"its {info.task} loss on labelled dev examples" if info is not None
            else "its sentence output (1 - cosine to its own, on the scored texts)")
    st.caption("rf measures how widely a unit's outputs spread; this asks whether the model relies on the unit. "
               f"Every FFN unit, value dim and query/key pair gets a mask on its output; integrated gradients of {what} "
               "along the path that takes every mask from 0 (all removed) to 1 (all kept) give each unit its share "
               "of the loss fall (higher = the model leans on it more). Then each scorer's ranking is compared with "
               "it, layer by layer. It runs a forward and backward pass per point and batch: about a minute for "
               "all-MiniLM on 128 examples, on a click.")
    with ui.errors("Could not load the scored model") as outcome:
        loaded = session.load_model_cached(run.model_source)
    if not outcome.ok:
        return
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    n = int(c1.number_input("Examples", min_value=32, max_value=2048, value=DEFAULT_EXAMPLES, step=32,
                            key="attribution_n", help="At least 32; drawn with seed 0."))
    steps = int(c2.number_input("Points on the path", min_value=2, max_value=64, value=DEFAULT_STEPS,
                                key="attribution_steps", help="Midpoint rule: the error falls as 1/points²."))
    ss = st.session_state
    if c3.button("Compute the attributions", key="attribution_run", icon=":material/play_arrow:"):
        ss[_CLICKED] = ((loaded.anatomy.fingerprint, run.key, n, steps), None)
    clicked = ss.get(_CLICKED)
    if clicked is None or clicked[0][:2] != (loaded.anatomy.fingerprint, run.key):
        return
    fingerprint, _, n, steps = clicked[0]
    plan = selection.plan if selection is not None else PruningPlan(ffn=50, qk=50, v=50)
    key = ("attribution", *clicked[0], json.dumps(plan.to_dict(), sort_keys=True))
    ss[_CLICKED] = (clicked[0], key)
    background_section("attribution", key, _compute(loaded, run, n, steps, plan),
                       lambda result: _render(result, layer, component, neuron),
                       label=f"Attribution of every unit ({n} examples, {steps} points)", shown_as=plan.describe(),
                       context=(fingerprint, run.key), error="Could not compute the attributions")
