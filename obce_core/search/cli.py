"""The ``python -m obce_core search`` subcommand: the smallest plan of a task model within a tolerance.

``add_parser(subparsers)`` registers it; ``run(args)`` calls ``search_task_model`` (what the
dashboard's search job runs) with a progress bar, then prints the found plan per layer, its scores
on the search split and on dev, and the cost before and after.
"""

from __future__ import annotations

import argparse

from obce_core.choices import (COMPENSATIONS, COSTS, DEFAULT_CONFIDENCE, DEFAULT_LEVELS, GROUPS, MIN_SEARCH_ROWS,
                               PLAN_FILE, SCORERS, SEARCH_REPORT_FILE, SEARCH_SPLITS)
from obce_core.cli_args import (add_device_argument, add_overwrite_argument, int_range, name_list, number_list,
                                number_range, progress_bar, worker_count)

__all__ = ["add_parser", "run"]


def run(args) -> int:
    # The work's imports (torch, pandas) are made here: `python -m obce_core --help` builds the parser
    # below and must not load them.
    import pandas as pd

    from obce_core.pruning.plan import PruningPlan
    from obce_core.search.algorithm import SearchSettings
    from obce_core.search.task_search import search_task_model

    settings = SearchSettings(tolerance=args.tolerance, cost=args.cost, scorer=args.scorer, seed=args.seed,
                              compensation=args.compensation, groups=args.groups, levels=args.levels,
                              skip_layers=args.skip_layers, time_budget_s=args.time_budget,
                              sensitivity_levels=args.sensitivity_levels, confidence=args.confidence,
                              split=args.search_split, search_data=args.search_data)
    bar, progress = progress_bar("search", "plan")
    try:
        report = search_task_model(
            args.model, args.task, args.out, settings, glue_dir=args.glue_dir, search_size=args.search_size,
            search_seed=args.search_seed, sensitivity_size=args.sensitivity_size, score_texts=args.score_texts,
            fisher_examples=args.fisher_examples,
            device=args.device, workers=args.workers, overwrite=args.overwrite, progress=progress)
    finally:
        bar.close()
    print(report.summary())
    print(report.what_was_searched())
    if report.bound_note:
        print(report.bound_note)
    print(f"\nPercent removed per layer and group ({settings.scorer} ranks the units; compensation "
          f"{settings.compensation}):")
    table = pd.DataFrame(PruningPlan.from_dict(report.plan).percent_table(report.num_layers)).set_index("layer")
    print(table.to_string(float_format=lambda x: f"{x:g}"))
    print(f"\n{report.cost_label}: {report.cost_before:,.0f} -> {report.cost_after:,.0f}; parameters "
          f"{report.params_before:,} -> {report.params_after:,}")
    if report.stopped:
        print(f"Stopped early ({report.stopped}): the best plan found so far was saved.")
    print(f"Saved the pruned model, {PLAN_FILE} and {SEARCH_REPORT_FILE} to {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    se = subparsers.add_parser("search", help="the smallest plan of a task model within a tolerance (retraining-free)")
    se.add_argument("--model", required=True, help="a task model directory (from `finetune --out`)")
    se.add_argument("--task", required=True, help="the GLUE task it was fine-tuned on")
    se.add_argument("--out", required=True, help=f"folder for the pruned model, {PLAN_FILE} and {SEARCH_REPORT_FILE}")
    add_overwrite_argument(se, "an earlier search's --out folder")
    se.add_argument("--tolerance", type=number_range(0, 100), default=1.0,
                    help="points (main score x100) the plan may lose on the search split (default 1)")
    se.add_argument("--confidence", type=number_range(50, 100, low_open=True, high_open=True),
                    default=DEFAULT_CONFIDENCE,
                    help="a plan is within the tolerance when the upper one-sided bound of its drop at this "
                         f"confidence (percent, paired bootstrap) is (default {DEFAULT_CONFIDENCE:g})")
    se.add_argument("--search-split", choices=SEARCH_SPLITS, default="auto",
                    help="examples the tolerance is judged on: the held-out part of the training split, one seeded "
                         "half of dev (the other half reports), or auto: held-out where it was measured to predict "
                         "dev, else dev halves (default auto)")
    se.add_argument("--search-data", metavar="FILE",
                    help="a labelled .tsv/.csv file (the task's columns and label, at least "
                         f"{MIN_SEARCH_ROWS} rows) to judge the tolerance on instead")
    se.add_argument("--cost", choices=COSTS, default="flops",
                    help="what to minimise: encoder FLOPs per token (default), parameters, or measured latency")
    se.add_argument("--scorer", choices=SCORERS, default="rf", help="which units of a layer go first (default rf)")
    se.add_argument("--seed", type=int_range(0), default=0, help="seed of scorer 'random' (default 0)")
    se.add_argument("--compensation", choices=COMPENSATIONS, default="auto", help="what replaces removed units (default auto)")
    se.add_argument("--groups", type=name_list, default=list(GROUPS), help=f"comma-separated among {','.join(GROUPS)}")
    se.add_argument("--levels", type=number_list(0, 100, high_open=True, what="levels"), default=list(DEFAULT_LEVELS),
                    help="the percentiles a layer's group may take (default 0,10,...,90)")
    se.add_argument("--skip-layers", type=int_range(0), default=0, help="leave the first N layers whole (default 0)")
    se.add_argument("--time-budget", type=number_range(0, low_open=True), default=600.0,
                    help="seconds after which the refinement stops with the best plan so far (default 600)")
    se.add_argument("--search-size", type=int_range(10), default=None,
                    help="at most this many search examples, a seeded subset (default: all of them)")
    se.add_argument("--search-seed", type=int_range(0), default=1,
                    help="seed of the dev halves, the subsets and the bootstrap (default 1)")
    se.add_argument("--sensitivity-size", type=int_range(10), default=512,
                    help="search examples each (layer, group) is probed on alone (default 512)")
    se.add_argument("--sensitivity-levels", type=number_list(0, 100, high_open=True, what="levels"),
                    default=[20.0, 40.0, 60.0, 80.0], help="percentiles of those probes (default 20,40,60,80)")
    se.add_argument("--score-texts", type=int_range(2), default=512, help="training sentences scored (default 512)")
    se.add_argument("--fisher-examples", type=int_range(1), default=512,
                    help="labelled training examples Fisher sums over, for --scorer fisher (default 512)")
    se.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    add_device_argument(se)
    se.add_argument("--workers", type=worker_count, default=1,
                    help="worker processes evaluating candidates at once: one per GPU when there are GPUs (default 1)")
    se.set_defaults(func=run)
    return se
