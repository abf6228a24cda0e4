"""The dashboard's ONNX export runs in a child process (a server that exported in-process ignored
SIGTERM afterwards, issue 24): the file it returns answers like PyTorch, and the caller's process
never loads the exporter's runtime. The server side is in tests/test_browser.py (the walk builds an
ONNX file, then the server must stop on SIGTERM)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from obce_core import PruningPlan, prune
from obce_core.export import OnnxExportError
from obce_core.export_process import model_onnx_in_child
from tests.pruning_helpers import EXTRA, hidden, scores_of, tiny


def test_the_child_returns_a_checked_file_of_the_pruned_classifier(tokenizer, sentences, tmp_path):
    import onnxruntime as ort

    model = tiny(classifier=True)
    pruned, _ = prune(model, scores_of(model, tokenizer, sentences + EXTRA), PruningPlan(ffn=40, qk=25, v=50))
    data, report = model_onnx_in_child(pruned, tokenizer, max_length=32)
    assert report.output == "logits" and report.max_abs_diff <= report.tolerance and report.size_bytes == len(data)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    enc = tokenizer(EXTRA, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    want = hidden(pruned, {k: torch.from_numpy(v) for k, v in enc.items()}).numpy()  # the oracle: PyTorch's forward
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_the_caller_never_loads_onnxruntime():
    """In a fresh interpreter (this one may have imported it for other tests)."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import make_tiny_bert; "
        "from obce_core import load_model; from obce_core.export_process import model_onnx_in_child; "
        "_, tok = load_model(device='cpu'); data, report = model_onnx_in_child(make_tiny_bert(), tok, max_length=16); "
        "assert data[:2] and report.output == 'last_hidden_state'; "
        "print('onnxruntime' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False", done.stdout


def test_a_failure_in_the_child_is_one_clear_error(tokenizer, monkeypatch):
    monkeypatch.setattr("obce_core.export_process.CHILD_TIMEOUT_S", 600)
    with pytest.raises(OnnxExportError, match="max_length"):
        model_onnx_in_child(tiny(), tokenizer, max_length=1)  # export_onnx refuses max_length < 2
