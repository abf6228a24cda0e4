"""The Persistence page's "another domain" panel, on the tiny saved model.

The oracle is ``obce_core.pruning.domain.domain_shift`` called directly on the run's texts and the
other source's, read at the percentile the plan applies to each layer and group.
"""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from obce_core import PruningPlan, load_model
from obce_core.pruning.domain import domain_shift, text_source
from tests.conftest import GLUE_DIR, needs_glue
from tests.test_app import APP, PERSISTENCE_PAGE, TIMEOUT, _clean


@needs_glue
def test_domain_panel_shows_domain_shifts_numbers(tiny_model_dir, monkeypatch, one_torch_thread):
    monkeypatch.setenv("OBCE_MODEL_DIRS", str(tiny_model_dir.parent))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params = {"model": str(tiny_model_dir), "data": "demo", "n": "16", "qk": "25", "ffn": "30", "v": "40",
                       "skip_layers": "1"}
    at.run()
    next(b for b in at.button if b.label == "Score neurons").click().run()
    _clean(at)
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))  # after scoring: the panel offers GLUE's sentences
    at.switch_page(PERSISTENCE_PAGE).run()
    _clean(at)
    assert not any("rf cross Spearman" in df.value.columns for df in at.dataframe)  # nothing scored until asked
    at.selectbox(key="domain_source").set_value("glue:sst2").run()
    _clean(at)
    next(b for b in at.button if b.label.startswith("Compare with GLUE")).click().run()
    _clean(at)
    shown = next(df.value for df in at.dataframe if "rf cross Spearman" in df.value.columns)
    run = at.session_state["scored"]
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    other, _ = text_source("glue:sst2", n=8, seed=0, glue_dir=GLUE_DIR)
    s = run.scores.settings
    ref = domain_shift(model, tokenizer, list(run.texts), other, scorers=["rf", "std"], percents=[25.0, 30.0, 40.0, 50.0],
                       token=s.token, max_length=s.max_length, batch_size=s.batch_size)
    plan = PruningPlan(qk=25, ffn=30, v=40, skip_layers=1)  # layer 0 skipped: compared at 50 %
    labels = {"query/key": "qk", "value": "v", "FFN": "ffn"}
    assert len(shown) == 2 * 3
    for row in shown.to_dict("records"):
        group = labels[row["group"]]
        p = plan.percent(row["layer"], group) or 50.0
        assert row["p"] == p
        at_p = ref[(ref["layer"] == row["layer"]) & (ref["group"] == group) & (ref["percent"] == p)].set_index("scorer")
        for scorer in ("rf", "std"):
            np.testing.assert_allclose(row[f"{scorer} cross Spearman"], at_p.loc[scorer, "cross_spearman"], equal_nan=True)
            np.testing.assert_allclose(row[f"{scorer} split-half overlap"], at_p.loc[scorer, "half_overlap"], equal_nan=True)
    assert any(m.value.startswith("Median Spearman, split-half → cross-source") for m in at.markdown)
