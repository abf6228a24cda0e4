"""What a job is asked to do: ``JobSpec`` (a GLUE comparison), ``FinetuneJobSpec`` (a task model) and
``SweepJobSpec`` (a retraining-free threshold sweep of a task model).

Both check themselves and round-trip through ``spec.json``; the ``kind`` field tells them apart
(``read_spec`` dispatches on it; a spec.json without ``kind`` is a GLUE comparison, as written
before task-model jobs existed). ``absolute()`` makes local paths absolute so a worker started in
another folder finds them; ``check_data()`` fails early, naming the file, when a local GLUE copy
lacks a split the job needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from obce_core import glue
from obce_core.evidence.sweep import SWEEP_GROUPS
from obce_core.evidence.task_sweep import task_model_problem
from obce_core.io import JsonDataclass, JsonInputError, check_output_path, read_json
from obce_core.pruning import SCORERS, PruningPlan, is_obce_saved
from obce_core.scoring.capture import TOKEN_MODES
from obce_core.search.algorithm import SearchSettings
from obce_core.training import PROTOCOLS, Recipe
from obce_core.training.protocols import as_plan
from obce_core.training.recovery import recovery_recipe
from obce_core.training.task_models import task_model_info
from obce_core.validation import check_choice, check_int, check_number, invalid

__all__ = ["JOB_KINDS", "FinetuneJobSpec", "JobSpec", "SearchJobSpec", "SweepJobSpec", "read_spec"]

JOB_KINDS = ("glue", "finetune", "sweep", "search")


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _absolute_glue_dir(glue_dir: str | None) -> str | None:
    root = glue_dir if glue_dir is not None else glue.default_glue_dir()
    return _absolute(None if root is None else str(root))


def _absolute_model(model: str) -> str:
    if model not in ("default", "") and Path(model).expanduser().exists():
        return _absolute(model)
    return model  # "default" or a hub id


def _dev_splits(task: str) -> list[str]:
    return [s for s in glue.get_task(task).splits if s.startswith("validation")]


_ANY_MODEL = "'default', a model directory or a hub id"
_TASK_MODEL = "the directory of a task model"
_TASK_MODEL_FIX = "Fine-tune one with `python -m obce_core finetune --task sst2 --out DIR`."


def _check_text(value, name: str, owner: str, expected: str, fix: str = "") -> None:
    """The one ValueError unless ``value`` is a non-empty string (a model, a folder)."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(name, owner, expected, value, fix)


def _check_common(spec, owner: str, kind: str, *, model: str, model_fix: str = "", kind_fix: str = "") -> None:
    """What every job spec checks first: its own ``kind`` and a named ``model`` (``model``: what
    that field must be); ``glue_dir`` becomes text, as JSON keeps it."""
    check_choice(spec.kind, "kind", owner, (kind,), fix=kind_fix)
    _check_text(spec.model, "model", owner, model, model_fix)
    if spec.glue_dir is not None:
        spec.glue_dir = str(spec.glue_dir)


def _check_task_model_data(spec) -> None:
    """``check_data`` of a job on a saved task model: the model is one for the task, the splits are there."""
    problem = task_model_problem(spec.model, spec.task)
    if problem:
        raise ValueError(problem)
    glue.check_local_splits(spec.glue_dir, {spec.task: ["train", *_dev_splits(spec.task)]})


@dataclass
class JobSpec(JsonDataclass):
    """One GLUE comparison job (original vs pruned); checks itself and round-trips through JSON.

    ``model``: ``"default"``, a local directory or a hub id (a fine-tuned classifier for
    protocol ``finetuned``). ``plan``: a ``PruningPlan`` (or its dict), ``None`` for the original
    alone. ``recipe`` trains and evaluates every task, except those named in ``recipes`` (per-task
    recipes, e.g. each task's CPU preset). ``scores``: a ``.parquet`` written by
    ``python -m obce_core score --out``; without it each task's scores come from ``score_n``
    training sentences drawn with ``score_seed`` (``score_token``, ``score_max_length``).
    ``recover_steps``: protocol ``finetuned`` only. ``distill``: protocol ``paper`` with a plan only;
    the pruned model then learns from the fine-tuned original's logits (``run_paper_protocol``).
    """

    _json_name = "job spec"

    kind: str = "glue"
    model: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["sst2"])
    plan: PruningPlan | None = None
    recipe: Recipe = field(default_factory=Recipe)
    recipes: dict[str, Recipe] = field(default_factory=dict)
    protocol: str = "paper"
    recover_steps: int = 0
    distill: bool = False
    scores: str | None = None
    score_n: int = 512
    score_seed: int = 0
    score_token: str = "cls"
    score_max_length: int = 128
    glue_dir: str | None = None
    device: str | None = None

    def __post_init__(self):
        o = "JobSpec"
        _check_common(self, o, "glue", model=_ANY_MODEL, kind_fix="A task-model job is a FinetuneJobSpec.")
        tasks = self.tasks.split(",") if isinstance(self.tasks, str) else self.tasks
        if not isinstance(tasks, (list, tuple)) or not tasks:
            raise invalid("tasks", o, "a non-empty list of GLUE task names", self.tasks,
                          f"Valid names: {', '.join(glue.TASKS)}.")
        names = [glue.get_task(t).name for t in tasks]  # unknown names raise with the valid list
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise invalid("tasks", o, "a list naming each task once", self.tasks, f"{dupes} named more than once; list each task once.")
        self.tasks = names
        self.plan = as_plan(self.plan)
        self.recipe = Recipe.from_dict(self.recipe)
        if not isinstance(self.recipes, dict):
            raise invalid("recipes", o, "a dict {task: recipe}", self.recipes)
        self.recipes = {glue.get_task(t).name: Recipe.from_dict(r) for t, r in self.recipes.items()}
        extra = sorted(set(self.recipes) - set(self.tasks))
        if extra:
            raise invalid("recipes", o, f"recipes for tasks of the job {self.tasks}", sorted(self.recipes),
                          f"Drop {extra} or add them to the tasks.")
        check_choice(self.protocol, "protocol", o, PROTOCOLS,
                     fix="'paper' prunes the pre-trained model and fine-tunes both; 'finetuned' prunes a fine-tuned "
                         "classifier.")
        check_int(self.recover_steps, "recover_steps", o, low=0, fix="0 = no recovery fine-tune.")
        if self.recover_steps and self.protocol != "finetuned":
            raise invalid("recover_steps", o, "0 for protocol 'paper'", self.recover_steps,
                          "The paper protocol fine-tunes the pruned model in full; recovery applies to protocol 'finetuned' only.")
        if not isinstance(self.distill, bool):
            raise invalid("distill", o, "true or false", self.distill)
        if self.distill and (self.protocol != "paper" or self.plan is None):
            raise invalid("distill", o, "false unless protocol is 'paper' and there is a plan", self.distill,
                          "Distillation trains the pruned model of the paper protocol from the fine-tuned original; "
                          "choose protocol 'paper' and a plan, or turn distillation off.")
        if self.protocol == "finetuned" and len(self.tasks) != 1:
            raise invalid("tasks", o, "ONE task for protocol 'finetuned' (a classifier is fine-tuned for one task)",
                          self.tasks, "Start one job per fine-tuned model.")
        for name in ("score_n", "score_max_length"):
            check_int(getattr(self, name), name, o, low=2)
        check_int(self.score_seed, "score_seed", o)
        check_choice(self.score_token, "score_token", o, TOKEN_MODES)
        if self.scores is not None:
            self.scores = str(self.scores)
            if not Path(self.scores).expanduser().is_file():
                raise ValueError(f"Scores file {self.scores!r} does not exist; write one with `python -m obce_core "
                                 "score --model ... --out scores.parquet`, or leave scores unset to score each task's "
                                 "training sentences.")
        for task in self.tasks:
            if self.recipe_for(task).eval_steps:
                raise invalid("recipe", o, "a recipe without held-out evaluation (eval_steps 0)",
                              f"eval_steps={self.recipe_for(task).eval_steps} for {task}",
                              "A GLUE comparison fine-tunes the pre-trained model, which has no held-out reserve to "
                              "stop early on; use the task's CPU preset (the 'recover' preset is for recovering a "
                              "pruned task model: `finetune --model PRUNED --teacher TASK_MODEL`, or a search job "
                              "with recover).")

    def recipe_for(self, task: str) -> Recipe:
        """The recipe that trains and evaluates ``task`` in this job."""
        return self.recipes.get(glue.get_task(task).name, self.recipe)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["plan"] = None if self.plan is None else self.plan.to_dict()
        data["recipe"] = self.recipe.to_dict()
        data["recipes"] = {t: r.to_dict() for t, r in self.recipes.items()}
        return data

    def absolute(self) -> "JobSpec":
        """A copy whose local paths are absolute, so a worker in another folder finds them."""
        return dataclasses.replace(self, model=_absolute_model(self.model), scores=_absolute(self.scores),
                                   glue_dir=_absolute_glue_dir(self.glue_dir))

    def check_data(self) -> None:
        """Fail early, naming the file, when a local GLUE folder lacks a split a job needs."""
        trains = self.protocol == "paper" or self.recover_steps or (self.scores is None and self.plan is not None)
        glue.check_local_splits(self.glue_dir, {t: _dev_splits(t) + (["train"] if trains else []) for t in self.tasks})


@dataclass
class FinetuneJobSpec(JsonDataclass):
    """One task-model job: fine-tune ``model`` on ``task`` and save the classifier in ``out``.

    ``recipe``: default the task's CPU preset (with a ``teacher``: the ``recover`` preset). ``out`` must not exist, be empty, or (with
    ``overwrite``) hold an earlier task model (see ``finetune_task_model``). ``teacher``: a task
    model folder for the same task to distil from (``finetune_task_model``'s ``teacher``).
    """

    _json_name = "finetune job spec"

    kind: str = "finetune"
    task: str = "sst2"
    out: str = ""
    model: str = "default"
    recipe: Recipe | None = None
    teacher: str | None = None
    overwrite: bool = False
    glue_dir: str | None = None
    device: str | None = None

    def __post_init__(self):
        o = "FinetuneJobSpec"
        _check_common(self, o, "finetune", model=_ANY_MODEL, kind_fix="A GLUE comparison job is a JobSpec.")
        self.task = glue.get_task(self.task).name
        _check_text(self.out, "out", o, "the directory to save the task model in",
                    "Name a new folder, e.g. obce_workspace/models/sst2.")
        if self.teacher is not None:
            _check_text(self.teacher, "teacher", o, "None or the folder of a task model to distil from",
                        f"Fine-tune one with `python -m obce_core finetune --task {self.task} --out DIR`.")
        if self.recipe is None:  # a teacher means recovering a pruned model: its own preset
            self.recipe = Recipe.for_task(self.task) if self.teacher is None \
                else recovery_recipe(self.task, task_model_info(self.teacher))
        self.recipe = Recipe.from_dict(self.recipe)
        if not isinstance(self.overwrite, bool):
            raise invalid("overwrite", o, "True or False", self.overwrite)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["recipe"] = self.recipe.to_dict()
        return data

    def absolute(self) -> "FinetuneJobSpec":
        """A copy whose local paths are absolute, so a worker in another folder finds them."""
        return dataclasses.replace(self, model=_absolute_model(self.model), out=_absolute(self.out),
                                   teacher=None if self.teacher is None else _absolute_model(self.teacher),
                                   glue_dir=_absolute_glue_dir(self.glue_dir))

    def check_data(self) -> None:
        """Fail early, naming the file, when a local GLUE folder lacks the training or dev split."""
        glue.check_local_splits(self.glue_dir, {self.task: ["train", *_dev_splits(self.task)]})


@dataclass
class SweepJobSpec(JsonDataclass):
    """One threshold sweep: ``obce_core.evidence.sweep_task_model`` of the task model in ``model``.

    The fields are that function's arguments; ``eval_size=None`` evaluates the whole dev split.
    Rows are cached per point, so a cancelled sweep keeps what it finished and a rerun resumes.
    """

    _json_name = "sweep job spec"

    kind: str = "sweep"
    model: str = ""
    task: str = "sst2"
    groups: list[str] = field(default_factory=lambda: ["ffn", "v", "qk", "all"])
    percentiles: list[float] = field(default_factory=lambda: [float(p) for p in range(0, 100, 10)])
    scorers: list[str] = field(default_factory=lambda: ["rf", "std", "magnitude", "random"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    skip_layers: int = 0
    compensation: str | None = None
    eval_size: int | None = None
    eval_seed: int = 0
    score_texts: int = 512
    score_seed: int = 0
    max_length: int = 128
    glue_dir: str | None = None
    device: str | None = None

    def __post_init__(self):
        o = "SweepJobSpec"
        _check_common(self, o, "sweep", model=_TASK_MODEL, model_fix=_TASK_MODEL_FIX)
        self.task = glue.get_task(self.task).name
        # Any registered scorer: SWEEP_SCORERS are the defaults, fisher and flap are opt-in.
        for name, options in (("groups", SWEEP_GROUPS), ("scorers", SCORERS)):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not values:
                raise invalid(name, o, f"a non-empty list among {', '.join(options)}", values)
            setattr(self, name, [check_choice(v, name, o, options) for v in values])
        if not isinstance(self.percentiles, (list, tuple)) or not self.percentiles:
            raise invalid("percentiles", o, "a non-empty list of numbers in [0, 100)", self.percentiles)
        for p in self.percentiles:
            check_number(p, "percentiles", o, low=0, high=100, high_open=True)
        self.percentiles = sorted({float(p) for p in self.percentiles})
        if not isinstance(self.seeds, (list, tuple)) or not self.seeds:
            raise invalid("seeds", o, "a non-empty list of seeds", self.seeds)
        self.seeds = [check_int(s, "seeds", o, low=0) for s in self.seeds]
        check_int(self.skip_layers, "skip_layers", o, low=0)
        if self.compensation is not None:
            self.compensation = PruningPlan(compensation=self.compensation).compensation
        check_int(self.eval_size, "eval_size", o, low=1, allow_none=True, fix="None evaluates the whole dev split.")
        check_int(self.eval_seed, "eval_seed", o, low=0)
        check_int(self.score_texts, "score_texts", o, low=2)
        check_int(self.score_seed, "score_seed", o, low=0)
        check_int(self.max_length, "max_length", o, low=8, high=512)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def absolute(self) -> "SweepJobSpec":
        """A copy whose local paths are absolute, so a worker in another folder finds them."""
        return dataclasses.replace(self, model=_absolute_model(self.model), glue_dir=_absolute_glue_dir(self.glue_dir))

    def check_data(self) -> None:
        """Fail early, naming the file or the fix, when the data or the task model is missing."""
        _check_task_model_data(self)


@dataclass
class SearchJobSpec(JsonDataclass):
    """One plan search: ``obce_core.search.search_task_model`` of the task model in ``model``, saved
    to ``out``. ``settings`` is a ``SearchSettings`` (its dict in JSON); the other fields are that
    function's arguments. Rows are cached per plan, so a cancelled search resumes when run again.

    ``recover``: "search, then recover" in one job: the found plan, once saved, is recovered from
    the task model (``finetune_task_model`` with the task model as teacher and the ``recover``
    preset) into ``recovered_out()`` (``<out>-recovered``). A job cancelled during the recovery
    resumes it from its last checkpoint when run again (the saved search is not redone).
    """

    _json_name = "search job spec"

    kind: str = "search"
    model: str = ""
    task: str = "sst2"
    out: str = ""
    settings: SearchSettings = field(default_factory=SearchSettings)
    search_size: int = 1000
    search_seed: int = 1
    score_texts: int = 512
    fisher_examples: int = 512
    overwrite: bool = False
    glue_dir: str | None = None
    device: str | None = None
    recover: bool = False

    def __post_init__(self):
        o = "SearchJobSpec"
        if not isinstance(self.recover, bool):
            raise invalid("recover", o, "true or false", self.recover,
                          "true recovers the found plan from the task model by distillation after the search.")
        _check_common(self, o, "search", model=_TASK_MODEL, model_fix=_TASK_MODEL_FIX)
        _check_text(self.out, "out", o, "the folder to save the pruned model in")
        self.task = glue.get_task(self.task).name
        if isinstance(self.settings, dict):
            self.settings = SearchSettings.from_dict(self.settings)
        check_int(self.search_size, "search_size", o, low=10)
        check_int(self.search_seed, "search_seed", o, low=0)
        check_int(self.score_texts, "score_texts", o, low=2)
        check_int(self.fisher_examples, "fisher_examples", o, low=1)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["settings"] = self.settings.to_dict()
        return data

    def absolute(self) -> "SearchJobSpec":
        """A copy whose local paths are absolute, so a worker in another folder finds them."""
        return dataclasses.replace(self, model=_absolute_model(self.model), out=_absolute(self.out),
                                   glue_dir=_absolute_glue_dir(self.glue_dir))

    def recovered_out(self) -> str:
        """Where ``recover`` saves the recovered task model: ``<out>-recovered`` beside ``out``."""
        return str(Path(self.out).expanduser().parent / f"{Path(self.out).name}-recovered")

    def check_data(self) -> None:
        """Fail early, naming the fix, when the task model, the data or the output folder is wrong."""
        _check_task_model_data(self)
        check_output_path(self.out, overwrite=self.overwrite, kind="dir", may_replace=is_obce_saved, flag="out")
        if self.recover:
            check_output_path(self.recovered_out(), overwrite=self.overwrite, kind="dir", flag="out (recovered)",
                              may_replace=lambda folder: (Path(folder) / "obce_task.json").is_file())


_SPEC_CLASSES = {"glue": JobSpec, "finetune": FinetuneJobSpec, "sweep": SweepJobSpec, "search": SearchJobSpec}


def spec_from_dict(data: dict, owner: str = "the job spec") -> JobSpec | FinetuneJobSpec | SweepJobSpec:
    """The spec of the class ``data['kind']`` names (no ``kind``: a GLUE comparison); ``owner``
    names the spec in the error."""
    kind = data.get("kind", "glue") if isinstance(data, dict) else None
    if kind not in _SPEC_CLASSES:
        raise invalid("kind", owner, f"one of {JOB_KINDS}", kind)
    return _SPEC_CLASSES[kind].from_dict(data)


def read_spec(path: str | Path) -> JobSpec | FinetuneJobSpec | SweepJobSpec:
    """The spec in a ``spec.json``, of the class its ``kind`` names (no ``kind``: a GLUE comparison)."""
    path = Path(path)
    try:
        data = read_json(path, "job spec")
    except (OSError, JsonInputError) as exc:
        raise ValueError(f"Could not read the job spec {str(path)!r}: {exc}.") from exc
    return spec_from_dict(data, f"the job spec {str(path)!r}")
