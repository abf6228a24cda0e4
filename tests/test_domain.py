"""Another domain: cross-source ranking comparison beside the split-half baseline."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from obce_core.pruning import ranking_stability
from obce_core.pruning.domain import domain_shift, domain_summary, text_source
from obce_core.pruning.stability import compare_rankings, split_halves
from obce_core.scoring import demo_sentences
from tests.conftest import GLUE_DIR, needs_glue
from tests.pruning_helpers import scores_of, texts, tiny  # noqa: F401 (fixture)


@pytest.fixture
def sources(texts):
    other = demo_sentences()[:len(texts) // 2]
    return texts, other


def test_split_half_baseline_equals_scoring_the_halves_directly(tokenizer, sources):
    a, b = sources
    model = tiny()
    shift = domain_shift(model, tokenizer, a, b, scorers=["rf", "std"], percents=[30, 50], seed=3, use_cache=False)
    (a1, a2), = split_halves(a, 1, 3)
    s1, s2, sb = scores_of(model, tokenizer, a1), scores_of(model, tokenizer, a2), scores_of(model, tokenizer, b)
    for p in (30, 50):
        at = shift[shift["percent"] == p].reset_index(drop=True)
        half = compare_rankings(model, s1, s2, scorers=["rf", "std"], percent=p)
        cross = compare_rankings(model, s1, sb, scorers=["rf", "std"], percent=p)  # B has n texts: all drawn
        np.testing.assert_array_equal(at["half_spearman"], half["spearman"])
        np.testing.assert_array_equal(at["half_overlap"], half["overlap"])
        np.testing.assert_array_equal(at["cross_spearman"], cross["spearman"])
        np.testing.assert_array_equal(at["cross_overlap"], cross["overlap"])
    # And one number by hand: the FFN rf Spearman of layer 1 between A1 and B (scipy on the tables).
    def ffn_rf(scores):
        g = scores.group(1, "intermediate").sort_values("neuron")
        return g["rf"].to_numpy()
    row = shift[(shift["layer"] == 1) & (shift["group"] == "ffn") & (shift["scorer"] == "rf") & (shift["percent"] == 50)]
    assert row["cross_spearman"].item() == pytest.approx(spearmanr(ffn_rf(s1), ffn_rf(sb)).statistic, abs=1e-12)
    assert (shift["n"] == len(a) // 2).all()


def test_half_side_is_the_noise_panels_split(tokenizer, sources):
    """The baseline is what ranking_stability (the Persistence page's noise panel) measures: one concept."""
    a, b = sources
    model = tiny()
    shift = domain_shift(model, tokenizer, a, b, scorers=["rf"], percents=40, splits=2, seed=1)
    noise = ranking_stability(model, tokenizer, a, scorers=["rf"], percent=40, splits=2, seed=1)
    np.testing.assert_allclose(shift["half_spearman"], noise["spearman"], equal_nan=True)
    np.testing.assert_allclose(shift["half_overlap"], noise["overlap"], equal_nan=True)
    defined = shift.dropna(subset=["half_spearman"])
    assert len(defined) and (defined["half_spearman_min"] <= defined["half_spearman_max"]).all()
    assert (shift["splits"] == 2).all()


def test_same_source_twice_is_refused_before_scoring(tokenizer, texts, tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match="same 18 texts.*another source for B"):
        domain_shift(model, tokenizer, texts, list(reversed(texts)), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="n"):
        domain_shift(model, tokenizer, texts, demo_sentences()[:5], n=6)


def test_text_sources(tmp_path):
    demo, what = text_source("demo", n=10)
    assert len(demo) == 10 and "demo" in what
    path = tmp_path / "mine.txt"
    path.write_text("one\ntwo\nthree\n")
    assert text_source(str(path))[0] == ["one", "two", "three"]
    with pytest.raises(ValueError, match="glue:TASK"):
        text_source("glue:")


@needs_glue
def test_glue_source():
    texts, what = text_source("glue:sst2", n=5, glue_dir=GLUE_DIR)
    assert len(texts) == 5 and "SST-2" in what.upper().replace("SST2", "SST-2")


def test_summary_medians_by_hand():
    shift = pd.DataFrame({
        "layer": [0, 0, 0, 1, 1, 1], "group": ["ffn", "qk", "v"] * 2, "scorer": "rf", "percent": 50.0,
        "half_spearman": [0.8, 0.2, np.nan, 0.6, 0.4, 0.3], "cross_spearman": [0.5, 0.1, 0.0, 0.3, 0.2, 0.1],
        "half_overlap": [0.9, 0.5, 0.6, 0.7, 0.5, 0.4], "cross_overlap": [0.6, 0.5, 0.5, 0.5, 0.5, 0.4],
        "chance_overlap": 0.5,
    })
    out = domain_summary(shift).set_index("part")
    assert out.loc["ffn", "half_spearman"] == pytest.approx(0.7)
    assert out.loc["ffn", "cross_spearman"] == pytest.approx(0.4)
    assert out.loc["ffn", "spearman_drop"] == pytest.approx(0.3)
    assert out.loc["qkv", "half_spearman"] == pytest.approx(0.3)  # median of 0.2, 0.4, 0.3 (NaN left out)
    assert out.loc["qkv", "cross_overlap"] == pytest.approx(0.5)


@needs_glue
def test_task_score_by_source_equals_pruning_by_hand(tokenizer, sources):
    from obce_core.evidence.domain_task import plan_score_by_source
    from obce_core.evidence.evaluation import encode_split, evaluate_encoded
    from obce_core.pruning import PruningPlan, prune

    a, b = sources
    model = tiny(classifier=True)
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=40)
    plan = PruningPlan(ffn=50, v=25, compensation="cls-mean")
    table = plan_score_by_source(model, tokenizer, plan, encoded, {"own": a, "other": b}).set_index("source")
    for name, texts in (("own", a), ("other", b)):
        pruned, _ = prune(model, scores_of(model, tokenizer, texts), plan)
        assert table.loc[name, "main_score"] == pytest.approx(evaluate_encoded(pruned, encoded)["main_score"], abs=1e-12)
        assert table.loc[name, "low"] <= table.loc[name, "main_score"] <= table.loc[name, "high"]
    with pytest.raises(ValueError, match="same"):
        plan_score_by_source(model, tokenizer, plan, encoded, {"x": a, "y": list(a)})
