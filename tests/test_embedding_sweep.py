"""The label-free sweep of a model without a task head, and the CLI's ``sweep`` for it.

Oracle: every CSV row is recomputed here without the sweep: the same scoring / held-out split,
scores, ``prune`` of ``sweep_plan``'s plan, the original's and the pruned model's sentence
embeddings compared with ``compare_embeddings``, and the pairs' Spearman with scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from obce_core import load_model, score_model
from obce_core.evidence.embedding import compare_embeddings, sentence_embeddings, sentence_pooling
from obce_core.evidence.embedding_sweep import EmbeddingProbe, embedding_sweep, label_free_texts
from obce_core.evidence.pairs import read_pairs
from obce_core.evidence.sweep import sweep_plan
from obce_core.pruning import capture_calibration, prune
from tests.embedding_helpers import PAIRS_FILE, save_tiny_sentence_transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cosines(model, tokenizer, pairs, pooling):
    a = sentence_embeddings(model, tokenizer, list(pairs.first), pooling).astype(np.float64)
    b = sentence_embeddings(model, tokenizer, list(pairs.second), pooling).astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_cli_sweep_of_a_model_without_a_head(tmp_path, tokenizer, capsys):
    from obce_core.cli import main

    source = save_tiny_sentence_transformer(tmp_path / "tiny-st", tokenizer)
    out = tmp_path / "rows.csv"
    code = main(["sweep", "--model", str(source), "--groups", "ffn,all", "--percentiles", "0,50",
                 "--scorers", "rf,random", "--seeds", "0,1", "--eval-size", "24", "--score-texts", "20",
                 "--pairs", str(PAIRS_FILE), "--csv", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "no task head, so label-free evidence on 24 held-out texts" in printed
    assert "mean of the real tokens, unit length" in printed and "Spearman of pairwise similarities" in printed
    rows = pd.read_csv(out)
    assert len(rows) == 2 * 2 * 3  # groups x percentiles x (rf + 2 random seeds)

    model, _ = load_model(str(source), device="cpu")
    scoring, held, _ = label_free_texts(score_n=20, eval_n=24, seed=0)
    assert not set(scoring) & set(held) and len(held) == 24
    pooling = sentence_pooling(model)
    scores = score_model(model, tokenizer, scoring, token="cls", max_length=128)
    calibration = capture_calibration(model, tokenizer, scoring, max_length=128)
    pairs = read_pairs(PAIRS_FILE)
    original = sentence_embeddings(model, tokenizer, held, pooling)
    original_sp = 100 * spearmanr(_cosines(model, tokenizer, pairs, pooling), pairs.score).statistic
    for row in rows.itertuples():
        plan = sweep_plan(row.group, row.percentile, row.scorer, row.seed)
        pruned = model if row.percentile == 0 else prune(model, scores, plan, calibration=calibration)[0]
        expected = compare_embeddings(original, sentence_embeddings(pruned, tokenizer, held, pooling), k=10)
        for column in ("mean_cosine", "min_cosine", "similarity_spearman", "knn_overlap"):
            assert getattr(row, column) == pytest.approx(expected[column], abs=1e-5), (row, column)
        pair_sp = 100 * spearmanr(_cosines(pruned, tokenizer, pairs, pooling), pairs.score).statistic
        assert row.pairs_spearman_sts_pairs == pytest.approx(pair_sp, abs=1e-4)
        assert row.pairs_original_sts_pairs == pytest.approx(original_sp, abs=1e-4)
    at_zero = rows[rows["percentile"] == 0]
    assert (at_zero["mean_cosine"] > 1 - 1e-6).all() and (at_zero["knn_overlap"] == 1).all()
    assert f"{original_sp:.2f}" in printed


def test_the_label_free_sweep_refuses_fisher_and_resumes_from_its_cache(tmp_path, tokenizer):
    source = save_tiny_sentence_transformer(tmp_path / "tiny-st", tokenizer)
    model, _ = load_model(str(source), device="cpu")
    scoring, held, where = label_free_texts(score_n=16, eval_n=12)
    scores = score_model(model, tokenizer, scoring, token="cls", max_length=64)
    probe = EmbeddingProbe.build(model, tokenizer, held, sentence_pooling(model), texts_source=where)
    with pytest.raises(ValueError, match="cannot hold 'fisher'.*no labels"):
        embedding_sweep(model, scores, probe, scorers=["rf", "fisher"], cache_dir=tmp_path)
    first = embedding_sweep(model, scores, probe, groups=["v"], percentiles=[0, 30], scorers=["std"], seeds=[0],
                            compensation="none", cache_dir=tmp_path)
    again = embedding_sweep(model, scores, probe, groups=["v"], percentiles=[0, 30], scorers=["std"], seeds=[0],
                            compensation="none", cache_dir=tmp_path)
    assert not first["cached"].any() and again["cached"].all()
    assert again["mean_cosine"].tolist() == first["mean_cosine"].tolist()


def test_cli_sweep_of_a_task_model_still_needs_its_task(tmp_path, tokenizer, capsys):
    from obce_core.cli import main
    from tests.conftest import make_tiny_bert

    folder = tmp_path / "clf"
    make_tiny_bert(classifier=True).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["sweep", "--model", str(folder)]) != 0
    assert "is a task model: name the GLUE task" in capsys.readouterr().err
