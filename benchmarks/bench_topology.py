"""Per-layer H0/H1 diagrams of all-MiniLM-L6-v2 (embeddings + 6 layers) and original-vs-pruned distances.

For each number of points (texts) it times ``layer_diagrams`` (one forward pass, then the 7 Rips
diagrams, then the consecutive-layer bottleneck table), split into its parts. At ``--target``
points it also builds a pruned model (scores on the same texts; not timed) and times the extra
work of the comparison: the pruned model's diagrams plus ``comparison_table``, and the table alone.
Targets: 7 diagrams on 256 texts <= 10 s; the comparison <= 2 s more. Prints a markdown table.

    python benchmarks/bench_topology.py [--sizes 64,128,256,512] [--pooling mean] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from obce_core import PruningPlan, load_model, prune, score_model
from obce_core.scoring import resolve_texts
from obce_core.topology import comparison_table, layer_diagrams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--target", type=int, default=256, help="points for the original-vs-pruned timing")
    parser.add_argument("--pooling", default="mean", choices=["cls", "mean"],
                        help="mean (default): all 7 clouds are non-trivial; at cls the embeddings' [CLS] is one point")
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"),
                        help="SST-2 dev sentences from here (872); pass '' for the demo corpus (400)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]

    model, tokenizer = load_model(device="cpu")
    n = max(sizes + [args.target])
    texts, source = (resolve_texts(task="sst2", glue_dir=args.glue_dir, n=n) if args.glue_dir else resolve_texts(n=n))
    print(f"{len(texts)} texts from {source}; pooling={args.pooling}; torch threads={args.threads}")
    layer_diagrams(model, tokenizer, texts[:16], pooling=args.pooling)  # warm-up: first forward, imports

    rows = []
    results = {}
    for size in sizes:
        start = time.perf_counter()
        result = layer_diagrams(model, tokenizer, texts[:size], pooling=args.pooling, max_points=size)
        total = time.perf_counter() - start
        results[size] = result
        h1 = sum(int((d[:, 2] == 1).sum()) for d in result.diagrams.values())
        s = result.seconds
        rows.append(f"| {size} | {total:.2f} | {s['forward']:.2f} | {s['diagrams']:.2f} | {s['distances']:.2f} | {h1} |")
        print(f"n={size}: {total:.2f} s", flush=True)

    original = results.get(args.target) or layer_diagrams(model, tokenizer, texts[: args.target], pooling=args.pooling,
                                                          max_points=args.target)
    scores = score_model(model, tokenizer, texts[: args.target], use_cache=False)
    plan = PruningPlan(ffn=50, qk=50, v=50, skip_layers=1)
    pruned_model, _ = prune(model, scores, plan)
    start = time.perf_counter()
    pruned = layer_diagrams(pruned_model, tokenizer, texts[: args.target], pooling=args.pooling, max_points=args.target)
    table = comparison_table(original, pruned)
    extra = time.perf_counter() - start
    start = time.perf_counter()
    comparison_table(original, pruned)
    table_only = time.perf_counter() - start

    print()
    print("| points | total s (7 diagrams) | forward s | Rips H0+H1 s | consecutive bottleneck s | H1 bars (all layers) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(f"Original vs pruned (`{plan.describe()}`) at {args.target} points: pruned model's diagrams + "
          f"comparison table {extra:.2f} s (pruned forward {pruned.seconds['forward']:.2f} s, its Rips "
          f"{pruned.seconds['diagrams']:.2f} s; the 14 bottleneck distances {table_only:.2f} s).")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":
    main()
