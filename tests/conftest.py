"""Shared fixtures: tiny random BERT models, the embedded MiniLM, isolated cache folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The hub is unreachable on the project's machines; fail fast instead of retrying for 20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"real GLUE files not found at {GLUE_DIR}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBCE_CACHE_DIR", str(tmp_path / "obce-cache"))


@pytest.fixture(scope="session")
def minilm():
    """The embedded all-MiniLM-L6-v2 (BertModel) and its tokenizer; shared, never modify it."""
    from obce_core import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def tokenizer(minilm):
    return minilm[1]


def make_tiny_bert(seed=0, *, hidden=24, heads=3, layers=2, ffn=37, classifier=False, num_labels=2):
    """A random BERT with odd shapes, using MiniLM's vocabulary so the real tokenizer fits."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
        intermediate_size=ffn, max_position_embeddings=128, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    return model.eval()


def save_tiny_bert(path, tokenizer, seed=0, **shape):
    """A tiny random pre-trained encoder saved with MiniLM's tokenizer, as a model directory."""
    make_tiny_bert(seed=seed, **shape).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_task_model(path, tokenizer, task="sst2", model=None):
    """A classifier (default: a tiny random one) saved as a task model: ``TaskModelInfo`` writes
    its ``obce_task.json`` as a fine-tune would."""
    from obce_core import glue
    from obce_core.training import Recipe, TaskModelInfo
    from obce_core.training.task_models import TASK_MODEL_FILE

    spec = glue.get_task(task)
    model = model if model is not None else make_tiny_bert(seed=3, classifier=True, num_labels=spec.num_labels)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    TaskModelInfo(task=spec.name, recipe=Recipe.preset("smoke", spec.name), metrics={"accuracy": 0.5, "main_score": 0.5},
                  main_score=0.5, train_s=1.0, train_steps=20, device="cpu", source_model="tiny",
                  created_at="2024-05-01T12:00:00+00:00", obce_version="test").to_json(path / TASK_MODEL_FILE)
    return path


@pytest.fixture
def glue_workspace(tmp_path, monkeypatch, one_torch_thread):
    """A fresh workspace folder with the real GLUE files: what the dashboard's job pages need."""
    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    return tmp_path / "workspace"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny pre-trained encoder (BertModel) with MiniLM's tokenizer; shared, read-only."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer, seed=1)


@pytest.fixture
def one_torch_thread(monkeypatch):
    """One torch thread here and in worker processes: on this busy 2-core machine tiny models
    train many times faster on one; and no GLUE dir or workspace leaks in from the environment."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)
    monkeypatch.delenv("OBCE_WORKSPACE", raising=False)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()


SENTENCES = [
    "The film was a delight from start to finish.",
    "I would not recommend this restaurant to anyone.",
    "Cats sleep for most of the day.",
    "Where did you leave the keys?",
    "The committee approved the budget on Tuesday.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Run!",
    "She sells sea shells by the sea shore, or so the story goes.",
    "An utterly forgettable sequel with nothing new to say.",
    "The quick brown fox jumps over the lazy dog.",
    "Prices rose by 3.5 percent last year.",
    "He said, \"we will be there by noon.\"",
]


@pytest.fixture
def sentences():
    return list(SENTENCES)
