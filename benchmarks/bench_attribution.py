"""Attribution per unit (issue 25 item 1): the timing target and the agreement tables.

    # timing: IG for every unit of all-MiniLM (a random 2-label head) on 512 SST-2 dev examples
    python benchmarks/bench_attribution.py timing --n 512 --steps 8
    # tables: a task model, and the same model pruned by rf at --percent, each against every scorer
    python benchmarks/bench_attribution.py tables --model /work/bench/task_models/sst2 --task sst2 \
        --csv benchmarks/data/attribution_sst2.csv

``timing`` measures integrated gradients alone (the target: <= 3 minutes on this CPU), then the
completeness losses and the exact check of 36 units, and prints the machine's load. ``tables``
runs ``unit_attribution`` + ``with_scorers`` + ``agreement_table`` on the task model and on its
pruned copy (``prune`` with the rf scorer at ``--percent`` on every group, no compensation; the
pruned model is rescored: its own rf, Fisher, ... of its kept units), prints them as markdown and
writes one CSV row per (model, layer, group, scorer).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from obce_core import load_model
from obce_core.attribution import (AttributionSettings, agreement_table, integrated_gradients, masked_mean_loss,
                                   sample_units, ablation_effects, spearman_interval, task_objective, unit_attribution,
                                   with_scorers)
from obce_core.evidence.task_sweep import task_scores
from obce_core.pruning import SCORERS, PruningPlan, prune
from obce_core.training.progress import PhaseEvent


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timing(args) -> None:
    model, tokenizer = load_model("default", device="cpu", num_labels=2)  # a random head: enough for the timing
    objective = task_objective(model, tokenizer, "sst2", n=args.n, seed=0, glue_dir=args.glue_dir,
                               batch_size=args.batch_size)
    tokens = sum(int(b["attention_mask"].sum()) for b in objective.batches)
    print(f"all-MiniLM-L6-v2 + random head, {objective.n} SST-2 dev examples ({tokens} tokens), "
          f"{len(objective.batches)} batches of <= {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"load {load_avg()}")
    start, cpu = time.perf_counter(), time.process_time()
    ig = integrated_gradients(model, objective, args.steps)
    ig_s, ig_cpu = time.perf_counter() - start, time.process_time() - cpu
    units = sum(len(v) for row in ig.attribution for v in row.values())
    print(f"integrated gradients, {args.steps} points, {units} units: {ig_s:.1f} s wall, {ig_cpu:.1f} CPU-s "
          f"(target <= 180 s wall for 512 examples); load {load_avg()}")
    # CPU time hardly depends on what else runs; an idle 2-core machine gives about CPU-s / threads of wall.
    per = ig_cpu / (objective.n * args.steps)
    print(f"  {per * 1000:.1f} CPU-ms per example and point -> ESTIMATE for 512 examples x {args.steps} points on an idle "
          f"machine with {torch.get_num_threads()} threads: {per * 512 * args.steps / torch.get_num_threads():.0f} s wall")
    start = time.perf_counter()
    kept, removed = masked_mean_loss(model, objective, [1.0, 0.0])
    total = sum(float(v.sum()) for row in ig.attribution for v in row.values())
    print(f"completeness: sum {total:.6g} vs L(removed) - L(kept) = {removed - kept:.6g} "
          f"(gap {total - (removed - kept):+.3g}); {time.perf_counter() - start:.1f} s")
    if not args.ablation_units:
        return
    start = time.perf_counter()
    sample = sample_units(model, args.ablation_units, 0)
    effects = ablation_effects(model, objective, sample, baseline=kept)
    attribution = np.array([ig.attribution[r.layer][r.group][r.unit] for r in sample.itertuples()])
    rho, low, high = spearman_interval(attribution, effects)
    print(f"exact ablation of {len(sample)} units: {time.perf_counter() - start:.1f} s; Spearman with IG {rho:.2f} "
          f"[{low:.2f}, {high:.2f}]; load {load_avg()}")


class PhaseClock:
    """A progress callback that times each phase (PhaseEvent) and notes the load when it ends."""

    def __init__(self):
        self.phases, self._current, self._start = [], None, None

    def __call__(self, event) -> None:
        if isinstance(event, PhaseEvent):
            self.close()
            self._current, self._start = event.phase, time.perf_counter()

    def close(self) -> None:
        if self._current is not None:
            self.phases.append((self._current, time.perf_counter() - self._start, load_avg()))
            print(f"  {self.phases[-1][1]:7.1f} s  {self._current} (load {self.phases[-1][2]})", flush=True)
        self._current = None


def _agreement(model, tokenizer, task, args, label: str) -> pd.DataFrame:
    start = time.perf_counter()
    clock = PhaseClock()
    print(f"\n{label}: start, load {load_avg()}", flush=True)
    scores = task_scores(model, tokenizer, task, scorers=SCORERS, glue_dir=args.glue_dir, progress=clock)
    objective = task_objective(model, tokenizer, task, n=args.n, seed=0, glue_dir=args.glue_dir)
    table = unit_attribution(model, objective, AttributionSettings(steps=args.steps, ablation_units=args.ablation_units),
                             progress=clock)
    clock.close()
    table = with_scorers(table, model, scores)
    agreement = agreement_table(table, model, scores, percent=args.percent)
    a = table.attrs
    checked = table.dropna(subset=["ablation"])
    rho, low, high = spearman_interval(checked["attribution"], checked["ablation"])
    print(f"\n### {label}: {a['objective']}, {a['steps']} points; {time.perf_counter() - start:.0f} s, load {load_avg()}")
    print(f"loss kept {a['loss_kept']:.4f}, removed {a['loss_removed']:.4f}, completeness gap {a['completeness_gap']:+.2g}; "
          f"exact ablation of {len(checked)} units vs IG: Spearman {rho:.2f} [{low:.2f}, {high:.2f}]")
    print(markdown(agreement))
    return agreement.assign(model=label, loss_kept=a["loss_kept"], loss_removed=a["loss_removed"],
                            completeness_gap=a["completeness_gap"], ablation_spearman=rho)


def markdown(agreement: pd.DataFrame) -> str:
    """Spearman [interval] per layer x group (rows) and scorer (columns), then the removed shares."""
    cell = agreement.apply(lambda r: "n/a" if np.isnan(r.spearman) else f"{r.spearman:+.2f} [{r.low:+.2f}, {r.high:+.2f}]",
                           axis=1)
    wide = agreement.assign(cell=cell).pivot_table(index=["layer", "group"], columns="scorer", values="cell",
                                                   aggfunc="first", sort=False)
    lines = ["| layer | group | " + " | ".join(wide.columns) + " |", "|---|---|" + "---|" * len(wide.columns)]
    lines += [f"| {layer} | {group} | " + " | ".join(row) + " |" for (layer, group), row in zip(wide.index, wide.to_numpy())]
    share = agreement.groupby("scorer", sort=False)[["removed_in_lowest", "chance"]].mean()
    lines += ["", f"removed at {agreement.attrs['percent']:g} % that are among the lowest attributions (mean over "
                  "layers and groups): " + ", ".join(f"{s} {r.removed_in_lowest:.2f}" for s, r in share.iterrows())
              + f" (chance {share['chance'].mean():.2f})"]
    return "\n".join(lines)


def tables(args) -> None:
    model, tokenizer = load_model(args.model, device="cpu")
    original = _agreement(model, tokenizer, args.task, args, f"{args.task} task model (original)")
    if args.csv:
        original.to_csv(args.csv, index=False)  # the original's rows survive an interrupted pruned run
    scores = task_scores(model, tokenizer, args.task, scorers=["rf"], glue_dir=args.glue_dir)
    plan = PruningPlan(ffn=args.percent, qk=args.percent, v=args.percent, scorer="rf", compensation="none")
    pruned, _ = prune(model, scores, plan)
    kept = _agreement(pruned, tokenizer, args.task, args, f"{args.task} pruned by rf at {args.percent:g} % (kept units)")
    if args.csv:
        pd.concat([original, kept], ignore_index=True).to_csv(args.csv, index=False)
        print(f"\nwrote {args.csv}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--n", type=int, default=512)
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--ablation-units", type=int, default=36)
    t.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "/work/shared/data/glue"))
    t.set_defaults(func=timing)
    b = sub.add_parser("tables")
    b.add_argument("--model", required=True)
    b.add_argument("--task", required=True)
    b.add_argument("--n", type=int, default=512)
    b.add_argument("--steps", type=int, default=8)
    b.add_argument("--ablation-units", type=int, default=36)
    b.add_argument("--percent", type=float, default=30, help="the rf plan that prunes the copy, and the agreement's plan")
    b.add_argument("--csv")
    b.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "/work/shared/data/glue"))
    b.set_defaults(func=tables)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
