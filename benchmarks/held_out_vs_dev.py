"""Does a plan's drop on the held-out part of the training split predict its drop on dev?

    python benchmarks/held_out_vs_dev.py --model /work/bench/task_models/sst2 --task sst2

The plan search's default examples (``search.splits.HELD_OUT_PREDICTS_DEV``) follow this
measurement. For a task model that records a held-out part, a fixed set of plans (``rf`` ranks
the units, compensation ``auto``: every group at 10-60 %, each group alone at 40 and 70 %, and
per-layer mixes drawn with seed 0) is pruned and scored on the held-out part and on the whole dev
split; each drop is paired against the unpruned model on the same examples (``search.bound``).
One JSON line per plan goes to ``benchmarks/data/held_out_vs_dev.jsonl`` and a summary is printed:
the mean and sd of (dev drop - held-out drop), their correlation, and the share of plans whose dev
drop lies inside the held-out drop's 95 % prediction interval for a new sample
(drop +- 1.96 * sqrt(se_held_out^2 + se_dev^2)), over all plans and over the plans that matter for a
tolerance (held-out drop <= 5 points). The held-out part "predicts dev" unless, on the plans that
matter, dev drops differ from held-out drops systematically: a mean difference of at least 0.5
points (half of a 1-point tolerance) that is more than twice its standard error.

    python benchmarks/held_out_vs_dev.py --summary     # the summary of data/held_out_vs_dev.jsonl, per task
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from results_file import append_jsonl, git_commit
from obce_core import glue
from obce_core.evidence.evaluation import encode_dataset, encode_split
from obce_core.evidence.task_sweep import task_scores, training_texts
from obce_core.loading import load_model
from obce_core.pruning.calibration import capture_calibration
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.surgery import prune
from obce_core.search.bound import PairedBootstrap, predictions_of
from obce_core.search.cost import PlanCost
from obce_core.search.measure import task_metrics
from obce_core.training.task_models import load_held_out

JSONL = Path(__file__).resolve().parent / "data" / "held_out_vs_dev.jsonl"


def plans(num_layers: int, seed: int, mixes: int) -> list[PruningPlan]:
    out = [PruningPlan(ffn=p, qk=p, v=p, scorer="rf", compensation="auto") for p in (10, 20, 30, 40, 50, 60)]
    out += [PruningPlan(**{g: p}, scorer="rf", compensation="auto") for g in ("ffn", "qk", "v") for p in (40, 70)]
    rng = np.random.default_rng(seed)
    for _ in range(mixes):
        layers = {i: {g: float(rng.choice([0, 20, 40, 60, 80])) for g in ("ffn", "qk", "v")} for i in range(num_layers)}
        out.append(PruningPlan(scorer="rf", compensation="auto", layers=layers))
    return out


def summary(records: list[dict], task: str) -> str:
    lines = []
    for name, rows in (("all plans", records), ("plans with a held-out drop <= 5 points",
                                                 [r for r in records if r["held_out"]["drop"] <= 5])):
        if len(rows) < 3:
            continue
        held, dev = (np.array([r[k]["drop"] for r in rows]) for k in ("held_out", "dev"))
        diff = dev - held
        se = diff.std(ddof=1) / np.sqrt(len(rows))
        slope = np.polyfit(held, dev, 1)[0]  # dev points lost per held-out point lost
        inside = np.mean([r["inside"] for r in rows])
        lines.append(f"{task}, {name} ({len(rows)}): dev - held-out drop {diff.mean():+.2f} +- {se:.2f} (se) points, sd "
                     f"{diff.std(ddof=1):.2f}; {int(np.sum(diff > 0))}/{len(rows)} positive; correlation "
                     f"{np.corrcoef(held, dev)[0, 1]:.3f}, slope {slope:.2f}; dev drop inside the prediction interval "
                     f"for {100 * inside:.0f} %")
        if name.startswith("plans with"):
            biased = abs(diff.mean()) >= 0.5 and abs(diff.mean()) > 2 * se
            lines.append(f"-> on {task} the held-out part {'does NOT predict' if biased else 'predicts'} dev "
                         f"({'a systematic difference' if biased else 'no systematic difference beyond noise'}).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", action="store_true", help="only summarise data/held_out_vs_dev.jsonl per task")
    ap.add_argument("--model")
    ap.add_argument("--task")
    ap.add_argument("--mixes", type=int, default=6)
    ap.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    a = ap.parse_args()
    if a.summary:
        records = [json.loads(line) for line in JSONL.read_text(encoding="utf-8").splitlines()]
        for task in dict.fromkeys(r["task"] for r in records):
            print(summary([r for r in records if r["task"] == task], task))
        return
    if not a.model or not a.task:
        ap.error("--model and --task are required (or --summary)")
    begin, load_before = time.perf_counter(), os.getloadavg()[0]
    spec = glue.get_task(a.task)
    model, tokenizer = load_model(a.model, device="cpu")
    scores = task_scores(model, tokenizer, spec.name, scorers=["rf"], glue_dir=a.glue_dir)
    calibration = capture_calibration(model, tokenizer, training_texts(spec.name, glue_dir=a.glue_dir, n=512, seed=0))
    held = load_held_out(a.model, a.glue_dir)
    splits = {"held_out": encode_dataset(tokenizer, spec.name, held, split="held-out", eval_size=len(held)),
              "dev": encode_split(tokenizer, spec.name, glue_dir=a.glue_dir)}
    boots, originals = {}, {}
    for name, encoded in splits.items():
        metrics, logits = task_metrics(model, encoded, with_logits=True)
        originals[name] = metrics["main_score"]
        boots[name] = PairedBootstrap(spec.name, encoded.labels, predictions_of(spec.name, logits), seed=0)
    cost = PlanCost.for_model(model, "flops")
    print(f"{spec.name}: held-out {len(held)} examples, original {100 * originals['held_out']:.2f}; dev "
          f"{splits['dev'].n}, original {100 * originals['dev']:.2f}", flush=True)
    records = []
    for plan in plans(len(cost.shapes), 0, a.mixes):
        pruned, _ = prune(model, scores, plan, calibration=calibration)
        drops = {}
        for name, encoded in splits.items():
            _, logits = task_metrics(pruned, encoded, with_logits=True)
            drops[name] = boots[name].drop(predictions_of(spec.name, logits), 90.0)
        h, d = drops["held_out"], drops["dev"]
        half_width = 1.96 * np.hypot(h.se, d.se)
        record = {"task": spec.name, "model": a.model, "plan": plan.to_dict(),
                  "flops_removed": 1 - cost.of(plan) / cost.unpruned(),
                  "held_out": h.to_dict(), "dev": d.to_dict(), "inside": bool(abs(d.drop - h.drop) <= half_width),
                  "commit": git_commit(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        append_jsonl(JSONL, record)
        records.append(record)
        print(f"{100 * record['flops_removed']:5.1f} % FLOPs | held-out drop {h.drop:+6.2f} (se {h.se:.2f}) | dev drop "
              f"{d.drop:+6.2f} (se {d.se:.2f}) | {'inside' if record['inside'] else 'OUTSIDE'}", flush=True)
    print("\n" + summary(records, spec.name))
    print(f"{time.perf_counter() - begin:.0f} s, load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
