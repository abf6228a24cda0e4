"""Taking a pruned model or a set of scores out of a session: a zip of the saved model, a
parquet file of scores for a background job, and the [CLS] check that a pruned model still
answers like its original.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from obce_core.pruning import PruningPlan, PruningReport, save_pruned
from obce_core.scoring import NeuronScores, cls_embeddings

__all__ = ["SIMILARITY_TEXTS", "cls_similarity", "model_zip", "scores_file"]

SIMILARITY_TEXTS = 32


def model_zip(model, tokenizer, plan: PruningPlan | None = None, report: PruningReport | None = None,
              name: str = "obce-pruned") -> bytes:
    """A zip of the directory ``save_pruned`` writes (config, weights, tokenizer, plan, report),
    under one top folder ``name``. Built in a temporary directory that is removed afterwards."""
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
