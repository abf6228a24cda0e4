"""Sequential least-squares tuning against ``auto``, and recovery of a pruned task model from its teacher.

    # label-free: mean cosine of sentence embeddings, pruned vs original, embedded all-MiniLM-L6-v2
    python benchmarks/bench_recovery.py cosine --plans 30/30/30,50/40/40,70/60/60
    # retraining-free: whole-dev main score of a task model pruned at each plan, auto vs sequential-lsq
    python benchmarks/bench_recovery.py free --model TASK_MODEL --task sst2 --plans 50/40/40,70/60/60
    # recovery: prune at one plan (sequential-lsq), then `finetune --teacher` with the recover preset
    python benchmarks/bench_recovery.py recover --model TASK_MODEL --task sst2 --plans 80/60/60 --out DIR

A plan ``F/V/Q`` removes F % of FFN units, V % of value dims and Q % of query/key pairs in every
layer (``--hidden P`` also P % of the residual stream's dims, normalised by ``--hidden-norm``;
``--skip-layers`` leaves the first ones whole; ``--plan-from DIR`` reads a saved plan, e.g. a
search's ``obce_plan.json``), units ranked by ``--scorer`` on ``--score-texts`` training
sentences, which the calibration is captured from too (as the plan search does). FLOPs removed are
the pruning report's ESTIMATE (encoder dense matmuls). One JSON line per call goes to
``benchmarks/data/recovery.jsonl`` with the load average before and after: timings on a shared CPU
are indicative.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


from obce_core import glue, load_model
from obce_core.evidence.embedding import compare_embeddings, sentence_embeddings, sentence_pooling
from obce_core.evidence.task_sweep import task_scores, training_texts
from obce_core.pruning import (HIDDEN_NORMS, PruningPlan, capture_calibration, capture_stream, load_plan, prune,
                               save_pruned)
from obce_core.scoring import score_model
from obce_core.training import evaluate, finetune_task_model, read_task_model_info
from obce_core.training.recovery import recovery_recipe
from results_file import append_jsonl, git_commit

JSONL = Path(__file__).resolve().parent / "data" / "recovery.jsonl"
COMPENSATIONS = ("auto", "sequential-lsq")


def _plans(a) -> list[PruningPlan]:
    if a.plan_from:
        return [load_plan(a.plan_from)]
    out = []
    for item in a.plans.split(","):
        ffn, v, qk = (float(x) for x in item.split("/"))
        out.append(PruningPlan(ffn=ffn, v=v, qk=qk, skip_layers=a.skip_layers, scorer=a.scorer, hidden=a.hidden,
                               hidden_norm=a.hidden_norm))
    return out


def _with(plan: PruningPlan, compensation: str) -> PruningPlan:
    return PruningPlan.from_dict({**plan.to_dict(), "compensation": compensation})


def _timed_prune(model, scores, plan, calibration, stream=None):
    start = time.perf_counter()
    pruned, report = prune(model, scores, plan, calibration=calibration, hidden_stream=stream)
    return pruned, report, time.perf_counter() - start


def cmd_cosine(a) -> dict:
    model, tokenizer = load_model(device="cpu")
    pool = training_texts("sst2", glue_dir=a.glue_dir, n=a.score_texts + a.probe_texts, seed=a.score_seed)
    scored, probe = pool[:a.score_texts], pool[a.score_texts:]
    scores = score_model(model, tokenizer, scored)
    calibration = capture_calibration(model, tokenizer, scored)
    pooling = sentence_pooling(model)
    reference = sentence_embeddings(model, tokenizer, probe, pooling)
    rows = []
    for plan in _plans(a):
        for name in COMPENSATIONS:
            pruned, report, seconds = _timed_prune(model, scores, _with(plan, name), calibration)
            cos = compare_embeddings(reference, sentence_embeddings(pruned, tokenizer, probe, pooling))
            rows.append({"plan": plan.describe(), "compensation": name, "flops_removed": 1 - report.flops_ratio_estimate,
                         "mean_cosine": cos["mean_cosine"], "min_cosine": cos["min_cosine"], "prune_s": seconds})
            print(f"{plan.describe()[:40]:<40} {name:<15} FLOPs removed {100 * rows[-1]['flops_removed']:5.1f} %  "
                  f"mean cosine {cos['mean_cosine']:.4f}  min {cos['min_cosine']:.4f}  prune {seconds:5.1f} s", flush=True)
    return {"rows": rows, "probe_texts": len(probe), "score_texts": len(scored)}


def _task_setup(a):
    task = glue.get_task(a.task).name
    info = read_task_model_info(a.model)
    if info is None or info.task != task:
        sys.exit(f"error: {a.model!r} is not a task model for {task} (no obce_task.json naming it).")
    model, tokenizer = load_model(a.model, device="cpu")
    scores = task_scores(model, tokenizer, task, scorers=[a.scorer], glue_dir=a.glue_dir, score_texts=a.score_texts,
                         score_seed=a.score_seed)
    texts = training_texts(task, glue_dir=a.glue_dir, n=a.score_texts, seed=a.score_seed)
    calibration = capture_calibration(model, tokenizer, texts)
    # the residual stream ranks and normalises a hidden cut (--hidden), on the same training texts
    stream = capture_stream(model, tokenizer, texts) if a.hidden else None
    return task, info, model, tokenizer, scores, calibration, stream


def cmd_free(a) -> dict:
    task, info, model, tokenizer, scores, calibration, stream = _task_setup(a)
    recipe = info.recipe.without_teacher().replace(eval_size=None)
    original = evaluate(model, tokenizer, task, recipe, glue_dir=a.glue_dir, device="cpu")["main_score"]
    print(f"{task} original dev main score {100 * original:.2f}", flush=True)
    rows = []
    for plan in _plans(a):
        for name in COMPENSATIONS:
            pruned, report, seconds = _timed_prune(model, scores, _with(plan, name), calibration, stream)
            score = evaluate(pruned, tokenizer, task, recipe, glue_dir=a.glue_dir, device="cpu")["main_score"]
            rows.append({"plan": plan.describe(), "compensation": name, "flops_removed": 1 - report.flops_ratio_estimate,
                         "dev_main_score": score, "drop_points": 100 * (original - score), "prune_s": seconds})
            print(f"{plan.describe()[:40]:<40} {name:<15} FLOPs removed {100 * rows[-1]['flops_removed']:5.1f} %  "
                  f"dev {100 * score:6.2f} ({100 * (score - original):+.2f})  prune {seconds:5.1f} s", flush=True)
    return {"task": task, "original_dev_main_score": original, "rows": rows}


def cmd_recover(a) -> dict:
    task, info, model, tokenizer, scores, calibration, stream = _task_setup(a)
    (plan,) = _plans(a)[:1]
    plan = _with(plan, a.compensation)
    out = Path(a.out)
    recipe = info.recipe.without_teacher().replace(eval_size=None)
    original = evaluate(model, tokenizer, task, recipe, glue_dir=a.glue_dir, device="cpu")["main_score"]
    pruned_dir = out / "pruned"
    pruned, report, seconds = _timed_prune(model, scores, plan, calibration, stream)
    save_pruned(pruned, tokenizer, pruned_dir, plan=plan, report=report, overwrite=True)
    free = evaluate(pruned, tokenizer, task, recipe, glue_dir=a.glue_dir, device="cpu")["main_score"]
    flops = 1 - report.flops_ratio_estimate
    print(f"{task}: original {100 * original:.2f}; {plan.describe()} removes {100 * flops:.1f} % of encoder FLOPs "
          f"(estimate); retraining-free {100 * free:.2f} ({100 * (free - original):+.2f})", flush=True)
    overrides = {k: v for k, v in (("learning_rate", a.lr), ("epochs", a.epochs), ("kd_hidden", a.kd_hidden),
                                   ("kd_alpha", a.kd_alpha)) if v is not None}
    recovery = recovery_recipe(task, info, **overrides)
    start = time.perf_counter()
    made = finetune_task_model(task, out / "recovered", model=str(pruned_dir), teacher=a.model, recipe=recovery,
                               glue_dir=a.glue_dir, device="cpu", overwrite=True,
                               progress=lambda e: print(f"  {e}", flush=True) if not hasattr(e, "step") or
                               e.step % 100 == 0 else None)
    wall = time.perf_counter() - start
    print(f"{task}: recovered {100 * made.main_score:.2f} ({100 * (made.main_score - original):+.2f} vs original) after "
          f"{made.train_steps} steps, {made.train_s:.0f} s training, {wall:.0f} s in all", flush=True)
    return {"task": task, "plan": plan.to_dict(), "flops_removed": flops, "original_dev_main_score": original,
            "free_dev_main_score": free, "recovered_dev_main_score": made.main_score, "train_steps": made.train_steps,
            "train_s": made.train_s, "wall_s": wall, "recipe": made.recipe.to_dict(), "prune_s": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("cosine", "free", "recover"))
    p.add_argument("--model", help="a task model folder (free, recover)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--plans", default="30/30/30,50/40/40,70/60/60", help="F/V/Q percentages, comma-separated")
    p.add_argument("--plan-from", help="a folder with a saved plan (a pruned model or a search's folder) instead of --plans")
    p.add_argument("--skip-layers", type=int, default=0)
    p.add_argument("--hidden", type=float, default=0.0, help="percent of the residual stream's dims removed too")
    p.add_argument("--hidden-norm", default="kept", choices=HIDDEN_NORMS)
    p.add_argument("--scorer", default="rf")
    p.add_argument("--compensation", default="sequential-lsq", help="recover: the plan's compensation")
    p.add_argument("--score-texts", type=int, default=512)
    p.add_argument("--score-seed", type=int, default=0)
    p.add_argument("--probe-texts", type=int, default=500, help="cosine: held-out sentences compared")
    p.add_argument("--out", help="recover: folder for the pruned and the recovered model")
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", type=float)
    p.add_argument("--kd-hidden", type=float)
    p.add_argument("--kd-alpha", type=float)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    p.add_argument("--jsonl", default=str(JSONL))
    a = p.parse_args(argv)
    if a.mode != "cosine" and not a.model:
        p.error(f"{a.mode} needs --model TASK_MODEL")
    if a.mode == "recover" and not a.out:
        p.error("recover needs --out DIR")
    load_before = os.getloadavg()
    begin = time.perf_counter()
    result = {"cosine": cmd_cosine, "free": cmd_free, "recover": cmd_recover}[a.mode](a)
    load_after = os.getloadavg()
    record = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
              "mode": a.mode, "model": a.model or "default", **result, "seconds": round(time.perf_counter() - begin, 1),
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "load_avg": [load_before[0], load_after[0]],
              "argv": sys.argv[1:] if argv is None else list(argv)}
    append_jsonl(Path(a.jsonl), record)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; appended to {a.jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
