"""The Prune and Compare pages under Streamlit's AppTest.

Expected values come from oracles outside the page: the core's ``build_report`` called by the test
on the same scores, a hand-written closed-form parameter count, the built model's own tensors, and
numbers the test puts into a results store itself. GLUE jobs are not run here (``test_jobs.py``
runs the machinery): starting one is checked by the job folder it leaves, with ``start_job``
replaced by ``create_job`` (which writes the folder without launching a worker).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from obce_core import jobs, load_model, results
from obce_core.describe import describe_plan, describe_recipe
from obce_core.jobs.process import process_start_time
from obce_core.pruning import PLAN_FILE, PruningPlan, build_report, select_units
from obce_core.training import Recipe, RunResult

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PRUNE_PAGE = "pages/3_Prune.py"
COMPARE_PAGE = "pages/4_Compare.py"
TIMEOUT = 120
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
DEFAULT_PLAN = dict(qk=30.0, v=30.0, ffn=30.0, skip_layers=1, compensation="auto", scorer="rf")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    monkeypatch.setenv("OBCE_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def scored(monkeypatch, workspace):
    """The app with 16 demo sentences scored on the embedded model through the Score button."""
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.number_input(key="_w_n").set_value(16).run()
    at.button[0].click().run()
    _clean(at)
    assert at.session_state["scored"].scores.n_texts == 16
    return at


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def scored_app(source, data="demo") -> AppTest:
    """The app on ``source`` with 16 texts of ``data``, scored (Model & data's button)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"model": str(source), "data": data, "n": "16"}
    at.run()
    next(b for b in at.button if b.label == "Score neurons").click().run()
    _clean(at)
    return at


def record_started_jobs(monkeypatch) -> list:
    """Job folders the pages start, created (folder and spec) but given no worker process."""
    started = []

    def fake_start(spec, workspace=None):
        started.append(jobs.create_job(spec, workspace))
        return started[-1].name

    monkeypatch.setattr(jobs, "start_job", fake_start)
    return started


def _metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _report(at: AppTest, **plan):
    """The core's report for the session's scores, computed here, apart from the page."""
    run = at.session_state["scored"]
    model, _ = load_model(device="cpu")
    return build_report(model, select_units(run.scores, PruningPlan(**{**DEFAULT_PLAN, **plan}), model))


def _closed_form_total(ffn: float, qk: float, v: float, skip: int = 1) -> int:
    """all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads x 32, FFN 1536) counted by hand."""
    hidden, heads, head, width, layers = 384, 12, 32, 1536, 6
    embeddings = (30522 + 512 + 2) * hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    total = embeddings + pooler
    for i in range(layers):
        p = (0, 0, 0) if i < skip else (qk, v, ffn)
        dqk = heads * (head - math.floor(p[0] * head / 100))
        dv = heads * (head - math.floor(p[1] * head / 100))
        f = width - math.floor(p[2] * width / 100)
        total += 2 * (hidden * dqk + dqk) + (hidden * dv + dv + dv * hidden) + (hidden * f + f + f * hidden)
        total += hidden + hidden + 4 * hidden  # the two output biases, two LayerNorms (weight + bias)
    return total


# ---------------------------------------------------------------------------------------------
# Prune
# ---------------------------------------------------------------------------------------------


def test_prune_without_scores_points_to_the_model_page(monkeypatch, workspace):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    assert at.title[0].value == "Prune"
    assert any("Nothing is scored yet" in i.value for i in at.info)


def test_prune_slider_changes_the_parameter_count(scored):
    at = scored
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    total, encoder = _metric(at, "Parameters after (whole model)"), _metric(at, "Encoder parameters after")
    before_total, before_encoder = total.value, encoder.value
    expected = _report(at)
    assert before_total == f"{expected.params_after['total']:,}" == f"{_closed_form_total(30, 30, 30):,}"
    assert before_encoder == f"{expected.params_after['encoder']:,}"
    assert f"of {expected.params_before['total']:,} kept" in total.delta

    at.slider(key="_w_ffn").set_value(60.0).run()
    _clean(at)
    after_total = _metric(at, "Parameters after (whole model)").value
    expected = _report(at, ffn=60.0)
    assert after_total != before_total
    assert after_total == f"{expected.params_after['total']:,}" == f"{_closed_form_total(60, 30, 30):,}"
    assert _metric(at, "Encoder parameters after").value == f"{expected.params_after['encoder']:,}"
    assert _metric(at, "Size (float32)").value == f"{expected.bytes_after / 2**20:.1f} MiB"
    assert _metric(at, "Speed-up (FLOPs estimate)").value == f"{1 / expected.flops_ratio_estimate:.2f}x"
    assert at.query_params.get("ffn") == "60"
    assert len(at.get("plotly_chart")) == 2  # the unit heatmap and the kept-per-layer bars


def test_prune_settings_come_from_the_url(monkeypatch, workspace):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"n": "16", "ffn": "50", "qk": "0", "skip_layers": "0", "overrides": '{"2": {"ffn": 90}}'}
    at.run()
    at.button[0].click().run()
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    assert at.slider(key="_w_ffn").value == 50.0 and at.slider(key="_w_qk").value == 0.0
    expected = _report(at, ffn=50.0, qk=0.0, skip_layers=0, layers={2: {"ffn": 90}})
    assert _metric(at, "Parameters after (whole model)").value == f"{expected.params_after['total']:,}"
    layer2 = next(r for r in expected.kept_frame().itertuples() if r.layer == 2 and r.group == "ffn")
    assert layer2.kept == 1536 - math.floor(0.9 * 1536)  # the override, not the slider
    assert any("L2: ffn 90 %" in c.value for c in at.caption)


def _save_refusals(at: AppTest, workspace: Path, tmp_path: Path) -> None:
    """Names that lead out of the workspace are refused and touch nothing; Overwrite never
    replaces a folder that obce did not save."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (workspace / "pruned" / "link").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    at.checkbox(key="save_overwrite").check().run()
    for name in ("../../outside", "..", "~", "~/x", str(outside), "/tmp/obce-escape", "a/b", "link"):
        next(t for t in at.text_input if t.label == "Save as").input(name).run()
        _button(at, "Save").click().run()
        assert not at.exception, name
        assert not at.success and any("Could not save" in e.value for e in at.error), name
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created, moved or deleted
    assert (outside / "keep.txt").read_text() == "precious" and not Path("/tmp/obce-escape").exists()
    # A folder inside the workspace that obce did not write: Overwrite leaves it alone.
    other = workspace / "pruned" / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    next(t for t in at.text_input if t.label == "Save as").input("notes").run()
    _button(at, "Save").click().run()
    assert not at.exception and (other / "todo.txt").read_text() == "mine"
    assert any("holds files obce did not write, so it is never replaced, even with **Overwrite**; choose another name"
               in e.value for e in at.error)


def test_apply_builds_the_reported_model_and_saves_it(scored, tmp_path, workspace):
    at = scored
    at.switch_page(PRUNE_PAGE).run()
    at.slider(key="_w_ffn").set_value(50.0).run()
    _button(at, "Apply: build the pruned model").click().run()
    _clean(at)
    applied = at.session_state["pruned"]
    expected = _report(at, ffn=50.0)
    counted = sum(p.numel() for p in applied.model.parameters())  # oracle: the model's own tensors
    assert counted == expected.params_after["total"] == applied.report.params_after["total"]
    assert _metric(at, "Parameters of the built model").value == f"{counted:,}"
    assert 0.0 < applied.similarity["mean"] <= 1.0 + 1e-9 and applied.similarity["n"] == 16
    assert _metric(at, "[CLS] cosine, pruned vs original").value == f"{applied.similarity['mean']:.4f}"
    assert {"Download the plan (JSON)", "Download the model (zip)"} <= {d.label for d in at.get("download_button")}
    # The cached model the whole server shares is untouched.
    shared, _ = load_model(device="cpu")
    assert sum(p.numel() for p in shared.parameters()) == expected.params_before["total"]

    # The zip the download button serves reloads into the same model.
    from obce_core.export import model_zip

    data = model_zip(applied.model, applied.tokenizer, applied.plan, applied.report, "pruned")
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        zf.extractall(tmp_path / "unzipped")
    reloaded, tok = load_model(str(tmp_path / "unzipped" / "pruned"), device="cpu")
    assert sum(p.numel() for p in reloaded.parameters()) == counted
    assert PruningPlan.from_json(tmp_path / "unzipped" / "pruned" / PLAN_FILE) == applied.plan
    enc = tok(["The film was a delight."], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(reloaded(**enc).last_hidden_state, applied.model(**enc).last_hidden_state)

    # Save by name into the workspace; a second save under the same name asks for Overwrite, in browser terms.
    target = workspace / "pruned" / "mine"
    next(t for t in at.text_input if t.label == "Save as").input("mine").run()
    _button(at, "Save").click().run()
    _clean(at)
    assert (target / "config.json").is_file() and (target / PLAN_FILE).is_file()
    assert any(str(target.resolve()) in s.value for s in at.success)
    _button(at, "Save").click().run()
    assert not at.exception
    assert any(f"{str(target)!r} is a folder that is not empty; to replace it use **Overwrite**, or choose another name"
               in e.value for e in at.error)
    assert not any("overwrite=True" in e.value for e in at.error)
    _save_refusals(at, workspace, tmp_path)


def _status_labels(at: AppTest) -> list[str]:
    return [e.proto.expandable.label for e in at.get("expandable")] + [
        getattr(e, "label", "") for e in at.get("status")]


def test_apply_status_tells_the_whole_time_and_onnx_builds_on_request(scored):
    import numpy as np
    import onnxruntime as ort
    import re
    import time

    at = scored
    at.switch_page(PRUNE_PAGE).run()
    at.slider(key="_w_ffn").set_value(50.0).run()
    start = time.perf_counter()
    _button(at, "Apply: build the pruned model").click().run()
    wall = time.perf_counter() - start  # the test's own clock around the whole apply (and the page's redraw)
    _clean(at)
    label = next(lab for lab in _status_labels(at) if lab.startswith("Built the pruned model in"))
    total, pruning, check = map(float, re.findall(r"([\d.]+) s", label))
    assert total == pytest.approx(pruning + check, abs=0.11) and total <= wall
    assert at.session_state["pruned"].seconds == pytest.approx(total, abs=0.06)

    assert "Download the model (ONNX)" not in {d.label for d in at.get("download_button")}  # built only on request
    _button(at, "Build the ONNX file").click().run()
    _clean(at)
    assert "Download the model (ONNX)" in {d.label for d in at.get("download_button")}
    assert any(lab.startswith("ONNX file built and checked") for lab in _status_labels(at))
    built = at.session_state["_onnx"]
    report = built["report"]
    assert any(f"max |diff| **{report.max_abs_diff:.2e}**" in c.value for c in at.caption)
    # Oracle: the served bytes run in ONNX Runtime and give the pruned PyTorch model's outputs.
    applied = at.session_state["pruned"]
    enc = applied.tokenizer(["The film was a delight.", "Dull."], padding=True, return_tensors="np")
    session = ort.InferenceSession(built["data"], providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    got = session.run(None, feeds)[0]
    with torch.inference_mode():
        want = applied.model(**{k: torch.as_tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    mask = enc["attention_mask"].astype(bool)
    assert np.abs(got[mask] - want[mask]).max() < 1e-4
    # A new Apply drops the file of the previous model.
    at.slider(key="_w_ffn").set_value(40.0).run()
    _button(at, "Apply: build the pruned model").click().run()
    assert "_onnx" not in at.session_state and "Download the model (ONNX)" not in {
        d.label for d in at.get("download_button")}


def test_units_figure_palette_is_colour_blind_safe_with_a_legend():
    import pandas as pd

    from obce_core import plots
    from obce_core.plots.pruning import KEPT_COLOR, REMOVED_COLOR

    units = pd.DataFrame({"layer": [0, 0, 0, 0], "group": ["ffn"] * 4, "unit": [0, 1, 2, 3],
                          "score": [0.1, 0.2, 0.3, 0.4], "kept": [False, False, True, True]})
    fig = plots.pruning_units_figure(units)
    heat = next(t for t in fig.data if t.type == "heatmap")
    scale = [c for _, c in heat.colorscale]
    assert scale[1].upper() == "#E69F00" == REMOVED_COLOR and scale[-1].upper() == "#0072B2" == KEPT_COLOR  # Okabe-Ito
    legend = [t for t in fig.data if t.showlegend]
    assert [t.name.split(" ")[0] for t in legend] == ["kept", "removed"]
    assert [t.marker.color for t in legend] == [KEPT_COLOR, REMOVED_COLOR]

    def luminance(hex_color):  # WCAG relative luminance: the two stay apart in grey scale too
        rgb = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    assert (luminance(REMOVED_COLOR) + 0.05) / (luminance(KEPT_COLOR) + 0.05) > 2.0


def test_scores_of_other_weights_show_the_core_error(scored):
    at = scored
    run = at.session_state["scored"]
    at.session_state["scored"] = dataclasses.replace(run, scores=dataclasses.replace(run.scores, model_fingerprint="0" * 16))
    at.switch_page(PRUNE_PAGE).run()
    assert not at.exception
    assert len(at.error) == 1 and "fingerprint" in at.error[0].value and "Rescore" in at.error[0].value


# ---------------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------------


def test_compare_without_glue_data_explains_both_fixes(scored, workspace):
    at = scored
    at.switch_page(COMPARE_PAGE).run()
    _clean(at)
    note = next(i.value for i in at.info if "No GLUE data" in i.value)
    assert "OBCE_GLUE_DIR" in note and "HF_HUB_OFFLINE" in note
    assert not any(b.label == "Start the job" for b in at.button)


@pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "train.tsv").is_file(), reason="no local GLUE copy in ../shared/data/glue")
def test_compare_offers_local_tasks_and_starting_writes_a_job(monkeypatch, workspace):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    started = record_started_jobs(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"n": "16", "ffn": "40"}
    at.run()
    at.button[0].click().run()
    at.switch_page(COMPARE_PAGE).run()
    _clean(at)
    tasks = at.multiselect(key="compare_tasks")
    assert set(tasks.options) >= {"SST-2 (sst2)", "RTE (rte)", "MRPC (mrpc)", "CoLA (cola)"}  # the local copy's tasks
    assert tasks.value == ["sst2"]
    tasks.set_value(["sst2", "rte"]).run()
    at.selectbox(key="compare_preset").set_value("smoke").run()
    _button(at, "Start the job").click().run()
    _clean(at)
    assert len(started) == 1 and started[0].parent == workspace / "jobs"
    spec = jobs.JobSpec.from_json(started[0] / jobs.SPEC_FILE)
    assert spec.tasks == ["sst2", "rte"] and spec.protocol == "paper" and spec.model == "default"
    assert spec.plan == PruningPlan(**{**DEFAULT_PLAN, "ffn": 40.0})
    assert spec.recipe == Recipe.preset("smoke")
    run = at.session_state["scored"]
    from obce_core.scoring import NeuronScores

    assert NeuronScores.from_parquet(spec.scores).model_fingerprint == run.scores.model_fingerprint
    assert any(f"Started job `{started[0].name}`" in s.value for s in at.success)
    line = next(m.value for m in at.markdown if started[0].name in m.value)
    assert "queued" in line and "sst2, rte" in line and "protocol paper" in line
    assert describe_recipe(Recipe.preset("smoke")) in line and describe_plan(spec.plan) in line

    # A refresh is a new session: the form comes back from the address, so Start starts the same job.
    form = at.query_params["form"]
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)
    fresh.query_params = {"n": "16", "ffn": "40", "form": form[0] if isinstance(form, list) else form}
    fresh.run()
    fresh.switch_page(COMPARE_PAGE).run()
    _clean(fresh)
    assert fresh.multiselect(key="compare_tasks").value == ["sst2", "rte"]
    assert fresh.selectbox(key="compare_preset").value == "smoke"


def test_an_active_job_shows_progress_and_can_be_cancelled(scored, workspace):
    at = scored
    spec = jobs.JobSpec(model="default", tasks=["sst2"], plan=PruningPlan(ffn=30), glue_dir=str(GLUE_DIR))
    job_dir = jobs.create_job(spec, workspace)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        # With its start time, cancel's escalation thread can never signal a process that reuses the pid.
        start = process_start_time(sleeper.pid)
        (job_dir / jobs.PID_FILE).write_text(json.dumps({"pid": sleeper.pid, "start": start, "detached": True}))
        status = jobs.JobStatus(job_id=job_dir.name, state="running", pid=sleeper.pid, detached=True, task="sst2",
                                phase="fine-tuning original on sst2", step=5, max_steps=20, loss=0.693, eta_s=30.0,
                                run=2, runs=4, job_eta_s=150.0)
        (job_dir / jobs.STATUS_FILE).write_text(json.dumps(status.to_dict()))
        waiting = jobs.create_job(jobs.JobSpec(model="default", tasks=["rte"], glue_dir=str(GLUE_DIR)), workspace)
        jobs.JobStatus(job_id=waiting.name, phase=f"queued (waiting for job {job_dir.name})").to_json(
            waiting / jobs.STATUS_FILE)
        at.switch_page(COMPARE_PAGE).run()
        _clean(at)
        bar = at.get("progress")[0]
        assert "run 2 of 4" in bar.proto.text and "step 5 of 20" in bar.proto.text and "loss 0.693" in bar.proto.text
        assert "about 2.5 min left for the whole job (estimate" in bar.proto.text
        assert any(f"queued (waiting for job {job_dir.name})" in c.value for c in at.caption)
        next(b for b in at.button if b.key == f"cancel_{job_dir.name}").click().run()
        assert not at.exception
        assert (job_dir / jobs.CANCEL_FILE).exists()
        assert next(b for b in at.button if b.key == f"cancel_{job_dir.name}").label == "Cancelling…"
    finally:
        sleeper.kill()
        sleeper.wait()


def _result(task, role, score, params, *, plan=None, latency=10.0, metric="accuracy"):
    recipe = Recipe.preset("smoke").to_dict()
    return RunResult(
        task=task, role=role, protocol="paper", model_source="default", fingerprint=f"fp-{role}-{task}",
        head_fingerprint="h", source_fingerprint="src", plan=plan, recipe=recipe, metrics={metric: score, "main_score": score},
        main_score=score, params_total=params, params_encoder=params // 2, latency_ms=latency, wall_s=1.0, device="cpu",
    )


def _display_values(frame) -> "pd.DataFrame":
    """The cell texts an ``st.dataframe`` shows: its Styler's display values, or the cells themselves
    when the page wrote them out as text (then a missing cell must already read "—", not None)."""
    import pyarrow as pa

    styler = frame.proto.arrow_data.styler
    if not styler.display_values:
        return frame.value.astype(object).where(frame.value.notna(), "None").astype(str)
    return pa.ipc.open_stream(styler.display_values).read_pandas()


def test_stored_results_render_side_by_side_and_on_the_tradeoff_chart(scored, workspace):
    at = scored
    plan = PruningPlan(ffn=50, qk=30, v=30, skip_layers=1).to_dict()
    store = results.ResultsStore(workspace / results.STORE_FILE)
    added = [store.add(r) for r in (
        _result("sst2", "original", 0.80, 22_700_000, latency=20.0),
        _result("sst2", "pruned", 0.75, 18_000_000, plan=plan, latency=12.0),
        _result("rte", "original", 0.55, 22_700_000),
        _result("rte", "pruned", 0.58, 18_000_000, plan=plan),
    )]
    # rte's pruned run overlapped another job: its latency row says so.
    job_dir = jobs.create_job(jobs.JobSpec(model="default", tasks=["rte"], glue_dir=str(GLUE_DIR)), workspace)
    jobs.JobStatus(job_id=job_dir.name, state="done", result_ids=[added[3].id], contended_ids=[added[3].id]).to_json(
        job_dir / jobs.STATUS_FILE)
    at.switch_page(COMPARE_PAGE).run()
    _clean(at)
    table = next(d.value for d in at.dataframe if "difference" in d.value.columns)
    # One row per metric: sst2's main_score repeats its accuracy, so it is no second row.
    assert table.groupby("task")["metric"].apply(list).to_dict() == {
        "sst2": ["accuracy"], "rte": ["accuracy"], "glue_average": ["main_score"]}
    assert table["headline"].all()
    # The cells are the text the browser shows (2 decimals; latency ratio 3 significant digits).
    shown_as = lambda value, digits=2: pytest.approx(value, abs=0.5 * 10 ** -digits)  # noqa: E731
    sst2 = table[(table["task"] == "sst2") & (table["metric"] == "accuracy")].iloc[0].map(
        lambda v: float(v) if isinstance(v, str) and v[-1:].isdigit() and v[:1] in "-0123456789" else v)
    assert sst2["original"] == shown_as(80.0) and sst2["pruned"] == shown_as(75.0)
    assert sst2["difference"] == shown_as(-5.0)
    assert sst2["params % (all)"] == shown_as(100 * 18_000_000 / 22_700_000)
    rte = table[(table["task"] == "rte") & (table["metric"] == "accuracy")].iloc[0]
    assert float(rte["difference"]) == shown_as(3.0)
    average = table[table["task"] == "glue_average"].iloc[0]
    assert float(average["original"]) == shown_as(67.5) and float(average["pruned"]) == shown_as(66.5)
    assert average["params % (all)"] == "—"
    latency = next(d.value for d in at.dataframe if "pruned / original" in d.value.columns)
    assert float(latency.set_index("task").loc["sst2", "pruned / original"]) == shown_as(0.6, 3)
    assert latency.set_index("task")["measured"].to_dict() == {"sst2": "alone", "rte": "contended"}
    for frame in at.dataframe:  # what the browser shows: no "None" and no "nan", "—" for the empty cells
        shown = _display_values(frame)
        assert not shown.isin(["None", "nan", "NaN", "<NA>"]).any().any(), shown
    history = next(d for d in at.dataframe if "latency measured" in d.value.columns)
    assert (_display_values(history)["job_id"] == "—").sum() == 4  # added by the test, not by a job
    history = next(d.value for d in at.dataframe if "plan" in d.value.columns and "id" in d.value.columns)
    assert len(history) == 4 and (history["plan"] == "original (not pruned)").sum() == 2
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 2  # bars (original vs pruned) and the trade-off scatter
    scatter = next(c for c in charts if any(t.get("mode") == "markers" for t in c["data"]))
    points = {t["name"]: t for t in scatter["data"] if t.get("mode") == "markers"}
    assert set(points) == {"rte", "sst2"} and len(points["sst2"]["x"]) == 2


@pytest.mark.skipif(not (GLUE_DIR / "RTE" / "dev.tsv").is_file(), reason="no local GLUE copy in ../shared/data/glue")
def test_the_finetuned_protocol_refuses_a_bare_encoder(scored, monkeypatch):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    at = scored
    at.switch_page(COMPARE_PAGE).run()
    at.radio(key="compare_protocol").set_value("finetuned").run()
    assert not at.exception
    assert any("not a fine-tuned classifier" in w.value for w in at.warning)
    assert _button(at, "Start the job").disabled


# ---------------------------------------------------------------------------------------------
# Figure builders
# ---------------------------------------------------------------------------------------------


def test_units_figure_marks_kept_and_removed_units_in_place():
    import numpy as np
    import pandas as pd

    from obce_core import plots

    rows = []
    # layer 0: qk 2 heads x 3 pairs, all tied (rf 0); layer 1: 2 heads x 2 pairs (an already pruned layer)
    for unit in range(6):
        rows.append({"layer": 0, "group": "qk", "unit": unit, "score": 0.0, "kept": True})
    for unit, (score, kept) in enumerate([(0.1, False), (0.5, True), (0.9, True), (0.2, False)]):
        rows.append({"layer": 1, "group": "qk", "unit": unit, "score": score, "kept": kept})
    units = pd.DataFrame(rows).astype({"group": pd.CategoricalDtype(["ffn", "qk", "v"])})
    fig = plots.pruning_units_figure(units, heads=2)
    heat = next(t for t in fig.data if t.type == "heatmap")
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (2, 6)
    assert np.all(z[0] == z[0, 0]) and z[0, 0] >= 0.5  # ties: one flat shade, kept
    assert np.isnan(z[1, 4:]).all()  # the narrower layer is padded
    kept = z[1, :4] >= 0.5
    assert kept.tolist() == [False, True, True, False] and list(np.asarray(heat.text)[1, :4]) == ["removed", "kept", "kept", "removed"]
    assert z[1, 2] > z[1, 1] and z[1, 3] > z[1, 0]  # darker = higher score, within kept and within removed
    seps = next(t for t in fig.data if t.type == "scatter")
    assert [x for x in seps.x if x is not None] == [2.5, 2.5, 1.5, 1.5]  # head boundaries of each layer
    assert fig.layout.annotations[0].text.startswith("query/key pairs: 8 of 10 kept")


def test_tradeoff_front_joins_the_runs_nothing_beats():
    import pandas as pd

    from obce_core import plots

    results = pd.DataFrame({
        "task": ["sst2"] * 4, "role": ["original", "pruned", "pruned", "pruned"],
        "params_total": [12e6, 10e6, 9e6, 8e6], "main_score": [0.85, 0.80, 0.70, 0.79],
    })
    fig = plots.tradeoff_figure(results)
    front = next(t for t in fig.data if t.mode == "lines")
    assert list(front.x) == [8.0, 10.0, 12.0]  # 9 M scores less than the 8 M run: dominated
    assert list(front.y) == pytest.approx([79.0, 80.0, 85.0])
    points = next(t for t in fig.data if t.mode == "markers")
    assert list(points.marker.symbol) == ["circle", "diamond", "diamond", "diamond"]
