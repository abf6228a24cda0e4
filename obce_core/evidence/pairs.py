"""Labelled sentence pairs, retraining-free: the zero-shot Spearman of embedding cosines against a score.

A pairs file has the columns ``sentence1``, ``sentence2``, ``score`` (GLUE STS-B's names; other
columns are ignored), as .tsv or .csv, read by ``obce_core.delimited`` like every text file obce
reads (.tsv unquoted, because unbalanced ``"`` in a sentence would otherwise merge rows; .csv with
strict standard quoting). A local GLUE task
of that kind works too (``glue_pairs``): STS-B with its 0-5 similarity, or a paraphrase task
(MRPC, QQP) whose 0/1 label becomes a BINARY score, labelled as such. ``pairs_spearman`` is
Spearman x100 of the cosine of the two sentences' embeddings against the score (MTEB's STS
metric); ``PairsReference`` keeps the original's value so every pruned model costs only its own
forward passes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from obce_core.delimited import delimited_rows
from obce_core.evidence.embedding import SentencePooling, rank_correlation, sentence_embeddings
from obce_core.validation import check_choice, check_int

__all__ = ["MIN_PAIRS", "PAIR_COLUMNS", "PAIR_TASKS", "PairsError", "PairsReference", "SentencePairs", "glue_pairs",
           "pairs_name", "pairs_spearman", "parse_pairs", "read_pairs"]

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
MIN_PAIRS = 10
# GLUE tasks whose label says how similar the two sentences are (STS-B) or whether they say the same (MRPC, QQP).
PAIR_TASKS = ("stsb", "mrpc", "qqp")


class PairsError(ValueError):
    """A pairs file or task could not be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class SentencePairs:
    """Sentence pairs with a score each; ``binary`` when the score is a 0/1 label, not a graded similarity."""

    first: tuple[str, ...]
    second: tuple[str, ...]
    score: tuple[float, ...]
    source: str
    binary: bool = False

    def __post_init__(self):
        where = self.source
        if not len(self.first) == len(self.second) == len(self.score):
            raise PairsError(f"{where}: {len(self.first)} first sentences, {len(self.second)} second sentences and "
                             f"{len(self.score)} scores; every pair needs all three.")
        if len(self.score) < MIN_PAIRS:
            raise PairsError(f"{where}: found {len(self.score)} pair(s); a Spearman correlation needs at least "
                             f"{MIN_PAIRS}. Add more rows (sentence1, sentence2, score).")
        if len(set(self.score)) < 2:
            raise PairsError(f"{where}: every pair has the score {self.score[0]:g}, so nothing can be ranked. Give pairs "
                             "with different similarity scores.")
        if len(set(self.first) | set(self.second)) < 2:
            raise PairsError(f"{where}: every sentence is the same text, so every cosine is equal. Give varied pairs.")
        if all(a == b for a, b in zip(self.first, self.second)):
            raise PairsError(f"{where}: every pair compares a sentence with itself, so every cosine is 1 and nothing "
                             "can be ranked. Give pairs of two different sentences.")

    @property
    def n(self) -> int:
        return len(self.score)

    def describe(self) -> str:
        kind = "binary 0/1 label as score" if self.binary else "graded score"
        return f"{self.source} ({self.n} pairs, {kind})"

    def fingerprint(self) -> str:
        data = [self.first, self.second, self.score, self.binary]
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()[:16]


def parse_pairs(content: str, name: str) -> SentencePairs:
    """Pairs from the text of a .tsv or .csv file called ``name`` (see the module docstring)."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".tsv", ".csv"):
        raise PairsError(f"{name}: unsupported file type {suffix!r}; give a .tsv or .csv with the columns "
                         f"{', '.join(PAIR_COLUMNS)}.")
    reader = delimited_rows(io.StringIO(content.lstrip("\ufeff"), newline=""), name, suffix, error=PairsError)
    header = next((row for _, row in reader), None)
    columns = [h.strip().lower() for h in header or []]
    missing = [c for c in PAIR_COLUMNS if c not in columns]
    if missing:
        raise PairsError(f"{name}: the header {header} lacks the column(s) {missing}. The first row must name the "
                         f"columns {', '.join(PAIR_COLUMNS)} (as GLUE's STS-B does); other columns are ignored.")
    pos = [columns.index(c) for c in PAIR_COLUMNS]
    first, second, scores = [], [], []
    for line, row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are not pairs
        if len(row) != len(columns):
            raise PairsError(f"{name}, line {line}: {len(row)} fields, expected {len(columns)} ({header}). A "
                             f"{'tab' if suffix == '.tsv' else 'comma'} inside a sentence, or a truncated line? "
                             + ("Quote sentences that contain commas." if suffix == ".csv" else "Fix that line."))
        raw = row[pos[2]].strip()
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise PairsError(f"{name}, line {line}: score {raw!r} is not a number. Every pair needs a numeric "
                             "similarity score (e.g. 0 to 5 as in STS-B).")
        first.append(row[pos[0]])
        second.append(row[pos[1]])
        scores.append(value)
    return SentencePairs(tuple(first), tuple(second), tuple(scores), source=name)


def read_pairs(path: str | os.PathLike) -> SentencePairs:
    """Pairs from a .tsv/.csv file (see ``parse_pairs``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PairsError(f"Pairs file {str(path)!r} does not exist; give a .tsv or .csv with the columns "
                         f"{', '.join(PAIR_COLUMNS)}.")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PairsError(f"Pairs file {str(path)!r} is not UTF-8 text ({exc}); save it as UTF-8.") from exc
    pairs = parse_pairs(content, path.name)
    return SentencePairs(pairs.first, pairs.second, pairs.score, source=str(path), binary=pairs.binary)


def glue_pairs(task: str, glue_dir: str | os.PathLike | None = None, *, split: str = "validation",
               n: int | None = None, seed: int = 0) -> SentencePairs:
    """The pairs of a GLUE similarity (STS-B) or paraphrase (MRPC, QQP: binary score) task's split."""
    from obce_core import glue  # GLUE loading pulls in `datasets`; only when a task is asked for

    spec = glue.get_task(task)
    check_choice(spec.name, "task", "glue_pairs", PAIR_TASKS,
                 fix="Sentence-pair similarity needs STS-B (graded) or a paraphrase task (MRPC, QQP: 0/1).")
    check_int(n, "n", "glue_pairs", low=MIN_PAIRS, allow_none=True)
    data = glue.load_task(spec, split, glue_dir, n=n, seed=seed)
    a, b = spec.text_columns
    what = f"GLUE {spec.name} {split}" + (f", {len(data)} drawn with seed {seed}" if n is not None else "")
    return SentencePairs(tuple(data[a]), tuple(data[b]), tuple(float(x) for x in data["label"]), source=what,
                         binary=not spec.is_regression)


def pairs_name(pairs: SentencePairs) -> str:
    """A short column-safe name for a pairs set (``mrpc_validation``, ``my_pairs``)."""
    stem = Path(pairs.source).stem if not pairs.source.startswith("GLUE ") else "_".join(pairs.source.split()[1:3])
    return re.sub(r"[^0-9a-zA-Z]+", "_", stem).strip("_").lower() or "pairs"


def _pair_cosines(model, tokenizer, pairs: SentencePairs, pooling: SentencePooling,
                  max_length: int | None) -> np.ndarray:
    # Each distinct sentence is embedded once (STS files repeat sentences).
    texts = list(dict.fromkeys(pairs.first + pairs.second))
    where = {t: i for i, t in enumerate(texts)}
    emb = sentence_embeddings(model, tokenizer, texts, pooling, max_length=max_length).astype(np.float64)
    emb /= np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    a = emb[[where[t] for t in pairs.first]]
    b = emb[[where[t] for t in pairs.second]]
    return np.sum(a * b, axis=1)


def pairs_spearman(model, tokenizer, pairs: SentencePairs, pooling: SentencePooling, *,
                   max_length: int | None = None) -> float:
    """Spearman x100 of the cosine of each pair's embeddings against its score (zero-shot, no training);
    ``max_length`` as in ``sentence_embeddings`` (default the model's own)."""
    return 100 * rank_correlation(_pair_cosines(model, tokenizer, pairs, pooling, max_length), pairs.score)


@dataclass
class PairsReference:
    """A pairs set with the original model's Spearman x100 on it."""

    pairs: SentencePairs
    original_spearman: float

    @classmethod
    def build(cls, model, tokenizer, pairs: SentencePairs, pooling: SentencePooling, *,
              max_length: int | None = None) -> "PairsReference":
        return cls(pairs, pairs_spearman(model, tokenizer, pairs, pooling, max_length=max_length))

    def spearman(self, pruned, tokenizer, pooling: SentencePooling, max_length: int | None) -> float:
        return pairs_spearman(pruned, tokenizer, self.pairs, pooling, max_length=max_length)
