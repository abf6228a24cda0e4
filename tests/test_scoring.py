"""Scores: schema, tie rule, cache behaviour and files, on tiny models and the embedded MiniLM."""

import numpy as np
import pandas as pd
import pytest

import obce_core.scoring.scores as scoring
from obce_core import NeuronScores, ScoresFileError, score_model
from obce_core.scoring import CaptureError
from obce_core.scoring.texts import demo_sentences, subsample
from tests.test_persistence import gudhi_deaths


def test_table_schema_and_values(tiny_bert, tokenizer, sentences, tmp_path):
    s = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    t = s.table
    assert list(t.columns[:7]) == ["layer", "component", "neuron", "rf", "mean", "std", "prunable"]
    assert len(t) == 2 * (24 * 4 + 37 + 24)
    assert set(t.loc[t.prunable, "component"]) == {"query", "key", "value", "intermediate"}
    for _, row in t.sample(15, random_state=0).iterrows():
        v = s.values(row.layer, row.component, row.neuron)
        assert row.rf == pytest.approx(gudhi_deaths(v).max(), rel=1e-9)
        assert row["mean"] == pytest.approx(float(np.mean(v.astype(np.float64))), rel=1e-9, abs=1e-12)
        assert row["std"] == pytest.approx(float(np.std(v.astype(np.float64))), rel=1e-9, abs=1e-12)
    dgm = s.diagram(1, "intermediate", 5)
    assert dgm.shape == (12, 3) and np.isinf(dgm[-1, 1])


def test_rank_follows_documented_tie_rule():
    cols = pd.DataFrame({"layer": 0, "component": pd.Categorical(["query"] * 4), "neuron": range(4)})
    # neurons 0 and 2 are constant (rf 0, std 0); 1 and 3 share rf 1.0 but 3 has the lower std
    values = np.array([[5, 0, 2, 0], [5, 1, 2, 0.5], [5, 2, 2, 1.0], [5, 3, 2, 2.0]], dtype=np.float32)
    t = scoring.scores_from_activations(values, cols, scoring.ScoreSettings())
    assert list(t["rf"]) == [0.0, 1.0, 0.0, 1.0]
    assert list(t["rank"]) == [0, 3, 1, 2]  # rf, then std, then neuron index
    assert list(t["rf_ties"]) == [2, 2, 2, 2]


def test_cache_hit_and_miss(tiny_bert, tokenizer, sentences, tmp_path, monkeypatch):
    calls = []
    real = scoring.capture_activations
    monkeypatch.setattr(scoring, "capture_activations", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    b = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(a.table, b.table)
    assert np.array_equal(a.activations, b.activations)
    # batching changes float rounding (and can swap near-ties), so the batch size is in the key
    c = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path, batch_size=4)
    assert len(calls) == 2 and c.settings.batch_size == 4
    np.testing.assert_allclose(c.activations, a.activations, rtol=1e-5, atol=1e-6)
    score_model(tiny_bert, tokenizer, sentences[:-1], cache_dir=tmp_path)  # other texts
    score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path, token="mean")  # other settings
    with pytest.MonkeyPatch.context() as m:
        with __import__("torch").no_grad():
            tiny_bert.encoder.layer[0].intermediate.dense.bias[0] += 1.0  # other weights
        score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
        del m
    assert len(calls) == 5
    entries = list((tmp_path / "scores").iterdir())
    assert len(entries) == 5 and not any(e.name.startswith(".") for e in entries)  # no temp leftovers


def test_damaged_cache_entry_is_recomputed(tiny_bert, tokenizer, sentences, tmp_path):
    a = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    (entry,) = (tmp_path / "scores").iterdir()
    (entry / "table.parquet").write_bytes(b"not parquet")
    b = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(a.table, b.table)


def test_parquet_round_trip_and_errors(tiny_bert, tokenizer, sentences, tmp_path):
    s = score_model(tiny_bert, tokenizer, sentences, use_cache=False)
    path = s.to_parquet(tmp_path / "scores.parquet")
    back = NeuronScores.from_parquet(path)
    pd.testing.assert_frame_equal(back.table, s.table)
    assert back.model_fingerprint == s.model_fingerprint and back.settings == s.settings
    with pytest.raises(ValueError, match="without activations"):
        back.values(0, "query", 0)
    with pytest.raises(ScoresFileError, match="does not exist"):
        NeuronScores.from_parquet(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_text("hello")
    with pytest.raises(ScoresFileError, match="not a readable parquet"):
        NeuronScores.from_parquet(tmp_path / "bad.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ScoresFileError, match="without obce metadata"):
        NeuronScores.from_parquet(tmp_path / "plain.parquet")
    with pytest.raises(KeyError, match="layers are"):
        s.group(7, "query")


@pytest.mark.parametrize(
    "broken, error, message",
    [
        (lambda a: a.values.__setitem__((3, 5), 1e30), CaptureError, "'rf' holds 1 value.* beyond"),
        (lambda a: setattr(a, "sample_text", a.sample_text[:-1]), CaptureError, "sample_text"),
        (lambda a: a.values.__setitem__((3, 5), np.nan), ValueError, "NaN"),  # refused by rf_batch itself
    ],
)
def test_inconsistent_result_is_raised_and_not_cached(tiny_bert, tokenizer, sentences, tmp_path, monkeypatch,
                                                       broken, error, message):
    real = scoring.capture_activations

    def capture(*args, **kwargs):
        acts = real(*args, **kwargs)
        broken(acts)
        return acts

    monkeypatch.setattr(scoring, "capture_activations", capture)
    with pytest.raises(error, match=message):
        score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    assert not (tmp_path / "scores").exists() or not any((tmp_path / "scores").iterdir())


def test_fresh_scores_pass_their_own_check(tiny_bert, tokenizer, sentences):
    for token in ("cls", "all"):
        s = score_model(tiny_bert, tokenizer, sentences, token=token, use_cache=False)
        assert s.problem() is None
        assert s.n_samples == (len(sentences) if token == "cls" else int(np.bincount(s.sample_text).sum()))


@pytest.mark.parametrize(
    "kwargs, texts, message",
    [({}, ["only one"], "at least 2"), ({"convention": "x"}, ["a", "b"], "convention"), ({"max_length": 1}, ["a", "b"], "max_length")],
)
def test_bad_scoring_input(tiny_bert, tokenizer, kwargs, texts, message):
    with pytest.raises(ValueError, match=message):
        score_model(tiny_bert, tokenizer, texts, **kwargs)


def test_minilm_layer0_qkv_ties_at_cls(minilm):
    model, tok = minilm
    s = score_model(model, tok, subsample(demo_sentences(), 48, seed=1))
    t = s.table
    layer0 = t[(t.layer == 0) & t.component.isin(["query", "key", "value"])]
    assert len(layer0) == 1152 and (layer0.rf == 0).all() and (layer0.rf_ties == 384).all()
    # with every rf tied, the rule falls through std (also 0: identical inputs) to the neuron index
    q0 = layer0[layer0.component == "query"]
    assert (q0["rank"].to_numpy() == q0["neuron"].to_numpy()).all()
    later = t[(t.layer > 0) & (t.component == "query")]
    assert (later.rf > 0).all()
