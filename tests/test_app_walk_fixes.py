"""Defects found walking every page as a new user (issue 24), each under AppTest.

Oracles: numpy on the Learn page's own points (the largest gap of the 1-D cloud), the numbers
stored in the results store, the upload's bytes, and what a task model's folder is called.
The real-browser half (a deep link first after a restart, text cut off at 1280 px, legends over
titles) is in tests/test_browser.py.
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import GLUE_DIR, needs_glue
from tests.test_app import APP, LEARN_PAGE, PERSISTENCE_PAGE, TIMEOUT, _clean, _metric

COMPARE_PAGE = "pages/4_Compare.py"


@pytest.fixture
def app(monkeypatch):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


# ---------------------------------------------------------------------------------------------
# 2. A link to a layer the model does not have
# ---------------------------------------------------------------------------------------------


def test_a_link_to_a_missing_layer_and_a_negative_neuron_warns_and_opens_the_default(monkeypatch):
    """The link's settings are read when the session starts (here on Model & data, where the texts
    are scored); the Persistence page then meets layer 99 of a 6-layer model."""
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"data": "demo", "n": "16", "layer": "99", "neuron": "-1"}
    at.run()
    assert any("neuron=-1" in w.value for w in at.warning)  # not an id: ignored, with the reason
    next(b for b in at.button if b.label == "Score neurons").click().run()
    _clean(at)
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)  # before the fix: "This page stopped. No neurons for layer 99 ..."
    warnings = " ".join(w.value for w in at.warning)
    assert "layer=99" in warnings and "L0 to L5" in warnings, warnings
    table = at.session_state["scored"].scores.table
    layers = sorted(table["layer"].unique())
    middle = int(layers[len(layers) // 2])
    assert at.selectbox(key="_w_layer").value == middle  # the page's own default: a middle layer's FFN
    group = table[(table["layer"] == middle) & (table["component"] == "intermediate")].sort_values("rank")
    assert at.session_state["neuron"] == int(group["neuron"].iloc[len(group) // 2])
    assert any(f"**L{middle} intermediate neuron" in m.value for m in at.markdown)  # the page went on


# ---------------------------------------------------------------------------------------------
# 3. The task model's Name follows the Task and Recipe
# ---------------------------------------------------------------------------------------------


@needs_glue
def test_the_task_models_name_follows_task_and_recipe_until_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "ws"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    from obce_core import glue
    from obce_core.training import CPU_PRESET

    local = glue.available_local_tasks()  # the Task box's options, in order
    task, preset = local[at.selectbox(key="tm_task").index], CPU_PRESET
    assert at.text_input(key="tm_name").value == f"{task}-{preset}"
    other = next(t for t in local if t != task)
    at.selectbox(key="tm_task").set_value(other).run()
    assert at.text_input(key="tm_name").value == f"{other}-{preset}"
    at.selectbox(key="tm_preset").set_value("smoke").run()
    assert at.text_input(key="tm_name").value == f"{other}-smoke"
    at.text_input(key="tm_name").input("my-model").run()  # a name of the user's own stays
    at.selectbox(key="tm_task").set_value(task).run()
    assert at.text_input(key="tm_name").value == "my-model"
    _clean(at)


# ---------------------------------------------------------------------------------------------
# 5. Uploads that cannot be read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, data, says", [
    ("empty.txt", b"", "empty.txt is empty"),
    ("photo.txt", bytes(range(256)) * 4, "not a text file"),
    ("latin1.txt", "caf\xe9 au lait\nun th\xe9\n".encode("latin-1"), "not UTF-8 text"),
    ("table.csv", b"id,label\n1,2\n3,4\n", "no text column found"),
])
def test_a_refused_upload_shows_one_error_and_leaves_the_uploader_empty(app, name, data, says):
    app.radio(key="_w_data").set_value("upload").run()
    app.get("file_uploader")[0].upload(name, data, "text/plain")
    app.run()
    assert not app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 1, errors  # the refusal alone: no "No file uploaded yet" beside it
    assert says in errors[0] and name in errors[0], errors[0]
    assert "codec" not in errors[0]
    uploaders = app.get("file_uploader")
    assert len(uploaders) == 1 and not uploaders[0].value  # the refused file is no longer listed
    assert next(b for b in app.button if b.label == "Score neurons").disabled  # nothing to score
    # A good file afterwards is used, and the refusal goes.
    lines = "\n".join(f"Sentence {i} about {w}." for i, w in enumerate(["cats", "dogs", "rain"] * 2))
    uploaders[0].upload("good.txt", lines.encode(), "text/plain")
    app.run()
    assert not app.error, [e.value for e in app.error]
    assert any("uploaded file good.txt (6 of 6 texts" in i.value for i in app.info)


# ---------------------------------------------------------------------------------------------
# 6. Learn: the legends say 2r where they show 2r; rf to the precision shown elsewhere
# ---------------------------------------------------------------------------------------------


def _figure(at: AppTest, key_part: str) -> dict:
    chart = next(c for c in at.get("plotly_chart") if key_part in c.proto.id)
    return json.loads(chart.proto.spec)


def test_learn_says_2r_where_it_draws_2r_and_rf_to_three_decimals(app):
    app.switch_page(LEARN_PAGE).run()
    _clean(app)
    from obce_core import rf

    # The oracle: the seeded cloud the page draws, rebuilt with numpy (two clusters, rounded to 2 decimals).
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.0, 6.0, size=(2, 1))
    cloud = np.round(centres[np.arange(8) % 2] + rng.normal(0.0, 0.45, size=(8, 1)), 2)[:, 0]
    gap = float(np.diff(np.sort(cloud)).max())
    assert rf(cloud, convention="length") == pytest.approx(gap)
    assert _metric(app, "rf (last merge)") == f"{gap:.3f}"
    r = float(app.slider(key="_w_learn_radius").value)
    diagram = _figure(app, "learn_diagram")
    names = [t.get("name") for t in diagram["data"]]
    assert f"2r = {2 * r:.3f}" in names, names
    assert not any(str(n).startswith("r = ") for n in names), names
    # The barcode's legend lies below its plot, not in the title's band.
    barcode = _figure(app, "learn_barcode")
    legend = barcode["layout"]["legend"]
    assert legend.get("yref") == "container" and legend["y"] == 0 and legend["yanchor"] == "bottom", legend


# ---------------------------------------------------------------------------------------------
# 8. Compare: latency in milliseconds people read, the ratio explained, the alone/contended flag
# ---------------------------------------------------------------------------------------------


def test_compare_latency_reads_as_milliseconds_with_its_flag_and_why_it_differs(monkeypatch, tmp_path):
    from obce_core.pruning import PruningPlan
    from obce_core.results import STORE_FILE, ResultsStore
    from obce_core.training import Recipe, RunResult

    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path))
    store = ResultsStore(tmp_path / STORE_FILE)
    recipe = Recipe.for_task("sst2").to_dict()
    plan = PruningPlan(ffn=30, qk=30, v=30, skip_layers=1).to_dict()
    for role, plan_, params, ms in (("original", None, 22_713_216, 11_700.0), ("pruned", plan, 20_113_456, 11_232.0)):
        store.add(RunResult(task="sst2", role=role, protocol="paper", model_source="default", fingerprint=role,
                            head_fingerprint="head", source_fingerprint="source", plan=plan_, recipe=recipe,
                            metrics={"accuracy": 0.8, "main_score": 0.8}, main_score=0.8, params_total=params,
                            params_encoder=params - 12_066_432, latency_ms=ms, wall_s=60.0, device="cpu"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(COMPARE_PAGE).run()
    _clean(at)
    table = next(df.value for df in at.dataframe if "original ms" in df.value.columns)
    row = table.iloc[0]
    assert (row["original ms"], row["pruned ms"]) == ("11,700", "11,232")  # not "1.17e+04"
    assert row["pruned / original"] == f"{11_232 / 11_700:.2f}"
    assert row["measured"] == "alone"  # the flag the caption describes (full width: no longer cut off)
    caption = next(c.value for c in at.caption if "pruned / original" in c.value)
    assert "FLOPs" in caption and "estimate" in caption


# ---------------------------------------------------------------------------------------------
# 10. Job states in symbols every browser's fonts draw
# ---------------------------------------------------------------------------------------------


JOB_STATES_SCRIPT = """
from pathlib import Path

from obce_core import jobs
from obce_dashboard.job_panel import job_panel

for state in ("queued", "running", "done", "failed", "cancelled"):
    folder = Path({root!r}) / state
    folder.mkdir(exist_ok=True)
    (folder / jobs.SPEC_FILE).write_text("{{}}")  # what makes a folder a job's
    job_panel(folder, jobs.JobStatus(job_id=state, state=state), "a job")
"""


def test_job_states_use_streamlits_own_icons_not_emoji(tmp_path):
    at = AppTest.from_string(JOB_STATES_SCRIPT.format(root=str(tmp_path)), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    lines = [m.value for m in at.markdown if "· job `" in m.value]
    assert len(lines) == 5, lines
    for line in lines:
        assert line.startswith(":material/"), line
        assert all(unicodedata.category(ch) != "So" for ch in line), line  # no emoji or other pictographs
