"""Shared helpers of the sentence-embedding tests: a tiny sentence-transformers folder and pairs files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from obce_core.loading import default_model_dir
from tests.conftest import save_tiny_bert

PAIRS_FILE = Path(__file__).resolve().parent / "data" / "sts_pairs.tsv"
TINY_MAX_SEQ = 64  # below the tiny model's 128 positions (MiniLM's own 256 would overflow them)


def save_tiny_sentence_transformer(path, tokenizer, seed=1, *, pooling: dict | None = None, hidden: int = 24) -> Path:
    """A tiny random encoder laid out as the embedded all-MiniLM-L6-v2 is: its modules.json (Transformer,
    mean Pooling, Normalize), configs and 1_Pooling folder, with the tiny model's width."""
    path = Path(path)
    save_tiny_bert(path, tokenizer, seed=seed, hidden=hidden)
    source = default_model_dir()
    for name in ("modules.json", "config_sentence_transformers.json"):
        shutil.copyfile(source / name, path / name)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": TINY_MAX_SEQ, "do_lower_case": False}))
    config = json.loads((source / "1_Pooling" / "config.json").read_text())
    config.update({"word_embedding_dimension": hidden, **(pooling or {})})
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return path


def write_pairs(path, rows, header=("sentence1", "sentence2", "score"), sep="\t") -> Path:
    """A pairs file with ``header`` and ``rows`` (tuples), joined by ``sep`` without any quoting."""
    path = Path(path)
    path.write_text("\n".join(sep.join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path
