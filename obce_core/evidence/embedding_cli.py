"""``python -m obce_core sweep`` for a model without a task head: the label-free sweep and its table.

``obce_core.evidence.cli`` registers the subcommand and sends a model without a task head (the
embedded default, any encoder) here. ``run_label_free(args)`` calls ``sweep_encoder`` (scores on
one part of the texts, measures on held-out ones), adds the pairs of ``--pairs FILE`` and of a
local GLUE pairs task given as ``--task``, prints mean ± std over seeds per group, percentile,
metric and scorer and writes every row with ``--csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from obce_core import glue
from obce_core.cli_args import CliError
from obce_core.evidence.embedding_sweep import EMBEDDING_SCORERS, embedding_summary, sweep_encoder
from obce_core.evidence.pairs import PAIR_TASKS, glue_pairs, read_pairs
from obce_core.io import write_text_atomic

__all__ = ["METRIC_LABELS", "has_task_head", "label_free_table", "run_label_free"]

METRIC_LABELS = {"mean_cosine": "mean cosine, pruned vs original", "min_cosine": "lowest cosine",
                 "similarity_spearman": "Spearman of pairwise similarities", "knn_overlap": "nearest neighbours kept"}


def has_task_head(source: str) -> bool:
    """Whether the model in ``source`` is a sequence classifier, read from its config alone (data, not code).

    False when the config cannot be read: ``load_model`` then reports what is wrong with the source.
    """
    from transformers import PretrainedConfig

    from obce_core.loading import default_model_dir, read_local_config

    path = str(default_model_dir()) if source in ("", "default") else source
    try:
        # a folder's config.json through the one JSON reader (a list or a too-deep nesting is refused)
        raw = read_local_config(path) if Path(path).is_dir() else PretrainedConfig.get_config_dict(path)[0]
    except (OSError, ValueError):
        return False
    return any("SequenceClassification" in a for a in raw.get("architectures") or [])


def _metric_label(metric: str, pairs_names: dict[str, str]) -> str:
    if metric.startswith("pairs_spearman_"):
        return f"zero-shot Spearman x100 on {pairs_names.get(metric[len('pairs_spearman_'):], metric)}"
    return METRIC_LABELS.get(metric, metric)


def label_free_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (group, percentile), columns (metric, scorer): 'mean ± std' over seeds (pairs x100 already)."""
    summary = embedding_summary(table)
    digits = [1 if m.startswith("pairs_") else 3 for m in summary["metric"]]
    summary["cell"] = [f"{m:.{d}f} ± {s:.{d}f}" for m, s, d in zip(summary["mean"], summary["std"], digits)]
    return summary.pivot_table(index=["group", "percentile"], columns=["metric", "scorer"], values="cell",
                               aggfunc="first", sort=False)


def run_label_free(args, csv, progress) -> int:
    """The label-free path of ``sweep`` (see the module docstring); ``csv`` is the checked output path."""
    if args.workers != 1:
        raise CliError("--workers applies to task models only; the label-free sweep runs here (leave it at 1).")
    if args.texts and args.task:
        raise CliError("Give either --texts FILE or --task T for the held-out texts, not both.")
    pairs = [read_pairs(path) for path in args.pairs or ()]
    if args.task and glue.get_task(args.task).name in PAIR_TASKS:
        pairs.append(glue_pairs(args.task, args.glue_dir, n=args.eval_size, seed=0))
    swept = sweep_encoder(
        args.model, texts_path=args.texts, task=args.task, glue_dir=args.glue_dir, pairs=pairs, groups=args.groups,
        percentiles=args.percentiles, scorers=args.scorers or EMBEDDING_SCORERS, seeds=args.seeds,
        skip_layers=args.skip_layers, compensation=args.compensation, eval_size=args.eval_size or 256,
        score_texts=args.score_texts, device=args.device, progress=progress,
    )
    probe = swept.probe
    names = {name: ref.pairs.describe() for name, ref in probe.pairs.items()}
    print(f"{args.model}: no task head, so label-free evidence on {len(probe.texts)} held-out texts from "
          f"{probe.texts_source} (not the {swept.score_source} scored); sentence output {probe.pooling.describe()}; "
          f"{probe.k} nearest neighbours. Mean ± std over seeds.")
    for name, ref in probe.pairs.items():
        print(f"Original zero-shot Spearman x100 on {names[name]}: {ref.original_spearman:.2f}")
    wide = label_free_table(swept.table)
    with pd.option_context("display.width", 250, "display.max_rows", None, "display.max_columns", None):
        for metric in dict.fromkeys(wide.columns.get_level_values(0)):
            print(f"\n{_metric_label(metric, names)}:")
            print(wide[metric].to_string())
    if csv is not None:
        write_text_atomic(csv, swept.table.to_csv(index=False))  # never a half-written CSV
        print(f"\nWrote {csv}")
    print(f"Rows cached in {swept.path}", file=sys.stderr)
    return 0
