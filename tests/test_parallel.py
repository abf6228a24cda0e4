"""Plans evaluated in worker processes (``obce_core.evidence.PlanPool``), tested with two CPU workers.

Oracle: ``evaluate_plan`` / ``threshold_sweep`` run here, in this process, one point after another,
on the same model, scores, calibration and examples.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal

import pytest

from conftest import GLUE_DIR, needs_glue
from obce_core import glue, load_model, score_model
from obce_core.evidence import PlanPool, WorkerError, default_devices, encode_split, evaluate_plan, threshold_sweep
from obce_core.evidence import sweep as sweep_module
from obce_core.pruning import PruningPlan, capture_calibration
from test_app_evidence import _save_task_model

pytestmark = needs_glue
METRICS = ("main_score", "accuracy", "params_total", "params_encoder", "n_eval", "subset")


@pytest.fixture
def task_model(tmp_path, tokenizer, one_torch_thread):
    """A tiny saved SST-2 task model, its scores and calibration on 16 training sentences, 48 dev examples."""
    path = _save_task_model(tmp_path / "tiny-sst2", tokenizer)
    model, tok = load_model(str(path), device="cpu")
    texts = glue.dataset_texts(glue.load_task("sst2", "train", GLUE_DIR, n=16, seed=0), "sst2")
    scores = score_model(model, tok, texts, max_length=32)
    calibration = capture_calibration(model, tok, texts, max_length=32)
    encoded = encode_split(tok, "sst2", glue_dir=GLUE_DIR, eval_size=48, seed=0, max_length=32)
    return path, model, tok, scores, calibration, encoded


def _same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        for key in METRICS:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_two_cpu_workers_return_the_sequential_rows_in_order(task_model):
    path, model, _, scores, calibration, encoded = task_model
    plans = [PruningPlan(ffn=60, scorer="rf"), PruningPlan(compensation="none"),
             PruningPlan(ffn=30, qk=30, v=30, scorer="random", seed=1),
             PruningPlan(v=50, scorer="std", compensation="lsq"), PruningPlan(qk=50, scorer="magnitude"),
             PruningPlan(ffn=20, layers={1: {"ffn": 80}}, scorer="rf")]
    expected = [evaluate_plan(model, scores, plan, encoded, calibration=calibration) for plan in plans]
    # The plans differ in what they cost, so a mix-up of the order would show.
    assert len({(r["main_score"], r["params_total"]) for r in expected}) > 3
    bad = PruningPlan(layers={5: {"ffn": 50}})  # a layer the 2-layer model does not have
    with pytest.raises(ValueError) as sequential:
        evaluate_plan(model, scores, bad, encoded, calibration=calibration)

    with PlanPool(path, scores, encoded, calibration=calibration, devices=["cpu", "cpu"]) as pool:
        assert pool.workers == 2 and pool.threads == 1
        _same_rows(pool.evaluate(plans), expected)
        # A worker's error comes back with its type and message; the pool stays usable.
        with pytest.raises(type(sequential.value), match=re.escape(str(sequential.value))) as raised:
            pool.evaluate([plans[0], bad, plans[1]])
        assert isinstance(raised.value.__cause__, WorkerError) and "Traceback" in str(raised.value.__cause__)
        _same_rows(pool.evaluate(plans[:2]), expected[:2])
        processes = list(pool._processes)
    assert not any(p.is_alive() for p in processes)  # leaving the block stopped them
    assert not pool._folder.exists()  # and removed the copies it gave the workers
    with pytest.raises(WorkerError, match="closed"):
        pool.evaluate(plans[:1])


def test_a_killed_worker_is_reported_not_waited_for(task_model):
    path, _, _, scores, _, encoded = task_model
    pool = PlanPool(path, scores, encoded, devices=["cpu"])
    try:
        _same_rows(pool.evaluate([PruningPlan(ffn=50)]), [evaluate_plan(task_model[1], scores, PruningPlan(ffn=50), encoded)])
        (process,) = pool._processes
        os.kill(process.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
        process.join(timeout=10)
        with pytest.raises(WorkerError, match=r"stopped \(exit code -9\).*fewer workers"):
            pool.evaluate([PruningPlan(ffn=30)])
        assert not pool._processes and not pool._folder.exists()
    finally:
        pool.close(wait=False)


def test_sweep_with_two_workers_equals_the_sequential_sweep(task_model, tmp_path):
    _, model, tok, scores, calibration, encoded = task_model
    kwargs = dict(groups=("ffn", "all"), percentiles=(0, 40, 70), scorers=("rf", "random"), seeds=(0, 1),
                  encoded=encoded, calibration=calibration)
    sequential = threshold_sweep(model, tok, scores, "sst2", cache_dir=tmp_path / "one", **kwargs)
    seen = []
    parallel = threshold_sweep(model, tok, scores, "sst2", cache_dir=tmp_path / "two", workers=2,
                               progress=lambda done, total, row: seen.append(done), **kwargs)
    key = ["group", "percentile", "scorer", "seed"]
    assert parallel[key].values.tolist() == sequential[key].values.tolist()
    assert not parallel["cached"].any() and seen == list(range(1, len(sequential) + 1))
    for col in ("main_score", "accuracy", "params_total"):
        assert parallel[col].tolist() == pytest.approx(sequential[col].tolist(), abs=1e-6)
    # The model object was copied for the workers; the rows it cached answer a sequential rerun.
    again = threshold_sweep(model, tok, scores, "sst2", cache_dir=tmp_path / "two", **kwargs)
    assert again["cached"].all()


def test_a_cancelled_parallel_sweep_stops_its_workers_and_resumes(task_model, tmp_path, monkeypatch):
    _, model, tok, scores, calibration, encoded = task_model
    pools = []

    class Recorded(sweep_module.PlanPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(sweep_module, "PlanPool", Recorded)
    kwargs = dict(groups=("ffn",), percentiles=(0, 30, 60, 90), scorers=("rf",), encoded=encoded,
                  calibration=calibration, cache_dir=tmp_path)
    asked = []
    # Stop when asked the second time: the first batch (two evaluations by two workers) is kept.
    part = threshold_sweep(model, tok, scores, "sst2", workers=2, should_stop=lambda: asked.append(1) or len(asked) > 1,
                           **kwargs)
    assert part["percentile"].tolist() == [0.0, 30.0]
    (pool,) = pools
    assert not pool._processes and not pool._folder.exists()
    assert not [c for c in mp.active_children() if c.name.startswith("obce-plan-worker")]
    # An exception in the caller's progress callback: the workers are stopped at once, not left behind.
    with pytest.raises(RuntimeError, match="from the callback"):
        threshold_sweep(model, tok, scores, "sst2", workers=2, progress=lambda *a: (_ for _ in ()).throw(
            RuntimeError("from the callback")), **{**kwargs, "cache_dir": tmp_path / "other"})
    assert len(pools) == 2 and not pools[1]._processes and not pools[1]._folder.exists()
    assert not [c for c in mp.active_children() if c.name.startswith("obce-plan-worker")]
    # The resumed sweep evaluates only what is missing, and equals a sequential sweep.
    whole = threshold_sweep(model, tok, scores, "sst2", **kwargs)
    assert whole["cached"].tolist() == [True, True, False, False]
    oracle = threshold_sweep(model, tok, scores, "sst2", **{**kwargs, "cache_dir": tmp_path / "oracle"})
    assert whole["main_score"].tolist() == pytest.approx(oracle["main_score"].tolist(), abs=1e-6)


def test_devices_and_bad_arguments(task_model, monkeypatch):
    path, model, _, scores, _, encoded = task_model
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert default_devices() == ["cpu"] and default_devices(3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert default_devices() == [f"cuda:{i}" for i in range(4)] and default_devices(2) == ["cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="'workers' parameter of default_devices"):
        default_devices(0)
    with pytest.raises(ValueError, match="'devices' parameter of PlanPool"):
        PlanPool(path, scores, encoded, devices=[])
    with pytest.raises(ValueError, match="'tokenizer' parameter of PlanPool"):
        PlanPool(model, scores, encoded, devices=["cpu"])
    with pytest.raises(ValueError, match="'workers' parameter of threshold_sweep"):
        threshold_sweep(model, None, scores, "sst2", encoded=encoded, workers=0)
