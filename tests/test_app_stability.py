"""The Persistence page's "How much of this ranking is noise?" panel, on the tiny saved model.

The oracle is ``obce_core.ranking_stability`` called directly on the run's texts with the run's
score settings, at the percentile the plan applies to each layer and group (``PruningPlan.percent``).
"""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from obce_core import PruningPlan, load_model, ranking_stability
from tests.test_app import APP, PERSISTENCE_PAGE, TIMEOUT, _clean


@pytest.fixture
def scored_on_tiny(tiny_model_dir, monkeypatch, one_torch_thread):
    """The app scored the tiny model on 16 demo texts, under a plan with a skipped layer and an override."""
    monkeypatch.setenv("OBCE_MODEL_DIRS", str(tiny_model_dir.parent))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"model": str(tiny_model_dir), "data": "demo", "n": "16", "scorer": "magnitude",
                       "qk": "25", "v": "40", "ffn": "30", "skip_layers": "1", "overrides": '{"1": {"ffn": 60}}'}
    at.run()
    next(b for b in at.button if b.label == "Score neurons").click().run()
    _clean(at)
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)
    return at


def test_the_stability_panel_shows_ranking_stabilitys_numbers(scored_on_tiny, tiny_model_dir):
    at = scored_on_tiny
    assert not any("rf Spearman" in df.value.columns for df in at.dataframe)  # nothing is scored twice until asked
    next(b for b in at.button if b.label.startswith("Measure it")).click().run()
    _clean(at)
    shown = next(df.value for df in at.dataframe if "rf Spearman" in df.value.columns)
    run = at.session_state["scored"]
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    plan = PruningPlan(qk=25, v=40, ffn=30, skip_layers=1, scorer="magnitude", layers={1: {"ffn": 60}})
    scorers = ["rf", "std", "flap", "magnitude"]  # the panel's three and the plan's scorer
    settings = run.scores.settings
    expected = {}
    for p in (25.0, 30.0, 40.0, 50.0, 60.0):
        expected[p] = ranking_stability(model, tokenizer, list(run.texts), scorers=scorers, percent=p, token=settings.token,
                                        max_length=settings.max_length, batch_size=settings.batch_size)
    assert len(shown) == 2 * 3  # layers x groups
    labels = {"query/key": "qk", "value": "v", "FFN": "ffn"}
    for row in shown.to_dict("records"):
        group = labels[row["group"]]
        p = plan.percent(row["layer"], group) or 50.0  # layer 0 is skipped: compared at 50 %
        assert row["p"] == p
        ref = expected[p]
        ref = ref[(ref["layer"] == row["layer"]) & (ref["group"] == group)].set_index("scorer")
        assert row["chance overlap"] == pytest.approx(ref["chance_overlap"].iloc[0])
        # What the plan does there, in words: layer 0 is skipped (its overlap is read at 50 %, not "p = 50").
        assert row["plan"] == ("skips this layer" if row["layer"] == 0 else f"removes {p:g} %")
        for scorer in scorers:
            # Spearman is shown to 2 decimals; one that does not exist is a blank cell (never "None").
            want = ref.loc[scorer, "spearman"]
            assert row[f"{scorer} Spearman"] == ("" if np.isnan(want) else f"{want:.2f}")
            np.testing.assert_allclose(row[f"{scorer} overlap"], ref.loc[scorer, "overlap"], equal_nan=True)
        assert row["magnitude Spearman"] == "1.00"  # weights do not read the texts: stable by construction
    reading = next(m.value for m in at.markdown if m.value.startswith("Median split-half Spearman here"))
    assert "benchmarks/RESULTS.md" in reading
    at.run()  # a rerun keeps the panel (cached), with no second click
    _clean(at)
    assert any("rf Spearman" in df.value.columns for df in at.dataframe)
