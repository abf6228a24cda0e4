"""Hidden-dim pruning (PruningPlan(hidden=P)): checked against a hand-written narrower BERT."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from obce_core import load_model
from obce_core.obce_bert import ObceBertConfig, ObceBertForSequenceClassification
from obce_core.pruning import PruningPlan, capture_stream, load_plan, prune, save_pruned
from obce_core.pruning.hidden import norm_correction
from tests.pruning_helpers import H, batch, hidden, scores_of, texts, tiny  # noqa: F401 (fixtures)


def _ln(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def _reference(model, kept, batch, *, norm_params=None):
    """BERT's forward written out by hand on the ORIGINAL weights, the stream restricted to ``kept``:
    every Linear sliced where it reads or writes the stream, every LayerNorm over the kept dims.
    ``norm_params``: {LayerNorm path: (weight, bias)} replacing the sliced ones (corrections)."""
    sd = {k.removeprefix("bert."): v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    k = torch.as_tensor(kept)
    eps = cfg.layer_norm_eps
    heads, head = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def norm(path, x):
        w, b = (norm_params[path] if norm_params else (sd[path + ".weight"][k], sd[path + ".bias"][k]))
        return _ln(x, w.double(), b.double(), eps)

    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    pos = torch.arange(ids.shape[1])
    x = (sd["embeddings.word_embeddings.weight"][:, k][ids] + sd["embeddings.position_embeddings.weight"][:, k][pos]
         + sd["embeddings.token_type_embeddings.weight"][:, k][types])
    x = norm("embeddings.LayerNorm", x)
    bias = (1.0 - mask.double())[:, None, None, :] * torch.finfo(torch.float64).min
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."

        def lin(name, inp, rows=None, cols=None):
            w, b = sd[p + name + ".weight"], sd[p + name + ".bias"]
            if rows is not None:
                w, b = w[rows], b[rows]
            if cols is not None:
                w = w[:, cols]
            return inp @ w.T + b

        def split(t):
            return t.view(t.shape[0], t.shape[1], heads, head).transpose(1, 2)

        q, kk, v = (split(lin(f"attention.self.{n}", x, cols=k)) for n in ("query", "key", "value"))
        att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(head) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], heads * head)
        x = norm(p + "attention.output.LayerNorm", lin("attention.output.dense", ctx, rows=k) + x)
        inner = lin("intermediate.dense", x, cols=k)
        inner = 0.5 * inner * (1.0 + torch.erf(inner / math.sqrt(2.0)))
        x = norm(p + "output.LayerNorm", lin("output.dense", inner, rows=k) + x)
    return x


def _stream(model, tokenizer, texts, **kw):
    return capture_stream(model, tokenizer, texts, **kw)


def test_zero_percent_is_bitwise_the_original(tokenizer, texts, batch):
    model = tiny(classifier=True)
    scores = scores_of(model, tokenizer, texts)
    stream = _stream(model, tokenizer, texts)
    pruned, report = prune(model, scores, PruningPlan(hidden=0), hidden_stream=stream)
    assert torch.equal(hidden(pruned, batch), hidden(model, batch))
    assert report.hidden_after == report.hidden_before == H
    # Keeping every dim through the hidden surgery itself is bitwise too.
    from obce_core.pruning.hidden import HiddenCut, narrow_stream
    from obce_core.pruning.hidden_stream import stream_norms

    every = np.arange(H)
    cut = HiddenCut(kept=every, method="kept",
                    norms={n: norm_correction(m, every, "kept", None) for n, m in stream_norms(model).items()})
    assert torch.equal(hidden(narrow_stream(pruned, cut), batch), hidden(model, batch))


@pytest.mark.parametrize("scorer", ["rf", "magnitude", "random"])
def test_narrower_model_equals_hand_written_reference(tokenizer, texts, batch, scorer):
    model = tiny()
    scores = scores_of(model, tokenizer, texts)
    stream = _stream(model, tokenizer, texts)
    plan = PruningPlan(hidden=30, scorer=scorer, seed=4)
    pruned, report = prune(model, scores, plan, hidden_stream=stream)
    kept_n = H - math.floor(0.3 * H)
    assert pruned.config.hidden_size == kept_n == report.hidden_after
    # Which dims: the lowest of the scorer's per-dim score go (oracle for magnitude: RMS per norm by hand).
    if scorer == "magnitude":
        rms = np.sqrt((stream.stream.astype(np.float64) ** 2).mean(axis=0))  # (norms, H)
        score = (rms / rms.mean(axis=1, keepdims=True)).mean(axis=0)
        kept = np.sort(np.argsort(score, kind="stable")[H - kept_n:])
    else:
        kept = np.sort(np.argsort(stream.dim_scores(scorer, seed=4), kind="stable")[H - kept_n:])
    with torch.no_grad():
        got = pruned(**batch).last_hidden_state.double()
    ref = _reference(model, kept, batch)
    m = batch["attention_mask"].bool()
    assert torch.allclose(got[m], ref[m], atol=1e-5, rtol=0)


def test_stream_capture_matches_hidden_states(tokenizer, texts):
    """The stream at the output LayerNorms is what transformers returns as hidden_states."""
    model = tiny()
    stream = _stream(model, tokenizer, texts, max_tokens=10_000)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    for layer, state in enumerate(states):
        column = 0 if layer == 0 else 2 * layer
        np.testing.assert_allclose(stream.stream[:, column], state[:, 0].numpy(), atol=1e-5)
    assert stream.norm_inputs.shape == (int(enc["attention_mask"].sum()), 1 + 2 * 3, H)


def test_corrections_against_least_squares_oracle():
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(10, eps=1e-12)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(200, 10) * torch.linspace(0.2, 3.0, 10) + torch.linspace(-1, 1, 10)
    kept = np.array([0, 2, 3, 5, 6, 9])
    full = norm(x).detach().double().numpy()[:, kept]
    xk = x.double().numpy()[:, kept]
    z = (xk - xk.mean(1, keepdims=True)) / xk.std(1, keepdims=True)
    g, b = norm.weight.detach().double().numpy()[kept], norm.bias.detach().double().numpy()[kept]
    # std-ratio: mean of std(kept) / std(full) per token.
    ratio = (xk.std(1) / x.double().numpy().std(1)).mean()
    w, bb = norm_correction(norm, kept, "std-ratio", x.numpy())
    np.testing.assert_allclose(w.numpy(), g * ratio, rtol=1e-6)
    np.testing.assert_allclose(bb.numpy(), b, rtol=1e-6)
    # fitted: one scale and a shift per dim, by numpy least squares.
    design = np.zeros((z.size, 1 + len(kept)))
    design[:, 0] = (g * z).reshape(-1)
    design[np.arange(z.size), 1 + np.tile(np.arange(len(kept)), len(z))] = 1.0
    coef = np.linalg.lstsq(design, (full - b).reshape(-1), rcond=None)[0]
    w, bb = norm_correction(norm, kept, "fitted", x.numpy())
    np.testing.assert_allclose(w.numpy(), g * coef[0], rtol=1e-5)
    np.testing.assert_allclose(bb.numpy(), b + coef[1:], rtol=1e-5, atol=1e-6)
    # The fit is at least as close to the original outputs as plain LayerNorm over the kept dims.
    fitted = g * coef[0] * z + b + coef[1:]
    assert ((fitted - full) ** 2).mean() <= ((g * z + b - full) ** 2).mean()


def test_corrected_norms_enter_the_forward(tokenizer, texts, batch):
    model = tiny()
    scores, stream = scores_of(model, tokenizer, texts), _stream(model, tokenizer, texts)
    pruned, _ = prune(model, scores, PruningPlan(hidden=25, hidden_norm="fitted"), hidden_stream=stream)
    sd = pruned.state_dict()
    norms = {name: (sd[name + ".weight"], sd[name + ".bias"]) for name in stream.norm_names}
    kept = np.sort(np.argsort(stream.dim_scores("rf"), kind="stable")[H - pruned.config.hidden_size:])
    assert pruned.config.hidden_dims == kept.tolist()  # what layer-wise distillation matches to the teacher
    with torch.no_grad():
        got = pruned(**batch).last_hidden_state.double()
    m = batch["attention_mask"].bool()
    assert torch.allclose(got[m], _reference(model, kept, batch, norm_params=norms)[m], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_reloads_and_report_counts_parameters(tmp_path, tokenizer, texts, batch, pooling):
    base = tiny(classifier=True)
    if pooling == "mean":
        config = ObceBertConfig(**{k: v for k, v in base.config.to_dict().items() if k != "model_type"},
                                classifier_pooling="mean")
        model = ObceBertForSequenceClassification(config).eval()
        model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("bert.pooler")},
                              strict=False)
    else:
        model = base
    scores, stream = scores_of(model, tokenizer, texts), _stream(model, tokenizer, texts)
    plan = PruningPlan(hidden=40, ffn=20, v=25, hidden_norm="std-ratio")
    pruned, report = prune(model, scores, plan, hidden_stream=stream)
    assert report.params_after["total"] == sum(p.numel() for p in pruned.parameters())
    assert report.params_before["total"] == sum(p.numel() for p in model.parameters())
    out = save_pruned(pruned, tokenizer, tmp_path / "narrow", plan=plan, report=report)
    again, _ = load_model(str(out), device="cpu")
    auto = AutoModelForSequenceClassification.from_pretrained(out).eval()
    want = hidden(pruned, batch)
    assert torch.equal(hidden(again, batch), want)
    assert torch.equal(hidden(auto, batch), want)
    assert again.config.hidden_size == pruned.config.hidden_size < H
    assert again.config.hidden_dims == auto.config.hidden_dims == pruned.config.hidden_dims
    assert load_plan(out) == plan


def test_a_stream_narrowed_twice_names_the_original_dims_it_kept(tokenizer, texts):
    """hidden_dims indexes the FIRST model's stream: the twice-narrowed word embeddings are the
    original's columns at those dims, exactly."""
    model = tiny()
    once, _ = prune(model, scores_of(model, tokenizer, texts), PruningPlan(hidden=25),
                    hidden_stream=_stream(model, tokenizer, texts))
    twice, _ = prune(once, scores_of(once, tokenizer, texts), PruningPlan(hidden=25),
                     hidden_stream=_stream(once, tokenizer, texts))
    word = "embeddings.word_embeddings.weight"
    original = model.state_dict()[word]
    for narrowed in (once, twice):
        dims = narrowed.config.hidden_dims
        assert len(dims) == narrowed.config.hidden_size and len(set(dims)) == len(dims)
        assert torch.equal(narrowed.state_dict()[word], original[:, dims])
    assert twice.config.hidden_size < once.config.hidden_size < H
    assert set(twice.config.hidden_dims) < set(once.config.hidden_dims)


def test_bare_encoder_reloads_with_automodel(tmp_path, tokenizer, texts, batch):
    model = tiny()
    scores, stream = scores_of(model, tokenizer, texts), _stream(model, tokenizer, texts)
    pruned, _ = prune(model, scores, PruningPlan(hidden=50, qk=25), hidden_stream=stream)
    out = save_pruned(pruned, tokenizer, tmp_path / "enc")
    auto = AutoModel.from_pretrained(out).eval()
    assert torch.equal(hidden(auto, batch), hidden(pruned, batch))


def test_bad_inputs_fail_before_work(tokenizer, texts):
    model = tiny()
    scores = scores_of(model, tokenizer, texts)
    stream = _stream(model, tokenizer, texts)
    with pytest.raises(ValueError, match="keeps 1.*at most 91.67"):
        prune(model, scores, PruningPlan(hidden=99), hidden_stream=stream)
    with pytest.raises(ValueError, match="scorer.*hidden > 0"):
        PruningPlan(hidden=10, scorer="flap")
    with pytest.raises(ValueError, match="hidden_norm"):
        PruningPlan(hidden=10, hidden_norm="rms")
    with pytest.raises(ValueError, match="capture_stream"):
        prune(model, scores, PruningPlan(hidden=10))
    other = tiny(seed=5)
    with pytest.raises(ValueError, match="fingerprint"):
        prune(model, scores, PruningPlan(hidden=10), hidden_stream=_stream(other, tokenizer, texts))
    no_tokens = _stream(model, tokenizer, texts, max_tokens=0)
    with pytest.raises(ValueError, match="max_tokens"):
        prune(model, scores, PruningPlan(hidden=10, hidden_norm="fitted"), hidden_stream=no_tokens)
    # Random ranking with plain LayerNorm needs no stream.
    pruned, _ = prune(model, scores, PruningPlan(hidden=10, scorer="random"))
    assert pruned.config.hidden_size == H - 2


def test_plan_json_keeps_old_form_without_hidden():
    assert "hidden" not in PruningPlan(ffn=10).to_dict()
    plan = PruningPlan(hidden=12.5, hidden_norm="fitted", scorer="std")
    assert PruningPlan.from_dict(plan.to_dict()) == plan
    assert "hidden=12.5 hidden_norm=fitted" in plan.describe()


def test_sentence_transformers_pooling_records_the_narrower_width(tmp_path, minilm, sentences):
    import json

    model, tok = minilm
    scores = scores_of(model, tok, sentences)
    pruned, _ = prune(model, scores, PruningPlan(hidden=25, scorer="random"))
    out = save_pruned(pruned, tok, tmp_path / "narrow-minilm")
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pruned.config.hidden_size == 288 == pooling["word_embedding_dimension"]
    st = pytest.importorskip("sentence_transformers")
    encoder = st.SentenceTransformer(str(out), device="cpu")
    assert encoder.get_sentence_embedding_dimension() == 288
    assert encoder.encode(sentences[:2]).shape == (2, 288)
