"""The plan search on the Prune page and on the command line, end to end, on a tiny task model.

Oracles: the job's own ``search_report.json`` and trail for what the page draws; ``load_plan`` and
a plain forward pass of the saved folder on the user's search file for the CLI; the page's plan in force (``current_plan``'s
session values) after **Use these percentiles here**.
"""

from __future__ import annotations

import json

import pytest

from conftest import GLUE_DIR, needs_glue
from obce_core import glue, jobs, load_model
from obce_core.pruning import PruningPlan, load_plan
from obce_core.search import SearchSettings, read_search_report
from test_app_prune_compare import PRUNE_PAGE, _clean, record_started_jobs, scored_app
from test_search import _forward_score, _task_model

pytestmark = needs_glue


@pytest.fixture
def workspace(glue_workspace):
    return glue_workspace


def test_prune_page_starts_a_search_draws_its_trail_and_loads_the_plan(workspace, tokenizer, monkeypatch):
    source = _task_model(workspace / "task_models" / "tiny-sst2", tokenizer)
    started = record_started_jobs(monkeypatch)
    at = scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    _clean(at)
    assert any("No search of this model yet" in c.value for c in at.caption)
    at.number_input(key="search_tolerance").set_value(2.0)  # inside the form: sent with its button
    at.number_input(key="search_confidence").set_value(95.0)
    at.selectbox(key="search_split").set_value("dev-halves")
    next(b for b in at.button if b.label == "Find the smallest plan").click().run()
    _clean(at)
    spec = jobs.read_spec(started[0] / jobs.SPEC_FILE)
    assert isinstance(spec, jobs.SearchJobSpec) and spec.settings.tolerance == 2.0 and spec.task == "sst2"
    assert spec.settings.confidence == 95.0 and spec.settings.split == "dev-halves"
    assert spec.model == str(source.resolve()) and spec.out.startswith(str((workspace / "searches").resolve()))

    # The job, made small, run here in this process; the page then draws its trail and report.
    small = jobs.SearchJobSpec(model=str(source), task="sst2", out=spec.out, search_size=80, score_texts=16,
                               settings=SearchSettings(tolerance=4.0, compensation="none", levels=[0, 50, 90],
                                                       sensitivity_levels=[90], exhaustive_limit=0, split="dev-halves"))
    (started[0] / jobs.SPEC_FILE).write_text(small.absolute().to_json())
    report = jobs.run_job(started[0])
    assert jobs.job_status(started[0]).state == "done"
    at.run()
    _clean(at)
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "search split" in c.proto.spec)
    drawn = sorted((x, y) for t in chart["data"] if t["name"] != "best within tolerance" for x, y in zip(t["x"], t["y"]))
    expected = sorted((100 * r["cost_removed"], 100 * r["main_score"]) for r in report.rows)
    assert len(drawn) == len(expected) and [v for p in drawn for v in p] == pytest.approx([v for p in expected for v in p])
    table = next(d.value for d in at.dataframe if "dev" in d.value.columns)
    assert table.loc["found plan", "dev"] == pytest.approx(100 * report.dev_found["main_score"])
    assert table.loc["original", "search split"] == pytest.approx(100 * report.search_original["main_score"])
    assert table.loc["found plan", "dev half never searched"] == pytest.approx(100 * report.check_found["main_score"])
    said = " ".join(m.value for m in at.markdown)
    assert "judged on one half of the sst2 dev split (80 of its 872 examples, seed 1; asked for)" in said
    assert "the other half of dev (436 examples the search never read)" in said
    drops = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "95 % interval" in c.proto.spec)
    intervals = drops["data"][0]
    assert intervals["y"] == ["search examples", "promised, fresh examples", "dev, whole", "dev half never searched"]
    shown = (report.search_drop, report.promise, report.dev_drop, report.check_drop)
    assert intervals["x"] == pytest.approx([d["drop"] for d in shown])
    assert [x - m for x, m in zip(intervals["x"], intervals["error_x"]["arrayminus"])] == pytest.approx(
        [d["low"] for d in shown])

    next(b for b in at.button if b.key == "use_search_plan").click().run()
    _clean(at)
    ss = at.session_state
    in_force = PruningPlan(ffn=ss["ffn"], qk=ss["qk"], v=ss["v"], skip_layers=ss["skip_layers"], scorer=ss["scorer"],
                           compensation=ss["compensation"], layers={int(k): v for k, v in json.loads(ss["overrides"]).items()})
    assert [in_force.percent(i, g) for i in range(2) for g in ("qk", "v", "ffn")] == \
        [PruningPlan.from_dict(report.plan).percent(i, g) for i in range(2) for g in ("qk", "v", "ffn")]


def test_cli_search_saves_a_model_that_scores_what_it_reports(tmp_path, tokenizer, one_torch_thread, capsys):
    from obce_core.cli import main

    source = _task_model(tmp_path / "task", tokenizer)
    out = tmp_path / "found"
    rows = glue.load_task("sst2", "validation", GLUE_DIR, n=210, seed=2)  # examples of the user's own
    (tmp_path / "mine.tsv").write_text("sentence\tlabel\n" + "".join(
        f"{t}\t{['negative', 'positive'][y]}\n" for t, y in zip(rows["sentence"], rows["label"])))
    code = main(["search", "--model", str(source), "--task", "sst2", "--out", str(out), "--glue-dir", str(GLUE_DIR),
                 "--tolerance", "4", "--levels", "0,50,90", "--score-texts", "16", "--confidence", "95",
                 "--search-data", str(tmp_path / "mine.tsv"), "--compensation", "none", "--scorer", "magnitude"])
    printed = capsys.readouterr().out
    assert code == 0
    report = read_search_report(out)
    assert report.summary() in printed and "Percent removed per layer and group" in printed
    assert "210 labelled sst2 examples from mine.tsv" in printed and "at 95 % confidence" in printed
    assert load_plan(out).to_dict() == report.plan and report.settings.scorer == "magnitude"
    assert report.search_kind == "file" and report.settings.confidence == 95
    saved, tok = load_model(str(out), device="cpu")
    assert _forward_score(saved, tok, "sst2", rows, max_length=128) == pytest.approx(report.search_found["main_score"])
    assert report.search_drop["upper"] <= 4 + 1e-9
    for bad in ("50", "100"):  # refused by argparse, before any work
        with pytest.raises(SystemExit) as info:
            main(["search", "--model", str(source), "--task", "sst2", "--out", str(tmp_path / "x"), "--confidence", bad])
        assert info.value.code == 2 and "argument --confidence: expected a finite number in (50, 100)" in \
            capsys.readouterr().err
    # The same folder again: refused without --overwrite, before any work.
    assert main(["search", "--model", str(source), "--task", "sst2", "--out", str(out), "--glue-dir", str(GLUE_DIR)]) == 2
    assert "--overwrite" in capsys.readouterr().err
