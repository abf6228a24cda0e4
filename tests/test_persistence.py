"""Exact 0-D persistence checked against gudhi, the independent oracle."""

import gudhi
import numpy as np
import pytest
import torch

from obce_core import merge_events, persistence_diagram, rf, rf_batch, zero_dim_persistence


def gudhi_deaths(points: np.ndarray) -> np.ndarray:
    """Finite 0-D deaths from gudhi's Rips complex (contiguous (n, d) copy; keep zero-length bars)."""
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(len(points), -1))
    st = gudhi.RipsComplex(points=pts).create_simplex_tree(max_dimension=1)
    bars = st.persistence(min_persistence=-1)
    deaths = [d for dim, (b, d) in bars if dim == 0 and np.isfinite(d)]
    return np.sort(np.array(deaths, dtype=np.float64))


def assert_close_rel(a, b, tol=1e-9):
    a, b = np.atleast_1d(np.asarray(a, dtype=np.float64)), np.atleast_1d(np.asarray(b, dtype=np.float64))
    assert a.shape == b.shape
    scale = np.maximum(np.abs(b), 1e-300)
    rel = np.abs(a - b) / scale
    rel[(a == 0) & (b == 0)] = 0
    assert rel.max(initial=0) <= tol, f"max relative difference {rel.max()}"


CASES_1D = {
    "normal": np.random.default_rng(0).normal(size=200),
    "uniform_f32": np.random.default_rng(1).uniform(-3, 3, size=300).astype(np.float32),
    "duplicates": np.array([0.5, 0.5, 0.5, 1.0, 1.0, -2.0, 3.25, 3.25]),
    "two": np.array([1.0, 4.0]),
    "constant": np.full(17, 2.5),
    "large": np.random.default_rng(2).normal(scale=1e8, size=100),
    "tiny": np.random.default_rng(3).normal(scale=1e-8, size=100),
    "rounded_ties": np.round(np.random.default_rng(4).normal(size=150), 1),
}


@pytest.mark.parametrize("name", sorted(CASES_1D))
def test_1d_deaths_match_gudhi(name):
    x = CASES_1D[name]
    ours = zero_dim_persistence(x)
    theirs = gudhi_deaths(x)
    assert ours.shape == (len(x) - 1,)  # n points -> n-1 finite deaths, zero-length kept
    assert_close_rel(ours, theirs)
    assert_close_rel(rf(x), theirs.max())


@pytest.mark.parametrize("d", [2, 3, 7])
def test_dd_deaths_match_gudhi(d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(60, d))
    x[10] = x[3]  # a duplicate gives a zero-length bar
    ours = zero_dim_persistence(x)
    theirs = gudhi_deaths(x)
    assert ours.shape == (59,)
    assert ours[0] == 0.0
    assert_close_rel(ours, theirs)


def test_all_duplicates_dd():
    x = np.ones((5, 3))
    assert np.array_equal(zero_dim_persistence(x), np.zeros(4))
    assert rf(x) == 0.0


def test_hand_computed_case():
    # sorted 0, 1, 3, 7 -> gaps 1, 2, 4
    assert np.array_equal(zero_dim_persistence([7.0, 0.0, 3.0, 1.0]), [1.0, 2.0, 4.0])
    assert rf([7.0, 0.0, 3.0, 1.0]) == 4.0
    assert rf([7.0, 0.0, 3.0, 1.0], convention="radius") == 2.0


@pytest.mark.parametrize("n", [0, 1])
def test_degenerate_sizes(n):
    x = np.arange(n, dtype=float)
    assert zero_dim_persistence(x).shape == (0,)
    assert rf(x) == 0.0


def test_diagram_layout():
    dgm = persistence_diagram([0.0, 1.0, 3.0])
    assert dgm.shape == (3, 3)
    assert np.array_equal(dgm[:, 0], [0, 0, 0]) and np.array_equal(dgm[:, 2], [0, 0, 0])
    assert np.array_equal(dgm[:2, 1], [1.0, 2.0]) and np.isinf(dgm[2, 1])


def test_merge_events_form_a_spanning_tree():
    x = np.random.default_rng(5).normal(size=(30, 2))
    events = merge_events(x)
    assert len(events) == 29
    parent = list(range(30))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j, value in events:
        assert np.isclose(value, np.linalg.norm(x[i] - x[j]))
        ri, rj = find(i), find(j)
        assert ri != rj  # every event merges two distinct components
        parent[ri] = rj
    assert np.allclose([e[2] for e in events], gudhi_deaths(x))


def test_rf_batch_matches_gudhi_per_column():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(128, 40)).astype(np.float32)
    x[:, 3] = 1.5  # constant column
    x[::2, 7] = x[1::2, 7]  # every value duplicated
    x[:, 9] *= 1e6
    out = rf_batch(torch.from_numpy(x))
    assert out.dtype == torch.float64 and out.shape == (40,)
    expected = np.array([gudhi_deaths(x[:, j]).max() for j in range(40)])
    assert_close_rel(out.numpy(), expected)
    assert out[3] == 0.0


def test_rf_batch_threads_agree():
    x = torch.randn(64, 1000)
    assert torch.equal(rf_batch(x, threads=1), rf_batch(x, threads=4))
    assert torch.allclose(rf_batch(x, convention="radius"), rf_batch(x) / 2, rtol=0, atol=0)


def test_rf_batch_degenerate_shapes():
    assert torch.equal(rf_batch(torch.zeros(1, 5)), torch.zeros(5, dtype=torch.float64))
    assert rf_batch(torch.zeros(10, 0)).shape == (0,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: rf_batch(torch.zeros(3)), "n_samples, n_neurons"),
        (lambda: rf_batch(torch.tensor([[0.0], [float("nan")]])), "NaN"),
        (lambda: zero_dim_persistence(np.zeros((2, 2, 2))), "shape"),
        (lambda: rf([1.0, np.inf]), "NaN or infinite"),
        (lambda: rf([1.0, 2.0], convention="diameter"), "convention"),
    ],
)
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
