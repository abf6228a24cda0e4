"""The paper-style GLUE table: original vs rf-pruned (p = 30/50/70) and random-pruned (p = 50).

Paper protocol on every task: the pre-trained encoder gets a new head, is pruned with the plan
(all groups: FFN, Q/K pairs, V dims; the first ``--skip-layers`` layers untouched; scores from
``--score-n`` training sentences of the task at [CLS]), and original and pruned are fine-tuned with
the same recipe and seed, then scored on the validation split. Every run goes through
``obce_core.jobs`` and its results store, so a rerun is answered from the store at once and an
interrupted run resumes where it stopped. The table is written into the ``## GLUE`` section of
``benchmarks/RESULTS.md`` after every plan (``--no-write`` to skip).

    python benchmarks/glue_table.py                        # CPU: all-MiniLM, each task's CPU preset
    python benchmarks/glue_table.py --model bert-base-uncased --recipe bert-glue --tasks sst2,cola,mrpc,rte,stsb,qnli,qqp,mnli
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from obce_core import glue  # noqa: E402
from obce_core.training import PRESET_CHOICES, PhaseEvent, Recipe  # noqa: E402
from obce_core.jobs import JobSpec, create_job, run_job  # noqa: E402
from obce_core.pruning import PruningPlan  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## GLUE"
# The metric(s) shown per task, in GLUE's usual order.
SHOWN = {"cola": ["matthews_correlation"], "sst2": ["accuracy"], "mrpc": ["accuracy", "f1"],
         "stsb": ["pearson", "spearmanr"], "qqp": ["accuracy", "f1"], "mnli": ["accuracy", "accuracy_mismatched"],
         "qnli": ["accuracy"], "rte": ["accuracy"], "wnli": ["accuracy"]}
SHORT = {"matthews_correlation": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "P", "spearmanr": "S",
         "accuracy_mismatched": "acc-mm"}


def variants(percents: list[float], random_percents: list[float], skip_layers: int) -> list[tuple[str, PruningPlan]]:
    """(label, plan) in run order: rf at 50 first (the headline), then the control, then the rest."""
    rf = {p: PruningPlan(ffn=p, qk=p, v=p, skip_layers=skip_layers, scorer="rf") for p in percents}
    out = [(f"rf p={p:g}", rf[p]) for p in sorted(percents, key=lambda p: (p != 50, p))]
    out[1:1] = [(f"random p={p:g}", PruningPlan(ffn=p, qk=p, v=p, skip_layers=skip_layers, scorer="random", seed=0))
                for p in random_percents]
    return out


def fmt(x, digits=1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def build_table(tasks, labels, runs) -> tuple[str, dict]:
    """Markdown rows: one per model variant. ``runs[label][task]`` is a RunResult (or missing)."""
    originals = runs.get("original", {})
    head = ["model", "params % (all)", "params % (encoder)"]
    for task in tasks:
        head += [f"{glue.get_task(task).dir_name if task != 'sst2' else 'SST-2'} {SHORT[m]}" for m in SHOWN[task]]
    head += ["GLUE avg", "avg / original", "latency ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = {}
    for label in ["original", *labels]:
        got = runs.get(label, {})
        row = [label]
        any_run = next(iter(got.values()), None)
        base = next((originals[t] for t in tasks if t in originals and t in got), None)
        mine = next((got[t] for t in tasks if t in got and t in originals), None)
        if mine is not None and base is not None:
            row += [fmt(100 * mine.params_total / base.params_total), fmt(100 * mine.params_encoder / base.params_encoder)]
        else:
            row += ["100.0", "100.0"] if label == "original" and any_run else ["—", "—"]
        for task in tasks:
            r = got.get(task)
            row += [fmt(100 * r.metrics[m]) if r is not None and m in r.metrics else "—" for m in SHOWN[task]]
        complete = all(t in got for t in tasks)
        avg = sum(got[t].main_score for t in tasks) / len(tasks) if complete else None
        base_avg = (sum(originals[t].main_score for t in tasks) / len(tasks)
                    if all(t in originals for t in tasks) else None)
        ratio = avg / base_avg if avg is not None and base_avg else None
        lat = [got[t].latency_ms for t in tasks if t in got and got[t].latency_ms is not None]
        row += [fmt(100 * avg) if avg is not None else "—", fmt(100 * ratio) + " %" if ratio is not None else "—",
                fmt(sum(lat) / len(lat)) if lat else "—"]
        summary[label] = {"avg": avg, "ratio": ratio}
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), summary


def majority_scores(tasks, glue_dir, recipe) -> dict:
    """Per task, the metrics of always predicting the dev split's most common label (what
    "learned nothing" scores); ``None`` for regression."""
    import numpy as np

    out = {}
    for task in tasks:
        labels = np.asarray(glue.load_task(task, "validation", glue_dir, n=recipe.eval_size, seed=recipe.seed)["label"])
        if glue.get_task(task).is_regression:
            out[task] = None
            continue
        metrics = glue.compute_metrics(task, np.full(len(labels), np.bincount(labels).argmax()), labels)
        out[task] = {**metrics, "main_score": glue.main_score(task, metrics)}
    return out


def majority_row(tasks, majority) -> str:
    cells = ["majority class (reference)", "", ""]
    for task in tasks:
        m = majority[task]
        cells += [fmt(100 * m[k]) if m and k in m else "—" for k in SHOWN[task]]
    mains = [majority[t]["main_score"] for t in tasks if majority[t]]
    cells += [fmt(100 * sum(mains) / len(mains)) if len(mains) == len(tasks) else "—", "", ""]
    return "| " + " | ".join(cells) + " |"


def learned_note(tasks, labels, runs, majority) -> str:
    """Which tasks the original learned (> 2 points over the majority class), and how much of the
    original's score each variant keeps on those tasks alone."""
    originals = runs.get("original", {})
    learned = [t for t in tasks if t in originals and majority[t]
               and originals[t].main_score - majority[t]["main_score"] > 0.02]
    flat = [t for t in tasks if t in originals and t not in learned]
    if not learned:
        return "The original stayed within 2 points of the majority class on every task: this table measures nothing yet."
    parts = []
    for label in labels:
        got = runs.get(label, {})
        if all(t in got for t in learned):
            keep = sum(got[t].main_score for t in learned) / sum(originals[t].main_score for t in learned)
            parts.append(f"{label} {100 * keep:.1f} %")
    text = (f"Tasks the original learned (more than 2 points above the majority class): {', '.join(learned)}. "
            f"On those alone, each variant keeps this share of the original's score: {'; '.join(parts)}.")
    if flat:
        text += (f" On {', '.join(flat)} the original itself is within 2 points of the majority class (this recipe is too "
                 "short for them), so their columns, and the GLUE-average ratios that include them, say little "
                 "about pruning.")
    return text


def write_section(text: str) -> None:
    """Replace the ``## GLUE`` section of RESULTS.md (up to the next ``## `` heading), or append it."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = text.rstrip() + "\n\n"
    new = pattern.sub(lambda _m: block, old, count=1) if pattern.search(old) else old.rstrip() + "\n\n" + block
    RESULTS.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tasks", default="sst2,cola,mrpc,rte")
    parser.add_argument("--glue-dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--workspace", default=str(REPO / "obce_workspace"))
    parser.add_argument("--recipe", default="cpu", choices=PRESET_CHOICES, help="cpu: each task's CPU preset")
    parser.add_argument("--max-steps", type=int, help="override the preset (quick checks)")
    parser.add_argument("--train-size", type=int, help="override the preset")
    parser.add_argument("--percents", default="30,50,70")
    parser.add_argument("--random-percents", default="50")
    parser.add_argument("--skip-layers", type=int, default=2)
    parser.add_argument("--score-n", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy 2-core machine)")
    parser.add_argument("--device")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("train_size", args.train_size)) if v is not None}
    tasks = [glue.get_task(t).name for t in args.tasks.split(",") if t.strip()]
    recipes = {task: Recipe.preset(args.recipe, task, **overrides) for task in tasks}
    recipe = recipes[tasks[0]]
    plans = variants([float(p) for p in args.percents.split(",") if p], [float(p) for p in args.random_percents.split(",") if p],
                     args.skip_layers)
    command = "python benchmarks/glue_table.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = time.time()
    runs: dict[str, dict] = {}

    def report(event) -> None:
        if isinstance(event, PhaseEvent):
            print(f"[{time.time() - started:7.0f} s] {event.phase}", flush=True)

    def publish(done: list[str]) -> None:
        table, summary = build_table(tasks, [label for label, _ in plans], runs)
        table += "\n" + majority_row(tasks, majority)
        note = learned_note(tasks, [label for label, _ in plans], runs, majority)
        compute_s = sum(r.wall_s for v in runs.values() for r in v.values())
        print("\n" + table + "\n", flush=True)
        if args.no_write:
            return
        state = "complete" if len(done) == len(plans) else f"PARTIAL: {len(done)} of {len(plans)} plans done, run in progress"
        r50 = summary.get("rf p=50", {}).get("ratio")
        device = next((r.device for v in runs.values() for r in v.values()), "?")
        text = f"""{SECTION}

Paper protocol (`obce_core.training.run_paper_protocol`): the pre-trained encoder gets a new task head
(seeded), is pruned on ALL groups (FFN units, query/key pairs, value dims) with the first
{args.skip_layers} layers left whole, scores from {args.score_n} training sentences of each task at [CLS];
original and pruned are then fine-tuned with the same recipe and seed and scored on the full GLUE dev
split. Scores x100; params % = pruned / original (whole model, and the encoder layers alone);
latency = median ms of one forward pass over {recipe.eval_batch_size} dev examples on `{device}` (mean over
tasks; a shared, busy 2-core CPU, so indicative only).

Model `{args.model}` (all-MiniLM-L6-v2 when `default`); recipe `{args.recipe}`:
{chr(10).join(f"- {t}: `{r.canonical_json()}`" for t, r in recipes.items())}

Small tasks (RTE, MRPC, CoLA) are noisy; compare rows with each other, not with published numbers.

Status: {state}. The runs in the table took {compute_s / 60:.0f} min of fine-tuning + evaluation in all
(this invocation: {time.time() - started:.0f} s; runs already in the store cost nothing).
Measured {_dt.date.today().isoformat()} with:

    {command}

{table}

Ratio of GLUE averages, rf p=50 / original: {fmt(100 * r50, 1) + ' %' if r50 is not None else '— (not finished)'} (target >= 99 %).
{note}

On a GPU, BERT-base with BERT's GLUE recipe (128 tokens, batch 32, lr 2e-5, 3 epochs; download the
model first on a machine with network access, e.g. `hf download bert-base-uncased --local-dir bert-base-uncased`):

    python benchmarks/glue_table.py --model ./bert-base-uncased --recipe bert-glue --tasks sst2,cola,mrpc,rte,stsb,qnli,qqp,mnli --glue-dir /path/to/glue_data
    # or one setting, in the foreground, on several GPUs:
    accelerate launch -m obce_core glue --model ./bert-base-uncased --recipe bert-glue --precision bf16 --ffn 50 --qk 50 --v 50 --skip-layers 2 --tasks sst2,mrpc --glue-dir /path/to/glue_data
"""
        write_section(text)

    majority = majority_scores(tasks, args.glue_dir, recipe)  # eval_size and seed: the same in every preset
    done: list[str] = []
    for label, plan in plans:
        spec = JobSpec(model=args.model, tasks=tasks, plan=plan, recipe=recipe, recipes=recipes, glue_dir=args.glue_dir,
                       score_n=args.score_n, device=args.device)
        print(f"== {label}: {plan.describe()}", flush=True)
        for result in run_job(create_job(spec, args.workspace), progress=report):
            runs.setdefault("original" if result.role == "original" else label, {})[result.task] = result
        done.append(label)
        publish(done)
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
