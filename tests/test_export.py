"""ONNX export: the file ONNX Runtime runs answers like the PyTorch model, at any batch and length."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from obce_core import PruningPlan, load_model, prune
from obce_core.cli import main
from obce_core.export import OnnxExportError, export_onnx
from tests.pruning_helpers import EXTRA, hidden, scores_of, tiny


def _ort_outputs(path, tokenizer, texts):
    """Run the file in a fresh ONNX Runtime session on ``texts`` padded together."""
    enc = tokenizer(texts, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    return session.run(None, feeds)[0], enc


def test_pruned_classifier_matches_pytorch_at_other_shapes(tmp_path, tokenizer, sentences):
    model = tiny(classifier=True)
    pruned, _ = prune(model, scores_of(model, tokenizer, sentences + EXTRA), PruningPlan(ffn=40, qk=25, v=50))
    report = export_onnx(pruned, tokenizer, tmp_path / "pruned.onnx", texts=sentences[:4])
    assert report.output == "logits" and report.n_texts == 4 and report.max_abs_diff <= 1e-4
    assert report.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert report.size_bytes == (tmp_path / "pruned.onnx").stat().st_size
    graph = onnx.load(str(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(graph)
    # batch and sequence axes are symbolic, not the example's numbers
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims), dims
    # texts, batch size and padding the export never saw: the oracle is PyTorch's own forward
    texts = EXTRA + ["Short.", "A considerably longer sentence, with commas, numbers like 42 and several clauses."]
    got, enc = _ort_outputs(tmp_path / "pruned.onnx", tokenizer, texts)
    want = hidden(pruned, {k: torch.from_numpy(v) for k, v in enc.items()}).numpy()
    assert got.shape == (len(texts), 2)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_encoder_exports_last_hidden_state(tmp_path, tiny_model_dir, tokenizer, sentences):
    model, tok = load_model(tiny_model_dir, device="cpu")
    report = export_onnx(model, tok, tmp_path / "enc.onnx", texts=sentences[:3])
    assert report.output == "last_hidden_state"
    got, enc = _ort_outputs(tmp_path / "enc.onnx", tokenizer, sentences[3:8])
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
    assert got.shape == want.shape == (5, enc["input_ids"].shape[1], 24)
    real = enc["attention_mask"].astype(bool)  # padding positions are not compared (see OnnxReport)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)


def test_bad_arguments_are_refused(tmp_path, tiny_bert, tokenizer, sentences):
    with pytest.raises(OnnxExportError, match=r"end in \.onnx"):
        export_onnx(tiny_bert, tokenizer, tmp_path / "model.bin", texts=sentences[:2])
    with pytest.raises(OnnxExportError, match="at least 2 texts"):
        export_onnx(tiny_bert, tokenizer, tmp_path / "model.onnx", texts=sentences[:1])
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_bert, tokenizer, tmp_path / "model.onnx", opset=9, texts=sentences[:2])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_failed_check_keeps_no_file(tmp_path, monkeypatch, tiny_bert, tokenizer, sentences):
    import obce_core.export as export

    real = export._ort_session

    class OffByOneThousandth:
        """ONNX Runtime as it would look if the graph were wrong by 1e-3 somewhere."""

        def __init__(self, path):
            self.session = real(path)

        def run(self, names, feeds):
            out = self.session.run(names, feeds)
            out[0][0, 0, 0] += 1e-3  # position 0 is [CLS], a real token
            return out

    monkeypatch.setattr(export, "_ort_session", OffByOneThousandth)
    with pytest.raises(OnnxExportError, match=r"differ from PyTorch's by up to 0\.001"):
        export_onnx(tiny_bert, tokenizer, tmp_path / "m.onnx", texts=sentences[:2])
    assert not list(tmp_path.iterdir())


def test_cli_export_onnx(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export-onnx", str(tiny_model_dir), "--out", str(out), "--max-length", "64"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max |diff|" in printed and "last_hidden_state" in printed
    assert main(["export-onnx", str(tiny_model_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")]) == 2
