"""Another domain: cross-source vs split-half rankings, and a task model's score under each source's plan.

    python benchmarks/bench_domain.py --model /work/bench/task_models/sst2 --task sst2 --other mrpc --jsonl /tmp/domain.jsonl
    python benchmarks/bench_domain.py --table /tmp/domain.jsonl      # writes the RESULTS.md section

Source A is the task's TRAINING sentences (never dev); the other sources are the demo corpus and
the other task's training sentences. Per seed (``--seeds``), ``domain_shift`` scores two disjoint
halves of A and ``--n`` texts of B (sets of equal size) and ``domain_summary`` takes the median
over layers of each measure, for Q/K/V and for FFN units; the table gives the mean over seeds
and the range (min-max over seeds: an interval over resamples of the texts). Then the task
model is pruned with one plan ranked on each source's ``--score-texts`` texts and evaluated on
the whole dev split (bootstrap 95 % interval, an estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import append_jsonl, commands_and_verdict, git_commit, write_section  # noqa: E402

from obce_core import load_model  # noqa: E402
from obce_core.evidence import encode_split  # noqa: E402
from obce_core.evidence.domain_task import plan_score_by_source  # noqa: E402
from obce_core.evidence.task_sweep import training_texts  # noqa: E402
from obce_core.pruning import PruningPlan  # noqa: E402
from obce_core.pruning.domain import domain_shift, domain_summary  # noqa: E402
from obce_core.scoring import demo_sentences, subsample  # noqa: E402

HEADING = "## Another domain: cross-source against split-half rankings (issue 25, item 2)"
PLAN = PruningPlan(ffn=50, qk=30, v=30, compensation="cls-mean")


def measure(a) -> None:
    model, tok = load_model(a.model, device="cpu")
    commit, load = git_commit(), os.getloadavg
    own = training_texts(a.task, glue_dir=a.glue_dir, n=max(2 * a.n, a.score_texts), seed=0)
    others = {"demo": demo_sentences()}
    if a.other:
        others[f"{a.other} train"] = training_texts(a.other, glue_dir=a.glue_dir, n=max(a.n, a.score_texts), seed=0)
    for name, texts in others.items():
        for seed in range(a.seeds):
            t = time.perf_counter()
            shift = domain_shift(model, tok, subsample(own, 2 * a.n, seed), texts, scorers=a.scorers, percents=[50.0],
                                 n=a.n, seed=seed, max_length=a.max_length)
            for row in domain_summary(shift).to_dict("records"):
                append_jsonl(Path(a.jsonl), {"kind": "ranking", "task": a.task, "a": f"{a.task} train", "b": name,
                                             "seed": seed, "n": a.n, **row, "load": load()[0], "commit": commit,
                                             "model": a.model})
            print(f"{name} seed {seed}: {time.perf_counter() - t:.0f} s, load {load()[0]:.1f}", file=sys.stderr)
    if a.no_task:
        return
    encoded = encode_split(tok, a.task, glue_dir=a.glue_dir, max_length=a.max_length)
    sources = {f"{a.task} train": own[:a.score_texts], **{k: subsample(v, a.score_texts, 0) for k, v in others.items()}}
    t = time.perf_counter()
    table = plan_score_by_source(model, tok, PLAN, encoded, sources, max_length=a.max_length)
    for row in table.to_dict("records"):
        append_jsonl(Path(a.jsonl), {"kind": "task", "task": a.task, "plan": PLAN.describe(), **row, "n_dev": encoded.n,
                                     "load": load()[0], "commit": commit, "model": a.model})
    print(table.to_string(index=False), f"\n{time.perf_counter() - t:.0f} s", file=sys.stderr)


def _cell(values: pd.Series, digits: int = 2) -> str:
    values = values.dropna()
    if not len(values):
        return "n/a"
    return f"{values.mean():.{digits}f} [{values.min():.{digits}f}, {values.max():.{digits}f}]"


def table(a) -> None:
    rows = pd.DataFrame([json.loads(line) for line in Path(a.table).read_text().splitlines() if line.strip()])
    rank = rows[rows["kind"] == "ranking"]
    lines = [HEADING, "",
             "Does a ranking scored on one kind of text hold on another? Per task model, source A is the task's "
             "training sentences; per seed, two disjoint halves of A and as many texts of B are scored at [CLS] "
             "(sets of equal size), and for each layer and group the Spearman of the unit scores and the overlap of "
             "the sets removed at 50 % are taken between the halves of A (**split-half**: sampling noise alone) and "
             "between a half of A and B (**cross**: noise plus the change of domain). Cells: the median over layers "
             "(Q/K/V groups together; FFN units), mean over seeds [min, max over seeds]. Chance overlap is 0.50.", ""]
    for (task, b), of in rank.groupby(["task", "b"], sort=False):
        n, seeds = int(of["n"].iloc[0]), of["seed"].nunique()
        lines += [f"**{task}** model, A = {task} train vs B = {b} ({n} texts per set, {seeds} seeds)", "",
                  "| scorer | units | split-half Spearman | cross Spearman | drop (domain) | split-half overlap | cross overlap |",
                  "|---|---|---|---|---|---|---|"]
        for (scorer, part), cell in of.groupby(["scorer", "part"], sort=False):
            lines.append(f"| {scorer} | {'Q/K/V' if part == 'qkv' else 'FFN'} | {_cell(cell['half_spearman'])} | "
                         f"{_cell(cell['cross_spearman'])} | {_cell(cell['spearman_drop'])} | "
                         f"{_cell(cell['half_overlap'])} | {_cell(cell['cross_overlap'])} |")
        lines.append("")
    task_rows = rows[rows["kind"] == "task"]
    if len(task_rows):
        lines += [f"Task score x100 on the whole dev split under `{task_rows['plan'].iloc[0]}`, ranked on each source's "
                  "texts (bootstrap 95 % interval over dev examples, an estimate):", "",
                  "| task | ranked on | texts | score x100 [95 % interval] |", "|---|---|---|---|"]
        for r in task_rows.itertuples():
            lines.append(f"| {r.task} | {r.source} | {int(r.n_texts)} | {100 * r.main_score:.2f} "
                         f"[{100 * r.low:.2f}, {100 * r.high:.2f}] |")
        lines.append("")
    lines += commands_and_verdict(rows, "`python benchmarks/bench_domain.py --model /work/bench/task_models/<task> "
                                  "--task <task> --other <other task> --jsonl FILE` then `--table FILE`", a.note)
    write_section(HEADING, "\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--task")
    p.add_argument("--other", help="another GLUE task whose training sentences are a source too")
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "/work/shared/data/glue"))
    p.add_argument("--n", type=int, default=128, help="texts per scored set")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scorers", type=lambda s: s.split(","), default=["rf", "std", "flap"])
    p.add_argument("--score-texts", type=int, default=256, help="texts each source's plan is ranked on")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--no-task", action="store_true", help="rankings only (a model without a task head)")
    p.add_argument("--jsonl")
    p.add_argument("--note", help="with --table: a text file appended to the section (the verdict)")
    p.add_argument("--table")
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
