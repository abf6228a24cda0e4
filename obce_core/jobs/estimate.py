"""How long a job will take, from times measured on this machine for its model (``step_timing``).

``needed_measurements(spec)`` names what must have been measured (``(recipe, task)`` pairs to
calibrate, and whether the job start was timed); ``estimate_job(spec, model_key, store)`` adds up
the parts, each a measured time x its count x the load now / the load then:

* a fine-tune (Task models): the worker's start, loading the model, the recipe's optimizer steps,
  the evaluated dev examples;
* a GLUE comparison (Compare): per task and run the same, plus scoring ``score_n`` training
  texts before pruning (one forward pass each, at the scoring length); a distilled run adds the
  teacher's forward pass per training example; the ``finetuned`` protocol trains only the
  recovery steps;
* a sweep: the start, loading, scoring its texts, then per evaluated point the pruning
  (``task_point`` measured on the Prune page, less its evaluation) and its dev examples.

Returns None while a needed figure was never measured (the caller calibrates first). A run that
the results store already holds is answered at once; the estimate does not know that and counts it.
"""

from __future__ import annotations

from obce_core import glue
from obce_core.evidence.sweep import sweep_points
from obce_core.jobs.spec import FinetuneJobSpec, JobSpec, SweepJobSpec
from obce_core.training import Recipe, estimate_training
from obce_core.training.step_timing import (Estimate, MachineLoad, StepTimes, device_key, eval_example_name,
                                            train_step_name)

__all__ = ["TASK_POINT", "TASK_POINT_EXAMPLES", "estimate_job", "evaluated_points", "needed_measurements"]

TASK_POINT = "task_point"  # seconds to prune the model with one plan and evaluate it on TASK_POINT_EXAMPLES examples
TASK_POINT_EXAMPLES = 256


def evaluated_points(points) -> int:
    """How many of a sweep's (group, percentile, scorer, seed) points are evaluated: percentile 0
    (the original) once for them all."""
    points = list(points)
    return sum(1 for p in points if p[1] != 0) + (1 if any(p[1] == 0 for p in points) else 0)


def _dev_rows(task: str, eval_size: int | None) -> int:
    rows = glue.get_task(task).dev_rows or 0
    return min(eval_size, rows) if eval_size and rows else (eval_size or rows)


def _sweep_recipe(spec: SweepJobSpec) -> Recipe:
    return Recipe.for_task(spec.task).replace(max_length=spec.max_length)


def needed_measurements(spec) -> list[tuple[Recipe, str]]:
    """The (recipe, task) calibrations ``estimate_job`` needs for ``spec`` (besides the job start)."""
    if isinstance(spec, FinetuneJobSpec):
        return [(spec.recipe or Recipe.for_task(spec.task), spec.task)]
    if isinstance(spec, JobSpec):
        return [(spec.recipe_for(t), t) for t in spec.tasks]
    if isinstance(spec, SweepJobSpec):
        return [(_sweep_recipe(spec), spec.task)]
    raise ValueError(f"No estimate for a {type(spec).__name__}.")


def estimate_job(spec, model_key: str, store: StepTimes | None = None, *, device: str | None = None,
                 load: MachineLoad | None = None, scores_given: bool | None = None) -> Estimate | None:
    """The ESTIMATED duration of ``spec`` for the model whose fingerprint is ``model_key`` (see the
    module docstring), or None when something it needs was never measured here. ``scores_given``
    (default: ``spec.scores`` is set) says a comparison prunes by scores it does not compute."""
    store = store or StepTimes()
    load = load or store.load()
    where = device_key(device)

    def t(name: str, model: str = model_key, threads: int | None = None) -> float:
        value = store.seconds(model, where, name, load=load, threads=threads)
        if value is None:
            raise LookupError(name)
        return value

    parts: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        parts[name] = parts.get(name, 0.0) + seconds

    try:
        add("starting the worker", t("job_start", model="*", threads=1))
        if isinstance(spec, FinetuneJobSpec):
            recipe = spec.recipe or Recipe.for_task(spec.task)
            steps = estimate_training(recipe, spec.task)[0]
            add("loading the model", t("model_load"))
            add(f"{steps:,} training steps", steps * t(train_step_name(recipe, spec.task)))
            add("evaluating", _dev_rows(spec.task, recipe.eval_size) * t(eval_example_name(recipe, spec.task)))
        elif isinstance(spec, JobSpec):
            for task in spec.tasks:
                recipe = spec.recipe_for(task)
                example = t(eval_example_name(recipe, task))
                evals = _dev_rows(task, recipe.eval_size) * example
                runs = 2 if spec.plan is not None else 1
                add("loading the models", runs * t("model_load"))
                add("evaluating", runs * evals)
                given = spec.scores is not None if scores_given is None else scores_given
                if spec.plan is not None and not given:  # forward passes at the scoring length
                    add("scoring the training texts", spec.score_n * example * spec.score_max_length / recipe.max_length)
                if spec.protocol == "paper":
                    steps = estimate_training(recipe, task)[0]
                    step = t(train_step_name(recipe, task))
                    add("training steps", runs * steps * step)
                    if spec.distill and spec.plan is not None:  # the teacher's forward pass on each batch
                        add("the teacher's forward passes", steps * recipe.batch_size * example)
                elif spec.recover_steps and spec.plan is not None:
                    add("recovery steps", spec.recover_steps * t(train_step_name(recipe, task)))
                    add("evaluating", evals)
        elif isinstance(spec, SweepJobSpec):
            recipe = _sweep_recipe(spec)
            example = t(eval_example_name(recipe, spec.task))
            add("loading the model", t("model_load"))
            add("scoring the training texts", spec.score_texts * example)
            points = evaluated_points(sweep_points(spec.groups, spec.percentiles, spec.scorers, spec.seeds, "sweep"))
            prune_s = max(t(TASK_POINT) - TASK_POINT_EXAMPLES * example, 0.0)
            n = _dev_rows(spec.task, spec.eval_size)
            add(f"{points} evaluated points", points * (prune_s + n * example))
        else:
            raise ValueError(f"No estimate for a {type(spec).__name__}.")
    except LookupError:
        return None
    return Estimate(seconds=sum(parts.values()), parts=parts,
                    basis=f"step times measured on this machine for this model, scaled to its {load.describe()} now")
