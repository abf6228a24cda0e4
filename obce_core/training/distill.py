"""Knowledge distillation (Hinton et al. 2015): a model learns a task from a teacher's logits as well as its labels.

obce uses it to recover a pruned model: the unpruned task model teaches its pruned copy, which
then learns what the teacher learned from the whole training split, not only the labels.

* ``kd_loss``: the loss ``Recipe`` states (``kd_alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) +
  (1 - kd_alpha) * CE(s, y)``; regression ``kd_alpha * MSE(s, t) + (1 - kd_alpha) * MSE(s, y)``).
* ``hidden_state_loss``: layer-wise distillation (as CoFi's recovery, Xia et al. 2022): the mean
  squared difference of every encoder layer's hidden states, student vs teacher, over the real
  tokens; added with weight ``Recipe.kd_hidden``. obce's pruning keeps the layer count, so layer
  ``l`` of the student is matched to layer ``l`` of the teacher; a narrowed stream (hidden dims
  pruned) to the teacher's dims it kept (``stream_dims``).
* ``load_teacher`` / ``check_teacher`` / ``check_tokenizers``: refuse, before any training, a
  teacher that cannot teach this task to this student (no head, another task, other labels or
  another vocabulary), with the fix.
* ``teacher_fingerprint`` (a teacher's weights) and ``run_teacher_id`` (the stored run that
  trained one): what ``Recipe.kd_teacher`` records, so a distilled run's key names its teacher.
* ``make_distill_trainer``: the ``Trainer`` that ``fine_tune(..., teacher=)`` trains with; the
  teacher runs on every batch, on the student's device, in eval mode without autograd.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.nn.functional as F

from obce_core import glue
from obce_core.forward import locked_eval
from obce_core.loading import load_model, model_fingerprint
from obce_core.training.recipe import Recipe
from obce_core.validation import check_number

__all__ = [
    "check_distillation",
    "check_teacher",
    "check_tokenizers",
    "hidden_state_loss",
    "kd_loss",
    "load_teacher",
    "make_distill_trainer",
    "run_teacher_id",
    "stream_dims",
    "teacher_fingerprint",
]

# Tokenized by teacher and student alike to prove they read text the same way: casing, accents,
# punctuation and digits are where BERT vocabularies of the same size still differ.
_PROBE = "Hello, World! Ünïcödé façade 1,234.5 don't [SEP]-like tokens"


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """The distillation loss of one batch (a scalar): ``alpha`` x teacher term + ``(1 - alpha)`` x label term.

    Classification (``(batch, classes)`` logits, ``classes > 1``): ``T^2 * KL(softmax(t/T) ||
    softmax(s/T))`` averaged over the batch, plus the cross-entropy with the integer ``labels``.
    The ``T^2`` keeps the teacher term's gradients the size of the label term's whatever ``T``
    (Hinton et al. 2015, section 2). Regression (``(batch, 1)``): ``MSE(s, t) + MSE(s, y)`` with
    the same weights; the temperature does not apply. ``labels`` may be None only at ``alpha = 1``.
    Computed in float32 (the logits may be half precision under mixed-precision training).
    """
    owner = "kd_loss"
    check_number(temperature, "temperature", owner, low=0, low_open=True, fix="Use e.g. 2 (Recipe.kd_temperature).")
    check_number(alpha, "alpha", owner, low=0, high=1, fix="1 learns from the teacher alone, 0 from the labels alone.")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"kd_loss needs student and teacher logits of one shape (batch, classes); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}. The teacher must be a classifier "
            "for the same task (same number of labels) fed the same batch."
        )
    if labels is None and alpha < 1:
        raise ValueError(f"kd_loss got no labels with alpha={alpha}; the label term needs them (or use alpha=1).")
    s = student_logits.float()
    t = teacher_logits.detach().float()
    if s.shape[-1] == 1:  # regression (STS-B): the teacher's score is a second target
        s = s.squeeze(-1)
        soft = F.mse_loss(s, t.squeeze(-1))
        hard = F.mse_loss(s, labels.to(s.dtype).view_as(s)) if alpha < 1 else s.new_zeros(())
    else:
        soft = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                        reduction="batchmean", log_target=True) * temperature**2
        hard = F.cross_entropy(s, labels.long().view(-1)) if alpha < 1 else s.new_zeros(())
    return alpha * soft + (1.0 - alpha) * hard


def hidden_state_loss(student_hidden, teacher_hidden, attention_mask: torch.Tensor,
                      teacher_dims=None) -> torch.Tensor:
    """Mean over encoder layers of the mean squared difference of their hidden states at real tokens.

    ``student_hidden``/``teacher_hidden``: what a BERT forward pass with ``output_hidden_states=True``
    returns (the embeddings, then one ``(batch, tokens, hidden)`` tensor per layer); the embeddings
    are left out. For layer ``l``: ``sum over real tokens of ||s_l - t_l||^2 / (real tokens x hidden)``
    (``attention_mask`` 1 at real tokens). Computed in float32; the teacher's side carries no gradient.
    ``teacher_dims``: for a student whose stream was narrowed (``ObceBertConfig.hidden_dims``), the
    teacher's dims its kept dims are, in order: the teacher's states are read at those dims only.
    """
    student, teacher = list(student_hidden)[1:], list(teacher_hidden)[1:]
    if teacher_dims is not None:
        index = torch.as_tensor(teacher_dims, dtype=torch.long, device=teacher[0].device)
        teacher = [t.index_select(-1, index) for t in teacher]
    shapes = [tuple(t.shape) for t in student], [tuple(t.shape) for t in teacher]
    if not student or shapes[0] != shapes[1]:
        raise ValueError(
            f"hidden_state_loss needs the same layers of the same shape from student and teacher; got "
            f"{len(student)} layer(s) {shapes[0][:1]} and {len(teacher)} {shapes[1][:1]}. Distil a model pruned from "
            "this teacher (obce's pruning keeps the layer count, and a narrowed stream records its dims), or set "
            "Recipe.kd_hidden=0.")
    mask = attention_mask.to(student[0].device).float().unsqueeze(-1)
    denominator = mask.sum() * student[0].shape[-1]
    losses = [(((s.float() - t.detach().float()) ** 2) * mask).sum() / denominator for s, t in zip(student, teacher)]
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------
# Which teacher
# ---------------------------------------------------------------------------------------------
def teacher_fingerprint(model) -> str:
    """The teacher's weights as ``Recipe.kd_teacher`` records them: encoder and head fingerprints."""
    from obce_core.training.trainer import head_fingerprint  # here: trainer imports this module at its top

    return f"{model_fingerprint(model)}-{head_fingerprint(model)}"


def run_teacher_id(key: dict) -> str:
    """``Recipe.kd_teacher`` for a teacher known by the stored run that trained it (``RunResult.key()``).

    The paper protocol distils from the original it fine-tunes; when that run is answered from
    the store its weights are not at hand, so the run's key, not the weights, names the teacher.
    """
    data = {**key, "recipe": Recipe.from_dict(key["recipe"]).canonical_json()}
    return "run-" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _task_of(model) -> str | None:
    """The GLUE task a classifier's config says it was fine-tuned on (``finetuning_task``), if any."""
    name = getattr(model.config, "finetuning_task", None)
    if not name:
        return None
    try:
        return glue.get_task(name).name
    except ValueError:
        return None  # a name obce does not know says nothing about GLUE tasks


def check_teacher(teacher, spec: glue.GlueTask, source="the teacher") -> None:
    """ValueError unless ``teacher`` is a classifier for ``spec`` with the hub's label ids.

    Its config's ``finetuning_task``, when it names a GLUE task, must be ``spec``'s. (Not the
    config's ``architectures``: a head put on an encoder in memory still lists the encoder's.)
    """
    from obce_core.training.protocols import check_labels  # here: protocols imports this module at its top

    how = (f"A teacher is a task model for {spec.name!r}: fine-tune one with `python -m obce_core finetune "
           f"--task {spec.name} --out DIR` and pass that DIR.")
    if not hasattr(teacher, "classifier"):
        raise ValueError(f"Teacher {str(source)!r} has no task head ({type(teacher).__name__}); it cannot give "
                         f"logits to learn from. {how}")
    try:
        check_labels(teacher, spec, source)
    except ValueError as exc:
        raise ValueError(f"{exc} {how}") from None
    trained_on = _task_of(teacher)
    if trained_on is not None and trained_on != spec.name:
        raise ValueError(f"Teacher {str(source)!r} was fine-tuned on {trained_on!r} (its config's finetuning_task), "
                         f"not on {spec.name!r}. {how}")


def check_tokenizers(teacher_tokenizer, student_tokenizer, teacher_source="the teacher",
                     student_source="the student") -> None:
    """ValueError unless both tokenizers turn text into the same ids (the teacher reads the student's batches)."""
    same_vocab = teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()
    if not same_vocab or teacher_tokenizer(_PROBE)["input_ids"] != student_tokenizer(_PROBE)["input_ids"]:
        raise ValueError(
            f"Teacher {str(teacher_source)!r} and student {str(student_source)!r} tokenize text differently "
            f"({'another vocabulary' if not same_vocab else 'same vocabulary, other normalisation'}); the teacher "
            "reads the student's token ids, so both must come from the same pre-trained model. Distil a model "
            "pruned from this teacher (or fine-tuned from its encoder)."
        )


def load_teacher(source: str | os.PathLike, task: str, device=None):
    """``(model, tokenizer)`` of a task model for ``task``, checked as a teacher (``check_teacher``).

    A directory with ``obce_task.json`` must name ``task`` there too.
    """
    from obce_core.training.task_models import read_task_model_info  # here: task_models imports this module

    spec = glue.get_task(task)
    if os.path.isdir(os.path.expanduser(str(source))):
        info = read_task_model_info(source)
        if info is not None and info.task != spec.name:
            raise ValueError(f"Teacher {str(source)!r} is a task model for {info.task!r} (obce_task.json), not for "
                             f"{spec.name!r}. Pass a task model fine-tuned on {spec.name!r} as the teacher.")
    model, tokenizer = load_model(source, device=device)
    check_teacher(model, spec, source)
    return model.eval(), tokenizer


def check_distillation(teacher, student, spec: glue.GlueTask, recipe) -> None:
    """ValueError unless ``teacher`` can teach ``student`` the task under ``recipe`` (``fine_tune``'s check).

    The recipe and the teacher must agree: a teacher needs ``recipe.kd_teacher`` filled in (the
    run's key must say it was distilled), and a recipe that names a teacher needs the teacher.
    """
    if teacher is None:
        if recipe.kd_teacher is not None:
            raise ValueError(f"The recipe distils from teacher {recipe.kd_teacher!r}, but no teacher model was given; "
                             "pass teacher=, or train without one: recipe.without_teacher().")
        return
    if recipe.kd_teacher is None:
        raise ValueError("A teacher was given but recipe.kd_teacher is None, so the result would not say it was "
                         "distilled; use recipe.replace(kd_teacher=teacher_fingerprint(teacher)).")
    check_teacher(teacher, spec)
    t_cfg, s_cfg = teacher.config, student.config
    if t_cfg.num_labels != s_cfg.num_labels:
        raise ValueError(f"Teacher has {t_cfg.num_labels} labels, the student {s_cfg.num_labels}; both must be "
                         f"classifiers for {spec.name!r} ({spec.num_labels} labels).")
    if not spec.is_regression:
        names = [[str(c.id2label.get(i, "")).lower() for i in range(spec.num_labels)] for c in (t_cfg, s_cfg)]
        generic = [all(n in ("", f"label_{i}") for i, n in enumerate(ns)) for ns in names]
        if not any(generic) and names[0] != names[1]:
            raise ValueError(f"Teacher labels {names[0]} and student labels {names[1]} differ in order; the teacher "
                             "would teach the wrong classes. Use a student whose head follows the teacher's label ids.")
    if t_cfg.vocab_size != s_cfg.vocab_size:
        raise ValueError(f"Teacher vocabulary {t_cfg.vocab_size} and student vocabulary {s_cfg.vocab_size} differ; "
                         "distil a model pruned from (or fine-tuned from) the teacher's own encoder.")
    if recipe.kd_hidden:
        stream_dims(student, teacher)  # the layers must be comparable before any step
    longest = min(recipe.max_length, getattr(s_cfg, "max_position_embeddings", recipe.max_length))
    if getattr(t_cfg, "max_position_embeddings", longest) < longest:
        raise ValueError(f"The teacher reads at most {t_cfg.max_position_embeddings} tokens but the recipe trains on "
                         f"{recipe.max_length}; set Recipe.max_length <= {t_cfg.max_position_embeddings}.")


# ---------------------------------------------------------------------------------------------
# Training with a teacher
# ---------------------------------------------------------------------------------------------
def stream_dims(student, teacher) -> list[int] | None:
    """The teacher's stream dims the student's stream matches, in order (``hidden_state_loss``'s
    ``teacher_dims``): None where the two are as wide; a narrowed student's ``hidden_dims``."""
    width, teacher_width = int(student.config.hidden_size), int(teacher.config.hidden_size)
    if width == teacher_width:
        return None
    dims = getattr(student.config, "hidden_dims", None)
    if dims is None or max(dims) >= teacher_width:
        raise ValueError(f"The student's stream is {width} wide and the teacher's {teacher_width}, and the student does "
                         "not record which of the teacher's dims it kept (config hidden_dims), so their layers cannot "
                         "be compared. Distil a model narrowed from this teacher by obce, or set Recipe.kd_hidden=0.")
    return list(dims)


def _teacher_outputs(teacher, inputs: dict, device: torch.device, hidden: bool = False):
    """The teacher's ``(logits, hidden states or None)`` for one batch, as ordinary tensors on ``device``.

    ``locked_eval`` holds the teacher's lock (it may be a shared model), switches it to eval mode
    (no dropout: the teacher's best guess) and turns autograd off. Its tensors are inference
    tensors, which autograd may not save for the student's backward pass, hence the clones outside.
    """
    with locked_eval(teacher) as where:
        if where != device:  # the first batch: the teacher joins the student where Trainer put it
            teacher.to(device)
        out = teacher(**inputs, output_hidden_states=True) if hidden else teacher(**inputs)
    states = tuple(t.clone() for t in out.hidden_states) if hidden else None
    return out.logits.clone(), states


def make_distill_trainer(teacher, *, temperature: float, alpha: float, hidden_weight: float = 0.0,
                         **trainer_kwargs):
    """A Hugging Face ``Trainer`` (``trainer_kwargs``) whose loss is ``kd_loss`` against ``teacher``,
    plus ``hidden_weight`` x ``hidden_state_loss`` when that weight is above 0.

    The student's own forward pass runs without labels, so the model computes no loss of its own;
    the loss is a per-batch mean, which Trainer then scales for gradient accumulation. Evaluation
    (the held-out scores of early stopping) gets the student's logits alone.
    """
    from transformers import Trainer  # here: transformers.trainer pulls in datasets (heavy)
    from transformers.modeling_outputs import SequenceClassifierOutput

    hidden = hidden_weight > 0

    class DistillTrainer(Trainer):
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            features = {k: v for k, v in inputs.items() if k != "labels"}
            outputs = model(**features, output_hidden_states=True) if hidden else model(**features)
            logits, states = _teacher_outputs(teacher, features, outputs.logits.device, hidden)
            loss = kd_loss(outputs.logits, logits, labels, temperature=temperature, alpha=alpha)
            if hidden:
                if not hasattr(self, "_teacher_dims"):  # once per run, not per step (self.model: unwrapped)
                    dims = stream_dims(self.model, teacher)
                    self._teacher_dims = None if dims is None else torch.as_tensor(dims, dtype=torch.long)
                loss = loss + hidden_weight * hidden_state_loss(outputs.hidden_states, states,
                                                                features["attention_mask"], self._teacher_dims)
            return (loss, SequenceClassifierOutput(logits=outputs.logits)) if return_outputs else loss

    return DistillTrainer(**trainer_kwargs)
