"""How long ``python -m obce_core --help`` and each ``<command> --help`` take, from a fresh interpreter.

Target (issue 24): under 1.5 s wall on a quiet machine, with no torch/transformers import on that path
(``tests/test_cli_light.py`` checks the imports). Each command runs ``--repeats`` times in a child
process; the median wall time and the child's user CPU are printed with the machine's load, and
written to benchmarks/RESULTS.md with ``--write``. ``--before DIR`` also times the top-level ``--help``
of another checkout's ``obce_core`` (``git archive <commit> obce_core | tar -x -C DIR``), twice: the
import-everything version costs seconds of CPU per run.

    python benchmarks/bench_cli_help.py [--repeats 5] [--before DIR] [--write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from results_file import git_commit, write_section

COMMANDS = ["", "score", "prune", "glue", "finetune", "export-onnx", "sweep", "layers", "search", "attribution",
            "domain"]
HEADING = "## `python -m obce_core --help` without torch (issue 24, defect 12)"


def time_help(command: str, repeats: int, pythonpath: str | None) -> tuple[float, float]:
    """(median wall s, median user CPU s) of ``python -m obce_core [command] --help`` (run from
    ``pythonpath``, whose obce_core then comes first on the path)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "obce_core", *([command] if command else []), "--help"], check=True,
                       stdout=subprocess.DEVNULL, env=env, cwd=pythonpath or None)
        walls.append(time.perf_counter() - start)
        cpus.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", metavar="DIR", help="also time `--help` of the obce_core in this folder")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    if args.before:
        wall, cpu = time_help("", 2, args.before)
        rows.append(("(none), before: the --before checkout", wall, cpu))
        print(f"before       {wall:6.2f} s wall {cpu:6.2f} s user CPU", flush=True)
    for command in COMMANDS:
        wall, cpu = time_help(command, args.repeats, None)
        rows.append((command or "(none)", wall, cpu))
        print(f"{command or '(none)':12s} {wall:6.2f} s wall {cpu:6.2f} s user CPU", flush=True)
    after = os.getloadavg()
    worst = max(wall for name, wall, _ in rows if "before" not in name)
    lines = [HEADING, "", f"`python benchmarks/bench_cli_help.py --repeats {args.repeats}"
             + (" --before DIR" if args.before else "") + f"`, commit {git_commit()} plus the working tree, "
             f"load average {load[0]:.2f} at the start, {after[0]:.2f} at the end (2 cores). Median of "
             f"{args.repeats} fresh interpreters per command (the before row: of 2):", "",
             "| `python -m obce_core ... --help` | wall (s) | user CPU (s) |", "|---|---:|---:|"]
    lines += [f"| {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in rows]
    lines += ["", f"Slowest: {worst:.2f} s. Target (under 1.5 s on a quiet machine): "
              + ("met" if worst < 1.5 else "missed") + " on this machine at this load."]
    print("\n".join(lines))
    if args.write:
        write_section(HEADING, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
