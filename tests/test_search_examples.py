"""What a plan search judges its tolerance on, and how: the paired bound and the search examples.

Oracles: a bootstrap written here (numpy draws with the same seed, sklearn's metrics per resample)
for ``PairedBootstrap``; hand-counted drops; the rows of the real SST-2 dev file for the dev
halves; the file's own rows for ``read_search_data``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from conftest import GLUE_DIR, make_tiny_bert, needs_glue
from obce_core import glue
from obce_core.evidence.evaluation import EncodedSplit
from obce_core.search import PairedBootstrap, SearchSettings, read_search_data, search_plan
from obce_core.search.splits import MIN_SEARCH_ROWS, dev_halves

ORACLE_SCORE = {
    "sst2": lambda y, p: accuracy_score(y, p),
    "mrpc": lambda y, p: (accuracy_score(y, p) + f1_score(y, p, zero_division=0.0)) / 2,
    "cola": lambda y, p: matthews_corrcoef(y, p),
}


def _hand_made(n=40):
    """Labels, a reference right on all but 4 examples, and a model that gets 3 more wrong and 1 more right."""
    labels = np.array([i % 2 for i in range(n)])
    reference = labels.copy()
    reference[[0, 5, 10, 15]] ^= 1
    pruned = reference.copy()
    pruned[[2, 7, 21]] ^= 1  # three more wrong
    pruned[[5]] ^= 1  # one fixed
    return labels, reference, pruned


@pytest.mark.parametrize("task", ["sst2", "mrpc", "cola"])
def test_paired_bound_equals_a_numpy_bootstrap_with_the_same_seed(task):
    labels, reference, pruned = _hand_made()
    resamples, seed = 300, 7
    bound = PairedBootstrap(task, labels, reference, resamples=resamples, seed=seed).drop(pruned, 90.0)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    score = ORACLE_SCORE[task]
    drops = np.array([100 * (score(labels[i], reference[i]) - score(labels[i], pruned[i])) for i in draws])
    assert bound.upper == pytest.approx(np.percentile(drops, 90.0))
    assert (bound.low, bound.high) == pytest.approx(tuple(np.percentile(drops, [2.5, 97.5])))
    assert bound.se == pytest.approx(drops.std(ddof=1))
    assert bound.drop == pytest.approx(100 * (score(labels, reference) - score(labels, pruned)))
    assert bound.disagree == 4 and bound.n == 40
    if task == "sst2":  # by hand: 36/40 right against 34/40
        assert bound.drop == pytest.approx(5.0)


def test_identical_predictions_drop_nothing_and_confidence_is_checked():
    labels, reference, _ = _hand_made()
    boot = PairedBootstrap("sst2", labels, reference, resamples=50)
    same = boot.drop(reference)
    assert (same.drop, same.upper, same.low, same.high, same.disagree) == (0, 0, 0, 0, 0)
    for bad in (50, 100, 20, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            boot.drop(reference, bad)
        with pytest.raises(ValueError, match="confidence"):
            SearchSettings(confidence=bad)
    with pytest.raises(ValueError, match="pair"):
        boot.drop(reference[:-1])


def _stub_split(n: int) -> EncodedSplit:
    labels = np.array([i % 2 for i in range(n)])
    return EncodedSplit(task="sst2", split=f"stub:{n}", eval_size=n, seed=0, max_length=32, labels=labels,
                        idx=np.arange(n), batches=[], order=np.arange(n))


@pytest.mark.parametrize("n, accepted", [(250, False), (5000, True)])
def test_a_plan_is_refused_when_its_bound_exceeds_the_tolerance_though_its_point_drop_is_inside(n, accepted):
    """Every pruned plan gets exactly 2 examples wrong that the original gets right: a point drop of
    0.8 points on 250 examples (inside a 1-point tolerance) whose 90 % bound is 1.6 (2 wrong drawn
    4 times or more in a tenth of the resamples); on 5,000 examples the same 2 errors are 0.04 points."""
    search = _stub_split(n)

    def measure(plans, encoded):
        rows = []
        for plan in plans:
            predictions = encoded.labels.copy()
            if plan.layers:
                predictions[[0, 1]] ^= 1
            accuracy = float(np.mean(predictions == encoded.labels))
            rows.append({"accuracy": accuracy, "main_score": accuracy, "loss": 1 - accuracy,
                         "predictions": predictions.tolist()})
        return rows

    settings = SearchSettings(tolerance=1.0, compensation="none", levels=[0, 50], groups=["ffn"], skip_layers=1)
    result = search_plan(make_tiny_bert(classifier=True), None, search, settings, measure=measure)
    pruned_row = next(r for r in result.rows if r["phase"] == "exhaustive")
    assert pruned_row["drop"] == pytest.approx(100 * 2 / n)
    assert pruned_row["main_score"] >= result.original["main_score"] - 0.01  # the point estimate is inside
    assert pruned_row["feasible"] is accepted
    assert (pruned_row["drop_upper"] > 1.0) is not accepted
    assert bool(result.plan.layers) is accepted


@needs_glue
def test_dev_halves_are_disjoint_seeded_and_cover_dev():
    dev = glue.load_task("sst2", "validation", GLUE_DIR)
    search, report = dev_halves(dev, 1)
    a, b = set(search["idx"]), set(report["idx"])
    assert not a & b and a | b == set(dev["idx"]) and (len(a), len(b)) == (436, 436)
    again, _ = dev_halves(dev, 1)
    assert list(again["idx"]) == list(search["idx"])
    other, _ = dev_halves(dev, 2)
    assert set(other["idx"]) != a
    by_idx = dict(zip(dev["idx"], dev["sentence"]))  # the rows are dev's own, unchanged
    assert all(by_idx[i] == s for i, s in zip(search["idx"], search["sentence"]))


def _write(path, header, rows, delimiter=","):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@needs_glue
def test_search_data_file_is_read_and_its_errors_name_the_fix(tmp_path):
    train = glue.load_task("mrpc", "train", GLUE_DIR, n=MIN_SEARCH_ROWS + 5, seed=3)
    rows = [[a, b, ["not_equivalent", "equivalent"][y]] for a, b, y in
            zip(train["sentence1"], train["sentence2"], train["label"])]
    good = read_search_data(_write(tmp_path / "ok.csv", ["sentence1", "sentence2", "label"], rows), "mrpc")
    assert list(good["sentence1"]) == list(train["sentence1"]) and list(good["label"]) == list(train["label"])
    assert list(good["idx"]) == list(range(len(rows)))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['sentence2'\]"):
        read_search_data(_write(tmp_path / "cols.csv", ["sentence1", "label"], [[r[0], r[2]] for r in rows]), "mrpc")
    bad_label = [*rows[:-1], [rows[-1][0], rows[-1][1], "maybe"]]
    with pytest.raises(ValueError, match="label 'maybe'.*Valid labels"):
        read_search_data(_write(tmp_path / "labels.csv", ["sentence1", "sentence2", "label"], bad_label), "mrpc")
    with pytest.raises(ValueError, match=f"holds {MIN_SEARCH_ROWS - 1} examples.*at least {MIN_SEARCH_ROWS}"):
        read_search_data(_write(tmp_path / "few.tsv", ["sentence1", "sentence2", "label"],
                                rows[:MIN_SEARCH_ROWS - 1], delimiter="\t"), "mrpc")
    with pytest.raises(ValueError, match="existing .*file"):
        read_search_data(tmp_path / "missing.csv", "mrpc")
    with pytest.raises(ValueError, match="split"):
        SearchSettings(split="train")


def test_the_promise_widens_for_the_choice_and_for_the_fresh_examples_by_hand():
    from scipy.stats import norm

    from obce_core.search.bound import promised_interval

    se = 0.5
    drop = {"drop": 0.2, "low": 0.2 - norm.ppf(0.975) * se, "high": 0.2 + norm.ppf(0.975) * se, "n": 400}
    one = promised_interval(drop, compared=1, n_target=400)
    assert one["high"] - 0.2 == pytest.approx(norm.ppf(0.975) * se * np.sqrt(2))
    many = promised_interval(drop, compared=25, n_target=100)
    assert many["high"] - 0.2 == pytest.approx(norm.ppf(1 - 0.025 / 25) * se * np.sqrt(1 + 400 / 100))
    assert many["low"] == pytest.approx(0.4 - many["high"])
    with pytest.raises(ValueError, match="compared"):
        promised_interval(drop, compared=0, n_target=100)


def test_the_promise_holds_for_the_best_of_many_plans_where_the_search_interval_does_not():
    """Simulated searches: 20 plans, all truly as good as the original, each measured with noise on
    the search examples; the search keeps the best-looking one, then it is measured on fresh
    examples. The promise must cover that fresh drop in >= 95 % of searches; the search's own 95 %
    interval does not (the winner's curse)."""
    from scipy.stats import norm

    from obce_core.search.bound import promised_interval

    rng = np.random.default_rng(3)
    se, n_search, n_target, plans, trials = 1.0, 300, 400, 20, 4000
    measured = rng.normal(0.0, se, size=(trials, plans))
    best = measured.min(axis=1)
    fresh = rng.normal(0.0, se * np.sqrt(n_search / n_target), size=trials)
    half = norm.ppf(0.975) * se
    promised = [promised_interval({"drop": d, "low": d - half, "high": d + half, "n": n_search}, plans, n_target)
                for d in best]
    covered = np.mean([p["low"] <= f <= p["high"] for p, f in zip(promised, fresh)])
    naive = np.mean((best - half <= fresh) & (fresh <= best + half))
    assert covered >= 0.95
    assert naive < 0.8


def test_bound_note_says_when_the_bound_eats_the_tolerance():
    from obce_core.search.report import bound_note

    def row(drop, upper, feasible, removed):
        return {"phase": "refine", "drop": drop, "drop_upper": upper, "feasible": feasible, "cost_removed": removed}

    # the best feasible plan: measured 0.3, bounded 1.0: the bound adds 0.7 of a 1-point tolerance
    eaten = bound_note([{"phase": "original"}, row(0.3, 1.0, True, 0.4), row(0.1, 0.5, True, 0.2)], 1.0, 90.0, 2000)
    assert "eats 70 % of the tolerance" in eaten and "adds about 0.70 points" in eaten
    assert "may lose only about 0.30" in eaten and "2,000 examples" in eaten
    assert bound_note([row(0.8, 1.0, True, 0.4)], 1.0, 90.0, 2000) == ""  # a margin of 0.2 eats a fifth: no note
    # nothing feasible: the margin of the plan closest to the tolerance
    assert "eats 100 % of the tolerance" in bound_note([row(0.4, 1.9, False, 0.3), row(2.0, 3.0, False, 0.5)],
                                                       1.0, 90.0, 436)
