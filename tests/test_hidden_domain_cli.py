"""`prune --hidden` and `domain` on the command line (in-process, tiny models)."""

import pandas as pd
import pytest
import torch

from obce_core import load_model
from obce_core.cli import main
from obce_core.pruning import load_plan
from obce_core.scoring import score_model
from tests.conftest import SENTENCES


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(SENTENCES))
    return path


def test_prune_hidden_writes_a_narrower_model(tmp_path, tiny_model_dir, texts_file, tokenizer, capsys):
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    scores_path = tmp_path / "scores.parquet"
    score_model(model, tok, SENTENCES, use_cache=False).to_parquet(scores_path)
    out = tmp_path / "narrow"
    rc = main(["prune", "--model", str(tiny_model_dir), "--scores", str(scores_path), "--ffn", "20", "--hidden", "25",
               "--hidden-norm", "fitted", "--hidden-texts", str(texts_file), "--out", str(out)])
    assert rc == 0
    assert "stream width 24 -> 18" in capsys.readouterr().out
    again, _ = load_model(str(out), device="cpu")
    assert again.config.hidden_size == 18
    plan = load_plan(out)
    assert (plan.hidden, plan.hidden_norm, plan.ffn) == (25, "fitted", 20)
    with torch.no_grad():
        assert again(**tok(SENTENCES[:2], padding=True, return_tensors="pt")).last_hidden_state.shape[-1] == 18


def test_prune_hidden_bad_inputs_fail_before_writing(tmp_path, tiny_model_dir, capsys):
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    scores_path = tmp_path / "scores.parquet"
    score_model(model, tok, SENTENCES, use_cache=False).to_parquet(scores_path)
    base = ["prune", "--model", str(tiny_model_dir), "--scores", str(scores_path), "--out", str(tmp_path / "o")]
    assert main(base + ["--hidden", "96"]) == 2  # 23 of 24 dims: one left
    assert "keeps 1" in capsys.readouterr().err
    assert main(base + ["--hidden", "10", "--scorer", "flap"]) == 2
    assert "scorer" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text('{"ffn": 10}')
    assert main(base + ["--plan", str(plan), "--hidden", "10"]) == 2
    assert "--plan cannot be combined with --hidden" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_domain_command(tmp_path, tiny_model_dir, texts_file, capsys):
    csv = tmp_path / "domain.csv"
    rc = main(["domain", "--model", str(tiny_model_dir), "--source-a", str(texts_file), "--source-b", "demo",
               "--n", "12", "--scorers", "rf,std", "--percents", "30,50", "--csv", str(csv)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "split-half" in printed and "spearman_drop" in printed
    table = pd.read_csv(csv)
    assert set(table["percent"]) == {30.0, 50.0} and set(table["scorer"]) == {"rf", "std"}
    assert (table["n"] == 6).all()  # two disjoint halves of the 12 texts of A


def test_domain_command_refuses_equal_sources(tmp_path, tiny_model_dir, texts_file, capsys):
    assert main(["domain", "--model", str(tiny_model_dir), "--source-a", "demo", "--source-b", "demo"]) == 2
    assert "both 'demo'" in capsys.readouterr().err
    copy = tmp_path / "copy.txt"
    copy.write_text(texts_file.read_text())
    assert main(["domain", "--model", str(tiny_model_dir), "--source-a", str(texts_file),
                 "--source-b", str(copy)]) == 2
    assert "hold the same 12 texts" in capsys.readouterr().err
