"""Fine-tuning, evaluation and the two protocols on tiny random BERTs with real GLUE rows.

Oracles: metrics are recomputed with ``glue.compute_metrics`` from predictions made by a plain
forward loop (not Trainer); parameter counts are compared with the pruner's closed-form report;
store hits are proven by making training and evaluation fail if called.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from obce_core import glue, load_model
from obce_core.results import ResultsStore
from obce_core.training import protocols
from obce_core.training import (
    PRESET_CHOICES,
    RECIPE_PRESETS,
    PhaseEvent,
    StepEvent,
    Recipe,
    TrainingCancelled,
    evaluate,
    fine_tune,
    head_fingerprint,
    measure_latency,
    parameter_counts,
    run_finetuned_protocol,
    run_paper_protocol,
)
from obce_core.pruning import PruningPlan, prune
from obce_core.scoring import score_model
from tests.conftest import GLUE_DIR, make_tiny_bert, needs_glue, save_tiny_bert

pytestmark = [needs_glue, pytest.mark.usefixtures("one_torch_thread")]

# Small enough for seconds on one core, large enough for a tiny model to fit the rows it sees.
# held_out=0: train on load_task(n=64, seed=3), the draw evaluate(split="train") repeats below
# (the held-out reserve has its own tests, tests/test_held_out.py).
FAST = Recipe(max_length=48, max_steps=60, learning_rate=3e-3, batch_size=16, eval_batch_size=32,
              train_size=64, eval_size=48, seed=3, held_out=0.0)


def _manual_predictions(model, tokenizer, task, recipe):
    """Logits from a plain batched forward loop over the rows ``evaluate`` scores."""
    spec = glue.get_task(task)
    data = glue.load_task(task, "validation", GLUE_DIR, n=recipe.eval_size, seed=recipe.seed)
    texts = glue.dataset_texts(data, task)
    logits = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), recipe.eval_batch_size):
            batch = texts[i:i + recipe.eval_batch_size]
            cols = list(zip(*batch)) if spec.is_pair else [batch]
            enc = tokenizer(*[list(c) for c in cols], truncation=True, max_length=recipe.max_length,
                            padding=True, return_tensors="pt")
            logits.append(model(**enc).logits.numpy())
    return np.concatenate(logits), np.asarray(data["label"])


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------
def test_recipe_json_round_trip_and_presets(tmp_path):
    r = Recipe(max_steps=7, train_size=100, warmup_ratio=0.1, precision="bf16")
    assert Recipe.from_json(r.to_json()) == r
    r.to_json(tmp_path / "r.json")
    assert Recipe.from_json(tmp_path / "r.json") == r
    assert Recipe.from_dict(json.loads(r.to_json())) == r
    # 3 and 3.0 epochs are one recipe, with one JSON (the store key)
    assert Recipe(epochs=3).to_json() == Recipe(epochs=3.0).to_json()
    assert Recipe.preset("bert-glue") == Recipe()  # BERT's GLUE recipe is the default
    assert (Recipe().max_length, Recipe().batch_size, Recipe().learning_rate, Recipe().epochs) == (128, 32, 2e-5, 3.0)
    assert Recipe.preset("obce-40") == Recipe(epochs=40)  # the OBCE paper's 40 epochs, else BERT's
    assert set(RECIPE_PRESETS) == {"bert-glue", "obce-40", "smoke", "cpu-sst2", "cpu-cola", "cpu-mrpc", "cpu-rte",
                                   "cpu-wnli", "cpu-generic"}
    assert PRESET_CHOICES[0] == "cpu" and set(PRESET_CHOICES[1:]) == set(RECIPE_PRESETS) | {"recover"}


def test_cpu_presets_per_task():
    sst2 = Recipe.preset("cpu", "SST-2", seed=1)  # "cpu" = the task's CPU preset
    assert sst2 == Recipe.for_task("sst2", seed=1) == Recipe.preset("cpu-sst2", seed=1)
    assert (sst2.max_length, sst2.epochs, sst2.learning_rate, sst2.batch_size, sst2.warmup_ratio, sst2.train_size,
            sst2.pooling, sst2.group_by_length, sst2.seed) == (64, 1.0, 1e-4, 32, 0.06, None, "mean", True, 1)
    cola, mrpc, rte, wnli = (Recipe.for_task(t) for t in ("cola", "mrpc", "rte", "wnli"))
    assert (cola.max_length, cola.epochs, cola.learning_rate, cola.batch_size, cola.warmup_ratio, cola.pooling) == \
        (64, 6.0, 5e-5, 32, 0.1, "mean")
    assert (mrpc.max_length, mrpc.epochs, mrpc.learning_rate, mrpc.batch_size, mrpc.pooling) == (128, 5.0, 1e-4, 16, "mean")
    assert (rte.max_length, rte.epochs, rte.learning_rate, rte.batch_size, rte.pooling) == (128, 8.0, 3e-5, 16, "mean")
    assert wnli == rte.replace(epochs=3.0, learning_rate=5e-5, pooling="cls")
    assert all(r.group_by_length for r in (cola, mrpc, rte, wnli))
    assert mrpc.train_size is None and cola.train_size is None  # whole training splits
    # a task without its own preset gets the generic one, sized for it (tests/test_generic_preset.py)
    assert Recipe.for_task("qnli") == Recipe.preset("cpu", "qnli") == Recipe.preset("cpu-generic", "qnli")
    for name in ("cpu", "cpu-generic"):
        with pytest.raises(ValueError, match="name the task"):
            Recipe.preset(name)
    # pooling is checked, and "cls" keeps the store key of recipes from before the field existed
    with pytest.raises(ValueError, match="pooling"):
        Recipe(pooling="max")
    assert "pooling" not in json.loads(Recipe().canonical_json())
    # group_by_length likewise: false keeps the old key, true is a different recipe
    assert "group_by_length" not in json.loads(Recipe().canonical_json())
    assert Recipe(group_by_length=True).canonical_json() != Recipe().canonical_json()
    with pytest.raises(ValueError, match="group_by_length"):
        Recipe(group_by_length="yes")
    assert json.loads(Recipe(pooling="mean").canonical_json())["pooling"] == "mean"


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"learning_rate": -1e-5}, ["learning_rate", "-1e-05"]),
        ({"batch_size": 0}, ["batch_size", "0", ">= 1"]),
        ({"eval_batch_size": 2.5}, ["eval_batch_size"]),
        ({"max_steps": -3}, ["max_steps"]),
        ({"epochs": 0}, ["epochs"]),
        ({"warmup_ratio": 1.0}, ["warmup_ratio"]),
        ({"train_size": 0}, ["train_size"]),
        ({"precision": "int8"}, ["precision", "int8"]),
        ({"max_length": 4}, ["max_length"]),
    ],
)
def test_recipe_rejects_bad_values(changes, words):
    with pytest.raises(ValueError) as info:
        Recipe(**changes)
    assert all(w in str(info.value) for w in words)


def test_recipe_rejects_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="Unknown recipe key"):
        Recipe.from_dict({"lr": 1e-5})
    with pytest.raises(ValueError, match="'preset' parameter.*got 'fast'"):
        Recipe.preset("fast")


# ---------------------------------------------------------------------------------------------
# fine_tune / evaluate
# ---------------------------------------------------------------------------------------------
def test_fine_tune_lowers_loss_and_evaluate_matches_independent_metrics(tokenizer):
    model = make_tiny_bert(seed=2, classifier=True)
    events = []
    out = fine_tune(model, tokenizer, "sst2", FAST, glue_dir=GLUE_DIR, progress=events.append)
    assert out is model and not model.training
    # progress: every step once, in order, with the planned total and an ETA that reaches 0
    assert all(isinstance(e, StepEvent) for e in events)
    assert [e.step for e in events] == list(range(1, FAST.max_steps + 1))
    assert {e.max_steps for e in events} == {FAST.max_steps}
    assert events[-1].eta_s == 0 and events[-1].loss is not None
    assert out.obce_train_steps == FAST.max_steps
    losses = [loss for _, loss in model.obce_train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses

    metrics = evaluate(model, tokenizer, "sst2", FAST, glue_dir=GLUE_DIR)
    logits, labels = _manual_predictions(model, tokenizer, "sst2", FAST)
    expected = glue.compute_metrics("sst2", logits, labels)
    assert len(labels) == FAST.eval_size
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics["main_score"] == pytest.approx(glue.main_score("sst2", expected), abs=1e-12)
    # It fitted the rows it was trained on (the same seeded draw of 64 training rows).
    seen = FAST.replace(eval_size=FAST.train_size)
    assert evaluate(model, tokenizer, "sst2", seen, glue_dir=GLUE_DIR, split="train")["accuracy"] > 0.8


def test_evaluate_pair_task_combined_score(tokenizer):
    model = make_tiny_bert(seed=4, classifier=True)
    recipe = FAST.replace(eval_size=40, eval_batch_size=16)
    metrics = evaluate(model, tokenizer, "mrpc", recipe, glue_dir=GLUE_DIR)
    logits, labels = _manual_predictions(model, tokenizer, "mrpc", recipe)
    expected = glue.compute_metrics("mrpc", logits, labels)
    assert set(metrics) == {"accuracy", "f1", "main_score"}
    for key in ("accuracy", "f1"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12)
    assert metrics["main_score"] == pytest.approx((expected["accuracy"] + expected["f1"]) / 2)


def test_should_stop_cancels_and_raises(tokenizer):
    model = make_tiny_bert(seed=2, classifier=True)
    steps = []
    with pytest.raises(TrainingCancelled, match="cancelled at step 3"):
        fine_tune(model, tokenizer, "sst2", FAST, glue_dir=GLUE_DIR, progress=lambda e: steps.append(e.step),
                  should_stop=lambda: len(steps) >= 3)
    assert steps == [1, 2, 3]


def test_fine_tune_needs_a_matching_head(tokenizer):
    with pytest.raises(ValueError, match="num_labels=2"):
        fine_tune(make_tiny_bert(), tokenizer, "sst2", FAST, glue_dir=GLUE_DIR)  # a bare encoder
    with pytest.raises(ValueError, match="needs a sequence classifier with num_labels=2"):
        evaluate(make_tiny_bert(classifier=True, num_labels=3), tokenizer, "rte", FAST, glue_dir=GLUE_DIR)


def test_bad_task_and_split_errors(tokenizer, tmp_path):
    model = make_tiny_bert(classifier=True)
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'"):
        fine_tune(model, tokenizer, "sst3", FAST, glue_dir=GLUE_DIR)
    with pytest.raises(glue.GlueDataError, match="Unknown split 'test'"):
        evaluate(model, tokenizer, "sst2", FAST, glue_dir=GLUE_DIR, split="test")
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood \t1\n")
    with pytest.raises(glue.GlueDataError, match="dev.tsv does not exist"):
        evaluate(model, tokenizer, "sst2", FAST, glue_dir=tmp_path)


def test_parameter_counts_and_latency(tokenizer):
    model = make_tiny_bert(classifier=True)
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    layer = model.bert.encoder.layer[0]
    assert counts["encoder"] == 2 * sum(p.numel() for p in layer.parameters())
    ms = measure_latency(model, tokenizer, ["a short one", "and a second, longer sentence"], batch_size=2, repeats=3)
    assert 0 < ms < 5000 and not model.training


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------
def _scores_on_train(task, n=48):
    def score(model, tokenizer):
        data = glue.load_task(task, "train", GLUE_DIR, n=n, seed=0)
        return score_model(model, tokenizer, glue.dataset_texts(data, task), max_length=48)
    return score


def test_paper_protocol_end_to_end_and_store(tiny_model_dir, tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results.sqlite")
    plan = PruningPlan(ffn=50, qk=50, v=50, skip_layers=1)
    recipe = FAST.replace(max_steps=20)
    phases = []
    out = run_paper_protocol(str(tiny_model_dir), _scores_on_train("rte"), plan, "rte", recipe, glue_dir=GLUE_DIR,
                             store=store, progress=lambda e: phases.append(e.phase) if isinstance(e, PhaseEvent) else None)
    original, pruned = out["original"], out["pruned"]
    assert "fine-tuning original on rte" in phases and "fine-tuning pruned on rte" in phases
    assert pruned.params_total < original.params_total and pruned.params_encoder < original.params_encoder
    assert pruned.source_fingerprint == original.fingerprint != pruned.fingerprint
    assert pruned.head_fingerprint == original.head_fingerprint  # same seeded head, copied by prune

    # Independent oracle for the sizes: the pruner's closed-form report on a fresh copy.
    from transformers import set_seed

    set_seed(recipe.seed)
    fresh, tok = load_model(str(tiny_model_dir), num_labels=2, device="cpu")
    assert head_fingerprint(fresh) == original.head_fingerprint  # the head is seeded by the recipe
    _, report = prune(fresh, _scores_on_train("rte")(fresh, tok), plan)
    assert pruned.params_total == report.params_after["total"]
    assert pruned.params_encoder == report.params_after["encoder"]
    assert original.params_encoder == report.params_before["encoder"]

    rows = store.all_results()
    assert sorted(rows["role"]) == ["original", "pruned"]
    assert rows.set_index("role").loc["original", "plan"] is None
    assert json.loads(rows.set_index("role").loc["pruned", "plan"]) == plan.to_dict()
    for r in (original, pruned):
        assert r.id is not None and 0 <= r.main_score <= 1 and r.latency_ms > 0
        assert r.metrics["main_score"] == r.main_score and r.recipe == recipe.to_dict()

    # The identical run again: answered from the store, nothing trained or evaluated.
    def boom(*args, **kwargs):
        raise AssertionError("should have been answered from the store")

    monkeypatch.setattr(protocols, "fine_tune", boom)
    monkeypatch.setattr(protocols, "evaluate", boom)
    again = run_paper_protocol(str(tiny_model_dir), _scores_on_train("rte"), plan, "rte", recipe, glue_dir=GLUE_DIR,
                               store=store)
    assert all(r.from_store for r in again.values())
    assert again["original"].metrics == original.metrics and again["pruned"].id == pruned.id
    assert len(store.all_results()) == 2
    # A different recipe is a different run.
    with pytest.raises(AssertionError, match="answered from the store"):
        run_paper_protocol(str(tiny_model_dir), None, None, "rte", recipe.replace(seed=4), glue_dir=GLUE_DIR, store=store)


def test_finetuned_protocol_with_recovery(tmp_path, tokenizer):
    # A "fine-tuned" classifier: briefly trained on RTE and saved.
    model = make_tiny_bert(seed=5, classifier=True)
    fine_tune(model, tokenizer, "rte", FAST.replace(max_steps=10), glue_dir=GLUE_DIR)
    path = tmp_path / "ft"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    recipe = FAST.replace(max_steps=5)
    plan = PruningPlan(ffn=40, v=40)
    out = run_finetuned_protocol(str(path), _scores_on_train("rte", 32), plan, "rte", recipe, recover_steps=4,
                                 glue_dir=GLUE_DIR)
    assert set(out) == {"original", "pruned", "recovered"}
    # The original is evaluated as saved: the same numbers as evaluating the model in hand.
    assert out["original"].metrics == evaluate(model, tokenizer, "rte", recipe, glue_dir=GLUE_DIR)
    assert out["recovered"].protocol == "finetuned-recover" and out["recovered"].recipe["max_steps"] == 4
    assert out["pruned"].protocol == "finetuned" and out["pruned"].fingerprint == out["recovered"].fingerprint
    assert out["pruned"].params_encoder < out["original"].params_encoder

    with pytest.raises(ValueError, match="not a fine-tuned sequence classifier"):
        run_finetuned_protocol(_bare_dir(tmp_path, tokenizer), None, None, "rte", recipe, glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="has 2 labels but GLUE task 'stsb' has 1"):
        run_finetuned_protocol(str(path), None, None, "stsb", recipe, glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="recover_steps"):
        run_finetuned_protocol(str(path), None, None, "rte", recipe, recover_steps=-1, glue_dir=GLUE_DIR)


def _bare_dir(tmp_path, tokenizer):
    path = tmp_path / "bare"
    save_tiny_bert(path, tokenizer)
    return str(path)


def test_finetuned_protocol_refuses_swapped_label_order(tmp_path, tokenizer):
    model = make_tiny_bert(classifier=True)
    model.config.id2label = {0: "not_entailment", 1: "entailment"}  # RTE's hub order is the reverse
    model.config.label2id = {"not_entailment": 0, "entailment": 1}
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="orders its labels"):
        run_finetuned_protocol(str(tmp_path / "m"), None, None, "rte", FAST, glue_dir=GLUE_DIR)


def _synthetic_glue(root):
    """Tiny STS-B and MNLI folders in the GLUE layout (neither ships with the offline copy)."""
    words = ["a cat sat", "the dog ran", "birds fly high", "rain fell today", "we ate bread", "music played loud"]
    sts = root / "STS-B"
    sts.mkdir(parents=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [f"{i}\tg\tf\t2012\t{i}\ts\ts\t{words[i % 6]}\t{words[(i * 5 + 1) % 6]}\t{(i * 7) % 51 / 10:.1f}\n"
            for i in range(40)]
    (sts / "train.tsv").write_text(head + "".join(rows))
    (sts / "dev.tsv").write_text(head + "".join(rows[:12]))
    mnli = root / "MNLI"
    mnli.mkdir()
    head = "index\tsentence1\tsentence2\tgold_label\n"
    labels = ["entailment", "neutral", "contradiction"]
    for name, n in (("dev_matched.tsv", 9), ("dev_mismatched.tsv", 7)):
        (mnli / name).write_text(head + "".join(f"{i}\t{words[i % 6]}\t{words[(i + 2) % 6]}\t{labels[i % 3]}\n"
                                                for i in range(n)))
    return root


def test_regression_and_mnli_paths(tmp_path, tokenizer):
    root = _synthetic_glue(tmp_path / "glue")
    recipe = FAST.replace(max_steps=6, train_size=None, eval_size=None, batch_size=8)
    sts = make_tiny_bert(classifier=True, num_labels=1)
    fine_tune(sts, tokenizer, "stsb", recipe, glue_dir=root)  # MSE on float scores
    metrics = evaluate(sts, tokenizer, "stsb", recipe, glue_dir=root)
    assert set(metrics) == {"pearson", "spearmanr", "main_score"}
    assert metrics["main_score"] == pytest.approx((metrics["pearson"] + metrics["spearmanr"]) / 2)

    mnli = make_tiny_bert(classifier=True, num_labels=3)
    both = evaluate(mnli, tokenizer, "mnli", recipe, glue_dir=root)
    matched = evaluate(mnli, tokenizer, "mnli", recipe, glue_dir=root, split="validation_matched")
    mismatched = evaluate(mnli, tokenizer, "mnli", recipe, glue_dir=root, split="validation_mismatched")
    assert both == {**matched, "accuracy_mismatched": mismatched["accuracy"]}
    assert both["main_score"] == matched["accuracy"]


def test_training_estimate_hand_computed():
    from obce_core.training import CPU_SECONDS_PER_STEP, estimate_training

    cpu = Recipe(max_length=64, epochs=1.0, train_size=2000)  # 2,000 examples, batch 32, 1 epoch, 64 tokens
    steps, seconds = estimate_training(cpu, "sst2", runs=2)
    assert steps == 63  # ceil(2000 / 32)
    assert seconds == pytest.approx(2 * 63 * CPU_SECONDS_PER_STEP)
    # the whole RTE split (2,490 rows), batch 16 at 128 tokens: 156 steps at CPU_SECONDS_PER_STEP x (16/32) x (128/64) s
    whole = Recipe(train_size=None, batch_size=16, max_length=128, epochs=1.0, held_out=0.0)
    assert estimate_training(whole, "rte") == (156, pytest.approx(156 * CPU_SECONDS_PER_STEP))
    # with the default reserve, 249 of them (10 %) are never trained on: ceil(2,241 / 16) = 141 steps
    assert estimate_training(whole.replace(held_out=0.1), "rte")[0] == 141
    # Trainer's count: ceil(8551 / 32) = 268 batches per epoch, x 6 epochs = 1,608 (the CoLA preset's run
    # took 1,608 steps), not ceil(8551 / 32 x 6) = 1,604
    assert estimate_training(Recipe(batch_size=32, epochs=6.0, held_out=0.0), "cola")[0] == 1608
    # length-grouped batches: the measured share of the random-batch time for that task, none for others
    grouped = whole.replace(group_by_length=True)
    assert estimate_training(grouped, "rte")[1] < estimate_training(whole, "rte")[1]
    assert estimate_training(grouped, "qnli")[1] == estimate_training(whole, "qnli")[1]
    assert estimate_training(cpu.replace(max_steps=5), "rte", runs=0, extra_steps=3)[0] == 5


def test_group_by_length_batches_pad_less_and_cover_each_example_once(tokenizer, tmp_path):
    """A length-grouped epoch sees every example once, in batches that pad far less than random ones."""
    from obce_core.training.trainer import _make_trainer, _tokenize, _training_args

    spec = glue.get_task("sst2")
    rows = _tokenize(glue.load_task(spec, "train", GLUE_DIR, n=512, seed=0), tokenizer, spec, 64)

    def epoch(group_by_length):
        recipe = Recipe(max_length=64, batch_size=16, epochs=1.0, group_by_length=group_by_length, seed=0)
        args = _training_args(recipe, str(tmp_path / str(group_by_length)), "cpu")
        loader = _make_trainer(make_tiny_bert(classifier=True), tokenizer, args, train_dataset=rows).get_train_dataloader()
        batches = [batch["attention_mask"] for batch in loader]
        assert len(batches) == recipe.steps(len(rows)) == 32  # one epoch of 512 rows in batches of 16
        padded = sum(m.numel() for m in batches)  # tokens computed, padding included
        lengths = sorted(int(n) for m in batches for n in m.sum(1))
        return padded, lengths

    grouped, grouped_lengths = epoch(True)
    shuffled, shuffled_lengths = epoch(False)
    real = sorted(len(ids) for ids in rows["input_ids"])
    assert grouped_lengths == shuffled_lengths == real  # each example once in either order
    assert sum(real) <= grouped < 0.75 * shuffled, (sum(real), grouped, shuffled)


def test_sampling_arguments_for_old_and_new_transformers():
    """transformers >= 5.2 takes train_sampling_strategy; older 5.x the group_by_length flag."""
    import dataclasses

    from obce_core.training.trainer import _sampling_args

    @dataclasses.dataclass
    class Old:
        group_by_length: bool = False

    @dataclasses.dataclass
    class New:
        train_sampling_strategy: str = "random"

    assert _sampling_args(Old, True) == {"group_by_length": True}
    assert _sampling_args(New, True) == {"train_sampling_strategy": "group_by_length"}
    assert _sampling_args(New, False) == {"train_sampling_strategy": "random"}
