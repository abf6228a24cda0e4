"""The smallest plan within a tolerance, per scorer and search-split seed: FLOPs removed, scores and times.

    python benchmarks/bench_search.py --model TASK_MODEL_DIR --task sst2 --tolerance 1 \
        --scorers rf,std,fisher,random --seeds 1,2,3 --out-root artifacts/search

For each seed and scorer, ``search_task_model`` (what ``python -m obce_core search`` runs)
searches the task model with encoder FLOPs per token as the cost (``--search-split``: held-out,
dev-halves or auto; the seed cuts the dev halves, draws a ``--search-size`` subset when given,
seeds the bootstrap and, for scorer ``random``, the ranking), then saves the pruned model to
``<out-root>/<task>-<scorer>-s<seed>``. One JSON line per search is appended to
``benchmarks/data/search.jsonl``: FLOPs removed, the search-split and whole-dev scores (original
and pruned), the paired drops (search split: point, bound and 95 % interval; dev and, with dev
halves, the half the search never read: point and 95 % interval), the seconds to the first plan
within the tolerance that removes something (counted from the call, loading and scoring
included), the whole time, the plans evaluated, and the load average before and after (timings on
a shared CPU are indicative).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from results_file import append_jsonl, git_commit
from obce_core.search import SearchSettings, search_task_model

JSONL = Path(__file__).resolve().parent / "data" / "search.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--scorers", default="rf,std,fisher,random")
    ap.add_argument("--seeds", default="1", help="search-split seeds, comma-separated")
    ap.add_argument("--run", default="", help="a name for this set of searches (search_table.py --run groups by it)")
    ap.add_argument("--search-split", default="auto")
    ap.add_argument("--confidence", type=float, default=90.0)
    ap.add_argument("--compensation", default="auto")
    ap.add_argument("--time-budget", type=float, default=420.0)
    ap.add_argument("--search-size", type=int, default=None)
    ap.add_argument("--sensitivity-size", type=int, default=512)
    ap.add_argument("--sensitivity-levels", default="20,40,60,80")
    ap.add_argument("--out-root", required=True)
    ap.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    a = ap.parse_args()
    Path(a.out_root).mkdir(parents=True, exist_ok=True)
    for seed, scorer in [(int(seed), scorer) for seed in a.seeds.split(",") for scorer in a.scorers.split(",")]:
        settings = SearchSettings(tolerance=a.tolerance, scorer=scorer, compensation=a.compensation,
                                  time_budget_s=a.time_budget, seed=seed, confidence=a.confidence,
                                  split=a.search_split,
                                  sensitivity_levels=[float(x) for x in a.sensitivity_levels.split(",")])
        start, first = time.perf_counter(), []

        def on_row(row, start=start, first=first):
            if not first and row["feasible"] and row["cost_removed"] > 0:
                first.append(time.perf_counter() - start)

        load_before = os.getloadavg()[0]
        report = search_task_model(a.model, a.task, Path(a.out_root) / f"{a.task}-{scorer}-s{seed}", settings,
                                   glue_dir=a.glue_dir, search_size=a.search_size, search_seed=seed,
                                   sensitivity_size=a.sensitivity_size, overwrite=True, on_row=on_row,
                                   progress=lambda event: None)
        record = {
            "run": a.run, "task": report.task, "scorer": scorer, "seed": seed, "tolerance": a.tolerance,
            "compensation": a.compensation, "confidence": a.confidence, "search_kind": report.search_kind,
            "search_drop": report.search_drop, "dev_drop": report.dev_drop, "check_drop": report.check_drop,
            "check_original": None if report.check_original is None else report.check_original["main_score"],
            "check_found": None if report.check_found is None else report.check_found["main_score"],
            "bound_note": report.bound_note, "promise": report.promise, "n_search": report.rows[0]["n_eval"],
            "flops_removed": report.cost_removed, "params_before": report.params_before,
            "params_after": report.params_after,
            "search_original": report.search_original["main_score"], "search_found": report.search_found["main_score"],
            "dev_original": report.dev_original["main_score"], "dev_found": report.dev_found["main_score"],
            "dev_drop_points": 100 * (report.dev_original["main_score"] - report.dev_found["main_score"]),
            "first_plan_s": first[0] if first else None, "search_s": report.seconds_search,
            "total_s": report.seconds_total, "plans": len(report.rows), "stopped": report.stopped,
            "plan": report.plan, "search_split": report.search_split, "sensitivity_split": report.sensitivity_split,
            "sensitivity_levels": settings.sensitivity_levels, "time_budget_s": a.time_budget, "model": a.model,
            "load_before": load_before, "load_after": os.getloadavg()[0], "commit": git_commit(),
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        append_jsonl(JSONL, record)
        print(f"{scorer:8s} s{seed} {100 * report.cost_removed:5.1f} % FLOPs removed | search drop "
              f"{report.search_drop['drop']:+.2f} (<= {report.search_drop['upper']:+.2f}) | dev {100 * report.dev_found['main_score']:.2f}"
              f" vs {100 * report.dev_original['main_score']:.2f} | first plan {record['first_plan_s'] or float('nan'):.0f} s"
              f" | {report.seconds_total:.0f} s total, {len(report.rows)} plans", flush=True)


if __name__ == "__main__":
    main()
