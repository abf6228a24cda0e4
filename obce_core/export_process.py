"""The ONNX export of :func:`obce_core.export.model_onnx`, run in a child process.

Why: a long-lived process that ran torch's ONNX exporter and ONNX Runtime (the dashboard's server)
no longer stopped on SIGTERM or SIGINT ("Stopping..." and then alive until SIGKILL): the exit hangs
in native code those libraries leave behind. In a child process they end with the child, and the
server stays as it was. The model goes to the child as a saved folder (``save_pretrained``); the
child writes the checked file and its report; any failure comes back as one ``OnnxExportError``.

``python -m obce_core.export_process MODEL_DIR OUT.onnx REPORT.json MAX_LENGTH`` is the child.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from obce_core.export import OnnxExportError, OnnxReport
from obce_core.forward import model_lock

__all__ = ["model_onnx_in_child"]

CHILD_TIMEOUT_S = 1800  # a BERT-base export and check takes about a minute on a busy 2-core CPU


def model_onnx_in_child(model, tokenizer, *, max_length: int = 128,
                        timeout_s: float = CHILD_TIMEOUT_S) -> tuple[bytes, OnnxReport]:
    """``model_onnx(model, tokenizer, max_length=...)``, computed in a child process: the checked
    ONNX file as bytes and its report. Raises ``OnnxExportError`` with the child's message."""
    with tempfile.TemporaryDirectory(prefix="obce-onnx-") as tmp:
        folder, out, report_file = Path(tmp) / "model", Path(tmp) / "model.onnx", Path(tmp) / "report.json"
        with model_lock(model):
            model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        cmd = [sys.executable, "-m", "obce_core.export_process", str(folder), str(out), str(report_file), str(int(max_length))]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        except subprocess.TimeoutExpired:
            raise OnnxExportError(f"The ONNX export did not finish within {timeout_s:.0f} s; try again when the "
                                  "machine is less busy, or use `python -m obce_core export-onnx`.") from None
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            last = lines[-1] if lines else f"the export process ended with code {done.returncode}"
            raise OnnxExportError(last.removeprefix("error: "))
        report = OnnxReport.from_json(report_file)
        return out.read_bytes(), dataclasses.replace(report, path="model.onnx")


def _child(argv: list[str]) -> int:
    from obce_core.export import export_onnx
    from obce_core.loading import load_model

    folder, out, report_file, max_length = argv
    try:
        model, tokenizer = load_model(folder, device="cpu")
        export_onnx(model, tokenizer, out, max_length=int(max_length)).to_json(report_file)
    except (ValueError, OSError) as exc:  # OnnxExportError and model loading errors: their message names the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
