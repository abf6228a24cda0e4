"""The ``python -m obce_core sweep`` subcommand: a task model's score against the pruning percentile.

``add_parser(subparsers)`` registers it; ``run(args)`` calls ``sweep_task_model`` (what the
dashboard's sweep job runs), prints mean ± std over seeds per group, scorer and percentile and the
largest percentile within a tolerance per scorer, and can write every row as CSV. A model without
a task head gets the label-free sweep instead (``evidence.embedding_cli``).
"""

from __future__ import annotations

import argparse
import sys

from obce_core.choices import COMPENSATIONS, EMBEDDING_SCORERS, SCORERS, SWEEP_GROUPS, SWEEP_SCORERS
from obce_core.cli_args import (CliError, add_device_argument, add_overwrite_argument, int_list, int_range, name_list,
                                number_list, number_range, progress_bar, worker_count)
from obce_core.io import check_output_path, write_text_atomic

__all__ = ["add_parser", "run"]


def run(args) -> int:
    # The work's imports (torch, pandas) are made here: `python -m obce_core --help` builds the parser
    # below and must not load them.
    import pandas as pd

    from obce_core.evidence.embedding_cli import has_task_head, run_label_free
    from obce_core.evidence.sweep import largest_safe_percentile
    from obce_core.evidence.task_sweep import sweep_summary, sweep_task_model

    csv = check_output_path(args.csv, overwrite=args.overwrite, flag="--csv") if args.csv is not None else None
    bar, progress = progress_bar("sweep", "point")
    if not has_task_head(args.model):  # an encoder: label-free evidence (evidence.embedding_cli)
        try:
            return run_label_free(args, csv, progress)
        finally:
            bar.close()
    if not args.task:
        bar.close()
        raise CliError(f"{args.model} is a task model: name the GLUE task it was fine-tuned on with --task.")
    try:
        swept = sweep_task_model(
            args.model, args.task, glue_dir=args.glue_dir, groups=args.groups, percentiles=args.percentiles,
            scorers=args.scorers or list(SWEEP_SCORERS), seeds=args.seeds, skip_layers=args.skip_layers, compensation=args.compensation,
            eval_size=args.eval_size, score_texts=args.score_texts, device=args.device, progress=progress,
            workers=args.workers, fisher_examples=args.fisher_examples,
        )
    finally:
        bar.close()
    summary = sweep_summary(swept.table)
    summary["mean ± std (x100)"] = [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(summary["mean"], summary["std"])]
    wide = summary.pivot_table(index=["group", "percentile"], columns="scorer", values="mean ± std (x100)",
                               aggfunc="first", sort=False)
    where = f"a seeded subset of {swept.n_eval} examples" if swept.subset else f"all {swept.n_eval} examples"
    print(f"{args.task} {swept.split} ({where}), main score x100, mean ± std over seeds; "
          f"original {100 * swept.original_score:.2f}")
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
        print(wide.to_string())
    safe = largest_safe_percentile(swept.table, swept.original_score, args.tolerance / 100)
    safe = safe.pivot_table(index="group", columns="scorer", values="largest_safe_percentile", sort=False)
    print(f"\nLargest percentile within {args.tolerance:g} point(s) of the original (worst seed):")
    print(safe.to_string(float_format=lambda x: f"{x:g}"))
    if csv is not None:
        write_text_atomic(csv, swept.table.to_csv(index=False))  # never a half-written CSV
        print(f"\nWrote {csv}")
    print(f"Rows cached in {swept.path}", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    sw = subparsers.add_parser("sweep", help="task score of a task model pruned at each percentile, retraining-free; "
                                             "label-free evidence for a model without a task head")
    sw.add_argument("--model", required=True, help="a task model directory (from `finetune --out`), or a model "
                                                   "without a task head ('default', a folder, a hub id)")
    sw.add_argument("--task", help="a task model: the GLUE task it was fine-tuned on (required). Without a task head: "
                                   "a local GLUE task whose training sentences are scored and dev sentences held out "
                                   "(stsb, mrpc, qqp add its dev pairs, as with --pairs)")
    sw.add_argument("--texts", help="without a task head: a text file (one per line, or .csv/.tsv with a text column); "
                                    "half scored, half held out (default: the demo corpus)")
    sw.add_argument("--pairs", action="append", metavar="FILE",
                    help="without a task head: a .tsv/.csv with columns sentence1, sentence2, score (repeatable); "
                         "adds the zero-shot Spearman x100 of embedding cosine against score")
    sw.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    sw.add_argument("--groups", type=name_list, default=list(SWEEP_GROUPS),
                    help=f"comma-separated among {','.join(SWEEP_GROUPS)} ('all' = every group at once)")
    sw.add_argument("--percentiles", type=number_list(0, 100, high_open=True, what="percentiles"), default=[float(p) for p in range(0, 100, 10)],
                    help="comma-separated percentiles in [0, 100) (default 0,10,...,90)")
    sw.add_argument("--scorers", type=name_list,
                    help=f"comma-separated among {','.join(SCORERS)} (default {','.join(SWEEP_SCORERS)}; without a "
                         f"task head {','.join(EMBEDDING_SCORERS)}, and no fisher: it needs labels)")
    sw.add_argument("--seeds", type=int_list(0, what="seeds"), default=[0, 1, 2], help="seeds of the random scorer (default 0,1,2)")
    sw.add_argument("--skip-layers", type=int_range(0), default=0, help="leave the first N layers unpruned (default 0)")
    sw.add_argument("--compensation", choices=COMPENSATIONS,
                    help="what replaces removed units (default auto, fitted on the scoring sentences)")
    sw.add_argument("--eval-size", type=int_range(1), help="a seeded subset of the dev split (default: all of it); "
                                                           "without a task head: held-out texts (default 256)")
    sw.add_argument("--score-texts", type=int_range(2), default=512, help="training sentences scored at [CLS] (default 512)")
    sw.add_argument("--fisher-examples", type=int_range(1), default=512,
                    help="labelled training examples the fisher scorer sums squared mask gradients over, drawn with "
                         "the scoring seed; only read with --scorers ...,fisher (default 512)")
    sw.add_argument("--tolerance", type=number_range(0), default=1.0, help="points of main score x100 a safe percentile may lose (default 1)")
    add_device_argument(sw)
    sw.add_argument("--workers", type=worker_count, default=1,
                    help="worker processes evaluating points at once: one per GPU when there are GPUs (at most "
                         "this many), else this many CPU workers sharing the cores (default 1: no workers)")
    sw.add_argument("--csv", help="write every row (one per group, percentile, scorer, seed) to this CSV file")
    add_overwrite_argument(sw, "an existing --csv file")
    sw.set_defaults(func=run)
    return sw
