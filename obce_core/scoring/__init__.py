"""Scoring neurons: where texts come from, how activations are captured, and the scores themselves.

- ``texts``: scoring texts from the shipped demo corpus, a user's .txt/.csv file or GLUE.
- ``capture``: one forward pass with hooks that records every neuron's output per sample, under
  the model's lock (``obce_core.forward.model_lock``) so that a model shared between threads is
  never hooked while another caller runs it. The lock, tokenizing and batching live in
  ``obce_core.forward`` and the layout facts in ``obce_core.layout``; they are re-exported here.
- ``checks``: what a scores file or a fresh result must satisfy before it is used or cached.
- ``scores``: ``NeuronScores`` (rf, mean, std, ranks per neuron), its validated files, and
  ``score_model`` with its on-disk cache.
"""

from obce_core.scoring.capture import (
    COMPONENTS,
    DEFAULT_MEMORY_BUDGET_GB,
    PRUNABLE_COMPONENTS,
    TOKEN_MODES,
    TRUNCATE_CHARS_PER_TOKEN,
    Activations,
    CaptureError,
    MemoryBudgetError,
    capture_activations,
    check_memory_budget,
    cls_embeddings,
    component_modules,
    length_sorted_batches,
    model_lock,
    tokenize_texts,
    truncate_text,
)
from obce_core.scoring.checks import MAX_ABS_STATISTIC, ScoresFileError
from obce_core.scoring.scores import (
    NeuronScores,
    ScoreSettings,
    cached_scores,
    default_cache_dir,
    score_model,
    scores_from_activations,
    texts_fingerprint,
)
from obce_core.scoring.texts import TextsError, demo_sentences, parse_texts, read_texts, resolve_texts, subsample

__all__ = [
    "COMPONENTS",
    "DEFAULT_MEMORY_BUDGET_GB",
    "PRUNABLE_COMPONENTS",
    "TOKEN_MODES",
    "TRUNCATE_CHARS_PER_TOKEN",
    "Activations",
    "CaptureError",
    "MAX_ABS_STATISTIC",
    "MemoryBudgetError",
    "NeuronScores",
    "ScoreSettings",
    "ScoresFileError",
    "TextsError",
    "cached_scores",
    "capture_activations",
    "check_memory_budget",
    "cls_embeddings",
    "component_modules",
    "default_cache_dir",
    "demo_sentences",
    "length_sorted_batches",
    "model_lock",
    "parse_texts",
    "read_texts",
    "resolve_texts",
    "score_model",
    "scores_from_activations",
    "subsample",
    "texts_fingerprint",
    "tokenize_texts",
    "truncate_text",
]
