"""Per-layer-size BERT classes: equivalence with stock BERT, attention maths, registration, reload."""

import math

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertModel,
)

import obce_core  # noqa: F401  registers obce_bert
from obce_core import load_model
from obce_core.obce_bert import ObceBertConfig, ObceBertForSequenceClassification, ObceBertModel, layer_sizes
from tests.conftest import make_tiny_bert

# Odd sizes on purpose: Q/K != V, different per layer, one head size of 1.
QK = [3, 8, 1]
V = [7, 2, 8]
FFN = [37, 5, 20]


def obce_config(base, **sizes) -> ObceBertConfig:
    return ObceBertConfig(**{**base.config.to_dict(), **sizes})


def small_config(attn="eager", **kw) -> ObceBertConfig:
    base = make_tiny_bert(layers=3)
    cfg = obce_config(base, qk_head_sizes=QK, v_head_sizes=V, intermediate_sizes=FFN, **kw)
    cfg._attn_implementation = attn
    return cfg


@pytest.fixture
def batch(tokenizer, sentences):
    return tokenizer(sentences[:5], padding=True, return_tensors="pt")


def test_config_defaults_and_type():
    base = make_tiny_bert()
    cfg = obce_config(base)
    assert cfg.model_type == "obce_bert"  # the "bert" in the source dict must not win
    assert cfg.attention_scale_head_size == 24 // 3
    assert layer_sizes(cfg, 1) == (8, 8, 37) == layer_sizes(base.config, 1)
    again = ObceBertConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"qk_head_sizes": [8]}, r"'qk_head_sizes' parameter of ObceBertConfig must be a list of 2 sizes .*got \[8\]"),
        ({"v_head_sizes": [8, 0]}, r"'v_head_sizes' .* must be a list of positive integers; got \[8, 0\]"),
        ({"intermediate_sizes": [37, -1]}, "'intermediate_sizes' .* must be a list of positive integers"),
        ({"attention_scale_head_size": 0}, "'attention_scale_head_size' parameter of ObceBertConfig must be an integer >= 1; got 0"),
        ({"classifier_pooling": "max"}, "'classifier_pooling' parameter of ObceBertConfig must be one of 'cls', 'mean'; got 'max'"),
        ({"is_decoder": True}, "encoder BERT models only"),
    ],
)
def test_config_refuses_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        obce_config(make_tiny_bert(), **kwargs)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_unpruned_obce_model_is_bit_identical_to_bert(attn, batch):
    bert = make_tiny_bert(layers=3)
    bert.config._attn_implementation = attn
    cfg = obce_config(bert)
    cfg._attn_implementation = attn
    obce = ObceBertModel(cfg).eval()
    obce.load_state_dict(bert.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(bert(**batch).last_hidden_state, obce(**batch).last_hidden_state)


def test_layers_have_their_own_sizes():
    model = ObceBertModel(small_config())
    for i, layer in enumerate(model.encoder.layer):
        att = layer.attention.self
        assert (att.query.out_features, att.key.out_features, att.value.out_features) == (3 * QK[i], 3 * QK[i], 3 * V[i])
        assert layer.attention.output.dense.in_features == 3 * V[i]
        assert layer.attention.output.dense.out_features == 24
        assert (layer.intermediate.dense.out_features, layer.output.dense.in_features) == (FFN[i], FFN[i])


def manual_self_attention(att, x, mask_bool, scale_size):
    """Independent attention: per-head softmax(q k^T / sqrt(scale_size)) v, padding keys masked."""
    b, n, _ = x.shape
    heads = att.num_attention_heads
    q = (x @ att.query.weight.T + att.query.bias).view(b, n, heads, -1).permute(0, 2, 1, 3)
    k = (x @ att.key.weight.T + att.key.bias).view(b, n, heads, -1).permute(0, 2, 1, 3)
    v = (x @ att.value.weight.T + att.value.bias).view(b, n, heads, -1).permute(0, 2, 1, 3)
    logits = q @ k.transpose(-1, -2) / math.sqrt(scale_size)
    logits = logits.masked_fill(~mask_bool[:, None, None, :], float("-inf"))
    ctx = logits.softmax(-1) @ v
    return ctx.permute(0, 2, 1, 3).reshape(b, n, -1)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_keeps_the_original_scaling(attn, batch):
    torch.manual_seed(1)
    model = ObceBertModel(small_config(attn)).eval()
    captured = {}
    layer_idx = 0  # qk 3 dims per head, v 7: the scale must stay 1/sqrt(8), not 1/sqrt(3)
    att = model.encoder.layer[layer_idx].attention.self
    att.register_forward_hook(lambda m, a, out: captured.update(x=a[0], out=out[0]))
    with torch.no_grad():
        model(**batch)
        mask = batch["attention_mask"].bool()
        expected = manual_self_attention(att, captured["x"], mask, scale_size=8)
        wrong = manual_self_attention(att, captured["x"], mask, scale_size=3)
    assert att.scaling == 8**-0.5
    assert captured["out"].shape[-1] == 3 * V[layer_idx]
    torch.testing.assert_close(captured["out"], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(captured["out"], wrong, atol=1e-4)


def test_eager_and_sdpa_agree_with_different_value_size(batch):
    torch.manual_seed(2)
    eager = ObceBertModel(small_config("eager")).eval()
    sdpa = ObceBertModel(small_config("sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(eager(**batch).last_hidden_state, sdpa(**batch).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_auto_classes_are_registered():
    cfg = AutoConfig.for_model("obce_bert", qk_head_sizes=None)
    assert isinstance(cfg, ObceBertConfig)
    assert type(AutoModel.from_config(small_config())) is ObceBertModel
    assert type(AutoModelForSequenceClassification.from_config(small_config())) is ObceBertForSequenceClassification
    assert issubclass(ObceBertModel, BertModel) and issubclass(ObceBertForSequenceClassification, BertForSequenceClassification)


@pytest.mark.parametrize("classifier", [False, True])
def test_save_and_reload_is_bit_exact(classifier, tmp_path, tokenizer, batch):
    torch.manual_seed(3)
    cfg = small_config("sdpa", num_labels=3)
    cfg.architectures = ["ObceBertForSequenceClassification" if classifier else "ObceBertModel"]
    model = (ObceBertForSequenceClassification if classifier else ObceBertModel)(cfg).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    auto = AutoModelForSequenceClassification if classifier else AutoModel
    reloaded = auto.from_pretrained(tmp_path).eval()
    via_obce, _ = load_model(tmp_path)
    assert type(reloaded) is type(model) is type(via_obce)
    assert reloaded.config.qk_head_sizes == QK and reloaded.config.v_head_sizes == V
    assert reloaded.config.intermediate_sizes == FFN and reloaded.config.attention_scale_head_size == 8
    key = "logits" if classifier else "last_hidden_state"
    with torch.no_grad():
        ref = model(**batch)[key]
        assert torch.equal(ref, reloaded(**batch)[key])
        assert torch.equal(ref, via_obce(**batch)[key])


# ------------------------------------------------------------------------------------------
# Classifier pooling
# ------------------------------------------------------------------------------------------
def manual_mean_logits(model, batch):
    """Independent mean pooling: average the real tokens' last hidden states, then the linear head."""
    with torch.no_grad():
        states = model.bert(**batch).last_hidden_state
        rows = []
        for i in range(states.shape[0]):
            real = batch["attention_mask"][i].bool()
            rows.append(states[i, real].mean(dim=0))
        return model.classifier(torch.stack(rows))


def test_mean_pooled_logits_are_the_masked_mean(batch):
    torch.manual_seed(4)
    model = ObceBertForSequenceClassification(small_config("sdpa", num_labels=3, classifier_pooling="mean")).eval()
    assert model.bert.pooler is None
    assert batch["attention_mask"].min() == 0  # the batch is padded: padding must not count
    with torch.no_grad():
        out = model(**batch)
        unmasked = model.classifier(model.bert(**batch).last_hidden_state.mean(dim=1))
    torch.testing.assert_close(out.logits, manual_mean_logits(model, batch), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out.logits, unmasked, atol=1e-4)
    labels = torch.tensor([0, 2, 1, 1, 0])
    loss = model(**batch, labels=labels).loss
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert isinstance(model(**batch, return_dict=False), tuple)


def test_load_model_mean_pools_a_plain_bert(tiny_model_dir, batch):
    bert = AutoModel.from_pretrained(tiny_model_dir).eval()
    clf, _ = load_model(tiny_model_dir, num_labels=3, classifier_pooling="mean", device="cpu")
    assert type(clf) is ObceBertForSequenceClassification and clf.config.classifier_pooling == "mean"
    assert clf.config.num_labels == 3 and clf.classifier.out_features == 3 and clf.bert.pooler is None
    assert [layer_sizes(clf.config, i) for i in range(2)] == [layer_sizes(bert.config, i) for i in range(2)]
    encoder = {k: v for k, v in bert.state_dict().items() if not k.startswith("pooler.")}
    assert clf.bert.state_dict().keys() == encoder.keys()
    assert all(torch.equal(clf.bert.state_dict()[k], v) for k, v in encoder.items())
    with torch.no_grad():
        assert torch.equal(clf.bert(**batch).last_hidden_state, bert(**batch).last_hidden_state)
    # "cls" (and no choice) on a plain BERT: the stock classifier, as before.
    for pooling in ("cls", None):
        stock, _ = load_model(tiny_model_dir, num_labels=3, classifier_pooling=pooling, device="cpu")
        assert type(stock) is BertForSequenceClassification and stock.bert.pooler is not None


def test_mean_pooled_classifier_round_trips(tiny_model_dir, tmp_path, tokenizer, batch):
    clf, _ = load_model(tiny_model_dir, num_labels=2, classifier_pooling="mean", device="cpu")
    clf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, _ = load_model(tmp_path, device="cpu")
    assert type(again) is ObceBertForSequenceClassification and again.config.classifier_pooling == "mean"
    with torch.no_grad():
        assert torch.equal(clf(**batch).logits, again(**batch).logits)
        torch.testing.assert_close(again(**batch).logits, manual_mean_logits(again, batch), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"classifier_pooling": "max", "num_labels": 2}, "'classifier_pooling' parameter of load_model must be one of"),
    ({"classifier_pooling": "mean"}, "not a sequence classifier: pass num_labels"),
    ({"num_labels": 0}, "'num_labels' parameter of load_model must be None or an integer >= 1; got 0"),
])
def test_load_model_refuses_bad_pooling_requests(kwargs, message, tiny_model_dir):
    with pytest.raises(ValueError, match=message):
        load_model(tiny_model_dir, device="cpu", **kwargs)
