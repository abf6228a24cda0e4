"""What training and the protocols report while they run, and how they are stopped.

A ``progress`` callback receives one event per call: ``PhaseEvent`` when a new phase starts
("fine-tuning original on sst2"), ``StepEvent`` after every optimizer step, ``ResultEvent`` when
a run has its result (trained now or answered from the store). ``should_stop()`` is polled between
steps; when it turns True the work stops with ``TrainingCancelled`` and nothing half-done is kept.
Under ``accelerate launch``/``torchrun`` every process runs; ``is_main_process`` says which one
reports and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Union

__all__ = [
    "PhaseEvent",
    "Progress",
    "ProgressEvent",
    "ResultEvent",
    "ShouldStop",
    "StepEvent",
    "TrainingCancelled",
    "is_main_process",
    "world_size",
]


class TrainingCancelled(RuntimeError):
    """``should_stop()`` asked a fine-tune or protocol to stop; nothing half-done was kept."""


@dataclass(frozen=True)
class PhaseEvent:
    """A new phase of the work begins; ``phase`` says what, for people."""

    phase: str


@dataclass(frozen=True)
class StepEvent:
    """An optimizer step finished: ``step`` of ``max_steps``, the latest logged loss, the ETA."""

    step: int
    max_steps: int
    loss: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class ResultEvent:
    """A run has its result (``RunResult``), trained now or answered from the store."""

    phase: str
    result: Any


ProgressEvent = Union[PhaseEvent, StepEvent, ResultEvent]
Progress = Callable[[ProgressEvent], None]
ShouldStop = Callable[[], bool]


def world_size() -> int:
    """Processes in this launch (``WORLD_SIZE``; 1 when unset or unreadable)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Whether this process reports and writes: rank 0 of a distributed launch, or the only one."""
    return os.environ.get("RANK", "0") in ("", "0")
