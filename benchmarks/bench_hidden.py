"""Hidden dims against FFN units and attention dims at equal FLOPs, retraining-free, on task models.

    python benchmarks/bench_hidden.py --model /work/bench/task_models/sst2 --task sst2 --jsonl /tmp/hidden.jsonl
    python benchmarks/bench_hidden.py --table /tmp/hidden.jsonl      # writes the RESULTS.md section

For each ``--hidden`` percentile the plan removes that share of the residual stream (every
layer, the embeddings and the head shrink with it), ranked by rf / magnitude / random over the
stream's coordinates and normalised by each of ``HIDDEN_NORMS``. Beside it, the percentile of FFN
units (``ffn``) and of query/key + value dims (``attention``, ``qk = v``) whose closed-form FLOPs
estimate (``PruningReport.flops_ratio_estimate``) is closest to the hidden plan's, ranked by rf
with ``auto`` compensation (calibrated on training texts). Every cell is one evaluation of the
pruned model on the WHOLE dev split, with a bootstrap 95 % interval (an estimate) and the share
of dev examples whose predicted label is the original's. Scores, stream and calibration come
from ``--score-texts`` training sentences (never the held-out part's or dev's). Rows are
appended to ``--jsonl`` as they finish; rows already there are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import append_jsonl, commands_and_verdict, git_commit, write_section  # noqa: E402

from obce_core import capture_calibration, glue, load_model, score_model  # noqa: E402
from obce_core.evidence import encode_split, predict_logits, score_interval  # noqa: E402
from obce_core.evidence.task_sweep import training_texts  # noqa: E402
from obce_core.pruning import HIDDEN_NORMS, PruningPlan, build_report, capture_stream, prune, select_units  # noqa: E402

HEADING = "## Hidden dims against FFN units and attention dims at equal FLOPs (issue 25, item 3)"


def flops_ratio(model, scores, plan: PruningPlan) -> float:
    return build_report(model, select_units(scores, plan, model)).flops_ratio_estimate


def matched_percent(model, scores, target: float, family: str) -> float:
    """The percentile (0.5 steps) of ``family`` whose FLOPs estimate is closest to ``target``."""
    best, best_gap = 0.0, float("inf")
    for p in np.arange(0.5, 99.5, 0.5):
        plan = PruningPlan(ffn=p) if family == "ffn" else PruningPlan(qk=p, v=p)
        gap = abs(flops_ratio(model, scores, plan) - target)
        if gap < best_gap:
            best, best_gap = float(p), gap
    return best


def measure(a) -> None:
    done = set()
    if Path(a.jsonl).is_file():
        done = {json.loads(line)["key"] for line in Path(a.jsonl).read_text().splitlines() if line.strip()}
    model, tok = load_model(a.model, device="cpu")
    spec = glue.get_task(a.task)
    texts = training_texts(a.task, glue_dir=a.glue_dir, n=a.score_texts, seed=0)
    t0 = time.perf_counter()
    scores = score_model(model, tok, texts, max_length=a.max_length)
    stream = capture_stream(model, tok, texts, max_length=a.max_length)
    calibration = capture_calibration(model, tok, texts, max_length=a.max_length)
    encoded = encode_split(tok, a.task, glue_dir=a.glue_dir, max_length=a.max_length)
    print(f"prepared in {time.perf_counter() - t0:.0f} s; load {os.getloadavg()}", file=sys.stderr)
    original = predict_logits(model, encoded)
    original_label = original.argmax(-1)

    def run(key: str, family: str, plan: PruningPlan, level: float) -> None:
        if key in done:
            return
        t = time.perf_counter()
        pruned, report = prune(model, scores, plan, calibration=calibration, hidden_stream=stream)
        logits = predict_logits(pruned, encoded)
        interval = score_interval(spec.name, logits, encoded.labels)
        row = {"key": key, "task": spec.name, "family": family, "level": level, "plan": plan.describe(),
               "scorer": plan.scorer, "norm": plan.hidden_norm if family == "hidden" else plan.compensation,
               "flops_ratio": report.flops_ratio_estimate, "params_after": report.params_after["total"],
               "params_before": report.params_before["total"], "score": interval.score, "low": interval.low,
               "high": interval.high, "agree": float((logits.argmax(-1) == original_label).mean()),
               "n_dev": int(encoded.n), "seconds": time.perf_counter() - t, "load": os.getloadavg()[0],
               "commit": git_commit(), "model": a.model}
        append_jsonl(Path(a.jsonl), row)
        print(f"{key}: {100 * row['score']:.2f} [{100 * row['low']:.2f}, {100 * row['high']:.2f}] "
              f"flops {row['flops_ratio']:.3f} agree {row['agree']:.3f} ({row['seconds']:.0f} s)", file=sys.stderr)

    run(f"{spec.name}/original", "original", PruningPlan(), 0.0)
    for h in a.hidden:
        # The equal-FLOPs comparison first, then the normalisations, then the hidden-dim controls.
        run(f"{spec.name}/hidden/{h:g}/rf/kept", "hidden", PruningPlan(hidden=h, scorer="rf"), h)
        target = flops_ratio(model, scores, PruningPlan(hidden=h, scorer="random"))
        for family in ("ffn", "attention"):
            p = matched_percent(model, scores, target, family)
            plan = PruningPlan(ffn=p, compensation="auto") if family == "ffn" else PruningPlan(qk=p, v=p, compensation="auto")
            run(f"{spec.name}/{family}/{h:g}/rf/auto", family, plan, h)
        hidden_plans = [PruningPlan(hidden=h, hidden_norm=norm, scorer="rf") for norm in HIDDEN_NORMS[1:]]
        hidden_plans += [PruningPlan(hidden=h, hidden_norm=a.control_norm, scorer=s) for s in ("magnitude", "random")]
        for plan in hidden_plans:
            run(f"{spec.name}/hidden/{h:g}/{plan.scorer}/{plan.hidden_norm}", "hidden", plan, h)


def table(a) -> None:
    rows = pd.DataFrame([json.loads(line) for line in Path(a.table).read_text().splitlines() if line.strip()])
    lines = [HEADING, "",
             "What removing dims of the residual stream costs a task model, retraining-free, against removing the same "
             "FLOPs (closed-form estimate, dense matmuls per token at 128 tokens) from FFN units or from query/key + "
             "value dims. Each cell: the whole dev split, bootstrap 95 % interval over its examples (an estimate), "
             "and `agree`, the share of dev examples whose predicted label is the original model's. Hidden dims are "
             "ranked over the stream's coordinates (`hidden_stream.dim_scores`); `kept` normalises each LayerNorm "
             "over the kept dims, `std-ratio` rescales it by the mean std(kept)/std(full) of the calibration tokens, "
             "`fitted` fits a scale and per-dim shift to the original LayerNorm's outputs. FFN/attention plans: rf, "
             "`auto` compensation on the same training texts. After the task's recovery: the last table below.", ""]
    for task, of in rows.groupby("task", sort=False):
        original = of[of["family"] == "original"].iloc[0]
        lines += [f"**{task}** (original {100 * original['score']:.2f} [{100 * original['low']:.2f}, "
                  f"{100 * original['high']:.2f}], {int(original['n_dev'])} dev examples; model `{original['model']}`)", "",
                  "| budget | what is removed | ranked by | normalisation / compensation | FLOPs after/before | params | score x100 [95 % interval] | agree |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in of[of["family"] != "original"].iterrows():
            what = {"hidden": f"{r['level']:g} % of the stream", "ffn": "FFN units", "attention": "Q/K + V dims"}[r["family"]]
            plan = r["plan"].split(" compensation")[0] if r["family"] != "hidden" else ""
            lines.append(f"| FLOPs of {r['level']:g} % of the stream | {what} {plan} | {r['scorer']} | {r['norm']} | "
                         f"{r['flops_ratio']:.3f} | {r['params_after'] / 1e6:.2f} M | {100 * r['score']:.2f} "
                         f"[{100 * r['low']:.2f}, {100 * r['high']:.2f}] | {r['agree']:.3f} |")
        lines.append("")
    lines += commands_and_verdict(rows, "`python benchmarks/bench_hidden.py --model /work/bench/task_models/<task> "
                                  "--task <task> --jsonl FILE` then `--table FILE`", a.note)
    write_section(HEADING, "\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--task")
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "/work/shared/data/glue"))
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--score-texts", type=int, default=256)
    p.add_argument("--hidden", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 10.0, 20.0])
    p.add_argument("--control-norm", default="fitted", choices=HIDDEN_NORMS,
                   help="normalisation of the magnitude and random controls")
    p.add_argument("--jsonl", help="append measured rows here")
    p.add_argument("--note", help="with --table: a text file appended to the section (the verdict)")
    p.add_argument("--table", help="write the RESULTS.md section from this JSONL file")
    a = p.parse_args(argv)
    if a.table:
        table(a)
        return 0
    if not (a.model and a.task and a.jsonl):
        p.error("--model, --task and --jsonl are needed to measure")
    measure(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
