"""The held-out reserve: training never reads it, obce_task.json records it, a changed file is refused."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import make_tiny_bert
from obce_core import glue
from obce_core.training import Recipe, TaskModelInfo, finetune_task_model, load_held_out, read_task_model_info
from obce_core.training import trainer as trainer_module
from obce_core.training.held_out import held_out_rows, held_out_size

ROWS = 120


def _write_sst2(root, rows=ROWS, changed_row=None):
    """A tiny SST-2 copy whose every sentence is unique (so a batch's token ids name its rows)."""
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("dev", 40)):
        with open(folder / f"{split}.tsv", "w", newline="", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for i in range(n):
                text = f"{split} sentence number {i} is {'good' if i % 2 else 'bad'}"
                if split == "train" and i == changed_row:
                    text += " indeed"
                f.write(f"{text} \t{i % 2}\n")
    return root


def _read_train(root):
    with open(root / "SST-2" / "train.tsv", encoding="utf-8") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def test_reserve_size_and_draw_are_stated_and_seeded():
    assert held_out_size(67349, 0.1, 2000) == 2000
    assert held_out_size(3668, 0.1, 2000) == 366
    assert held_out_size(100, 0.0, 2000) == 0
    a, b = held_out_rows(1000, 0.1, 2000, seed=7), held_out_rows(1000, 0.1, 2000, seed=7)
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert not np.array_equal(a, held_out_rows(1000, 0.1, 2000, seed=8))
    with pytest.raises(ValueError, match="held_out"):
        Recipe(held_out=0.9)


def test_held_out_rows_never_reach_a_training_batch(tmp_path, tokenizer, monkeypatch):
    root = _write_sst2(tmp_path / "glue")
    texts = _read_train(root)
    ids_of = {tuple(tokenizer(t, truncation=True, max_length=32)["input_ids"]): i for i, t in enumerate(texts)}
    assert len(ids_of) == ROWS
    seen = []
    real_call = trainer_module.DataCollatorWithPadding.__call__

    def spy(self, features):  # every batch the Trainer reads, before padding
        rows = [ids_of.get(tuple(f["input_ids"])) for f in features]
        seen.extend(r for r in rows if r is not None)  # None: a dev row of the final evaluation
        return real_call(self, features)

    monkeypatch.setattr(trainer_module.DataCollatorWithPadding, "__call__", spy)
    recipe = Recipe(max_length=32, epochs=1.0, batch_size=12, eval_batch_size=32, learning_rate=1e-3, seed=5,
                    held_out=0.25, held_out_max=20)
    monkeypatch.setattr("obce_core.training.task_models.load_model",
                        lambda *a, **k: (make_tiny_bert(seed=1, classifier=True), tokenizer))
    out = tmp_path / "model"
    info = finetune_task_model("sst2", out, recipe=recipe, glue_dir=root)

    record = read_task_model_info(out).held_out
    assert record == info.held_out and record.size == 20 and record.seed == 5 and record.fraction == 0.25
    reserve = load_held_out(out, root)
    reserved = set(reserve["idx"])
    assert len(reserved) == 20 and [texts[i] for i in sorted(reserved)] == [
        reserve["sentence"][j] for j in np.argsort(reserve["idx"])]
    # One epoch: every other row exactly once, no reserved row ever.
    assert sorted(seen[:ROWS - 20]) == sorted(set(range(ROWS)) - reserved)
    assert reserved.isdisjoint(seen)


def test_a_changed_training_file_or_a_missing_record_is_refused(tmp_path, tokenizer):
    root = _write_sst2(tmp_path / "glue")
    recipe = Recipe(held_out=0.25, held_out_max=20, seed=5)
    from obce_core.training.trainer import training_rows

    _, record = training_rows(glue.get_task("sst2"), recipe, root)
    info = TaskModelInfo(task="sst2", recipe=recipe, metrics={}, main_score=0.5, train_s=1.0, train_steps=1,
                         device="cpu", source_model="tiny", created_at="2026-01-01T00:00:00+00:00",
                         obce_version="test", held_out=record.to_dict())
    folder = tmp_path / "m"
    folder.mkdir()
    info.to_json(folder / "obce_task.json")
    assert len(load_held_out(folder, root)) == 20
    changed = sorted(held_out_rows(ROWS, 0.25, 20, 5))[3]
    other = _write_sst2(tmp_path / "glue2", changed_row=int(changed))
    with pytest.raises(ValueError, match="does not match the sst2 training file"):
        load_held_out(folder, other)
    TaskModelInfo.from_json(folder / "obce_task.json")  # still readable
    old = TaskModelInfo(**{**info.__dict__, "held_out": None})
    old.to_json(folder / "obce_task.json")
    with pytest.raises(ValueError, match="records no held-out part.*--search-data"):
        load_held_out(folder, root)


def test_recipes_stored_before_the_reserve_keep_their_key():
    legacy = Recipe.from_dict({"epochs": 2.0})
    assert legacy.held_out == 0.0 and "held_out" not in legacy.canonical_json()
    assert Recipe.from_dict(json_roundtrip := Recipe(held_out=0.1).to_dict()) == Recipe(**json_roundtrip)
    assert '"held_out": 0.1' in Recipe().canonical_json()
