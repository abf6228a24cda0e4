"""Retraining-free evidence: fast evaluation and the threshold sweep, against Trainer-based evaluate()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import GLUE_DIR, make_tiny_bert, needs_glue
from obce_core import PruningPlan, prune, score_model
from obce_core.evidence import (encode_split, evaluate_encoded, largest_safe_percentile, predict_logits,
                                score_interval, sweep_plan, threshold_sweep)

pytestmark = needs_glue


@pytest.fixture
def task_model(tokenizer, sentences, one_torch_thread):
    """A tiny random SST-2-shaped classifier (dropout off) and its scores on a few sentences."""
    model = make_tiny_bert(seed=3, classifier=True, num_labels=2)
    scores = score_model(model, tokenizer, sentences * 2, max_length=32)
    return model, scores


def _trainer_metrics(model, tokenizer, n, max_length=64):
    from obce_core.training import Recipe, evaluate

    return evaluate(model, tokenizer, "sst2", Recipe(eval_size=n, seed=0, max_length=max_length), glue_dir=GLUE_DIR,
                    device="cpu")


def test_fast_evaluation_equals_trainer_evaluate(task_model, tokenizer):
    model, _ = task_model
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=96, seed=0, max_length=64, batch_size=16)
    assert encoded.n == 96 and encoded.is_subset and "subset of 96" in encoded.describe()
    fast = evaluate_encoded(model, encoded)
    assert fast == pytest.approx(_trainer_metrics(model, tokenizer, 96))
    # Drawn order is restored: logits of example i equal a lone forward pass of example i.
    logits = predict_logits(model, encoded)
    from obce_core import glue

    data = glue.load_task("sst2", "validation", GLUE_DIR, n=96, seed=0)
    one = tokenizer(data["sentence"][5], truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        assert np.allclose(model(**one).logits.numpy()[0], logits[5], atol=1e-5)


def test_sweep_rows_are_real_evaluations(task_model, tokenizer, tmp_path):
    model, scores = task_model
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=64, seed=0, max_length=64)
    table = threshold_sweep(model, tokenizer, scores, "sst2", groups=("ffn", "all"), percentiles=(0, 50),
                            scorers=("rf", "random"), seeds=(0, 1), encoded=encoded, cache_dir=tmp_path)
    # ffn/all x {0, 50} x (rf once + random twice)
    assert len(table) == 2 * 2 * 3 and not table["cached"].any()
    unpruned = _trainer_metrics(model, tokenizer, 64)
    for _, row in table[table["percentile"] == 0].iterrows():
        assert row["main_score"] == pytest.approx(unpruned["main_score"])
    row = table[(table["group"] == "all") & (table["percentile"] == 50) & (table["scorer"] == "random")
                & (table["seed"] == 1)].iloc[0]
    pruned, _ = prune(model, scores, PruningPlan(ffn=50, qk=50, v=50, scorer="random", seed=1))
    assert row["main_score"] == pytest.approx(_trainer_metrics(pruned, tokenizer, 64)["main_score"])
    assert row["params_total"] == sum(p.numel() for p in pruned.parameters()) < table["params_total"].max()
    assert sweep_plan("all", 50, "random", 1) == PruningPlan(ffn=50, qk=50, v=50, scorer="random", seed=1)


def test_sweep_cache_answers_and_cancel_keeps_rows(task_model, tokenizer, tmp_path):
    model, scores = task_model
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=32, seed=0, max_length=32)
    kwargs = dict(groups=("ffn",), percentiles=(0, 30, 60), scorers=("std",), encoded=encoded, cache_dir=tmp_path)
    calls = []
    partial = threshold_sweep(model, tokenizer, scores, "sst2", **kwargs,
                              progress=lambda done, total, row: calls.append(done), should_stop=lambda: len(calls) >= 2)
    assert len(partial) == 2
    full = threshold_sweep(model, tokenizer, scores, "sst2", **kwargs)
    assert list(full["cached"]) == [True, True, False]
    again = threshold_sweep(model, tokenizer, scores, "sst2", **kwargs)
    assert again["cached"].all()
    pd.testing.assert_series_equal(again["main_score"], full["main_score"])


def test_sweep_refuses_a_model_without_task_head(tokenizer, sentences, tmp_path):
    encoder = make_tiny_bert(seed=2)
    scores = score_model(encoder, tokenizer, sentences, max_length=32)
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=8, seed=0, max_length=32)
    with pytest.raises(ValueError, match="finetune --task sst2"):
        threshold_sweep(encoder, tokenizer, scores, "sst2", percentiles=(0,), encoded=encoded, cache_dir=tmp_path)


def test_largest_safe_percentile_hand_computed():
    table = pd.DataFrame({
        "group": ["ffn"] * 7,
        "scorer": ["rf", "rf", "rf", "rf", "random", "random", "random"],
        "percentile": [0, 10, 20, 30, 0, 10, 10],
        "main_score": [0.90, 0.895, 0.85, 0.90, 0.90, 0.899, 0.87],
    })
    safe = largest_safe_percentile(table, 0.90, 0.01).set_index("scorer")["largest_safe_percentile"]
    # rf: 20 breaks the tolerance, so the later 30 does not count; random: worst seed at 10 breaks it.
    assert safe["rf"] == 10 and safe["random"] == 0


def test_score_interval_brackets_and_degenerates():
    labels = np.array([0, 1] * 50)
    perfect = np.stack([1 - labels, labels], axis=1).astype(float)
    exact = score_interval("sst2", perfect, labels, resamples=50)
    assert exact.score == exact.low == exact.high == 1.0
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(100, 2))
    interval = score_interval("sst2", noisy, labels, resamples=200)
    assert interval.low <= interval.score <= interval.high and interval.high - interval.low > 0.05
