"""The hidden-dim options of ``python -m obce_core prune``: ``--hidden P`` and how its stream is measured.

``add_hidden_arguments(parser)`` adds the flags; ``hidden_plan(plan, args)`` puts them into the
plan (a ``--plan`` file may carry ``hidden`` itself, and is then not combined with the flags);
``hidden_stream_for(plan, model, tokenizer, args)`` captures the residual stream on
``--hidden-texts`` when the plan needs it (``pruning.hidden.plan_hidden_cut`` says when).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from obce_core.choices import HIDDEN_NORMS
from obce_core.cli_args import CliError, int_range, percent

if TYPE_CHECKING:
    from obce_core.pruning.hidden_stream import HiddenStream
    from obce_core.pruning.plan import PruningPlan

__all__ = ["add_hidden_arguments", "hidden_plan", "hidden_stream_for"]


def add_hidden_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("hidden dims (the width of the residual stream, removed from every layer)")
    g.add_argument("--hidden", type=percent, help="percent of the stream's dims removed, in [0, 100) (default 0); "
                                                  "ranked by --scorer (rf, std, magnitude or random)")
    g.add_argument("--hidden-norm", choices=HIDDEN_NORMS,
                   help="how the narrowed LayerNorms normalise: kept (over the kept dims), std-ratio (rescaled to the "
                        "full width's spread), fitted (scale and shift fitted to the original's outputs); default kept")
    g.add_argument("--hidden-texts", default="demo",
                   help="texts the stream is measured on: demo, glue:TASK[:split] or a file (default demo)")
    g.add_argument("--hidden-n", type=int_range(2), default=256, help="how many of them (default 256)")


def hidden_plan(plan: PruningPlan, args, *, from_file: bool) -> PruningPlan:
    """``plan`` with ``--hidden``/``--hidden-norm``; refused next to ``--plan`` (the file says it all)."""
    given = {k: v for k, v in (("hidden", args.hidden), ("hidden_norm", args.hidden_norm)) if v is not None}
    if not given:
        return plan
    from obce_core.pruning.plan import PruningPlan  # torch: not on the parser's path (obce_core.cli)

    if from_file:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise CliError(f"--plan cannot be combined with {names}; put those settings in the plan file.")
    return PruningPlan.from_dict({**plan.to_dict(), **given})


def hidden_stream_for(plan: PruningPlan, model, tokenizer, args) -> HiddenStream | None:
    """The stream the plan's hidden cut ranks and fits with; None when it needs none."""
    if not plan.hidden or (plan.scorer == "random" and plan.hidden_norm == "kept"):
        return None
    plan.check_hidden(int(model.config.hidden_size))  # before the capture: it is the plan that is wrong
    from tqdm.auto import tqdm

    from obce_core.pruning.domain import text_source
    from obce_core.pruning.hidden_stream import capture_stream

    texts, what = text_source(args.hidden_texts, n=args.hidden_n, seed=0)
    print(f"Measuring the residual stream on {len(texts)} texts from {what}", file=sys.stderr)
    with tqdm(total=len(texts), unit="text", desc="stream", file=sys.stderr) as bar:
        return capture_stream(model, tokenizer, texts, progress=lambda done, _total: bar.update(done - bar.n))
