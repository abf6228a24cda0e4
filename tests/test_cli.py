"""The CLI end to end: a real subprocess for the main path, in-process calls for errors."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from obce_core import NeuronScores
from obce_core.cli import main
from tests.conftest import GLUE_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_score_default_model_writes_table(tmp_path):
    out = tmp_path / "scores.parquet"
    env = {**os.environ, "OBCE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "obce_core", "score", "--model", "default", "--n", "24", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "obce demo corpus" in proc.stderr and "capture" in proc.stderr  # source named, progress shown
    scores = NeuronScores.from_parquet(out)
    assert len(scores.table) == 6 * (384 * 5 + 1536) and scores.n_texts == 24
    # the printed summary has one line per layer x component, with the 384 zero-rf ties at layer 0
    lines = [line.split() for line in proc.stdout.splitlines()]
    layer0_query = next(line for line in lines if line[:2] == ["0", "query"])
    assert layer0_query[2] == "384" and layer0_query[-1] == "384"


def test_score_glue_task(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    rc = main(["score", "--task", "rte", "--glue-dir", str(GLUE_DIR), "--n", "8", "--out", str(out)])
    assert rc == 0
    s = NeuronScores.from_parquet(out)
    assert s.n_texts == 8
    assert "GLUE rte validation" in capsys.readouterr().err


def test_score_texts_file(tmp_path):
    f = tmp_path / "t.csv"
    pd.DataFrame({"id": [1, 2, 3], "sentence": ["one text", "another one", "a third"]}).to_csv(f, index=False)
    assert main(["score", "--texts", str(f), "--n", "3", "--no-cache"]) == 0


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["score", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", "--texts", str(tmp_path / "none.txt")]) == 2
    assert "Texts file" in capsys.readouterr().err
    assert main(["score", "--task", "sst2", "--glue-dir", str(tmp_path)]) == 2
    assert "SST-2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # refused by argparse, before any texts are read
        main(["score", "--n", "1"])
    assert info.value.code == 2 and "argument --n: expected an integer >= 2; got '1'" in capsys.readouterr().err
    assert main(["score", "--n", "4", "--token", "all", "--memory-budget-gb", "0.00001"]) == 2
    assert "memory budget" in capsys.readouterr().err
