"""Taking a pruned model or a set of scores out of a session: a zip of the saved model, an ONNX
file checked against PyTorch in ONNX Runtime, a parquet file of scores for a background job, and
the [CLS] check that a pruned model still answers like its original.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from obce_core.choices import ONNX_MAX_OPSET, ONNX_MIN_OPSET, ONNX_OPSET  # without torch, for the CLI's parser
from obce_core.forward import locked_eval, model_lock
from obce_core.io import JsonDataclass, atomic_path
from obce_core.pruning.files import save_pruned
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.report import PruningReport
from obce_core.scoring.capture import cls_embeddings
from obce_core.scoring.scores import NeuronScores
from obce_core.scoring.texts import demo_sentences
from obce_core.validation import check_int, check_number

__all__ = [
    "SIMILARITY_TEXTS",
    "ONNX_MAX_OPSET",
    "ONNX_MIN_OPSET",
    "ONNX_OPSET",
    "ONNX_TOLERANCE",
    "OnnxExportError",
    "OnnxReport",
    "cls_similarity",
    "export_onnx",
    "model_onnx",
    "model_zip",
    "scores_file",
]

SIMILARITY_TEXTS = 32


def model_zip(model, tokenizer, plan: PruningPlan | None = None, report: PruningReport | None = None,
              name: str = "obce-pruned") -> bytes:
    """A zip of the directory ``save_pruned`` writes (config, weights, tokenizer, plan, report, and
    a sentence-transformers source's module files), under one top folder ``name``. Built in a
    temporary directory that is removed afterwards."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="obce-zip-") as tmp:
        out = save_pruned(model, tokenizer, Path(tmp) / name, plan=plan, report=report)
        with zipfile.ZipFile(buf, "w") as zf:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                # float weights barely compress: store them, deflate the text files
                method = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".bin") else zipfile.ZIP_DEFLATED
                zf.write(path, f"{name}/{path.relative_to(out).as_posix()}", compress_type=method)
    return buf.getvalue()


def cls_similarity(original, pruned, tokenizer, texts, *, max_length: int = 128, n: int = SIMILARITY_TEXTS) -> dict:
    """Cosine similarity of the [CLS] last hidden state, pruned vs original, on the first ``n`` texts.

    Texts are strings or (first, second) pairs. Returns ``{"n", "mean", "min", "median"}``.
    """
    batch = list(texts)[:n]
    if not batch:
        raise ValueError("The [CLS] check needs at least one text; score some texts first.")
    a = cls_embeddings(original, tokenizer, batch, max_length=max_length).double()
    b = cls_embeddings(pruned, tokenizer, batch, max_length=max_length).double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
    return {"n": int(cos.size), "mean": float(cos.mean()), "min": float(cos.min()), "median": float(np.median(cos))}


def scores_file(scores: NeuronScores, workspace: str | os.PathLike) -> Path:
    """``scores`` as a parquet file under ``workspace/scores``, for a job's own process to read.

    The name is what the scores are (model weights, texts, sample mode, length), so the same
    scores are written once and reused by every later job.
    """
    name = (f"{scores.model_fingerprint}-{scores.texts_fingerprint}-{scores.settings.token}-"
            f"{scores.settings.max_length}-{scores.settings.convention}.parquet")
    path = Path(workspace).expanduser() / "scores" / name
    if not path.is_file():
        scores.to_parquet(path)
    return path.resolve()


# -- ONNX ----------------------------------------------------------------------------------
ONNX_TOLERANCE = 1e-4  # largest |ONNX - PyTorch| accepted on float32 outputs
ONNX_CHECK_TEXTS = 8
# One .onnx file holds at most 2 GB (protobuf); larger weights would need a side file, refused here.
_SINGLE_FILE_BYTES = 1_800_000_000


class OnnxExportError(ValueError):
    """The ONNX file could not be written, or ONNX Runtime does not answer like PyTorch."""


@dataclasses.dataclass(frozen=True)
class OnnxReport(JsonDataclass):
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch.

    ``max_abs_diff`` is the largest absolute difference of ``output`` over ``n_texts`` real texts
    batched together, so the padding and mask paths are exercised (for ``last_hidden_state``, over
    the texts' own tokens, not the padding positions).
    """

    _json_name = "ONNX report"

    path: str
    output: str
    inputs: list
    opset: int
    n_texts: int
    max_abs_diff: float
    tolerance: float
    size_bytes: int
    export_s: float

    def summary(self) -> str:
        return (f"{self.path}: {self.size_bytes / 1e6:.1f} MB, opset {self.opset}, output {self.output!r}; "
                f"ONNX Runtime vs PyTorch on {self.n_texts} texts: max |diff| {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}); exported in {self.export_s:.1f} s")


class _OnnxGraph(torch.nn.Module):
    """Positional inputs, one tensor out: the logits of a classifier, else the last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _encode(tokenizer, texts, max_length: int) -> dict:
    """A padded batch of strings or (a, b) pairs, as int64 tensors."""
    texts = list(texts)
    columns = list(zip(*texts)) if isinstance(texts[0], (tuple, list)) else [texts]
    with model_lock(tokenizer):
        enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
    return {k: enc[k].long() for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def _ort_session(path: Path):
    import onnxruntime as ort  # here: only an ONNX export loads its native runtime, not every importer of export

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model, tokenizer, out_path: str | os.PathLike, *, opset: int = ONNX_OPSET, max_length: int = 128,
                texts=None, tolerance: float = ONNX_TOLERANCE) -> OnnxReport:
    """Write ``model`` (an encoder or a sequence classifier, pruned or not) as an ONNX file and check it.

    Inputs are the tokenizer's ``input_ids``, ``attention_mask`` (and ``token_type_ids``) with
    dynamic batch and sequence axes; the one output is ``logits`` for a classifier, else
    ``last_hidden_state``: the token states only. A sentence-transformers model's pooling and
    normalization are NOT in the file (apply them to ``last_hidden_state`` yourself: e.g.
    all-MiniLM-L6-v2 averages the real tokens, then scales to unit length); the saved folder
    (``save_pruned``) keeps them. Exported with torch's dynamo exporter: the TorchScript one bakes the
    example's padding into transformers' mask code and gives wrong outputs for other lengths.
    The file is then run in ONNX Runtime (CPU) on ``texts`` (default: the first demo
    sentences) and compared with PyTorch on the CPU; a max |diff| above ``tolerance`` raises
    :class:`OnnxExportError` and leaves no file. The model itself is not touched (a CPU copy is
    exported), so a shared cached model is safe.
    """
    owner = "export_onnx"
    check_int(opset, "opset", owner, low=ONNX_MIN_OPSET, high=ONNX_MAX_OPSET,
              fix=f"torch's ONNX exporter writes opset {ONNX_MIN_OPSET} or later; ONNX Runtime loads its BERT graphs "
                  f"up to opset {ONNX_MAX_OPSET}.")
    check_int(max_length, "max_length", owner, low=2)
    check_number(tolerance, "tolerance", owner, low=0.0)
    texts = list(texts) if texts is not None else demo_sentences()[:ONNX_CHECK_TEXTS]
    if len(texts) < 2:
        raise OnnxExportError(f"{owner} checks the file on at least 2 texts (a padded batch); got {len(texts)}.")
    out_path = Path(out_path).expanduser()
    if out_path.suffix != ".onnx":
        raise OnnxExportError(f"ONNX output {str(out_path)!r} should end in .onnx; e.g. model.onnx.")
    with model_lock(model):
        cpu_model = copy.deepcopy(model).to("cpu").eval()
    example = _encode(tokenizer, texts[:2], max_length)
    names = list(example)  # input_ids, attention_mask[, token_type_ids]: _OnnxGraph.forward's order
    graph = _OnnxGraph(cpu_model)
    output = "logits" if hasattr(cpu_model, "classifier") else "last_hidden_state"
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max(max_length, 2))
    param_bytes = sum(p.numel() * p.element_size() for p in cpu_model.parameters())
    if param_bytes > _SINGLE_FILE_BYTES:
        raise OnnxExportError(
            f"This model's weights take {param_bytes / 1e9:.1f} GB; one ONNX file holds under 2 GB. Export it "
            "with torch.onnx.export(..., external_data=True) yourself, or prune it further first."
        )
    start = time.perf_counter()
    with atomic_path(out_path) as tmp:
        onnx_tmp = tmp.parent / (tmp.name + ".onnx")  # the exporter and ONNX Runtime want the suffix
        try:
            try:
                with warnings.catch_warnings():  # the exporter's notes on tracing are not the user's business
                    warnings.simplefilter("ignore")
                    program = torch.onnx.export(
                        graph, tuple(example[n] for n in names), dynamo=True, opset_version=opset, verbose=False,
                        input_names=names, output_names=[output],
                        dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                    )
                    program.save(str(onnx_tmp), external_data=False)
            except Exception as exc:  # the exporter raises many types; all mean the same to a user
                raise OnnxExportError(
                    f"torch.onnx.export could not export this {type(model).__name__}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            export_s = time.perf_counter() - start
            enc = _encode(tokenizer, texts, max_length)
            got = _ort_session(onnx_tmp).run([output], {k: v.numpy() for k, v in enc.items()})[0]
            with locked_eval(cpu_model):  # the one way obce runs a forward pass (this copy is ours alone)
                want = graph(*(enc[n] for n in names)).float().numpy()
            gap = np.abs(got - want)
            if output == "last_hidden_state":
                # Padding positions carry no meaning and differ by float noise of the masked softmax
                # (about 1e-4 on MiniLM); the real tokens are what a user reads.
                gap = gap[enc["attention_mask"].numpy().astype(bool)]
            diff = float(gap.max())
            if not diff <= tolerance:  # also refuses NaN
                raise OnnxExportError(
                    f"ONNX Runtime's {output} differ from PyTorch's by up to {diff:.3g} on {len(texts)} texts; "
                    f"expected at most {tolerance:g}. The file was not kept; report this model's config."
                )
            os.replace(onnx_tmp, tmp)
        finally:
            onnx_tmp.unlink(missing_ok=True)
    return OnnxReport(path=str(out_path), output=output, inputs=names, opset=opset, n_texts=len(texts),
                      max_abs_diff=diff, tolerance=tolerance, size_bytes=out_path.stat().st_size,
                      export_s=round(export_s, 3))


def model_onnx(model, tokenizer, *, max_length: int = 128, texts=None) -> tuple[bytes, OnnxReport]:
    """The checked ONNX file of :func:`export_onnx` as bytes (for a download button) and its report."""
    with tempfile.TemporaryDirectory(prefix="obce-onnx-") as tmp:
        report = export_onnx(model, tokenizer, Path(tmp) / "model.onnx", max_length=max_length, texts=texts)
        return (Path(tmp) / "model.onnx").read_bytes(), report
