"""Attribution per unit (obce_core.attribution): integrated gradients against a hand-written Riemann
sum through an independent mask (the weights scaled, no hooks), completeness, the exact ablation
effect against ``prune`` + a hand-computed loss, the agreement table, the cache and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from obce_core import glue, score_model
from obce_core.attribution import (AttributionSettings, SentenceObjective, TaskObjective, agreement_table,
                                   ablation_effects, integrated_gradients, masked_mean_loss, read_attribution,
                                   spearman_interval, unit_attribution, with_scorers)
from obce_core.attribution import table as table_module
from obce_core.cli import main
from obce_core.evidence.embedding import SentencePooling
from obce_core.pruning import PruningPlan, prune
from obce_core.pruning.selection import select_units
from tests.conftest import GLUE_DIR, SENTENCES, make_tiny_bert, needs_glue, save_task_model, save_tiny_bert

GROUP_ROWS = {"ffn": ("intermediate",), "qk": ("query", "key"), "v": ("value",)}


def sharp_tiny(classifier=True, heads=3, hidden=24, seed=0):
    """A tiny random BERT with weights 8x BERT's init scale: far from linear, so units matter unequally."""
    model = make_tiny_bert(seed=seed, classifier=classifier, heads=heads, hidden=hidden)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(8.0)
    return model


def examples(n=36):
    texts = [f"{s} ({i})" for i, s in enumerate((SENTENCES * 4)[:n])]
    labels = np.array([(i * 7) % 3 % 2 for i in range(n)])
    return texts, labels


def oracle_mean_loss(model, tokenizer, texts, labels, masks):
    """The mean cross-entropy with unit masks written INTO THE WEIGHTS (no hooks): FFN unit j scales
    column j of output.dense; value dim j and query dim i scale their row and bias."""
    params = dict(model.named_parameters())
    for i in range(model.config.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        params[p + "output.dense.weight"] = params[p + "output.dense.weight"] * masks[(i, "ffn")][None, :]
        for group, name in (("v", "attention.self.value"), ("qk", "attention.self.query")):
            params[p + name + ".weight"] = params[p + name + ".weight"] * masks[(i, group)][:, None]
            params[p + name + ".bias"] = params[p + name + ".bias"] * masks[(i, group)]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    logits = torch.func.functional_call(model, params, args=(), kwargs=dict(batch)).logits
    return torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels), reduction="mean")


def widths(model):
    cfg = model.config
    return {"ffn": cfg.intermediate_size, "v": cfg.hidden_size, "qk": cfg.hidden_size}


def oracle_ig(model, tokenizer, texts, labels, steps):
    """-IG by the midpoint rule, written out: every mask at a = (k + 1/2) / steps, gradients averaged."""
    total = {}
    for k in range(steps):
        alpha = (k + 0.5) / steps
        masks = {(i, g): torch.full((w,), alpha, requires_grad=True)
                 for i in range(model.config.num_hidden_layers) for g, w in widths(model).items()}
        loss = oracle_mean_loss(model, tokenizer, texts, labels, masks)
        grads = torch.autograd.grad(loss, list(masks.values()))
        for key, grad in zip(masks, grads):
            total[key] = total.get(key, 0) + grad.double().numpy()
    return {key: -value / steps for key, value in total.items()}


def constant_masks(model, value):
    return {(i, g): torch.full((w,), float(value)) for i in range(model.config.num_hidden_layers)
            for g, w in widths(model).items()}


def test_integrated_gradients_equal_a_hand_written_riemann_sum(tokenizer, one_torch_thread):
    model = sharp_tiny()
    texts, labels = examples()
    objective = TaskObjective.build(model, tokenizer, "sst2", texts, labels, batch_size=16)
    ours = integrated_gradients(model, objective, steps=4)
    oracle = oracle_ig(model, tokenizer, texts, labels, steps=4)
    scale = max(np.abs(v).max() for v in oracle.values())
    assert scale > 1e-4  # the units matter: the comparison is not of zeros
    for (layer, group), expected in oracle.items():
        np.testing.assert_allclose(ours.attribution[layer][group], expected, rtol=1e-3, atol=1e-4 * scale)


def test_attributions_add_up_to_the_loss_change_within_the_riemann_error(tokenizer, one_torch_thread):
    model = sharp_tiny()
    texts, labels = examples()
    objective = TaskObjective.build(model, tokenizer, "sst2", texts, labels)
    with torch.no_grad():
        kept = float(oracle_mean_loss(model, tokenizer, texts, labels, constant_masks(model, 1.0)))
        removed = float(oracle_mean_loss(model, tokenizer, texts, labels, constant_masks(model, 0.0)))
    change = removed - kept
    assert abs(change) > 1e-2
    np.testing.assert_allclose(masked_mean_loss(model, objective, [1.0, 0.0]), [kept, removed], rtol=1e-5)
    gaps = {}
    for steps in (4, 16):
        ig = integrated_gradients(model, objective, steps=steps)
        gaps[steps] = abs(sum(float(v.sum()) for row in ig.attribution for v in row.values()) - change)
    # The midpoint rule's error falls as 1/steps^2: 16x fewer points' error is about 16x smaller.
    assert gaps[16] < gaps[4] / 4 + 1e-6
    assert gaps[16] < 0.02 * abs(change)
    table = unit_attribution(model, objective, AttributionSettings(steps=16, ablation_units=0))
    assert table.attrs["completeness_gap"] == pytest.approx(table["attribution"].sum() - change, abs=1e-6)


def test_the_sentence_objective_is_zero_kept_and_its_attributions_add_up(tokenizer, one_torch_thread):
    model = sharp_tiny(classifier=False)
    texts, _ = examples(32)
    pooling = SentencePooling(pooling="mean")
    objective = SentenceObjective.build(model, tokenizer, texts, pooling)
    kept, removed = masked_mean_loss(model, objective, [1.0, 0.0])
    # Oracle for "removed": every masked weight zeroed by hand, 1 - cosine to the unmasked mean-pooled output.
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        mask = batch["attention_mask"][..., None].float()
        before = (model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
        gone = make_tiny_bert(classifier=False)
        gone.load_state_dict(model.state_dict())
        for layer in gone.encoder.layer:
            layer.output.dense.weight.zero_()
            for linear in (layer.attention.self.value, layer.attention.self.query):
                linear.weight.zero_()
                linear.bias.zero_()
        after = (gone(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
        expected = float((1 - torch.nn.functional.cosine_similarity(after, before)).mean())
    assert kept == pytest.approx(0.0, abs=1e-6)
    assert removed == pytest.approx(expected, rel=1e-4) and removed > 1e-3
    ig = integrated_gradients(model, objective, steps=16)
    total = sum(float(v.sum()) for row in ig.attribution for v in row.values())
    assert total == pytest.approx(removed - kept, rel=0.02)


def _pruned_loss(model, tokenizer, texts, labels, scores, layer, group, unit, percent):
    """Remove exactly ``unit`` with prune: it gets the lowest rf of its group, the plan removes one."""
    table = scores.table.copy()
    for component in GROUP_ROWS[group]:
        rows = (table["layer"] == layer) & (table["component"] == component)
        table.loc[rows, "rf"] = table.loc[rows, "rf"] + 1.0
        table.loc[rows & (table["neuron"] == unit), "rf"] = 0.0
    scores = type(scores)(**{**scores.__dict__, "table": table})
    plan = PruningPlan(layers={layer: {group: percent}}, compensation="none")
    assert select_units(scores, plan, model).removed(layer, group).tolist() == [unit]
    pruned, _ = prune(model, scores, plan)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = pruned.eval()(**batch).logits
    return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels)))


def test_the_exact_ablation_effect_equals_pruning_that_unit_and_evaluating(tokenizer, one_torch_thread):
    model = sharp_tiny(heads=1)  # one head: a plan can remove a single value dim or query/key pair
    texts, labels = examples(32)
    objective = TaskObjective.build(model, tokenizer, "sst2", texts, labels)
    scores = score_model(model, tokenizer, texts, use_cache=False)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        whole = float(torch.nn.functional.cross_entropy(model(**batch).logits, torch.as_tensor(labels)))
    # 37 FFN units: 3 % removes one; 24 dims per head: 5 % removes one.
    units = pd.DataFrame({"layer": [1, 1, 0, 1], "group": ["ffn", "v", "qk", "qk"], "unit": [5, 17, 3, 11]})
    effects = ablation_effects(model, objective, units)
    expected = [_pruned_loss(model, tokenizer, texts, labels, scores, r.layer, r.group, r.unit,
                             3 if r.group == "ffn" else 5) - whole for r in units.itertuples()]
    assert max(abs(e) for e in expected) > 1e-4
    np.testing.assert_allclose(effects, expected, rtol=1e-3, atol=2e-6)


def test_the_table_has_every_unit_the_checked_sample_and_is_cached(tokenizer, one_torch_thread, monkeypatch, tmp_path):
    model = sharp_tiny()
    texts, labels = examples(32)
    objective = TaskObjective.build(model, tokenizer, "sst2", texts, labels)
    settings = AttributionSettings(steps=2, ablation_units=6, seed=3)
    table = unit_attribution(model, objective, settings)
    assert table.groupby(["layer", "group"]).size().to_dict() == {(i, g): n for i in (0, 1)
                                                                 for g, n in (("ffn", 37), ("qk", 24), ("v", 24))}
    checked = table.dropna(subset=["ablation"])
    assert len(checked) == 6 and sorted(set(zip(checked["layer"], checked["group"]))) == [
        (i, g) for i in (0, 1) for g in ("ffn", "qk", "v")]
    expected = ablation_effects(model, objective, checked[["layer", "group", "unit"]].reset_index(drop=True))
    np.testing.assert_allclose(checked["ablation"].to_numpy(), expected, rtol=1e-6, atol=1e-9)

    def no_compute(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(table_module, "integrated_gradients", no_compute)
    again = unit_attribution(model, objective, settings)
    pd.testing.assert_frame_equal(again, table)
    assert again.attrs["loss_kept"] == table.attrs["loss_kept"]
    with pytest.raises(AssertionError, match="computed again"):
        unit_attribution(model, objective, AttributionSettings(steps=3, ablation_units=6, seed=3))


def test_agreement_against_scipy_and_a_scorer_equal_to_the_attribution(tokenizer, one_torch_thread):
    model = sharp_tiny()
    texts, labels = examples(32)
    objective = TaskObjective.build(model, tokenizer, "sst2", texts, labels)
    scores = score_model(model, tokenizer, texts, use_cache=False)
    table = with_scorers(unit_attribution(model, objective, AttributionSettings(steps=2, ablation_units=0)),
                         model, scores)
    assert table.attrs["missing_scorers"] == ["fisher"] and table["fisher"].isna().all()
    # The rf column is select_units' rf score (query/key: the pair's mean of its two rows).
    sel = select_units(scores, PruningPlan(), model)
    part = table[(table["layer"] == 1) & (table["group"] == "qk")].sort_values("unit")
    np.testing.assert_array_equal(part["rf"].to_numpy(), sel.scores[1]["qk"])
    rho, low, high = spearman_interval(part["magnitude"], part["attribution"], resamples=200)
    assert rho == pytest.approx(spearmanr(part["magnitude"], part["attribution"]).statistic, abs=1e-12)
    assert low <= rho <= high
    # A table whose attribution IS the rf score: Spearman 1, and a plan by rf removes exactly the lowest.
    same = table.assign(attribution=table["rf"])
    agree = agreement_table(same, model, scores, percent=40, resamples=50)
    rf_layer1 = agree[(agree["scorer"] == "rf") & (agree["layer"] == 1)]
    assert np.allclose(rf_layer1["spearman"], 1.0) and np.allclose(rf_layer1["removed_in_lowest"], 1.0)
    ffn = agree[(agree["layer"] == 1) & (agree["group"] == "ffn") & (agree["scorer"] == "rf")].iloc[0]
    assert (ffn["removed"], ffn["chance"]) == (14, pytest.approx(14 / 37))  # floor(0.4 * 37)


def test_bad_input_is_refused_before_any_work(tokenizer, tmp_path, capsys, monkeypatch):
    model = make_tiny_bert(classifier=True)
    texts, labels = examples(31)
    with pytest.raises(ValueError, match="at least 32 examples"):
        TaskObjective.build(model, tokenizer, "sst2", texts, labels)
    with pytest.raises(ValueError, match="at least 32 examples"):
        SentenceObjective.build(model, tokenizer, texts, SentencePooling())
    with pytest.raises(ValueError, match="steps"):
        AttributionSettings(steps=1)
    with pytest.raises(ValueError, match="num_labels"):
        TaskObjective.build(make_tiny_bert(), tokenizer, "sst2", *examples(32))  # no head: no task loss

    import obce_core.loading

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(obce_core.loading, "load_model", no_load)  # the command imports it when it runs
    encoder = save_tiny_bert(tmp_path / "enc", tokenizer)
    task_model = save_task_model(tmp_path / "task", tokenizer)
    out = tmp_path / "a.parquet"
    cases = [(["--model", str(encoder)], "no task head"),
             (["--model", str(task_model), "--n", "31"], "at least 32 examples"),
             (["--model", str(task_model), "--steps", "1"], "--steps")]
    for argv, message in cases:
        try:
            code = main(["attribution", *argv, "--out", str(out)])
        except SystemExit as exc:  # argparse refuses --steps 1 itself
            code = exc.code
        assert code == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


@needs_glue
def test_cli_writes_one_row_per_unit_with_every_scorer(tokenizer, tmp_path, capsys, one_torch_thread):
    task_model = save_task_model(tmp_path / "task", tokenizer, task="mrpc")  # a small training file
    out = tmp_path / "a.parquet"
    code = main(["attribution", "--model", str(task_model), "--glue-dir", str(GLUE_DIR), "--n", "32", "--steps", "2",
                 "--ablation-units", "6", "--score-texts", "16", "--fisher-examples", "16", "--resamples", "20",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    table = read_attribution(out)
    assert len(table) == 2 * (37 + 24 + 24)
    assert {"layer", "group", "unit", "attribution", "ablation", "rf", "std", "magnitude", "flap", "fisher",
            "random"} <= set(table.columns)
    assert table[["rf", "fisher", "magnitude"]].notna().all().all()
    assert table.attrs["n_examples"] == 32 and table.attrs["kind"] == "task"
    # The examples are the seeded draw of MRPC dev (sentence pairs): the attribution is the core's on them.
    data = glue.load_task("mrpc", "validation", GLUE_DIR, n=32, seed=0)
    from obce_core import load_model

    model, tok = load_model(str(task_model), device="cpu")
    objective = TaskObjective.build(model, tok, "mrpc", glue.dataset_texts(data, "mrpc"), data["label"])
    direct = unit_attribution(model, objective, AttributionSettings(steps=2, ablation_units=6), use_cache=False)
    np.testing.assert_allclose(table["attribution"].to_numpy(), direct["attribution"].to_numpy(), rtol=1e-6, atol=1e-12)
    assert "Spearman of each scorer with the attribution" in capsys.readouterr().out
