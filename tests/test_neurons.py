"""What a neuron separates: the last merge's two clusters and the example samples, by hand."""

import numpy as np
import pytest

from obce_core import score_model
from obce_core.neurons import neuron_examples, text_tokens, token_values
from obce_core.persistence import last_merge, merge_events, rf
from tests.conftest import make_tiny_bert


def test_last_merge_by_hand():
    # sorted: 0.1 (s2), 0.2 (s0), 0.25 (s4), 1.0 (s1), 1.1 (s5), 3.0 (s3); gaps .1 .05 .75 .1 1.9
    values = [0.2, 1.0, 0.1, 3.0, 0.25, 1.1]
    split = last_merge(values)
    assert (split.low, split.high) == (1.1, 3.0) and split.gap == pytest.approx(1.9) == pytest.approx(rf(values))
    assert split.below.tolist() == [5, 1, 4, 0, 2]  # 1.1, 1.0, 0.25, 0.2, 0.1: nearest the gap first
    assert split.above.tolist() == [3]


def test_last_merge_equal_gaps_takes_the_one_merged_last():
    # gaps 1 and 1: the stable order of merge_events merges 1-2 last, and the plot shades that one
    split = last_merge([0.0, 1.0, 2.0])
    assert merge_events([0.0, 1.0, 2.0])[-1][:2] == (1, 2)
    assert split.below.tolist() == [1, 0] and split.above.tolist() == [2]
    equal = last_merge([5.0, 5.0, 5.0])
    assert equal.gap == 0 and equal.below.tolist() == [0, 1] and equal.above.tolist() == [2]
    with pytest.raises(ValueError, match="at least 2"):
        last_merge([1.0])


def test_last_merge_matches_single_linkage_by_scipy():
    from scipy.cluster.hierarchy import fcluster, linkage

    values = np.random.default_rng(3).normal(size=40)
    split = last_merge(values)
    labels = fcluster(linkage(values[:, None], method="single"), t=2, criterion="maxclust")
    below_label = labels[split.below[0]]
    assert set(np.flatnonzero(labels == below_label)) == set(split.below.tolist())
    assert set(np.flatnonzero(labels != below_label)) == set(split.above.tolist())


@pytest.fixture
def cls_scores(tokenizer, sentences):
    model = make_tiny_bert(seed=2)
    return score_model(model, tokenizer, sentences, use_cache=False), sentences


def test_examples_cls_mode_by_hand(cls_scores):
    scores, texts = cls_scores
    values = scores.values(1, "intermediate", 5).astype(np.float64)
    table = neuron_examples(scores, texts, 1, "intermediate", 5, k=3)
    order = np.argsort(values)
    by_view = {v: g.sort_values("rank") for v, g in table.groupby("view")}
    assert by_view["top"]["text_index"].tolist() == order[::-1][:3].tolist()
    assert by_view["bottom"]["text_index"].tolist() == order[:3].tolist()
    # the largest gap of the sorted values, by hand
    gaps = np.diff(values[order])
    g = len(gaps) - 1 - int(np.argmax(gaps[::-1]))  # the highest of equal largest gaps
    below, above = order[: g + 1][::-1], order[g + 1:]
    assert by_view["below gap"]["text_index"].tolist() == below[:3].tolist()
    assert by_view["above gap"]["text_index"].tolist() == above[:3].tolist()
    assert by_view["top"]["text"].iloc[0] == texts[order[-1]]
    np.testing.assert_allclose(by_view["top"]["value"], values[order[::-1][:3]])
    assert "token" not in table


def test_examples_all_mode_names_each_token(tokenizer, sentences):
    model = make_tiny_bert(seed=2)
    texts = sentences[:5]
    scores = score_model(model, tokenizer, texts, token="all", max_length=16, use_cache=False)
    table = neuron_examples(scores, texts, 0, "output", 3, k=4, tokenizer=tokenizer)
    values = scores.values(0, "output", 3)
    for row in table.itertuples():
        tokens = text_tokens(tokenizer, texts[row.text_index], 16)
        assert row.token == tokens[row.position]
        # the sample is that token of that text: its value is the text's per-token output there
        assert token_values(scores, 0, "output", 3, row.text_index)[row.position] == values[row.sample]
    first = text_tokens(tokenizer, texts[0], 16)
    assert first[0] == "[CLS]" and first[-1] == "[SEP]" and len(first) == int((scores.sample_text == 0).sum())
    with pytest.raises(ValueError, match="token='all'"):
        token_values(score_model(model, tokenizer, texts, use_cache=False), 0, "output", 3, 0)
