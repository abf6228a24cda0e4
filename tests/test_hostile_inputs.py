"""Hostile and careless inputs: issue 10, one test per item (``test_item<N>_...``), and issue 26, one per
defect of its hostile trial (``test_defect<N>_...``, ``test_also_...``, and the real command line and the
dashboard for a sample)."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from obce_core import NeuronScores, ScoresFileError, glue, score_model
from obce_core.cli import main
from obce_core.delimited import MAX_FIELD_CHARS
from obce_core.evidence.pairs import PairsError, read_pairs
from obce_core.evidence.parallel import PlanPool
from obce_core.evidence.sweep import _append_row, read_sweep
from obce_core.export import ONNX_MAX_OPSET, export_onnx
from obce_core.io import MAX_JSON_DEPTH, append_json_line, publish_directory, read_json_lines, write_text_atomic
from obce_core.loading import ModelLoadError, load_model
from obce_core.pruning import PLAN_FILE, PruningPlan, prune, save_pruned
from obce_core.scoring import TRUNCATE_CHARS_PER_TOKEN, ScoreSettings
from obce_core.scoring.texts import TextsError, read_texts
from tests.conftest import GLUE_DIR, make_tiny_bert, needs_glue, save_tiny_bert

# -- item 1: two sessions scoring one shared model ----------------------------------------------


def test_item1_threads_scoring_one_shared_model_get_their_solo_results(tiny_bert, tokenizer, sentences, tmp_path):
    texts = {
        "a": list(sentences),
        "b": [s.upper() + " Then it ended." for s in reversed(sentences)] + ["One more.", "And the last one."],
    }
    # batch_size 2: many forward passes per call, so the two calls interleave
    solo = {k: score_model(tiny_bert, tokenizer, t, batch_size=2, use_cache=False) for k, t in texts.items()}
    for repeat in range(4):
        cache = tmp_path / f"cache{repeat}"
        barrier = threading.Barrier(2)
        results, errors = {}, []

        def work(name):
            try:
                barrier.wait()
                results[name] = score_model(tiny_bert, tokenizer, texts[name], batch_size=2, cache_dir=cache)
            except Exception as exc:  # reported below; a thread's exception would otherwise vanish
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(name,)) for name in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for name in texts:
            assert np.array_equal(results[name].activations, solo[name].activations)
            pd.testing.assert_frame_equal(results[name].table, solo[name].table)
        # and the cache holds each run's own scores, under its own texts
        entries = {NeuronScores.load(e).texts_fingerprint: NeuronScores.load(e) for e in (cache / "scores").iterdir()}
        assert len(entries) == 2
        for name in texts:
            cached = entries[solo[name].texts_fingerprint]
            assert np.array_equal(cached.activations, solo[name].activations)
            pd.testing.assert_frame_equal(cached.table, solo[name].table)


# -- item 5: tampered scores files --------------------------------------------------------------


@pytest.fixture
def scores_file(tiny_bert, tokenizer, sentences, tmp_path):
    return score_model(tiny_bert, tokenizer, sentences, use_cache=False).to_parquet(tmp_path / "scores.parquet")


def _tamper(path, *, column=None, row=3, value=None, drop_key=None):
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    table = arrow.to_pandas()
    if column is not None:
        table.loc[row, column] = value
    if drop_key is not None:
        obce = json.loads(meta[b"obce"])
        del obce[drop_key]
        meta[b"obce"] = json.dumps(obce).encode()
    out = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(out.replace_schema_metadata(meta), path)
    return path


@pytest.mark.parametrize(
    "column, value, field",
    [
        ("mean", float("nan"), "mean"),
        ("mean", 1e30, "mean"),  # finite, yet folded into a bias it overflows every output
        ("mean", -float("inf"), "mean"),
        ("std", -0.5, "std"),
        ("rf", float("nan"), "rf"),
        ("rf", -0.25, "rf"),  # a negated rf would rank the unit first
        ("rf", 2e6, "rf"),
    ],
)
def test_item5_tampered_statistics_are_refused(scores_file, column, value, field):
    _tamper(scores_file, column=column, value=value)
    with pytest.raises(ScoresFileError) as info:
        NeuronScores.from_parquet(scores_file)
    message = str(info.value)
    assert str(scores_file) in message and f"field {field!r}" in message


@pytest.mark.parametrize("key", ["model_fingerprint", "texts_fingerprint", "settings", "n_texts", "n_samples"])
def test_item5_missing_metadata_is_refused(scores_file, key):
    _tamper(scores_file, drop_key=key)
    with pytest.raises(ScoresFileError, match=rf"{str(scores_file)!r}.*field '{key}' is missing"):
        NeuronScores.from_parquet(scores_file)


def test_item5_untampered_file_still_loads(scores_file):
    assert len(NeuronScores.from_parquet(scores_file).table) == 2 * (24 * 4 + 37 + 24)


def test_item5_cache_entry_with_wrong_activation_shape_is_refused(tiny_bert, tokenizer, sentences, tmp_path):
    scores = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)
    (entry,) = (tmp_path / "scores").iterdir()
    np.save(entry / "activations.npy", scores.activations[:-1])
    with pytest.raises(ScoresFileError, match="field 'activations' has shape"):
        NeuronScores.load(entry)
    again = score_model(tiny_bert, tokenizer, sentences, cache_dir=tmp_path)  # recomputed, not served
    assert np.array_equal(again.activations, scores.activations)


# -- item 7: huge texts and memory budgets -----------------------------------------------------


def test_item7_a_50_mb_line_scores_in_seconds_as_its_prefix(tiny_bert, tokenizer, sentences):
    huge = ("lorem ipsum dolor sit amet, " * 2_000_000)[: 50 * 2**20]  # one 50 MB line
    start = time.perf_counter()
    scores = score_model(tiny_bert, tokenizer, [huge, *sentences], use_cache=False)
    elapsed = time.perf_counter() - start
    prefix = score_model(tiny_bert, tokenizer, [huge[: TRUNCATE_CHARS_PER_TOKEN * 128], *sentences], use_cache=False)
    assert elapsed < 30, f"scoring took {elapsed:.1f} s"
    assert np.array_equal(scores.activations, prefix.activations)
    pd.testing.assert_frame_equal(scores.table, prefix.table)


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 0, -1.0, "4"])
def test_item7_memory_budget_must_be_finite_and_positive(tiny_bert, tokenizer, sentences, budget):
    with pytest.raises(ValueError, match=r"The 'memory_budget_gb' parameter of score_model must be a finite number > 0"):
        score_model(tiny_bert, tokenizer, sentences, memory_budget_gb=budget)


def test_item7_score_settings_use_the_one_message_template():
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of ScoreSettings must be an integer >= 1; got 0"):
        ScoreSettings(batch_size=0)


# ===============================================================================================
# Issue 26: the twelve defects of a hostile trial, named ``test_defect<N>_...`` (``test_also_...``
# for the four smaller ones). Each asserts the exact refusal (or the faithful read) and that the
# inputs and outputs on disk are intact. Oracles: the texts written by hand, file bytes and modes
# before and after, the process table (psutil), the model's own config (512 positions).
# ===============================================================================================

ROOT = Path(__file__).resolve().parents[1]
MEGABYTE_TEXT = "word " * (2**20 // 5)  # one ~1 MB field: above csv's own limit of 131,072 characters
DEEP = "[" * 5000 + "]" * 5000  # JSON nested far past MAX_JSON_DEPTH (and past Python's recursion limit)
PAIRS = [("A cat sits.", "A cat is sitting.", 4.8), ("A man runs.", "The sky is blue.", 0.2),
         ("Dogs bark.", "A dog barks loudly.", 3.9), ("He reads.", "She cooks dinner.", 0.9),
         ("It rains.", "Rain is falling.", 4.6), ("I am hungry.", "The train left.", 0.1),
         ("Kids play.", "Children are playing.", 4.7), ("Birds fly.", "A car stops.", 0.5),
         ("We sing.", "They are singing.", 3.2), ("The sun is hot.", "Ice is cold.", 1.4)]


def _run_main(argv, capsys) -> tuple[int, str]:
    """``main(argv)``'s exit status (argparse's SystemExit included) and its stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A private workspace and cache, the hub off: what the trial ran with."""
    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("OBCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def tiny_dir(tmp_path, tokenizer):
    return save_tiny_bert(tmp_path / "tiny", tokenizer)


# -- defect 1: a 1 MB field ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_defect1_a_1_mb_field_in_a_texts_file_is_read_whole(tmp_path, suffix):
    path = tmp_path / f"texts{suffix}"
    path.write_text(f"text\nA short one.\n{MEGABYTE_TEXT}\nThe last one.\n", encoding="utf-8")
    assert read_texts(path) == ["A short one.", MEGABYTE_TEXT.strip(), "The last one."]


def test_defect1_a_1_mb_field_in_a_pairs_file_and_a_glue_split_is_read_whole(tmp_path):
    rows = [*PAIRS[:-1], (MEGABYTE_TEXT.strip(), "A long one.", 2.5)]
    pairs_path = tmp_path / "pairs.tsv"
    pairs_path.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows),
                          encoding="utf-8")
    pairs = read_pairs(pairs_path)
    assert pairs.first == tuple(a for a, _, _ in rows) and pairs.score == tuple(s for _, _, s in rows)
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "dev.tsv").write_text(f"sentence\tlabel\ngood film .\t1\n{MEGABYTE_TEXT}\t0\nbad film .\t0\n",
                                  encoding="utf-8")
    data = glue.load_task("sst2", "validation", tmp_path / "glue")
    assert data["sentence"] == ["good film .", MEGABYTE_TEXT, "bad film ."] and data["label"] == [1, 0, 0]


def test_defect1_a_field_past_obces_limit_is_refused_by_file_and_line(tmp_path, monkeypatch):
    import obce_core.delimited as delimited

    old = csv.field_size_limit()
    monkeypatch.setattr(delimited, "MAX_FIELD_CHARS", 1000)  # a stand-in limit: 64 Mi characters in a test is slow
    csv.field_size_limit(1000)
    try:
        path = tmp_path / "texts.tsv"
        path.write_text("text\nfine\n" + "x" * 1001 + "\nfine too\n", encoding="utf-8")
        with pytest.raises(TextsError, match=r"texts.tsv, line 3: a field holds more than 1,000 characters"):
            read_texts(path)
    finally:
        csv.field_size_limit(old)
    assert csv.field_size_limit() >= MAX_FIELD_CHARS


def test_defect1_score_reads_a_1_mb_field_through_the_cli(cli_env, tiny_dir, capsys):
    path = cli_env / "texts.tsv"
    path.write_text(f"sentence\nA short one.\n{MEGABYTE_TEXT}\nThe last one.\n", encoding="utf-8")
    code, err = _run_main(["score", "--model", tiny_dir, "--texts", path, "--no-cache"], capsys)
    assert code == 0, err
    assert "Scoring 3 texts" in err


# -- defect 2: a quote that would merge rows ----------------------------------------------------

MERGING_CSV = 'text\nThe first.\nThe second.\nThe third.\n"The fourth starts a quote.\nThe fifth.\nThe sixth.\n'


def test_defect2_a_csv_quote_that_would_merge_rows_is_refused_by_line(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text(MERGING_CSV, encoding="utf-8")
    with pytest.raises(TextsError) as refused:
        read_texts(path)
    message = str(refused.value)
    assert message.startswith("texts.csv, line 5: ") and "quoted field running on to line 7" in message
    assert '"""Hi,"" she said"' in message  # the fix: how to quote a text that begins with a quote
    # A text quoted whole (inner quotes doubled) is one text; a .tsv keeps the quote as text.
    path.write_text('text\nThe first.\n"""Hi,"" she said."\nThe third.\n', encoding="utf-8")
    assert read_texts(path) == ["The first.", '"Hi," she said.', "The third."]
    tsv = tmp_path / "texts.tsv"
    tsv.write_text(MERGING_CSV, encoding="utf-8")
    assert len(read_texts(tsv)) == 6 and read_texts(tsv)[3] == '"The fourth starts a quote.'


def test_defect2_the_pairs_csv_reader_refuses_the_same_quote(tmp_path):
    path = tmp_path / "pairs.csv"
    lines = [f"{a},{b},{s}" for a, b, s in PAIRS]
    lines[3] = '"' + lines[3]
    path.write_text("sentence1,sentence2,score\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PairsError, match=r"pairs.csv, line 5: "):
        read_pairs(path)


def test_defect2_score_refuses_the_merging_file_and_leaves_it_as_it_was(cli_env, tiny_dir, capsys):
    path = cli_env / "texts.csv"
    path.write_text(MERGING_CSV, encoding="utf-8")
    out = cli_env / "scores.parquet"
    code, err = _run_main(["score", "--model", tiny_dir, "--texts", path, "--out", out, "--no-cache"], capsys)
    assert code == 2 and err.startswith("error: texts.csv, line 5: ") and err.count("\n") == 1
    assert path.read_text(encoding="utf-8") == MERGING_CSV and not out.exists()


# -- defect 3: --device -------------------------------------------------------------------------

_BAD_DEVICES = ["tpu", "garbage!!", "", "meta", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
_COMMANDS_WITH_DEVICE = {
    "score": ["score"],
    "prune": ["prune", "--scores", "s.parquet", "--out", "o"],
    "sweep": ["sweep", "--model", "m"],
    "layers": ["layers"],
    "finetune": ["finetune", "--task", "sst2", "--out", "o"],
    "glue": ["glue", "--tasks", "sst2"],
    "search": ["search", "--model", "m", "--task", "sst2", "--out", "o"],
}


@pytest.mark.parametrize("command", sorted(_COMMANDS_WITH_DEVICE))
@pytest.mark.parametrize("device", _BAD_DEVICES)
def test_defect3_a_device_this_machine_lacks_is_refused_when_parsed(cli_env, capsys, command, device):
    code, err = _run_main([*_COMMANDS_WITH_DEVICE[command], "--device", device], capsys)
    assert code == 2
    assert f"error: argument --device: device {device!r}" in err and "cpu" in err.splitlines()[-1]
    assert not (cli_env / "ws").exists()  # glue stored no failed job: nothing was started


# -- defect 4: --max-length above the model's positions ------------------------------------------


@pytest.mark.parametrize("argv", [["score"], ["layers"], ["export-onnx", "default", "--out", "{tmp}/m.onnx"]])
@pytest.mark.parametrize("length", [513, 100000])
def test_defect4_max_length_above_the_models_positions_is_refused_first(cli_env, capsys, argv, length):
    argv = [a.replace("{tmp}", str(cli_env)) for a in argv]
    code, err = _run_main([*argv, "--max-length", length], capsys)
    assert code == 2
    assert err == (f"error: --max-length {length} is longer than model 'default' reads: it has 512 positions "
                   "(max_position_embeddings). Use --max-length 512 or less.\n")
    assert not (cli_env / "m.onnx").exists()


# -- defect 5: deeply nested JSON ----------------------------------------------------------------


def test_defect5_a_deep_plan_file_is_refused_by_name(cli_env, tiny_dir, tiny_bert, tokenizer, sentences, capsys):
    scores = score_model(tiny_bert, tokenizer, sentences, use_cache=False).to_parquet(cli_env / "s.parquet")
    plan = cli_env / "plan.json"
    plan.write_text(DEEP, encoding="utf-8")
    out = cli_env / "pruned"
    code, err = _run_main(["prune", "--model", tiny_dir, "--scores", scores, "--plan", plan, "--out", out], capsys)
    assert code == 2
    assert err == (f"error: pruning plan file {str(plan)!r} nests arrays/objects more than {MAX_JSON_DEPTH} levels deep; "
                   f"obce reads JSON nested at most {MAX_JSON_DEPTH} levels (nothing obce writes comes near that).\n")
    assert plan.read_text(encoding="utf-8") == DEEP and not out.exists()


def test_defect5_deep_json_in_scores_metadata_and_a_config_is_refused(scores_file, tmp_path, tokenizer):
    arrow = pq.read_table(scores_file)
    pq.write_table(arrow.replace_schema_metadata({**arrow.schema.metadata, b"obce": DEEP.encode()}), scores_file)
    with pytest.raises(ScoresFileError, match=rf"{str(scores_file)!r}.*more than {MAX_JSON_DEPTH} levels"):
        NeuronScores.from_parquet(scores_file)
    folder = save_tiny_bert(tmp_path / "deep-config", tokenizer)
    (folder / "config.json").write_text('{"a": ' * 3000 + "1" + "}" * 3000, encoding="utf-8")
    with pytest.raises(ModelLoadError, match=rf"model config '.*config.json' nests .* {MAX_JSON_DEPTH} levels"):
        load_model(folder)


# -- defect 6: a config.json that is not an object -----------------------------------------------


def test_defect6_a_config_that_is_a_list_is_refused(cli_env, tokenizer, capsys):
    folder = save_tiny_bert(cli_env / "list-config", tokenizer)
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")
    before = _snapshot(folder)
    with pytest.raises(ModelLoadError, match=r"config.json' holds a JSON list; expected a JSON object"):
        load_model(folder)
    for argv in (["score", "--model", folder], ["sweep", "--model", folder]):  # texts: the demo corpus
        code, err = _run_main(argv, capsys)
        last = err.splitlines()[-1]  # the sweep's progress bar may start first
        assert code == 2 and last.startswith("error: ") and "holds a JSON list; expected a JSON object" in last
    assert _snapshot(folder) == before


# -- defect 7: --opset -----------------------------------------------------------------------


def test_defect7_an_opset_onnx_runtime_cannot_load_is_refused_before_the_export(cli_env, tiny_bert, tokenizer, capsys):
    start = time.perf_counter()
    code, err = _run_main(["export-onnx", "default", "--out", cli_env / "m.onnx", "--opset", "999"], capsys)
    assert code == 2 and f"argument --opset: expected an integer in [17, {ONNX_MAX_OPSET}]; got '999'" in err
    assert time.perf_counter() - start < 10 and not (cli_env / "m.onnx").exists()
    with pytest.raises(ValueError, match=rf"'opset' parameter of export_onnx must be an integer in \[17, {ONNX_MAX_OPSET}\]"):
        export_onnx(tiny_bert, tokenizer, cli_env / "m.onnx", opset=ONNX_MAX_OPSET + 1)
    assert list(cli_env.glob("*.onnx*")) == []


# -- defect 8: --workers -----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["sweep", "--model", "m"], ["search", "--model", "m", "--task", "sst2", "--out", "o"]])
def test_defect8_more_workers_than_the_machine_carries_are_refused_when_parsed(cli_env, capsys, argv):
    code, err = _run_main([*argv, "--workers", "1000"], capsys)
    cores = len(os.sched_getaffinity(0))
    assert code == 2 and "argument --workers: 1000 is more than this machine carries: at most " in err
    assert (f"{cores} usable CPU core(s)" in err) or torch.cuda.is_available()


def test_defect8_a_pool_of_too_many_workers_starts_no_process(tiny_dir):
    import tempfile

    pools_before = set(Path(tempfile.gettempdir()).glob("obce-pool-*"))
    children_before = {p.pid for p in psutil.Process().children()}  # e.g. multiprocessing's resource tracker
    with pytest.raises(ValueError, match="PlanPool: workers 1000 is more than this machine carries"):
        PlanPool(str(tiny_dir), None, None, workers=1000)
    assert {p.pid for p in psutil.Process().children()} == children_before
    assert set(Path(tempfile.gettempdir()).glob("obce-pool-*")) == pools_before


# -- defect 9: kill -9 of a pool's parent ---------------------------------------------------------

_POOL_PARENT = textwrap.dedent("""
    import json, sys, time
    import torch.multiprocessing as mp
    from obce_core import load_model, score_model
    from obce_core.evidence.parallel import PlanPool
    model, tokenizer = load_model(sys.argv[1], device="cpu")
    scores = score_model(model, tokenizer, ["One text.", "Another text.", "A third one."], use_cache=False)
    pool = PlanPool(model, scores, None, tokenizer=tokenizer, devices=["cpu"])  # a model object: the pool copies it
    print(json.dumps({"workers": [p.pid for p in pool._processes], "folder": str(pool._folder)}), flush=True)
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_defect9_workers_die_with_their_killed_parent_and_remove_the_model_copy(tiny_dir, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_POOL_PARENT, encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script), str(tiny_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        started = json.loads(parent.stdout.readline())
        folder = Path(started["folder"])
        assert (folder / "model" / "model.safetensors").is_file()  # the copy the workers load
        time.sleep(2)  # let the worker get past its start
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 240  # a worker may still be importing torch on a loaded machine
        while time.monotonic() < deadline and not (all(_gone(p) for p in started["workers"]) and not folder.exists()):
            time.sleep(0.5)
        alive = [psutil.Process(p).as_dict(["pid", "status", "cmdline"]) for p in started["workers"] if not _gone(p)]
        assert not alive, f"a worker outlived its killed parent: {alive}"
        assert not folder.exists(), "the pool's model copy was left behind"
    finally:
        if parent.poll() is None:
            parent.kill()


# -- defect 10: a model folder without a tokenizer --------------------------------------------------


def test_defect10_a_folder_without_a_tokenizer_is_refused(cli_env, capsys):
    folder = cli_env / "no-tokenizer"
    make_tiny_bert().save_pretrained(folder)  # config + safetensors only
    before = _snapshot(folder)
    with pytest.raises(ModelLoadError, match=r"has no tokenizer \(none of tokenizer.json, vocab.txt"):
        load_model(folder)
    code, err = _run_main(["score", "--model", folder, "--no-cache"], capsys)
    assert code == 2 and "has no tokenizer" in err and err.count("\n") == 1
    assert _snapshot(folder) == before


# -- defect 11: a torn cache line -------------------------------------------------------------------


def test_defect11_a_row_appended_after_a_torn_line_survives(tmp_path):
    path = tmp_path / "sweep.jsonl"
    first = {"group": "ffn", "percentile": 10.0, "scorer": "rf", "seed": 0, "main_score": 0.5}
    second = {**first, "percentile": 30.0, "main_score": 0.25}
    _append_row(path, first)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"group": "ffn", "percentile": 20.0, "sco')  # the run was killed mid-write
    _append_row(path, second)
    rows = read_sweep(path)
    assert rows[["percentile", "main_score"]].values.tolist() == [[10.0, 0.5], [30.0, 0.25]]
    # The search's cache and its trail share the same two functions.
    trail = tmp_path / "trail.jsonl"
    trail.write_text('{"key": "a"}\n{"key": "b', encoding="utf-8")
    append_json_line(trail, {"key": "c"}, sort_keys=False)
    assert read_json_lines(trail) == [{"key": "a"}, {"key": "c"}]
    assert trail.read_text(encoding="utf-8").endswith('\n{"key": "c"}\n')


# -- defect 12: published files get the user's umask ---------------------------------------------


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_defect12_published_files_and_folders_get_the_users_umask(umask, tmp_path, tiny_bert, tokenizer, sentences):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    neighbour = tmp_path / "neighbour.txt"
    neighbour.write_text("x")
    assert _mode(neighbour) == file_mode  # the oracle: what open() gives any file here
    assert _mode(write_text_atomic(tmp_path / "a.json", "{}")) == file_mode
    scores = score_model(tiny_bert, tokenizer, sentences, use_cache=False)
    assert _mode(scores.to_parquet(tmp_path / "s.parquet")) == file_mode
    plan = PruningPlan(ffn=30)
    plan.to_json(tmp_path / "plan.json")
    assert _mode(tmp_path / "plan.json") == file_mode
    pruned, report = prune(tiny_bert, scores, plan)
    out = save_pruned(pruned, tokenizer, tmp_path / "pruned", plan=plan, report=report)
    assert _mode(out) == dir_mode
    for name in ("model.safetensors", "config.json", PLAN_FILE):
        assert _mode(out / name) == file_mode, name
    folder = publish_directory(tmp_path / "dir", lambda tmp: (tmp / "f").write_text("x"))
    assert _mode(folder) == dir_mode and _mode(folder / "f") == file_mode


# -- also: the four smaller defects -------------------------------------------------------------


def test_also_a_300_character_model_source_is_refused_by_name():
    with pytest.raises(ModelLoadError, match=r"\(300 characters\) names no folder this machine can open"):
        load_model("a" * 300)


def test_also_search_names_the_plan_file_it_writes(monkeypatch, capsys, tmp_path):
    import types

    import obce_core.search.task_search as task_search  # the command imports it from there when it runs

    class Report(types.SimpleNamespace):
        def __getattr__(self, name):  # the numbers of the summary lines: not what this test reads
            return 0

    report = Report(summary=lambda: "summary", what_was_searched=lambda: "searched", bound_note="",
                    plan=PruningPlan(ffn=10).to_dict(), num_layers=2)
    monkeypatch.setattr(task_search, "search_task_model", lambda *a, **k: report)
    assert main(["search", "--model", str(tmp_path), "--task", "sst2", "--out", str(tmp_path / "out")]) == 0
    assert PLAN_FILE == "obce_plan.json"  # what save_pruned writes
    assert capsys.readouterr().out.endswith(f"Saved the pruned model, obce_plan.json and search_report.json to "
                                            f"{tmp_path / 'out'}\n")


def test_also_a_folder_given_as_texts_is_named_a_folder(tmp_path):
    with pytest.raises(TextsError, match=rf"Texts file {str(tmp_path)!r} is a folder; give a .txt file"):
        read_texts(tmp_path)


def test_also_a_plan_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "plan.json"
    path.write_bytes(b'{"ffn": 30, "scorer": "\xff"}')
    with pytest.raises(ValueError, match=rf"plan file {str(path)!r} is not UTF-8 text"):
        PruningPlan.from_json(path)
    assert path.read_bytes() == b'{"ffn": 30, "scorer": "\xff"}'


# -- the real command line, for a sample (each run imports obce afresh: seconds) --------------------


@pytest.mark.parametrize("argv, refusal", [
    (["score", "--device", "garbage!!"], "python -m obce_core score: error: argument --device: device 'garbage!!' is "
                                         "not a device name; use one of this machine's devices: cpu"),
    (["export-onnx", "default", "--out", "{tmp}/m.onnx", "--opset", "999"],
     f"python -m obce_core export-onnx: error: argument --opset: expected an integer in [17, {ONNX_MAX_OPSET}]; got '999'"),
    (["score", "--texts", "{tmp}/texts.csv", "--out", "{tmp}/s.parquet"], "error: texts.csv, line 5: not valid CSV"),
])
def test_python_m_obce_core_refuses_in_one_line(cli_env, argv, refusal):
    (cli_env / "texts.csv").write_text(MERGING_CSV, encoding="utf-8")
    argv = [a.replace("{tmp}", str(cli_env)) for a in argv]
    done = subprocess.run([sys.executable, "-m", "obce_core", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(refusal.replace("{tmp}", str(cli_env)))
    assert sorted(p.name for p in cli_env.iterdir()) == ["texts.csv"]  # nothing written
    assert (cli_env / "texts.csv").read_text(encoding="utf-8") == MERGING_CSV


# -- the dashboard, through the hostile values of its address ------------------------------------

APP = str(ROOT / "app.py")
PAGES = {"persistence": "pages/2_Persistence.py", "prune": "pages/3_Prune.py", "compare": "pages/4_Compare.py"}


@pytest.fixture
def dashboard(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OBCE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("OBCE_MODEL_DIRS", raising=False)
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)

    def open_page(query: dict, page: str | None = None):
        at = AppTest.from_file(APP, default_timeout=180)
        at.query_params = query
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if page is not None:
            at.switch_page(PAGES[page]).run()
            assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def test_dashboard_a_300_character_model_is_refused_on_every_page(dashboard, tmp_path):
    at = dashboard({"model": "a" * 300})
    assert any("Could not load the model" in e.value and "This server offers no model folder" in e.value
               for e in at.error)
    for page in PAGES:
        at.switch_page(PAGES[page]).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = " ".join(e.value for e in [*at.error, *at.warning, *at.info])
        assert "Errno" not in shown and shown, page
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("*.safetensors"))


def test_dashboard_deep_overrides_are_named_and_the_defaults_kept(dashboard):
    at = dashboard({"overrides": DEEP})
    warning = next(w.value for w in at.warning if "Ignored in the address" in w.value)
    assert f"`overrides={DEEP[:60]}... ({len(DEEP)} characters)`" in warning
    assert f"the link's overrides nests arrays/objects more than {MAX_JSON_DEPTH} levels deep" in warning
    at.switch_page(PAGES["prune"]).run()
    assert not at.exception and at.session_state["overrides"] == "{}"


@needs_glue
def test_dashboard_a_deep_compare_form_is_ignored(dashboard, monkeypatch):
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))  # the form shows only with GLUE data at hand
    at = dashboard({"form": DEEP}, "compare")
    fresh = dashboard({}, "compare")  # the oracle: the form a visitor without a link sees
    for key in ("compare_tasks", "compare_preset"):
        assert at.session_state[key] == fresh.session_state[key]
