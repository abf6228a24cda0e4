"""Where scoring texts come from: the shipped demo corpus, a user's .txt/.csv file, or GLUE.

The demo corpus (400 varied English sentences written for this project) lets the dashboard and
the CLI work with no network and no GLUE copy.
"""

from __future__ import annotations

import importlib.resources
import io
import os
from pathlib import Path

import numpy as np

from obce_core.delimited import DELIMITED_SUFFIXES, delimited_rows

__all__ = ["TextsError", "demo_sentences", "parse_texts", "read_texts", "resolve_texts", "subsample"]

TEXT_COLUMNS = ("text", "sentence", "sentence1", "question", "premise")


class TextsError(ValueError):
    """A texts file could not be used; the message names the file and what was expected."""


def demo_sentences() -> list[str]:
    """The shipped demo corpus."""
    raw = (importlib.resources.files("obce_core") / "data" / "demo_sentences.txt").read_text(encoding="utf-8")
    return [line for line in raw.splitlines() if line.strip()]


def parse_texts(content: str, name: str) -> list[str]:
    """Texts from the content of a file called ``name``: one per line, or a CSV/TSV text column."""
    suffix = Path(name).suffix.lower()
    if suffix in DELIMITED_SUFFIXES:
        rows = delimited_rows(io.StringIO(content, newline=""), name, suffix, error=TextsError)
        fieldnames = next((row for _, row in rows if row), [])
        header = [h.strip().lower() for h in fieldnames]
        column = next((c for c in TEXT_COLUMNS if c in header), None)
        if column is None:
            raise TextsError(
                f"{name}: no text column found; the header is {fieldnames}. Name the column "
                f"with the texts one of {list(TEXT_COLUMNS)}, or pass a .txt file with one text per line."
            )
        position = header.index(column)
        texts = [row[position].strip() if position < len(row) else "" for _, row in rows]
    elif suffix in (".txt", ""):
        texts = [line.strip() for line in content.splitlines()]
    else:
        raise TextsError(f"{name}: unsupported file type {suffix!r}; use .txt (one text per line), .csv or .tsv.")
    texts = [t for t in texts if t]
    if len(texts) < 2:
        raise TextsError(f"{name}: found {len(texts)} non-empty text(s); scoring needs at least 2.")
    return texts


def read_texts(path: str | os.PathLike) -> list[str]:
    """Texts from a .txt (one per line), .csv or .tsv file (a ``text``/``sentence`` column)."""
    path = Path(path)
    if path.is_dir():
        raise TextsError(f"Texts file {str(path)!r} is a folder; give a .txt file with one text per line, or a "
                         ".csv/.tsv, inside it.")
    if not path.is_file():
        raise TextsError(f"Texts file {str(path)!r} does not exist; expected a .txt file with one text per line, or a .csv/.tsv.")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextsError(f"Texts file {str(path)!r} is not UTF-8 text ({exc}); save it as UTF-8.") from exc
    return parse_texts(content, path.name)


def subsample(items: list, n: int | None, seed: int = 0) -> list:
    """``n`` items drawn without replacement by a seeded generator (all when n is None or >= len)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 2:
        raise ValueError(f"n must be >= 2 to score a spread of outputs; got {n}.")
    idx = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
    return [items[i] for i in sorted(idx)]


def resolve_texts(texts_path=None, task=None, split="validation", glue_dir=None, n=None, seed=0):
    """(texts, a description of their source) from a file, a GLUE task, or the demo corpus."""
    if texts_path:
        return subsample(read_texts(texts_path), n, seed), f"file {texts_path}"
    if task:
        from obce_core import glue  # GLUE loading pulls in `datasets`; only when a task is asked for

        dataset = glue.load_task(task, split, glue_dir, n=n, seed=seed)
        return glue.dataset_texts(dataset, task), f"GLUE {task} {split}"
    return subsample(demo_sentences(), n, seed), "obce demo corpus"
