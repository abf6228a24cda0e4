"""JSON round trips for obce's settings dataclasses (plans, recipes, job specs, score settings).

One mixin so every settings class reads, writes and rejects unknown keys the same way, with the
same messages. A subclass names itself in ``_json_name`` (used in messages) and overrides
``to_dict``/``from_dict`` only where a field needs more than ``dataclasses.asdict``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar

__all__ = ["JsonDataclass", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
