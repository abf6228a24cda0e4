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
(drop +- 1.96 * sqrt(se_held_out^2 + se_dev^2)). The held-out part "predicts dev" when that share
is at least 80 % and the mean difference is under 0.5 points.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--mixes", type=int, default=6)
    ap.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    a = ap.parse_args()
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
    diff = np.array([r["dev"]["drop"] - r["held_out"]["drop"] for r in records])
    held_drops, dev_drops = ([r[k]["drop"] for r in records] for k in ("held_out", "dev"))
    corr = np.corrcoef(held_drops, dev_drops)[0, 1]
    slope = np.polyfit(held_drops, dev_drops, 1)[0]  # dev points lost per held-out point lost
    inside = np.mean([r["inside"] for r in records])
    predicts = inside >= 0.8 and abs(diff.mean()) < 0.5
    print(f"\n{spec.name}: dev - held-out drop: mean {diff.mean():+.2f}, sd {diff.std(ddof=1):.2f} points; correlation "
          f"{corr:.3f}, slope {slope:.2f}; dev drop inside the prediction interval for {100 * inside:.0f} % of {len(records)} plans -> "
          f"held-out {'PREDICTS' if predicts else 'does NOT predict'} dev. {time.perf_counter() - begin:.0f} s, load "
          f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
