"""Nothing slow on a widget's path (issue 24): the Prune page's evidence runs in the background,
cached per plan, the previous result marked stale meanwhile; the measured speed-up; Fisher only for
task models; a compensation that could not be fitted said on the page; durations estimated from
step times measured here.

Oracles: a spy on the heavy function that records which thread ran it and can be held back (so
the page is seen while it is still running); ``embedding_plan_evidence`` called by the test; a
stand-in latency measurement; figures the test stores in the step-time store itself, summed by hand.
"""

from __future__ import annotations

import threading

import pytest

from conftest import GLUE_DIR, needs_glue, save_tiny_bert
from obce_core.jobs.estimate import estimate_job
from obce_core.jobs.spec import FinetuneJobSpec
from obce_core.loading import load_model, model_fingerprint
from obce_core.pruning import PruningPlan, capture_calibration
from obce_core.training import Recipe
from obce_core.training.step_timing import MachineLoad, StepTimes, device_key, eval_example_name, train_step_name
from obce_dashboard import embedding_evidence, estimates, speed
from obce_dashboard.background import Background, background
from test_app_prune_compare import DEFAULT_PLAN, PRUNE_PAGE, _clean, scored_app

MODEL_PAGE = "pages/1_Model_and_data.py"


@pytest.fixture
def workspace(tmp_path, monkeypatch, one_torch_thread):
    ws = tmp_path / "workspace"
    monkeypatch.setenv("OBCE_WORKSPACE", str(ws))
    return ws


def settle(at):
    """Wait for the background work the page started, then rerun it: what a user sees once the
    page has polled its result."""
    assert background().wait_idle(120)
    at.run()
    _clean(at)
    return at


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def test_background_runs_the_newest_first_and_drops_superseded_work():
    bg = Background()
    gate, order = threading.Event(), []
    bg.submit("block", lambda report: gate.wait(10), slot="s0")
    for k in range(3):  # a run of slider moves in one slot: only the last is still wanted
        bg.submit(("plan", k), lambda report, k=k: order.append(k) or k, slot="s1")
    bg.submit("other", lambda report: order.append("other"), slot="s2")
    gate.set()
    assert bg.wait_idle(10)
    assert order == ["other", 2]  # newest first; plans 0 and 1 were dropped unstarted
    assert bg.get(("plan", 0)) is None and bg.get(("plan", 2)).result == 2
    assert bg.submit(("plan", 2), lambda report: 1 / 0).result == 2  # a finished key is a cache hit
    failed = bg.submit("bad", lambda report: 1 / 0)
    assert bg.wait_idle(10) and failed.state == "failed" and isinstance(failed.error, ZeroDivisionError)


def test_a_slider_move_never_waits_for_the_label_free_evidence(workspace, tokenizer, monkeypatch):
    source = save_tiny_bert(workspace / "encoders" / "tiny", tokenizer, seed=3)
    at = scored_app(source)
    gate, threads = threading.Event(), []
    real = embedding_evidence.embedding_plan_evidence

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        gate.wait(60)  # held back: the page is seen while the evidence is still being computed
        return real(*args, **kwargs)

    monkeypatch.setattr(embedding_evidence, "embedding_plan_evidence", spy)
    gate.set()
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    settle(at)
    first = _metrics(at)["Mean cosine to the original"]

    gate.clear()
    at.slider(key="_w_ffn").set_value(60.0).run()  # returns while the spy is held back
    _clean(at)
    assert not gate.is_set() and threads and set(threads) == {"obce-background"}  # never on the script's thread
    shown = _metrics(at)
    assert shown["Mean cosine to the original"] == first  # the previous plan's figure ...
    assert any("Stale:" in c.value and "ffn=30" in c.value for c in at.caption)  # ... marked stale
    assert shown["Parameters after (whole model)"] != ""  # the instant part follows the slider
    gate.set()
    settle(at)
    assert not any("Stale:" in c.value for c in at.caption)

    # the oracle: the plan pruned and measured here, on the page's held-out texts (the probe, whose
    # texts test_app_embedding_evidence checks), with a calibration captured here
    run = at.session_state["scored"]
    probe = at.session_state["_background_last_embedding_plan"][1][1]
    model, _ = load_model(str(source), device="cpu")
    calibration = capture_calibration(model, tokenizer, list(run.texts), max_length=run.scores.settings.max_length)
    expected = real(model, run.scores, PruningPlan(**{**DEFAULT_PLAN, "ffn": 60.0}), probe, calibration=calibration)
    assert _metrics(at)["Mean cosine to the original"] == f"{expected['mean_cosine']:.4f}"

    # cached per plan: back to 30 % is answered at once, no new computation, nothing stale
    calls = len(threads)
    at.slider(key="_w_ffn").set_value(30.0).run()
    _clean(at)
    assert len(threads) == calls and _metrics(at)["Mean cosine to the original"] == first
    assert not any("Stale:" in c.value for c in at.caption)


def test_fisher_is_offered_to_task_models_only(workspace, tokenizer):
    source = save_tiny_bert(workspace / "encoders" / "tiny", tokenizer, seed=3)
    at = scored_app(source)
    at.session_state["scorer"] = "fisher"  # chosen earlier, for a task model
    at.switch_page(PRUNE_PAGE).run()
    assert not at.exception
    assert "fisher" not in at.selectbox(key="_w_scorer").options
    assert at.selectbox(key="_w_scorer").value == "rf"
    assert any("Fisher needs a task model" in w.value for w in at.warning)
    assert not at.error and any(m.label == "Parameters after (whole model)" for m in at.metric)  # metrics stay


def test_measured_speed_and_an_unfitted_compensation_are_said_on_the_page(workspace, tokenizer, monkeypatch):
    # 400 FFN units: a refit of the ~280 kept needs more tokens than 16 texts hold
    source = save_tiny_bert(workspace / "encoders" / "tiny", tokenizer, seed=3, ffn=400)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    at.selectbox(key="_w_compensation").set_value("lsq").run()
    next(b for b in at.button if b.label.startswith("Apply")).click().run()
    _clean(at)
    report = at.session_state["pruned"].report
    unfitted = [r for r in report.compensations if r["method"] != "lsq"]
    assert unfitted  # 16 texts give far too few tokens for a least-squares refit
    warning = next(w.value for w in at.warning if "could not be fitted" in w.value)
    assert f"in {len(unfitted)} of {len(report.compensations)} layer group(s)" in warning
    assert "score more texts on **Model & data**" in warning and "max_train_tokens" not in warning

    seen = []

    def stand_in(original, pruned, tokenizer_, texts, **kwargs):
        seen.append((original, pruned, threading.current_thread().name))
        return {"original_ms": 30.0, "pruned_ms": 20.0, "speedup": 1.5, "rounds": 7, "batch": 16, "max_length": 128,
                "original_runs": [], "pruned_runs": [], "load_before": MachineLoad(0.5, 2),
                "load_after": MachineLoad(0.7, 2)}

    monkeypatch.setattr(speed, "compare_latency", stand_in)
    assert not any(m.label.startswith("Measured speed-up") for m in at.metric)  # only on a click
    next(b for b in at.button if b.key == "measure_speed").click().run()
    settle(at)
    applied = at.session_state["pruned"]
    assert seen and seen[0][1] is applied.model and seen[0][2] == "obce-background"
    metric = next(m for m in at.metric if m.label == "Measured speed-up (this machine)")
    assert metric.value == "1.50x" and f"FLOPs estimate {1 / report.flops_ratio_estimate:.2f}x" in metric.delta
    assert any("7 interleaved rounds" in c.value and "load 0.5 on 2 cores" in c.value for c in at.caption)


@needs_glue
def test_the_task_models_panel_estimates_from_step_times_measured_here(workspace, minilm, monkeypatch):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    from streamlit.testing.v1 import AppTest
    from test_app_prune_compare import APP, TIMEOUT

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key="tm_task").set_value("sst2").run()
    at.selectbox(key="tm_preset").set_value("smoke").run()
    _clean(at)
    # never measured here: no duration at all, a button that measures instead
    assert not any("ESTIMATE" in c.value for c in at.caption)
    assert any(b.key == "calibrate_finetune" for b in at.button)

    recipe = Recipe.preset("smoke", "sst2")
    fingerprint = model_fingerprint(minilm[0])
    store, quiet = StepTimes(), MachineLoad(0.0, 2)
    calls = []

    def stand_in_start(store=None, **kwargs):  # what time_job_start would remember
        calls.append(threading.current_thread().name)
        StepTimes().remember("*", device_key(), "job_start", 8.0, load=quiet, threads=1)

    def stand_in_calibration(source, task, recipe_, **kwargs):  # what calibrate_finetune would remember
        calls.append(threading.current_thread().name)
        for name, seconds in {"model_load": 2.0, train_step_name(recipe_, task): 0.9,
                              eval_example_name(recipe_, task): 0.02}.items():
            StepTimes().remember(fingerprint, device_key(), name, seconds, load=quiet)

    monkeypatch.setattr(estimates, "time_job_start", stand_in_start)
    monkeypatch.setattr(estimates, "calibrate_finetune", stand_in_calibration)
    monkeypatch.setattr(MachineLoad, "now", classmethod(lambda cls: MachineLoad(0.0, 2)))
    next(b for b in at.button if b.key == "calibrate_finetune").click().run()
    settle(at)
    assert calls == ["obce-background"] * 2  # measured off the script's thread, once
    expected = 8.0 + 2.0 + 20 * 0.9 + 128 * 0.02  # 20 steps; 128 dev examples
    estimate = estimate_job(FinetuneJobSpec(task="sst2", out="x", recipe=recipe), fingerprint)
    assert estimate.seconds == pytest.approx(expected)
    caption = next(c.value for c in at.caption if "ESTIMATE" in c.value)
    assert f"about {expected:.0f} s" in caption and "20 training steps 18 s" in caption
    assert store.has(fingerprint, device_key(), train_step_name(recipe, "sst2"))  # remembered for the next visit


@needs_glue
def test_fisher_is_computed_in_the_background_below_free_sliders(glue_workspace, tokenizer, monkeypatch):
    from conftest import save_task_model
    from obce_core.pruning import FISHER_COLUMN
    from obce_dashboard import prune_plan

    source = save_task_model(glue_workspace / "task_models" / "tiny-sst2", tokenizer)
    at = scored_app(source)
    gate, threads = threading.Event(), []
    real = prune_plan.fisher_information

    def held(*args, **kwargs):
        threads.append(threading.current_thread().name)
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(prune_plan, "fisher_information", held)
    at.switch_page(PRUNE_PAGE).run()
    at.selectbox(key="_w_scorer").set_value("fisher").run()  # returns while Fisher is held back
    _clean(at)
    assert all(name == "obce-background" for name in threads)  # queued or held back, never on the script's thread
    assert any("Computing Fisher importance" in c.value for c in at.caption)
    assert not any(m.label == "Parameters after (whole model)" for m in at.metric)  # nothing ranked yet
    at.slider(key="_w_ffn").set_value(40.0).run()  # the sliders stay free meanwhile
    _clean(at)
    gate.set()
    settle(at)
    assert threads == ["obce-background"]
    assert FISHER_COLUMN in at.session_state["scored"].scores.table.columns
    assert any(m.label == "Parameters after (whole model)" for m in at.metric)
