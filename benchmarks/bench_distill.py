"""What distillation buys: a pruned model fine-tuned plainly vs distilled from its teacher, same recipe and steps.

    python benchmarks/bench_distill.py --model PRUNED_DIR --teacher TASK_MODEL_DIR --task sst2

``PRUNED_DIR``: a model pruned from the teacher (``python -m obce_core prune --model TASK_MODEL_DIR
...`` or the Prune page's Save). Both runs go through ``finetune_task_model`` with one recipe (the
task's CPU preset unless ``--recipe``/overrides say otherwise); the distilled run adds the teacher
(``--kd-temperature``, ``--kd-alpha``). Reported on the same dev rows: the teacher, the pruned
model before any training, after the plain fine-tune and after distillation, with the training
times. One JSON line per call is appended to ``benchmarks/data/distill.jsonl``. Timings on a shared
CPU are indicative: the load average before and after is recorded beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from obce_core import glue, load_model
from results_file import append_jsonl, git_commit
from obce_core.training import Recipe, evaluate, finetune_task_model, parameter_counts, read_task_model_info

JSONL = Path(__file__).resolve().parent / "data" / "distill.jsonl"


def _recipe(a) -> Recipe:
    fields = {"max_steps": a.max_steps, "train_size": a.train_size, "eval_size": a.eval_size, "seed": a.seed,
              "kd_temperature": a.kd_temperature, "kd_alpha": a.kd_alpha}
    return Recipe.preset(a.recipe, a.task, **{k: v for k, v in fields.items() if v is not None})


def _score(source, task, recipe, glue_dir, device) -> dict:
    model, tokenizer = load_model(source, device=device)
    return {"metrics": evaluate(model, tokenizer, task, recipe.without_teacher(), glue_dir=glue_dir, device=device),
            "params": parameter_counts(model)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the pruned model (a classifier pruned from --teacher)")
    p.add_argument("--teacher", required=True, help="the task model it was pruned from")
    p.add_argument("--task", required=True)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR"))
    p.add_argument("--recipe", default="cpu", help="a preset (default: the task's CPU preset)")
    p.add_argument("--max-steps", type=int, help="override: steps of each run (0 = the preset's epochs)")
    p.add_argument("--train-size", type=int, help="override: seeded subset of the training split")
    p.add_argument("--eval-size", type=int, help="override: seeded subset of the dev split")
    p.add_argument("--seed", type=int)
    p.add_argument("--kd-temperature", type=float)
    p.add_argument("--kd-alpha", type=float)
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", help="save both trained models under this folder (default: a temp folder, removed)")
    p.add_argument("--jsonl", default=str(JSONL), help=f"where the result line is appended (default {JSONL})")
    a = p.parse_args(argv)

    task = glue.get_task(a.task).name
    recipe = _recipe(a)
    info = read_task_model_info(a.teacher)
    if info is None or info.task != task:
        print(f"error: {a.teacher!r} is not a task model for {task} (no obce_task.json naming it).", file=sys.stderr)
        return 2
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="obce-bench-distill-"))
    load_before = os.getloadavg()
    try:
        teacher = _score(a.teacher, task, recipe, a.glue_dir, a.device)
        untrained = _score(a.model, task, recipe, a.glue_dir, a.device)
        runs = {}
        for name, teacher_dir in (("plain", None), ("distilled", a.teacher)):
            start = time.perf_counter()
            made = finetune_task_model(task, root / name, model=a.model, recipe=recipe, teacher=teacher_dir,
                                       glue_dir=a.glue_dir, device=a.device, overwrite=bool(a.keep))
            runs[name] = {"metrics": made.metrics, "main_score": made.main_score, "train_s": made.train_s,
                          "train_steps": made.train_steps, "wall_s": round(time.perf_counter() - start, 1),
                          "recipe": made.recipe.to_dict()}
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    share = 100.0 * untrained["params"]["encoder"] / teacher["params"]["encoder"]
    print(f"{task}: dev main score x100 ({recipe.eval_size or 'all'} dev rows), recipe {recipe.without_teacher().canonical_json()}")
    print(f"  pruned encoder: {share:.1f} % of the teacher's encoder parameters")
    print(f"  teacher                 {100 * teacher['metrics']['main_score']:6.2f}")
    print(f"  pruned, no training     {100 * untrained['metrics']['main_score']:6.2f}")
    for name, run in runs.items():
        gap = 100 * (run["main_score"] - teacher["metrics"]["main_score"])
        print(f"  pruned + {name:<14} {100 * run['main_score']:6.2f}  ({gap:+.2f} vs teacher; {run['train_steps']} steps "
              f"in {run['train_s']:.0f} s)")
    print(f"  distillation - plain: {100 * (runs['distilled']['main_score'] - runs['plain']['main_score']):+.2f} points; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    record = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(), "task": task,
        "model": str(Path(a.model).resolve()), "teacher": str(Path(a.teacher).resolve()),
        "encoder_params_pct": round(share, 2), "teacher_main_score": teacher["metrics"]["main_score"],
        "untrained_main_score": untrained["metrics"]["main_score"], "runs": runs, "device": a.device,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "load_avg": [load_before[0], load_after[0]],
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    append_jsonl(Path(a.jsonl), record)
    print(f"appended to {a.jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
