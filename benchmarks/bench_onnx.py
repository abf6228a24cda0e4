"""ONNX export of all-MiniLM-L6-v2: ONNX Runtime CPU latency of the pruned model vs the original in PyTorch.

The original and the model pruned at p = 50 % on every group (ffn = qk = v = 50, rf scorer, scores
from the demo corpus) are exported with ``obce_core.export.export_onnx`` (which checks each file's
outputs against PyTorch in ONNX Runtime). Then four runners take turns on one batch of 32 x 64
tokens, interleaved round by round in a rotating order so load from other processes hits all of
them alike: PyTorch original, PyTorch pruned, ONNX Runtime original, ONNX Runtime pruned. Each
figure is the median of per-round ratios to the PyTorch original of the same round. PyTorch and
ONNX Runtime get the same number of threads. The 1-minute load average is recorded before and after.

    python benchmarks/bench_onnx.py            # full run; writes "## ONNX export" in RESULTS.md
    python benchmarks/bench_onnx.py --quick    # smoke run; writes nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing obce
    sys.path.insert(0, str(ROOT))

from benchmarks.results_file import RESULTS, write_section  # noqa: E402
from obce_core import PruningPlan, load_model, prune, score_model  # noqa: E402
from obce_core.export import export_onnx  # noqa: E402
from obce_core.scoring.texts import demo_sentences  # noqa: E402

SECTION = "## ONNX export"


def batch_inputs(batch: int, seq: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def torch_runner(model, inputs):
    def run() -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(**inputs)
            return time.perf_counter() - t0
    return run


def ort_runner(path: Path, inputs, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}

    def run() -> float:
        t0 = time.perf_counter()
        session.run(None, feeds)
        return time.perf_counter() - t0
    return run


def measure(runners: dict, rounds: int) -> dict:
    """{name: per-round seconds}, runners taking turns in a rotating order."""
    names = list(runners)
    for _ in range(2):  # warm-up: allocator, thread pools, kernel choice
        for name in names:
            runners[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(runners[name]())
    return {name: np.array(t) for name, t in times.items()}


def section(rows, diffs, params, args, load_before, load_after, command) -> str:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        SECTION, "",
        f"`{command}` ({now}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, {args.threads} thread(s) "
        f"each; batch {args.batch} x {args.seq} tokens, {args.rounds} interleaved rounds; load average (1 min) "
        f"{load_before:.2f} before, {load_after:.2f} after)", "",
        "Exported with `python -m obce_core export-onnx DIR --out model.onnx` (torch's dynamo exporter, opset 18, "
        "dynamic batch and sequence axes). Each file is checked in ONNX Runtime against PyTorch on 8 demo "
        "sentences padded together (hidden states compared on the texts' own tokens):", "",
        f"- original: max |ONNX - PyTorch| of the last hidden state {diffs['original']:.2e}",
        f"- pruned p = 50 (ffn = qk = v = 50, rf): {diffs['pruned']:.2e} (parameters {params:.1%} of the original)",
        "", "| runner | median ms | ratio to PyTorch original (median of per-round ratios) | IQR of the ratio |",
        "| --- | --- | --- | --- |",
    ]
    for name, ms, ratio, q25, q75 in rows:
        lines.append(f"| {name} | {ms:.1f} | {ratio:.3f} | {q25:.3f}-{q75:.3f} |")
    target = next(r for r in rows if r[0] == "ONNX Runtime, pruned p = 50")
    lines += ["", f"ONNX Runtime latency of the p = 50 model / the original in PyTorch: **{target[2]:.3f}**.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, 64 scoring texts; writes nothing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 3
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    model, tokenizer = load_model(device="cpu")
    texts = demo_sentences()[: 64 if args.quick else 256]
    scores = score_model(model, tokenizer, texts, token="cls", max_length=128)
    pruned, report = prune(model, scores, PruningPlan(ffn=50, qk=50, v=50))
    pruned.eval()
    inputs = batch_inputs(args.batch, args.seq)
    with tempfile.TemporaryDirectory(prefix="obce-bench-onnx-") as tmp:
        diffs, runners = {}, {}
        for name, m in (("original", model), ("pruned", pruned)):
            rep = export_onnx(m, tokenizer, Path(tmp) / f"{name}.onnx")
            diffs[name] = rep.max_abs_diff
            print(rep.summary(), flush=True)
        runners["PyTorch, original"] = torch_runner(model, inputs)
        runners["PyTorch, pruned p = 50"] = torch_runner(pruned, inputs)
        runners["ONNX Runtime, original"] = ort_runner(Path(tmp) / "original.onnx", inputs, args.threads)
        runners["ONNX Runtime, pruned p = 50"] = ort_runner(Path(tmp) / "pruned.onnx", inputs, args.threads)
        times = measure(runners, args.rounds)
    base = times["PyTorch, original"]
    rows = []
    for name, t in times.items():
        ratios = t / base
        rows.append((name, 1000 * float(np.median(t)), float(np.median(ratios)),
                     float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))))
        print(f"  {name}: {rows[-1][1]:.1f} ms, ratio {rows[-1][2]:.3f}", flush=True)
    load_after = os.getloadavg()[0]
    params = report.params_after["total"] / report.params_before["total"]
    command = "python benchmarks/bench_onnx.py" + (f" --threads {args.threads}" if args.threads != 1 else "")
    body = section(rows, diffs, params, args, load_before, load_after, command)
    if args.quick:
        print(body)
    else:
        write_section(SECTION, body)
        print(f"Wrote {SECTION!r} in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
