"""Whole-job progress: which run of how many, and an ETA for the whole job from measured step times.

``planned_runs(spec)`` lists the runs a job will make (a GLUE comparison: original and pruned per
task, plus recovery; a task-model fine-tune or a sweep: one) with their planned training steps.
``JobClock`` follows the job's progress events: a ``ResultEvent`` closes a run, ``StepEvent``s
time the steps, and the ETA is (seconds per step measured so far) x (steps left in this run and the
runs to come) + (the measured non-training time per run, e.g. evaluation) x (runs left). It is an
estimate: it assumes later runs step as fast as the ones measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from obce_core.jobs.spec import FinetuneJobSpec, JobSpec
from obce_core.training import PhaseEvent, ResultEvent, StepEvent, estimate_training

__all__ = ["JobClock", "PlannedRun", "planned_runs"]


@dataclass
class PlannedRun:
    """One run of a job: what it is (``label``) and its planned optimizer steps (0: no training)."""

    label: str
    steps: int


def planned_runs(spec) -> list[PlannedRun]:
    """The runs ``spec`` will make, in order, with their planned training steps."""
    if isinstance(spec, JobSpec):
        runs = []
        for task in spec.tasks:
            steps = estimate_training(spec.recipe_for(task), task)[0]
            if spec.protocol == "paper":
                runs.append(PlannedRun(f"original on {task}", steps))
                if spec.plan is not None:
                    runs.append(PlannedRun(f"pruned on {task}" + (", distilled" if spec.distill else ""), steps))
            else:
                runs.append(PlannedRun(f"original on {task}", 0))
                if spec.plan is not None:
                    runs.append(PlannedRun(f"pruned on {task}", 0))
                    if spec.recover_steps:
                        runs.append(PlannedRun(f"recovered on {task}", int(spec.recover_steps)))
        return runs
    if isinstance(spec, FinetuneJobSpec):
        return [PlannedRun(f"fine-tune on {spec.task}", estimate_training(spec.recipe, spec.task)[0])]
    return [PlannedRun("sweep", 0)]  # its points arrive as steps


class JobClock:
    """Follows a job's events; ``run`` (1-based), ``runs`` and ``eta_s()`` describe the whole job."""

    def __init__(self, runs: list[PlannedRun], clock=time.monotonic):
        self.planned = runs or [PlannedRun("run", 0)]
        self.clock = clock
        self.index = 0  # the current run, 0-based
        self.step = 0
        self.run_start = self.mark = clock()
        self.run_train_s = 0.0
        self.train_s, self.train_steps = 0.0, 0
        self.other_s: list[float] = []  # per finished run: its time outside training steps

    @property
    def run(self) -> int:
        return min(self.index + 1, len(self.planned))

    @property
    def runs(self) -> int:
        return len(self.planned)

    @property
    def label(self) -> str:
        return self.planned[self.run - 1].label

    def __call__(self, event) -> None:
        now = self.clock()
        if isinstance(event, PhaseEvent):
            self.mark = now  # the first step is timed from the start of its phase
        elif isinstance(event, StepEvent):
            if event.max_steps and self.index < len(self.planned):
                self.planned[self.index].steps = int(event.max_steps)  # the trainer's count beats the plan's
            done = int(event.step) - self.step
            if done > 0:
                self.train_s += now - self.mark
                self.run_train_s += now - self.mark
                self.train_steps += done
            self.step, self.mark = int(event.step), now
        elif isinstance(event, ResultEvent):
            if not getattr(event.result, "from_store", False):
                self.other_s.append(max(now - self.run_start - self.run_train_s, 0.0))
            elif self.index < len(self.planned):
                self.planned[self.index].steps = 0  # answered at once: no steps to wait for
            self.index += 1
            self.step, self.run_start, self.mark, self.run_train_s = 0, now, now, 0.0

    @property
    def seconds_per_step(self) -> float | None:
        return self.train_s / self.train_steps if self.train_steps else None

    def steps_left(self) -> int:
        if self.index >= len(self.planned):
            return 0
        current = max(self.planned[self.index].steps - self.step, 0)
        return current + sum(r.steps for r in self.planned[self.index + 1:])

    def eta_s(self) -> float | None:
        """Seconds left for the whole job, or None before anything was measured."""
        left = self.steps_left()
        per_step = self.seconds_per_step
        if left and per_step is None:
            return None
        runs_left = max(len(self.planned) - self.index, 0)
        other = sum(self.other_s) / len(self.other_s) if self.other_s else None
        if other is None and runs_left and not left:
            return None  # no training left, and no run timed yet
        return (per_step or 0.0) * left + (other or 0.0) * runs_left
