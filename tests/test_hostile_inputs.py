"""Hostile and careless inputs (issue 10): one test per item, named ``test_item<N>_...``."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from obce_core import NeuronScores, ScoresFileError, score_model
from obce_core.scoring import TRUNCATE_CHARS_PER_TOKEN, ScoreSettings

# -- item 1: two sessions scoring one shared model ----------------------------------------------


def test_item1_threads_scoring_one_shared_model_get_their_solo_results(tiny_bert, tokenizer, sentences, tmp_path):
    texts = {
        "a": list(sentences),
        "b": [s.upper() + " Then it ended." for s in reversed(sentences)] + ["One more.", "And the last one."],
    }
    # batch_size 2: many forward passes per call, so the two calls interleave
    solo = {k: score_model(tiny_bert, tokenizer, t, batch_size=2, use_cache=False) for k, t in texts.items()}
    for repeat in range(4):
        cache = tmp_path / f"cache{repeat}"
        barrier = threading.Barrier(2)
        results, errors = {}, []

        def work(name):
            try:
                barrier.wait()
                results[name] = score_model(tiny_bert, tokenizer, texts[name], batch_size=2, cache_dir=cache)
            except Exception as exc:  # reported below; a thread's exception would otherwise vanish
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(name,)) for name in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for name in texts:
            assert np.array_equal(results[name].activations, solo[name].activations)
            pd.testing.assert_frame_equal(results[name].table, solo[name].table)
        # and the cache holds each run's own scores, under its own texts
        entries = {NeuronScores.load(e).texts_fingerprint: NeuronScores.load(e) for e in (cache / "scores").iterdir()}
        assert len(entries) == 2
        for name in texts:
            cached = entries[solo[name].texts_fingerprint]
            assert np.array_equal(cached.activations, solo[name].activations)
            pd.testing.assert_frame_equal(cached.table, solo[name].table)


# -- item 5: tampered scores files --------------------------------------------------------------


@pytest.fixture
def scores_file(tiny_bert, tokenizer, sentences, tmp_path):
    return score_model(tiny_bert, tokenizer, sentences, use_cache=False).to_parquet(tmp_path / "scores.parquet")


def _tamper(path, *, column=None, row=3, value=None, drop_key=None):
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    table = arrow.to_pandas()
    if column is not None:
        table.loc[row, column] = value
    if drop_key is not None:
        obce = json.loads(meta[b"obce"])
        del obce[drop_key]
        meta[b"obce"] = json.dumps(obce).encode()
    out = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(out.replace_schema_metadata(meta), path)
    return path


@pytest.mark.parametrize(
    "column, value, field",
    [
        ("mean", float("nan"), "mean"),
        ("mean", 1e30, "mean"),  # finite, yet folded into a bias it overflows every output
        ("mean", -float("inf"), "mean"),
        ("std", -0.5, "std"),
        ("rf", float("nan"), "rf"),
        ("rf", -0.25, "rf"),  # a negated rf would rank the unit first
        ("rf", 2e6, "rf"),
    ],
)
def test_item5_tampered_statistics_are_refused(scores_file, column, value, field):
    _tamper(scores_file, column=column, value=value)
    with pytest.raises(ScoresFileError) as info:
        NeuronScores.from_parquet(scores_file)
    message = str(info.value)
    assert str(scores_file) in message and f"field {field!r}" in message


@pytest.mark.parametrize("key", ["model_fingerprint", "texts_fingerprint", "settings", "n_texts", "n_samples"])
def test_item5_missing_metadata_is_refused(scores_file, key):
    _tamper(scores_file, drop_key=key)
    with pytest.raises(ScoresFileError, match=rf"{str(scores_file)!r}.*field '{key}' is missing"):
        NeuronScores.from_parquet(scores_file)


def test_item5_untampered_file_still_loads(scores_file):
    assert len(NeuronScores.from_parquet(scores_file).table) == 2 * (24 * 4 + 37 + 24)


def test_item5_cache_entry_with_wrong_activation_shape_is_refused(tiny_bert, tokenizer, sentences, tmp_path):
    scores = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    (entry,) = (tmp_path / "scores").iterdir()
    np.save(entry / "activations.npy", scores.activations[:-1])
    with pytest.raises(ScoresFileError, match="field 'activations' has shape"):
        NeuronScores.load(entry)
    again = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)  # recomputed, not served
    assert np.array_equal(again.activations, scores.activations)


# -- item 7: huge texts and memory budgets -----------------------------------------------------


def test_item7_a_50_mb_line_scores_in_seconds_as_its_prefix(tiny_bert, tokenizer, sentences):
    huge = ("lorem ipsum dolor sit amet, " * 2_000_000)[: 50 * 2**20]  # one 50 MB line
    start = time.perf_counter()
    scores = score_model(tiny_bert, tokenizer, [huge, *sentences], use_cache=False)
    elapsed = time.perf_counter() - start
    prefix = score_model(tiny_bert, tokenizer, [huge[: TRUNCATE_CHARS_PER_TOKEN * 128], *sentences], use_cache=False)
    assert elapsed < 30, f"scoring took {elapsed:.1f} s"
    assert np.array_equal(scores.activations, prefix.activations)
    pd.testing.assert_frame_equal(scores.table, prefix.table)


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 0, -1.0, "4"])
def test_item7_memory_budget_must_be_finite_and_positive(tiny_bert, tokenizer, sentences, budget):
    with pytest.raises(ValueError, match=r"The 'memory_budget_gb' parameter of score_model must be a finite number > 0"):
        score_model(tiny_bert, tokenizer, sentences, memory_budget_gb=budget)


def test_item7_score_settings_use_the_one_message_template():
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of ScoreSettings must be an integer >= 1; got 0"):
        ScoreSettings(batch_size=0)
