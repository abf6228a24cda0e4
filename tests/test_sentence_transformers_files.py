"""The sentence-transformers drop-in: every folder obce saves from a sentence-transformers model loads
back in ``SentenceTransformer`` with the same modules.

Oracle: sentence-transformers itself. At p = 0 the saved model encodes like the original
``SentenceTransformer(<embedded model folder>)`` within 1e-5; a pruned one encodes as obce's own
``sentence_embeddings`` of the pruned model says it should; the dashboard's zip holds the same files.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import obce_core  # noqa: F401  (registers obce_bert, which SentenceTransformer then loads through AutoModel)
from obce_core import score_model
from obce_core.evidence.embedding import sentence_embeddings, sentence_pooling
from obce_core.export import model_zip
from obce_core.loading import default_model_dir, load_model
from obce_core.pruning import PruningPlan, prune, save_pruned
from obce_core.scoring import demo_sentences
from obce_core.sentence_transformers_files import write_sentence_transformers_files
from tests.conftest import save_tiny_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["A man is playing a guitar.", "The stock market fell sharply today.", "Two dogs run across the park.",
         "Nobody expected the second act to be this dull; it dragged on and on for almost an hour."]


def _modules(st_model) -> list[tuple[str, dict]]:
    return [(type(m).__name__, m.get_config_dict() if hasattr(m, "get_config_dict") else {}) for m in st_model]


def test_a_saved_default_model_is_a_sentence_transformers_drop_in(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    model, tokenizer = minilm
    original = SentenceTransformer(str(default_model_dir()), device="cpu")
    scores = score_model(model, tokenizer, demo_sentences()[:16], token="cls", max_length=64)

    same, _ = prune(model, scores, PruningPlan(compensation="none"))  # p = 0
    saved = save_pruned(same, tokenizer, tmp_path / "p0", plan=PruningPlan(compensation="none"))
    again = SentenceTransformer(str(saved), device="cpu")
    assert [name for name, _ in _modules(again)] == ["Transformer", "Pooling", "Normalize"]
    assert _modules(again)[1:] == _modules(original)[1:] and again.max_seq_length == original.max_seq_length == 256
    expected = original.encode(TEXTS)
    assert np.abs(again.encode(TEXTS) - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(expected, axis=1), 1, atol=1e-5)

    # a pruned model: ST encodes it as obce says its sentence output is (mean pooling, unit length)
    plan = PruningPlan(ffn=40, v=30, compensation="none")
    smaller, report = prune(model, scores, plan)
    folder = save_pruned(smaller, tokenizer, tmp_path / "p40", plan=plan, report=report)
    encoded = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    ours = sentence_embeddings(smaller, tokenizer, TEXTS, sentence_pooling(model))
    assert np.abs(encoded - ours).max() < 1e-5 and np.abs(encoded - expected).max() > 1e-3
    reloaded = load_model(str(folder), device="cpu")[0]  # saves of a saved model carry the files again
    assert sentence_pooling(reloaded) == sentence_pooling(model)

    # the dashboard's download: the same folder, zipped
    data = model_zip(smaller, tokenizer, plan, report, name="obce-test")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    assert {"obce-test/modules.json", "obce-test/1_Pooling/config.json", "obce-test/sentence_bert_config.json",
            "obce-test/config_sentence_transformers.json"} <= names
    unzipped = SentenceTransformer(str(tmp_path / "unzipped" / "obce-test"), device="cpu").encode(TEXTS)
    assert np.abs(unzipped - encoded).max() < 1e-6
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]


def test_nothing_is_written_for_a_plain_transformers_model(tmp_path, tokenizer):
    source = save_tiny_bert(tmp_path / "plain", tokenizer, seed=1)
    model = load_model(str(source), device="cpu")[0]
    (tmp_path / "out").mkdir()
    assert write_sentence_transformers_files(model, tmp_path / "out") == []
    assert not (tmp_path / "out" / "modules.json").exists()


def test_a_module_path_leading_outside_the_folder_is_not_copied(tmp_path, tokenizer):
    from obce_core.sentence_transformers_files import SentenceTransformersFilesWarning
    from tests.embedding_helpers import save_tiny_sentence_transformer

    source = save_tiny_sentence_transformer(tmp_path / "st", tokenizer)
    modules = json.loads((source / "modules.json").read_text())
    modules[1]["path"] = "../elsewhere"
    (source / "modules.json").write_text(json.dumps(modules))
    model = load_model(str(source), device="cpu")[0]
    (tmp_path / "out").mkdir()
    with pytest.warns(SentenceTransformersFilesWarning, match="leads outside the model folder"):
        assert write_sentence_transformers_files(model, tmp_path / "out") == []
    assert list((tmp_path / "out").iterdir()) == []
