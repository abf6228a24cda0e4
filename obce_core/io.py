"""Files written safely, and JSON round trips for obce's dataclasses.

Every file or directory obce writes goes through one of the atomic writers here (temp file or
temp directory beside the target, then a rename), so a crash never leaves a half-written file.
``JsonDataclass`` is the one JSON round trip for settings and records (plans, recipes, job specs,
score settings, run results): every class reads, writes and rejects unknown keys the same way,
with the same messages. A subclass names itself in ``_json_name`` (used in messages) and overrides
``to_dict``/``from_dict`` only where a field needs more than ``dataclasses.asdict``.
"""

from __future__ import annotations

import dataclasses
import json
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, ClassVar, Iterator

__all__ = ["JsonDataclass", "atomic_path", "publish_directory", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path``, on error removed.

    For writers that want a file name (``pq.write_table``, ``np.save`` with a file object, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file and a rename: never a half-written file."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def publish_directory(directory: str | os.PathLike, fill: Callable[[Path], None], *,
                      replace: Callable[[Path], bool] | None = None) -> Path:
    """Build a directory with ``fill(tmp)`` in a temp directory beside it, then rename it into place.

    A failure leaves no half-written target. An existing ``directory`` is replaced only when
    ``replace(directory)`` says so (the caller decides what it may overwrite, e.g. only a directory
    obce wrote); otherwise ``FileExistsError``. The old directory is moved aside first so that the
    swap is a rename, and put back if the swap fails.
    """
    directory = Path(directory)
    if directory.exists() and not (replace is not None and directory.is_dir() and replace(directory)):
        raise FileExistsError(f"{str(directory)!r} exists and may not be replaced.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a published directory reads like any other
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / "d")
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "d").exists() and not directory.exists():
            os.replace(old / "d", directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


class JsonDataclass:
    """``to_dict``/``from_dict``/``to_json``/``from_json`` for a dataclass that validates itself."""

    _json_name: ClassVar[str] = "settings"
    _json_hint: ClassVar[str] = ""  # appended to the unknown-key message

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"A {cls._json_name} must be a JSON object / dict; got {type(data).__name__}.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown {cls._json_name} key(s) {unknown}; expected keys among {known}.{cls._json_hint}"
            )
        return cls(**data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Canonical JSON text (sorted keys); also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike):
        """From a JSON file path or a JSON string (one that starts with '{')."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, where = source, "the JSON text"
        else:
            path = Path(source)
            if not path.is_file():
                raise ValueError(
                    f"{cls._json_name.capitalize()} file {str(path)!r} does not exist; pass a JSON file "
                    f"written by {cls.__name__}.to_json (or a JSON string starting with '{{')."
                )
            text, where = path.read_text(encoding="utf-8"), f"{cls._json_name} file {str(path)!r}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Could not parse {where} as JSON: {exc}.") from exc
        return cls.from_dict(data)
