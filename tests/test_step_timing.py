"""Durations measured on this machine and the estimates built from them (obce_core.training.step_timing,
obce_core.jobs.estimate).

Oracles: hand-computed slowdowns and sums from figures the test stores itself; a stand-in clock
that advances one second per reading, so each measured interval is known exactly; a stand-in
latency measure whose call order and values the test scripts.
"""

from __future__ import annotations

import json

import pytest

from conftest import GLUE_DIR, needs_glue, save_task_model
from obce_core import glue
from obce_core.jobs.estimate import TASK_POINT, estimate_job, evaluated_points
from obce_core.jobs.spec import FinetuneJobSpec, JobSpec, SweepJobSpec
from obce_core.loading import load_model, model_fingerprint
from obce_core.pruning import PruningPlan
from obce_core.training import Recipe, estimate_training
from obce_core.training.step_timing import (MachineLoad, StepTimes, calibrate_finetune, compare_latency, device_key,
                                            eval_example_name, train_step_name)


def test_slowdown_follows_the_load_and_threads():
    assert MachineLoad(load=0.0, cores=2).slowdown(2) == 1.0
    assert MachineLoad(load=2.0, cores=2).slowdown(2) == 2.0  # (2 + 2) / 2
    assert MachineLoad(load=5.0, cores=2).slowdown(1) == 3.0  # (5 + 1) / 2
    assert MachineLoad(load=0.5, cores=4).slowdown(2) == 1.0  # room to spare
    assert MachineLoad(load=1.0, cores=2).slowdown(8) == 1.5  # no more threads than cores count


def test_a_measurement_is_stored_as_its_quiet_equivalent_and_scaled_to_the_load_now(tmp_path):
    busy, quiet = MachineLoad(load=2.0, cores=2), MachineLoad(load=0.0, cores=2)
    store = StepTimes(tmp_path / "t.json", load=lambda: quiet)
    assert store.seconds("m", "cpu", "x") is None  # never measured
    assert store.remember("m", "cpu", "x", 3.0, load=busy, threads=2) == pytest.approx(1.5)
    assert store.seconds("m", "cpu", "x", threads=2) == pytest.approx(1.5)
    assert store.seconds("m", "cpu", "x", load=MachineLoad(load=4.0, cores=2), threads=2) == pytest.approx(4.5)
    saved = json.loads((tmp_path / "t.json").read_text())["m|cpu"]["x"]
    assert saved["measured_s"] == 3.0 and saved["load"] == 2.0
    assert StepTimes(tmp_path / "t.json").has("m", "cpu", "x") and not StepTimes(tmp_path / "t.json").has("m", "gpu", "x")
    # later measurements: the median of the last ones (quiet equivalents 1.5, 3, 2 -> 2)
    store.remember("m", "cpu", "x", 3.0, load=quiet, threads=2)
    assert store.remember("m", "cpu", "x", 2.0, load=quiet, threads=2) == pytest.approx(2.0)
    assert store.seconds("m", "cpu", "x", threads=2) == pytest.approx(2.0)


def _seeded(tmp_path, model: str, figures: dict, *, threads: int | None = None) -> StepTimes:
    quiet = MachineLoad(load=0.0, cores=2)
    store = StepTimes(tmp_path / "t.json", load=lambda: quiet)
    for name, seconds in figures.items():
        store.remember("*" if name == "job_start" else model, device_key(), name, seconds, load=quiet, threads=threads)
    return store


def test_a_fine_tune_estimate_adds_the_measured_parts(tmp_path):
    recipe = Recipe.preset("smoke", "sst2")  # 20 steps, 128 dev examples
    store = _seeded(tmp_path, "fp", {"job_start": 6.0, "model_load": 2.0, train_step_name(recipe, "sst2"): 0.5,
                                     eval_example_name(recipe, "sst2"): 0.01})
    spec = FinetuneJobSpec(task="sst2", out="x", recipe=recipe)
    estimate = estimate_job(spec, "fp", store)
    assert estimate.seconds == pytest.approx(6.0 + 2.0 + 20 * 0.5 + 128 * 0.01)
    assert "ESTIMATE" in estimate.text() and "measured on this machine" in estimate.text()
    # a busy machine: the worker's start (one thread) and the rest (torch's threads) each scaled
    busy = MachineLoad(load=2.0, cores=2)
    expected = 6.0 * busy.slowdown(1) + (2.0 + 20 * 0.5 + 128 * 0.01) * busy.slowdown()
    assert estimate_job(spec, "fp", store, load=busy).seconds == pytest.approx(expected)
    assert estimate_job(spec, "another model", store) is None  # never measured: no figure at all


def test_a_comparison_estimate_counts_both_runs_scoring_and_the_teacher(tmp_path):
    recipe = Recipe.preset("smoke", "sst2")
    figures = {"job_start": 5.0, "model_load": 1.0, train_step_name(recipe, "sst2"): 0.5,
               eval_example_name(recipe, "sst2"): 0.02}
    store = _seeded(tmp_path, "fp", figures)
    spec = JobSpec(tasks=["sst2"], plan=PruningPlan(ffn=50), recipe=recipe, distill=True, score_n=100,
                   score_max_length=128)
    steps = estimate_training(recipe, "sst2")[0]
    expected = (5.0 + 2 * 1.0 + 2 * 128 * 0.02 + 100 * 0.02 * 128 / 64 + 2 * steps * 0.5 + steps * 32 * 0.02)
    assert estimate_job(spec, "fp", store).seconds == pytest.approx(expected)


def test_a_sweep_estimate_uses_the_measured_point(tmp_path):
    recipe = Recipe.for_task("sst2").replace(max_length=128)
    store = _seeded(tmp_path, "fp", {"job_start": 5.0, "model_load": 1.0, eval_example_name(recipe, "sst2"): 0.01,
                                     TASK_POINT: 3.56})
    spec = SweepJobSpec(model=str(tmp_path), task="sst2", groups=["ffn"], percentiles=[0, 50], scorers=["rf", "random"],
                        seeds=[0, 1], eval_size=100, score_texts=64)
    points = evaluated_points([(g, p, s, seed) for g in ["ffn"] for p in [0, 50] for s in ["rf", "random"]
                               for seed in ([0, 1] if s == "random" else [0])])
    assert points == 1 + 3  # percentile 0 once; at 50: rf, random seed 0 and 1
    prune_s = 3.56 - 256 * 0.01
    assert estimate_job(spec, "fp", store).seconds == pytest.approx(5.0 + 1.0 + 64 * 0.01 + points * (prune_s + 100 * 0.01))


class _Clock:
    """A stand-in clock: every reading is one second after the last."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@needs_glue
def test_calibration_measures_load_steps_and_evaluation_and_remembers_them(tmp_path, tokenizer, monkeypatch,
                                                                             one_torch_thread):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    source = save_task_model(tmp_path / "tiny", tokenizer)
    recipe = Recipe.preset("smoke", "sst2").replace(batch_size=4, eval_batch_size=8)
    store = StepTimes(tmp_path / "t.json", load=lambda: MachineLoad(load=0.0, cores=2))
    seen = []
    measured = calibrate_finetune(str(source), "sst2", recipe, store=store, steps=3, clock=_Clock(),
                                  progress=lambda done, total, text: seen.append((done, total)))
    # each interval spans two readings of the clock: 1 s; an evaluated example is 1 s / the batch of 8
    assert measured == {"model_load": 1.0, train_step_name(recipe, "sst2"): 1.0,
                        eval_example_name(recipe, "sst2"): pytest.approx(1 / 8)}
    fingerprint = model_fingerprint(load_model(str(source))[0])
    assert store.seconds(fingerprint, device_key(), train_step_name(recipe, "sst2"), threads=1) == pytest.approx(1.0)
    assert seen[-1] == (6, 6) and seen[0] == (0, 6)
    assert len(glue.load_task("sst2", "train", GLUE_DIR, n=4)) == 4  # the batches are real training rows


def test_latency_is_measured_interleaved_and_reported_as_medians():
    calls = []
    timings = {"orig": iter([10.0, 30.0, 20.0]), "pruned": iter([5.0, 9.0, 7.0])}

    def measure(model, tokenizer, texts, **kwargs):
        calls.append(model)
        return next(timings[model])

    loads = iter([MachineLoad(1.0, 2), MachineLoad(1.5, 2)])
    out = compare_latency("orig", "pruned", None, ["a", "b"], rounds=3, measure=measure, load=lambda: next(loads))
    assert calls == ["orig", "pruned"] * 3
    assert (out["original_ms"], out["pruned_ms"]) == (20.0, 7.0)
    assert out["speedup"] == pytest.approx(20 / 7)
    assert out["load_before"].load == 1.0 and out["load_after"].load == 1.5
