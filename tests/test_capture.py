"""Captured activations equal a manual forward pass written out from the weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from obce_core import COMPONENTS, MemoryBudgetError, capture_activations


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
        ({"token": "first"}, ["a", "b"], "token must be one of"),
        ({"batch_size": 0}, ["a", "b"], "batch_size"),
        ({}, [], "No texts"),
        ({}, ["a", 3], "expected str"),
        ({}, [("a", "b"), "c"], "mix"),
    ],
)
def test_bad_capture_input(tiny_bert, tokenizer, kwargs, texts, message):
    with pytest.raises(ValueError, match=message):
        capture_activations(tiny_bert, tokenizer, texts, **kwargs)
