"""Durations estimated before work starts against the measured ones (issue 24; target within 1.5x on
a quiet machine).

Each row does what the dashboard does: the estimate comes from a calibration measured here for the
model (``step_timing.calibrate_finetune``, ``time_job_start``, remembered in a fresh cache folder)
and the load at that moment (``obce_core.jobs.estimate``); then the work runs and its wall time is
taken the way a user meets it (a job: from ``start_job`` until its status says done).

1. Smoke fine-tune (Model & data, Task models): ``FinetuneJobSpec`` on SST-2, the ``smoke`` recipe,
   the embedded model.
2. Compare smoke job: ``JobSpec`` paper protocol on SST-2, ``smoke`` recipe, the default plan,
   pruned by the scores of ``--n`` demo texts (the page's "current scores").
3. Label-free curves (Prune page): ``embedding_sweep`` of the embedded model over the FFN group at
   percentiles 0, 20, ..., 80 for rf and std, estimated from one plan's measured evidence time.
4. A sweep job (Prune page): ``SweepJobSpec`` of the task model trained in row 1, FFN at 0 and 50 %,
   rf and random (one seed), 256 dev examples, estimated from one measured plan score.

    python benchmarks/bench_estimates.py [--glue DIR]

Prints the table and the load average (1-minute) before and after each row; writes nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GLUE = ROOT.parent / "shared" / "data" / "glue"
TARGET = 1.5


def _job_wall(spec, workspace: Path) -> tuple[float, str]:
    from obce_core import jobs

    start = time.perf_counter()
    job_id = jobs.start_job(spec, workspace)
    folder = workspace / "jobs" / job_id
    while True:
        status = jobs.job_status(folder)
        if not status.active:
            break
        time.sleep(0.5)
    return time.perf_counter() - start, status.state if status.state == "done" else f"{status.state}: {status.error}"


def _load() -> float:
    return os.getloadavg()[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, default=GLUE, help=f"GLUE copy (default {GLUE})")
    parser.add_argument("--n", type=int, default=64, help="demo texts scored for the plans (default 64)")
    parser.add_argument("--sweep-only", type=Path, default=None, metavar="TASK_MODEL",
                        help="only row 4, on this SST-2 task model folder")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="obce-estimates-"))
    os.environ.update({"OBCE_CACHE_DIR": str(tmp / "cache"), "OBCE_WORKSPACE": str(tmp / "ws"),
                       "OBCE_GLUE_DIR": str(args.glue), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "TRANSFORMERS_VERBOSITY": "error"})
    workspace = tmp / "ws"

    from obce_core import jobs, load_model, score_model
    from obce_core.evidence import encode_split, score_plan
    from obce_core.evidence.embedding import heldout_texts, sentence_pooling
    from obce_core.evidence.embedding_sweep import EmbeddingProbe, embedding_plan_evidence, embedding_sweep
    from obce_core.evidence.sweep import sweep_points
    from obce_core.export import scores_file
    from obce_core.jobs.estimate import TASK_POINT, TASK_POINT_EXAMPLES, estimate_job, evaluated_points
    from obce_core.loading import model_fingerprint
    from obce_core.pruning import PruningPlan, capture_calibration
    from obce_core.scoring import demo_sentences
    from obce_core.training import Recipe
    from obce_core.training.step_timing import MachineLoad, StepTimes, calibrate_finetune, device_key, time_job_start

    store = StepTimes()
    rows = []

    def row(name: str, estimate_s: float, measured_s: float, load_est: float, load_run: tuple, note: str = "") -> None:
        ratio = max(estimate_s, measured_s) / min(estimate_s, measured_s)
        rows.append((name, estimate_s, measured_s, ratio, load_est, load_run, note))
        print(f"  {name}: estimate {estimate_s:.0f} s (load {load_est:.1f}), measured {measured_s:.0f} s "
              f"(load {load_run[0]:.1f} -> {load_run[1]:.1f}), factor {ratio:.2f} {note}", flush=True)

    print(f"load average at the start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    texts = demo_sentences()[: args.n]
    task_model = args.sweep_only.resolve() if args.sweep_only else tmp / "task_models" / "sst2-smoke"
    time_job_start(store=store)
    if args.sweep_only is None:
        smoke = Recipe.preset("smoke", "sst2")
        start = time.perf_counter()
        calibrate_finetune("default", "sst2", smoke, store=store)
        print(f"calibration (job start + embedded model, smoke recipe): {time.perf_counter() - start:.1f} s", flush=True)
        model, tokenizer = load_model("default")
        fingerprint = model_fingerprint(model)

        # 1. smoke fine-tune
        spec = jobs.FinetuneJobSpec(task="sst2", out=str(task_model), recipe=smoke)
        load_est = _load()
        estimate = estimate_job(spec, fingerprint, store)
        before = _load()
        wall, state = _job_wall(spec, workspace)
        row("smoke fine-tune (Task models)", estimate.seconds, wall, load_est, (before, _load()), state)

        # 2. Compare smoke job, pruned by the current scores
        scores = score_model(model, tokenizer, texts)
        spec = jobs.JobSpec(tasks=["sst2"], plan=PruningPlan(), recipe=smoke, scores=str(scores_file(scores, workspace)))
        load_est = _load()
        estimate = estimate_job(spec, fingerprint, store)
        before = _load()
        wall, state = _job_wall(spec, workspace)
        row("Compare smoke job (paper protocol)", estimate.seconds, wall, load_est, (before, _load()), state)

        # 3. label-free curves, estimated from one plan's measured evidence (what the page measures first)
        held = heldout_texts(demo_sentences(), texts, n=128, seed=0)
        probe = EmbeddingProbe.build(model, tokenizer, held, sentence_pooling(model), texts_source="demo")
        calibration = capture_calibration(model, tokenizer, texts)
        one = embedding_plan_evidence(model, scores, PruningPlan(), probe, calibration=calibration)
        store.remember(fingerprint, device_key(), "labelfree_point", one["eval_s"])
        groups, percentiles, scorers = ["ffn"], range(0, 100, 20), ["rf", "std"]
        points = evaluated_points(sweep_points(groups, percentiles, scorers, [0], "bench"))
        load_est = _load()
        estimate_s = points * store.seconds(fingerprint, device_key(), "labelfree_point")
        before = _load()
        start = time.perf_counter()
        embedding_sweep(model, scores, probe, groups=groups, percentiles=percentiles, scorers=scorers, seeds=[0],
                        skip_layers=1, compensation="auto", calibration=calibration, cache_dir=tmp / "sweeps")
        row(f"label-free curves ({points} points)", estimate_s, time.perf_counter() - start, load_est, (before, _load()))

    # 4. a sweep job of the task model from row 1, estimated from one measured plan score
    if task_model.is_dir():
        tm, tm_tokenizer = load_model(str(task_model))
        tm_key = model_fingerprint(tm)
        sweep_recipe = Recipe.for_task("sst2").replace(max_length=128)
        calibrate_finetune(str(task_model), "sst2", sweep_recipe, store=store, model_key=tm_key)
        tm_scores = score_model(tm, tm_tokenizer, texts)
        encoded = encode_split(tm_tokenizer, "sst2", eval_size=TASK_POINT_EXAMPLES, seed=0)
        tm_calibration = capture_calibration(tm, tm_tokenizer, texts)
        point = score_plan(tm, tm_scores, PruningPlan(), encoded, calibration=tm_calibration)
        store.remember(tm_key, device_key(), TASK_POINT, point["eval_s"])
        spec = jobs.SweepJobSpec(model=str(task_model), task="sst2", groups=["ffn"], percentiles=[0, 50],
                                 scorers=["rf", "random"], seeds=[0], eval_size=TASK_POINT_EXAMPLES, score_texts=128)
        load_est = _load()
        estimate = estimate_job(spec, tm_key, store)
        before = _load()
        wall, state = _job_wall(spec, workspace)
        row("sweep job (3 evaluated points)", estimate.seconds, wall, load_est, (before, _load()), state)

    print("\n| work | estimate (s) | measured (s) | factor | load at estimate | load during run |")
    print("|---|---:|---:|---:|---:|---|")
    for name, est, meas, ratio, load_est, (a, b), note in rows:
        print(f"| {name} | {est:.0f} | {meas:.0f} | {ratio:.2f} | {load_est:.1f} | {a:.1f} -> {b:.1f} |"
              + (f" {note}" if note and note != "done" else ""))
    worst = max(r[3] for r in rows)
    print(f"\nworst factor {worst:.2f}; target within {TARGET}x on a quiet machine: "
          f"{'met' if worst <= TARGET else 'NOT met'} (load now {MachineLoad.now().describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
