"""The ``python -m obce_core sweep`` subcommand: a task model's score against the pruning percentile.

``add_parser(subparsers)`` registers it; ``run(args)`` calls ``sweep_task_model`` (what the
dashboard's sweep job runs), prints mean ± std over seeds per group, scorer and percentile and the
largest percentile within a tolerance per scorer, and can write every row as CSV.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from tqdm.auto import tqdm

from obce_core.evidence.sweep import SWEEP_GROUPS, SWEEP_SCORERS, largest_safe_percentile
from obce_core.evidence.task_sweep import sweep_summary, sweep_task_model
from obce_core.io import write_text_atomic
from obce_core.pruning import COMPENSATIONS, SCORERS
from obce_core.training import PhaseEvent, StepEvent

__all__ = ["add_parser", "run"]


def _number_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, e.g. 0,10,20; got {text!r}") from None
    return parse


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run(args) -> int:
    bar = tqdm(total=None, unit="point", desc="sweep", file=sys.stderr, dynamic_ncols=True)

    def progress(event) -> None:
        if isinstance(event, PhaseEvent):
            bar.write(event.phase, file=sys.stderr)
        elif isinstance(event, StepEvent):
            if bar.total != event.max_steps:
                bar.reset(total=event.max_steps)
            bar.update(event.step - bar.n)

    try:
        swept = sweep_task_model(
            args.model, args.task, glue_dir=args.glue_dir, groups=args.groups, percentiles=args.percentiles,
            scorers=args.scorers, seeds=args.seeds, skip_layers=args.skip_layers, compensation=args.compensation,
            eval_size=args.eval_size, score_texts=args.score_texts, device=args.device, progress=progress,
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
    if args.csv:
        write_text_atomic(args.csv, swept.table.to_csv(index=False))  # never a half-written CSV
        print(f"\nWrote {args.csv}")
    print(f"Rows cached in {swept.path}", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    sw = subparsers.add_parser("sweep", help="task score of a task model pruned at each percentile, retraining-free")
    sw.add_argument("--model", required=True, help="a task model directory (from `finetune --out`)")
    sw.add_argument("--task", required=True, help="the GLUE task it was fine-tuned on")
    sw.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    sw.add_argument("--groups", type=_name_list, default=list(SWEEP_GROUPS),
                    help=f"comma-separated among {','.join(SWEEP_GROUPS)} ('all' = every group at once)")
    sw.add_argument("--percentiles", type=_number_list(float), default=[float(p) for p in range(0, 100, 10)],
                    help="comma-separated percentiles in [0, 100) (default 0,10,...,90)")
    sw.add_argument("--scorers", type=_name_list, default=list(SWEEP_SCORERS),
                    help=f"comma-separated among {','.join(SCORERS)} (default {','.join(SWEEP_SCORERS)})")
    sw.add_argument("--seeds", type=_number_list(int), default=[0, 1, 2], help="seeds of the random scorer (default 0,1,2)")
    sw.add_argument("--skip-layers", type=int, default=0, help="leave the first N layers unpruned (default 0)")
    sw.add_argument("--compensation", choices=COMPENSATIONS,
                    help="what replaces removed units (default auto, fitted on the scoring sentences)")
    sw.add_argument("--eval-size", type=int, help="a seeded subset of the dev split (default: all of it)")
    sw.add_argument("--score-texts", type=int, default=512, help="training sentences scored at [CLS] (default 512)")
    sw.add_argument("--tolerance", type=float, default=1.0, help="points of main score x100 a safe percentile may lose (default 1)")
    sw.add_argument("--device", help="cpu, cuda ... (default: cuda when present)")
    sw.add_argument("--csv", help="write every row (one per group, percentile, scorer, seed) to this CSV file")
    sw.set_defaults(func=run)
    return sw
