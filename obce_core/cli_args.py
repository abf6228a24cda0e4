"""Argument types, shared options and the progress bar of the ``python -m obce_core`` subcommands.

Every number a flag takes is checked when the command line is parsed, before any model is loaded:
the ``type=`` functions here raise ``argparse.ArgumentTypeError`` with the valid range, so argparse
prints ``argument --n: expected an integer >= 2; got '0'`` on one line and exits with status 2. What
the machine and the model allow is checked as early: ``--device`` and ``--workers`` against this
machine (``obce_core.machine``) when parsed, ``--max-length`` against the model's config.json right
after (``check_model_limits``). The options
that several subcommands share (``--model``, the texts, ``--overwrite``) and ``CliError`` live
here, so that each subpackage's ``add_parser(subparsers)`` imports them from this module and never
from ``obce_core.cli`` (which imports the subpackages). Output paths are checked by each command's
first line with ``obce_core.io.check_output_path``, before any model is loaded. ``progress_bar``
turns the library's progress events into one tqdm bar on stderr.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Callable

# Imports that reach torch, transformers or tqdm (loading, machine, training.progress) are made inside
# the functions that use them: building the parser, and so `--help`, must not load them (seconds).

__all__ = [
    "CliError", "ObceArgumentParser", "add_device_argument", "add_model_argument", "add_overwrite_argument",
    "add_texts_arguments", "check_model_limits", "device_name", "int_list", "int_range", "model_directory", "name_list",
    "number_list", "number_range", "percent", "progress_bar", "worker_count",
]

# A value that argparse would otherwise read as an option: "-5,10", "-inf", "-nan", "-.5,3".
_DASHED_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


class CliError(Exception):
    """A user-facing failure of a subcommand: printed as one line without a traceback, exit status 2."""


class ObceArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that also reads ``--flag -5,10`` as ``--flag=-5,10``.

    argparse takes a value starting with '-' for an option unless it is one plain negative number,
    so ``--percentiles -5,nan`` would fail with "expected one argument" instead of naming the valid
    range. A dashed value that follows a flag taking one value is joined to it first.
    """

    def parse_known_args(self, args=None, namespace=None):
        args = _join_dashed_values(list(sys.argv[1:] if args is None else args), _value_flags(self))
        return super().parse_known_args(args, namespace)

    def error(self, message):
        """One line, like every other refusal of the command line (argparse would print the usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _value_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (of ``parser`` and every subcommand's parser) that take exactly one value."""
    flags = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                flags |= _value_flags(child)
        elif action.option_strings and action.nargs is None:
            flags.update(action.option_strings)
    return flags


def _join_dashed_values(args: list[str], flags: set[str]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if out and out[-1] in flags and _DASHED_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _bounds(kind: str, low, high, *, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return kind


def _parse_int(text: str, expected: str) -> int:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None


def _parse_number(text: str, expected: str) -> float:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
    return value


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (either end optional)."""
    expected = _bounds("an integer", low, high)

    def parse(text: str) -> int:
        value = _parse_int(text, expected)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def number_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval given (NaN and infinities are refused)."""
    expected = _bounds("a finite number", low, high, low_open=low_open, high_open=high_open)

    def parse(text: str) -> float:
        value = _parse_number(text, expected)
        if ((low is not None and (value <= low if low_open else value < low))
                or (high is not None and (value >= high if high_open else value > high))):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


percent = number_range(0, 100, high_open=True)
percent.__doc__ = "An argparse type: a percentile of units removed, in [0, 100)."


def _list_of(item: Callable[[str], float], what: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, e.g. 0,10,20; got {text!r}")
        values = []
        for part in parts:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {what}; got {part.strip()!r} "
                                                 f"in {text!r}") from None
        return values

    parse.__name__ = "list"
    return parse


def number_list(low: float | None = None, high: float | None = None, *, high_open: bool = False,
                what: str | None = None) -> Callable[[str], list[float]]:
    """An argparse type: comma-separated finite numbers, each in [low, high] (or [low, high))."""
    plural = (what or "numbers") + (" " + _bounds("", low, high, high_open=high_open).strip()
                                    if low is not None or high is not None else "")
    return _list_of(number_range(low, high, high_open=high_open), plural)


def int_list(low: int | None = None, high: int | None = None, *, what: str | None = None) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers, each in [low, high]."""
    plural = (what or "integers") + (" " + _bounds("", low, high).strip() if low is not None or high is not None else "")
    return _list_of(int_range(low, high), plural)


def name_list(text: str) -> list[str]:
    """An argparse type: comma-separated names (blanks dropped); the library checks each name."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return names


def model_directory(text: str) -> str:
    """An argparse type: an existing model folder (with config.json), checked before any model runs."""
    from obce_core.loading import local_model_dir

    try:
        return str(local_model_dir(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_name(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:1, mps), checked before any model loads."""
    from obce_core.machine import check_device

    try:
        return str(check_device(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


device_name.__name__ = "device"


def add_device_argument(parser, help: str = "cpu, cuda, cuda:1 ... (default: cuda when present)") -> None:
    parser.add_argument("--device", type=device_name, help=help)


def worker_count(text: str) -> int:
    """An argparse type: a number of worker processes, at least 1 and at most what the cores and the
    free memory of this machine carry (``machine.max_workers``)."""
    from obce_core.machine import check_workers

    value = int_range(1)(text)
    try:
        return check_workers(value, "")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None


worker_count.__name__ = "integer"


def check_model_limits(args: argparse.Namespace) -> None:
    """What parsing alone cannot check, as soon as the command line is read: a ``--max-length`` longer
    than the model's positions (read from its config.json; a hub id is checked when it loads)."""
    max_length = getattr(args, "max_length", None)
    source = getattr(args, "model", None) if getattr(args, "model", None) is not None else getattr(args, "model_dir", None)
    if max_length is None or source is None:
        return
    from obce_core.loading import check_max_length, model_positions

    try:
        check_max_length(max_length, model_positions(source), source, "--max-length")
    except ValueError as exc:
        raise CliError(str(exc)) from None


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default",
        help="'default' (embedded all-MiniLM-L6-v2), a Hugging Face hub id, or a local model directory",
    )


def add_texts_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--texts", help="a .txt file (one text per line) or a .csv/.tsv with a 'text' or 'sentence' column")
    src.add_argument("--task", help="a GLUE task whose sentences are scored (cola, sst2, mrpc, ...)")
    parser.add_argument("--split", default="validation", help="GLUE split for --task (default: validation)")
    parser.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    parser.add_argument("--n", type=int_range(2), default=512, help="number of texts (at least 2), drawn with --seed (default 512)")
    parser.add_argument("--seed", type=int_range(0), default=0)


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str = "an existing --out") -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def progress_bar(desc: str | None = None, unit: str = "step", *, show: bool = True, per_phase: bool = False):
    """``(tqdm bar on stderr, progress callback)``: a line per phase, a bar of steps (with the loss).

    ``per_phase``: each phase (and each result) also names the bar and starts it again, for work
    whose phases count their own steps (training). ``show=False``: a silent bar (non-main processes).
    """
    from tqdm.auto import tqdm

    from obce_core.training.progress import PhaseEvent, ResultEvent, StepEvent

    bar = tqdm(total=None, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, disable=not show)
    phases = (PhaseEvent, ResultEvent) if per_phase else (PhaseEvent,)

    def progress(event) -> None:
        if isinstance(event, phases) and show:
            bar.write(event.phase, file=sys.stderr)
            if per_phase:
                bar.set_description(event.phase[:40])
                bar.set_postfix_str("", refresh=False)
                bar.reset()
                bar.total = None  # reset(total=None) would keep the last phase's step count
        if isinstance(event, StepEvent):
            if bar.total != event.max_steps:
                bar.reset(total=event.max_steps)
            bar.update(event.step - bar.n)
            if event.loss is not None:
                bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)

    return bar, progress
