"""The ``python -m obce_core`` command line: a thin argparse layer over the library.

Every subcommand calls the same functions the dashboard calls. Errors a user can fix are
printed as one message on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

__all__ = ["main", "build_parser", "resolve_texts"]


class CliError(Exception):
    """A user-facing failure: printed without a traceback."""


def _add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default",
        help="'default' (embedded all-MiniLM-L6-v2), a Hugging Face hub id, or a local model directory",
    )


def _add_texts_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--texts", help="a .txt file (one text per line) or a .csv/.tsv with a 'text' or 'sentence' column")
    src.add_argument("--task", help="a GLUE task whose sentences are scored (cola, sst2, mrpc, ...)")
    parser.add_argument("--split", default="validation", help="GLUE split for --task (default: validation)")
    parser.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    parser.add_argument("--n", type=int, default=512, help="number of texts, drawn with --seed (default 512)")
    parser.add_argument("--seed", type=int, default=0)


def resolve_texts(texts_path=None, task=None, split="validation", glue_dir=None, n=None, seed=0):
    """(texts, a description of their source) from a file, a GLUE task, or the demo corpus."""
    from obce_core import corpus

    if texts_path:
        return corpus.subsample(corpus.read_texts(texts_path), n, seed), f"file {texts_path}"
    if task:
        from obce_core import glue

        dataset = glue.load_task(task, split, glue_dir, n=n, seed=seed)
        return glue.dataset_texts(dataset, task), f"GLUE {task} {split}"
    return corpus.subsample(corpus.demo_sentences(), n, seed), "obce demo corpus"


def _cmd_score(args) -> int:
    from obce_core import load_model, score_model

    texts, source = resolve_texts(args.texts, args.task, args.split, args.glue_dir, args.n, args.seed)
    model, tokenizer = load_model(None if args.model == "default" else args.model, device=args.device)
    print(f"Scoring {len(texts)} texts from {source} at token={args.token} on {args.model}", file=sys.stderr)
    bar = tqdm(total=len(texts), unit="text", desc="capture", file=sys.stderr)

    def progress(done, total):
        bar.update(done - bar.n)

    scores = score_model(
        model, tokenizer, texts, token=args.token, max_length=args.max_length, batch_size=args.batch_size,
        convention=args.convention, memory_budget_gb=args.memory_budget_gb, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, progress=progress,
    )
    bar.close()
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.float_format", "{:.4g}".format):
        print(scores.summary().to_string(index=False))
    tied = scores.table[scores.table["rf_ties"] > 1]
    print(
        f"\n{len(scores.table):,} neurons, {scores.n_samples:,} samples; {len(tied):,} neurons share their rf "
        "with another in the same layer and component (ties broken by std, then neuron index)."
    )
    if args.out:
        scores.to_parquet(args.out)
        print(f"Wrote {args.out}")
    return 0


def _cmd_prune(args) -> int:
    from obce_core import NeuronScores, load_model
    from obce_core.pruning import PruningPlan, prune, save_pruned

    flags = {k: getattr(args, k) for k in ("ffn", "qk", "v", "skip_layers", "compensation", "scorer", "seed")}
    if args.plan:
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
        if given:
            raise CliError(f"--plan cannot be combined with {', '.join(given)}; put those settings in the plan file.")
        plan = PruningPlan.from_json(args.plan)
    else:
        plan = PruningPlan(**{k: v for k, v in flags.items() if v is not None})
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        # Checked before the slow steps; save_pruned checks again.
        raise CliError(f"Output {args.out!r} exists and is not an empty directory; pass --overwrite or choose another --out.")
    scores = NeuronScores.from_parquet(args.scores)
    model, tokenizer = load_model(None if args.model == "default" else args.model, device=args.device)
    pruned, report = prune(model, scores, plan)
    save_pruned(pruned, tokenizer, out, plan=plan, report=report, overwrite=args.overwrite)
    print(report.summary())
    print(f"\nWrote {out} (reload with obce_core.load_model({str(out)!r}) or AutoModel after `import obce_core`)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m obce_core",
        description="Explain and compress BERT models with zero-dimensional persistent homology (OBCE).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score every neuron by the 0-D persistence (rf) of its outputs")
    _add_model_argument(score)
    _add_texts_arguments(score)
    score.add_argument("--token", default="cls", choices=["cls", "all", "mean"], help="which token(s) make a sample")
    score.add_argument("--max-length", type=int, default=128)
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--convention", default="length", choices=["length", "radius"],
                       help="filtration value of an edge: its length (gudhi) or half of it")
    score.add_argument("--memory-budget-gb", type=float, default=4.0)
    score.add_argument("--cache-dir", help="score cache folder (default $OBCE_CACHE_DIR or ~/.cache/obce)")
    score.add_argument("--no-cache", action="store_true")
    score.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    score.add_argument("--out", help="write the per-neuron table to this .parquet file")
    score.set_defaults(func=_cmd_score)

    prune_p = sub.add_parser("prune", help="remove low-scoring FFN units and Q/K/V dims; save the smaller model")
    _add_model_argument(prune_p)
    prune_p.add_argument("--scores", required=True, help="per-neuron scores (.parquet from `score --out`) of this model")
    prune_p.add_argument("--plan", help="a plan JSON file (PruningPlan.to_json); replaces the flags below")
    prune_p.add_argument("--ffn", type=float, help="percent of FFN units removed per layer, in [0, 100) (default 0)")
    prune_p.add_argument("--qk", type=float, help="percent of query/key dim pairs removed per head (default 0)")
    prune_p.add_argument("--v", type=float, help="percent of value dims removed per head (default 0)")
    prune_p.add_argument("--skip-layers", type=int, help="leave the first N layers unpruned (default 0)")
    prune_p.add_argument("--compensation", choices=["none", "mean", "mean+std"], help="fold removed units into biases (default mean)")
    prune_p.add_argument("--scorer", choices=["rf", "std", "magnitude", "random"], help="unit ranking (default rf)")
    prune_p.add_argument("--seed", type=int, help="seed of scorer 'random' (default 0)")
    prune_p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    prune_p.add_argument("--out", required=True, help="directory for the pruned model, plan and report")
    prune_p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    prune_p.set_defaults(func=_cmd_prune)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (CliError, ValueError, OSError, KeyError) as exc:
        # ValueError covers every obce input error (ModelLoadError, GlueDataError, TextsError, ...).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
