"""Recovery by knowledge distillation: the KD loss, training with a teacher, distilled task models, the
paper protocol's distilled pruned run, the CLI, and the Compare page's core helpers (job line, latency table).

Oracles: the loss against the formula written out in numpy, and its gradient against the closed
form ``T (softmax(s/T) - softmax(t/T)) / batch``; a student distilled from an identical copy of
itself at ``kd_alpha = 1`` must not move at all (zero loss, zero gradient, no weight decay); a
saved distilled model's dev metrics against a plain forward loop over the reloaded folder.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from obce_core import load_model
from obce_core.cli import main
from obce_core.describe import UNREADABLE_SPEC, describe_job, describe_recipe
from obce_core.jobs import FinetuneJobSpec, JobSpec
from obce_core.pruning import PruningPlan, prune
from obce_core.results import ResultsStore, comparisons, latency_table
from obce_core.training import (
    Recipe,
    RunResult,
    TaskModelInfo,
    fine_tune,
    finetune_task_model,
    hidden_state_loss,
    kd_loss,
    protocols,
    read_task_model_info,
    run_paper_protocol,
    run_teacher_id,
    teacher_fingerprint,
)
from obce_core.training.distill import check_tokenizers
from tests.conftest import GLUE_DIR, make_tiny_bert, needs_glue
from tests.test_app_prune_compare import record_started_jobs
from tests.test_finetune import _manual_predictions, _scores_on_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = Recipe(max_length=48, max_steps=4, learning_rate=3e-3, batch_size=16, eval_batch_size=32, train_size=64,
              eval_size=48, seed=3, weight_decay=0.0)


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (2.5, 0.3), (4.0, 1.0), (2.0, 0.0)])
def test_kd_loss_classification_equals_the_formula(temperature, alpha):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)) * 3, rng.normal(size=(5, 3)) * 3
    y = np.array([0, 2, 1, 1, 0])
    log_ps, log_pt = _log_softmax(s / temperature), _log_softmax(t / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    ce = -_log_softmax(s)[np.arange(5), y].mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=temperature, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_gradient_is_the_closed_form():
    rng = np.random.default_rng(1)
    s = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32, requires_grad=True)
    t = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32)
    kd_loss(s, t, None, temperature=3.0, alpha=1.0).backward()
    ps, pt = np.exp(_log_softmax(s.detach().numpy() / 3.0)), np.exp(_log_softmax(t.numpy() / 3.0))
    np.testing.assert_allclose(s.grad.numpy(), 3.0 * (ps - pt) / 4, atol=1e-6)


def test_kd_loss_regression_equals_the_formula():
    s, t, y = np.array([0.5, 2.0, 4.5, 1.0]), np.array([1.0, 2.5, 4.0, 0.0]), np.array([0.0, 3.0, 5.0, 1.5])
    expected = 0.7 * np.mean((s - t) ** 2) + 0.3 * np.mean((s - y) ** 2)
    got = kd_loss(torch.tensor(s)[:, None], torch.tensor(t)[:, None], torch.tensor(y), temperature=9.0, alpha=0.7)
    assert got.item() == pytest.approx(expected, rel=1e-6)  # the temperature does not apply to regression


def test_kd_loss_is_zero_with_the_teacher_as_student(tokenizer, sentences):
    model = make_tiny_bert(seed=2, classifier=True, num_labels=3)
    with torch.no_grad():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    labels = torch.tensor([i % 3 for i in range(len(sentences))])
    assert kd_loss(logits, logits, labels, temperature=2.0, alpha=1.0).item() == 0.0
    assert kd_loss(logits[:, :1], logits[:, :1], None, temperature=2.0, alpha=1.0).item() == 0.0
    assert kd_loss(logits, logits, labels, temperature=2.0, alpha=0.5).item() > 0  # the label term remains


def test_kd_loss_bad_input():
    s = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="'alpha' parameter of kd_loss"):
        kd_loss(s, s, torch.zeros(2), temperature=2.0, alpha=1.5)
    with pytest.raises(ValueError, match="'temperature' parameter of kd_loss"):
        kd_loss(s, s, torch.zeros(2), temperature=0.0, alpha=0.5)
    with pytest.raises(ValueError, match="same number of labels"):
        kd_loss(s, torch.zeros(2, 3), torch.zeros(2), temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="no labels"):
        kd_loss(s, s, None, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="'kd_alpha' parameter of Recipe"):
        Recipe(kd_alpha=1.5)


# ---------------------------------------------------------------------------------------------
# Training with a teacher
# ---------------------------------------------------------------------------------------------
def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _kl_to(teacher, student, tokenizer, n=48):
    """The teacher term of kd_loss (T = 2) over ``n`` RTE training pairs, both models in eval mode."""
    from obce_core import glue

    data = glue.load_task("rte", "train", GLUE_DIR, n=n, seed=0)
    first, second = zip(*glue.dataset_texts(data, "rte"))
    enc = tokenizer(list(first), list(second), truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.no_grad():
        return kd_loss(student.eval()(**enc).logits, teacher.eval()(**enc).logits, None, temperature=2.0,
                       alpha=1.0).item()


@needs_glue
def test_distillation_pulls_the_student_to_the_teacher_which_stays_as_it_was(tokenizer):
    teacher = make_tiny_bert(seed=4, classifier=True)
    with torch.no_grad():  # a random tiny model is all but uniform; a sharper teacher has something to teach
        teacher.classifier.weight.mul_(30)
    before = _weights(teacher)
    recipe = FAST.replace(kd_alpha=1.0, max_steps=12, kd_teacher=teacher_fingerprint(teacher))
    # A copy of the teacher as the student: the first batch's loss is exactly 0 (the same logits).
    twin = copy.deepcopy(teacher)
    fine_tune(twin, tokenizer, "rte", recipe.replace(max_steps=1), glue_dir=GLUE_DIR, teacher=teacher)
    assert twin.obce_train_losses == [(1, 0.0)]
    # Another model learns the teacher's outputs: the teacher term falls.
    student = make_tiny_bert(seed=5, classifier=True)
    kl_before = _kl_to(teacher, student, tokenizer)
    fine_tune(student, tokenizer, "rte", recipe, glue_dir=GLUE_DIR, teacher=teacher)
    assert _kl_to(teacher, student, tokenizer) < 0.1 * kl_before
    # The teacher is only read: same weights, no gradients, eval mode.
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training


@needs_glue
def test_fine_tune_refuses_a_teacher_the_recipe_does_not_name_and_the_reverse(tokenizer):
    teacher, student = make_tiny_bert(classifier=True), make_tiny_bert(seed=1, classifier=True)
    with pytest.raises(ValueError, match="kd_teacher is None"):
        fine_tune(student, tokenizer, "rte", FAST, glue_dir=GLUE_DIR, teacher=teacher)
    with pytest.raises(ValueError, match="no teacher model was given"):
        fine_tune(student, tokenizer, "rte", FAST.replace(kd_teacher="abc"), glue_dir=GLUE_DIR)
    three = make_tiny_bert(classifier=True, num_labels=3)
    with pytest.raises(ValueError, match="3 labels"):
        fine_tune(student, tokenizer, "rte", FAST.replace(kd_teacher="abc"), glue_dir=GLUE_DIR, teacher=three)
    bare = make_tiny_bert()
    with pytest.raises(ValueError, match="no task head"):
        fine_tune(student, tokenizer, "rte", FAST.replace(kd_teacher="abc"), glue_dir=GLUE_DIR, teacher=bare)


def test_tokenizers_must_agree(tokenizer):
    check_tokenizers(tokenizer, copy.deepcopy(tokenizer))
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["zzqxword"])
    with pytest.raises(ValueError, match="tokenize text differently"):
        check_tokenizers(other, tokenizer, "T", "S")


# ---------------------------------------------------------------------------------------------
# Distilled task models: library and CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rte_teacher(tmp_path_factory, tiny_model_dir):
    """A tiny RTE task model (the teacher) and a copy of it pruned and saved (the student)."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE files not found at {GLUE_DIR}")
    from obce_core.pruning import prune, save_pruned

    root = tmp_path_factory.mktemp("distill")
    finetune_task_model("rte", root / "teacher", model=str(tiny_model_dir), recipe=FAST.replace(max_steps=6),
                        glue_dir=GLUE_DIR, device="cpu")
    model, tokenizer = load_model(str(root / "teacher"))
    plan = PruningPlan(ffn=50, v=50)
    pruned, report = prune(model, _scores_on_train("rte", 32)(model, tokenizer), plan)
    save_pruned(pruned, tokenizer, root / "pruned", plan=plan, report=report)
    return root


@needs_glue
def test_cli_distils_a_pruned_model_into_a_task_model_that_reloads(rte_teacher, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "distilled"
    args = ["finetune", "--model", str(rte_teacher / "pruned"), "--teacher", str(rte_teacher / "teacher"), "--task",
            "rte", "--out", str(out), "--glue-dir", str(GLUE_DIR), "--recipe", "smoke", "--max-steps", "3",
            "--batch-size", "8", "--max-length", "48", "--eval-size", "40", "--kd-temperature", "3", "--kd-alpha", "0.8",
            "--device", "cpu"]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    info = read_task_model_info(out)
    teacher, _ = load_model(str(rte_teacher / "teacher"))
    assert info.distilled_from == str((rte_teacher / "teacher").resolve())
    # No --seed: the teacher's reserve seed, so the student leaves out the rows the teacher never saw.
    assert info.recipe == Recipe.preset("smoke", max_steps=3, batch_size=8, max_length=48, eval_size=40, seed=FAST.seed,
                                        kd_temperature=3.0, kd_alpha=0.8, kd_teacher=teacher_fingerprint(teacher))
    assert info.held_out == read_task_model_info(rte_teacher / "teacher").held_out is not None
    assert info.train_steps == 3 and "distilled from" in captured.out
    # The folder reloads as the pruned classifier, and its predictions give the recorded dev metrics.
    model, tokenizer = load_model(str(out))
    pruned, _ = load_model(str(rte_teacher / "pruned"))
    assert model.config.intermediate_sizes == pruned.config.intermediate_sizes != [teacher.config.intermediate_size] * 2
    logits, labels = _manual_predictions(model, tokenizer, "rte", info.recipe)
    assert info.metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()))

    # Bad input: one line, no traceback, nothing written.
    common = ["finetune", "--model", str(rte_teacher / "pruned"), "--task", "rte", "--glue-dir", str(GLUE_DIR)]
    with pytest.raises(SystemExit):  # argparse: exit code 2 and the flag's range
        main([*common, "--teacher", str(rte_teacher / "teacher"), "--out", str(tmp_path / "x"), "--kd-alpha", "1.5"])
    assert "--kd-alpha: expected a finite number in [0, 1]" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--kd-alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--kd-alpha set the distillation; add --teacher TASK_MODEL_DIR" in err and "Traceback" not in err
    assert main([*common, "--teacher", str(tiny_model_dir), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "has no task head" in err and "python -m obce_core finetune --task rte" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@needs_glue
def test_a_teacher_of_another_task_or_without_a_head_is_refused_before_training(rte_teacher, tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("trained despite a bad teacher")

    from obce_core.training import task_models

    monkeypatch.setattr(task_models, "fine_tune", boom)
    student, pruned = str(rte_teacher / "pruned"), rte_teacher / "pruned"  # pruned: a classifier, no obce_task.json
    with pytest.raises(ValueError, match="task model for 'rte' \\(obce_task.json\\), not for 'mrpc'"):
        finetune_task_model("mrpc", tmp_path / "a", model=student, teacher=rte_teacher / "teacher", glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="fine-tuned on 'rte' \\(its config's finetuning_task\\), not on 'sst2'"):
        finetune_task_model("sst2", tmp_path / "b", model=student, teacher=pruned, glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="has 2 labels but GLUE task 'stsb' has 1"):
        finetune_task_model("stsb", tmp_path / "c", model=student, teacher=pruned, glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="no task head"):
        finetune_task_model("rte", tmp_path / "d", model=student, teacher=tiny_model_dir, glue_dir=GLUE_DIR)
    with pytest.raises(ValueError, match="is not the fingerprint of teacher"):
        finetune_task_model("rte", tmp_path / "e", model=student, teacher=rte_teacher / "teacher", glue_dir=GLUE_DIR,
                            recipe=FAST.replace(kd_teacher="someone-else"))
    assert not any((tmp_path / name).exists() for name in "abcde")
    assert not list(tmp_path.iterdir())  # no checkpoint folder either: refused before any work


def test_task_model_info_without_a_teacher_field_still_reads(tmp_path):
    data = {"task": "rte", "recipe": FAST.to_dict(), "metrics": {"accuracy": 0.5, "main_score": 0.5}, "main_score": 0.5,
            "train_s": 1.0, "train_steps": 4, "device": "cpu", "source_model": "default", "created_at": "2025-01-01",
            "obce_version": "unknown"}
    assert TaskModelInfo.from_dict(data).distilled_from is None  # written before distillation existed
    with pytest.raises(ValueError, match="needs both"):
        TaskModelInfo.from_dict({**data, "distilled_from": "/somewhere"})


# ---------------------------------------------------------------------------------------------
# The paper protocol with distillation, and its stored results
# ---------------------------------------------------------------------------------------------
@needs_glue
def test_paper_protocol_distils_the_pruned_model_and_stores_it_apart(tiny_model_dir, tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results.sqlite")
    plan, recipe = PruningPlan(ffn=50, v=50), FAST.replace(max_steps=3)
    scores = _scores_on_train("rte", 32)
    plain = run_paper_protocol(str(tiny_model_dir), scores, plan, "rte", recipe, glue_dir=GLUE_DIR, store=store)
    phases = []
    kd = run_paper_protocol(str(tiny_model_dir), scores, plan, "rte", recipe, glue_dir=GLUE_DIR, store=store,
                            distill=True, progress=lambda e: phases.append(getattr(e, "phase", None)))
    # The original is the stored one; it is fine-tuned again only to teach, and the pruned run is distilled.
    assert kd["original"].from_store and kd["original"].id == plain["original"].id
    assert "fine-tuning the original on rte to teach the pruned model" in phases and "distilling pruned on rte" in phases
    assert kd["pruned"].recipe == recipe.replace(kd_teacher=run_teacher_id(plain["original"].key())).to_dict()
    assert kd["pruned"].id != plain["pruned"].id and kd["pruned"].fingerprint == plain["pruned"].fingerprint

    # Asked again: everything from the store, nothing trained.
    def boom(*args, **kwargs):
        raise AssertionError("should have been answered from the store")

    monkeypatch.setattr(protocols, "fine_tune", boom)
    again = run_paper_protocol(str(tiny_model_dir), scores, plan, "rte", recipe, glue_dir=GLUE_DIR, store=store,
                               distill=True)
    assert all(r.from_store for r in again.values()) and again["pruned"].id == kd["pruned"].id

    # Two comparisons of one plan, plain and distilled, each with the same original.
    groups = {g["distilled"]: g for g in comparisons(store.all_results())}
    assert sorted(groups[False]["ids"]) == sorted([plain["original"].id, plain["pruned"].id])
    assert sorted(groups[True]["ids"]) == sorted([plain["original"].id, kd["pruned"].id])
    assert "distilled from run-" in describe_recipe(groups[True]["recipe"])
    with pytest.raises(ValueError, match="needs a plan"):
        run_paper_protocol(str(tiny_model_dir), None, None, "rte", recipe, distill=True)


def test_job_specs_carry_distillation_and_the_job_line_says_so(tmp_path):
    spec = JobSpec(tasks=["rte"], plan=PruningPlan(ffn=30), recipe=FAST, distill=True)
    assert JobSpec.from_json(spec.to_json()) == spec
    line = describe_job(spec)
    assert "rte · protocol paper · pruned model distilled from the original" in line and describe_recipe(FAST) in line
    for bad in (dict(protocol="finetuned"), dict(plan=None), dict(distill="yes")):
        with pytest.raises(ValueError, match="'distill' parameter of JobSpec"):
            JobSpec(**{"tasks": ["rte"], "plan": PruningPlan(ffn=30), "distill": True, **bad})
    ft = FinetuneJobSpec(task="rte", out="out", model="pruned", teacher="teacher")
    assert FinetuneJobSpec.from_json(ft.to_json()) == ft
    assert ft.absolute().teacher == "teacher"  # no such folder: taken as a hub id, as the model is
    (tmp_path / "t").mkdir()
    assert FinetuneJobSpec(task="rte", out="o", teacher=str(tmp_path / "t")).absolute().teacher == str(tmp_path / "t")
    assert describe_job(ft).endswith("· `pruned` · distilled from `teacher`")
    # A job folder: its spec.json, or a plain note when it cannot be read.
    (tmp_path / "job").mkdir()
    assert describe_job(tmp_path / "job") == UNREADABLE_SPEC
    (tmp_path / "job" / "spec.json").write_text(spec.to_json())
    assert describe_job(tmp_path / "job") == line


def _run(task, role, latency, run_id):
    return RunResult(task=task, role=role, protocol="paper", model_source="m", fingerprint="f", head_fingerprint="",
                     source_fingerprint="f", plan=None, recipe=FAST.to_dict(), metrics={}, main_score=0.5,
                     params_total=10, params_encoder=5, latency_ms=latency, wall_s=1.0, device="cpu", id=run_id)


def test_latency_table_by_hand():
    runs = [_run("sst2", "original", 20.0, 1), _run("sst2", "pruned", 12.0, 2), _run("rte", "pruned", 8.0, 3),
            _run("rte", "original", 10.0, 4), _run("mrpc", "original", None, 5)]
    table = latency_table(runs, contended_ids={3}).set_index("task")
    assert list(table.columns) == ["original ms", "pruned ms", "pruned / original", "measured"]
    assert list(table.index) == ["sst2", "rte"]  # mrpc has no timed run
    assert table.loc["sst2", "pruned / original"] == pytest.approx(0.6)
    assert table.loc["rte", "pruned / original"] == pytest.approx(0.8)
    assert table["measured"].to_dict() == {"sst2": "alone", "rte": "contended"}
    assert latency_table([_run("sst2", "original", None, 1)]).empty


def test_recipe_key_names_distillation_only_with_a_teacher():
    plain = json.loads(FAST.replace(kd_alpha=0.9).canonical_json())
    assert not {"kd_alpha", "kd_temperature", "kd_teacher"} & set(plain)  # no teacher: KD settings change nothing
    kd = json.loads(FAST.replace(kd_teacher="x").canonical_json())
    assert (kd["kd_teacher"], kd["kd_alpha"], kd["kd_temperature"]) == ("x", 0.5, 2.0)
    assert FAST.replace(kd_teacher="x").without_teacher() == FAST


@needs_glue
def test_compare_page_offers_distillation_in_the_paper_protocol(monkeypatch, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from obce_core import jobs

    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    started = record_started_jobs(monkeypatch)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.query_params = {"n": "16", "ffn": "40"}
    at.run()
    at.button[0].click().run()
    at.switch_page("pages/4_Compare.py").run()
    assert not at.exception and not at.error
    assert not [n for n in at.number_input if "kd_" in n.key]  # distillation settings only when distilling
    at.selectbox(key="compare_preset").set_value("smoke").run()
    at.checkbox(key="compare_distill").check().run()
    at.number_input(key="compare_smoke_kd_alpha").set_value(0.9).run()
    next(b for b in at.button if b.label == "Start the job").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    spec = jobs.JobSpec.from_json(started[0] / jobs.SPEC_FILE)
    assert spec.distill and spec.protocol == "paper" and spec.recipe == Recipe.preset("smoke", kd_alpha=0.9)
    line = next(m.value for m in at.markdown if started[0].name in m.value)
    assert "pruned model distilled from the original" in line


# ---------------------------------------------------------------------------------------------
# Layer-wise distillation and recovery (checkpoints, resume, early stopping)
# ---------------------------------------------------------------------------------------------
def test_hidden_state_loss_equals_a_hand_computation():
    rng = np.random.default_rng(4)
    student = [rng.normal(size=(2, 3, 4)) for _ in range(3)]  # the embeddings, then 2 layers
    teacher = [rng.normal(size=(2, 3, 4)) for _ in range(3)]
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    real = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    per_layer = [sum(((student[layer][b, t] - teacher[layer][b, t]) ** 2).sum() for b, t in real) / (len(real) * 4)
                 for layer in (1, 2)]
    got = hidden_state_loss([torch.tensor(x) for x in student], [torch.tensor(x) for x in teacher], torch.tensor(mask))
    assert got.item() == pytest.approx(np.mean(per_layer), rel=1e-6)
    with pytest.raises(ValueError, match="same layers of the same shape"):
        hidden_state_loss([torch.tensor(x) for x in student], [torch.tensor(x) for x in teacher[:2]], torch.tensor(mask))


def test_hidden_state_loss_reads_a_narrowed_students_dims_of_the_teacher():
    rng = np.random.default_rng(5)
    teacher = [rng.normal(size=(2, 3, 6)) for _ in range(3)]
    dims = [4, 0, 2]
    student = [rng.normal(size=(2, 3, 3)) for _ in range(3)]
    mask = np.array([[1, 0, 1], [1, 1, 1]])
    real = [(b, t) for b in range(2) for t in range(3) if mask[b, t]]
    per_layer = [sum(((student[layer][b, t] - teacher[layer][b, t, dims]) ** 2).sum() for b, t in real) / (len(real) * 3)
                 for layer in (1, 2)]
    got = hidden_state_loss([torch.tensor(x) for x in student], [torch.tensor(x) for x in teacher], torch.tensor(mask),
                            teacher_dims=dims)
    assert got.item() == pytest.approx(np.mean(per_layer), rel=1e-6)


@needs_glue
def test_a_student_with_a_narrowed_stream_distils_layer_by_layer_and_one_without_its_dims_is_refused(
        tokenizer, sentences):
    from obce_core.pruning import capture_stream
    from obce_core.scoring import score_model

    teacher = make_tiny_bert(seed=6, classifier=True)
    scores = score_model(teacher, tokenizer, sentences)
    stream = capture_stream(teacher, tokenizer, sentences)
    student, _ = prune(teacher, scores, PruningPlan(hidden=25, hidden_norm="kept"), hidden_stream=stream)
    assert student.config.hidden_size < teacher.config.hidden_size
    recipe = FAST.replace(kd_alpha=1.0, kd_hidden=1.0, max_steps=1, kd_teacher=teacher_fingerprint(teacher))
    fine_tune(student, tokenizer, "rte", recipe, glue_dir=GLUE_DIR, teacher=teacher)
    assert student.obce_train_losses[0][1] > 0
    student.config.hidden_dims = None  # a narrower model that does not say which dims it kept
    with pytest.raises(ValueError, match="does not record which of the teacher's dims it kept"):
        fine_tune(student, tokenizer, "rte", recipe, glue_dir=GLUE_DIR, teacher=teacher)


def test_hidden_state_loss_is_zero_for_the_teacher_as_student_and_not_for_another(tokenizer, sentences):
    teacher, other = make_tiny_bert(seed=2, classifier=True), make_tiny_bert(seed=3, classifier=True)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = teacher(**batch, output_hidden_states=True).hidden_states
        others = other(**batch, output_hidden_states=True).hidden_states
    assert hidden_state_loss(states, states, batch["attention_mask"]).item() == 0.0
    assert hidden_state_loss(others, states, batch["attention_mask"]).item() > 0


@needs_glue
def test_layer_wise_distillation_from_a_twin_starts_at_zero_loss(tokenizer):
    teacher = make_tiny_bert(seed=4, classifier=True)
    recipe = FAST.replace(kd_alpha=1.0, kd_hidden=1.0, max_steps=1, kd_teacher=teacher_fingerprint(teacher))
    twin = copy.deepcopy(teacher)
    fine_tune(twin, tokenizer, "rte", recipe, glue_dir=GLUE_DIR, teacher=teacher)
    assert twin.obce_train_losses == [(1, 0.0)]
    student = make_tiny_bert(seed=5, classifier=True)  # another model: the hidden term is not 0
    fine_tune(student, tokenizer, "rte", recipe, glue_dir=GLUE_DIR, teacher=teacher)
    assert student.obce_train_losses[0][1] > 0


def _steps_seen(steps):
    from obce_core.training.progress import StepEvent

    return lambda event: steps.append(event.step) if isinstance(event, StepEvent) else None


@needs_glue
def test_a_cancelled_recovery_keeps_its_checkpoint_and_resumes_to_the_uncancelled_result(rte_teacher, tmp_path):
    from obce_core.training import TrainingCancelled

    recipe = FAST.replace(max_steps=6, kd_hidden=1.0)
    run = dict(model=str(rte_teacher / "pruned"), teacher=rte_teacher / "teacher", glue_dir=GLUE_DIR, device="cpu")
    finetune_task_model("rte", tmp_path / "whole", recipe=recipe, **run)
    assert not (tmp_path / "whole.checkpoints").exists()  # published: nothing left to resume
    steps = []
    with pytest.raises(TrainingCancelled, match="last checkpoint is in .*run the same command again"):
        finetune_task_model("rte", tmp_path / "out", recipe=recipe, progress=_steps_seen(steps),
                            should_stop=lambda: bool(steps) and steps[-1] >= 3, **run)
    assert not (tmp_path / "out").exists() and (tmp_path / "out.checkpoints" / "checkpoint-3").is_dir()
    with pytest.raises(ValueError, match="holds the checkpoints of another run"):  # never mixed with another recipe
        finetune_task_model("rte", tmp_path / "out", recipe=recipe.replace(max_steps=7), **run)
    steps.clear()
    info = finetune_task_model("rte", tmp_path / "out", recipe=recipe, progress=_steps_seen(steps), **run)
    assert steps[0] == 4 and steps[-1] == 6 and info.train_steps == 6
    assert not (tmp_path / "out.checkpoints").exists()
    whole, _ = load_model(str(tmp_path / "whole"))
    resumed, _ = load_model(str(tmp_path / "out"))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


@needs_glue
def test_recovery_stops_early_on_the_teachers_reserve_which_it_never_trains_on(rte_teacher, tmp_path, monkeypatch):
    from obce_core.training import task_models, trainer
    from obce_core.training.task_models import load_held_out

    seen = {}
    real_fine_tune = trainer.fine_tune

    def spy(model, tokenizer, task, recipe, **kwargs):
        seen["eval_idx"] = sorted(kwargs["eval_rows"]["idx"])
        seen["train_idx"] = set(trainer.training_rows(glue_spec("rte"), recipe, GLUE_DIR)[0]["idx"])
        return real_fine_tune(model, tokenizer, task, recipe, **kwargs)

    from obce_core.glue import get_task as glue_spec

    monkeypatch.setattr(task_models, "fine_tune", spy)
    recipe = FAST.replace(max_steps=40, eval_steps=2, early_stopping_patience=1, kd_hidden=1.0)
    info = finetune_task_model("rte", tmp_path / "out", model=str(rte_teacher / "pruned"),
                               teacher=rte_teacher / "teacher", recipe=recipe, glue_dir=GLUE_DIR, device="cpu")
    reserve = load_held_out(rte_teacher / "teacher", GLUE_DIR)
    assert seen["eval_idx"] == sorted(reserve["idx"]) and not seen["train_idx"] & set(reserve["idx"])
    assert info.recipe.eval_steps == 2 and info.held_out == read_task_model_info(rte_teacher / "teacher").held_out
    assert info.train_steps < 40  # a tiny model's held-out score stops improving long before


def test_the_recover_preset_is_a_lower_lr_layer_wise_distillation_with_early_stopping():
    from obce_core.training.recipe import RECOVERY_BUDGET_S, RECOVERY_TEACHER_COST, estimate_training

    for task in ("sst2", "mrpc"):
        cpu, recover = Recipe.for_task(task), Recipe.preset("recover", task)
        assert recover.learning_rate < cpu.learning_rate and recover.learning_rate <= 3e-5 + 1e-12
        assert recover.kd_hidden > 0 and recover.eval_steps > 0 and recover.early_stopping_patience > 0
        assert estimate_training(recover, task)[1] * (1 + RECOVERY_TEACHER_COST) <= RECOVERY_BUDGET_S * 1.001
    with pytest.raises(ValueError, match="early_stopping_patience"):
        Recipe(early_stopping_patience=2)
    assert "kd_hidden" not in Recipe().canonical_json() and "eval_steps" not in Recipe().canonical_json()


@needs_glue
def test_a_search_job_can_recover_its_plan_and_says_where(tmp_path, tokenizer):
    from obce_core.jobs import SearchJobSpec
    from obce_core.search.algorithm import SearchSettings
    from tests.conftest import save_task_model

    model = save_task_model(tmp_path / "sst2-model", tokenizer)
    spec = SearchJobSpec(model=str(model), task="sst2", out=str(tmp_path / "found"), settings=SearchSettings(),
                         recover=True, glue_dir=str(GLUE_DIR))
    assert SearchJobSpec.from_json(spec.to_json()) == spec
    assert spec.recovered_out() == str(tmp_path / "found-recovered")
    assert f"then recovered into `{tmp_path / 'found-recovered'}`" in describe_job(spec)
    spec.check_data()
    (tmp_path / "found-recovered").mkdir()
    (tmp_path / "found-recovered" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="found-recovered"):  # someone's folder is never replaced
        spec.check_data()
    with pytest.raises(ValueError, match="'recover' parameter of SearchJobSpec"):
        SearchJobSpec(model=str(model), task="sst2", out=str(tmp_path / "x"), recover="yes")
    with pytest.raises(ValueError, match="no held-out reserve to stop early on"):
        JobSpec(tasks=["sst2"], recipe=Recipe.preset("recover", "sst2"))
