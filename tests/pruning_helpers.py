"""Shared helpers and fixtures of the pruning tests: a tiny 3-layer BERT and its scores."""

import pytest
import torch

from obce_core import score_model
from tests.conftest import make_tiny_bert

H, HEADS, HS, FFN, LAYERS, VOCAB, MAXPOS, TYPES = 24, 3, 8, 37, 3, 30522, 128, 2

EXTRA = [
    "A gentle rain fell over the quiet harbour.",
    "Nobody expected the second act to be this dull.",
    "The results were published in a short letter.",
    "Please close the door on your way out.",
    "Seven engineers reviewed the design twice.",
    "It is the best soup I have had all winter.",
]


def tiny(seed=0, classifier=False):
    return make_tiny_bert(seed, layers=LAYERS, classifier=classifier)


def scores_of(model, tokenizer, texts):
    return score_model(model, tokenizer, texts, use_cache=False)


def hidden(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.fixture
def texts(sentences):
    return sentences + EXTRA


@pytest.fixture
def batch(tokenizer, sentences):
    return tokenizer(sentences[:6], padding=True, return_tensors="pt")


@pytest.fixture
def tiny_scored(tokenizer, texts):
    model = tiny()
    return model, scores_of(model, tokenizer, texts)
