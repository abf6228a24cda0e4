"""Which folders a dashboard visitor may name: models load from the workspace or from folders the
operator allows, and pruned models are saved under the workspace by name only.

A visitor controls the URL (``?model=...``) and the text boxes, so nothing they type reaches the
disk unchecked. A local model path is accepted only when it resolves (symlinks followed) inside
the workspace or a folder listed in ``OBCE_MODEL_DIRS`` (``os.pathsep``-separated); every other
path gets the same message, whether or not it exists, so the messages say nothing about the
server's disk. A save target is a NAME: one folder under ``<workspace>/pruned``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from obce_core.loading import MAX_HUB_ID_CHARS, looks_like_path
from obce_core.workspace import default_workspace

__all__ = ["MODEL_DIRS_ENV", "SAVE_FOLDER", "TASK_MODELS_FOLDER", "ModelSourceRefused", "SaveNameRefused", "allowed_model_dirs",
           "check_model_source", "save_target"]

MODEL_DIRS_ENV = "OBCE_MODEL_DIRS"
SAVE_FOLDER = "pruned"
TASK_MODELS_FOLDER = "task_models"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ModelSourceRefused(ValueError):
    """A local model path outside the folders this server offers."""


class SaveNameRefused(ValueError):
    """A save name that is not one folder name inside the workspace."""


def allowed_model_dirs() -> list[Path]:
    """The workspace and the folders in ``OBCE_MODEL_DIRS``, resolved."""
    dirs = [default_workspace()]
    dirs += [Path(p) for p in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if p.strip()]
    return [d.expanduser().resolve() for d in dirs]


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_model_source(source: str | None) -> str:
    """``source`` if the dashboard may load it: 'default', a hub id ("name" or "org/name"), or a
    local folder inside ``allowed_model_dirs()``. Raises ``ModelSourceRefused`` otherwise, with one
    message for every refused path."""
    text = (source or "").strip() or "default"
    if text == "default":
        return text
    candidate = Path(text).expanduser()
    resolved = candidate.resolve()
    dirs = allowed_model_dirs()
    if any(_inside(resolved, d) for d in dirs):
        return text
    # A hub-id-shaped name that is also a folder here would be loaded from disk by load_model. A name
    # longer than a hub id can be is a path too (and may be too long to look up: [Errno 36]).
    if looks_like_path(text) or len(text) > MAX_HUB_ID_CHARS or candidate.exists():
        raise ModelSourceRefused(
            f"This server offers no model folder {text!r}. Local models load from the workspace "
            f"({dirs[0]}) or from the folders its operator lists in {MODEL_DIRS_ENV}; otherwise choose "
            "the embedded default model or a Hugging Face hub id."
        )
    return text


def save_target(name: str, workspace: str | os.PathLike | None = None, folder: str = SAVE_FOLDER) -> Path:
    """The folder ``<workspace>/<folder>/<name>`` (default ``pruned``) for a save NAME typed by a visitor.

    Refuses (``SaveNameRefused``) anything but one plain folder name (letters, digits, '.', '_',
    '-'; no '..', '~' or path) and a target that resolves outside the workspace (a symlink out).
    """
    text = (name or "").strip()
    root = Path(workspace if workspace is not None else default_workspace()).expanduser()
    if not _NAME.fullmatch(text) or set(text) <= {"."}:
        raise SaveNameRefused(
            f"Save takes a folder NAME, not a path: {text!r} is not one. Use letters, digits, '.', '_' and '-' "
            f"(up to 100 characters, starting with a letter or digit), e.g. qk30-v30-ffn30; the model goes to "
            f"the workspace's {folder}/ folder."
        )
    target = root / folder / text
    if not _inside(target.resolve(), root.resolve()):
        raise SaveNameRefused(
            f"{folder}/{text} leads outside the workspace (a symbolic link points elsewhere), so nothing is "
            "saved there; choose another name."
        )
    return target
