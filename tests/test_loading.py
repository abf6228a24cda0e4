"""Model loading: the embedded default, local directories, and every bad source's message."""


import json
import os
import sys

import pytest
import torch
from transformers import BertForSequenceClassification, BertModel, GPT2Config, GPT2Model

from obce_core import ModelLoadError, default_model_dir, load_model, model_fingerprint
from tests.conftest import make_tiny_bert, save_tiny_bert


def test_embedded_default_is_minilm(minilm):
    model, tok = minilm
    assert isinstance(model, BertModel) and not model.training
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    assert (default_model_dir() / "config.json").is_file()
    ids = tok("hello world")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_local_directory_round_trip(tmp_path, tokenizer):
    model = make_tiny_bert()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    enc = tokenizer(["a small test"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, loaded(**enc).last_hidden_state)
    assert model_fingerprint(model) == model_fingerprint(loaded)


def test_num_labels_gives_a_classifier_with_same_encoder(tmp_path, tokenizer):
    save_tiny_bert(tmp_path, tokenizer)
    clf, _ = load_model(tmp_path, num_labels=3)
    bare, _ = load_model(tmp_path)
    assert isinstance(clf, BertForSequenceClassification) and clf.config.num_labels == 3
    assert model_fingerprint(clf) == model_fingerprint(bare)  # the head is not part of the fingerprint
    clf.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    again, _ = load_model(tmp_path / "clf")  # a saved classifier reloads as a classifier
    assert isinstance(again, BertForSequenceClassification)


def test_fingerprint_tracks_weights():
    a, b = make_tiny_bert(seed=0), make_tiny_bert(seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.encoder.layer[1].output.dense.weight[0, 0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.bin"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(f)


def test_hub_id_offline_names_the_id_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'some-org/some-bert'.*local directory"):
        load_model("some-org/some-bert")


def test_non_bert_is_refused(tmp_path):
    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model_type 'gpt2'.*supports BERT"):
        load_model(tmp_path)


def test_corrupt_weights_are_reported(tmp_path, tokenizer):
    make_tiny_bert().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="Could not load the weights"):
        load_model(tmp_path)


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config"):
        load_model(tmp_path)


@pytest.mark.parametrize("model_type", ["bert", "evil_bert"])
def test_model_folders_never_run_their_code(model_type, tmp_path, tokenizer, monkeypatch):
    folder = save_tiny_bert(tmp_path / "model", tokenizer)
    marker = tmp_path / "code-ran"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    code += "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'evil_bert'\n"
    (folder / "evil_config.py").write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil_config.EvilConfig",
                                                   "AutoModel": "evil_config.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    closed = open(os.devnull)
    closed.close()
    monkeypatch.setattr(sys, "stdin", closed)  # a trust_remote_code prompt would fail on it
    with pytest.raises(ModelLoadError, match=r"names custom Python code to run \(auto_map: .*evil_config.EvilConfig"
                                             r".*obce never runs code shipped with a model"):
        load_model(folder)
    assert not marker.exists()
