"""The ``python -m obce_core domain`` subcommand: does a ranking scored on one kind of text hold on another?

``add_parser(subparsers)`` registers it; ``run(args)`` reads two text sources (``demo``,
``glue:TASK[:split]`` or a file), refuses two equal ones before loading the model, runs
``pruning.domain.domain_shift`` (cross-source vs split-half Spearman and removed-set overlap per
layer, group, scorer and percentile), prints the medians per scorer and writes every row with
``--csv``. With ``--task`` (a task model), it also prints the task score of ``--plan`` (or the plan
flags) ranked on each source (``evidence.domain_task``).
"""

from __future__ import annotations

import argparse
import sys

from obce_core.choices import TOKEN_MODES
from obce_core.cli_args import (CliError, add_device_argument, add_model_argument, add_overwrite_argument, int_range,
                                name_list, number_list, progress_bar)
from obce_core.io import check_output_path, write_text_atomic

__all__ = ["add_parser", "run"]


def run(args) -> int:
    csv = check_output_path(args.csv, overwrite=args.overwrite, flag="--csv") if args.csv is not None else None
    if args.source_a.strip() == args.source_b.strip():
        raise CliError(f"--source-a and --source-b are both {args.source_a!r}; the comparison needs texts of another "
                       "kind. Pick another --source-b (demo, glue:TASK or a file).")
    # The work's imports (torch, pandas) are made here: `python -m obce_core --help` builds the parser
    # below and must not load them.
    import pandas as pd

    from obce_core.evidence.domain_task import plan_score_by_source
    from obce_core.evidence.evaluation import encode_split
    from obce_core.loading import load_model
    from obce_core.pruning.domain import check_distinct_sources, domain_shift, domain_summary, text_source
    from obce_core.pruning.plan import PruningPlan

    plan = PruningPlan.from_json(args.plan) if args.plan else PruningPlan(ffn=50)
    texts_a, what_a = text_source(args.source_a, n=args.n, seed=args.seed, glue_dir=args.glue_dir)
    texts_b, what_b = text_source(args.source_b, n=args.n, seed=args.seed, glue_dir=args.glue_dir)
    check_distinct_sources(texts_a, texts_b, args.source_a, args.source_b)
    model, tokenizer = load_model(args.model, device=args.device)
    print(f"A: {len(texts_a)} texts from {what_a}; B: {len(texts_b)} texts from {what_b}", file=sys.stderr)
    bar, progress = progress_bar("score", "set")
    try:
        shift = domain_shift(model, tokenizer, texts_a, texts_b, scorers=args.scorers, percents=args.percents,
                             splits=args.splits, seed=args.seed, progress=lambda done, total: _tick(bar, done, total),
                             token=args.token, max_length=args.max_length)
    finally:
        bar.close()
    summary = domain_summary(shift)
    print(f"\nMedian over layers, {int(shift['n'].iloc[0])} texts per scored set, {args.splits} split(s): "
          "split-half (two halves of A: sampling noise) vs cross (half of A vs B: noise + domain)")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.task:
        encoded = encode_split(tokenizer, args.task, glue_dir=args.glue_dir, eval_size=args.eval_size)
        table = plan_score_by_source(model, tokenizer, plan, encoded, {args.source_a: texts_a, args.source_b: texts_b},
                                     token=args.token, max_length=args.max_length)
        print(f"\nTask score x100 on {encoded.describe()} under {plan.describe()} ranked on each source "
              "(bootstrap 95 % interval, an estimate):")
        for row in table.itertuples():
            print(f"  {row.source}: {100 * row.main_score:.2f} [{100 * row.low:.2f}, {100 * row.high:.2f}]")
    if csv is not None:
        write_text_atomic(csv, shift.to_csv(index=False))
        print(f"Wrote {csv}")
    return 0


def _tick(bar, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("domain", help="compare rankings scored on two text sources against two halves of one")
    add_model_argument(p)
    p.add_argument("--source-a", default="demo", help="demo, glue:TASK[:split] or a .txt/.csv/.tsv file (default demo)")
    p.add_argument("--source-b", required=True, help="another source, e.g. glue:sst2")
    p.add_argument("--n", type=int_range(4), default=512, help="texts drawn from each source with --seed (default 512)")
    p.add_argument("--splits", type=int_range(1), default=1, help="draws of the halves (each a seeded permutation)")
    p.add_argument("--seed", type=int_range(0), default=0)
    p.add_argument("--scorers", type=name_list, default=["rf", "std", "flap"], help="comma-separated (default rf,std,flap)")
    p.add_argument("--percents", type=number_list(0, 100, high_open=True, what="percentiles"), default=[50.0],
                   help="percentiles whose removed sets are compared (default 50)")
    p.add_argument("--token", default="cls", choices=TOKEN_MODES)
    p.add_argument("--max-length", type=int_range(2), default=128)
    p.add_argument("--glue-dir", help="local GLUE folder; default $OBCE_GLUE_DIR, else the hub")
    p.add_argument("--task", help="the model is a task model for this GLUE task: also print its score under --plan "
                                  "ranked on each source")
    p.add_argument("--plan", help="a plan JSON file for --task (default: ffn=50)")
    p.add_argument("--eval-size", type=int_range(1), help="seeded subset of the dev split for --task (default: all)")
    add_device_argument(p)
    p.add_argument("--csv", help="write every row (layer, group, scorer, percent) to this CSV file")
    add_overwrite_argument(p, "an existing --csv file")
    p.set_defaults(func=run)
    return p
