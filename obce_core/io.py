"""Files written safely, and JSON round trips for obce's dataclasses.

Every file or directory obce writes goes through one of the atomic writers here (temp file or
temp directory beside the target, then a rename), so a crash never leaves a half-written file.
``JsonDataclass`` is the one JSON round trip for settings and records (plans, recipes, job specs,
score settings, run results): every class reads, writes and rejects unknown keys the same way,
with the same messages. A subclass names itself in ``_json_name`` (used in messages) and overrides
``to_dict``/``from_dict`` only where a field needs more than ``dataclasses.asdict``.

``check_output_path`` is the one rule for a path the user asks obce to write (every CLI ``--out``,
``--csv``): it is checked before any slow work, never creates folders and never replaces anything
without ``--overwrite``. A write that fails later raises ``OutputWriteError`` naming the user's
path, not the temp file beside it. Published files and folders get the user's umask like any
other file (``mkstemp``/``mkdtemp`` alone would make them private to the writer).

``load_json``/``read_json`` are the one way obce reads JSON it did not write in this process (plan
files, a scores file's metadata, a model's config.json, a dashboard link's values): nesting deeper
than ``MAX_JSON_DEPTH`` is refused by name before the parser recurses. ``append_json_line`` and
``read_json_lines`` keep a cache of rows that survives a torn line (a run killed mid-write).
"""

from __future__ import annotations

import dataclasses
import json
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, ClassVar, Iterator

__all__ = ["MAX_JSON_DEPTH", "JsonDataclass", "JsonInputError", "OutputPathError", "OutputWriteError",
           "append_json_line", "atomic_path", "check_output_path", "load_json", "publish_directory", "read_json",
           "read_json_lines", "user_mode", "write_text_atomic"]

OUTPUT_KINDS = ("file", "dir")


class OutputPathError(ValueError):
    """An output path that may not be written; the message names the flag, the path and the fix."""


class OutputWriteError(OSError):
    """Writing an output failed part way; nothing was left behind. Names the target, not a temp file."""

    def __init__(self, target: Path, reason: str):
        self.target, self.reason = Path(target), reason
        super().__init__(f"Could not write {str(target)!r}: {reason}; nothing was written. Check the "
                         "folder's free space and permissions, or choose another path.")


def _reason(exc: OSError) -> str:
    # strerror leaves out the file name, which for these writers is an internal temp path.
    if isinstance(exc, OutputWriteError):
        return exc.reason
    return exc.strerror or str(exc) or type(exc).__name__


def check_output_path(path: str | os.PathLike, *, overwrite: bool, kind: str = "file", flag: str = "--out",
                      may_replace: Callable[[Path], bool] | None = None, suffix: str | None = None,
                      option: str = "--overwrite", elsewhere: str = "choose another path") -> Path:
    """``path`` as a ``Path`` if obce may write it; else ``OutputPathError`` saying what to do.

    Refused: an empty path; a directory where a file is wanted (``kind="file"``) or a file where a
    directory is wanted (``kind="dir"``); an existing file, or a non-empty directory, without
    ``overwrite``; with ``overwrite``, a non-empty directory that ``may_replace`` does not accept
    (e.g. a folder obce did not write); a missing parent folder (never created here: the user
    runs ``mkdir -p``); a parent that is not a folder or that cannot be written to (checked with
    ``os.access`` and a real probe file, since /proc and read-only mounts pass ``os.access``
    for root). ``suffix``: the file name must end in it (e.g. ".parquet"). ``flag`` and ``option``
    name the path and the overwrite switch in messages, ``elsewhere`` the other way out (the
    dashboard names its own widgets).
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"check_output_path's kind must be one of {OUTPUT_KINDS}; got {kind!r}.")
    text = os.fspath(path) if path is not None else ""
    if not str(text).strip():
        raise OutputPathError(f"{flag} is empty; give the {'file' if kind == 'file' else 'folder'} to write.")
    target = Path(text).expanduser()
    name = f"{flag} {str(target)!r}"
    other = elsewhere
    if suffix is not None and target.suffix != suffix:
        raise OutputPathError(f"{name} should end in {suffix}; e.g. {str(target.with_suffix(suffix))!r}.")
    if target.is_dir() and kind == "file":
        raise OutputPathError(f"{name} is a folder; expected a file name, e.g. {str(target / ('out' + (suffix or '')))!r}.")
    if target.exists() and not target.is_dir() and kind == "dir":
        raise OutputPathError(f"{name} is a file; expected a folder: {other}.")
    if target.exists():
        empty_dir = target.is_dir() and not any(target.iterdir())
        if not empty_dir and not overwrite:
            what = "is a folder that is not empty" if target.is_dir() else "exists"
            raise OutputPathError(f"{name} {what}; to replace it use {option}, or {other}.")
        if not empty_dir and kind == "dir" and may_replace is not None and not may_replace(target):
            raise OutputPathError(f"{name} holds files obce did not write, so it is never replaced, even with "
                                  f"{option}; {other}.")
    parent = target.parent
    if not parent.exists():
        raise OutputPathError(f"{name} cannot be written: its folder {str(parent)!r} does not exist; create it "
                              f"first (mkdir -p {str(parent)!r}) or {other}.")
    if not parent.is_dir():
        raise OutputPathError(f"{name} cannot be written: {str(parent)!r} is not a folder; {other}.")
    if not os.access(parent, os.W_OK | os.X_OK) or not _can_create_in(parent):
        raise OutputPathError(f"{name} cannot be written: you may not create files in {str(parent)!r}; {other}.")
    return target


def _umask() -> int:
    """This process's umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def user_mode(directory: bool = False) -> int:
    """The mode a file (or folder) created by ``open``/``mkdir`` gets under the user's umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created (and removed) in ``folder``: what every writer here does."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".obce-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path``, on error removed.

    For writers that want a file name (``pq.write_table``, ``np.save`` with a file object, ...).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.fchmod(fd, user_mode())  # mkstemp makes 0600; a published file reads like its neighbours
    except OSError as exc:
        raise OutputWriteError(path, _reason(exc)) from exc
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputWriteError(path, _reason(exc)) from exc
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


MAX_JSON_DEPTH = 64  # far above any file obce reads (a model's config.json nests 3 levels)
# A JSON string, escapes included: its brackets are text, not nesting.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonInputError(ValueError):
    """JSON that obce will not read: malformed, nested too deep, or not the kind of value expected."""


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit``; stops at the first level past it."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        if depth > limit:
            return True
    return False


def load_json(text: str | bytes, where: str, *, expect: type | None = None):
    """``text`` parsed as JSON; ``JsonInputError`` naming ``where`` when it is not JSON, nests deeper than
    ``MAX_JSON_DEPTH`` (checked before parsing: the parser would recurse until Python's stack runs out),
    or is not an ``expect`` (``dict``: "a JSON object", ``list``: "a JSON array")."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"{where} is not UTF-8 text ({exc}); save it as UTF-8 JSON.") from exc
    if _json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise JsonInputError(f"{where} nests arrays/objects more than {MAX_JSON_DEPTH} levels deep; obce reads "
                             f"JSON nested at most {MAX_JSON_DEPTH} levels (nothing obce writes comes near that).")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JsonInputError(f"Could not parse {where} as JSON: {exc}.") from exc
    if expect is not None and not isinstance(data, expect):
        kind = {dict: "a JSON object ({...})", list: "a JSON array ([...])"}.get(expect, expect.__name__)
        raise JsonInputError(f"{where} holds a JSON {type(data).__name__}; expected {kind}.")
    return data


def read_json(path: str | os.PathLike, what: str = "JSON file", *, expect: type | None = None):
    """The JSON in file ``path`` (see ``load_json``); errors name ``what`` and the path."""
    where = f"{what} {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise JsonInputError(f"{where} is a folder; expected a JSON file.") from exc
    return load_json(raw, where, expect=expect)


def append_json_line(path: str | os.PathLike, row: dict, *, sort_keys: bool = True) -> None:
    """Append ``row`` as one line of the JSON-lines file ``path`` (created with the user's umask).

    A run killed mid-write leaves a torn last line with no newline; this row then starts on a line
    of its own, so the torn line alone is lost (``read_json_lines`` skips it) and never this row.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, sort_keys=sort_keys) + "\n"
    with open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode("utf-8"))  # one write: appends from several processes do not interleave
        fh.flush()


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON-lines file, in order; torn, blank or foreign lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = load_json(line, f"a line of {path}", expect=dict)
        except JsonInputError:
            continue  # a line cut short by a crash: its row is evaluated again
        rows.append(row)
    return rows


def _give_user_modes(folder: Path) -> None:
    """The user's umask on ``folder`` and everything in it: mkdtemp makes 0700, and some writers (transformers'
    model.safetensors) 0600 files, where a published folder must read like any other (e.g. to a server)."""
    file_mode, dir_mode = user_mode(), user_mode(directory=True)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), dir_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # an executable stays executable, by whoever may read it
                os.chmod(path, dir_mode if os.stat(path).st_mode & 0o100 else file_mode)
    os.chmod(folder, dir_mode)


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
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    except OSError as exc:
        raise OutputWriteError(directory, _reason(exc)) from exc
    old = None
    try:
        fill(tmp)
        _give_user_modes(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / "d")
        os.replace(tmp, directory)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "d").exists() and not directory.exists():
            os.replace(old / "d", directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputWriteError(directory, _reason(exc)) from exc
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
            text, where = path.read_bytes(), f"{cls._json_name} file {str(path)!r}"
        return cls.from_dict(load_json(text, where))
