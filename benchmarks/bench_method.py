"""The method of issue 9 on all-MiniLM-L6-v2: lsq fit time, ranking stability, real-output fidelity.

(a) lsq fit time: ``capture_calibration`` (once per model) and the extra time ``prune`` takes with
    ``compensation="lsq"`` over ``"none"`` (FFN p = 50 and all groups p = 50).
(b) Ranking stability: ``ranking_stability`` on 2 x 256 SST-2 TRAINING sentences (two disjoint
    halves of 512), per group, for rf, std, flap and magnitude; removed-set overlap at p = 50.
(c) Fidelity on the model's REAL output: the mean-pooled last hidden state (what a sentence encoder
    returns) of held-out SST-2 dev sentences, cosine to the original's, for scorer x compensation
    x p (FFN only and all groups; p = 30/50/70; random over 3 seeds). Scores from 256 SST-2
    training sentences at [CLS] (the paper's setting); calibration (token-mean, lsq, auto) from
    2,048 other SST-2 training sentences. Layer 0 is skipped (skip_layers = 1): at [CLS] its
    query/key/value rf are all 0.

    python benchmarks/bench_method.py            # full run; writes "## Method (issue 9)" in RESULTS.md
    python benchmarks/bench_method.py --quick    # smoke run; writes nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.results_file import write_section  # noqa: E402
from obce_core import load_model, score_model  # noqa: E402
from obce_core.glue import dataset_texts, load_task  # noqa: E402
from obce_core.pruning import CompensationWarning, PruningPlan, capture_calibration, prune, ranking_stability  # noqa: E402
from obce_core.scoring import length_sorted_batches, tokenize_texts  # noqa: E402

DEFAULT_GLUE = ROOT.parent / "shared" / "data" / "glue"
SECTION = "## Method (issue 9)"
COMPENSATIONS = ("none", "cls-mean", "token-mean", "lsq", "auto")


def sst2(glue_dir: Path, split: str, n: int, seed: int) -> list[str]:
    return dataset_texts(load_task("sst2", split, glue_dir, n=n, seed=seed), "sst2")


def mean_pooled(model, tokenizer, texts, batch_size: int = 64) -> torch.Tensor:
    encoded = tokenize_texts(tokenizer, texts, 128)
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, "cpu"):
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            out[torch.as_tensor(idx)] = (h * m).sum(1) / m.sum(1)
    return out


def fit_time(model, scores, calibration) -> list[dict]:
    rows = []
    for name, amounts in (("FFN p=50", dict(ffn=50)), ("all groups p=50", dict(ffn=50, qk=50, v=50))):
        times = {}
        for comp in ("none", "lsq"):
            t0 = time.perf_counter()
            prune(model, scores, PruningPlan(**amounts, skip_layers=1, compensation=comp), calibration=calibration)
            times[comp] = time.perf_counter() - t0
        rows.append({"plan": name, "none_s": times["none"], "lsq_s": times["lsq"], "fit_s": times["lsq"] - times["none"]})
    return rows


def fidelity(model, tokenizer, scores, calibration, eval_texts, percents, scorers, seeds) -> tuple[dict, dict]:
    ref = mean_pooled(model, tokenizer, eval_texts)
    cells, chosen = {}, {}
    for group in ("ffn", "all"):
        for p in percents:
            amounts = dict(ffn=p) if group == "ffn" else dict(ffn=p, qk=p, v=p)
            for scorer in scorers:
                for seed in (seeds if scorer == "random" else (0,)):
                    for comp in COMPENSATIONS:
                        plan = PruningPlan(**amounts, skip_layers=1, compensation=comp, scorer=scorer, seed=seed)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", CompensationWarning)
                            pruned, report = prune(model, scores, plan, calibration=calibration)
                        cos = torch.nn.functional.cosine_similarity(mean_pooled(pruned, tokenizer, eval_texts), ref).mean()
                        cells.setdefault((group, scorer, comp, p), []).append(float(cos))
                        if comp == "auto":
                            for row in report.compensations:
                                key = (group, p, row["group"], row["method"])
                                chosen[key] = chosen.get(key, 0) + 1
                print(f"  {group} p={p} {scorer}: " + " ".join(
                    f"{c}={np.min(cells[(group, scorer, c, p)]):.3f}" for c in COMPENSATIONS), flush=True)
    return cells, chosen


def markdown(meta, fits, stability, cells, chosen, percents, scorers) -> str:
    out = [SECTION, "", f"Command: `{meta['command']}` ({meta['date']}, {meta['machine']}). "
           f"{meta['notes']}", "",
           "**(a) lsq fit time** (seconds, `prune` with lsq minus `prune` with none; calibration captured once "
           f"in {meta['calibration_s']:.1f} s from {meta['n_cal_texts']} texts, {meta['n_train_tokens']:,} training "
           f"+ {meta['n_heldout_tokens']:,} held-out tokens, {meta['cal_mib']:.0f} MiB):", "",
           "| plan | prune, none | prune, lsq | lsq fit |", "|---|---|---|---|"]
    out += [f"| {r['plan']} | {r['none_s']:.2f} | {r['lsq_s']:.2f} | {r['fit_s']:.2f} |" for r in fits]
    out += ["", "**(b) Ranking stability** (2 x 256 SST-2 training sentences, disjoint halves; Spearman of the unit "
            "scores, mean over layers 1-5 [min-max]; overlap of the sets removed at p = 50, mean over layers 1-5, "
            "chance = 0.50; layer 0 separately):", "",
            "| scorer | group | Spearman L1-5 | overlap L1-5 | Spearman L0 |", "|---|---|---|---|---|"]
    for scorer in stability["scorer"].unique():
        for group in ("qk", "v", "ffn"):
            s = stability[(stability.scorer == scorer) & (stability.group == group)]
            later = s[s.layer >= 1]
            l0 = s[s.layer == 0]["spearman"].iloc[0]
            out.append(f"| {scorer} | {group} | {later.spearman.mean():.2f} [{later.spearman.min():.2f}-"
                       f"{later.spearman.max():.2f}] | {later.overlap.mean():.2f} | "
                       f"{'n/a (constant)' if np.isnan(l0) else f'{l0:.2f}'} |")
    out += ["", "**(c) Fidelity on the real output** (mean cosine of the mean-pooled embedding to the original's on "
            f"{meta['n_eval']} held-out SST-2 dev sentences; skip_layers = 1; random: worst of seeds "
            f"{meta['seeds']} with the spread in brackets):", ""]
    for group, title in (("ffn", "FFN units only"), ("all", "all groups (ffn = qk = v = p)")):
        out += [f"*{title}*", "", "| scorer | " + " | ".join(f"{c} p={p}" for p in percents for c in COMPENSATIONS) + " |",
                "|---|" + "---|" * (len(percents) * len(COMPENSATIONS))]
        for scorer in scorers:
            vals = []
            for p in percents:
                for c in COMPENSATIONS:
                    v = cells[(group, scorer, c, p)]
                    vals.append(f"{min(v):.3f}" + (f" [{max(v) - min(v):.3f}]" if len(v) > 1 else ""))
            out.append(f"| {scorer} | " + " | ".join(vals) + " |")
        out.append("")
    out += ["**What auto chose** (count of layer x group decisions over all scorers and seeds):", ""]
    for (group, p, g, method), n in sorted(chosen.items()):
        out.append(f"- {group} p={p}, {g}: {method} x{n}")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--glue-dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one p, writes nothing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    glue = Path(args.glue_dir)
    n_half, n_eval, n_cal = (32, 32, 256) if args.quick else (256, 256, 2048)
    percents = (50,) if args.quick else (30, 50, 70)
    seeds = (0,) if args.quick else (0, 1, 2)
    scorers = ("rf", "std", "flap", "magnitude", "random")
    train = sst2(glue, "train", 2 * n_half + n_cal, seed=0)
    halves, cal_texts = train[: 2 * n_half], train[2 * n_half:]
    score_texts = halves[:n_half]
    eval_texts = sst2(glue, "validation", n_eval, seed=1)
    model, tok = load_model()
    t0 = time.perf_counter()
    scores = score_model(model, tok, score_texts)
    t1 = time.perf_counter()
    calibration = capture_calibration(model, tok, cal_texts)
    cal_s = time.perf_counter() - t1
    print(f"scores {t1 - t0:.1f} s, calibration {cal_s:.1f} s ({calibration.n_train} + {calibration.n_heldout} tokens)", flush=True)
    fits = fit_time(model, scores, calibration)
    print(fits, flush=True)
    stability = ranking_stability(model, tok, halves, scorers=("rf", "std", "flap", "magnitude"), percent=50)
    print(stability.groupby(["scorer", "group"]).spearman.mean(), flush=True)
    cells, chosen = fidelity(model, tok, scores, calibration, eval_texts, percents, scorers, seeds)
    meta = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_method.py" + (" --quick" if args.quick else ""),
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, CPU",
        "notes": "The machine was shared with other agents' jobs, so timings are upper bounds.",
        "calibration_s": cal_s, "n_cal_texts": len(cal_texts), "n_train_tokens": calibration.n_train,
        "n_heldout_tokens": calibration.n_heldout, "cal_mib": calibration.nbytes() / 2**20,
        "n_eval": len(eval_texts), "seeds": list(seeds),
    }
    body = markdown(meta, fits, stability, cells, chosen, percents, scorers)
    print(body)
    if not args.quick:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
