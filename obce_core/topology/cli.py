"""The ``python -m obce_core layers`` subcommand: per-layer H0/H1 diagrams, a summary table, an .npz.

``add_parser(subparsers)`` registers it; ``run(args)`` does the work through the same functions
the dashboard's Layer topology page calls. With ``--pruned DIR`` the same texts go through a
pruned model too and the original-vs-pruned bottleneck distances are printed per layer.
"""

from __future__ import annotations

import argparse
import sys

from obce_core.choices import DEFAULT_MAX_POINTS, POOLINGS, RIPS_MAX_DIMENSIONS, RIPS_MEMORY_BUDGET_GB, RIPS_METRICS
from obce_core.cli_args import (
    add_device_argument,
    add_model_argument,
    add_overwrite_argument,
    add_texts_arguments,
    int_list,
    int_range,
    model_directory,
    number_range,
)
from obce_core.io import check_output_path

# The work's imports (torch, gudhi, pandas) are made in the functions below: `python -m obce_core --help`
# builds this parser and must not load them.

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``layers`` to the ``python -m obce_core`` subcommands."""
    p = subparsers.add_parser(
        "layers", help="H0/H1 persistence diagrams of every layer's [CLS]/mean vectors; optional pruned comparison",
        description="The Vietoris-Rips persistence (gudhi) of each layer's cloud of text vectors. Hidden state 0 is the "
                    "embeddings, 1..L the encoder layers L0..L{L-1}.",
    )
    add_model_argument(p)
    add_texts_arguments(p)
    p.add_argument("--pooling", default="cls", choices=POOLINGS, help="[CLS] token or mean over tokens (default cls)")
    p.add_argument("--metric", default="euclidean", choices=RIPS_METRICS)
    p.add_argument("--max-dimension", type=int, default=1, choices=RIPS_MAX_DIMENSIONS, help="0: H0 only; 1: H0 and H1 (default)")
    p.add_argument("--max-points", type=int_range(2), default=DEFAULT_MAX_POINTS,
                   help=f"at most this many texts per diagram, a subsample drawn with --seed (default {DEFAULT_MAX_POINTS})")
    p.add_argument("--layers", type=int_list(0, what="hidden-state indices"),
                   help="hidden-state indices, e.g. 0,3,6 (default: all); checked against the model before any run")
    p.add_argument("--max-length", type=int_range(2), default=128)
    p.add_argument("--memory-budget-gb", type=number_range(0, low_open=True), default=RIPS_MEMORY_BUDGET_GB)
    p.add_argument("--pruned", type=model_directory,
                   help="a pruned model directory (from `prune --out`): compare its diagrams per layer")
    add_device_argument(p)
    p.add_argument("--out", help="write the diagrams and clouds to this .npz file")
    add_overwrite_argument(p, "an existing --out file")
    p.set_defaults(func=run)
    return p


def _diagrams(model, tokenizer, texts, args, what: str):
    from tqdm.auto import tqdm

    from obce_core.topology.diagrams import layer_diagrams

    bar = tqdm(total=1, desc=what, file=sys.stderr, leave=False)

    def progress(done, total, message):
        bar.total = total
        bar.set_postfix_str(message, refresh=False)
        bar.update(done - bar.n)

    try:
        return layer_diagrams(model, tokenizer, texts, layers=args.layers, pooling=args.pooling,
                              max_dimension=args.max_dimension, max_points=args.max_points, metric=args.metric,
                              seed=args.seed, max_length=args.max_length, memory_budget_gb=args.memory_budget_gb,
                              progress=progress)
    finally:
        bar.close()


def run(args) -> int:
    import pandas as pd

    from obce_core.loading import load_model
    from obce_core.scoring.texts import resolve_texts
    from obce_core.topology.distances import comparison_table

    out = check_output_path(args.out, overwrite=args.overwrite) if args.out is not None else None
    texts, source = resolve_texts(args.texts, args.task, args.split, args.glue_dir, args.n, args.seed)
    model, tokenizer = load_model(args.model, device=args.device)
    result = _diagrams(model, tokenizer, texts, args, "original")
    sub = f" (a subsample of {result.n_points} drawn with seed {args.seed})" if result.subsampled else ""
    print(f"{len(texts)} texts from {source}{sub}; pooling={args.pooling}, metric={args.metric}; "
          f"forward {result.seconds['forward']:.2f} s, diagrams {result.seconds['diagrams']:.2f} s", file=sys.stderr)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(result.summary().to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if result.identical:
        names = ", ".join(result.name(k) for k in result.identical)
        print(f"\n{names}: every text gives the same vector (all distances 0); the diagram is trivial.")
    if args.pruned:
        pruned_model, pruned_tokenizer = load_model(args.pruned, device=args.device)
        pruned = _diagrams(pruned_model, pruned_tokenizer, texts, args, "pruned")
        print(f"\nBottleneck distance, original vs pruned ({args.pruned}):")
        print(comparison_table(result, pruned).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if out is not None:
        result.save_npz(out)
        print(f"\nWrote {out}")
    return 0
