"""gudhi per neuron vs ``rf_batch`` on one BERT-base FFN layer's worth of neurons.

Prints per-neuron times, the ratio, and the time for all 64,512 prunable BERT-base neurons
(12 layers x (3 x 768 Q/K/V + 3,072 FFN)) at n = 1,024 samples, measured directly for rf_batch
and extrapolated for gudhi. Also checks that both give the same rf.

    python benchmarks/bench_persistence.py [--gudhi-neurons 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import gudhi
import numpy as np
import torch

from obce_core import rf_batch

BERT_BASE_NEURONS = 12 * (3 * 768 + 3072)


def gudhi_rf(values: np.ndarray) -> float:
    pts = np.ascontiguousarray(values.astype(np.float64).reshape(-1, 1))
    st = gudhi.RipsComplex(points=pts).create_simplex_tree(max_dimension=1)
    deaths = [d for dim, (_, d) in st.persistence(min_persistence=-1) if dim == 0 and np.isfinite(d)]
    return max(deaths) if deaths else 0.0


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--neurons", type=int, default=3072)
    parser.add_argument("--gudhi-neurons", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.neurons, generator=gen) * torch.rand(args.neurons, generator=gen)
    cols = x.numpy()

    t0 = time.perf_counter()
    ref = [gudhi_rf(cols[:, j]) for j in range(args.gudhi_neurons)]
    gudhi_per = (time.perf_counter() - t0) / args.gudhi_neurons

    ours = rf_batch(x)
    rel = np.max(np.abs(ours.numpy()[: args.gudhi_neurons] - ref) / np.abs(ref))
    batch_time = best_of(lambda: rf_batch(x), args.repeats)
    ours_per = batch_time / args.neurons

    def torch_sort_rf():
        s = torch.sort(x, dim=0).values.double()
        return (s[1:] - s[:-1]).amax(dim=0)

    assert torch.equal(torch_sort_rf(), ours)
    torch_time = best_of(torch_sort_rf, args.repeats)
    one_thread = best_of(lambda: rf_batch(x, threads=1), args.repeats)

    big = torch.randn(args.n, BERT_BASE_NEURONS, generator=gen)
    all_time = best_of(lambda: rf_batch(big), max(2, args.repeats // 2))

    print(f"n = {args.n} samples, threads = {torch.get_num_threads()} (torch) / numpy sort split over cores")
    print(f"gudhi:    {gudhi_per * 1e3:9.3f} ms per neuron ({args.gudhi_neurons} neurons timed)")
    print(f"rf_batch: {ours_per * 1e6:9.3f} us per neuron ({args.n} x {args.neurons} tensor, best of {args.repeats}: {batch_time * 1e3:.1f} ms)")
    print(f"  same tensor: torch.sort path {torch_time * 1e3:.1f} ms, numpy path on 1 thread {one_thread * 1e3:.1f} ms")
    print(f"speed-up: {gudhi_per / ours_per:,.0f}x per neuron; max relative difference to gudhi {rel:.2e}")
    print(f"all {BERT_BASE_NEURONS:,} BERT-base neurons: rf_batch {all_time:.3f} s measured; "
          f"gudhi {gudhi_per * BERT_BASE_NEURONS / 3600:.2f} h extrapolated")


if __name__ == "__main__":
    main()
