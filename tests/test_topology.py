"""Per-layer persistence diagrams (obce_core.topology), the `layers` CLI and the Layer topology page.

Oracles: a manual per-text forward pass (no batching, no padding) for the clouds; the core's exact
minimum-spanning-tree H0 (``zero_dim_persistence``) and gudhi's full Rips complex (no edge cap, no
edge collapse) for the diagrams; the closed form of a circle's Vietoris-Rips loop; hand-made
shifts for the bottleneck distance; gudhi's own ``bottleneck_distance`` on the finite bars.
"""

from __future__ import annotations

import re
from pathlib import Path

import gudhi
import numpy as np
import pytest
import torch

from obce_core import PruningPlan, load_model, prune, score_model, zero_dim_persistence
from obce_core.scoring import MemoryBudgetError, resolve_texts
from obce_core.topology import (
    LayerDiagrams,
    bottleneck,
    comparison_table,
    consecutive_table,
    distance_matrix,
    layer_clouds,
    layer_diagrams,
    rips_diagram,
)

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY_PAGE = "pages/6_Layer_topology.py"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models run many times faster on one thread on this shared machine."""


def _finite(diagram, dim):
    d = diagram[diagram[:, 2] == dim]
    return d[np.isfinite(d[:, 1]), :2]


def _gudhi_full(d: np.ndarray, dim: int) -> np.ndarray:
    """gudhi's Rips persistence with every edge and triangle (no cap, no collapse), sorted bars."""
    tree = gudhi.RipsComplex(distance_matrix=d).create_simplex_tree(max_dimension=2)
    tree.persistence(min_persistence=-1)
    bars = np.asarray(tree.persistence_intervals_in_dimension(dim)).reshape(-1, 2)
    if dim == 1:
        bars = bars[bars[:, 1] > bars[:, 0]]
    return bars[np.lexsort((bars[:, 1], bars[:, 0]))]


# ---------------------------------------------------------------------------------------------
# Clouds and diagrams
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_clouds_equal_a_manual_forward_pass_per_text(tiny_bert, tokenizer, sentences, pooling):
    clouds = layer_clouds(tiny_bert, tokenizer, sentences, pooling=pooling, batch_size=5)
    assert clouds.shape == (3, len(sentences), 24)  # embeddings + 2 layers
    with torch.no_grad():
        for i, text in enumerate(sentences):
            states = tiny_bert(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            for k, h in enumerate(states):
                want = h[0, 0] if pooling == "cls" else h[0].mean(0)
                np.testing.assert_allclose(clouds[k, i], want.numpy(), atol=1e-5, rtol=1e-5)


def test_h0_of_every_layer_is_the_minimum_spanning_tree_of_its_cloud(tiny_bert, tokenizer, sentences):
    texts = sentences + sentences[:3]  # three duplicated texts: three zero-length H0 bars per layer
    result = layer_diagrams(tiny_bert, tokenizer, texts, pooling="mean")
    assert result.layers == (0, 1, 2) and [result.name(k) for k in result.layers] == ["embeddings", "L0", "L1"]
    for layer in result.layers:
        d = result.diagrams[layer]
        h0 = d[d[:, 2] == 0]
        assert len(h0) == len(texts) and np.isinf(h0[:, 1]).sum() == 1
        deaths = np.sort(_finite(d, 0)[:, 1])
        np.testing.assert_allclose(deaths, zero_dim_persistence(result.clouds[layer].astype(np.float64)), atol=1e-9)
        assert (deaths == 0).sum() >= 3


def test_cls_embeddings_are_identical_and_get_the_trivial_diagram(tiny_bert, tokenizer, sentences):
    result = layer_diagrams(tiny_bert, tokenizer, sentences, pooling="cls")
    assert result.identical == (0,)
    d = result.diagrams[0]
    assert len(d) == len(sentences) and (d[:-1, 1] == 0).all() and np.isinf(d[-1, 1])
    assert bool(result.summary().set_index("layer").loc[0, "identical"])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_h0_and_h1_equal_a_full_gudhi_rips_complex_without_cap(metric):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(size=(30, 4)), np.c_[np.cos(np.linspace(0, 6, 20)), np.sin(np.linspace(0, 6, 20)),
                                                      np.zeros((20, 2))] * 3 + 5])
    if metric == "cosine":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = np.clip(1 - unit @ unit.T, 0, None)
        np.fill_diagonal(d, 0)
    else:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(distance_matrix(x, metric), d, atol=1e-12)
    diagram = rips_diagram(x, metric=metric)
    for dim in (0, 1):
        ours = diagram[diagram[:, 2] == dim, :2]
        np.testing.assert_allclose(ours, _gudhi_full(d, dim), atol=1e-9)
    assert (diagram[:, 2] == 1).sum() > 0  # the loop of the circle part, at least


def test_a_circle_has_exactly_one_long_loop():
    n = 24  # evenly spaced on the unit circle: the loop is born at the side, dies when triangles of 8 steps appear
    angles = 2 * np.pi * np.arange(n) / n
    x = np.c_[np.cos(angles), np.sin(angles), np.zeros(n)]
    diagram = rips_diagram(x)
    h1 = diagram[diagram[:, 2] == 1]
    assert len(h1) == 1
    np.testing.assert_allclose(h1[0, 0], 2 * np.sin(np.pi / n), rtol=1e-9)
    np.testing.assert_allclose(h1[0, 1], np.sqrt(3), rtol=1e-9)


def test_cosine_merges_are_the_minimum_spanning_tree_of_the_cosine_distances(tiny_bert, tokenizer, sentences):
    result = layer_diagrams(tiny_bert, tokenizer, sentences, pooling="mean", metric="cosine", max_dimension=0)
    for layer in result.layers:
        lengths = np.sort([e[2] for e in result.merge_edges(layer)])
        np.testing.assert_allclose(lengths, np.sort(_finite(result.diagrams[layer], 0)[:, 1]), atol=1e-9)


def test_the_subsample_is_seeded_reported_and_made_of_the_same_points(tiny_bert, tokenizer, sentences):
    full = layer_diagrams(tiny_bert, tokenizer, sentences, max_dimension=0, pooling="mean")
    part = layer_diagrams(tiny_bert, tokenizer, sentences, max_dimension=0, pooling="mean", max_points=6, seed=3)
    assert not full.subsampled and part.subsampled and part.n_points == 6 and part.n_texts == len(sentences)
    assert len(set(part.text_indices.tolist())) == 6
    for layer in part.layers:
        np.testing.assert_allclose(part.clouds[layer], full.clouds[layer][part.text_indices], atol=1e-5)
    other = layer_diagrams(tiny_bert, tokenizer, sentences, max_dimension=0, pooling="mean", max_points=6, seed=4)
    assert not np.array_equal(other.text_indices, part.text_indices)


# ---------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------


def test_bottleneck_to_itself_is_zero_and_to_a_shifted_copy_is_the_shift():
    rng = np.random.default_rng(0)
    births = rng.uniform(0, 1, 15)
    h1 = np.c_[births, births + rng.uniform(0.5, 1.0, 15), np.ones(15)]  # every bar longer than 2 x shift
    h0 = np.c_[np.zeros(10), rng.uniform(0.5, 2, 10), np.zeros(10)]
    h0[-1, 1] = np.inf
    diagram = np.concatenate([h0, h1])
    for dim in (0, 1):
        assert bottleneck(diagram, diagram, dim) == 0.0
    shifted = diagram.copy()
    shifted[:, :2] += 0.125
    for dim in (0, 1):
        assert bottleneck(diagram, shifted, dim) == pytest.approx(0.125, abs=1e-12)
    # the finite part is gudhi's own distance
    other = np.c_[rng.uniform(0, 1, 8), rng.uniform(1, 2, 8), np.ones(8)]
    assert bottleneck(diagram, other, 1) == pytest.approx(gudhi.bottleneck_distance(h1[:, :2], other[:, :2]))


def test_infinite_bars_are_matched_only_to_infinite_bars():
    a = np.array([[0, 1, 0], [0, np.inf, 0]])
    assert bottleneck(a, np.array([[0, 1, 0]]), 0) == np.inf
    later = np.array([[0, 1, 0], [0.25, np.inf, 0]])
    assert bottleneck(a, later, 0) == pytest.approx(0.25)


def test_tables_equal_gudhi_on_the_layer_pairs(tiny_bert, tokenizer, sentences):
    result = layer_diagrams(tiny_bert, tokenizer, sentences, pooling="mean")
    table = consecutive_table(result)
    summary = result.summary()
    assert np.isnan(table.loc[0, "bottleneck_h0"])
    for row in range(1, len(table)):
        a, b = result.diagrams[row - 1], result.diagrams[row]
        for dim in (0, 1):
            want = gudhi.bottleneck_distance(_finite(a, dim), _finite(b, dim))
            assert table.loc[row, f"bottleneck_h{dim}"] == pytest.approx(want)
            assert summary.loc[row, f"bottleneck_prev_h{dim}"] == pytest.approx(want)
    for row, layer in enumerate(result.layers):
        assert summary.loc[row, "h1_bars"] == (result.diagrams[layer][:, 2] == 1).sum()


def test_original_vs_pruned_distances(tiny_bert, tokenizer, sentences):
    scores = score_model(tiny_bert, tokenizer, sentences, use_cache=False)
    untouched, _ = prune(tiny_bert, scores, PruningPlan())  # removes nothing: the same function
    pruned, _ = prune(tiny_bert, scores, PruningPlan(ffn=60, v=50, skip_layers=1))
    original = layer_diagrams(tiny_bert, tokenizer, sentences, pooling="mean")
    same = comparison_table(original, layer_diagrams(untouched, tokenizer, sentences, pooling="mean"))
    assert (same[["bottleneck_h0", "bottleneck_h1"]].to_numpy() == 0).all()
    moved = layer_diagrams(pruned, tokenizer, sentences, pooling="mean")
    table = comparison_table(original, moved)
    assert table.loc[0:1, ["bottleneck_h0", "bottleneck_h1"]].to_numpy().max() == 0  # embeddings and L0 untouched
    for dim in (0, 1):
        want = gudhi.bottleneck_distance(_finite(original.diagrams[2], dim), _finite(moved.diagrams[2], dim))
        assert table.loc[2, f"bottleneck_h{dim}"] == pytest.approx(want)
    assert table.loc[2, "bottleneck_h0"] > 0
    with pytest.raises(ValueError, match="differ in pooling"):
        comparison_table(original, layer_diagrams(pruned, tokenizer, sentences, pooling="cls"))
    with pytest.raises(ValueError, match="not on the same texts"):
        comparison_table(original, layer_diagrams(pruned, tokenizer, sentences[:8], pooling="mean"))


def test_npz_round_trip(tiny_bert, tokenizer, sentences, tmp_path):
    result = layer_diagrams(tiny_bert, tokenizer, sentences, max_points=9)
    back = LayerDiagrams.load_npz(result.save_npz(tmp_path / "d.npz"))
    assert back.layers == result.layers and back.settings == result.settings and back.identical == result.identical
    for k in result.layers:
        np.testing.assert_array_equal(back.diagrams[k], result.diagrams[k])
        np.testing.assert_array_equal(back.clouds[k], result.clouds[k])
    np.testing.assert_array_equal(back.text_indices, result.text_indices)


# ---------------------------------------------------------------------------------------------
# Bad input: a message, never a hang
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_give_messages(tiny_bert, tokenizer, sentences):
    with pytest.raises(ValueError, match="H1 \\(loops\\) needs at least 4 points.*got 3"):
        layer_diagrams(tiny_bert, tokenizer, sentences[:3])
    assert len(layer_diagrams(tiny_bert, tokenizer, sentences[:3], max_dimension=0).diagrams[1]) == 3
    with pytest.raises(ValueError, match="at least 2 points"):
        layer_diagrams(tiny_bert, tokenizer, sentences[:1], max_dimension=0)
    with pytest.raises(ValueError, match="same vector at embeddings, L0, L1"):
        layer_diagrams(tiny_bert, tokenizer, ["The same text."] * 6)
    with pytest.raises(ValueError, match="use pooling='mean'"):
        layer_diagrams(tiny_bert, tokenizer, sentences, layers=[0])
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        layer_diagrams(tiny_bert, tokenizer, sentences, memory_budget_gb=1e-7)
    with pytest.raises(MemoryBudgetError, match="Lower max_points"):
        rips_diagram(np.random.default_rng(0).normal(size=(300, 3)), memory_budget_gb=1e-3)
    with pytest.raises(ValueError, match="'layers' parameter of layer_diagrams must be an integer in \\[0, 2\\]"):
        layer_diagrams(tiny_bert, tokenizer, sentences, layers=[3])
    with pytest.raises(ValueError, match="'pooling' parameter"):
        layer_diagrams(tiny_bert, tokenizer, sentences, pooling="max")
    with pytest.raises(ValueError, match="zero vector"):
        distance_matrix(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), "cosine")


# ---------------------------------------------------------------------------------------------
# CLI and page
# ---------------------------------------------------------------------------------------------


def test_cli_layers_prints_the_summary_and_writes_the_npz(tiny_model_dir, tmp_path, capsys):
    from obce_core.cli import main

    out = tmp_path / "diagrams.npz"
    assert main(["layers", "--model", str(tiny_model_dir), "--n", "10", "--pooling", "mean", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "h1_bars" in printed and "bottleneck_prev_h0" in printed and "L1" in printed
    texts, _ = resolve_texts(n=10, seed=0)
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    want = layer_diagrams(model, tokenizer, texts, pooling="mean")
    got = LayerDiagrams.load_npz(out)
    for k in want.layers:
        np.testing.assert_allclose(got.diagrams[k], want.diagrams[k], atol=1e-9)
    assert main(["layers", "--model", str(tiny_model_dir), "--n", "3"]) == 2
    assert "at least 4 points" in capsys.readouterr().err


def test_page_shows_a_layer_and_the_original_vs_pruned_comparison(tiny_model_dir, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OBCE_MODEL_DIRS", str(Path(tiny_model_dir).parent))
    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["model"] = str(tiny_model_dir)
    at.session_state["n"] = 16
    at.run()
    at.switch_page(TOPOLOGY_PAGE).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.title[0].value == "Layer topology"
    assert any("No pruned model in this session yet" in i.value for i in at.info)
    at.select_slider(key="topo_layer").set_value("L0").run()
    assert any(m.value.startswith("**L0**: 16 points") for m in at.markdown)
    at.session_state["n"] = 3  # too few texts for loops: a message with the fix, no traceback
    at.run()
    assert not at.exception and len(at.error) == 1 and "needs at least 4 points" in at.error[0].value
    assert "untick **Loops (H1)**" in at.error[0].value
    at.session_state["n"] = 16
    at.run()

    at.switch_page("pages/1_Model_and_data.py").run()
    next(b for b in at.button if b.label == "Score neurons").click().run()
    at.switch_page("pages/3_Prune.py").run()
    next(b for b in at.button if b.label.startswith("Apply")).click().run()
    assert at.session_state["pruned"] is not None
    at.switch_page(TOPOLOGY_PAGE).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    at.select_slider(key="topo_layer").set_value("L1").run()
    line = next(m.value for m in at.markdown if "bottleneck distance between the two diagrams" in m.value)
    shown = [float(v) for v in re.findall(r"\*\*([0-9.e+-]+)\*\* in H[01]", line)]

    texts = list(at.session_state["scored"].texts)
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    original = layer_diagrams(model, tokenizer, texts)
    pruned = layer_diagrams(at.session_state["pruned"].model, tokenizer, texts)
    want = [gudhi.bottleneck_distance(_finite(original.diagrams[2], k), _finite(pruned.diagrams[2], k)) for k in (0, 1)]
    assert shown == pytest.approx(want, rel=1e-3)
    assert shown[0] > 0  # the default plan prunes L1 (it skips only L0)
