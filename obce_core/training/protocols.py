"""The two OBCE comparison protocols, and ``RunResult``: one model evaluated on one GLUE task.

Both compare an original model with its pruned copy under the same recipe and seed:

* ``run_paper_protocol`` (the paper's): load the PRE-TRAINED encoder with a new task head (its
  pooling from ``Recipe.pooling``), prune it with the plan, fine-tune original and pruned alike,
  evaluate both. With ``distill`` the pruned model learns from the fine-tuned original's logits
  as well as the labels (``obce_core.training.distill``); its recipe's ``kd_teacher`` names the
  original's run.
* ``run_finetuned_protocol``: prune an already FINE-TUNED classifier, evaluate it at once, and
  optionally let it recover with a short fine-tune.

Each run of one model on one task gives a ``RunResult``. Protocols accept a result ``store``
(``obce_core.results.ResultsStore``, or anything with its ``lookup``/``add``): a run whose key
(encoder fingerprint, head fingerprint, plan, task, recipe, protocol) is already stored is answered
from the store without training, and every finished run is stored at once. A pruned run is keyed
by the fingerprint of the pruned model, so the key covers the source weights, the scores and the
plan together.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

import torch
from transformers import set_seed

from obce_core.choices import PROTOCOLS  # defined without torch for the CLI's parser
from obce_core import glue
from obce_core.io import JsonDataclass
from obce_core.loading import load_model, model_fingerprint
from obce_core.training.progress import (
    PhaseEvent,
    Progress,
    ResultEvent,
    ShouldStop,
    TrainingCancelled,
    is_main_process,
)
from obce_core.training.distill import run_teacher_id
from obce_core.training.recipe import Recipe
from obce_core.training.trainer import evaluate, fine_tune, head_fingerprint, latency_on_task, parameter_counts
from obce_core.validation import check_int

__all__ = [
    "PROTOCOLS",
    "RECOVER_PROTOCOL",
    "RunResult",
    "as_plan",
    "check_finetuned",
    "check_labels",
    "run_finetuned_protocol",
    "run_paper_protocol",
]

# How a run's model was obtained; part of every result's key.
RECOVER_PROTOCOL = "finetuned-recover"


@dataclass
class RunResult(JsonDataclass):
    """One model evaluated on one GLUE task (after fine-tuning, unless the protocol skips it).

    Key fields (``key()``): ``fingerprint`` (``model_fingerprint`` of the encoder the run started
    from: the pruned encoder for a pruned run), ``head_fingerprint``, ``plan`` (``None`` for the
    original), ``task``, ``recipe`` and ``protocol`` (``paper``, ``finetuned``, or
    ``finetuned-recover`` for a recovery fine-tune). ``source_fingerprint`` is the unpruned
    encoder's, which ties an original to its pruned copies. ``metrics`` holds
    ``glue.compute_metrics`` plus ``main_score`` (MNLI adds ``accuracy_mismatched``).
    ``latency_ms`` is the median time of one forward pass over ``recipe.eval_batch_size``
    validation examples on ``device``. ``id``/``created_at`` are set by the store.
    ``from_store``: this run was answered from the store, not trained by this caller.
    """

    _json_name = "run result"

    task: str
    role: str
    protocol: str
    model_source: str
    fingerprint: str
    head_fingerprint: str
    source_fingerprint: str
    plan: dict | None
    recipe: dict
    metrics: dict[str, float]
    main_score: float
    params_total: int
    params_encoder: int
    latency_ms: float | None
    wall_s: float
    device: str
    id: int | None = None
    created_at: str | None = None
    job_id: str | None = None
    from_store: bool = field(default=False, compare=False)

    def key(self) -> dict:
        """The fields that identify a run (what ``ResultsStore.lookup`` takes)."""
        return {
            "fingerprint": self.fingerprint,
            "head_fingerprint": self.head_fingerprint,
            "plan": self.plan,
            "task": self.task,
            "recipe": self.recipe,
            "protocol": self.protocol,
        }

    def to_dict(self) -> dict:
        data = super().to_dict()
        data.pop("from_store")  # how this process got it, not part of the record
        return data


def as_plan(plan):
    """``plan`` as a ``PruningPlan``: from a plan, its dict, a JSON string or file; None stays None."""
    if plan is None:
        return None
    # here: the pruning package imports pruning.fisher, which imports training (a circle at import time)
    from obce_core.pruning.plan import PruningPlan

    if isinstance(plan, (str, os.PathLike)):
        return PruningPlan.from_json(plan)
    return PruningPlan.from_dict(plan)  # a PruningPlan is returned as it is


def _check_stop(should_stop: ShouldStop | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled(f"Cancelled before {what}.")


def _phase(progress: Progress | None, phase: str) -> None:
    if progress is not None:
        progress(PhaseEvent(phase))


def _done(progress: Progress | None, phase: str, result: "RunResult") -> None:
    if progress is not None:
        progress(ResultEvent(phase, result))


def _prune_for(model, tokenizer, scores, plan):
    from obce_core.pruning.surgery import prune  # here: see as_plan

    if callable(scores):
        scores = scores(model, tokenizer)
    if scores is None:
        raise ValueError(
            "A pruning plan was given without scores; pass NeuronScores (obce_core.score_model) or a "
            "callable (model, tokenizer) -> NeuronScores."
        )
    pruned, _report = prune(model, scores, plan)
    return pruned.eval()


def _run_one(*, role, protocol, model, tokenizer, spec, recipe, train_recipe, plan, model_source,
             source_fp, glue_dir, device, progress, should_stop, store, teacher=None) -> RunResult:
    """Fine-tune (when ``train_recipe``) and evaluate one model, or answer it from ``store``.

    ``teacher``: a callable giving the teacher model to distil from (``train_recipe.kd_teacher``
    names it); called only when the run is not answered from the store.
    """
    counts = parameter_counts(model)
    result = RunResult(
        task=spec.name, role=role, protocol=protocol, model_source=str(model_source),
        fingerprint=model_fingerprint(model), head_fingerprint=head_fingerprint(model),
        source_fingerprint=source_fp, plan=None if plan is None else plan.to_dict(),
        recipe=(train_recipe or recipe).to_dict(), metrics={}, main_score=float("nan"),
        params_total=counts["total"], params_encoder=counts["encoder"], latency_ms=None, wall_s=0.0,
        device=str(next(model.parameters()).device),
    )
    if store is not None:
        hit = store.lookup(**result.key())
        if hit is not None:
            hit.from_store = True
            _done(progress, f"{role} on {spec.name}: answered from the store", hit)
            return hit
    _check_stop(should_stop, f"the {role} run on {spec.name}")
    start = time.perf_counter()
    if train_recipe is not None:
        teacher_model = teacher() if teacher is not None else None
        how = "distilling" if teacher_model is not None else "fine-tuning"
        _phase(progress, f"{how} {role} on {spec.name}")
        fine_tune(model, tokenizer, spec.name, train_recipe, glue_dir=glue_dir, device=device,
                  progress=progress, should_stop=should_stop, teacher=teacher_model)
        _check_stop(should_stop, f"evaluating {role} on {spec.name}")
    _phase(progress, f"evaluating {role} on {spec.name}")
    metrics = evaluate(model, tokenizer, spec.name, recipe, glue_dir=glue_dir, device=device)
    result.latency_ms = latency_on_task(model, tokenizer, spec, recipe, glue_dir)
    result.metrics = metrics
    result.main_score = float(metrics["main_score"])
    result.wall_s = time.perf_counter() - start
    result.device = str(next(model.parameters()).device)
    if store is not None and is_main_process():
        result = store.add(result)
    _done(progress, f"{role} on {spec.name}: done", result)
    return result


def run_paper_protocol(
    model_source,
    scores,
    plan,
    task: str,
    recipe: Recipe | None = None,
    *,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    store=None,
    distill: bool = False,
) -> dict[str, RunResult]:
    """The paper's protocol: prune the PRE-TRAINED model, fine-tune original and pruned alike.

    ``model_source``: what ``load_model`` takes (``None``/"default", a directory, a hub id); it is
    loaded with a new head for the task, seeded by ``recipe.seed``. ``scores``: ``NeuronScores``
    of that encoder, or a callable ``(model, tokenizer) -> NeuronScores`` called only when the
    pruned run is not already stored. ``plan``: a ``PruningPlan`` (or its dict / JSON), or
    ``None`` to run the original alone. Returns ``{"original": ..., "pruned": ...}``; each
    result is taken from / added to ``store`` when one is given. Raises ``TrainingCancelled``
    when ``should_stop()`` turns True.

    ``distill``: the pruned model is trained by knowledge distillation from the fine-tuned
    original (the recipe's ``kd_temperature`` and ``kd_alpha``); its run's recipe gets
    ``kd_teacher = run_teacher_id(original run's key)``, so it is stored apart from the plain
    fine-tune of the same plan. When the original is answered from the store, it is fine-tuned
    again here to teach (only if the distilled run is not stored as well).
    """
    spec = glue.get_task(task)
    recipe = Recipe.from_dict(recipe) if recipe is not None else Recipe()
    if recipe.kd_teacher is not None:
        raise ValueError(f"run_paper_protocol's recipe names teacher {recipe.kd_teacher!r}; the protocol fills "
                         "kd_teacher in itself. Pass recipe.without_teacher() (and distill=True to distil).")
    if distill and plan is None:
        raise ValueError("run_paper_protocol(distill=True) needs a plan: distillation trains the PRUNED model "
                         "from the original; give a plan, or distill=False to run the original alone.")
    plan = as_plan(plan)
    _check_stop(should_stop, f"loading the model for {spec.name}")
    _phase(progress, f"loading {model_source or 'default'} for {spec.name}")
    set_seed(recipe.seed)  # the new task head is drawn from this seed
    model, tokenizer = load_model(model_source, num_labels=spec.num_labels, classifier_pooling=recipe.pooling,
                                  device=device)
    source_fp = model_fingerprint(model)
    runs = [("original", model, None)]
    if plan is not None:
        _phase(progress, f"pruning for {spec.name}")
        # Pruned from the pre-trained weights, before the original is fine-tuned in place.
        runs.append(("pruned", _prune_for(model, tokenizer, scores, plan), plan))
    common = dict(protocol="paper", tokenizer=tokenizer, spec=spec, recipe=recipe, model_source=model_source or "default",
                  source_fp=source_fp, glue_dir=glue_dir, device=device, progress=progress, should_stop=should_stop,
                  store=store)
    out = {"original": _run_one(role="original", model=model, plan=None, train_recipe=recipe, **common)}
    if plan is None:
        return out
    pruned_recipe, teacher = recipe, None
    if distill:
        original = out["original"]

        def teacher():
            # The original's weights are only trained here when its run was not answered from the store.
            if original.from_store:
                _check_stop(should_stop, f"fine-tuning the teacher on {spec.name}")
                _phase(progress, f"fine-tuning the original on {spec.name} to teach the pruned model")
                fine_tune(model, tokenizer, spec.name, recipe, glue_dir=glue_dir, device=device, progress=progress,
                          should_stop=should_stop)
            return model

        pruned_recipe = recipe.replace(kd_teacher=run_teacher_id(original.key()))
    out["pruned"] = _run_one(role="pruned", model=runs[1][1], plan=plan, train_recipe=pruned_recipe, teacher=teacher,
                             **common)
    return out


def run_finetuned_protocol(
    finetuned_source,
    scores,
    plan,
    task: str,
    recipe: Recipe | None = None,
    recover_steps: int = 0,
    *,
    glue_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    store=None,
) -> dict[str, RunResult]:
    """Prune an already FINE-TUNED classifier and evaluate it at once (no training).

    ``finetuned_source`` must hold a sequence classifier for ``task`` whose label ids follow the
    hub's ``nyu-mll/glue``. ``scores`` are of THIS model's encoder (or a callable, as in
    ``run_paper_protocol``). With ``recover_steps > 0`` the pruned model is then fine-tuned for
    that many steps with ``recipe`` and evaluated again (role ``recovered``, protocol
    ``finetuned-recover``). Returns ``{"original", "pruned"[, "recovered"]}``.
    """
    spec = glue.get_task(task)
    recipe = Recipe.from_dict(recipe) if recipe is not None else Recipe()
    check_int(recover_steps, "recover_steps", "run_finetuned_protocol", low=0, fix="0 = no recovery fine-tune.")
    plan = as_plan(plan)
    _check_stop(should_stop, f"loading the model for {spec.name}")
    _phase(progress, f"loading {finetuned_source} for {spec.name}")
    model, tokenizer = load_model(finetuned_source, device=device)
    check_finetuned(model, spec, finetuned_source)
    source_fp = model_fingerprint(model)
    common = dict(tokenizer=tokenizer, spec=spec, recipe=recipe, model_source=finetuned_source,
                  source_fp=source_fp, glue_dir=glue_dir, device=device, progress=progress,
                  should_stop=should_stop, store=store)
    out = {"original": _run_one(role="original", protocol="finetuned", model=model, plan=None,
                                train_recipe=None, **common)}
    if plan is None:
        return out
    _phase(progress, f"pruning for {spec.name}")
    pruned = _prune_for(model, tokenizer, scores, plan)
    out["pruned"] = _run_one(role="pruned", protocol="finetuned", model=pruned, plan=plan, train_recipe=None, **common)
    if recover_steps:
        recover = recipe.replace(max_steps=int(recover_steps))
        out["recovered"] = _run_one(role="recovered", protocol=RECOVER_PROTOCOL, model=copy.deepcopy(pruned),
                                    plan=plan, train_recipe=recover, **{**common, "recipe": recover})
    return out


def check_finetuned(model, spec: glue.GlueTask, source) -> None:
    """ValueError unless ``model`` is a classifier fine-tuned for ``spec`` with the hub's label ids."""
    architectures = getattr(model.config, "architectures", None) or []
    if not hasattr(model, "classifier") or not any("SequenceClassification" in a for a in architectures):
        raise ValueError(
            f"Model {str(source)!r} is not a fine-tuned sequence classifier (architectures {architectures}); "
            "the 'finetuned' protocol prunes a classifier already trained on the task. Use protocol "
            "'paper' for a pre-trained encoder."
        )
    check_labels(model, spec, source)


def check_labels(model, spec: glue.GlueTask, source) -> None:
    """ValueError unless the classifier ``model`` has the task's number of labels, in the hub's id order."""
    if model.config.num_labels != spec.num_labels:
        raise ValueError(
            f"Model {str(source)!r} has {model.config.num_labels} labels but GLUE task {spec.name!r} has "
            f"{spec.num_labels}; it was fine-tuned for another task. Pick the task it was trained on."
        )
    names = [str(model.config.id2label.get(i, "")).lower() for i in range(spec.num_labels)]
    wanted = [n.lower() for n in spec.label_names]
    if wanted and set(names) == set(wanted) and names != wanted:
        raise ValueError(
            f"Model {str(source)!r} orders its labels {names}, but GLUE task {spec.name!r} uses ids "
            f"{wanted} (the hub's nyu-mll/glue). Its predictions would be scored against the wrong "
            "labels; remap the classifier rows or use a model trained with the hub's label ids."
        )
