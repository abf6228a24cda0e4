"""Compensation (token-mean, lsq, auto and their fallbacks), the FLAP scorer and ranking stability.

Oracles: a layer whose removed units are exact copies of kept ones (or constant) can be
reconstructed exactly, so the pruned model must reproduce the original output to float error;
FLAP is recomputed by hand from the captured activations; identical halves rank identically.
"""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from obce_core.pruning import (
    CompensationWarning,
    PruningPlan,
    capture_calibration,
    prune,
    ranking_stability,
    select_units,
)
from tests.pruning_helpers import EXTRA, FFN, HEADS, HS, hidden, scores_of, tiny
from tests.pruning_helpers import batch, texts  # noqa: F401  fixtures
from tests.test_pruning_surgery import make_constant_units

MORE = [f"{a} {b}" for a in EXTRA for b in EXTRA[:4]]  # enough tokens for a 37-unit fit


def all_tokens(model, batch):
    """Every token's last hidden state (padding excluded), the layer output lsq must preserve."""
    return hidden(model, batch)[batch["attention_mask"].bool()]


def make_twins(model, layer, group):
    """In ``layer``, a unit that copies another one (so it is a linear combination of kept units).

    FFN: units 7 and 30 share small input weights (lowest rf), and unit 11 is constant. Value: in
    every head dims 2 and 5 are equal and small, so each head removes dim 2 and keeps its twin 5.
    Returns the indices the plan below must remove.
    """
    blk = model.encoder.layer[layer]
    with torch.no_grad():
        if group == "ffn":
            w = blk.intermediate.dense
            w.weight[30] = w.weight[7] = 0.02 * w.weight[3]
            w.bias[30] = w.bias[7] = 0.3
            w.weight[11], w.bias[11] = 0, 1.5
            blk.output.dense.weight[:, [7, 11, 30]] = torch.linspace(-1, 1, 3 * blk.output.dense.out_features).view(-1, 3)
            return [7, 11]
        v = blk.attention.self.value
        gen = torch.Generator().manual_seed(0)
        for h in range(HEADS):
            a, b = h * HS + 2, h * HS + 5
            # Their own direction: a multiple of another dim's row would make the KEPT dims affinely
            # dependent (the context keeps affine relations), a singular system.
            v.weight[b] = v.weight[a] = 0.002 * torch.randn(v.in_features, generator=gen)
            v.bias[b] = v.bias[a] = 0.1 * (h + 1)
            blk.attention.output.dense.weight[:, a] = torch.linspace(1, -1, blk.attention.output.dense.out_features)
        return [h * HS + 2 for h in range(HEADS)]


PLANS = {"ffn": {1: {"ffn": 6}}, "v": {1: {"v": 15}}}  # floor(6 * 37 / 100) = 2 units; 1 dim per head


@pytest.mark.parametrize("group", ["ffn", "v"])
def test_lsq_reproduces_a_layer_whose_removed_units_are_copies_or_constant(group, tokenizer, texts, batch):
    model = tiny(seed=3)
    expected = make_twins(model, 1, group)
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    plan = PruningPlan(layers=PLANS[group], compensation="lsq")
    assert select_units(scores, plan, model).removed(1, group).tolist() == expected
    # Plain least squares (damping 0): the exact answer exists, so the fit must find it.
    calibration = capture_calibration(model, tokenizer, corpus, lsq_dampings=(0.0,), min_tokens_per_unit=2)
    pruned, report = prune(model, scores, plan, calibration=calibration)
    none, _ = prune(model, scores, PruningPlan(layers=PLANS[group], compensation="none"))
    ref = all_tokens(model, batch)
    assert (all_tokens(pruned, batch) - ref).abs().max() < 1e-4
    assert (all_tokens(none, batch) - ref).abs().max() > 1e-2
    assert [(r["layer"], r["group"], r["method"]) for r in report.compensations] == [(1, group, "lsq")]


@pytest.mark.parametrize("group", ["ffn", "v"])
def test_token_mean_is_exact_for_a_unit_constant_over_all_tokens(group, tokenizer, texts, batch):
    model = tiny(seed=5)
    make_constant_units(model, layer=1, ffn_unit=11, v_dim=5)
    scores = scores_of(model, tokenizer, texts)
    plan = {"ffn": {1: {"ffn": 3}}, "v": {1: {"v": 15}}}[group]
    calibration = capture_calibration(model, tokenizer, texts)
    pruned, _ = prune(model, scores, PruningPlan(layers=plan, compensation="token-mean"), calibration=calibration)
    assert (all_tokens(pruned, batch) - all_tokens(model, batch)).abs().max() < 1e-5


def test_auto_picks_the_lowest_heldout_error_and_says_so(tokenizer, texts, batch):
    model = tiny(seed=2)
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    calibration = capture_calibration(model, tokenizer, corpus, min_tokens_per_unit=2)
    plan = PruningPlan(ffn=30, v=25)
    assert plan.compensation == "auto"
    pruned, report = prune(model, scores, plan, calibration=calibration)
    assert len(report.compensations) == 2 * 3  # ffn and v in each of the 3 layers
    for row in report.compensations:
        errors = row["heldout_mse"]
        assert set(errors) == {"none", "token-mean", "cls-mean", "lsq"}
        assert row["method"] == min(errors, key=errors.get)
        assert errors[row["method"]] <= errors["none"]
    assert "Compensation (requested -> applied" in report.summary()
    # Without calibration data auto is none everywhere, and the report says why.
    blind, blind_report = prune(model, scores, plan)
    none, _ = prune(model, scores, PruningPlan(ffn=30, v=25, compensation="none"))
    assert torch.equal(hidden(blind, batch), hidden(none, batch))
    assert {r["method"] for r in blind_report.compensations} == {"none"}
    assert "no calibration data" in blind_report.compensations[0]["note"]


def test_remembered_fits_give_the_weights_of_fresh_ones(tokenizer, texts, batch):
    """A search re-prunes unchanged layers the same way: the fits it remembers must be the ones a
    fresh calibration (nothing remembered) computes, and a changed layer must be fitted anew."""
    model = tiny(seed=2)
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    calibration = capture_calibration(model, tokenizer, corpus, min_tokens_per_unit=2)
    first = PruningPlan(compensation="lsq", layers={0: {"ffn": 30, "v": 25}, 1: {"ffn": 30}})
    second = PruningPlan(compensation="lsq", layers={0: {"ffn": 30, "v": 25}, 1: {"ffn": 60}})
    prune(model, scores, first, calibration=calibration)
    remembered = prune(model, scores, second, calibration=calibration)[0]
    fresh = prune(model, scores, second, calibration=capture_calibration(model, tokenizer, corpus,
                                                                         min_tokens_per_unit=2))[0]
    assert len(calibration.__dict__["_obce_compensation_memo"]) == 4  # 3 fits of `first`, 1 new of `second`
    for (name, a), b in zip(remembered.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(hidden(remembered, batch), hidden(fresh, batch))


def test_old_plan_names_read_as_what_they_compute():
    assert PruningPlan(compensation="mean").compensation == "cls-mean"
    assert PruningPlan.from_json('{"compensation": "mean+std"}').compensation == "cls-mean-std"


def test_lsq_with_too_few_tokens_falls_back_to_none_with_a_warning(tokenizer, sentences, batch):
    model = tiny(seed=1)
    few = sentences[:4]
    scores = scores_of(model, tokenizer, few)
    calibration = capture_calibration(model, tokenizer, few)
    plan = PruningPlan(ffn=20, compensation="lsq")
    with pytest.warns(CompensationWarning, match=r"'lsq' for layer \d intermediate .*needs at least 1,?\d+ training tokens"):
        pruned, report = prune(model, scores, plan, calibration=calibration)
    none, _ = prune(model, scores, PruningPlan(ffn=20, compensation="none"))
    assert torch.equal(hidden(pruned, batch), hidden(none, batch))
    assert all(torch.isfinite(p).all() for p in pruned.parameters())
    assert report.compensations[0]["method"] == "none" and "fell back" in report.compensations[0]["note"]


def test_lsq_on_a_singular_system_falls_back_with_a_warning(tokenizer, texts, batch):
    model = tiny(seed=4)
    with torch.no_grad():  # a dead kept unit: its output is 0 at every token, so C_KK is singular
        model.encoder.layer[2].intermediate.dense.weight[20] = 0
        model.encoder.layer[2].intermediate.dense.bias[20] = 0
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    plan = PruningPlan(layers={2: {"ffn": 6}}, compensation="lsq", scorer="random")
    assert 20 not in select_units(scores, plan, model).removed(2, "ffn")
    calibration = capture_calibration(model, tokenizer, corpus, lsq_dampings=(0.0,), min_tokens_per_unit=2)
    with pytest.warns(CompensationWarning, match="singular"):
        pruned, _ = prune(model, scores, plan, calibration=calibration)
    assert all(torch.isfinite(p).all() for p in pruned.parameters())
    # With a damping the same system is solvable: no warning.
    calibration.lsq_dampings = (1e-3,)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompensationWarning)
        prune(model, scores, plan, calibration=calibration)


def test_lsq_needs_calibration_of_this_model(tokenizer, texts):
    model, other = tiny(seed=1), tiny(seed=2)
    scores = scores_of(model, tokenizer, texts)
    with pytest.raises(ValueError, match="needs calibration data"):
        prune(model, scores, PruningPlan(ffn=30, compensation="lsq"))
    with pytest.raises(ValueError, match="captured on a model with fingerprint"):
        prune(model, scores, PruningPlan(ffn=30, compensation="lsq"),
              calibration=capture_calibration(other, tokenizer, texts))


def test_calibration_refuses_bad_settings(tokenizer, texts):
    model = tiny()
    with pytest.raises(ValueError, match="'heldout_share' parameter of capture_calibration"):
        capture_calibration(model, tokenizer, texts, heldout_share=1.0)
    with pytest.raises(ValueError, match="at least 2 texts"):
        capture_calibration(model, tokenizer, texts[:1])


# ------------------------------------------------------------------------------------------
# FLAP and stability
# ------------------------------------------------------------------------------------------
def test_flap_equals_a_hand_computation(tokenizer, texts):
    model = tiny(seed=6)
    scores = scores_of(model, tokenizer, texts)
    sel = select_units(scores, PruningPlan(scorer="flap"), model)
    cols, acts = scores.table, scores.activations.astype(np.float64)

    def values(layer, component):
        rows = cols[(cols.layer == layer) & (cols.component == component)].sort_values("neuron")
        return acts[:, rows["column"].to_numpy()]

    for layer in range(3):
        blk = model.encoder.layer[layer]
        w_out = blk.output.dense.weight.detach().double().numpy()
        w_o = blk.attention.output.dense.weight.detach().double().numpy()
        ffn = [np.var(values(layer, "intermediate")[:, j], ddof=1) * np.sum(w_out[:, j] ** 2) for j in range(FFN)]
        v = [np.var(values(layer, "value")[:, j], ddof=1) * np.sum(w_o[:, j] ** 2) for j in range(HEADS * HS)]
        q, k = values(layer, "query"), values(layer, "key")
        qk = [np.var(q[:, i], ddof=1) * np.mean(k[:, i] ** 2) + np.var(k[:, i], ddof=1) * np.mean(q[:, i] ** 2)
              for i in range(HEADS * HS)]
        np.testing.assert_allclose(sel.scores[layer]["ffn"], ffn, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(sel.scores[layer]["v"], v, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(sel.scores[layer]["qk"], qk, rtol=1e-4, atol=1e-12)


def test_stability_of_identical_halves_is_perfect(tokenizer, texts):
    model = tiny(seed=7)
    same = ranking_stability(model, tokenizer, texts, other_texts=texts, scorers=("rf", "std", "flap"), percent=50)
    assert len(same) == 3 * 3 * 3
    rho = same["spearman"].dropna()  # NaN: rf = 0 for every layer-0 query/key/value at [CLS]
    assert len(rho) >= 18 and np.allclose(rho, 1, atol=1e-12)
    assert (same["overlap"] == 1).all()
    halves = ranking_stability(model, tokenizer, texts, scorers=("rf", "magnitude"), percent=50, splits=2)
    assert np.allclose(halves.loc[halves.scorer == "magnitude", "spearman"], 1)  # reads no text
    assert (halves.loc[halves.scorer == "rf", "spearman"] < 1).any()  # different texts, different ranks
    assert (halves["splits"] == 2).all()


def test_stability_spearman_matches_scipy(tokenizer, texts):
    model = tiny(seed=8)
    a, b = texts[: len(texts) // 2], texts[len(texts) // 2:]
    got = ranking_stability(model, tokenizer, a, other_texts=b, scorers=("std",), percent=30)
    sa, sb = scores_of(model, tokenizer, a), scores_of(model, tokenizer, b)
    ta, tb = (s.table[(s.table.layer == 1) & (s.table.component == "intermediate")].sort_values("neuron") for s in (sa, sb))
    row = got[(got.layer == 1) & (got.group == "ffn")].iloc[0]
    assert row["spearman"] == pytest.approx(spearmanr(ta["std"], tb["std"]).statistic)
    removed = floor = int(30 * FFN / 100)
    low_a, low_b = set(np.argsort(ta["std"].to_numpy())[:floor]), set(np.argsort(tb["std"].to_numpy())[:floor])
    assert row["overlap"] == pytest.approx(len(low_a & low_b) / removed)
    assert row["chance_overlap"] == pytest.approx(removed / FFN)


# ------------------------------------------------------------------------------------------
# Sequential least-squares tuning (K-prune's): each reader refitted on the pruned model's inputs
# ------------------------------------------------------------------------------------------
def _tokens_out(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state[batch["attention_mask"].bool()]


@pytest.mark.parametrize("seed", [2, 6])
def test_sequential_lsq_lowers_the_last_layers_error_against_per_layer_fits(seed, tokenizer, texts):
    model = tiny(seed=seed)
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    calibration = capture_calibration(model, tokenizer, corpus, min_tokens_per_unit=2)
    unseen = tokenizer([f"{b} {a}" for a in EXTRA for b in texts[:5]], padding=True, return_tensors="pt")
    reference = _tokens_out(model, unseen)
    error = {}
    for name in ("lsq", "auto", "sequential-lsq"):
        pruned, report = prune(model, scores, PruningPlan(ffn=50, v=40, qk=30, compensation=name), calibration=calibration)
        error[name] = float(((_tokens_out(pruned, unseen) - reference) ** 2).mean())
    assert error["sequential-lsq"] < 0.9 * min(error["lsq"], error["auto"]), error
    rows = report.compensations
    assert [(r["layer"], r["group"]) for r in rows] == [(i, g) for i in range(3) for g in ("v", "ffn")]
    assert {r["requested"] for r in rows} == {"sequential-lsq"}
    for row in rows:  # a refit is kept only when it is better on held-out tokens
        errors = row["heldout_mse"]
        refitted = row["method"] == "sequential-lsq"
        assert (errors["sequential-lsq"] < min(v for k, v in errors.items() if k != "sequential-lsq")) == refitted


def _one_layer_tokens(model, batch):
    """(output.dense input, attention output = its residual, output.LayerNorm input) at every real token."""
    blk, got = model.encoder.layer[0], {}
    hooks = [blk.output.register_forward_pre_hook(lambda m, args: got.update(h=args[0], x=args[1])),
             blk.output.LayerNorm.register_forward_pre_hook(lambda m, args: got.update(s=args[0]))]
    with torch.no_grad():
        model(**batch)
    for h in hooks:
        h.remove()
    real = batch["attention_mask"].bool()
    return (got[k][real].double().numpy() for k in ("h", "x", "s"))


def test_sequential_lsq_is_the_closed_form_least_squares_on_one_layer(tokenizer, texts):
    from tests.conftest import make_tiny_bert

    model = make_tiny_bert(seed=9, layers=1)
    corpus = texts + MORE
    scores = scores_of(model, tokenizer, corpus)
    plan = PruningPlan(ffn=40, compensation="sequential-lsq")
    # Every token of every text trains (nothing held out), with plain least squares (damping 0).
    calibration = capture_calibration(model, tokenizer, corpus, heldout_share=0, lsq_dampings=(0.0,),
                                      min_tokens_per_unit=2, max_train_tokens=100_000)
    pruned, report = prune(model, scores, plan, calibration=calibration)
    kept = select_units(scores, plan, model).kept[0]["ffn"]
    h, x, s = _one_layer_tokens(model, tokenizer(corpus, padding=True, return_tensors="pt"))
    design = np.hstack([h[:, kept], np.ones((len(h), 1))])
    solution = np.linalg.lstsq(design, s - x, rcond=None)[0]
    dense = pruned.encoder.layer[0].output.dense
    np.testing.assert_allclose(dense.weight.detach().double().numpy(), solution[:-1].T, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(dense.bias.detach().double().numpy(), solution[-1], atol=2e-4, rtol=1e-3)
    assert [(r["layer"], r["group"], r["method"]) for r in report.compensations] == [(0, "ffn", "sequential-lsq")]


def test_sequential_lsq_of_nothing_changes_nothing_and_needs_calibration(tokenizer, texts, batch):
    model = tiny(seed=1)
    scores = scores_of(model, tokenizer, texts)
    calibration = capture_calibration(model, tokenizer, texts)
    same, _ = prune(model, scores, PruningPlan(compensation="sequential-lsq"), calibration=calibration)
    assert torch.equal(hidden(same, batch), hidden(model, batch))
    with pytest.raises(ValueError, match="'sequential-lsq' needs calibration data"):
        prune(model, scores, PruningPlan(ffn=30, compensation="sequential-lsq"))
