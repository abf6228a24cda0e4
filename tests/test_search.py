"""The plan search: paired bound, exhaustive oracle, report vs ``evaluate``, dev never read, bad input.

Oracles: ``prune`` + ``evidence.evaluate_encoded`` (the sweep's evaluation path) and
``build_report``'s FLOPs and parameter counts for every plan of a small grid, enumerated here with
``itertools.product``; a paired bootstrap written here with numpy indexing (and sklearn's metrics)
for every bound; ``training.evaluate`` (Trainer's own loop) and a plain forward pass of the saved
model for the report's numbers; a spy on ``glue.load_task`` for when the dev split is read.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from conftest import GLUE_DIR, SENTENCES, make_tiny_bert, needs_glue, save_task_model
from obce_core import glue, load_model, score_model
from obce_core.evidence import encode_split, evaluate_encoded, predict_logits
from obce_core.pruning import PruningPlan, build_report, load_plan, prune, select_units
from obce_core.search import PlanCost, SearchSettings, read_search_report, search_plan, search_task_model
from obce_core.search.measure import task_loss
from obce_core.search.splits import dev_halves
from obce_core.training import Recipe, evaluate, load_held_out, parameter_counts

pytestmark = needs_glue


def _fit_head(model, tokenizer, n=300):
    """A random tiny encoder's head fitted by logistic regression on SST-2 training sentences, so
    its predictions depend on the text (a random head predicts one class) and pruning can hurt."""
    import torch
    from sklearn.linear_model import LogisticRegression

    data = glue.load_task("sst2", "train", GLUE_DIR, n=n, seed=5)
    enc = tokenizer(list(data["sentence"]), truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output.numpy()
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-12  # [CLS] of a random encoder varies little
    head = LogisticRegression(C=10.0, max_iter=5000).fit((pooled - mean) / std, np.asarray(data["label"]))
    w = head.coef_[0] / std
    b = head.intercept_[0] - float(w @ mean)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(np.stack([-w, w]) / 2, dtype=torch.float32))
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=torch.float32))
    return model


@pytest.fixture
def tiny_task(tokenizer, one_torch_thread):
    model = _fit_head(make_tiny_bert(seed=3, classifier=True), tokenizer)
    scores = score_model(model, tokenizer, SENTENCES * 2, max_length=32)
    search = encode_split(tokenizer, "sst2", split="train", glue_dir=GLUE_DIR, eval_size=150, seed=1, max_length=32)
    return model, scores, search


def _accuracy_upper(labels, reference, predictions, confidence, seed, resamples=2000):
    """The paired bootstrap's upper bound (points) of an accuracy drop, by numpy indexing."""
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    drops = 100 * ((reference[draws] == labels[draws]).mean(axis=1) - (predictions[draws] == labels[draws]).mean(axis=1))
    return float(np.percentile(drops, confidence))


def _grid_oracle(model, scores, search, settings, coords):
    """Every plan of the grid, pruned and evaluated here; feasible when the numpy bootstrap's bound
    of its drop is within the tolerance; the best feasible by FLOPs removed."""
    original = evaluate_encoded(model, search)["main_score"]
    reference = predict_logits(model, search).argmax(axis=1)
    rows = []
    for combo in itertools.product(settings.levels, repeat=len(coords)):
        layers = {}
        for (layer, group), p in zip(coords, combo):
            if p:
                layers.setdefault(layer, {})[group] = p
        plan = PruningPlan(scorer=settings.scorer, compensation=settings.compensation, layers=layers)
        pruned = prune(model, scores, plan)[0] if layers else model
        flops = build_report(model, select_units(scores, plan, model)).flops_ratio_estimate
        upper = _accuracy_upper(search.labels, reference, predict_logits(pruned, search).argmax(axis=1),
                                settings.confidence, search.seed)
        rows.append((plan, evaluate_encoded(pruned, search)["main_score"], 1.0 - flops, upper))
    feasible = [r for r in rows if r[3] <= settings.tolerance + 1e-9]
    return original, rows, max(feasible, key=lambda r: (round(r[2], 12), r[1]))


def test_search_finds_the_exhaustive_optimum_on_a_small_grid(tiny_task):
    model, scores, search = tiny_task
    settings = SearchSettings(tolerance=3.0, compensation="none", levels=[0, 50], groups=["ffn", "v"])
    result = search_plan(model, scores, search, settings)
    coords = [(i, g) for i in range(2) for g in ("ffn", "v")]
    original, rows, (best_plan, best_score, best_removed, _) = _grid_oracle(model, scores, search, settings, coords)
    assert any(upper > settings.tolerance for *_, upper in rows), "the tolerance must bind for this test to mean anything"
    assert {r["phase"] for r in result.rows} == {"original", "exhaustive"} and len(result.rows) == 16
    assert result.plan.layers == best_plan.layers
    assert result.best["main_score"] == pytest.approx(best_score)
    assert result.best["cost_removed"] == pytest.approx(best_removed)
    assert result.original["main_score"] == pytest.approx(original)


def test_greedy_search_respects_the_tolerance_and_keeps_every_row(tiny_task):
    model, scores, search = tiny_task
    settings = SearchSettings(tolerance=3.0, compensation="none", levels=[0, 30, 60, 90], sensitivity_levels=[30, 90],
                              exhaustive_limit=0)
    seen = []
    result = search_plan(model, scores, search, settings, on_row=seen.append)
    phases = [r["phase"] for r in result.rows]
    assert phases[0] == "original" and "uniform" in phases and "path" in phases
    assert seen == result.rows
    reference = predict_logits(model, search).argmax(axis=1)
    for row in result.rows:  # every verdict is the tolerance rule on the numpy bootstrap's bound of its drop
        if row["phase"] == "original":
            assert row["feasible"] and row["drop"] == 0
            continue
        plan = PruningPlan.from_dict(row["plan"])
        pruned = prune(model, scores, plan)[0] if plan.layers else model
        upper = _accuracy_upper(search.labels, reference, predict_logits(pruned, search).argmax(axis=1), 90.0, search.seed)
        assert row["drop_upper"] == pytest.approx(upper)
        assert row["feasible"] == (upper <= 3.0 + 1e-9)
    verdicts = {r["feasible"] for r in result.rows if r["phase"] != "original"}
    assert verdicts == {True, False}, "the tolerance must bind and admit plans for this test to mean anything"
    assert result.best["cost_removed"] == max(r["cost_removed"] for r in result.rows if r["feasible"])
    front = result.front
    assert all(a["cost"] < b["cost"] and a["main_score"] < b["main_score"] for a, b in zip(front, front[1:]))


def test_plan_cost_matches_the_report_and_the_pruned_model(tiny_task):
    model, scores, _ = tiny_task
    plan = PruningPlan(compensation="none", layers={0: {"ffn": 30, "qk": 50}, 1: {"v": 70, "ffn": 90}})
    flops = PlanCost.for_model(model, "flops", seq_len=64)
    assert 1 - flops.of(plan) / flops.unpruned() == pytest.approx(
        1 - build_report(model, select_units(scores, plan, model), flops_seq_len=64).flops_ratio_estimate)
    params = PlanCost.for_model(model, "params")
    pruned = prune(model, scores, plan)[0]
    assert params.unpruned() - params.of(plan) == parameter_counts(model)["encoder"] - parameter_counts(pruned)["encoder"]


def test_task_loss_is_cross_entropy_and_squared_error():
    import torch

    logits = np.array([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]])
    labels = np.array([0, 1, 1])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert task_loss("sst2", logits, labels) == pytest.approx(expected)
    assert task_loss("stsb", np.array([[1.0], [3.0]]), np.array([2.0, 2.0])) == pytest.approx(1.0)


def test_cancelled_search_keeps_its_rows_and_resumes(tiny_task, tmp_path):
    model, scores, search = tiny_task
    settings = SearchSettings(tolerance=1.0, compensation="none", levels=[0, 50, 90], sensitivity_levels=[50],
                              exhaustive_limit=0)
    cache = tmp_path / "rows.jsonl"
    measured = []

    def counting(plans, encoded):
        from obce_core.search import measure_plan

        measured.extend(p.to_json() for p in plans)
        return [measure_plan(model, scores, p, encoded) for p in plans]

    stopped = search_plan(model, scores, search, settings, cache_path=cache, measure=counting,
                          should_stop=lambda: len(measured) >= 6)
    assert stopped.stopped == "cancelled" and len(cache.read_text().splitlines()) == len(measured) == 6
    first = list(measured)
    measured.clear()
    full = search_plan(model, scores, search, settings, cache_path=cache, measure=counting)
    assert full.stopped is None
    assert not set(first) & set(measured), "a resumed search must not evaluate a cached plan again"
    again = search_plan(model, scores, search, settings, measure=counting)  # no cache: the same answer
    assert again.plan.layers == full.plan.layers


def _task_model(path, tokenizer, reserve: int | None = None):
    """The tiny SST-2 task model; with ``reserve``, its obce_task.json records that many held-out
    training rows (``held_out.split_held_out`` of the real training file, as a fine-tune records them)."""
    path = save_task_model(path, tokenizer, "sst2", _fit_head(make_tiny_bert(seed=3, classifier=True), tokenizer))
    if reserve is not None:
        from obce_core.training import TaskModelInfo
        from obce_core.training.held_out import split_held_out
        from obce_core.training.task_models import TASK_MODEL_FILE

        info = TaskModelInfo.from_json(path / TASK_MODEL_FILE)
        recipe = Recipe.from_dict({**info.recipe.to_dict(), "held_out": 0.1, "held_out_max": reserve})
        train = glue.load_task("sst2", "train", GLUE_DIR)
        _, _, record = split_held_out(train, glue.get_task("sst2"), 0.1, reserve, recipe.seed)
        TaskModelInfo.from_dict({**info.to_dict(), "recipe": recipe.to_dict(), "held_out": record.to_dict()}
                                ).to_json(path / TASK_MODEL_FILE)
    return path


def _forward_score(model, tokenizer, task, data, max_length=32):
    """The main score of ``model`` on ``data`` by a plain forward pass and sklearn (no obce evaluation path)."""
    import torch
    from sklearn.metrics import accuracy_score

    enc = tokenizer(list(data["sentence"]), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits.argmax(dim=1).numpy()
    return accuracy_score(np.asarray(data["label"]), predicted)


def test_report_scores_equal_evaluate_of_the_saved_model_and_dev_is_read_last(tmp_path, tokenizer, one_torch_thread,
                                                                               monkeypatch):
    source = _task_model(tmp_path / "task", tokenizer, reserve=150)
    events = []
    real_load = glue.load_task

    def spy(task, split, *args, **kwargs):
        events.append(("load", split))
        return real_load(task, split, *args, **kwargs)

    monkeypatch.setattr(glue, "load_task", spy)
    settings = SearchSettings(tolerance=2.0, compensation="auto", levels=[0, 40, 80], sensitivity_levels=[80],
                              exhaustive_limit=0, split="held-out")
    report = search_task_model(str(source), "sst2", tmp_path / "out", settings, glue_dir=GLUE_DIR,
                               sensitivity_size=60, score_texts=24, max_length=32, device="cpu",
                               on_row=lambda row: events.append(("row", row["phase"])))
    assert report.search_kind == "held-out" and "150 training examples the model never trained on" in report.search_split
    assert report.rows[0]["n_eval"] == 150 and report.check_split is None
    last_row = max(i for i, e in enumerate(events) if e[0] == "row")
    dev_reads = [i for i, e in enumerate(events) if e == ("load", "validation")]
    assert dev_reads and min(dev_reads) > last_row, "the dev split was read before the search ended"
    monkeypatch.setattr(glue, "load_task", real_load)

    saved, tok = load_model(str(tmp_path / "out"), device="cpu")
    assert load_plan(tmp_path / "out").to_dict() == report.plan
    held_out = load_held_out(source, GLUE_DIR)
    assert _forward_score(saved, tok, "sst2", held_out) == pytest.approx(report.search_found["main_score"])
    on_dev = evaluate(saved, tok, "sst2", Recipe(max_length=32), glue_dir=GLUE_DIR, device="cpu")
    assert on_dev["main_score"] == pytest.approx(report.dev_found["main_score"])
    original, _ = load_model(str(source), device="cpu")
    assert _forward_score(original, tok, "sst2", held_out) == pytest.approx(report.search_original["main_score"])
    assert evaluate(original, tok, "sst2", Recipe(max_length=32), glue_dir=GLUE_DIR, device="cpu")["main_score"] == \
        pytest.approx(report.dev_original["main_score"])
    assert report.search_drop["upper"] <= 2.0 + 1e-9  # accepted by its bound
    assert report.dev_drop["drop"] == pytest.approx(100 * (report.dev_original["main_score"] -
                                                           report.dev_found["main_score"]))
    assert report.dev_drop["low"] <= report.dev_drop["drop"] <= report.dev_drop["high"]
    back = read_search_report(tmp_path / "out")
    assert back.rows == json.loads(json.dumps(report.rows)) and back.settings == settings
    assert math.isclose(back.cost_removed, 1 - back.cost_after / back.cost_before)


def test_dev_halves_search_on_one_half_and_report_on_the_other(tmp_path, tokenizer, one_torch_thread):
    source = _task_model(tmp_path / "task", tokenizer)  # records no held-out part: auto takes the dev halves
    settings = SearchSettings(tolerance=3.0, compensation="none", levels=[0, 50, 90], sensitivity_levels=[90],
                              exhaustive_limit=0)
    report = search_task_model(str(source), "sst2", tmp_path / "out", settings, glue_dir=GLUE_DIR, search_seed=4,
                               sensitivity_size=60, score_texts=24, max_length=32, device="cpu")
    assert report.search_kind == "dev-halves" and "records no held-out part" in report.search_split
    assert "other half of dev (436 examples" in report.check_split and "half of which" in report.what_was_searched()
    assert report.rows[0]["n_eval"] == 436
    # the promise is made for the half the search never read, and is wider than the search's own interval
    assert report.promise["n_target"] == 436 and report.promise["compared"] == len(report.rows) - 1
    assert report.promise["low"] <= report.search_drop["low"] and report.promise["high"] >= report.search_drop["high"]
    assert f"should lie between {report.promise['low']:+.2f}" in report.what_was_searched()
    search_half, report_half = dev_halves(glue.load_task("sst2", "validation", GLUE_DIR), 4)
    saved, tok = load_model(str(tmp_path / "out"), device="cpu")
    original, _ = load_model(str(source), device="cpu")
    assert _forward_score(saved, tok, "sst2", report_half) == pytest.approx(report.check_found["main_score"])
    assert _forward_score(original, tok, "sst2", report_half) == pytest.approx(report.check_original["main_score"])
    assert _forward_score(saved, tok, "sst2", search_half) == pytest.approx(report.search_found["main_score"])
    assert report.check_drop["drop"] == pytest.approx(100 * (report.check_original["main_score"] -
                                                             report.check_found["main_score"]))


def test_bad_input_is_refused_before_any_work(tmp_path, tokenizer, one_torch_thread, monkeypatch):
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="tolerance"):
            SearchSettings(tolerance=bad)
    with pytest.raises(ValueError, match="cost"):
        SearchSettings(cost="joules")
    source = _task_model(tmp_path / "task", tokenizer)
    loads = []
    monkeypatch.setattr("obce_core.search.task_search.load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match="not a task model"):
        search_task_model("default", "sst2", tmp_path / "o1", SearchSettings(), glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="fine-tuned on sst2, not mrpc"):
        search_task_model(str(source), "mrpc", tmp_path / "o2", SearchSettings(), glue_dir=GLUE_DIR)
    (tmp_path / "empty-glue").mkdir()
    with pytest.raises(glue.GlueDataError, match="train.tsv does not exist"):
        search_task_model(str(source), "sst2", tmp_path / "o3", SearchSettings(), glue_dir=tmp_path / "empty-glue")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--overwrite|did not write"):
        search_task_model(str(source), "sst2", tmp_path / "taken", SearchSettings(), glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="records no held-out part.*--search-split dev-halves"):
        search_task_model(str(source), "sst2", tmp_path / "o4", SearchSettings(split="held-out"), glue_dir=GLUE_DIR)
    (tmp_path / "few.tsv").write_text("sentence\tlabel\n" + "a fine film\t1\n" * 20)
    with pytest.raises(ValueError, match="holds 20 examples"):
        search_task_model(str(source), "sst2", tmp_path / "o5", SearchSettings(search_data=str(tmp_path / "few.tsv")),
                          glue_dir=GLUE_DIR)
    changed = _task_model(tmp_path / "changed", tokenizer, reserve=150)
    info = json.loads((changed / "obce_task.json").read_text())
    info["held_out"]["ids_sha256"] = "0" * 64  # as if the training file had changed since
    (changed / "obce_task.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not match"):
        search_task_model(str(changed), "sst2", tmp_path / "o6", SearchSettings(split="held-out"), glue_dir=GLUE_DIR)
    assert loads == [] and not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3, 4, 5, 6))
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_search_in_two_worker_processes_gives_the_rows_of_one_process(tiny_task, tmp_path):
    """Oracle: the same search measured here, one plan after another."""
    from obce_core.evidence import PlanPool

    model, scores, search = tiny_task
    settings = SearchSettings(tolerance=1.0, compensation="none", levels=[0, 50, 90], sensitivity_levels=[50, 90],
                              exhaustive_limit=0)
    here = search_plan(model, scores, search, settings)
    _, tokenizer = load_model(device="cpu")
    with PlanPool(model, scores, search, tokenizer=tokenizer, devices=["cpu", "cpu"],
                  function="obce_core.search.measure:measure_plan") as pool:
        spread = search_plan(model, scores, search, settings, measure=lambda plans, encoded: pool.evaluate(plans))
    assert spread.plan.layers == here.plan.layers
    assert [(r["phase"], r["plan"], r["main_score"]) for r in spread.rows] == \
        [(r["phase"], r["plan"], pytest.approx(r["main_score"])) for r in here.rows]


def test_latency_cost_is_the_unpruned_latency_minus_each_layers_share():
    model = make_tiny_bert()
    table = (10.0, {"ffn": {50.0: 4.0}, "v": {50.0: 2.0}, "qk": {50.0: 1.0}})
    cost = PlanCost.for_model(model, "latency", latency_table=table)
    plan = PruningPlan(compensation="none", layers={0: {"ffn": 50}, 1: {"ffn": 50, "v": 50}})
    assert cost.of(plan) == pytest.approx(10.0 - 4.0 / 2 - 4.0 / 2 - 2.0 / 2)  # 2 layers: each saves half
    with pytest.raises(ValueError, match="No latency was measured for qk at 30"):
        cost.of(PruningPlan(qk=30))
    with pytest.raises(ValueError, match="needs measurements"):
        PlanCost.for_model(model, "latency")


def test_latency_table_prunes_each_group_at_each_level(tiny_task, monkeypatch):
    """With a stand-in clock (the encoder's parameter count), each entry must be what pruning that
    group at that percentile in every layer removes: the plumbing, not the timing, is under test."""
    from obce_core.search import cost as cost_module

    model, scores, _ = tiny_task
    monkeypatch.setattr(cost_module, "measure_latency", lambda m, *a, **k: float(parameter_counts(m)["encoder"]))
    base, saved = cost_module.measure_latency_table(model, None, scores, ["a text"], [0, 40, 80])
    assert base == parameter_counts(model)["encoder"]
    assert set(saved) == {"ffn", "qk", "v"} and all(set(v) == {40.0, 80.0} for v in saved.values())
    for group in ("ffn", "qk", "v"):
        for p in (40.0, 80.0):
            pruned = prune(model, scores, PruningPlan(**{group: p}, compensation="none"))[0]
            assert saved[group][p] == base - parameter_counts(pruned)["encoder"]
