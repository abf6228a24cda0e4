"""Captured activations equal a manual forward pass written out from the weights."""

import math
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from obce_core import COMPONENTS, MemoryBudgetError, capture_activations
from obce_core.scoring import TRUNCATE_CHARS_PER_TOKEN, cls_embeddings, model_lock, tokenize_texts
from tests.conftest import make_tiny_bert


def manual_components(model, tokenizer, text):
    """Every component's output for every token of one text, computed by hand from the weights."""
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    out = []
    heads = model.config.num_attention_heads
    for i, layer in enumerate(model.encoder.layer):
        h = hidden[i][0]  # (T, H)
        att = layer.attention
        q = h @ att.self.query.weight.T + att.self.query.bias
        k = h @ att.self.key.weight.T + att.self.key.bias
        v = h @ att.self.value.weight.T + att.self.value.bias
        d = q.shape[1] // heads
        ctx = []
        for j in range(heads):
            s = slice(j * d, (j + 1) * d)
            w = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d), dim=-1)
            ctx.append(w @ v[:, s])
        ctx = torch.cat(ctx, dim=1)
        ao = ctx @ att.output.dense.weight.T + att.output.dense.bias
        a = F.layer_norm(ao + h, (h.shape[1],), att.output.LayerNorm.weight, att.output.LayerNorm.bias,
                         att.output.LayerNorm.eps)
        inter = F.gelu(a @ layer.intermediate.dense.weight.T + layer.intermediate.dense.bias)
        o = inter @ layer.output.dense.weight.T + layer.output.dense.bias
        out.append({"query": q, "key": k, "value": v, "intermediate": inter, "attention_output": ao, "output": o})
    return out


def expected_matrix(model, tokenizer, texts, token):
    rows = []
    for text in texts:
        comps = manual_components(model, tokenizer, text)
        per_token = torch.cat([c[name] for c in comps for name in COMPONENTS], dim=1)  # (T, columns)
        if token == "cls":
            rows.append(per_token[:1])
        elif token == "mean":
            rows.append(per_token.mean(0, keepdim=True))
        else:
            rows.append(per_token)
    return torch.cat(rows).detach().numpy()


@pytest.mark.parametrize("token", ["cls", "mean", "all"])
def test_capture_equals_manual_forward(tiny_bert, tokenizer, sentences, token):
    # batch_size 5 forces padding and several batches of mixed lengths
    acts = capture_activations(tiny_bert, tokenizer, sentences, token=token, batch_size=5)
    expected = expected_matrix(tiny_bert, tokenizer, sentences, token)
    assert acts.values.shape == expected.shape
    np.testing.assert_allclose(acts.values, expected, rtol=1e-4, atol=1e-5)
    widths = acts.columns.groupby(["layer", "component"], observed=True).size()
    assert widths[(0, "intermediate")] == 37 and widths[(1, "query")] == 24
    if token == "all":
        lengths = [len(tokenizer(t)["input_ids"]) for t in sentences]
        assert np.array_equal(np.bincount(acts.sample_text), lengths)


def test_capture_is_deterministic_and_batch_independent(tiny_bert, tokenizer, sentences):
    a = capture_activations(tiny_bert, tokenizer, sentences, batch_size=3)
    b = capture_activations(tiny_bert, tokenizer, sentences, batch_size=3)
    c = capture_activations(tiny_bert, tokenizer, sentences, batch_size=12)
    assert np.array_equal(a.values, b.values)
    np.testing.assert_allclose(a.values, c.values, rtol=1e-5, atol=1e-6)


def test_capture_sentence_pairs(tiny_bert, tokenizer):
    pairs = [("A man is playing.", "Someone plays."), ("It rains.", "The sun is out today.")]
    acts = capture_activations(tiny_bert, tokenizer, pairs)
    assert acts.values.shape[0] == 2


def test_progress_reports_every_batch(tiny_bert, tokenizer, sentences):
    calls = []
    capture_activations(tiny_bert, tokenizer, sentences, batch_size=5, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(5, 12), (10, 12), (12, 12)]


def test_memory_budget_checked_before_running(tiny_bert, tokenizer, sentences):
    called = []
    hook = tiny_bert.embeddings.register_forward_hook(lambda *a: called.append(1))
    try:
        with pytest.raises(MemoryBudgetError, match=r"lower .*--n|Lower the number of texts"):
            capture_activations(tiny_bert, tokenizer, sentences, token="all", memory_budget_gb=1e-6)
    finally:
        hook.remove()
    assert called == []  # refused before any forward pass


@pytest.mark.parametrize(
    "kwargs, texts, message",
    [
        ({"token": "first"}, ["a", "b"], "'token' parameter of capture_activations must be one of"),
        ({"batch_size": 0}, ["a", "b"], "batch_size"),
        ({"memory_budget_gb": float("nan")}, ["a", "b"], "'memory_budget_gb' parameter .* finite number > 0"),
        ({"memory_budget_gb": float("inf")}, ["a", "b"], "memory_budget_gb"),
        ({"memory_budget_gb": 0}, ["a", "b"], "memory_budget_gb"),
        ({}, [("a", 3)], "pairs of strings"),
        ({}, [], "No texts"),
        ({}, ["a", 3], "expected str"),
        ({}, [("a", "b"), "c"], "mix"),
    ],
)
def test_bad_capture_input(tiny_bert, tokenizer, kwargs, texts, message):
    with pytest.raises(ValueError, match=message):
        capture_activations(tiny_bert, tokenizer, texts, **kwargs)


def test_model_lock_is_one_reentrant_lock_per_encoder():
    head = make_tiny_bert(classifier=True)
    other = make_tiny_bert()
    assert model_lock(head) is model_lock(head.bert)  # hooks sit on the encoder: one lock for both
    assert model_lock(head) is not model_lock(other)
    with model_lock(head):
        with model_lock(head.bert):  # re-entrant: a capture may call cls_embeddings from `progress`
            pass


def test_capture_leaves_no_hooks_and_restores_training_mode(tiny_bert, tokenizer, sentences):
    tiny_bert.train()
    capture_activations(tiny_bert, tokenizer, sentences, batch_size=5)
    assert tiny_bert.training
    assert not any(m._forward_hooks for m in tiny_bert.modules())


def test_other_forward_passes_wait_for_the_model_lock(tiny_bert, tokenizer, sentences):
    done = threading.Event()
    worker = threading.Thread(target=lambda: (cls_embeddings(tiny_bert, tokenizer, sentences), done.set()))
    with model_lock(tiny_bert):
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked while someone else holds the model
    worker.join(timeout=30)
    assert done.is_set()


def test_unlocked_forward_passes_during_capture_are_not_recorded(tiny_bert, tokenizer, sentences):
    """A caller that skips the lock still cannot write into another capture's activations."""
    solo = capture_activations(tiny_bert, tokenizer, sentences, batch_size=2)
    # two rows, like the capture's batches, so a hook firing here could write into its rows unnoticed
    other = tokenizer(["Completely different words here, many of them.", "And more."], padding=True, return_tensors="pt")
    stop = threading.Event()
    errors = []

    def hammer():
        with torch.inference_mode():
            while not stop.is_set():
                try:
                    tiny_bert(**other)  # no lock: the capture's hooks must ignore this thread
                except Exception as exc:  # a hook misfiring here shows up as a shape error
                    errors.append(exc)
                    return

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for _ in range(3):
            acts = capture_activations(tiny_bert, tokenizer, sentences, batch_size=2)
            assert np.array_equal(acts.values, solo.values)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_texts_are_cut_by_characters_before_tokenizing(tokenizer):
    class Recorder:
        """Passes calls to the real tokenizer and remembers the longest text it was given."""

        longest = 0

        def __call__(self, *texts, **kwargs):
            Recorder.longest = max(len(t) for column in texts for t in column)
            return tokenizer(*texts, **kwargs)

    long = "word " * 10_000
    enc = tokenize_texts(Recorder(), [long, "short"], max_length=16)
    assert Recorder.longest == TRUNCATE_CHARS_PER_TOKEN * 16
    assert enc[0]["input_ids"] == tokenizer(long, truncation=True, max_length=16)["input_ids"]
    pairs = tokenize_texts(Recorder(), [(long, long), ("a", "b")], max_length=16)
    assert Recorder.longest == TRUNCATE_CHARS_PER_TOKEN * 16
    # (the tokenizer itself cannot take this pair whole: its pair truncation ran out of memory)
    prefix = long[:2000]
    assert pairs[0]["input_ids"] == tokenizer(prefix, prefix, truncation=True, max_length=16)["input_ids"]
