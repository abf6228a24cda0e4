"""The command line's sharp edges: every output path and every number is refused before any work.

Each refusal must exit with status 2, say what is wrong and how to fix it, and leave no trace: no
model loaded (``load_model`` and the sweep are replaced by functions that fail the test if called),
no folder created, no file replaced.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from obce_core import loading
from obce_core.cli import main
from obce_core.evidence import task_sweep
from obce_core.io import OutputWriteError, write_text_atomic
from obce_core.scoring import NeuronScores
from obce_core.topology import diagrams

ROOT = Path(__file__).resolve().parents[1]


def _no_work(*args, **kwargs):
    raise AssertionError("the command started work although its arguments should have been refused")


@pytest.fixture
def no_work(monkeypatch):
    """Every entry to real work fails the test (replaced where it is defined: each command imports it
    when it runs, so that building the parser loads no torch)."""
    monkeypatch.setattr(loading, "load_model", _no_work)
    monkeypatch.setattr(task_sweep, "sweep_task_model", _no_work)


def _commands(out: str, *, overwrite: bool = False) -> dict[str, list[str]]:
    """Each subcommand that writes, with ``out`` as its output path."""
    extra = ["--overwrite"] if overwrite else []
    return {
        "score": ["score", "--n", "4", "--out", out, *extra],
        "layers": ["layers", "--n", "4", "--out", out, *extra],
        "sweep": ["sweep", "--model", "m", "--task", "sst2", "--csv", out, *extra],
        "export-onnx": ["export-onnx", "default", "--out", out, *extra],
        "prune": ["prune", "--scores", "s.parquet", "--out", out, *extra],
        "finetune": ["finetune", "--task", "sst2", "--out", out, *extra],
    }


FILE_COMMANDS = ["score", "layers", "sweep", "export-onnx"]
DIR_COMMANDS = ["prune", "finetune"]


def _flag(command: str) -> str:
    return "--csv" if command == "sweep" else "--out"


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_existing_file_is_never_replaced_without_overwrite(command, tmp_path, capsys, no_work):
    target = tmp_path / "result.bin"
    target.write_text("keep me")
    assert main(_commands(str(target))[command]) == 2
    err = capsys.readouterr().err
    assert f"{_flag(command)} {str(target)!r} exists; to replace it use --overwrite, or choose another path." in err
    assert "Traceback" not in err and target.read_text() == "keep me"


@pytest.mark.parametrize("command", FILE_COMMANDS + DIR_COMMANDS)
def test_a_missing_parent_folder_is_named_and_never_created(command, tmp_path, capsys, no_work):
    target = tmp_path / "no" / "such" / "result"
    assert main(_commands(str(target))[command]) == 2
    err = capsys.readouterr().err
    assert (f"{_flag(command)} {str(target)!r} cannot be written: its folder {str(target.parent)!r} does not exist; "
            f"create it first (mkdir -p {str(target.parent)!r})") in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_folder_where_a_file_is_wanted_is_refused(command, tmp_path, capsys, no_work):
    assert main(_commands(str(tmp_path))[command]) == 2
    assert f"{str(tmp_path)!r} is a folder; expected a file name" in capsys.readouterr().err


@pytest.mark.parametrize("command", DIR_COMMANDS)
def test_a_folder_obce_did_not_write_is_never_replaced_even_with_overwrite(command, tmp_path, capsys, no_work):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(_commands(str(tmp_path), overwrite=True)[command]) == 2
    assert "holds files obce did not write, so it is never replaced, even with --overwrite" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("command", FILE_COMMANDS + DIR_COMMANDS)
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(command, capsys, no_work):
    # /proc passes os.access for root; only a real probe file tells.
    assert main(_commands("/proc/obce-result")[command]) == 2
    assert "cannot be written: you may not create files in '/proc'" in capsys.readouterr().err


def test_score_out_is_replaced_with_overwrite(tiny_model_dir, tmp_path, capsys):
    target = tmp_path / "scores.parquet"
    target.write_text("an older table")
    assert main(["score", "--model", str(tiny_model_dir), "--n", "4", "--no-cache", "--out", str(target),
                 "--overwrite"]) == 0
    assert NeuronScores.from_parquet(target).n_texts == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["layers", "--max-points", "-5"], "argument --max-points: expected an integer >= 2; got '-5'"),
        (["score", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1; got '0'"),
        (["score", "--n", "1"], "argument --n: expected an integer >= 2; got '1'"),
        (["score", "--memory-budget-gb", "nan"], "argument --memory-budget-gb: expected a finite number > 0; got 'nan'"),
        (["sweep", "--model", "m", "--task", "sst2", "--percentiles", "-5,nan"],
         "argument --percentiles: expected comma-separated percentiles in [0, 100); got '-5' in '-5,nan'"),
        (["sweep", "--model", "m", "--task", "sst2", "--percentiles", "10,nan"],
         "argument --percentiles: expected comma-separated percentiles in [0, 100); got 'nan' in '10,nan'"),
        (["sweep", "--model", "m", "--task", "sst2", "--percentiles", "100"], "got '100' in '100'"),
        (["layers", "--layers", "-1"], "argument --layers: expected comma-separated hidden-state indices >= 0"),
        (["prune", "--scores", "s", "--out", "o", "--ffn", "-10"],
         "argument --ffn: expected a finite number in [0, 100); got '-10'"),
        (["finetune", "--task", "sst2", "--out", "o", "--batch-size", "0"],
         "argument --batch-size: expected an integer >= 1; got '0'"),
        (["glue", "--tasks", "sst2", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1; got '0'"),
    ],
)
def test_numbers_out_of_range_are_refused_when_parsed(argv, message, capsys, no_work):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err, err


def test_layers_pruned_must_be_a_model_folder_before_any_model_runs(tmp_path, capsys, no_work):
    with pytest.raises(SystemExit) as info:
        main(["layers", "--pruned", "BAD"])
    assert info.value.code == 2 and "argument --pruned: Model directory 'BAD' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["layers", "--pruned", str(tmp_path)])
    assert info.value.code == 2 and "has no config.json" in capsys.readouterr().err


def test_layers_out_of_the_model_are_refused_before_the_forward_pass(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(diagrams, "layer_clouds", _no_work)
    out = tmp_path / "d.npz"
    assert main(["layers", "--model", str(tiny_model_dir), "--n", "8", "--layers", "0,99", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    # the tiny model has 2 layers: hidden states 0 (embeddings) to 2
    assert "The 'layers' parameter of layer_diagrams must be an integer in [0, 2]" in err and "Traceback" not in err
    assert not out.exists()


def test_a_dashed_value_from_the_real_command_line_names_the_range(tmp_path):
    # argparse alone reads "-5,10" as an option and says "expected one argument"
    proc = subprocess.run(
        [sys.executable, "-m", "obce_core", "sweep", "--model", "m", "--task", "sst2", "--percentiles", "-5,10"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OBCE_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "expected comma-separated percentiles in [0, 100); got '-5' in '-5,10'" in proc.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_a_failed_write_names_the_target_not_the_temp_file():
    with pytest.raises(OutputWriteError) as info:
        write_text_atomic("/proc/obce-table.csv", pd.DataFrame({"a": [1]}).to_csv())
    message = str(info.value)
    assert message.startswith("Could not write '/proc/obce-table.csv': ") and ".obce-table.csv." not in message
