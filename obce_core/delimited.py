"""The one reader of the CSV/TSV files obce reads (texts, sentence pairs, GLUE splits) and its quoting rule.

One rule for every such file, by its suffix:

* ``.tsv``: tab-separated, no quoting at all (``csv.QUOTE_NONE``): a ``"`` is part of the text.
  GLUE's files hold unbalanced quotes, and a quote-aware reader would merge the rows after one.
* ``.csv``: standard CSV quoting, strictly: a field may be quoted whole (``"a, b"``, inner quotes
  doubled), but a quoted field that runs past its line, or text after a closing quote, is refused
  by file and line. Texts never hold line breaks, so such a field is a stray quote that would
  silently swallow the rows after it.

A field may hold up to ``MAX_FIELD_CHARS`` characters (``csv``'s own limit of 131,072 is raised to
that for the whole process when this module is imported); a longer one is refused by file and line.
"""

from __future__ import annotations

import csv
from typing import Iterable, Iterator

__all__ = ["DELIMITED_SUFFIXES", "MAX_FIELD_CHARS", "delimited_rows"]

DELIMITED_SUFFIXES = (".csv", ".tsv")
MAX_FIELD_CHARS = 64 * 2**20  # 64 Mi characters: a 50 MB line of text still reads (and scores as its prefix)
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))


def delimited_rows(lines: Iterable[str], name: str, suffix: str, *,
                   error: type[Exception] = ValueError) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each row of the .csv/.tsv text ``lines`` (a file opened with
    ``newline=''`` or ``content.splitlines(keepends=True)``), read by the rule of the module docstring;
    blank lines give ``[]``. ``error`` (called with one message naming ``name`` and the line) is raised
    for a row that breaks the rule."""
    suffix = suffix.lower()
    if suffix not in DELIMITED_SUFFIXES:
        raise ValueError(f"delimited_rows reads {DELIMITED_SUFFIXES} files; got {suffix!r} for {name}.")
    if suffix == ".tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(lines, delimiter=",", strict=True)
    before = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = before + 1  # where the row that failed began
            if "field larger than field limit" in str(exc):
                raise error(f"{name}, line {line}: a field holds more than {MAX_FIELD_CHARS:,} characters, "
                            "obce's limit for one text. Shorten or remove that line.") from None
            runs_on = f", a quoted field running on to line {reader.line_num}" if reader.line_num > line else ""
            raise error(f"{name}, line {line}: not valid CSV ({exc}{runs_on}). {_QUOTE_FIX}") from None
        first, before = before + 1, reader.line_num
        if before > first and row:
            raise error(f"{name}, line {first}: a quoted field starts there and runs on to line {before}, which "
                        f"would merge {before - first + 1} lines into one text. {_QUOTE_FIX}")
        yield first, row


_QUOTE_FIX = ('A text that begins with a quote must be quoted whole with its quotes doubled ("""Hi,"" she said"), '
              "or save the texts as .tsv (no quoting) or .txt (one text per line).")
