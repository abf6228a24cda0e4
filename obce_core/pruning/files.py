"""A pruned model on disk: ``save_pruned`` writes it as one directory, ``load_plan`` reads its plan.

The directory holds what ``save_pretrained`` writes (config + safetensors, tokenizer) plus
``obce_plan.json`` and ``obce_report.json``; ``transformers`` reloads it bit-exactly once
``obce_core`` is imported. When the model came from a sentence-transformers folder (the embedded
all-MiniLM-L6-v2 did), that folder's module files come along, so ``SentenceTransformer(directory)``
rebuilds the same modules (``obce_core.sentence_transformers_files``). It is built beside the
target and renamed into place (``obce_core.io.publish_directory``). An existing directory is only ever replaced when obce wrote
it (its plan or report file says so) and the caller asked to overwrite: a user's other folders
are never deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from obce_core.choices import PLAN_FILE  # defined without torch for the CLI's parser
from obce_core.io import publish_directory
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.report import PruningReport
from obce_core.sentence_transformers_files import write_sentence_transformers_files

__all__ = ["PLAN_FILE", "REPORT_FILE", "is_obce_saved", "load_plan", "save_pruned"]

REPORT_FILE = "obce_report.json"


def is_obce_saved(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a model written by ``save_pruned`` (config plus plan or report)."""
    directory = Path(directory)
    return (directory / "config.json").is_file() and any((directory / f).is_file() for f in (PLAN_FILE, REPORT_FILE))


def save_pruned(
    model,
    tokenizer,
    directory: str | os.PathLike,
    plan: PruningPlan | None = None,
    report: PruningReport | None = None,
    *,
    overwrite: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write model (config + safetensors), tokenizer, plan and report as one directory, atomically.

    A bare encoder loaded from a sentence-transformers model also gets that model's
    sentence-transformers files (modules, pooling, normalize, their configs), so that after
    ``import obce_core``, ``SentenceTransformer(directory)`` builds the same modules around it.

    ``extra_files`` (name -> text) are written into the same folder before it is published (a
    search's report, say), so the folder appears whole or not at all.

    A failure leaves no half-written target. An existing ``directory`` is refused
    (``FileExistsError``) unless it is empty, or it holds a model saved by obce and ``overwrite`` is
    true; a folder with anything else in it is never replaced.
    """
    directory = Path(directory).expanduser()
    _check_target(directory, overwrite)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_sentence_transformers_files(model, tmp)
        if plan is not None:
            plan.to_json(tmp / PLAN_FILE)
        if report is not None:
            (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
        for name, text in (extra_files or {}).items():
            if Path(name).name != name or name in (PLAN_FILE, REPORT_FILE):
                raise ValueError(f"extra_files names {name!r}: give a plain file name other than {PLAN_FILE} and "
                                 f"{REPORT_FILE}.")
            (tmp / name).write_text(text, encoding="utf-8")

    def replaceable(existing: Path) -> bool:
        return not any(existing.iterdir()) or (overwrite and is_obce_saved(existing))

    return publish_directory(directory, fill, replace=replaceable)


def _check_target(directory: Path, overwrite: bool) -> None:
    """Refuse, with a message for the person saving, any target that may not be written."""
    if not directory.exists():
        return
    name = str(directory)
    if not directory.is_dir():
        raise FileExistsError(f"{name!r} is a file; choose another name for the pruned model's folder.")
    if not any(directory.iterdir()):
        return
    if not is_obce_saved(directory):
        raise FileExistsError(
            f"The folder {name!r} already exists and holds files that obce did not save; choose another "
            "name. Only a folder holding a model saved by obce can be overwritten."
        )
    if not overwrite:
        raise FileExistsError(
            f"The folder {name!r} already holds a model saved by obce; choose another name, or allow "
            "overwriting to replace it."
        )


def load_plan(directory: str | os.PathLike) -> PruningPlan:
    """The ``PruningPlan`` saved with a pruned model by ``save_pruned``."""
    path = Path(directory).expanduser() / PLAN_FILE
    if not path.is_file():
        raise ValueError(
            f"No {PLAN_FILE} in {str(directory)!r}; expected a directory written by save_pruned(..., plan=plan) "
            "or `python -m obce_core prune`."
        )
    return PruningPlan.from_json(path)
