"""The noise panel's numbers in core: a plan's percentiles, ranking_stability rows read at them, medians.

Hand-made ``ranking_stability`` rows with known values are the oracle: every cell of the summary
and every median is written out here.
"""

import math

import numpy as np
import pandas as pd
import pytest

from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.stability import (STABILITY_FALLBACK_PERCENT, median_spearman, plan_percents,
                                         stability_summary)


def test_plan_percents_follow_overrides_and_skipped_layers():
    plan = PruningPlan(qk=25, v=40, ffn=30, skip_layers=1, layers={2: {"ffn": 60, "v": 0}})
    assert plan_percents(plan, 3) == {
        (0, "ffn"): 50.0, (0, "qk"): 50.0, (0, "v"): 50.0,  # skipped: compared at the fallback
        (1, "ffn"): 30, (1, "qk"): 25, (1, "v"): 40,
        (2, "ffn"): 60, (2, "qk"): 25, (2, "v"): 50.0,  # an override of 0 removes nothing: the fallback
    }
    assert set(plan_percents(None, 2).values()) == {STABILITY_FALLBACK_PERCENT}
    assert set(plan_percents(plan, 1, fallback=10).values()) == {10}
    with pytest.raises(ValueError, match="num_layers"):
        plan_percents(plan, 0)


def _rows():
    """ranking_stability rows at percents 25 and 50 for 1 layer: spearman = percent/100 + scorer offset."""
    rows = []
    for percent in (25.0, 50.0):
        for group in ("ffn", "qk", "v"):
            for offset, scorer in enumerate(("rf", "std")):
                rows.append({"layer": 0, "group": group, "scorer": scorer, "percent": percent,
                             "spearman": percent / 100 + offset / 10, "overlap": 1 - percent / 100 - offset / 10,
                             "chance_overlap": percent / 100})
    return pd.DataFrame(rows)


def test_the_summary_reads_each_layer_and_group_at_its_own_percent():
    percents = {(0, "ffn"): 25.0, (0, "qk"): 50.0, (0, "v"): 25.0}
    summary = stability_summary(_rows(), percents, ["rf", "std"])
    assert summary.to_dict("records") == [
        {"layer": 0, "group": "ffn", "p": 25.0, "chance overlap": 0.25, "rf Spearman": 0.25, "rf overlap": 0.75,
         "std Spearman": 0.35, "std overlap": 0.65},
        {"layer": 0, "group": "qk", "p": 50.0, "chance overlap": 0.5, "rf Spearman": 0.5, "rf overlap": 0.5,
         "std Spearman": 0.6, "std overlap": 0.4},
        {"layer": 0, "group": "v", "p": 25.0, "chance overlap": 0.25, "rf Spearman": 0.25, "rf overlap": 0.75,
         "std Spearman": 0.35, "std overlap": 0.65},
    ]
    with pytest.raises(ValueError, match=r"layer 0, group 'qk' at percent 40 and scorer\(s\) \['rf', 'std'\]"):
        stability_summary(_rows(), {(0, "qk"): 40.0}, ["rf", "std"])


def test_medians_split_attention_from_ffn_and_skip_undefined_spearmans():
    summary = pd.DataFrame({
        "group": ["qk", "v", "qk", "ffn", "ffn"],
        "rf Spearman": [0.1, 0.4, np.nan, 0.9, 0.5],  # Q/K/V: median of 0.1, 0.4; FFN: of 0.9, 0.5
        "std Spearman": [np.nan, np.nan, np.nan, 0.2, 0.3],  # no defined Q/K/V value
    })
    medians = median_spearman(summary, ["rf", "std"]).set_index("scorer")
    assert medians.loc["rf", "qkv"] == pytest.approx(0.25) and medians.loc["rf", "ffn"] == pytest.approx(0.7)
    assert math.isnan(medians.loc["std", "qkv"]) and medians.loc["std", "ffn"] == pytest.approx(0.25)
