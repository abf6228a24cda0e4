"""Label-free evidence and labelled pairs: sentence outputs, their comparison, pairs files and bad input.

Oracles: scipy's Spearman on the cosines of ``SentenceTransformer.encode`` for the pairs file;
sentence outputs computed by hand, one text at a time without padding, on a tiny model; nearest
neighbours by explicit loops; scipy's Spearman of the upper triangles.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from obce_core import score_model
from obce_core.evidence.embedding import (PoolingError, SentencePooling, compare_embeddings, embedding_evidence,
                                          heldout_texts, rank_correlation, sentence_embeddings, sentence_pooling)
from obce_core.evidence.pairs import PairsError, SentencePairs, pairs_spearman, parse_pairs, read_pairs
from obce_core.loading import default_model_dir, load_model
from obce_core.pruning import PruningPlan, prune
from obce_core.scoring import demo_sentences
from tests.conftest import make_tiny_bert, save_tiny_bert
from tests.embedding_helpers import PAIRS_FILE, save_tiny_sentence_transformer, write_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["A man is playing a guitar on the stage.", "The soup needs more salt.", "Stocks fell sharply today.",
         "Two dogs are running through a field.", "She reads a book in the quiet library.", "The train was late again."]


def test_pairs_file_reads_like_glue_and_its_spearman_is_scipys(minilm):
    from sentence_transformers import SentenceTransformer

    pairs = read_pairs(PAIRS_FILE)
    assert pairs.n == 32 and not pairs.binary
    assert pairs.first[5] == 'He said "hello to everyone in the room.'  # an unbalanced quote, kept as written
    model, tokenizer = minilm
    pooling = sentence_pooling(model)
    assert (pooling.pooling, pooling.normalize, pooling.max_length) == ("mean", True, 256)
    ours = pairs_spearman(model, tokenizer, pairs, pooling)

    st_model = SentenceTransformer(str(default_model_dir()), device="cpu")
    a, b = st_model.encode(list(pairs.first)), st_model.encode(list(pairs.second))
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert ours == pytest.approx(100 * spearmanr(cosines, pairs.score).statistic, abs=1e-6)
    assert ours > 60  # the encoder ranks these hand-scored pairs well


def test_rank_correlation_is_scipys_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200), rng.normal(size=200)
    b[:20] = 1.0
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5)))


def _by_hand(model, tokenizer, texts, pooling: str) -> np.ndarray:
    """One text at a time (no padding at all): [CLS] or the plain mean of its token states."""
    rows = []
    with torch.no_grad():
        for text in texts:
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].double()
            rows.append((hidden[0] if pooling == "cls" else hidden.mean(0)).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("mode", ["cls", "mean"])
def test_sentence_outputs_and_cosines_by_hand_on_a_tiny_model(tokenizer, mode):
    model = make_tiny_bert(seed=2)
    scores = score_model(model, tokenizer, demo_sentences()[:24], token="cls", max_length=64)
    pruned, _ = prune(model, scores, PruningPlan(ffn=50, v=40, compensation="none"))
    pooling = SentencePooling(pooling=mode)
    ours_a = sentence_embeddings(model, tokenizer, TEXTS, pooling, batch_size=4)  # padded batches
    ours_b = sentence_embeddings(pruned, tokenizer, TEXTS, pooling, batch_size=4)
    hand_a, hand_b = _by_hand(model, tokenizer, TEXTS, mode), _by_hand(pruned, tokenizer, TEXTS, mode)
    assert np.allclose(ours_a, hand_a, atol=1e-5) and np.allclose(ours_b, hand_b, atol=1e-5)

    cosine = [float(x @ y / np.sqrt((x @ x) * (y @ y))) for x, y in zip(hand_a, hand_b)]
    got = embedding_evidence(model, pruned, tokenizer, TEXTS, pooling, k=2)
    assert got["mean_cosine"] == pytest.approx(np.mean(cosine), abs=1e-5)
    assert got["min_cosine"] == pytest.approx(min(cosine), abs=1e-5)
    assert got["n_texts"] == 6 and got["k"] == 2
    normalized = SentencePooling(pooling=mode, normalize=True)  # unit length changes no cosine
    assert np.allclose(np.linalg.norm(sentence_embeddings(model, tokenizer, TEXTS, normalized), axis=1), 1, atol=1e-6)


def test_similarity_structure_and_neighbours_by_loops():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(9, 5))
    b = a + 0.6 * rng.normal(size=(9, 5))
    k = 3

    def sims(x):
        return np.array([[u @ v / np.sqrt((u @ u) * (v @ v)) for v in x] for u in x])

    sa, sb = sims(a), sims(b)
    upper = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    expected_spearman = spearmanr([sa[i, j] for i, j in upper], [sb[i, j] for i, j in upper]).statistic
    kept = []
    for i in range(9):
        near_a = sorted((j for j in range(9) if j != i), key=lambda j: -sa[i, j])[:k]
        near_b = sorted((j for j in range(9) if j != i), key=lambda j: -sb[i, j])[:k]
        kept.append(len(set(near_a) & set(near_b)) / k)
    got = compare_embeddings(a, b, k=k)
    assert got["similarity_spearman"] == pytest.approx(expected_spearman, abs=1e-12)
    assert got["knn_overlap"] == pytest.approx(np.mean(kept), abs=1e-12)
    assert compare_embeddings(a, 3 * a, k=20)["k"] == 8  # capped at n - 1; scaling changes nothing
    assert compare_embeddings(a, 3 * a)["mean_cosine"] == pytest.approx(1.0)


def test_sentence_pooling_comes_from_the_model_folder(tmp_path, tokenizer):
    plain = save_tiny_bert(tmp_path / "plain", tokenizer, seed=1)
    assert sentence_pooling(load_model(str(plain), device="cpu")[0]).pooling == "cls"
    st_dir = save_tiny_sentence_transformer(tmp_path / "st", tokenizer)
    found = sentence_pooling(load_model(str(st_dir), device="cpu")[0])
    assert (found.pooling, found.normalize, found.max_length) == ("mean", True, 64)
    head = load_model(str(plain), num_labels=2, classifier_pooling="mean", device="cpu")[0]
    assert sentence_pooling(head).pooling == "mean" and "task head" in sentence_pooling(head).source

    # pooling obce cannot reproduce, or files it cannot read: a clear error naming the fix
    cases = {
        "max": lambda d: _set_pooling(d, {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}),
        "Dense": lambda d: _add_module(d, "sentence_transformers.models.Dense", "2_Dense"),
        "could not be read as JSON": lambda d: (d / "modules.json").write_text("[{"),
    }
    for i, (words, spoil) in enumerate(cases.items()):
        bad = save_tiny_sentence_transformer(tmp_path / f"bad{i}", tokenizer)
        spoil(bad)
        with pytest.raises(PoolingError, match=words) as err:
            sentence_pooling(None, bad)
        assert "pooling=SentencePooling" in str(err.value)


def _set_pooling(folder, changes):
    path = folder / "1_Pooling" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _add_module(folder, kind, path):
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": path, "type": kind})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / path).mkdir()


def test_bad_pairs_and_texts_are_refused_with_the_fix(tmp_path):
    good = [(f"sentence {i} about cats", f"another sentence {i}", i % 5) for i in range(12)]
    with pytest.raises(PairsError, match=r"lacks the column\(s\) \['score'\].*sentence1, sentence2, score"):
        read_pairs(write_pairs(tmp_path / "a.tsv", good, header=("sentence1", "sentence2", "similarity")))
    rows = [*good[:2], ("a", "b", "high"), *good[3:]]
    with pytest.raises(PairsError, match=r"line 4: score 'high' is not a number"):
        read_pairs(write_pairs(tmp_path / "b.tsv", rows))
    with pytest.raises(PairsError, match="found 9 pair.*at least 10"):
        read_pairs(write_pairs(tmp_path / "c.tsv", good[:9]))
    with pytest.raises(PairsError, match="every sentence is the same text"):
        read_pairs(write_pairs(tmp_path / "d.tsv", [("same", "same", i % 3) for i in range(12)]))
    with pytest.raises(PairsError, match="compares a sentence with itself"):
        read_pairs(write_pairs(tmp_path / "e.tsv", [(f"s{i}", f"s{i}", i % 3) for i in range(12)]))
    with pytest.raises(PairsError, match="every pair has the score 2"):
        read_pairs(write_pairs(tmp_path / "f.tsv", [(a, b, 2) for a, b, _ in good]))
    with pytest.raises(PairsError, match="unsupported file type '.txt'"):
        parse_pairs("sentence1\tsentence2\tscore\n", "pairs.txt")
    with pytest.raises(PairsError, match="does not exist"):
        read_pairs(tmp_path / "missing.tsv")
    # CSV keeps standard quoting: a comma inside a quoted sentence stays in the sentence
    csv_pairs = parse_pairs('sentence1,sentence2,score\n"Hot, bright day",It is warm,3.5\n'
                            + "".join(f"x{i},y{i},{i}\n" for i in range(10)), "p.csv")
    assert csv_pairs.first[0] == "Hot, bright day" and csv_pairs.score[0] == 3.5 and csv_pairs.n == 11
    assert isinstance(csv_pairs, SentencePairs)
    # held-out texts that are all one text cannot show a similarity structure
    with pytest.raises(ValueError, match="at least 3 distinct held-out texts; found 1"):
        heldout_texts(["the same text"] * 50)
    with pytest.raises(ValueError, match="found 2"):
        heldout_texts(["a", "b", "c", "d"], exclude=["a", "b"])
    assert heldout_texts(["a", "b", "c", "d", "e", "a"], exclude=["e"]) == ["a", "b", "c", "d"]
