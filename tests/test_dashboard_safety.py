"""The dashboard as a careless or hostile visitor meets it: what it binds to, which folders a
visitor may name (models to load, names to save under) and out-of-range values in a link.

Oracles: Streamlit's own config API reading the shipped file, the file system after the attempt,
and the valid ranges stated by hand (all-MiniLM has 6 layers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from obce_dashboard.paths import ModelSourceRefused, SaveNameRefused, check_model_source, save_target
from obce_dashboard.settings import parse_overrides

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("OBCE_WORKSPACE", str(ws))
    monkeypatch.delenv("OBCE_MODEL_DIRS", raising=False)
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    return ws


def test_the_shipped_config_binds_to_localhost_without_telemetry(monkeypatch):
    from streamlit import config

    monkeypatch.chdir(ROOT)  # streamlit reads .streamlit/config.toml from the folder it runs in
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("server.address") == "127.0.0.1"
        assert config.get_option("browser.gatherUsageStats") is False
        assert config.get_option("server.fileWatcherType") == "none"
        assert 0 < config.get_option("server.maxUploadSize") <= 20
        # "viewer" hides Streamlit's developer options, the Deploy button among them (config.py's
        # description of client.toolbarMode); "auto" would show it on localhost.
        assert config.get_option("client.toolbarMode") == "viewer"
        assert config.get_config_options()["client.toolbarMode"].where_defined.endswith(
            os.path.join(".streamlit", "config.toml"))
        assert config.get_config_options()["server.address"].where_defined.endswith(
            os.path.join(".streamlit", "config.toml"))
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)


@pytest.mark.parametrize("name", ["..", "../x", "~", "~/x", "/etc", "/tmp/x", "a/b", "a\\b", ".", "", " ", ".hidden"])
def test_save_names_that_are_paths_are_refused(workspace, name):
    with pytest.raises(SaveNameRefused, match="NAME, not a path"):
        save_target(name, workspace)


def test_a_save_name_through_a_symlink_out_of_the_workspace_is_refused(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "pruned").mkdir()
    (workspace / "pruned" / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SaveNameRefused, match="outside the workspace"):
        save_target("out", workspace)
    assert save_target("qk30-v30.ffn_30", workspace) == workspace / "pruned" / "qk30-v30.ffn_30"
    assert list(outside.iterdir()) == []


def test_model_paths_outside_the_allowed_folders_get_one_message(workspace, tmp_path, monkeypatch):
    messages = set()
    for source in ("/etc", "/nonexistent", "../../etc", "~", str(tmp_path)):
        with pytest.raises(ModelSourceRefused) as refused:
            check_model_source(source)
        messages.add(str(refused.value).replace(repr(source), "SOURCE"))
    assert len(messages) == 1 and "OBCE_MODEL_DIRS" in messages.pop()
    assert check_model_source(str(workspace / "pruned" / "x")) == str(workspace / "pruned" / "x")
    assert check_model_source("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"  # a hub id
    assert check_model_source("") == "default"
    allowed = tmp_path / "models"
    allowed.mkdir()
    (workspace / "escape").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ModelSourceRefused):
        check_model_source(str(workspace / "escape"))  # resolves outside the workspace
    monkeypatch.setenv("OBCE_MODEL_DIRS", os.pathsep.join(["/nowhere", str(allowed)]))
    assert check_model_source(str(allowed / "m")) == str(allowed / "m")


def _first_error(query: dict) -> str:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = query
    at.run()
    assert not at.exception
    return at.error[0].value


def test_a_model_path_in_the_link_cannot_probe_the_disk(workspace):
    """/etc exists and /nonexistent does not: the visitor cannot tell them apart."""
    etc, missing = _first_error({"model": "/etc"}), _first_error({"model": "/nonexistent"})
    assert etc.replace("/etc", "X") == missing.replace("/nonexistent", "X")
    assert "OBCE_MODEL_DIRS" in etc


def test_out_of_range_values_in_a_link_are_named_not_clamped(workspace):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"n": "16", "skip_layers": "99", "overrides": '{"2": {"ffn": 150}}', "qk": "120"}
    at.run()
    text = " ".join(w.value for w in at.warning)
    assert "overrides=" in text and "[0.0, 95.0]" in text  # 150 % refused with the valid range
    assert "qk=120" in text and "[0.0, 95.0]" in text
    at.button[0].click().run()
    at.switch_page("pages/3_Prune.py").run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "skip_layers=99" in w.value)
    assert "from 0 to 6" in warning  # all-MiniLM has 6 layers
    assert at.number_input(key="_w_skip_layers").value == 1  # the default, not 6 (which prunes nothing)
    assert at.session_state["overrides"] == "{}" and at.session_state["qk"] == 30.0


def test_overrides_out_of_range_are_refused_with_the_range():
    with pytest.raises(ValueError, match=r"\[0.0, 95.0\]"):
        parse_overrides("overrides", '{"2": {"ffn": 150}}')
    with pytest.raises(ValueError, match="JSON"):
        parse_overrides("overrides", "{oops")
    assert parse_overrides("overrides", '{"3": {"ffn": 70}, "1": {"qk": 0}}') == '{"1":{"qk":0.0},"3":{"ffn":70.0}}'
