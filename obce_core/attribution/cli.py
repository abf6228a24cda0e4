"""The ``python -m obce_core attribution`` subcommand: every unit's attribution beside every scorer's score.

``add_parser(subparsers)`` registers it; ``run(args)`` checks the input first (a model without a
head needs texts; at least ``MIN_EXAMPLES`` examples; ``--steps`` >= 2; the output paths), loads
the model, builds the objective (a task model: its task loss on labelled examples of ``--split``;
a model without a head: ``1 - cosine`` to its own sentence output on the texts), scores the units
with every scorer (a task model: ``task_scores`` on training sentences, Fisher included; otherwise
``score_model`` on the same texts, no Fisher), computes ``unit_attribution`` (cached) and writes
one row per unit. It prints completeness, the exact-ablation check and the agreement table.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from obce_core.choices import SCORERS
from obce_core.cli_args import (CliError, add_device_argument, add_model_argument, add_overwrite_argument, int_range,
                                number_range, progress_bar)
from obce_core.io import check_output_path, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

# The work's imports (torch, pandas) are made in the functions below: `python -m obce_core --help`
# builds this parser and must not load them.

__all__ = ["add_parser", "run"]


def _task_of(args, with_head: bool) -> str | None:
    """The task: --task, else the task model's own (obce_task.json); None for an encoder without --task."""
    from obce_core import glue
    from obce_core.training.task_models import task_model_info

    if args.task:
        return glue.get_task(args.task).name
    info = task_model_info(args.model) if with_head else None
    if with_head and info is None:
        raise CliError(f"{args.model!r} is a classifier without an obce_task.json naming its task; add --task T "
                       "(the GLUE task its head was trained on).")
    return info.task if info is not None else None


def run(args) -> int:
    from obce_core.attribution.agreement import agreement_table, with_scorers
    from obce_core.attribution.objective import SentenceObjective, check_example_count, task_objective
    from obce_core.attribution.table import AttributionSettings, unit_attribution, write_attribution
    from obce_core.evidence.embedding import sentence_pooling
    from obce_core.evidence.embedding_cli import has_task_head
    from obce_core.evidence.task_sweep import task_scores
    from obce_core.loading import load_model
    from obce_core.scoring.scores import score_model
    from obce_core.scoring.texts import resolve_texts

    out = check_output_path(args.out, overwrite=args.overwrite)
    csv = check_output_path(args.agreement_csv, overwrite=args.overwrite, flag="--agreement-csv") if args.agreement_csv else None
    check_example_count(args.n, "--n", "attribution")
    settings = AttributionSettings(steps=args.steps, ablation_units=args.ablation_units, seed=args.seed)
    with_head = has_task_head(args.model)
    task = _task_of(args, with_head)
    if not with_head and not args.texts and task is None:
        raise CliError(f"{args.model!r} has no task head, so there are no labels to explain: give the texts whose "
                       "sentence output is explained, --texts FILE (one text per line) or --task T (that task's "
                       "sentences), at least 32 of them.")
    bar, progress = progress_bar("attribution", "pass", per_phase=True)
    try:
        model, tokenizer = load_model(args.model, device=args.device)
        if with_head:
            objective = task_objective(model, tokenizer, task, split=args.split, n=args.n, seed=args.seed,
                                       glue_dir=args.glue_dir, max_length=args.max_length, batch_size=args.batch_size)
            scores = task_scores(model, tokenizer, task, scorers=SCORERS, glue_dir=args.glue_dir,
                                 score_texts=args.score_texts, fisher_examples=args.fisher_examples,
                                 max_length=args.max_length, progress=progress)
        else:
            texts, source = resolve_texts(args.texts, task, args.split or "validation", args.glue_dir, args.n, args.seed)
            check_example_count(len(texts), f"the texts of {source}", "attribution")
            objective = SentenceObjective.build(model, tokenizer, texts, sentence_pooling(model),
                                                max_length=args.max_length, batch_size=args.batch_size)
            scores = score_model(model, tokenizer, texts, token="cls", max_length=args.max_length)
        table = unit_attribution(model, objective, settings, progress=progress, use_cache=not args.no_cache)
        table = with_scorers(table, model, scores, seed=args.seed)
        agreement = agreement_table(table, model, scores, percent=args.percent, seed=args.seed, resamples=args.resamples)
    finally:
        bar.close()
    write_attribution(table, out)
    if csv is not None:
        write_text_atomic(csv, agreement.to_csv(index=False))
    _report(table, agreement, scores)
    print(f"\nWrote {out} ({len(table):,} units: layer, group, unit, attribution, ablation, {', '.join(SCORERS)})"
          + (f" and {csv}" if csv is not None else ""))
    return 0


def _report(table: pd.DataFrame, agreement: pd.DataFrame, scores) -> None:
    import pandas as pd

    from obce_core.attribution.agreement import scorer_problems, spearman_interval

    a = table.attrs
    print(f"\n{a['objective']}; {a['steps']} points on the mask path (midpoint rule).")
    print(f"Mean loss: every unit kept {a['loss_kept']:.6g}, every unit removed {a['loss_removed']:.6g}; attributions "
          f"sum to {table['attribution'].sum():.6g} (completeness gap {a['completeness_gap']:+.3g}).")
    checked = table.dropna(subset=["ablation"])
    if len(checked) >= 3:
        rho, low, high = spearman_interval(checked["attribution"], checked["ablation"])
        print(f"Exact ablation of {len(checked)} sampled units, one at a time: Spearman with the attribution "
              f"{rho:.2f} (95 % bootstrap {low:.2f} to {high:.2f}).")
    missing = scorer_problems(scores)
    if missing:
        print(f"Not scored: {', '.join(missing)} (a model without a task head has no Fisher importance).")
    pivot = agreement.pivot_table(index=["layer", "group"], columns="scorer", values="spearman", sort=False)
    print(f"\nSpearman of each scorer with the attribution, per layer and group (intervals in the table):")
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(pivot.to_string(float_format=lambda x: f"{x:.2f}", na_rep="n/a"))
    share = agreement.groupby("scorer", sort=False)[["removed_in_lowest", "chance"]].mean()
    print(f"\nShare of the units a plan at {agreement.attrs['percent']:g} % removes that are among the lowest "
          "attributions (mean over layers and groups; chance in the second column):")
    print(share.to_string(float_format=lambda x: f"{x:.2f}"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    at = subparsers.add_parser("attribution", help="integrated gradients of every unit beside every scorer's score "
                                                   "(does the model use what rf ranks high?)")
    add_model_argument(at)
    at.add_argument("--task", help="the GLUE task: a task model's labelled examples (default: its obce_task.json), "
                                   "or the sentences a model without a head is explained on")
    at.add_argument("--texts", help="for a model without a head: a .txt file (one text per line) or .csv/.tsv")
    at.add_argument("--split", default=None, help="GLUE split of the examples (default: validation)")
    at.add_argument("--n", type=int_range(1), default=512, help="examples, at least 32, drawn with --seed (default 512)")
    at.add_argument("--seed", type=int_range(0), default=0, help="draws the examples, the checked units and scorer random")
    at.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    at.add_argument("--steps", type=int_range(2), default=8, help="points on the mask path from 0 to 1 (default 8)")
    at.add_argument("--ablation-units", type=int_range(0), default=36,
                    help="units whose exact removal effect checks the attribution (default 36; 0: none)")
    at.add_argument("--percent", type=number_range(0, 100, low_open=True, high_open=True), default=50,
                    help="the plan percentile whose removed units are compared with the lowest attributions (default 50)")
    at.add_argument("--resamples", type=int_range(10), default=1000, help="bootstrap resamples of the intervals (default 1000)")
    at.add_argument("--score-texts", type=int_range(2), default=512, help="task model: training sentences scored (default 512)")
    at.add_argument("--fisher-examples", type=int_range(1), default=512,
                    help="task model: labelled training examples Fisher sums over (default 512)")
    at.add_argument("--max-length", type=int_range(8), default=128)
    at.add_argument("--batch-size", type=int_range(1), default=32)
    add_device_argument(at)
    at.add_argument("--no-cache", action="store_true", help="recompute the attribution even when it is cached")
    at.add_argument("--out", required=True, help="the .parquet file: one row per unit")
    at.add_argument("--agreement-csv", help="also write the agreement table (per layer, group and scorer) as CSV")
    add_overwrite_argument(at, "existing --out / --agreement-csv files")
    at.set_defaults(func=run)
    return at
