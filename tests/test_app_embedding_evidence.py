"""The Prune page's label-free evidence for a model without a task head, end to end in AppTest.

Oracles: the held-out texts, sentence embeddings, pruned model and pairs' Spearman recomputed here
without the dashboard (``compare_embeddings`` of the original's and the pruned model's outputs,
scipy's Spearman for the uploaded pairs), and the same for one point of the curves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from obce_core import load_model
from obce_core.evidence.embedding import compare_embeddings, heldout_texts, sentence_embeddings, sentence_pooling
from obce_core.evidence.pairs import read_pairs
from obce_core.evidence.sweep import sweep_plan
from obce_core.pruning import PruningPlan, capture_calibration, prune
from obce_core.scoring import demo_sentences
from obce_dashboard.embedding_evidence import HELDOUT_TEXTS
from tests.conftest import GLUE_DIR, needs_glue
from tests.embedding_helpers import PAIRS_FILE, save_tiny_sentence_transformer
from tests.test_app_background import settle
from tests.test_app_prune_compare import DEFAULT_PLAN, PRUNE_PAGE, _clean, scored_app


@pytest.fixture
def workspace(tmp_path, monkeypatch, one_torch_thread):
    ws = tmp_path / "workspace"
    monkeypatch.setenv("OBCE_WORKSPACE", str(ws))
    return ws


def _pair_spearman(model, tokenizer, pairs, pooling):
    a = sentence_embeddings(model, tokenizer, list(pairs.first), pooling).astype(np.float64)
    b = sentence_embeddings(model, tokenizer, list(pairs.second), pooling).astype(np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 100 * spearmanr(cos, pairs.score).statistic


def _expected_evidence(source, run, tokenizer):
    """The page's plan applied here, on the held-out texts the page must pick:
    (comparison, pooling, texts, model, pruned model, calibration)."""
    model, _ = load_model(str(source), device="cpu")
    pooling = sentence_pooling(model)
    held = heldout_texts(demo_sentences(), run.texts, n=HELDOUT_TEXTS, seed=0)
    calibration = capture_calibration(model, tokenizer, list(run.texts), max_length=run.scores.settings.max_length)
    pruned = prune(model, run.scores, PruningPlan(**DEFAULT_PLAN), calibration=calibration)[0]
    return (compare_embeddings(sentence_embeddings(model, tokenizer, held, pooling),
                               sentence_embeddings(pruned, tokenizer, held, pooling)), pooling, held, model, pruned,
            calibration)


def test_a_model_without_a_head_gets_label_free_evidence(workspace, tokenizer):
    source = save_tiny_sentence_transformer(workspace / "encoders" / "tiny-st", tokenizer)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    settle(at)  # the evidence is computed in the background
    run = at.session_state["scored"]

    # the oracle: held-out demo sentences, the page's default plan, the same calibration
    expected, pooling, held, model, pruned, calibration = _expected_evidence(source, run, tokenizer)
    assert not set(held) & set(run.texts)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Mean cosine to the original"] == f"{expected['mean_cosine']:.4f}"
    assert shown["Lowest cosine to the original"] == f"{expected['min_cosine']:.4f}"
    assert shown["Spearman of pairwise similarities"] == f"{expected['similarity_spearman']:.4f}"
    assert shown["Nearest neighbours kept"] == f"{expected['knn_overlap']:.4f}"
    assert any(f"On {HELDOUT_TEXTS} held-out texts" in c.value and "unit length" in c.value for c in at.caption)
    assert any("no task head" in i.value for i in at.info)  # the how-to for a task score stays

    # an uploaded pairs file: the plan's zero-shot Spearman against the original's
    at.file_uploader(key="pairs_upload").set_value(("sts_pairs.tsv", PAIRS_FILE.read_bytes(), "text/tab-separated-values"))
    at.run()
    settle(at)
    pairs = read_pairs(PAIRS_FILE)
    metric = next(m for m in at.metric if m.label.startswith("Zero-shot Spearman x100 on sts_pairs.tsv (32 pairs"))
    original_sp = _pair_spearman(model, tokenizer, pairs, pooling)
    assert metric.value == f"{_pair_spearman(pruned, tokenizer, pairs, pooling):.2f}"
    assert f"vs original ({original_sp:.2f})" in metric.delta

    # a file without the score column is refused with the fix, and the rest of the section stays
    at.file_uploader(key="pairs_upload").set_value(("bad.tsv", b"sentence1\tsentence2\nA\tB\n", "text/plain"))
    at.run()
    assert not at.exception
    assert any("lacks the column(s) ['score']" in e.value for e in at.error)
    assert any(m.label == "Mean cosine to the original" for m in at.metric)
    at.file_uploader(key="pairs_upload").set_value(None)
    at.run()

    # curves on a click: one group, two percentiles, rf only; the chart's point is a real pruned model
    at.selectbox(key="emb_step").set_value(25)
    at.multiselect(key="emb_groups").set_value(["ffn"])
    at.multiselect(key="emb_scorers").set_value(["rf"])
    next(b for b in at.button if b.label == "Compute the curves").click().run()
    settle(at)
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if any(t.get("name") == "rf" for t in json.loads(c.proto.spec)["data"]))
    line = next(t for t in chart["data"] if t.get("mode") == "lines+markers")
    assert line["x"] == [0, 25, 50, 75]
    plan = sweep_plan("ffn", 50.0, "rf", 0, skip_layers=DEFAULT_PLAN["skip_layers"], compensation="auto")
    point = prune(model, run.scores, plan, calibration=calibration)[0]
    at50 = compare_embeddings(sentence_embeddings(model, tokenizer, held, pooling),
                              sentence_embeddings(point, tokenizer, held, pooling))["mean_cosine"]
    assert line["y"][0] == pytest.approx(1.0, abs=1e-6) and line["y"][2] == pytest.approx(at50, abs=1e-5)


@needs_glue
def test_a_task_model_shows_the_label_free_evidence_on_request(workspace, tokenizer, monkeypatch):
    from tests.test_app_evidence import _save_task_model

    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    source = _save_task_model(workspace / "task_models" / "tiny-sst2", tokenizer)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    settle(at)
    assert any(m.label.startswith("sst2 score of this plan") for m in at.metric)
    assert not any(m.label == "Mean cosine to the original" for m in at.metric)  # only on request
    at.toggle(key="embedding_for_task_model").set_value(True).run()
    settle(at)
    run = at.session_state["scored"]
    expected, pooling, held, model, pruned, calibration = _expected_evidence(source, run, tokenizer)
    assert pooling.pooling == "cls" and "task head" in pooling.source  # no sentence-transformers files here
    shown = {m.label: m.value for m in at.metric}
    assert shown["Mean cosine to the original"] == f"{expected['mean_cosine']:.4f}"
    assert shown["Nearest neighbours kept"] == f"{expected['knn_overlap']:.4f}"
