"""The Persistence page's attribution panel under AppTest: nothing runs before the click; after it,
the numbers shown are the core's on the same texts and plan (computed here directly as the oracle)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from obce_core import load_model
from obce_core.attribution import AttributionSettings, SentenceObjective, agreement_table, unit_attribution, with_scorers
from obce_core.evidence.embedding import sentence_pooling
from obce_core.pruning import PruningPlan
from obce_core.scoring.texts import subsample
from obce_dashboard.attribution_ui import PAGE_RESAMPLES
from obce_dashboard.background import background
from tests.conftest import save_tiny_bert
from tests.test_app import APP, PERSISTENCE_PAGE, TIMEOUT, _clean, _score


def test_the_panel_computes_on_a_click_and_shows_the_cores_numbers(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    monkeypatch.setenv("OBCE_MODEL_DIRS", str(tmp_path))
    save_tiny_bert(tmp_path / "tiny", tokenizer, seed=1)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.radio(key="_w_model_kind").set_value("local").run()
    at.text_input(key="_w_model_text").input(str(tmp_path / "tiny")).run()
    _score(at, 32)
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)
    assert not [c for c in at.caption if c.value.startswith("Attribution")]  # nothing before the click
    assert "attribution_table" not in [getattr(d, "key", None) for d in at.dataframe]
    at.number_input(key="attribution_n").set_value(32)
    at.number_input(key="attribution_steps").set_value(2).run()
    next(b for b in at.button if b.label == "Compute the attributions").click().run()
    assert background().wait_idle(120)
    at.run()
    _clean(at)

    # Oracle: the core on the same 32 scored texts, the page's pooling and the Prune page's default plan.
    run = at.session_state["scored"]
    model, tok = load_model(str(tmp_path / "tiny"), device="cpu")
    objective = SentenceObjective.build(model, tok, subsample(list(run.texts), 32, 0), sentence_pooling(model))
    table = with_scorers(unit_attribution(model, objective, AttributionSettings(steps=2)), model, run.scores)
    plan = PruningPlan(ffn=30, qk=30, v=30, skip_layers=1)  # the Prune page's defaults (settings.SETTINGS)
    agreement = agreement_table(table, model, run.scores, plan=plan, resamples=PAGE_RESAMPLES)

    shown = next(d for d in at.dataframe if "rf" in d.value.columns and "std" in d.value.columns).value
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
    assert isinstance(shown, pd.DataFrame)
