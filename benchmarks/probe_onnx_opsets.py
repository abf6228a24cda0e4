"""Which ONNX opsets give a BERT file that ONNX Runtime loads: the bound of ``export-onnx --opset``.

Exports a tiny random BERT (2 layers, hidden 24) at each opset with ``obce_core.export.export_onnx``
(torch's dynamo exporter, then ONNX Runtime on CPU against PyTorch) and prints ok or the error. The
answer depends on the installed torch and onnxruntime, so rerun it after upgrading either and move
``obce_core.export.ONNX_MAX_OPSET`` to the last opset that prints ok.

    .venv/bin/python benchmarks/probe_onnx_opsets.py 17 18 25 26 28
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from transformers import BertConfig, BertModel

import obce_core.export as export
from obce_core import load_model


def main(opsets: list[int]) -> None:
    _, tokenizer = load_model("default", device="cpu")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=2,
                                 num_attention_heads=3, intermediate_size=37)).eval()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    export.ONNX_MAX_OPSET = max(opsets)  # probe past the bound in force
    for opset in opsets:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                report = export.export_onnx(model, tokenizer, Path(tmp) / "m.onnx", opset=opset)
                print(f"opset {opset}: ok, max |diff| {report.max_abs_diff:.1e} ({time.perf_counter() - start:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - each failure is the finding
                print(f"opset {opset}: FAILED {type(exc).__name__}: {str(exc)[:160]}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or list(range(17, 29)))
