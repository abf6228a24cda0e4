"""The Prune page's label-free evidence: what the current plan does to the model's own sentence output.

No labels, no training: on held-out texts (texts of the same source that were NOT scored, else the
demo corpus), the pruned model's sentence embeddings (the pooling it was trained with:
``obce_core.evidence.embedding.sentence_pooling``) against the original's: mean and lowest cosine,
the Spearman correlation of all pairwise similarities and the share of nearest neighbours kept.
Sentence pairs with a similarity score (an uploaded .tsv/.csv, or a local GLUE pairs task) add the
zero-shot Spearman x100 of embedding cosine against the score, original vs plan. Both the plan's
row and the curves over percentiles (on a click) are computed in the background
(``obce_dashboard.background``: a slider move never waits for them; the last plan's row shows,
marked stale, with the new one's progress); the curves' rows are also cached on disk per point
(``embedding_sweep``), so a second look, or a rerun after an interruption, costs nothing. The
curves' duration is estimated from the plan row's measured time (``estimates``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import streamlit as st

from obce_core import glue, plots
from obce_core.evidence.embedding import sentence_pooling
from obce_core.evidence.embedding_sweep import (EMBEDDING_SCORERS, EmbeddingProbe, embedding_plan_evidence,
                                                embedding_sweep, heldout_or_demo, metric_columns)
from obce_core.evidence.pairs import PAIR_TASKS, SentencePairs, glue_pairs, pairs_name, parse_pairs
from obce_core.evidence.sweep import SWEEP_GROUPS, sweep_points
from obce_core.jobs.estimate import evaluated_points
from obce_core.pruning import SCORERS, PruningPlan
from obce_dashboard import prune_plan, ui
from obce_dashboard.background import background_section
from obce_dashboard.estimates import points_estimate_text, remember_point_seconds

__all__ = ["HELDOUT_TEXTS", "PAIRS_FROM_TASK", "embedding_evidence_ui", "heldout_for"]

HELDOUT_TEXTS = 128  # enough for a stable similarity structure; one plan costs a second on a CPU for MiniLM
PAIRS_FROM_TASK = 200  # seeded dev pairs of a local GLUE pairs task
_LABELS = {"mean_cosine": "mean cosine to the original", "min_cosine": "lowest cosine to the original",
           "similarity_spearman": "Spearman of pairwise similarities", "knn_overlap": "nearest neighbours kept"}


@st.cache_data(show_spinner="Choosing held-out texts…", max_entries=16)
def _heldout(data: str, task: str | None, upload_id: str | None, run_key: str, _scored: tuple,  # noqa: ARG001
             _uploaded: tuple | None) -> tuple[list[str], str]:
    if data == "glue" and task:
        spec = glue.get_task(task)
        split = next(s for s in spec.splits if s.startswith("validation"))
        candidates = glue.dataset_texts(glue.load_task(spec, split), spec)
        where = f"{spec.name} {split} sentences not scored"
    elif data == "upload" and _uploaded:
        candidates, where = list(_uploaded), "the uploaded file's texts not scored"
    else:
        candidates, where = [], ""
    return heldout_or_demo(candidates, _scored, where, n=HELDOUT_TEXTS, seed=0)


def heldout_for(run) -> tuple[list[str], str]:
    """(held-out texts, where they come from) for the scored ``run``: see the module docstring."""
    data = run.settings.get("data", "demo")
    uploaded = st.session_state.get("uploaded") if data == "upload" else None
    return _heldout(data, run.settings.get("task"), run.settings.get("upload"), run.key,
                    tuple(run.texts), tuple(uploaded[1]) if uploaded else None)


@st.cache_resource(show_spinner="Embedding the held-out texts and pairs with the original model…", max_entries=4)
def _probe(source: str, fingerprint: str, texts_key: str, pairs_key: str, _model, _tokenizer,  # noqa: ARG001
           _texts: tuple, _where: str, _pairs: tuple) -> EmbeddingProbe:
    return EmbeddingProbe.build(_model, _tokenizer, list(_texts), sentence_pooling(_model), texts_source=_where,
                                pairs=list(_pairs))


def _key(data) -> str:
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=512)
def _plan_row(source: str, fingerprint: str, scores_key: str, plan_json: str, probe_key: str,  # noqa: ARG001
              _loaded, _run, _probe) -> dict:
    """``embedding_plan_evidence`` of one plan, cached per model, scores, plan and probe."""
    plan = PruningPlan.from_dict(json.loads(plan_json))
    calibration = prune_plan.calibration_if_needed(_loaded, _run, plan)
    return embedding_plan_evidence(_loaded.model, _run.scores, plan, _probe, calibration=calibration)


def pairs_ui() -> list[SentencePairs]:
    """The pairs sets chosen here: an uploaded file and local GLUE pairs tasks (their dev split)."""
    ss = st.session_state
    left, right = st.columns(2)
    upload = left.file_uploader("Sentence pairs with a score (.tsv/.csv)", type=["tsv", "csv"], key="pairs_upload",
                                help="Columns sentence1, sentence2, score (as GLUE's STS-B); other columns are "
                                     "ignored. At least 10 pairs. TSV is read without quote handling, like GLUE's "
                                     "files.")
    local = [t for t in glue.available_local_tasks() if t in PAIR_TASKS]
    tasks = right.multiselect("GLUE pairs (dev split)", local, key="pairs_tasks",
                              help=f"{PAIRS_FROM_TASK} seeded dev pairs; MRPC and QQP give a 0/1 paraphrase label, so "
                                   "their Spearman is against a BINARY score.",
                              placeholder="none" if local else "no local GLUE pairs task (OBCE_GLUE_DIR)")
    chosen: list[SentencePairs] = []
    if upload is not None:
        with ui.errors(f"Could not use {upload.name}"):
            if ss.get("_pairs_file", (None,))[0] != upload.file_id:  # parse each upload once
                ss["_pairs_file"] = (upload.file_id, parse_pairs(upload.getvalue().decode("utf-8-sig"), upload.name))
            chosen.append(ss["_pairs_file"][1])
    for task in tasks:
        with ui.errors(f"Could not read the {task} pairs"):
            chosen.append(_task_pairs(task))
    return chosen


@st.cache_data(show_spinner="Reading the GLUE pairs…", max_entries=8)
def _task_pairs(task: str) -> SentencePairs:
    return glue_pairs(task, n=PAIRS_FROM_TASK, seed=0)


def current_ui(row: dict, probe: EmbeddingProbe) -> None:
    cols = st.columns(4)
    for col, name in zip(cols, ("mean_cosine", "min_cosine", "similarity_spearman", "knn_overlap")):
        col.metric(_LABELS[name].capitalize(), f"{row[name]:.4f}", help=_HELP[name].format(k=probe.k))
    st.caption(f"On {len(probe.texts)} held-out texts ({probe.texts_source}); sentence output: "
               f"{probe.pooling.describe()}. 1.0 everywhere = this plan leaves the sentence output unchanged. Pruned "
               f"and measured in {row['eval_s']:.1f} s, no retraining.")
    for name, ref in probe.pairs.items():
        value = row[f"pairs_spearman_{name}"]
        st.metric(f"Zero-shot Spearman x100 on {ref.pairs.describe()}", f"{value:.2f}",
                  delta=f"{value - ref.original_spearman:+.2f} vs original ({ref.original_spearman:.2f})",
                  help="Spearman correlation (x100) of the cosine of each pair's embeddings against its score: how "
                       "MTEB scores STS without training. all-MiniLM-L6-v2 scores 82.0 on STS-B test (MTEB).")


_HELP = {
    "mean_cosine": "Average over the held-out texts of the cosine between the pruned and the original sentence "
                   "embedding of the same text.",
    "min_cosine": "The text whose embedding moved most: its cosine to the original embedding.",
    "similarity_spearman": "Spearman correlation between all pairwise cosine similarities of the texts under the "
                           "original and under the pruned model: does the similarity structure survive?",
    "knn_overlap": "Per text, the share of its {k} nearest neighbours (by cosine) under the original that are still "
                   "among its {k} nearest under the pruned model, averaged.",
}


def curves_ui(loaded, run, plan: PruningPlan, make_probe: Callable[[], EmbeddingProbe], context: tuple) -> None:
    """The curves' form; the curves are computed in the background (``make_probe`` builds, or finds
    cached, the probe there), with their progress, and an estimate from this machine first."""
    ss = st.session_state
    with st.form("embedding_curves_form", border=True):
        st.markdown("**Label-free curves** over percentiles (computed here, with progress; every point is cached)")
        a, b, c = st.columns(3)
        step = a.selectbox("Percentile step", [10, 20, 25], index=1, key="emb_step")
        seeds = b.number_input("Random seeds", min_value=1, max_value=5, value=1, key="emb_seeds")
        groups = c.multiselect("Groups", list(SWEEP_GROUPS), default=list(SWEEP_GROUPS), key="emb_groups")
        scorers = st.multiselect("Scorers", [s for s in SCORERS if s != "fisher"], default=list(EMBEDDING_SCORERS),
                                 key="emb_scorers", help="fisher needs a task's labels, so it has no label-free sweep.")
        points = evaluated_points(sweep_points(groups, range(0, 100, int(step)), scorers, range(int(seeds)),
                                               "label-free curves")) if groups and scorers else 0
        st.caption(f"Uses this page's skip layers ({plan.skip_layers}) and compensation ({plan.compensation}). Each "
                   f"point prunes the model and embeds the held-out texts: {points} point(s) here, "
                   + points_estimate_text(loaded, "labelfree_point", points) + ". Points already computed are "
                   "read from the cache.")
        if st.form_submit_button("Compute the curves", icon=":material/show_chart:"):
            ss["_embedding_curves"] = {"step": int(step), "seeds": int(seeds), "groups": list(groups),
                                       "scorers": list(scorers)}
    wanted = ss.get("_embedding_curves")
    if not wanted:
        return
    key = ("embedding_curves", *context, json.dumps(wanted, sort_keys=True), plan.skip_layers, plan.compensation)

    def compute(report):
        probe = make_probe()
        return embedding_sweep(
            loaded.model, run.scores, probe, groups=wanted["groups"], percentiles=range(0, 100, wanted["step"]),
            scorers=wanted["scorers"], seeds=range(wanted["seeds"]), skip_layers=plan.skip_layers,
            compensation=plan.compensation, calibration=prune_plan.calibration_if_needed(loaded, run, plan),
            progress=lambda done, total, row: report(done, total, "Label-free sweep: points"),
        ), probe

    background_section("embedding_curves", key, compute, lambda out: _curves_chart_ui(*out, plan, wanted),
                       label="Label-free sweep", shown_as="earlier curve settings", context=context,
                       error="Could not compute the label-free curves")


def _curves_chart_ui(rows, probe: EmbeddingProbe, plan: PruningPlan, wanted: dict) -> None:
    if rows.empty:
        st.caption("Pick at least one group and one scorer.")
        return
    names = {f"pairs_spearman_{n}": f"zero-shot Spearman x100 on {ref.pairs.describe()}"
             for n, ref in probe.pairs.items()}
    metric = st.selectbox("Curve of", metric_columns(rows), key="emb_metric",
                          format_func=lambda m: _LABELS.get(m) or names.get(m, m))
    # the original's value: 1 for every label-free measure (it is compared with itself), its own for pairs
    original = probe.pairs[metric[len("pairs_spearman_"):]].original_spearman if metric in names else 1.0
    current = {"ffn": plan.ffn, "v": plan.v, "qk": plan.qk}
    if plan.ffn == plan.v == plan.qk:
        current["all"] = plan.ffn
    st.plotly_chart(plots.sweep_curves_figure(rows, original, current=current, metric=metric, scale=1.0,
                                              y_title=_LABELS.get(metric) or "Spearman x100"), key="embedding_curves")
    st.caption(f"Each point a real pruned model on the {len(probe.texts)} held-out texts (no retraining); bands: range "
               f"over {wanted['seeds']} random seed(s). Dashed: the original; dotted: this page's sliders.")


def embedding_evidence_ui(loaded, run, plan: PruningPlan) -> None:
    """The label-free section for the model in ``loaded`` under ``plan`` (see the module docstring)."""
    with ui.errors("Could not prepare the label-free evidence") as outcome:
        texts, where = heldout_for(run)
        pairs = pairs_ui()
        pairs_key = _key(sorted((pairs_name(p), p.fingerprint()) for p in pairs))
    if not outcome.ok:
        return
    context = (loaded.source, loaded.anatomy.fingerprint, run.key, _key(texts), pairs_key)

    def make_probe() -> EmbeddingProbe:
        return _probe(loaded.source, loaded.anatomy.fingerprint, _key(texts), pairs_key, loaded.model,
                      loaded.tokenizer, tuple(texts), where, tuple(pairs))

    def compute(report) -> tuple[dict, EmbeddingProbe]:
        report(0, 0, "embedding the held-out texts with the original model")
        probe = make_probe()
        report(0, 0, "pruning with this plan and embedding the held-out texts")
        row = _plan_row(loaded.source, loaded.anatomy.fingerprint, run.key, plan.to_json(), _key(probe.key()),
                        loaded, run, probe)
        remember_point_seconds(loaded, "labelfree_point", row["eval_s"])
        return row, probe

    background_section("embedding_plan", ("embedding_plan", *context, plan.to_json()), compute,
                       lambda result: current_ui(*result),
                       label=f"Measuring this plan's sentence output on {len(texts)} held-out texts",
                       shown_as=plan.describe(), context=context, error="Could not measure this plan's sentence output")
    with ui.errors("Could not compute the label-free curves"):
        curves_ui(loaded, run, plan, make_probe, context)
