"""Every GLUE task trains with the default recipe: the generic CPU preset, its sizing and a regression task model.

Oracles: the sizing recomputed by hand from the official split sizes and the step-time constant;
a regression task model fine-tuned with the generic preset on a synthetic STS-B folder is reloaded
by ``transformers`` itself and predicts one number per pair (compared with a plain forward pass);
its sentence-transformers files are read back by ``SentenceTransformer``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from obce_core import glue
from obce_core.training import CPU_SECONDS_PER_STEP, Recipe, estimate_training, finetune_task_model, subset_note
from obce_core.training.recipe import GENERIC_CPU_BUDGET_S, GENERIC_EVAL_SIZE, RECIPE_PRESETS
from obce_core.training.task_models import TASK_MODEL_FILE, read_task_model_info
from tests.embedding_helpers import save_tiny_sentence_transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["a cat sat on the mat", "the dog ran home", "birds fly high", "rain fell today", "we ate warm bread",
         "music played loud", "the sun is bright", "a child reads a book"]


def _synthetic_stsb(root, n_train=24, n_dev=12):
    """An STS-B folder in the GLUE layout (10 columns, float score 0-5); STS-B is not in the offline copy."""
    sts = root / "STS-B"
    sts.mkdir(parents=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"

    def rows(n, offset):
        return "".join(f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\t{WORDS[(i + offset) % 8]}\t"
                       f"{WORDS[(3 * i + 1) % 8]}\t{(7 * i + offset) % 51 / 10:.1f}\n" for i in range(n))

    (sts / "train.tsv").write_text(head + rows(n_train, 0))
    (sts / "dev.tsv").write_text(head + rows(n_dev, 3))
    return root


def test_generic_sizing_by_hand():
    base = RECIPE_PRESETS["cpu-generic"]
    per_step = CPU_SECONDS_PER_STEP * (base["batch_size"] / 32) * (base["max_length"] / 64)  # no grouping share known
    budget = int(GENERIC_CPU_BUDGET_S // per_step)
    # STS-B: 5,749 rows = 360 batches of 16; 3 epochs (1,080 steps) do not fit the budget, 2.6 epochs do
    stsb = Recipe.for_task("stsb")
    assert stsb == Recipe.preset("cpu-generic", "stsb")
    assert math.ceil(5749 / 16) * 3 > budget and stsb.epochs == math.floor(10 * budget / math.ceil(5749 / 16)) / 10
    assert stsb.train_size is None and stsb.eval_size is None and subset_note(stsb, "stsb") == ""  # dev 1,500
    assert stsb.pooling == "mean" and stsb.group_by_length
    # QNLI: one epoch of the whole split does not fit: one epoch of a seeded subset that does
    qnli = Recipe.for_task("qnli")
    assert (qnli.epochs, qnli.train_size, qnli.eval_size) == (1.0, budget * 16, GENERIC_EVAL_SIZE)
    assert subset_note(qnli, "qnli") == (f"Sub-sampled: trains on a seeded {budget * 16:,} of the 104,743 training "
                                         f"examples and scores a seeded {GENERIC_EVAL_SIZE:,} of the 5,463 dev examples.")
    assert "(of each validation split)" in subset_note(Recipe.for_task("mnli"), "mnli")
    # tasks with their own preset keep it; every task fits 15 minutes by the same estimate
    assert Recipe.for_task("rte") == Recipe.preset("cpu-rte")
    for task in glue.TASKS:
        assert estimate_training(Recipe.for_task(task), task)[1] <= 15 * 60, task


def test_regression_task_model_with_the_generic_preset(tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification

    root = _synthetic_stsb(tmp_path / "glue")
    source = save_tiny_sentence_transformer(tmp_path / "tiny-st", tokenizer)
    # the generic preset, cut to a few steps (the test checks the path, not the quality)
    recipe = Recipe.for_task("stsb", max_steps=3, batch_size=8, max_length=32, eval_batch_size=16)
    phases = []
    info = finetune_task_model("stsb", tmp_path / "sts-model", model=str(source), recipe=recipe, glue_dir=root,
                               device="cpu", progress=lambda e: phases.append(getattr(e, "phase", "")))
    out = tmp_path / "sts-model"
    assert set(info.metrics) == {"pearson", "spearmanr", "main_score"} and info.train_steps == 3
    saved = json.loads((out / TASK_MODEL_FILE).read_text())
    assert saved["recipe"]["pooling"] == "mean" and saved["data_note"] == "" and read_task_model_info(out) == info

    # transformers alone reloads it: one output, and one number per pair
    net = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert net.config.num_labels == 1
    pairs = [(WORDS[0], WORDS[1]), (WORDS[2], WORDS[2]), (WORDS[5], WORDS[7])]
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = net(**enc).logits
    assert predicted.shape == (3, 1) and torch.isfinite(predicted).all()
    from obce_core import load_model

    again, _ = load_model(str(out), device="cpu")
    with torch.no_grad():
        assert torch.allclose(again(**enc).logits, predicted, atol=1e-6)

    # the task model carries its source's sentence-transformers files: its encoder is still a sentence encoder
    st_model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in st_model] == ["Transformer", "Pooling", "Normalize"]
    emb = st_model.encode(WORDS[:4])
    assert emb.shape == (4, 24) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_a_sub_sampled_task_says_so_and_missing_data_names_the_folder(tmp_path, tiny_model_dir):
    from obce_core.glue import GlueDataError

    # QQP's recipe draws subsets; the first line of the job says so before anything is loaded
    phases = []
    with pytest.raises(GlueDataError, match=r"QQP/train\.tsv, dev\.tsv") as err:
        finetune_task_model("qqp", tmp_path / "qqp", model=str(tiny_model_dir), glue_dir=tmp_path, device="cpu",
                            progress=lambda e: phases.append(getattr(e, "phase", "")))
    assert "Point glue_dir/OBCE_GLUE_DIR at the folder that holds QQP/" in str(err.value)
    assert "Sub-sampled: trains on a seeded 15,360 of the 363,846 training examples" in phases[0]
    assert not (tmp_path / "qqp").exists()
