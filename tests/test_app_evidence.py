"""Evidence for choosing a threshold, end to end: the Prune page's task score and sweep curves for a
tiny task model, the how-to note for a model without a head, the Task models section of Model &
data, and the CLI's ``sweep``.

Oracles: ``evaluate_plan`` and ``threshold_sweep`` called here on the same model, scores and
examples (with their own cache folder, so every oracle row is a fresh evaluation), and the sweep's
own cache file for the curves.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import GLUE_DIR, needs_glue, save_tiny_bert
from conftest import save_task_model as _save_task_model
from obce_core import glue, jobs, load_model, score_model
from obce_core.evidence import encode_split, evaluate_plan, read_sweep, task_model_problem, threshold_sweep
from obce_core.pruning import PruningPlan, capture_calibration
from obce_core.training import Recipe
from test_app_background import settle
from test_app_prune_compare import APP, DEFAULT_PLAN, PRUNE_PAGE, TIMEOUT, _clean, record_started_jobs, scored_app
_scored_app = scored_app  # the name other test modules import

pytestmark = needs_glue
MODEL_PAGE = "pages/1_Model_and_data.py"


@pytest.fixture
def workspace(glue_workspace):
    return glue_workspace


@pytest.fixture
def task_model_dir(workspace, tokenizer):
    return _save_task_model(workspace / "task_models" / "tiny-sst2", tokenizer)


def _oracle_plan_score(source, run, plan, eval_size):
    model, tokenizer = load_model(str(source), device="cpu")
    encoded = encode_split(tokenizer, "sst2", glue_dir=GLUE_DIR, eval_size=eval_size, seed=0)
    calibration = capture_calibration(model, tokenizer, list(run.texts), max_length=run.scores.settings.max_length)
    return evaluate_plan(model, run.scores, plan, encoded, calibration=calibration)["main_score"]


def test_prune_page_shows_the_plan_score_and_the_sweep_curves(task_model_dir, workspace, monkeypatch):
    at = scored_app(task_model_dir)
    at.switch_page(PRUNE_PAGE).run()
    settle(at)  # the plan's score is computed in the background
    run = at.session_state["scored"]
    metric = next(m for m in at.metric if m.label.startswith("sst2 score of this plan (estimate on 256"))
    expected = _oracle_plan_score(task_model_dir, run, PruningPlan(**DEFAULT_PLAN), 256)
    assert metric.value == f"{100 * expected:.2f}"
    assert any("95 % interval" in c.value for c in at.caption)
    assert any("No sweep of this model yet" in c.value for c in at.caption)

    # A moved slider evaluates the new plan once; moving back is answered from the cache.
    from obce_dashboard import evidence

    calls = []
    real = evidence.score_plan
    monkeypatch.setattr(evidence, "score_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    at.slider(key="_w_ffn").set_value(60.0).run()
    settle(at)
    assert len(calls) == 1
    expected60 = _oracle_plan_score(task_model_dir, run, PruningPlan(**{**DEFAULT_PLAN, "ffn": 60.0}), 256)
    assert next(m for m in at.metric if "estimate on 256" in m.label).value == f"{100 * expected60:.2f}"
    at.slider(key="_w_ffn").set_value(30.0).run()
    _clean(at)
    assert len(calls) == 1

    # A finished sweep job (run here, in this process) draws its curves and the safe-percentile table.
    spec = jobs.SweepJobSpec(model=str(task_model_dir), task="sst2", groups=["ffn", "all"], percentiles=[0, 50],
                             scorers=["rf", "random"], seeds=[0], eval_size=64, score_texts=16, skip_layers=1)
    job_dir = jobs.create_job(spec, workspace)
    swept = jobs.run_job(job_dir)
    status = jobs.job_status(job_dir)
    assert status.state == "done" and status.output == str(swept.path)
    at.run()
    _clean(at)
    rows = read_sweep(swept.path)
    assert len(rows) == 2 * 2 * 2
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    chart = next(c for c in charts if any(t.get("name") == "rf" for t in c["data"]))
    lines = [t for t in chart["data"] if t.get("mode") == "lines+markers"]
    assert {t["name"] for t in lines} == {"rf", "random"} and len(lines) == 4  # 2 scorers x 2 panels
    for trace in lines:
        group = "ffn" if trace["xaxis"] in ("x", "x1") else "all"
        part = rows[(rows["group"] == group) & (rows["scorer"] == trace["name"])].sort_values("percentile")
        assert trace["x"] == part["percentile"].tolist()
        assert trace["y"] == pytest.approx((100 * part["main_score"]).tolist())
    assert any("Largest swept percentile within 1 point" in c.value for c in at.caption)


def test_a_model_without_a_head_gets_the_how_to(workspace, tokenizer):
    source = save_tiny_bert(workspace / "encoders" / "tiny", tokenizer, seed=1)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    note = next(i.value for i in at.info if "no task head" in i.value)
    assert "Task models" in note and "python -m obce_core finetune --task sst2 --out DIR" in note
    assert not any("score of this plan" in m.label for m in at.metric)


def test_a_task_model_of_another_task_is_named(task_model_dir, workspace):
    assert "fine-tuned on sst2, not rte" in task_model_problem(str(task_model_dir), "rte")
    with pytest.raises(ValueError, match="fine-tuned on sst2, not rte"):
        jobs.create_job(jobs.SweepJobSpec(model=str(task_model_dir), task="rte"), workspace)
    at = scored_app(task_model_dir, data="glue")
    at.selectbox(key="_w_task").set_value("rte").run()
    at.switch_page(PRUNE_PAGE).run()
    assert not at.exception
    assert any("fine-tuned on **sst2**" in w.value and "rte" in w.value for w in at.warning)


def test_task_models_section_lists_loads_and_trains(task_model_dir, workspace, monkeypatch):
    started = record_started_jobs(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    table = next(d.value for d in at.dataframe if "dev score" in d.value.columns)
    assert table.iloc[0]["name"] == "tiny-sst2" and table.iloc[0]["task"] == "sst2"
    assert table.iloc[0]["dev score"] == pytest.approx(50.0)
    next(b for b in at.button if b.key == "load_task_model_tiny-sst2").click().run()
    _clean(at)
    assert at.session_state["model"] == str(task_model_dir.resolve())
    assert next(b for b in at.button if b.key == "load_task_model_tiny-sst2").label.startswith("Loaded")

    at.selectbox(key="tm_task").set_value("rte").run()
    # never measured on this machine: no duration, a button that measures (test_app_background checks the figure)
    assert any(b.key == "calibrate_finetune" for b in at.button)
    at.text_input(key="tm_name").input("rte-try").run()
    next(b for b in at.button if b.key == "tm_start").click().run()
    _clean(at)
    spec = jobs.read_spec(started[0] / jobs.SPEC_FILE)
    assert isinstance(spec, jobs.FinetuneJobSpec) and spec.task == "rte"
    assert spec.out == str((workspace / "task_models" / "rte-try").resolve()) and spec.recipe == Recipe.for_task("rte")
    assert any(started[0].name in m.value and "queued" in m.value for m in at.markdown)


def test_cli_sweep_prints_the_table_and_writes_the_rows(task_model_dir, tmp_path, capsys):
    from obce_core.cli import main

    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--model", str(task_model_dir), "--task", "sst2", "--glue-dir", str(GLUE_DIR),
                 "--groups", "ffn,all", "--percentiles", "0,40", "--scorers", "rf,random", "--seeds", "0,1",
                 "--eval-size", "48", "--score-texts", "12", "--csv", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "mean ± std over seeds" in printed and "Largest percentile within 1 point" in printed
    written = pd.read_csv(out)

    model, tokenizer = load_model(str(task_model_dir), device="cpu")
    texts = glue.dataset_texts(glue.load_task("sst2", "train", GLUE_DIR, n=12, seed=0), "sst2")
    scores = score_model(model, tokenizer, texts, token="cls", max_length=128)
    calibration = capture_calibration(model, tokenizer, texts, max_length=128)
    oracle = threshold_sweep(model, tokenizer, scores, "sst2", groups=("ffn", "all"), percentiles=(0, 40),
                             scorers=("rf", "random"), seeds=(0, 1), glue_dir=GLUE_DIR, eval_size=48,
                             calibration=calibration, cache_dir=tmp_path / "oracle-cache")
    assert not oracle["cached"].any()
    key = ["group", "percentile", "scorer", "seed"]
    merged = written.merge(oracle, on=key, suffixes=("_cli", "_oracle"))
    assert len(merged) == len(oracle) == len(written) == 2 * 2 * 3
    for col in ("main_score", "accuracy", "params_total", "params_encoder"):
        assert merged[f"{col}_cli"].tolist() == pytest.approx(merged[f"{col}_oracle"].tolist())
    rf_ffn40 = merged[(merged["group"] == "ffn") & (merged["percentile"] == 40) & (merged["scorer"] == "rf")]
    assert f"{100 * rf_ffn40['main_score_oracle'].iloc[0]:.2f} ± 0.00" in printed
