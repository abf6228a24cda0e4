"""The Prune page's "Find the smallest plan within X points": a plan search as a background job.

The form starts ``jobs.SearchJobSpec`` (``obce_core.search.search_task_model``) for the task model
on the page; the latest search of this model and task is then drawn from its trail file while it
runs (every evaluated plan with the confidence bound that judged it, the best one within the
tolerance so far) and from its report once it has finished (which examples the tolerance was judged
on, in words; search-split and dev scores; the drops with their 95 % intervals, drawn; cost before
and after). **Use these percentiles**
makes the best plan the page's plan in force (per-layer overrides, sliders at 0).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from obce_core import jobs, plots
from obce_core.io import read_json_lines
from obce_core.layout import GROUPS
from obce_core.pruning import COMPENSATIONS, SCORERS, PruningPlan
from obce_core.search import (COST_LABELS, COSTS, DEFAULT_CONFIDENCE, SEARCH_SPLIT_LABELS, SEARCH_SPLITS, SearchSettings,
                              best_row, read_search_report)
from obce_core.workspace import default_workspace
from obce_dashboard import prune_plan, ui
from obce_dashboard.job_panel import job_panel, poll

__all__ = ["search_ui"]

SEARCHES_FOLDER = "searches"
# What a trail row's split name ("<kind>:<fingerprint>") says about the examples the tolerance is judged on.
_SEARCHED_ON = {"held-out": "examples of the training split the model never trained on",
                "dev-halves": "one seeded half of the dev split (the other half reports the plan)",
                "file": "labelled examples from the file given"}


def _rows(path: str | None) -> list[dict]:
    return read_json_lines(path) if path else []  # the line being written right now is skipped


def _use_plan(plan: dict) -> None:
    ss = st.session_state
    chosen = PruningPlan.from_dict(plan)
    for name in ("qk", "v", "ffn"):
        ss[name] = 0.0
    ss["skip_layers"] = 0
    ss["scorer"], ss["compensation"], ss["prune_seed"] = chosen.scorer, chosen.compensation, chosen.seed
    prune_plan.set_overrides(chosen.layers)
    ss["_overrides_version"] = ss.get("_overrides_version", 0) + 1  # the overrides editor shows the new table


def trail_ui(rows: list[dict], spec: jobs.SearchJobSpec, num_layers: int) -> None:
    if not rows:
        st.caption("No plan has been evaluated yet (the job loads the model and scores the training sentences first).")
        return
    original = rows[0]
    best = best_row(rows)
    label = COST_LABELS[spec.settings.cost]
    st.plotly_chart(plots.search_front_figure(rows, original["main_score"], spec.settings.tolerance, best=best,
                                              cost_label=label.split(" (")[0]), key="search_front")
    searched_on = _SEARCHED_ON.get(str(original.get("split", "")).split(":")[0],
                                   "training examples (a search from before obce judged on unseen ones)")
    confidence = spec.settings.confidence
    st.caption(f"Each point is a plan really pruned and evaluated on {original['n_eval']} {spec.task} {searched_on}. "
               f"Its bar reaches down to the score its {confidence:g} % paired confidence bound allows: a plan is within "
               "the tolerance when the bar stays above the dashed floor (hollow: it does not).")
    if best is None:
        return
    bound = ""
    if "drop_upper" in best:
        bound = f", drop {best['drop']:+.2f} points, at most {best['drop_upper']:+.2f} at {confidence:g} % confidence"
    st.markdown(f"**Best so far:** {100 * best['cost_removed']:.1f} % of {label} removed, search-split score "
                f"{100 * best['main_score']:.2f} (original {100 * original['main_score']:.2f}{bound}; tolerance "
                f"{spec.settings.tolerance:g}).")
    table = pd.DataFrame(PruningPlan.from_dict(best["plan"]).percent_table(num_layers))
    st.dataframe(table, hide_index=True, column_config={g: st.column_config.NumberColumn(format="%g %%") for g in GROUPS})
    st.button("Use these percentiles here", icon=":material/input:", on_click=_use_plan, args=(best["plan"],),
              key="use_search_plan",
              help="Makes them this page's plan in force (per-layer overrides, sliders at 0). The page ranks units "
                   "with ITS scores; the search ranked them with scores of the task's training sentences, which the "
                   "saved model in the search's folder uses.")


def report_ui(spec: jobs.SearchJobSpec) -> None:
    try:
        report = read_search_report(spec.out)
    except ValueError:
        return
    st.markdown(report.what_was_searched())
    rows = [{"": "original", "search split": 100 * report.search_original["main_score"],
             "dev": 100 * report.dev_original["main_score"], "cost": report.cost_before, "parameters": report.params_before},
            {"": "found plan", "search split": 100 * report.search_found["main_score"],
             "dev": 100 * report.dev_found["main_score"], "cost": report.cost_after, "parameters": report.params_after}]
    if report.check_found is not None:
        rows[0]["dev half never searched"] = 100 * report.check_original["main_score"]
        rows[1]["dev half never searched"] = 100 * report.check_found["main_score"]
    st.dataframe(pd.DataFrame(rows).set_index(""),
                 column_config={"search split": st.column_config.NumberColumn(format="%.2f"),
                                "dev": st.column_config.NumberColumn(format="%.2f"),
                                "dev half never searched": st.column_config.NumberColumn(format="%.2f"),
                                "cost": st.column_config.NumberColumn(report.cost_label, format="%.4g")})
    drops = [(label, d) for label, d in (("search examples", report.search_drop),
                                         ("promised, fresh examples", report.promise), ("dev, whole", report.dev_drop),
                                         ("dev half never searched", report.check_drop)) if d is not None]
    if drops:
        st.plotly_chart(plots.search_drop_figure(drops, report.settings.tolerance), key="search_drops")
        st.caption("Points lost by the found plan against the original, scored on the same examples (paired); bars: "
                   "95 % bootstrap intervals, estimates. The tick on the search row is the one-sided bound that "
                   "accepted the plan. The promised row is what the search could promise before any dev example was "
                   "read: wider, because it kept the best of the plans it compared and fresh examples have noise of "
                   "their own.")
    if report.bound_note:
        st.info(report.bound_note, icon=":material/info:")
    note = f"; stopped at the {report.stopped}" if report.stopped else ""
    st.caption(f"{report.summary()}{note}. The pruned model, obce_plan.json and search_report.json are in `{spec.out}`: load "
               "that folder on **Model & data** to score, prune or fine-tune it further.")


def start_ui(workspace: Path, source: str, task: str, plan: PruningPlan) -> None:
    with st.form("search_form", border=True):
        st.markdown("**New search** (a background job; progress shows here, a refresh keeps it)")
        a, b, c = st.columns(3)
        tolerance = a.number_input("Tolerance (points)", min_value=0.0, max_value=100.0, value=1.0, step=0.5,
                                   key="search_tolerance")
        cost = b.selectbox("Cost to minimise", list(COSTS), format_func=lambda k: COST_LABELS[k], key="search_cost")
        budget = c.number_input("Time budget (s)", min_value=30, max_value=3600, value=600, step=30, key="search_budget")
        d, e, f = st.columns(3)
        scorer = d.selectbox("Rank units by", list(SCORERS), index=list(SCORERS).index(plan.scorer), key="search_scorer")
        compensation = e.selectbox("Compensation", list(COMPENSATIONS), index=list(COMPENSATIONS).index(plan.compensation),
                                   key="search_compensation")
        size = f.selectbox("Search examples (at most)", [500, 1000, 2000], index=2, key="search_size")
        g, h, _ = st.columns(3)
        split = g.selectbox("Judge the tolerance on", list(SEARCH_SPLITS), format_func=SEARCH_SPLIT_LABELS.get,
                            key="search_split",
                            help="Never on examples the model trained on: it has memorised them. 'automatic' takes "
                                 "the held-out part of the training split where obce measured that its drop "
                                 "predicts dev's, else one half of dev (the other half reports the plan).")
        confidence = h.number_input("Confidence (%)", min_value=51.0, max_value=99.9, value=DEFAULT_CONFIDENCE,
                                    step=5.0, key="search_confidence",
                                    help="A plan is within the tolerance when the upper one-sided bound of its drop "
                                         "(paired bootstrap over the examples) at this confidence is.")
        recover = st.checkbox("Then recover the found plan by distillation from this model", key="search_recover",
                              help="After the search, the pruned model learns from this task model (logits and every "
                                   "layer's hidden states, the 'recover' recipe: lower learning rate, early stopping "
                                   "on the examples the model never trained on). Saved beside the search's folder as "
                                   "'<folder>-recovered'; about 10 more minutes on a quiet 2-core CPU (estimate).")
        st.caption("The tolerance is judged on examples the model never trained on, by a paired confidence bound; "
                   "the whole dev split reports the found plan at the end. On this kind of CPU a search of all-MiniLM "
                   "takes several minutes; the first plan within the tolerance shows within about a minute.")
        go = st.form_submit_button("Find the smallest plan", icon=":material/search:")
    if go:
        with ui.errors("Could not start the search"):
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            (workspace / SEARCHES_FOLDER).mkdir(parents=True, exist_ok=True)  # the workspace's own folder
            out = workspace / SEARCHES_FOLDER / f"{task}-{scorer}-{tolerance:g}pt-{stamp}"
            settings = SearchSettings(tolerance=tolerance, cost=cost, scorer=scorer, compensation=compensation,
                                      time_budget_s=float(budget), split=split, confidence=float(confidence))
            spec = jobs.SearchJobSpec(model=source, task=task, out=str(out), settings=settings, search_size=int(size),
                                      recover=bool(recover))
            job_id = jobs.start_job(spec, workspace)
            st.success(f"Started search job `{job_id}`.")
            st.rerun()


def search_ui(source: str, task: str, plan: PruningPlan, num_layers: int) -> None:
    """The search section for the task model ``source`` (fine-tuned on ``task``)."""
    workspace = default_workspace()
    found = jobs.model_jobs(workspace, "search", source, task)
    if not found:
        st.caption("No search of this model yet: find the plan that removes the most cost within a tolerance, with "
                   "percentiles chosen per layer and group.")
        start_ui(workspace, source, task, plan)
        return
    folder, status, spec = found[0]
    active = status.active

    def draw() -> bool:
        now = jobs.job_status(folder)
        if now.active or now.state in ("failed", "cancelled"):
            job_panel(folder, now, f"search of {spec.task} within {spec.settings.tolerance:g} point(s)", unit="plan")
        trail_ui(_rows(now.output), spec, num_layers)
        if now.state == "done":
            report_ui(spec)
        return not now.active

    poll(draw, active)
    if not active:
        with st.expander("Start another search"):
            start_ui(workspace, source, task, plan)
