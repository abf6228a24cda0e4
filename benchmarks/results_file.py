"""``benchmarks/RESULTS.md``: each benchmark owns one ``## `` section and rewrites only that one.

``write_section(heading, body)`` replaces the section that starts with the line ``heading`` (up
to the next ``## `` heading or the end of the file) with ``body``, or appends ``body`` when the
file has no such section yet; every other section is left as it was.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from obce_core.io import write_text_atomic

__all__ = ["RESULTS", "append_jsonl", "git_commit", "write_section"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Put ``body`` (which starts with the line ``heading``) in place of that section of ``path``."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    write_text_atomic(path, text)


def git_commit() -> str:
    """The short hash of the checkout the benchmark ran on ("unknown" outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_jsonl(path: Path, record: dict) -> None:
    """``record`` as one more JSON line of ``path``; the file is rewritten atomically, so a crash
    never leaves half a line behind."""
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_text_atomic(path, before + json.dumps(record, sort_keys=True) + "\n")


def commands_and_verdict(rows, command: str, note: str | None) -> list[str]:
    """A table section's closing lines: the command, the commit of the last row, the machine's load
    during the runs (rows' ``load``), then the verdict file ``note`` (whoever read the numbers wrote it)."""
    loads = rows["load"].astype(float)
    lines = [f"Commands: {command}; {len(rows)} rows, commit {rows['commit'].iloc[-1]}; machine load (1-min average, "
             f"2 cores shared) {loads.min():.1f}-{loads.max():.1f} during the runs.", ""]
    if note:
        lines += [Path(note).read_text(encoding="utf-8").strip(), ""]
    return lines
