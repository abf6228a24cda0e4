"""Pruning plans, importance scorers, unit selection and reports, against independent oracles."""

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from obce_core import model_fingerprint
from obce_core.pruning import (
    IMPORTANCES,
    Importance,
    PruningPlan,
    UnitScores,
    build_report,
    layer_shapes,
    prune,
    register_importance,
    select_units,
)
from tests.pruning_helpers import FFN, H, HEADS, HS, LAYERS, scores_of, tiny
from tests.pruning_helpers import texts, tiny_scored  # noqa: F401  fixtures

# ------------------------------------------------------------------------------------------
# Plan
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ffn": -1}, r"The 'ffn' parameter of PruningPlan must be a finite number in \[0, 100\); got -1\."),
        ({"qk": 100}, r"The 'qk' parameter of PruningPlan must be a finite number in \[0, 100\); got 100\."),
        ({"v": 250.0}, r"The 'v' parameter of PruningPlan must be a finite number in \[0, 100\)"),
        ({"ffn": float("nan")}, r"'ffn' parameter .* got nan"),
        ({"ffn": "50"}, r"'ffn' parameter .* got '50'"),
        ({"ffn": True}, r"'ffn' parameter .* got True"),
        ({"skip_layers": -2}, r"'skip_layers' parameter of PruningPlan must be an integer >= 0; got -2"),
        ({"compensation": "median"}, r"'compensation' parameter of PruningPlan must be one of 'auto', 'none', 'token-mean', 'cls-mean', 'cls-mean-std', 'lsq'"),
        ({"scorer": "taylor"}, r"'scorer' parameter of PruningPlan must be one of 'rf', 'std', 'magnitude', 'flap', 'fisher', 'random'"),
        ({"seed": -1}, r"'seed' parameter of PruningPlan must be an integer >= 0"),
        ({"layers": {1: {"ffm": 10}}}, r"Unknown group\(s\) \['ffm'\].*qk = query/key pairs"),
        ({"layers": {1: {"ffn": 100}}}, r"The \"layers\[1\]\['ffn'\]\" parameter of PruningPlan must be a finite number in \[0, 100\)"),
        ({"layers": {"x": {"ffn": 10}}}, "keyed by layer indices.*got 'x'"),
        ({"layers": {-1: {"ffn": 10}}}, "layer indices start at 0"),
        ({"layers": {1: 50}}, r"'layers\[1\]' parameter of PruningPlan must be a dict"),
    ],
)
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruningPlan(**kwargs)


def test_plan_json_round_trip(tmp_path):
    plan = PruningPlan(ffn=50, qk=30.5, v=20, skip_layers=1, compensation="cls-mean-std", scorer="random", seed=7,
                       layers={2: {"ffn": 70}, 0: {"qk": 10}})
    path = tmp_path / "plan.json"
    text = plan.to_json(path)
    assert json.loads(text)["layers"] == {"0": {"qk": 10}, "2": {"ffn": 70}}  # JSON keys are strings
    assert PruningPlan.from_json(path) == plan == PruningPlan.from_json(text) == PruningPlan.from_dict(plan.to_dict())
    assert PruningPlan.from_json('{"layers": {"3": {"v": 5}}}').layers == {3: {"v": 5}}
    with pytest.raises(ValueError, match=r"Unknown pruning plan key\(s\) \['fnn'\]"):
        PruningPlan.from_dict({"fnn": 3})
    with pytest.raises(ValueError, match="does not exist"):
        PruningPlan.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="Could not parse"):
        PruningPlan.from_json("{not json")


def test_override_wins_over_skip_layers_and_global():
    plan = PruningPlan(ffn=50, qk=20, skip_layers=2, layers={0: {"ffn": 10}, 3: {"qk": 0}})
    assert plan.percent(0, "ffn") == 10 and plan.percent(0, "qk") == 0  # skipped, except the override
    assert plan.percent(1, "ffn") == 0
    assert plan.percent(2, "ffn") == 50 and plan.percent(3, "qk") == 0 and plan.percent(3, "ffn") == 50


def test_plan_must_fit_the_model(tiny_scored):
    model, scores = tiny_scored
    with pytest.raises(ValueError, match=r"overrides of layers 0..2 \(the model has 3 layers\); got \{3: "):
        select_units(scores, PruningPlan(layers={3: {"ffn": 10}}), model)
    with pytest.raises(ValueError, match="'skip_layers' parameter of PruningPlan must be at most the model's 3 layers; got 4"):
        select_units(scores, PruningPlan(skip_layers=4), model)
    select_units(scores, PruningPlan(ffn=10, skip_layers=3), model)  # skipping every layer is allowed


def test_scores_of_another_model_are_refused(tiny_scored):
    _, scores = tiny_scored
    other = tiny(seed=1)
    with pytest.raises(ValueError, match=f"fingerprint {scores.model_fingerprint} but this BertModel has "
                                         f"fingerprint {model_fingerprint(other)}.*Rescore this model"):
        prune(other, scores, PruningPlan(ffn=10))


def test_fingerprint_cache_sees_in_place_changes(tiny_scored):
    model, scores = tiny_scored
    select_units(scores, PruningPlan(ffn=10), model)  # caches the fingerprint
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight[0, 0] += 1
    with pytest.raises(ValueError, match="Rescore this model"):
        select_units(scores, PruningPlan(ffn=10), model)


# ------------------------------------------------------------------------------------------
# Selection against independent oracles
# ------------------------------------------------------------------------------------------
def test_rf_removes_the_lowest_rf_units(tiny_scored):
    model, scores = tiny_scored
    plan = PruningPlan(ffn=40, qk=30, v=50)
    sel = select_units(scores, plan, model)
    t = scores.table
    for layer in range(1, LAYERS):  # layer 0 at [CLS] is all ties (rf 0), checked by the tie rule below
        ffn = t[(t.layer == layer) & (t.component == "intermediate")].sort_values(["rf", "std", "neuron"])
        k = math.floor(0.40 * FFN)
        assert set(sel.removed(layer, "ffn")) == set(ffn.neuron.iloc[:k])
        # v: per head, the floor(0.5 * 8) = 4 lowest-rf dims of that head
        val = t[(t.layer == layer) & (t.component == "value")].copy()
        val["head"] = val.neuron // HS
        want = set(val.sort_values(["rf", "std", "neuron"]).groupby("head").head(4).neuron)
        assert set(sel.removed(layer, "v")) == want
        # qk: pair score = mean of the query and key rf; floor(0.3 * 8) = 2 pairs per head
        q = t[(t.layer == layer) & (t.component == "query")].set_index("neuron")
        kk = t[(t.layer == layer) & (t.component == "key")].set_index("neuron")
        pair = pd.DataFrame({"rf": (q.rf + kk.rf).to_numpy() / 2, "std": (q["std"] + kk["std"]).to_numpy() / 2,
                             "neuron": q.index.to_numpy()})
        pair["head"] = pair.neuron // HS
        want = set(pair.sort_values(["rf", "std", "neuron"]).groupby("head").head(2).neuron)
        assert set(sel.removed(layer, "qk")) == want
    # Every head lost the same number of dims.
    assert [len(k["v"]) for k in sel.kept] == [HEADS * 4] * LAYERS


def test_std_and_magnitude_scorers(tiny_scored):
    model, scores = tiny_scored
    t = scores.table
    sel = select_units(scores, PruningPlan(ffn=50, scorer="std"), model)
    ffn = t[(t.layer == 2) & (t.component == "intermediate")].sort_values(["std", "neuron"])
    assert set(sel.removed(2, "ffn")) == set(ffn.neuron.iloc[: FFN // 2])

    sel = select_units(scores, PruningPlan(ffn=50, v=25, scorer="magnitude"), model)
    layer = model.encoder.layer[1]
    w_in, w_out = layer.intermediate.dense.weight.detach(), layer.output.dense.weight.detach()
    mag = [float(w_in[j].norm() * w_out[:, j].norm()) for j in range(FFN)]
    assert set(sel.removed(1, "ffn")) == set(np.argsort(mag, kind="stable")[: FFN // 2])
    w_v, w_o = layer.attention.self.value.weight.detach(), layer.attention.output.dense.weight.detach()
    mag_v = np.array([float(w_v[j].norm() * w_o[:, j].norm()) for j in range(H)]).reshape(HEADS, HS)
    want = {h * HS + int(d) for h in range(HEADS) for d in np.argsort(mag_v[h])[:2]}
    assert set(sel.removed(1, "v")) == want


def test_random_scorer_is_seeded(tiny_scored):
    model, scores = tiny_scored

    def removed(seed):
        sel = select_units(scores, PruningPlan(ffn=50, qk=50, v=50, scorer="random", seed=seed), model)
        return [tuple(sel.removed(i, g)) for i in range(LAYERS) for g in ("ffn", "qk", "v")]

    assert removed(3) == removed(3)
    assert removed(3) != removed(4)


def test_selection_is_fast_on_minilm(minilm, sentences):
    model, tok = minilm
    scores = scores_of(model, tok, sentences)
    plan = PruningPlan(ffn=50, qk=30, v=30)
    select_units(scores, plan, model)  # first call hashes the weights (cached per model)
    times = []
    for p in (10, 30, 50, 70, 90):
        t0 = time.perf_counter()
        sel = select_units(scores, PruningPlan(ffn=p, qk=p, v=p), model)
        build_report(model, sel)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.1, times
    report = build_report(model, select_units(scores, plan, model))
    json.dumps(report.to_dict())  # JSON-serialisable as is
    assert report.params_before["total"] == sum(p.numel() for p in model.parameters())
    assert set(report.units.columns) == {"layer", "group", "unit", "score", "kept"}
    assert len(report.units) == 6 * (384 + 384 + 1536)
    assert (report.units.groupby("group", observed=True)["kept"].mean().round(3).to_dict()
            == {"ffn": 0.5, "qk": round(23 / 32, 3), "v": round(23 / 32, 3)})


# ------------------------------------------------------------------------------------------
# Importance objects and their caches
# ------------------------------------------------------------------------------------------
def test_a_registered_importance_drives_the_selection(tiny_scored, monkeypatch):
    model, scores = tiny_scored
    calls = []

    class LastFirst(Importance):
        """Scores that fall with the index: the highest-indexed units go first."""

        name = "last-first"

        def __call__(self, model, scores, layer, group, n):
            calls.append((layer, group, n))
            return UnitScores(-np.arange(n, dtype=float), np.zeros(n))

    monkeypatch.setitem(IMPORTANCES, "last-first", None)  # removed again after the test
    register_importance(LastFirst)
    sel = select_units(scores, PruningPlan(ffn=50, qk=25, v=50, scorer="last-first"), model)
    assert sorted(calls) == sorted((i, g, n) for i in range(LAYERS) for g, n in (("ffn", FFN), ("qk", H), ("v", H)))
    assert sel.removed(1, "ffn").tolist() == list(range(FFN - FFN // 2, FFN))
    assert sel.removed(2, "qk").tolist() == [h * HS + d for h in range(HEADS) for d in (6, 7)]
    assert sel.removed(0, "v").tolist() == [h * HS + d for h in range(HEADS) for d in (4, 5, 6, 7)]


def test_statistics_follow_a_replaced_table(tiny_scored):
    model, scores = tiny_scored
    plan = PruningPlan(ffn=30)
    before = select_units(scores, plan, model).removed(2, "ffn")
    table = scores.table.copy()
    ffn = (table.layer == 2) & (table.component == "intermediate")
    table.loc[ffn, "rf"] = -table.loc[ffn, "rf"]  # reverse the rf order of layer 2's FFN
    scores.table = table
    after = select_units(scores, plan, model).removed(2, "ffn")
    want = table[ffn].sort_values(["rf", "std", "neuron"]).neuron.iloc[: math.floor(0.3 * FFN)]
    assert set(after) == set(want) and set(after) != set(before)


def test_layer_shapes_reads_a_pruned_model(tiny_scored):
    model, scores = tiny_scored
    pruned, _ = prune(model, scores, PruningPlan(ffn=40, qk=50, v=25, layers={1: {"ffn": 80}}))
    cfg = pruned.config
    assert layer_shapes(pruned) == [
        {"heads": HEADS, "qk": cfg.qk_head_sizes[i], "v": cfg.v_head_sizes[i], "ffn": cfg.intermediate_sizes[i]}
        for i in range(LAYERS)
    ]
    assert layer_shapes(model) == [{"heads": HEADS, "qk": HS, "v": HS, "ffn": FFN}] * LAYERS
