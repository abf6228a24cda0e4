"""Exact zero-dimensional persistent homology of point clouds.

For the Vietoris-Rips filtration every point is born at 0 and a component dies when an edge
joins it to another: the finite death times are exactly the edge lengths of a minimum spanning
tree (Kruskal's algorithm *is* the 0-D persistence algorithm). For a 1-D cloud the MST is the
chain of sorted values, so the deaths are the gaps between consecutive sorted values and ``rf``,
the filtration value at which everything has merged, is the largest gap. Both are exact.

Conventions follow gudhi: an edge enters at its length, duplicates give zero-length bars (kept,
so ``n`` points give ``n - 1`` finite deaths) and one bar never dies. ``convention="radius"``
halves every value, for papers that grow balls of radius r instead of joining points at 2r.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

__all__ = [
    "CONVENTIONS",
    "zero_dim_persistence",
    "persistence_diagram",
    "rf",
    "rf_batch",
    "rf_mean_std_batch",
    "merge_events",
    "LastMerge",
    "last_merge",
]

CONVENTIONS = ("length", "radius")


def _check_convention(convention: str) -> float:
    if convention not in CONVENTIONS:
        raise ValueError(
            f"convention must be one of {CONVENTIONS}; got {convention!r}. Use 'length' (gudhi's: "
            "an edge enters at its length) or 'radius' (half of it)."
        )
    return 1.0 if convention == "length" else 0.5


def _as_points(points) -> np.ndarray:
    """A float64 array of shape (n, d), whatever 1-D or 2-D array-like came in."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    x = np.asarray(points, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(
            f"points must have shape (n,) or (n, d); got an array of shape {x.shape}. "
            "Pass one neuron's outputs as a vector, or one sample per row."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(
            "points contain NaN or infinite values; 0-D persistence needs finite coordinates. "
            "Check the model's outputs (an overflow in float16?) or drop those samples."
        )
    return x


def _mst_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (i, j, length) of a minimum spanning tree of the complete graph on the rows of x.

    Kept as one place for both paths: 1-D takes the sorted chain, d-D a dense MST. Zero-length
    edges (duplicates) are real edges here; scipy's sparse MST would drop them, so they are
    handled by merging duplicates first.
    """
    n = x.shape[0]
    if n <= 1:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0)
    if x.shape[1] == 1:
        order = np.argsort(x[:, 0], kind="stable")
        v = x[order, 0]
        return order[:-1], order[1:], np.diff(v)
    # Duplicated rows join at 0; scipy treats a zero weight as "no edge", so merge them first.
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    dup_i = np.flatnonzero(first[inverse] != np.arange(n))
    dup_src, dup_dst = first[inverse[dup_i]], dup_i
    uniq = x[first]
    if uniq.shape[0] <= 1:
        return dup_src, dup_dst, np.zeros(dup_i.shape[0])
    dist = squareform(pdist(uniq))
    tree = minimum_spanning_tree(dist).tocoo()
    src = np.concatenate([first[tree.row], dup_src])
    dst = np.concatenate([first[tree.col], dup_dst])
    length = np.concatenate([tree.data, np.zeros(dup_i.shape[0])])
    return src, dst, length


def zero_dim_persistence(points, *, convention: str = "length") -> np.ndarray:
    """Finite death times of the 0-D Rips persistence of ``points``, ascending (births are 0).

    ``points`` is ``(n,)`` (one scalar per sample) or ``(n, d)``; ``n`` points give ``n - 1``
    deaths, zero-length ones included.
    """
    scale = _check_convention(convention)
    _, _, length = _mst_edges(_as_points(points))
    return np.sort(length) * scale


def persistence_diagram(points, *, convention: str = "length") -> np.ndarray:
    """The 0-D diagram as an ``(n, 3)`` array of (birth, death, dimension), the last bar at inf."""
    deaths = zero_dim_persistence(points, convention=convention)
    n = _as_points(points).shape[0]
    if n == 0:
        return np.empty((0, 3))
    diagram = np.zeros((n, 3))
    diagram[:-1, 1] = deaths
    diagram[-1, 1] = np.inf
    return diagram


def merge_events(points, *, convention: str = "length") -> list[tuple[int, int, float]]:
    """The MST edges ``(i, j, value)`` in the order components merge: what a radius slider shows."""
    scale = _check_convention(convention)
    src, dst, length = _mst_edges(_as_points(points))
    order = np.argsort(length, kind="stable")
    return [(int(src[k]), int(dst[k]), float(length[k] * scale)) for k in order]


@dataclass(frozen=True)
class LastMerge:
    """The two clusters that the last merge of a 1-D cloud joins: the samples below and above its
    largest gap. ``below`` and ``above`` are sample indices, nearest the gap first (ties by index);
    ``low`` and ``high`` are the values at the gap's two ends (equal when every value is)."""

    below: np.ndarray
    above: np.ndarray
    low: float
    high: float

    @property
    def gap(self) -> float:
        return self.high - self.low


def last_merge(values) -> LastMerge:
    """Split 1-D ``values`` at the edge :func:`merge_events` merges last (the largest gap; of equal
    largest gaps, the highest one, as the stable order of the events puts it last).

    Everything at or below the gap's lower end is one cluster and everything at or above its upper
    end the other: on a line, single linkage merges each side completely before the widest gap.
    """
    v = _as_points(values)
    if v.shape[1] != 1:
        raise ValueError(f"last_merge splits a 1-D cloud (one value per sample); got points of dimension {v.shape[1]}.")
    v = v[:, 0]
    if v.size < 2:
        raise ValueError(f"last_merge needs at least 2 values to have a merge; got {v.size}.")
    i, j, _ = merge_events(v)[-1]
    low, high = sorted((float(v[i]), float(v[j])))
    if low == high:  # all values equal: the chain's last edge splits off its last sample
        order = np.argsort(v, kind="stable")
        return LastMerge(below=order[:-1].copy(), above=order[-1:].copy(), low=low, high=high)
    below = np.flatnonzero(v <= low)
    above = np.flatnonzero(v >= high)
    below = below[np.lexsort((below, low - v[below]))]
    above = above[np.lexsort((above, v[above] - high))]
    return LastMerge(below=below, above=above, low=low, high=high)


def rf(points, *, convention: str = "length") -> float:
    """The largest finite death: the value at which every component has merged; 0.0 for n <= 1."""
    deaths = zero_dim_persistence(points, convention=convention)
    return float(deaths[-1]) if deaths.size else 0.0


def _column_stats_numpy(x: np.ndarray, start: int, stop: int, moments: bool, chunk: int = 256) -> np.ndarray:
    """rf (and mean, std) of columns ``start:stop`` of a float32 ``(n, m)`` array: ``(k, 1 or 3)``.

    Columns are copied in cache-sized chunks into contiguous rows (numpy sorts a contiguous axis
    several times faster than a strided one), sorted, and their gaps taken in float64. The
    moments come from the same cache-hot rows, which is cheaper than a second pass over x.
    """
    out = np.empty((stop - start, 3 if moments else 1))
    for c0 in range(start, stop, chunk):
        c1 = min(c0 + chunk, stop)
        rows = np.ascontiguousarray(x[:, c0:c1].T)
        rows.sort(axis=1)
        rows64 = rows.astype(np.float64)
        out[c0 - start : c1 - start, 0] = np.diff(rows64, axis=1).max(axis=1)
        if moments:
            mean = rows64.mean(axis=1)
            rows64 -= mean[:, None]
            out[c0 - start : c1 - start, 1] = mean
            out[c0 - start : c1 - start, 2] = np.sqrt(np.einsum("ij,ij->i", rows64, rows64) / rows64.shape[1])
    return out


def _column_stats(x, convention: str, threads: int | None, moments: bool) -> torch.Tensor:
    scale = _check_convention(convention)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim != 2:
        raise ValueError(
            f"rf_batch takes an (n_samples, n_neurons) tensor; got shape {tuple(x.shape)}. "
            "For a single neuron use rf(points)."
        )
    n, m = x.shape
    width = 3 if moments else 1
    if n == 0 or m == 0:
        return torch.zeros(m, width, dtype=torch.float64, device=x.device)
    if x.device.type != "cpu":
        s = torch.sort(x.float(), dim=0).values.double()
        parts = [(s[1:] - s[:-1]).amax(dim=0) if n > 1 else torch.zeros(m, dtype=torch.float64, device=x.device)]
        if moments:
            parts += [s.mean(dim=0), s.std(dim=0, correction=0)]
        out = torch.stack(parts, dim=1)
    else:
        values = x.detach().float().numpy()
        threads = threads or min(os.cpu_count() or 1, 8)
        if n == 1:
            stats = np.zeros((m, width))
            if moments:
                stats[:, 1] = values[0]
        elif threads <= 1 or m < 512:
            stats = _column_stats_numpy(values, 0, m, moments)
        else:
            bounds = np.linspace(0, m, threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                stats = np.concatenate(
                    list(pool.map(lambda ab: _column_stats_numpy(values, *ab, moments), zip(bounds[:-1], bounds[1:])))
                )
        out = torch.from_numpy(stats)
    # NaN sorts last and inf - inf is NaN, so a non-finite input always shows up here; checking the
    # result is much cheaper than scanning the whole input first.
    if not torch.isfinite(out).all():
        raise ValueError(
            "rf_batch input contains NaN or infinite values; check the captured activations "
            "(an overflow in float16?)."
        )
    out[:, 0] *= scale
    return out


def rf_batch(x: torch.Tensor, *, convention: str = "length", threads: int | None = None) -> torch.Tensor:
    """rf of every column of an ``(n, m)`` tensor, exactly: a float64 tensor of shape ``(m,)``.

    Values are sorted in float32 (sorting is exact) and the gaps taken in float64, so the result
    equals the scalar path on the same float32 values. On CPU numpy's sort along a contiguous axis
    is several times faster than ``torch.sort``; columns are split over ``threads`` (numpy releases
    the GIL while sorting). On a GPU the sort stays on the device.
    """
    return _column_stats(x, convention, threads, moments=False)[:, 0]


def rf_mean_std_batch(
    x: torch.Tensor, *, convention: str = "length", threads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rf_batch`` plus each column's mean and (population) std, from one sort: float64 tensors."""
    out = _column_stats(x, convention, threads, moments=True)
    return out[:, 0], out[:, 1], out[:, 2]
