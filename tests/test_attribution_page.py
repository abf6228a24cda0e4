"""The Persistence page's attribution panel under AppTest: nothing runs before the click; after it,
the numbers shown are the core's on the same texts and plan (computed here directly as the oracle)."""

from __future__ import annotations

import re

import numpy as np
from streamlit.testing.v1 import AppTest

from obce_core import load_model, score_model
from obce_core.attribution import AttributionSettings, SentenceObjective, agreement_table, unit_attribution, with_scorers
from obce_core.evidence.embedding import sentence_pooling
from obce_core.pruning import PruningPlan
from obce_core.scoring.texts import demo_sentences, subsample
from obce_dashboard.attribution_ui import PAGE_RESAMPLES
from obce_dashboard.background import background
from obce_dashboard.session import ScoredRun
from tests.conftest import save_tiny_bert
from tests.test_app import APP, PERSISTENCE_PAGE, TIMEOUT, _clean


def test_the_panel_computes_on_a_click_and_shows_the_cores_numbers(tmp_path, tokenizer, monkeypatch, one_torch_thread):
    monkeypatch.setenv("OBCE_MODEL_DIRS", str(tmp_path))
    save_tiny_bert(tmp_path / "tiny", tokenizer, seed=1)
    model, tok = load_model(str(tmp_path / "tiny"), device="cpu")
    texts = demo_sentences()[:40]
    # The scored run the Model & data page would make (its own tests cover that page's flow).
    scored = ScoredRun(scores=score_model(model, tok, texts), texts=tuple(texts), model_source=str(tmp_path / "tiny"),
                       data_label="demo", settings={}, seconds=0.0, key="attribution-page-test")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["scored"] = scored
    at.run()
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)
    assert not [c for c in at.caption if c.value.startswith("Attribution")]  # nothing before the click
    assert not [c for c in at.get("plotly_chart") if "attribution" in c.proto.spec]
    at.number_input(key="attribution_n").set_value(32)
    at.number_input(key="attribution_steps").set_value(2).run()
    at.button(key="attribution_run").click().run()
    assert background().wait_idle(120)
    at.run()
    _clean(at)

    # Oracle: the core on the same 32 scored texts, the page's pooling and the Prune page's default plan.
    run = scored
    objective = SentenceObjective.build(model, tok, subsample(list(run.texts), 32, 0), sentence_pooling(model))
    table = with_scorers(unit_attribution(model, objective, AttributionSettings(steps=2)), model, run.scores)
    plan = PruningPlan(ffn=30, qk=30, v=30, skip_layers=1)  # the Prune page's defaults (settings.SETTINGS)
    agreement = agreement_table(table, model, run.scores, plan=plan, resamples=PAGE_RESAMPLES)

    shown = next(d for d in at.dataframe if {"group", "rf", "magnitude"} <= set(d.value.columns)).value
    assert len(shown) == len(agreement[agreement["scorer"] == "rf"]) == 6  # 2 layers x 3 groups
    expected = agreement[agreement["scorer"] == "rf"].reset_index(drop=True)
    for cell, rho in zip(shown["rf"], expected["spearman"]):
        assert cell == "n/a" if np.isnan(rho) else cell.startswith(f"{rho:+.2f} [")
    layer, neuron = at.session_state["layer"], at.session_state["neuron"]
    line = next(c.value for c in at.caption if c.value.startswith("Attribution"))
    part = table[(table["layer"] == layer) & (table["group"] == "ffn")]
    value = float(part.loc[part["unit"] == neuron, "attribution"].iloc[0])
    assert re.search(r"\*\*(.+?)\*\*", line).group(1) == f"{value:.3g}"
    assert f"rank {int((part['attribution'] < value).sum())} of {len(part)}" in line
    assert at.get("plotly_chart") and any("attribution" in c.proto.spec for c in at.get("plotly_chart"))
