"""Stabler persistence statistics? Split-half Spearman of per-neuron statistics on all-MiniLM-L6-v2.

Two disjoint sets of 256 SST-2 training sentences; for each neuron, statistics of its 0-D death
times (the gaps between sorted outputs): rf (the largest), the mean of the top 5 % / 10 %, the root
mean square of all gaps, rf averaged over 20 half-size resamples, and std for reference; at [CLS]
and over all tokens. Prints Spearman per component and layer (issue 9, item 4).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_persistence_stability.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import time, numpy as np, pandas as pd, torch
from scipy.stats import spearmanr
torch.set_num_threads(1)
from obce_core import load_model, score_model
from obce_core.scoring import capture_activations
df = pd.read_csv(str(Path(__file__).resolve().parents[2] / "shared/data/glue/SST-2/train.tsv"), sep="\t", quoting=3)
rng = np.random.default_rng(0)
idx = rng.permutation(len(df))[:512]
s = df["sentence"].to_numpy()[idx].tolist()
A, B = s[:256], s[256:]
model, tok = load_model()
t=time.time()
res = {}
for tokmode in ("cls", "all"):
    acts = [capture_activations(model, tok, X, token=tokmode) for X in (A, B)]
    print(tokmode, "captured", time.time()-t, acts[0].values.shape, flush=True)
    cols = acts[0].columns
    for name, f in [
        ("rf", lambda g: g.max(0)),
        ("top5%", lambda g: np.sort(g, 0)[-max(1, int(0.05 * len(g))):].mean(0)),
        ("top10%", lambda g: np.sort(g, 0)[-max(1, int(0.10 * len(g))):].mean(0)),
        ("gap-rms", lambda g: np.sqrt((g**2).mean(0))),
        ("std", None),
    ]:
        stats = []
        for a in acts:
            v = a.values.astype(np.float64)
            if name == "std":
                stats.append(v.std(0)); continue
            if name.startswith("rf-boot"):
                pass
            g = np.diff(np.sort(v, 0), axis=0)
            stats.append(f(g))
        for comp in ("query", "key", "value", "intermediate"):
            rhos = []
            for L in range(6):
                m = ((cols["layer"] == L) & (cols["component"] == comp)).to_numpy()
                r = spearmanr(stats[0][m], stats[1][m]).statistic
                rhos.append(r)
            res[(tokmode, name, comp)] = rhos
            print(tokmode, name, comp, np.round(rhos, 3), flush=True)
    # rf bootstrap-averaged (cls only, 20 half-resamples)
    if tokmode == "cls":
        stats = []
        for a in acts:
            v = a.values.astype(np.float64)
            r2 = np.random.default_rng(1)
            acc = 0
            for b in range(20):
                sub = v[r2.choice(len(v), len(v)//2, replace=False)]
                acc = acc + np.diff(np.sort(sub, 0), axis=0).max(0)
            stats.append(acc / 20)
        for comp in ("query", "key", "value", "intermediate"):
            rhos = [spearmanr(stats[0][m], stats[1][m]).statistic for L in range(6) for m in [((cols["layer"] == L) & (cols["component"] == comp)).to_numpy()]]
            print(tokmode, "rf-boot20", comp, np.round(rhos, 3), flush=True)
print("done", time.time()-t)
