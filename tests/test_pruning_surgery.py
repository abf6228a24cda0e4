"""Model surgery (slicing, compensation, pooling, refusal of broken scores) and pruned models on disk."""

import json
import math
import os
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForSequenceClassification

import obce_core.pruning.files as pruning_files
from obce_core import load_model
from obce_core.cli import main as cli_main
from obce_core.obce_bert import ObceBertForSequenceClassification, ObceBertModel
from obce_core.pruning import PruningPlan, load_plan, prune, save_pruned, select_units
from tests.pruning_helpers import FFN, H, HEADS, HS, LAYERS, MAXPOS, TYPES, VOCAB, hidden, scores_of, tiny
from tests.pruning_helpers import batch, texts, tiny_scored  # noqa: F401  fixtures

# ------------------------------------------------------------------------------------------
# Surgery
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classifier", [False, True])
def test_zero_plan_is_bit_identical(classifier, tokenizer, texts, batch):
    model = tiny(classifier=classifier)
    scores = scores_of(model, tokenizer, texts)
    pruned, report = prune(model, scores, PruningPlan(skip_layers=1, compensation="cls-mean-std"))
    assert type(pruned) is (ObceBertForSequenceClassification if classifier else ObceBertModel)
    assert torch.equal(hidden(model, batch), hidden(pruned, batch))
    assert report.params_after == report.params_before


def test_zero_plan_is_bit_identical_on_minilm(minilm, sentences, batch):
    model, tok = minilm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = scores_of(model, tok, sentences)
    pruned, _ = prune(model, scores, PruningPlan())
    assert torch.equal(hidden(model, batch), hidden(pruned, batch))
    half, report = prune(model, scores, PruningPlan(ffn=50, qk=50, v=50))
    assert sum(p.numel() for p in half.parameters()) == report.params_after["total"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched


def make_constant_units(model, layer, ffn_unit, v_dim):
    """FFN unit ``ffn_unit`` and value dim ``v_dim`` of every head output a constant for every input."""
    blk = model.encoder.layer[layer]
    with torch.no_grad():
        blk.intermediate.dense.weight[ffn_unit] = 0
        blk.intermediate.dense.bias[ffn_unit] = 1.5  # gelu(1.5) ~ 1.4 for every token
        blk.output.dense.weight[:, ffn_unit] = torch.linspace(-0.5, 0.5, H)  # make it matter
        for h in range(HEADS):
            j = h * HS + v_dim
            blk.attention.self.value.weight[j] = 0
            blk.attention.self.value.bias[j] = -0.8 + 0.3 * h
            blk.attention.output.dense.weight[:, j] = torch.linspace(0.5, -0.5, H)


@pytest.mark.parametrize("group", ["ffn", "v"])
def test_mean_compensation_is_exact_for_a_constant_unit(group, tokenizer, texts, batch):
    model = tiny(seed=5)
    make_constant_units(model, layer=1, ffn_unit=11, v_dim=5)
    scores = scores_of(model, tokenizer, texts)
    # One unit per head / one FFN unit: floor(3 * 37 / 100) = 1, floor(15 * 8 / 100) = 1.
    plan = {"ffn": {"layers": {1: {"ffn": 3}}}, "v": {"layers": {1: {"v": 15}}}}[group]
    sel = select_units(scores, PruningPlan(**plan), model)
    expected = [11] if group == "ffn" else [h * HS + 5 for h in range(HEADS)]
    assert sel.removed(1, group).tolist() == expected  # constant units have rf 0: lowest
    ref = hidden(model, batch)
    with_mean, _ = prune(model, scores, PruningPlan(**plan, compensation="cls-mean"))
    without, _ = prune(model, scores, PruningPlan(**plan, compensation="none"))
    assert (hidden(with_mean, batch) - ref).abs().max() < 1e-5
    assert (hidden(without, batch) - ref).abs().max() > 1e-2


def test_mean_plus_std_adds_the_std(tiny_scored):
    model, scores = tiny_scored
    a, _ = prune(model, scores, PruningPlan(ffn=50, compensation="cls-mean"))
    b, _ = prune(model, scores, PruningPlan(ffn=50, compensation="cls-mean-std"))
    sel = select_units(scores, PruningPlan(ffn=50), model)
    removed = sel.removed(2, "ffn")
    t = scores.table
    std = t[(t.layer == 2) & (t.component == "intermediate")].sort_values("neuron")["std"].to_numpy()[removed]
    w = model.encoder.layer[2].output.dense.weight.detach().double()[:, removed]
    diff = b.encoder.layer[2].output.dense.bias.double() - a.encoder.layer[2].output.dense.bias.double()
    torch.testing.assert_close(diff, w @ torch.as_tensor(std), atol=1e-6, rtol=1e-5)


def closed_form_params(ffn_after, qk_after, v_after, classifier=False, num_labels=2):
    """Parameters of a pruned tiny BERT, written out independently of the library."""
    emb = VOCAB * H + MAXPOS * H + TYPES * H + 2 * H
    per_layer = (
        2 * (H * HEADS * qk_after + HEADS * qk_after)          # query, key
        + (H * HEADS * v_after + HEADS * v_after)              # value
        + (HEADS * v_after * H + H) + 2 * H                    # attention.output.dense + LayerNorm
        + (H * ffn_after + ffn_after)                          # intermediate
        + (ffn_after * H + H) + 2 * H                          # output.dense + LayerNorm
    )
    pooler = H * H + H
    head = H * num_labels + num_labels if classifier else 0
    return emb + LAYERS * per_layer + pooler + head


@pytest.mark.parametrize("classifier", [False, True])
def test_parameter_counts_match_the_closed_form(classifier, tokenizer, texts):
    model = tiny(classifier=classifier)
    scores = scores_of(model, tokenizer, texts)
    pruned, report = prune(model, scores, PruningPlan(ffn=50, qk=30, v=40))
    # ffn: 37 - floor(18.5) = 19; qk: 8 - floor(2.4) = 6; v: 8 - floor(3.2) = 5
    expected = closed_form_params(19, 6, 5, classifier)
    assert sum(p.numel() for p in pruned.parameters()) == expected == report.params_after["total"]
    assert report.params_before["total"] == closed_form_params(FFN, HS, HS, classifier) == sum(
        p.numel() for p in model.parameters())
    assert report.bytes_after == 4 * expected
    layer = pruned.bert.encoder.layer[1] if classifier else pruned.encoder.layer[1]
    assert (layer.attention.self.query.out_features, layer.attention.self.value.out_features) == (18, 15)
    assert (layer.attention.output.dense.in_features, layer.intermediate.dense.out_features) == (15, 19)
    assert pruned.config.qk_head_sizes == [6] * 3 and pruned.config.v_head_sizes == [5] * 3
    assert pruned.config.intermediate_sizes == [19] * 3 and pruned.config.attention_scale_head_size == HS
    assert 0 < report.flops_ratio_estimate < 1


def test_per_layer_overrides_and_qk_v_sizes_differ(tiny_scored, batch):
    model, scores = tiny_scored
    plan = PruningPlan(ffn=20, skip_layers=1, layers={0: {"v": 50}, 2: {"qk": 75, "v": 25, "ffn": 90}})
    pruned, report = prune(model, scores, plan)
    sizes = [(layer.attention.self.qk_head_size, layer.attention.self.v_head_size, layer.intermediate.dense.out_features)
             for layer in pruned.encoder.layer]
    # layer 0 skipped except its v override; layer 1 global; layer 2 overrides (qk floor(6) -> 2 left)
    assert sizes == [(8, 4, 37), (8, 8, 30), (2, 6, 4)]
    assert [d["sizes_after"] for d in report.layers] == [
        {"qk": 8, "v": 4, "ffn": 37}, {"qk": 8, "v": 8, "ffn": 30}, {"qk": 2, "v": 6, "ffn": 4}]
    # Attention in layer 2 (Q/K 2 dims, V 6 dims) still scales by the ORIGINAL 1/sqrt(8).
    att = pruned.encoder.layer[2].attention.self
    captured = {}
    att.register_forward_hook(lambda m, a, out: captured.update(x=a[0], out=out[0]))
    hidden(pruned, batch)
    x, mask = captured["x"], batch["attention_mask"].bool()
    with torch.no_grad():
        b, n, _ = x.shape
        q = F.linear(x, att.query.weight, att.query.bias).view(b, n, HEADS, 2).transpose(1, 2)
        k = F.linear(x, att.key.weight, att.key.bias).view(b, n, HEADS, 2).transpose(1, 2)
        v = F.linear(x, att.value.weight, att.value.bias).view(b, n, HEADS, 6).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(8)
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        manual = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, HEADS * 6)
    torch.testing.assert_close(captured["out"], manual, atol=1e-5, rtol=1e-5)


def test_pruning_a_pruned_model_keeps_the_original_scale(tiny_scored, tokenizer, texts, batch):
    model, scores = tiny_scored
    once, _ = prune(model, scores, PruningPlan(qk=50, v=25, ffn=20))
    twice, report = prune(once, scores_of(once, tokenizer, texts), PruningPlan(qk=50, ffn=50))
    # qk 8 -> 4 -> 2, v 8 -> 6 -> 6, ffn 37 -> 30 -> 15; logits still scaled by 1/sqrt(8)
    assert (twice.config.qk_head_sizes, twice.config.v_head_sizes, twice.config.intermediate_sizes) == (
        [2] * 3, [6] * 3, [15] * 3)
    assert twice.config.attention_scale_head_size == HS and twice.encoder.layer[1].attention.self.scaling == HS**-0.5
    assert report.params_after["total"] == sum(p.numel() for p in twice.parameters())
    assert hidden(twice, batch).shape[-1] == H


def test_bare_encoder_scores_apply_to_a_classifier(tokenizer, texts, batch):
    bare = tiny(seed=2)
    clf = tiny(seed=9, classifier=True)
    clf.bert.load_state_dict(bare.state_dict())  # the paper's protocol: same encoder, new head
    scores = scores_of(bare, tokenizer, texts)
    pruned, _ = prune(clf, scores, PruningPlan(ffn=30, qk=25, v=25))
    assert type(pruned) is ObceBertForSequenceClassification
    assert torch.equal(pruned.classifier.weight, clf.classifier.weight)
    assert hidden(pruned, batch).shape == (6, 2)


def test_pruned_classifier_still_trains(tokenizer):
    torch.manual_seed(0)
    clf = tiny(seed=4, classifier=True)
    pos = ["good", "great film", "a good movie", "loved it, great", "good good", "great"]
    neg = ["bad", "awful film", "a bad movie", "hated it, awful", "bad bad", "awful"]
    texts = pos + neg
    scores = scores_of(clf, tokenizer, texts)
    pruned, _ = prune(clf, scores, PruningPlan(ffn=50, qk=50, v=50))
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([1] * len(pos) + [0] * len(neg))
    pruned.train()
    opt = torch.optim.AdamW(pruned.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = pruned(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize(
    "column, layer, component, plan, message",
    [
        ("rf", 1, "intermediate", dict(ffn=50), r"The 'rf' score of layer 1 intermediate \(FFN units\) is NaN"),
        ("rf", 2, "key", dict(qk=50), r"The 'rf' score of layer 2 query/key \(query/key dim pairs per head\)"),
        ("mean", 0, "value", dict(v=50, compensation="cls-mean"),
         r"The cls-mean compensation value of layer 0 value \(value dims per head\)"),
        ("std", 2, "intermediate", dict(ffn=20, compensation="cls-mean-std"), "cls-mean-std compensation value of layer 2"),
    ],
)
def test_non_finite_statistics_are_refused(column, layer, component, plan, message, tiny_scored):
    model, scores = tiny_scored
    table = scores.table.copy()
    where = (table.layer == layer) & (table.component == component) & (table.neuron == 3)
    table.loc[where, column] = np.inf if column == "std" else np.nan
    scores.table = table
    with pytest.raises(ValueError, match=message + r".*first: \[3\].*rescore the model"):
        prune(model, scores, PruningPlan(**plan))
    if column == "mean":  # without compensation the mean is not used, so it cannot hurt
        prune(model, scores, PruningPlan(**{**plan, "compensation": "none"}))


def test_pruning_keeps_mean_pooling(tiny_model_dir, tokenizer, texts, batch):
    clf, _ = load_model(tiny_model_dir, num_labels=3, classifier_pooling="mean", device="cpu")
    scores = scores_of(clf, tokenizer, texts)
    same, _ = prune(clf, scores, PruningPlan())
    assert torch.equal(hidden(clf, batch), hidden(same, batch))
    pruned, report = prune(clf, scores, PruningPlan(ffn=50, qk=25, v=25))
    assert pruned.config.classifier_pooling == "mean" and pruned.bert.pooler is None
    assert report.params_before["pooler"] == 0 == report.params_after["pooler"]
    assert sum(p.numel() for p in pruned.parameters()) == report.params_after["total"]
    with torch.no_grad():
        states = pruned.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        manual = pruned.classifier((states * mask).sum(1) / mask.sum(1))
    torch.testing.assert_close(hidden(pruned, batch), manual, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classifier", [False, True])
def test_save_and_reload_bit_exact(classifier, tmp_path, tokenizer, texts, batch):
    model = tiny(classifier=classifier)
    scores = scores_of(model, tokenizer, texts)
    plan = PruningPlan(ffn=40, qk=25, v=50, layers={1: {"ffn": 80}})
    pruned, report = prune(model, scores, plan)
    out = save_pruned(pruned, tokenizer, tmp_path / "pruned", plan=plan, report=report)
    assert {"config.json", "model.safetensors", "obce_plan.json", "obce_report.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "obce_bert" and config["intermediate_sizes"] == [23, 8, 23]  # 37 - floor(14.8), 37 - floor(29.6)
    assert load_plan(out) == plan
    assert json.loads((out / "obce_report.json").read_text())["params_after"] == report.params_after
    auto = AutoModelForSequenceClassification if classifier else AutoModel
    ref = hidden(pruned, batch)
    assert torch.equal(ref, hidden(auto.from_pretrained(out).eval(), batch))
    loaded, tok = load_model(out)
    assert type(loaded) is type(pruned) and torch.equal(ref, hidden(loaded, batch))
    assert tok("hello")["input_ids"] == tokenizer("hello")["input_ids"]


def test_save_is_atomic_and_refuses_to_overwrite(tmp_path, tiny_scored, tokenizer, monkeypatch):
    model, scores = tiny_scored
    plan = PruningPlan(ffn=30)
    pruned, report = prune(model, scores, plan)
    target = tmp_path / "out"

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as m:
        m.setattr(PruningPlan, "to_json", boom)  # fails after the weights were written
        with pytest.raises(OSError, match="simulated"):
            save_pruned(pruned, tokenizer, target, plan=plan, report=report)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp dir is left behind

    save_pruned(pruned, tokenizer, target, plan=plan)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755  # not mkdtemp's 0700
    with pytest.raises(FileExistsError, match="already holds a model saved by obce; choose another name"):
        save_pruned(pruned, tokenizer, target, plan=PruningPlan(ffn=60))
    # A failed overwrite keeps the old directory intact.
    with monkeypatch.context() as m:
        m.setattr(pruning_files.json, "dumps", boom)
        with pytest.raises(OSError):
            save_pruned(pruned, tokenizer, target, plan=plan, report=report, overwrite=True)
    assert load_plan(target) == plan and [p.name for p in tmp_path.iterdir()] == ["out"]
    save_pruned(pruned, tokenizer, target, plan=PruningPlan(ffn=60), overwrite=True)
    assert load_plan(target).ffn == 60 and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("contents", [{"notes.txt": "my thesis"}, {"config.json": "{}", "model.safetensors": "x"}])
def test_save_never_replaces_a_folder_obce_did_not_write(contents, tmp_path, tiny_scored, tokenizer):
    model, scores = tiny_scored
    pruned, report = prune(model, scores, PruningPlan(ffn=30))
    target = tmp_path / "mine"
    target.mkdir()
    for name, text in contents.items():
        (target / name).write_text(text)
    with pytest.raises(FileExistsError, match="holds files that obce did not save; choose another name. Only a "
                                              "folder holding a model saved by obce can be overwritten"):
        save_pruned(pruned, tokenizer, target, plan=PruningPlan(ffn=30), report=report, overwrite=True)
    assert {p.name: p.read_text() for p in target.iterdir()} == contents
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temp folder left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file; choose another name"):
        save_pruned(pruned, tokenizer, tmp_path / "file", overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_plan(save_pruned(pruned, tokenizer, empty, plan=PruningPlan(ffn=30))) == PruningPlan(ffn=30)


def test_cli_prune(tmp_path, tokenizer, texts, capsys):
    model = tiny()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    scores_of(model, tokenizer, texts).to_parquet(tmp_path / "scores.parquet")
    common = ["prune", "--model", str(tmp_path / "model"), "--scores", str(tmp_path / "scores.parquet")]
    rc = cli_main(common + ["--ffn", "50", "--qk", "25", "--v", "25", "--skip-layers", "1", "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert rc == 0 and "Parameters:" in out and "ffn units" in out
    assert load_plan(tmp_path / "p") == PruningPlan(ffn=50, qk=25, v=25, skip_layers=1)
    (tmp_path / "plan.json").write_text('{"v": 120}')
    rc = cli_main(common + ["--plan", str(tmp_path / "plan.json"), "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "The 'v' parameter of PruningPlan must be a finite number in [0, 100)" in err and "Traceback" not in err
    rc = cli_main(common + ["--ffn", "10", "--out", str(tmp_path / "p")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
