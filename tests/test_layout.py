"""The ground floor: BERT's layout facts (``layout``) and running a shared model (``forward``).

Oracles: the module paths of transformers' ``BertLayer`` written out by hand, shapes from the
config the tiny model was built with, and pooled vectors computed by hand.
"""

import threading

import pytest
import torch

from obce_core.forward import locked_eval, model_lock, pool, text_label
from obce_core.layout import (GROUP_LABELS, GROUPS, READ_GROUPS, base_model, encoder_layers, following_norm, layer_shapes,
                              reader, unit_modules)
from tests.conftest import make_tiny_bert


def test_each_group_names_the_modules_transformers_builds():
    layer = make_tiny_bert().encoder.layer[1]
    att = layer.attention
    assert unit_modules(layer, "ffn") == (layer.intermediate.dense,)
    assert unit_modules(layer, "qk") == (att.self.query, att.self.key)
    assert unit_modules(layer, "v") == (att.self.value,)
    assert reader(layer, "ffn") is layer.output.dense and following_norm(layer, "ffn") is layer.output.LayerNorm
    assert reader(layer, "v") is att.output.dense and following_norm(layer, "v") is att.output.LayerNorm
    assert READ_GROUPS == ("ffn", "v") and set(GROUP_LABELS) == set(GROUPS) == {"ffn", "qk", "v"}
    for lookup in (reader, following_norm):
        with pytest.raises(ValueError, match=r"group 'qk' .* has no reader Linear .* Groups with a reader: \('ffn', 'v'\)"):
            lookup(layer, "qk")
    with pytest.raises(ValueError, match="'ffn', 'qk', 'v'"):
        unit_modules(layer, "heads")


def test_layer_shapes_and_the_encoder_inside_a_head_model():
    model = make_tiny_bert(hidden=24, heads=3, layers=2, ffn=37, classifier=True)
    assert base_model(model) is model.bert and encoder_layers(model) is model.bert.encoder.layer
    assert layer_shapes(model) == [{"heads": 3, "qk": 8, "v": 8, "ffn": 37}] * 2
    with pytest.raises(ValueError, match="has no `encoder.layer` list"):
        encoder_layers(torch.nn.Linear(2, 2))


def test_pool_takes_cls_or_the_mean_of_the_real_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, None, "mean")[0].tolist() == pytest.approx([104 / 3, 106 / 3])  # float32
    with pytest.raises(ValueError, match="'cls', 'mean'"):
        pool(hidden, mask, "max")


def test_text_label_joins_pairs_and_cuts_with_an_ellipsis():
    assert text_label(("a cat", "a dog")) == "a cat [SEP] a dog"
    assert text_label("abcdef", 4) == "abc…" and text_label("abcd", 4) == "abcd"


def test_locked_eval_holds_the_shared_lock_and_restores_training():
    model = make_tiny_bert(classifier=True).train()
    assert model_lock(model) is model_lock(model.bert)  # a head model and its encoder share one lock
    seen = {}

    def try_lock():
        seen["free"] = model_lock(model.bert).acquire(blocking=False)

    with locked_eval(model) as device:
        thread = threading.Thread(target=try_lock)
        thread.start()
        thread.join()
        seen["training"], seen["grad"] = model.training, torch.is_grad_enabled()
        assert device == torch.device("cpu")
    assert seen == {"free": False, "training": False, "grad": False}
    assert model.training  # restored
