"""Sentence-encoder evidence for the embedded default model (issue 18): label-free and pairs curves.

    python benchmarks/bench_embedding.py --glue-dir ../shared/data/glue \
        --csv benchmarks/data/embedding_sweep.csv --markdown benchmarks/data/embedding_sweep.md

all-MiniLM-L6-v2 scored at [CLS] on a seeded half of the demo corpus (200 sentences); held out:
a seeded 128 of the other half (the defaults keep the run under 8 minutes on a busy 2-core CPU).
Per (group, percentile, scorer, seed), retraining-free: the mean cosine of pruned vs original
sentence embedding (mean pooling + Normalize, from its sentence-transformers config), the
Spearman of pairwise cosine similarities, the top-10 neighbour overlap, and the zero-shot Spearman
x100 of embedding cosine against the score on tests/data/sts_pairs.tsv (graded 0-5, written for
obce) and on MRPC dev pairs (its 0/1 paraphrase label as a BINARY score). Scorers rf, std, random;
fisher needs labels and does not exist for a model without a head. Prints the total time and the
median time of one point, then writes every row as CSV and a markdown table (mean over random seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from obce_core.evidence.embedding_sweep import embedding_summary, sweep_encoder
from obce_core.evidence.pairs import glue_pairs, read_pairs
from obce_core.io import write_text_atomic
from obce_core.training import PhaseEvent, StepEvent

HERE = Path(__file__).resolve().parent
PAIRS_FILE = HERE.parent / "tests" / "data" / "sts_pairs.tsv"
LABELS = {"mean_cosine": "cosine", "similarity_spearman": "sim. Spearman", "knn_overlap": "10-NN kept",
          "pairs_spearman_sts_pairs": "own pairs Sp. x100", "pairs_spearman_mrpc_validation": "MRPC dev Sp. x100 (binary)"}


def markdown(summary: pd.DataFrame) -> str:
    shown = summary[summary["metric"].isin(LABELS)].copy()
    shown["cell"] = [f"{m:.1f}" if metric.startswith("pairs") else f"{m:.3f}"
                     for m, metric in zip(shown["mean"], shown["metric"])]
    wide = shown.pivot_table(index=["group", "percentile"], columns=["metric", "scorer"], values="cell",
                             aggfunc="first", sort=False)
    header = ["group", "p"] + [f"{LABELS[m]} {s}" for m, s in wide.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (group, p), row in wide.iterrows():
        lines.append("| " + " | ".join([group, f"{p:g}"] + [str(v) for v in row.to_list()]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glue-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    ap.add_argument("--percentiles", default="0,25,50,75")
    ap.add_argument("--groups", default="ffn,qk,v,all")
    ap.add_argument("--scorers", default="rf,std,random")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--mrpc-pairs", type=int, default=150, help="seeded MRPC dev pairs (default 150 of 408)")
    ap.add_argument("--eval-size", type=int, default=128, help="held-out demo sentences (default 128 of 200)")
    ap.add_argument("--csv", default=str(HERE / "data" / "embedding_sweep.csv"))
    ap.add_argument("--markdown", default=str(HERE / "data" / "embedding_sweep.md"))
    args = ap.parse_args(argv)
    pairs = [read_pairs(PAIRS_FILE), glue_pairs("mrpc", args.glue_dir, n=args.mrpc_pairs, seed=0)]
    bar = tqdm(total=None, unit="point", file=sys.stderr)
    marks = []

    def progress(event) -> None:
        if isinstance(event, PhaseEvent):
            bar.write(event.phase, file=sys.stderr)
        elif isinstance(event, StepEvent):
            if bar.total != event.max_steps:
                bar.reset(total=event.max_steps)
            bar.update(event.step - bar.n)
            marks.append(time.perf_counter())

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    swept = sweep_encoder("default", pairs=pairs, groups=args.groups.split(","),
                          percentiles=[float(p) for p in args.percentiles.split(",")], scorers=args.scorers.split(","),
                          seeds=[int(s) for s in args.seeds.split(",")], eval_size=args.eval_size, device="cpu",
                          progress=progress)
    bar.close()
    table = swept.table
    measured = table[~table["cached"]]
    print(f"{len(table)} points in {time.perf_counter() - start:.0f} s; one pruned point (prune + embeddings) "
          f"median {measured[measured['percentile'] > 0]['eval_s'].median():.1f} s" if len(measured) else
          f"{len(table)} points, all from the cache")
    print(f"torch threads {torch.get_num_threads()}; load average (1 min) {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"held-out texts: {len(swept.probe.texts)} from {swept.probe.texts_source}; pooling {swept.probe.pooling.describe()}")
    for name, ref in swept.probe.pairs.items():
        print(f"original Spearman x100 on {ref.pairs.describe()}: {ref.original_spearman:.2f}")
    write_text_atomic(args.csv, table.to_csv(index=False))
    text = markdown(embedding_summary(table))
    write_text_atomic(args.markdown, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
