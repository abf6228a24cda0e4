"""Task models: fine-tuned, saved, reloaded with ``load_model``; their ``obce_task.json``; the CLI.

Oracle: the reloaded model's predictions, made by a plain forward loop (no Trainer), must give the
very dev metrics that ``finetune_task_model`` measured on the model it trained in memory.
"""

from __future__ import annotations

import json

import pytest

from obce_core import glue, load_model
from obce_core.cli import main
from obce_core.training import (
    TASK_MODEL_FILE,
    Recipe,
    TaskModelInfo,
    finetune_task_model,
    list_task_models,
    read_task_model_info,
)
from tests.conftest import GLUE_DIR, needs_glue
from tests.test_finetune import _manual_predictions

pytestmark = [needs_glue, pytest.mark.usefixtures("one_torch_thread")]

FAST = Recipe(max_length=48, max_steps=30, learning_rate=3e-3, batch_size=16, eval_batch_size=32,
              train_size=64, eval_size=48, seed=3)


@pytest.mark.parametrize("task, pooling", [("sst2", "cls"), ("mrpc", "mean")])
def test_saved_task_model_reloads_with_identical_predictions(tiny_model_dir, tmp_path, task, pooling):
    recipe = FAST.replace(pooling=pooling)
    out = tmp_path / "models" / task
    info = finetune_task_model(task, out, model=str(tiny_model_dir), recipe=recipe, glue_dir=GLUE_DIR, device="cpu")
    model, tokenizer = load_model(str(out), device="cpu")
    assert type(model).__name__.endswith("ForSequenceClassification")
    assert getattr(model.config, "classifier_pooling", "cls") == pooling
    spec = glue.get_task(task)
    assert [model.config.id2label[i] for i in range(spec.num_labels)] == list(spec.label_names)
    logits, labels = _manual_predictions(model, tokenizer, task, recipe)
    reloaded = glue.compute_metrics(task, logits, labels)
    for key, value in reloaded.items():
        assert info.metrics[key] == pytest.approx(value, abs=1e-12)
    assert info.main_score == pytest.approx(glue.main_score(task, reloaded), abs=1e-12)
    assert info.train_steps == recipe.max_steps and info.train_s > 0 and info.device == "cpu"
    assert info.source_model == str(tiny_model_dir) and info.recipe == recipe and info.task == task


def test_task_model_info_round_trips_and_lists(tiny_model_dir, tmp_path):
    root = tmp_path / "models"
    info = finetune_task_model("rte", root / "rte", model=str(tiny_model_dir), recipe=FAST.replace(max_steps=3),
                               glue_dir=GLUE_DIR, device="cpu")
    on_disk = json.loads((root / "rte" / TASK_MODEL_FILE).read_text())
    assert set(on_disk) == {"task", "recipe", "metrics", "main_score", "train_s", "train_steps", "device",
                            "source_model", "created_at", "obce_version", "distilled_from", "data_note", "held_out"}
    # RTE's 2,490 training rows keep a seeded 10 % (249) out of training (tests/test_held_out.py)
    assert on_disk["held_out"]["size"] == 249 and on_disk["held_out"]["fraction"] == 0.1
    assert on_disk["distilled_from"] is None  # a plain fine-tune (tests/test_distill.py: a distilled one)
    assert on_disk["recipe"] == FAST.replace(max_steps=3).to_dict() and on_disk["main_score"] == info.main_score
    assert read_task_model_info(root / "rte") == info == TaskModelInfo.from_json(info.to_json())
    with pytest.raises(ValueError, match="Unknown task model info key"):
        TaskModelInfo.from_dict({**on_disk, "extra": 1})
    (root / "plain").mkdir()  # a folder without obce_task.json is no task model
    assert read_task_model_info(root / "plain") is None
    assert list_task_models(root) == [(root / "rte", info)] and list_task_models(tmp_path / "none") == []

    # An existing task model is replaced only with overwrite; other folders never.
    with pytest.raises(FileExistsError, match="earlier task model"):
        finetune_task_model("rte", root / "rte", model=str(tiny_model_dir), recipe=FAST, glue_dir=GLUE_DIR)
    (root / "plain" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never replaced"):
        finetune_task_model("rte", root / "plain", model=str(tiny_model_dir), recipe=FAST, glue_dir=GLUE_DIR,
                            overwrite=True)
    assert (root / "plain" / "keep.txt").read_text() == "mine"
    again = finetune_task_model("rte", root / "rte", model=str(tiny_model_dir), recipe=FAST.replace(max_steps=2),
                                glue_dir=GLUE_DIR, device="cpu", overwrite=True)
    assert read_task_model_info(root / "rte") == again and again.train_steps == 2


def test_cli_finetune_smoke(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "sst2-model"
    rc = main(["finetune", "--task", "sst2", "--out", str(out), "--model", str(tiny_model_dir), "--glue-dir",
               str(GLUE_DIR), "--recipe", "smoke", "--max-steps", "4", "--batch-size", "8", "--max-length", "32",
               "--eval-size", "32", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    info = read_task_model_info(out)
    assert info.recipe == Recipe.preset("smoke", max_steps=4, batch_size=8, max_length=32, eval_size=32)
    assert f"accuracy {100 * info.metrics['accuracy']:.2f}" in captured.out and "trained 4 steps" in captured.out
    model, _ = load_model(str(out))
    assert model.config.num_labels == 2
    # A second run into the same folder without --overwrite: one line, no traceback.
    assert main(["finetune", "--task", "sst2", "--out", str(out), "--model", str(tiny_model_dir), "--glue-dir",
                 str(GLUE_DIR), "--recipe", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--overwrite" in err
    # QNLI trains with the generic CPU preset; its data is not in this GLUE copy: the message says where it goes
    assert main(["finetune", "--task", "qnli", "--out", str(tmp_path / "q"), "--model", str(tiny_model_dir),
                 "--glue-dir", str(GLUE_DIR)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "QNLI/" in err and "train.tsv" in err
