"""What one neuron responds to: the samples on each side of its largest gap (the two clusters its
last merge joins), its highest- and lowest-output samples, and, when every token is a sample
(token mode ``all``), its output on each token of a text.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from obce_core.forward import text_label, tokenize_texts
from obce_core.persistence import last_merge
from obce_core.scoring import NeuronScores
from obce_core.validation import check_int

__all__ = ["EXAMPLE_VIEWS", "neuron_examples", "text_label", "text_tokens", "token_values"]

# view name -> what it lists, in the order a reader meets them
EXAMPLE_VIEWS = {
    "below gap": "the samples just below the largest gap (nearest first)",
    "above gap": "the samples just above the largest gap (nearest first)",
    "top": "the highest outputs",
    "bottom": "the lowest outputs",
}


def text_tokens(tokenizer, text, max_length: int) -> list[str]:
    """The tokens of ``text`` exactly as scoring saw them (same truncation), [CLS] and [SEP] included."""
    ids = tokenize_texts(tokenizer, [text], max_length)[0]["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids)


def _sample_positions(sample_text: np.ndarray) -> np.ndarray:
    """Each sample's token position in its text: samples of one text are consecutive, in token order."""
    first = np.searchsorted(sample_text, sample_text, side="left")
    return np.arange(sample_text.size) - first


def token_values(scores: NeuronScores, layer: int, component: str, neuron: int, text_index: int) -> np.ndarray:
    """The neuron's output on each token of text ``text_index`` (token mode ``all`` only)."""
    if scores.settings.token != "all":
        raise ValueError(f"Per-token outputs need scores with token='all'; these were scored with "
                         f"token={scores.settings.token!r}. Rescore with token 'all'.")
    values = scores.values(layer, component, neuron)
    return values[scores.sample_text == text_index]


def neuron_examples(scores: NeuronScores, texts: Sequence, layer: int, component: str, neuron: int, *,
                    k: int = 5, tokenizer=None) -> pd.DataFrame:
    """One row per listed sample of ``neuron``: ``view`` (a key of :data:`EXAMPLE_VIEWS`), ``rank``
    (1 = nearest the gap, or the most extreme), ``sample``, ``value``, ``text_index`` and ``text``.

    With token mode ``all`` a sample is one token of a text: ``position`` and ``token`` say which
    (``token`` needs the ``tokenizer`` the scores were made with). ``texts`` are the scored texts,
    in scoring order. A view lists at most ``k`` samples, fewer when its side of the gap is smaller.
    """
    check_int(k, "k", "neuron_examples", low=1)
    values = np.asarray(scores.values(layer, component, neuron), dtype=np.float64)
    if scores.sample_text is None or len(texts) != scores.n_texts:
        raise ValueError(f"neuron_examples needs the {scores.n_texts} scored texts and the scores' sample map; "
                         f"got {len(texts)} texts. Pass the texts these scores were computed on.")
    split = last_merge(values)
    order = np.lexsort((np.arange(values.size), values))  # ascending value, ties by sample index
    top = np.lexsort((np.arange(values.size), -values))
    picks = {"below gap": split.below[:k], "above gap": split.above[:k], "top": top[:k], "bottom": order[:k]}
    sample_text = np.asarray(scores.sample_text)
    rows = [{"view": view, "rank": r + 1, "sample": int(s), "value": float(values[s]),
             "text_index": int(sample_text[s]), "text": text_label(texts[int(sample_text[s])])}
            for view, samples in picks.items() for r, s in enumerate(samples)]
    table = pd.DataFrame(rows, columns=["view", "rank", "sample", "value", "text_index", "text"])
    if scores.settings.token == "all":
        positions = _sample_positions(sample_text)
        table.insert(5, "position", positions[table["sample"].to_numpy()].astype(int))
        if tokenizer is not None:
            cache: dict[int, list[str]] = {}
            tokens = []
            for t, p in zip(table["text_index"], table["position"]):
                if t not in cache:
                    cache[t] = text_tokens(tokenizer, texts[t], scores.settings.max_length)
                tokens.append(cache[t][p] if p < len(cache[t]) else "")
            table.insert(6, "token", tokens)
    return table
