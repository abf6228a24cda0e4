"""Scoring overhead: ``score_model`` on the embedded model vs a bare forward over the same batches.

Both run the same length-sorted, dynamically padded batches; runs are interleaved and the
median and the minimum of each are compared. The ratio minus one is what capturing every neuron and computing
its persistence adds to the forward pass (target: <= 15 %).

    python benchmarks/bench_scoring.py [--n 512] [--rounds 3] [--glue-dir ../shared/data/glue]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from obce_core import load_model, score_model
from obce_core.scoring import length_sorted_batches, tokenize_texts
from obce_core.scoring import resolve_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"),
                        help="SST-2 sentences from here; pass '' for the demo corpus")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 is steadier on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_model(device="cpu")
    texts, source = resolve_texts(task="sst2", glue_dir=args.glue_dir, n=args.n) if args.glue_dir else (
        resolve_texts(n=args.n))

    def bare():
        encoded = tokenize_texts(tok, texts, args.max_length)
        with torch.inference_mode():
            for _, batch in length_sorted_batches(tok, encoded, args.batch_size, "cpu"):
                model(**batch)

    def scored():
        score_model(model, tok, texts, batch_size=args.batch_size, max_length=args.max_length, use_cache=False)

    bare()  # warm-up (allocator, thread pools)
    bare_t, score_t = [], []
    for _ in range(args.rounds):
        for fn, out in ((bare, bare_t), (scored, score_t)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    b, s = statistics.median(bare_t), statistics.median(score_t)
    bmin, smin = min(bare_t), min(score_t)
    print(f"{len(texts)} texts ({source}), batch {args.batch_size}, max_length {args.max_length}, {torch.get_num_threads()} threads")
    print(f"bare forward:  median {b:.2f} s  {['%.2f' % t for t in bare_t]}")
    print(f"score_model:   median {s:.2f} s  {['%.2f' % t for t in score_t]}  (capture + rf/mean/std + fingerprint, no cache)")
    print(f"ratio of medians {s / b:.3f} -> scoring overhead {100 * (s / b - 1):.1f} %")
    print(f"ratio of minima  {smin / bmin:.3f} -> scoring overhead {100 * (smin / bmin - 1):.1f} % "
          "(minima are robust to other load on the machine)")


if __name__ == "__main__":
    main()
