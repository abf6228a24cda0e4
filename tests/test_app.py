"""The dashboard under Streamlit's AppTest, and the figure builders it draws with.

AppTest runs ``app.py`` (navigation) and the real pages in-process: widgets are set, the script
reruns, and the rendered elements are inspected. Expected values come from independent oracles
(numpy on the scores table, scipy's connected components), not from the code under test.
The embedded MiniLM loads in about half a second and 16 texts score in about one, so each test
that scores stays small.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from obce_core import persistence_diagram, plots

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
MODEL_PAGE = "pages/1_Model_and_data.py"
PERSISTENCE_PAGE = "pages/2_Persistence.py"
LEARN_PAGE = "pages/5_Learn.py"
TIMEOUT = 120  # the first run imports torch and loads the model
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"


@pytest.fixture
def app(monkeypatch):
    """The app on its first page, with no GLUE copy configured (the offline, no-data case)."""
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _score(at: AppTest, n: int = 16) -> AppTest:
    at.number_input(key="_w_n").set_value(n).run()
    at.button[0].click().run()
    _clean(at)
    return at


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def test_every_page_renders_before_anything_is_scored(app):
    _clean(app)
    assert app.title[0].value == "Model & data"
    assert any("obce demo corpus" in i.value for i in app.info)  # no GLUE, no network: the demo corpus
    assert _metric(app, "Layers") == "6" and _metric(app, "Hidden size") == "384"
    for page, title in ((PERSISTENCE_PAGE, "Persistence"), (LEARN_PAGE, "Learn: persistence in one picture")):
        app.switch_page(page).run()
        assert not app.exception, [e.value for e in app.exception]
        assert app.title[0].value == title
    app.switch_page(PERSISTENCE_PAGE).run()
    assert any("Nothing is scored yet" in i.value for i in app.info)


def test_navigation_reaches_every_page():
    """app.py lists the five pages; each is reachable through it and renders."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    titles = []
    for page in ("pages/2_Persistence.py", "pages/3_Prune.py", "pages/4_Compare.py", "pages/5_Learn.py",
                 "pages/1_Model_and_data.py"):
        at.switch_page(page).run()
        assert not at.exception, page
        titles.append(at.title[0].value)
    assert titles == ["Persistence", "Prune", "Compare", "Learn: persistence in one picture", "Model & data"]


def test_score_through_the_button_then_inspect_a_neuron(app):
    _score(app, 16)
    assert _metric(app, "Texts") == "16" and _metric(app, "Samples") == "16"
    run = app.session_state["scored"]
    table = run.scores.table
    assert _metric(app, "Neurons") == f"{len(table):,}"
    assert _metric(app, "Neurons with rf = 0") == f"{int((table['rf'] == 0).sum()):,}"

    app.switch_page(PERSISTENCE_PAGE).run()
    _clean(app)
    app.selectbox(key="_w_layer").set_value(3).run()
    app.selectbox(key="_w_component").set_value("value").run()
    next(b for b in app.button if b.label == "Max rf").click().run()
    _clean(app)
    group = table[(table["layer"] == 3) & (table["component"] == "value")]
    best = group.loc[group["rf"].idxmax()]  # oracle: the plain arg-max of the table
    assert app.session_state["neuron"] == int(best["neuron"])
    assert f"neuron {int(best['neuron'])}**: rf = **{best['rf']:.4g}**" in app.markdown[0].value
    values = run.scores.values(3, "value", int(best["neuron"]))
    assert np.isclose(np.diff(np.sort(values.astype(np.float64))).max(), best["rf"])
    labels = {d.label for d in app.get("download_button")}
    assert {"Download these tables (CSV)", "Download every neuron (CSV)"} <= labels
    # The choice survives a round trip through another page.
    app.switch_page(LEARN_PAGE).run()
    app.switch_page(PERSISTENCE_PAGE).run()
    assert app.selectbox(key="_w_layer").value == 3 and app.session_state["neuron"] == int(best["neuron"])


def _verdict_shown(at: AppTest, layer: int, component: str, neuron: int) -> str:
    at.selectbox(key="_w_layer").set_value(layer).run()
    at.selectbox(key="_w_component").set_value(component).run()
    at.number_input(key="_w_neuron").set_value(neuron).run()
    assert not at.exception, [e.value for e in at.exception]
    line = next(m.value for m in at.markdown if f"**L{layer} {component} neuron {neuron}**" in m.value)
    return next(v for v in ("pruned", "kept") if f"it is **{v}**" in line)


def test_persistence_verdicts_follow_the_prune_plan(monkeypatch):
    """The verdict shown for a neuron is select_units' under the plan of the Prune page's settings
    (from the URL here): a skipped layer, a per-layer override and the std scorer."""
    from obce_core import PruningPlan, load_model, select_units

    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"n": "16", "scorer": "std", "skip_layers": "2", "ffn": "40", "overrides": '{"3": {"ffn": 70}}'}
    at.run()
    at.button[0].click().run()
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)
    assert not at.slider  # no percentile of its own: the Prune page's plan decides
    table = at.session_state["scored"].scores.table
    model, _ = load_model(device="cpu")
    plan = PruningPlan(ffn=40, qk=30, v=30, skip_layers=2, scorer="std", layers={3: {"ffn": 70}})
    selection = select_units(at.session_state["scored"].scores, plan, model)

    # Oracle 1, by hand: FFN units are ranked by std alone (then index), floor(p * 1536) go.
    def lowest_std(layer: int, percent: float) -> tuple[int, int]:
        g = table[(table["layer"] == layer) & (table["component"] == "intermediate")].sort_values(["std", "neuron"])
        k = int(np.floor(percent * 1536 / 100))
        return int(g["neuron"].iloc[k - 1]), int(g["neuron"].iloc[k])  # the last removed, the first kept

    removed3, kept3 = lowest_std(3, 70)  # the override, not the 40 % slider
    removed4, kept4 = lowest_std(4, 40)
    assert _verdict_shown(at, 3, "intermediate", removed3) == "pruned"
    assert _verdict_shown(at, 3, "intermediate", kept3) == "kept"
    assert _verdict_shown(at, 4, "intermediate", removed4) == "pruned"
    assert _verdict_shown(at, 4, "intermediate", kept4) == "kept"
    assert _verdict_shown(at, 1, "intermediate", lowest_std(1, 40)[0]) == "kept"  # layer 1 is skipped
    # Oracle 2: select_units itself, on query/value neurons (per head, pair score).
    for layer, component, group in ((2, "query", "qk"), (2, "key", "qk"), (5, "value", "v")):
        removed = set(selection.removed(layer, group).tolist())
        first_removed = min(removed)
        first_kept = min(set(range(384)) - removed)
        assert _verdict_shown(at, layer, component, first_removed) == "pruned"
        assert _verdict_shown(at, layer, component, first_kept) == "kept"
    # The rank chart greys exactly the removed neurons of the shown group.
    chart = next(c for c in at.get("plotly_chart") if "rank by rf" in c.proto.spec)
    points = json.loads(chart.proto.spec)["data"][0]
    ids = points["customdata"]  # plotly sends numeric arrays as base64 typed arrays
    ids = np.frombuffer(base64.b64decode(ids["bdata"]), dtype=ids["dtype"]) if isinstance(ids, dict) else ids
    grey = {int(n) for n, c in zip(ids, points["marker"]["color"]) if c == plots.REMOVED_COLOR}
    assert grey == set(selection.removed(5, "v").tolist())


def test_persistence_opens_on_the_median_ffn_unit_of_a_middle_layer(app):
    _score(app, 16)
    app.switch_page(PERSISTENCE_PAGE).run()
    _clean(app)
    table = app.session_state["scored"].scores.table
    g = table[(table["layer"] == 3) & (table["component"] == "intermediate")].sort_values("rank")
    assert app.session_state["layer"] == 3 and app.session_state["component"] == "intermediate"
    assert app.session_state["neuron"] == int(g["neuron"].iloc[len(g) // 2])
    assert app.number_input(key="_w_neuron").max == len(g) - 1  # only valid ids


def test_url_parameters_set_the_first_values(monkeypatch):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"n": "24", "token": "mean", "ffn": "40", "seed": "oops"}
    at.run()
    assert not at.exception
    assert at.number_input(key="_w_n").value == 24
    assert at.radio(key="_w_token").value == "mean"
    assert at.session_state["ffn"] == 40.0
    assert at.session_state["seed"] == 0 and any("seed=oops" in w.value for w in at.warning)
    at.number_input(key="_w_n").set_value(16).run()
    assert at.query_params.get("n") == "16" and at.query_params.get("ffn") == "40"


def test_learn_slider_moves_and_the_page_follows(app):
    app.switch_page(LEARN_PAGE).run()
    _clean(app)
    pts = app.data_editor[0].value["x"].to_numpy(dtype=float)  # the cloud the page shows
    assert len(pts) == 8
    gaps = np.diff(np.sort(pts))

    slider = app.slider(key="_w_learn_radius")
    for r in (0.0, float(gaps.max()) / 2 * 0.999, slider.max):
        app.slider(key="_w_learn_radius").set_value(r).run()
        _clean(app)
        expected = 1 + int((gaps > 2 * r).sum())  # oracle: a gap wider than 2r keeps two pieces apart
        assert _metric(app, "Components at r") == str(expected)
        assert app.session_state["learn_radius"] == pytest.approx(r)
    assert _metric(app, "Components at r") == "1"
    # rf as on every other page: the gap (a length); the radius of the last merge, half of it, beside it
    assert _metric(app, "rf (last merge)") == f"{gaps.max():.3f}"  # as the merge table and slider show it
    assert any(f"merge, **{gaps.max() / 2:.3f}**" in c.value for c in app.caption)


def _cloud_labels(app) -> list[str]:
    fig = json.loads(app.get("plotly_chart")[0].proto.spec)
    return next(t["text"] for t in fig["data"] if t.get("name") == "point numbers")


def test_learn_point_numbers_match_the_chart_and_play_sweeps_the_radius(app):
    app.switch_page(LEARN_PAGE).run()
    _clean(app)
    editor = app.data_editor[0].value
    assert editor.index.name == "point" and _cloud_labels(app) == [str(k) for k in editor.index]
    top = app.slider(key="_w_learn_radius").max
    app.slider(key="_w_learn_radius").set_value(0.0).run()
    app.button(key="learn_play").click().run()  # each run of the page is one frame of the sweep
    assert app.session_state["learn_playing"] and app.button(key="learn_play").label == "Stop"
    assert app.session_state["learn_radius"] == pytest.approx(top / 40, abs=1e-4)
    app.run()
    assert app.session_state["learn_radius"] == pytest.approx(2 * top / 40, abs=1e-4)
    for _ in range(40):
        app.run()
        if not app.session_state["learn_playing"]:
            break
    _clean(app)
    assert app.session_state["learn_radius"] == pytest.approx(top) and not app.session_state["learn_playing"]
    assert _metric(app, "Components at r") == "1"
    assert app.button(key="learn_play").label.startswith("Play")
    app.button(key="learn_play").click().run()  # Play again: from the start
    assert app.session_state["learn_playing"] and app.session_state["learn_radius"] == pytest.approx(top / 40, abs=1e-4)
    app.button(key="learn_play").click().run()  # Stop: the radius stays where it is
    assert not app.session_state["learn_playing"] and app.session_state["learn_radius"] == pytest.approx(top / 40, abs=1e-4)


def test_learn_radius_keeps_its_place_in_the_range_when_the_points_change(app):
    app.switch_page(LEARN_PAGE).run()
    top = app.slider(key="_w_learn_radius").max
    app.slider(key="_w_learn_radius").set_value(round(top / 3, 3)).run()
    app.number_input(key="learn_seed").set_value(5).run()
    _clean(app)
    new_top = app.slider(key="_w_learn_radius").max
    pts = app.data_editor[0].value["x"].to_numpy(dtype=float)
    assert new_top == pytest.approx(max(np.ceil(np.diff(np.sort(pts)).max() / 2 * 1.3 * 100) / 100, 0.1))
    assert new_top != pytest.approx(top)
    assert app.session_state["learn_radius"] / new_top == pytest.approx(round(top / 3, 3) / top, abs=1e-3)


def test_one_d_point_labels_never_overlap():
    xs = np.array([0.0, 0.01, 0.02, 0.5, 0.51, 3.0, 3.0, 3.02])
    from obce_core.plots.teaching import label_levels

    levels = label_levels(xs, 0.1)
    for row in set(levels.tolist()):
        same = np.sort(xs[levels == row])
        assert np.all(np.diff(same) >= 0.1)  # oracle: every pair in one row is far enough apart
    assert levels.max() == 2  # three points within 0.1 of each other need three rows, no more
    fig = plots.learn_figure(xs, 0.05, labels=[f"p{k}" for k in range(8)])
    text = next(t for t in fig.data if t.name == "point numbers")
    assert list(text.text) == [f"p{k}" for k in range(8)] and len(set(zip(text.x, text.y))) == 8


def test_learn_in_two_dimensions(app):
    app.switch_page(LEARN_PAGE).run()
    app.radio(key="learn_dim").set_value(2).run()
    app.slider(key="learn_n").set_value(12).run()
    _clean(app)
    assert _metric(app, "Points") == "12"


def test_a_bad_model_path_shows_an_error_not_a_traceback(app):
    app.radio(key="_w_model_kind").set_value("local").run()
    app.text_input(key="_w_model_text").input("/no/such/model/dir").run()
    assert not app.exception
    assert len(app.error) == 1 and "OBCE_MODEL_DIRS" in app.error[0].value
    assert app.button[0].disabled  # nothing to score with


def test_a_local_model_directory_is_loaded_and_scored(app, tmp_path, tokenizer, monkeypatch):
    from tests.conftest import save_tiny_bert

    monkeypatch.setenv("OBCE_MODEL_DIRS", str(tmp_path))

    save_tiny_bert(tmp_path / "tiny", tokenizer, seed=1, hidden=24, heads=3, layers=2, ffn=37)
    app.radio(key="_w_model_kind").set_value("local").run()
    app.text_input(key="_w_model_text").input(str(tmp_path / "tiny")).run()
    _clean(app)
    assert (_metric(app, "Layers"), _metric(app, "Hidden size"), _metric(app, "FFN units")) == ("2", "24", "37")
    _score(app, 16)
    table = app.session_state["scored"].scores.table
    assert len(table) == 2 * (3 * 24 + 37 + 2 * 24)  # q, k, v, FFN, attention output, output per layer
    assert app.query_params.get("model") == str(tmp_path / "tiny")


def test_a_hub_id_offline_shows_an_error_with_the_fix(app):
    app.radio(key="_w_model_kind").set_value("hub").run()
    app.text_input(key="_w_model_text").input("nobody/no-such-model").run()
    assert not app.exception
    assert len(app.error) == 1 and "local directory" in app.error[0].value


def test_an_uploaded_file_is_scored(app):
    app.radio(key="_w_data").set_value("upload").run()
    assert any("No file uploaded yet" in e.value for e in app.error)
    lines = "\n".join(f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "dogs", "rain", "tax"] * 3))
    app.get("file_uploader")[0].upload("mine.txt", lines.encode(), "text/plain")
    app.run()
    assert any("uploaded file mine.txt (12 of 12 texts" in i.value for i in app.info)
    app.button[0].click().run()
    _clean(app)
    assert _metric(app, "Texts") == "12"


def test_a_bad_upload_shows_an_error(app):
    app.radio(key="_w_data").set_value("upload").run()
    app.get("file_uploader")[0].upload("table.csv", b"id,label\n1,2\n3,4\n", "text/csv")
    app.run()
    assert not app.exception
    assert any("no text column found" in e.value for e in app.error)


@pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "dev.tsv").is_file(), reason="no local GLUE copy in ../shared/data/glue")
def test_a_local_glue_copy_becomes_the_default(monkeypatch):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    assert at.session_state["data"] == "glue" and at.session_state["task"] == "sst2"
    assert any("GLUE sst2 validation" in i.value for i in at.info)


def test_scores_are_shared_with_a_second_session(app):
    _score(app, 16)
    second = AppTest.from_file(APP, default_timeout=TIMEOUT)
    second.query_params = {"n": "16"}
    second.run()
    second.switch_page(PERSISTENCE_PAGE).run()
    _clean(second)
    assert second.session_state["scored"].scores is app.session_state["scored"].scores


def test_the_error_helper_never_shows_a_bare_traceback():
    def script():
        import streamlit as st

        from obce_dashboard import ui

        with ui.errors("Could not do the thing") as first:
            raise ValueError("the value was 3; expected 4. Use 4.")
        with ui.errors("Could not do the other thing") as second:
            raise RuntimeError("boom")
        st.write(f"{first.ok} {second.ok}")

    at = AppTest.from_function(script, default_timeout=30).run()
    assert not at.exception
    assert at.error[0].value.startswith("**Could not do the thing.** the value was 3")
    assert "Unexpected RuntimeError: boom" in at.error[1].value
    assert at.expander[0].label == "Details"
    assert at.markdown[-1].value == "False False"


# ---------------------------------------------------------------------------------------------
# Figure builders
# ---------------------------------------------------------------------------------------------


def test_diagram_puts_infinity_on_a_line_above_the_finite_range():
    values = np.array([0.0, 0.1, 0.5, 2.0])
    fig = plots.diagram_figure(persistence_diagram(values), rf=1.5)
    diagonal, inf_line, points = fig.data[0], fig.data[1], fig.data[2]
    assert diagonal.hoverinfo == "skip" and diagonal.line.dash == "dash"
    assert fig.layout.xaxis.range == fig.layout.yaxis.range
    finite = np.sort(np.diff(np.sort(values)))  # oracle: 1-D deaths are the gaps
    y = np.asarray(points.y)
    assert np.allclose(np.sort(y[:-1]), finite)
    assert y[-1] == inf_line.y[0] > finite.max()
    assert any(a.text == "∞" for a in fig.layout.annotations)


def test_diagram_colours_components_and_reveals_up_to_the_radius():
    d = persistence_diagram(np.array([0.0, 1.0, 3.0]))
    fig = plots.diagram_figure({"query": d, "intermediate": d}, radius=1.5)
    by_name = {t.name: t for t in fig.data if t.name in ("query", "intermediate")}
    assert by_name["query"].marker.color == plots.COMPONENT_COLORS["query"]
    assert by_name["intermediate"].marker.color == plots.COMPONENT_COLORS["intermediate"]
    assert list(by_name["query"].y) == [1.0]  # the death at 2.0 and the infinite bar are not reached yet


def test_strip_shades_the_largest_gap():
    values = np.array([0.0, 0.2, 0.3, 1.7, 1.9])
    fig = plots.values_strip_figure(values, rf=1.4)
    band = fig.layout.shapes[0]
    assert (band.x0, band.x1) == (0.3, 1.7)  # oracle: the widest neighbour gap by eye
    assert "rf = 1.4" in " ".join(a.text for a in fig.layout.annotations)


def test_plan_cuts_and_the_distribution_marks_follow_the_selection():
    from types import SimpleNamespace

    from obce_core.verdicts import neuron_verdicts, plan_cuts

    # A hand-made selection: layer 0 removes FFN units 0, 1, 2 (the lowest rf), layer 1 removes
    # FFN units 5 and 9 and query/key pair 1 (not the lowest rf: a control scorer's choice).
    removed = {(0, "ffn"): [0, 1, 2], (1, "ffn"): [5, 9], (0, "qk"): [], (1, "qk"): [1]}
    selection = SimpleNamespace(num_layers=2, removed=lambda layer, group: np.array(removed.get((layer, group), []), int))
    rows = [{"layer": layer, "component": c, "neuron": k, "rf": float(k + layer)}
            for layer in range(2) for c in ("query", "intermediate", "output") for k in range(10)]
    table = pd.DataFrame(rows)
    marked = neuron_verdicts(selection, table)
    assert set(marked[marked["pruned"]].apply(lambda r: (r.layer, r.component, r.neuron), axis=1)) == {
        (0, "intermediate", 0), (0, "intermediate", 1), (0, "intermediate", 2), (1, "intermediate", 5),
        (1, "intermediate", 9), (1, "query", 1)}
    cuts = plan_cuts(selection, table).set_index(["layer", "component"])
    assert cuts.loc[(0, "intermediate"), "rf_cut"] == 2.0 and cuts.loc[(0, "intermediate"), "kept_below"] == 0
    assert cuts.loc[(1, "intermediate"), "rf_cut"] == 10.0 and cuts.loc[(1, "intermediate"), "kept_below"] == 8  # rf 1..9 but 6
    assert cuts.loc[(0, "query"), "n_removed"] == 0
    fig = plots.rf_distribution_figure(table, plan_cuts(selection, table))
    marks = [t for t in fig.data if t.type == "scatter"]
    assert len(marks) == 2  # query and intermediate; output feeds a LayerNorm and is kept
    assert all(t.marker.color == plots.HIGHLIGHT_COLOR for t in marks)
    assert sorted(marks[1].y) == [2.0, 10.0] and list(marks[0].y) == [2.0]  # intermediate; query (layer 1 only)
    rank = plots.rf_rank_figure(marked[(marked["layer"] == 0) & (marked["component"] == "intermediate")].assign(
        rank=range(10), rf_ties=1))
    assert [s.x0 for s in rank.layout.shapes] == [2.5]  # the three lowest ranks removed: one clean cut
    rank = plots.rf_rank_figure(marked[(marked["layer"] == 1) & (marked["component"] == "intermediate")].assign(
        rank=range(10), rf_ties=1))
    assert not rank.layout.shapes  # removed neurons 5 and 9 are not the lowest ranks: no single line


def test_learn_figure_counts_components_like_a_graph_oracle():
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial.distance import pdist, squareform

    pts = np.random.default_rng(3).normal(size=(15, 2))
    for r in (0.0, 0.2, 0.5, 5.0):
        fig = plots.learn_figure(pts, r)
        touching = squareform(pdist(pts)) <= 2 * r  # discs of radius r touch
        n_comp = connected_components(touching, directed=False)[0]
        assert fig.layout.title.text.endswith(f"{n_comp} component{'s' if n_comp != 1 else ''}")
        assert len(fig.layout.shapes) == 15


def test_the_neuron_view_lists_the_samples_on_both_sides_of_the_gap(app):
    """Token mode 'all': the lists below/above the gap are the tokens nearest the gap (numpy oracle),
    each with its token; the lists, the tokens in context and the CSV download are shown."""
    app.radio(key="_w_token").set_value("all").run()
    _score(app, 8)
    app.switch_page(PERSISTENCE_PAGE).run()
    _clean(app)
    run = app.session_state["scored"]
    layer, component, neuron = app.session_state["layer"], app.session_state["component"], app.session_state["neuron"]
    values = run.scores.values(layer, component, neuron).astype(np.float64)
    order = np.argsort(values, kind="stable")
    cut = int(np.argmax(np.diff(values[order])[::-1]))  # from the top: the highest of equal largest gaps
    cut = len(values) - 2 - cut
    below, above = values[order[: cut + 1]][::-1][:5], values[order[cut + 1:]][:5]
    lists = [d.value for d in app.table if "token" in d.value.columns]
    assert len(lists) == 4  # below gap, above gap, bottom, top
    np.testing.assert_allclose(lists[0]["value"], below, rtol=1e-6)
    np.testing.assert_allclose(lists[1]["value"], above, rtol=1e-6)
    np.testing.assert_allclose(lists[3]["value"], np.sort(values)[::-1][:5], rtol=1e-6)
    assert all(isinstance(t, str) and t for t in lists[0]["token"])
    assert len(app.get("html")) >= 1  # tokens in context
    assert "Download these lists (CSV)" in {d.label for d in app.get("download_button")}


def test_a_link_carries_every_scoring_setting_even_the_defaults(app):
    _clean(app)
    params = dict(app.query_params)
    assert {k: params.get(k) for k in ("model", "data", "n", "seed", "token", "max_length")} == {
        "model": "default", "data": "demo", "n": "128", "seed": "0", "token": "cls", "max_length": "128"}
    assert "task" not in params  # only GLUE texts have a task


def test_a_cold_server_restores_a_link_from_the_disk_cache(app):
    """A new session on a restarted server (the in-memory store emptied) given a link whose scores
    are on disk shows them without asking to score."""
    from obce_dashboard import session

    session._score_store.clear()  # an earlier test's run in memory would skip this test's disk cache
    _score(app, 16)
    app.switch_page(PERSISTENCE_PAGE).run()
    link = {k: v for k, v in app.query_params.items()}
    before = app.session_state["scored"].scores.table
    session._score_store.clear()  # what a restart leaves: the disk cache only

    cold = AppTest.from_file(APP, default_timeout=TIMEOUT)
    cold.query_params = link
    cold.run()
    cold.switch_page(PERSISTENCE_PAGE).run()
    _clean(cold)
    assert not any("Nothing is scored yet" in i.value for i in cold.info)
    assert any("neuron" in m.value and "rf = " in m.value for m in cold.markdown)
    pd.testing.assert_frame_equal(cold.session_state["scored"].scores.table, before)


def test_an_upload_link_says_it_cannot_be_restored(monkeypatch):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"data": "upload", "n": "16"}
    at.run()
    at.switch_page(PERSISTENCE_PAGE).run()
    assert not at.exception
    assert any("cannot bring them back" in w.value and "Upload the same file again" in w.value for w in at.warning)
