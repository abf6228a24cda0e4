"""The Persistence page's "another domain" panel: does the ranking hold on another kind of text?

Beside the noise panel (two halves of the scoring texts), ``domain_ui`` scores half of the
scoring texts against as many texts from another source (the demo corpus, a GLUE task's
sentences, an uploaded file) and shows, per layer and group at the plan's percentile, the
cross-source Spearman and removed-set overlap next to the split-half ones
(``obce_core.pruning.domain``). It scores three sets, so it runs on a click.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from obce_core.glue import TASKS
from obce_core.layout import GROUP_TAGS
from obce_core.pruning.domain import check_distinct_sources, domain_at_plan, domain_shift, domain_summary, text_source
from obce_core.pruning.stability import plan_percents
from obce_core.scoring import parse_texts, subsample
from obce_core.scoring.scores import texts_fingerprint
from obce_dashboard import session, ui

__all__ = ["domain_ui", "domain_reading"]

DOMAIN_SCORERS = ("rf", "std")


@st.cache_data(show_spinner=False, max_entries=8)
def _domain_shift(model_fingerprint: str, texts_key: str, other_key: str, settings: tuple, scorers: tuple,
                  percents: tuple, _model, _tokenizer, _texts: tuple, _other: tuple) -> pd.DataFrame:  # noqa: ARG001
    token, max_length, batch_size = settings
    return domain_shift(_model, _tokenizer, list(_texts), list(_other), scorers=list(scorers), percents=list(percents),
                        token=token, max_length=max_length, batch_size=batch_size)


def domain_reading(summary: pd.DataFrame) -> str:
    """One line from ``domain_summary``: per scorer, the median split-half and cross Spearman (Q/K/V, FFN)."""
    parts = []
    for scorer, rows in summary.groupby("scorer", sort=False):
        by = rows.groupby("part")[["half_spearman", "cross_spearman"]].median()
        cells = [f"{part.upper() if part == 'ffn' else 'Q/K/V'} {by.loc[part, 'half_spearman']:.2f} → "
                 f"{by.loc[part, 'cross_spearman']:.2f}" for part in ("qkv", "ffn") if part in by.index]
        parts.append(f"{scorer}: " + ", ".join(cells))
    return ("Median Spearman, split-half → cross-source: " + "; ".join(parts) + ". A cross figure well under the "
            "split-half one is the domain's doing; equal figures mean the other texts rank units no differently "
            "from another sample of the same texts.")


def _other_texts(n: int) -> tuple[list, str] | None:
    """The texts of the source the user picks, ``n`` of them (seed 0); None until there are some."""
    glue_tasks, _ = session.glue_tasks_available()
    options = ["demo"] + [f"glue:{t}" for t in glue_tasks] + ["upload"]
    labels = {"demo": "the demo corpus", "upload": "an uploaded file",
              **{f"glue:{t}": f"GLUE {TASKS[t].dir_name} sentences" for t in glue_tasks}}
    choice = st.selectbox("Other texts", options, format_func=labels.get, key="domain_source",
                          help="Scored beside half of the scoring texts. Pick a source of another kind than the scoring texts.")
    if choice == "upload":
        file = st.file_uploader("Other texts file", type=["txt", "csv", "tsv"], key="domain_upload",
                                help="A .txt with one text per line, or a .csv/.tsv with a 'text' or 'sentence' column.")
        if file is None:
            return None
        texts = parse_texts(file.getvalue().decode("utf-8-sig"), file.name)
        return subsample(texts, n, 0), f"{file.name} ({min(n, len(texts))} of {len(texts)} texts)"
    return text_source(choice, n=n, seed=0)


def domain_ui(run: session.ScoredRun, selection) -> None:
    """The panel; see the module docstring."""
    st.markdown("#### Does this ranking hold on another kind of text?")
    st.caption("Half of the scoring texts are scored against as many texts of another source, and against the other "
               "half of the scoring texts. The split-half figures are sampling noise alone; the cross figures are "
               "noise plus the change of domain, on sets of the same size, so the gap between them is the domain's.")
    n_half = len(run.texts) // 2
    with ui.errors("Could not read the other texts") as outcome:
        other = _other_texts(n_half)
        if other is not None:
            check_distinct_sources(run.texts, other[0], "the scoring texts", other[1])
    if not outcome.ok or other is None:
        return
    texts_b, label_b = other
    with ui.errors("Could not load the scored model") as outcome:
        loaded = session.load_model_cached(run.model_source)
    if not outcome.ok:
        return
    scoring = run.scores.settings
    scorers = tuple(dict.fromkeys([*DOMAIN_SCORERS, *([selection.plan.scorer] if selection is not None else [])]))
    percents = plan_percents(selection.plan if selection is not None else None, loaded.anatomy.layers)
    key = (loaded.anatomy.fingerprint, run.key or run.scores.texts_fingerprint, texts_fingerprint(texts_b),
           (scoring.token, int(scoring.max_length), int(scoring.batch_size)), scorers, tuple(sorted(set(percents.values()))))
    if st.button(f"Compare with {label_b} (scores three sets of up to {n_half:,} texts)", key="domain_run"):
        st.session_state["_domain_key"] = key
    if st.session_state.get("_domain_key") != key:
        return
    with ui.errors("Could not compare the rankings") as outcome:
        with st.status("Scoring half of the texts, the other half and the other source…", expanded=False) as status:
            shift = _domain_shift(*key, loaded.model, loaded.tokenizer, tuple(run.texts), tuple(texts_b))
            status.update(label=f"Scored three sets of {int(shift['n'].iloc[0]):,} texts", state="complete")
    if not outcome.ok:
        return
    st.markdown(domain_reading(domain_summary(shift)))
    table = domain_at_plan(shift, percents, scorers)
    table["group"] = table["group"].map(GROUP_TAGS)
    fmt = {c: st.column_config.NumberColumn(format="%.2f") for c in table.columns if c not in ("layer", "group")}
    fmt["p"] = st.column_config.NumberColumn("p (%)", format="%g")
    st.dataframe(table, hide_index=True, column_config=fmt, key="domain_table")
