"""Jobs and the results store: real worker processes killed and cancelled, the SQLite store
checked with raw SQL, the ``glue`` CLI end to end and its error messages.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from obce_core.cli import main
from obce_core.training import Recipe, RunResult, protocols
from obce_core.jobs import (
    FinetuneJobSpec,
    JobError,
    JobSpec,
    JobStatus,
    cancel_job,
    create_job,
    job_results,
    job_status,
    list_jobs,
    run_job,
    start_job,
)
from obce_core.jobs.process import pid_alive, process_start_time
from obce_core.jobs.status import write_json_atomic, write_status
from obce_core.pruning import PruningPlan
from obce_core.results import ResultsStore, ResultsStoreError, comparison_table, quarantine_store
from tests.conftest import GLUE_DIR, needs_glue

pytestmark = [needs_glue, pytest.mark.usefixtures("one_torch_thread")]

QUICK = Recipe(max_length=32, max_steps=3, learning_rate=1e-3, batch_size=8, eval_batch_size=16,
               train_size=24, eval_size=16, seed=1)


def _result(**changes) -> RunResult:
    base = dict(task="sst2", role="original", protocol="paper", model_source="m", fingerprint="f" * 16,
                head_fingerprint="h" * 16, source_fingerprint="f" * 16, plan=None, recipe=QUICK.to_dict(),
                metrics={"accuracy": 0.75, "main_score": 0.75}, main_score=0.75, params_total=1000,
                params_encoder=400, latency_ms=1.5, wall_s=2.0, device="cpu")
    return RunResult(**{**base, **changes})


def _wait(job_dir, predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = job_status(job_dir)
        if predicate(status):
            return status
        time.sleep(0.05)
    log = (job_dir / "worker.log").read_text() if (job_dir / "worker.log").exists() else ""
    raise AssertionError(f"timed out; last status {job_status(job_dir)}; log:\n{log[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------
def test_store_add_lookup_unique_key(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    plan = PruningPlan(ffn=50)
    a = store.add(_result())
    b = store.add(_result(role="pruned", plan=plan.to_dict(), fingerprint="p" * 16, main_score=0.7,
                          metrics={"accuracy": 0.7, "main_score": 0.7}, params_total=800, params_encoder=200))
    again = store.add(_result(main_score=0.1, metrics={"accuracy": 0.1, "main_score": 0.1}))  # same key
    assert again.id == a.id and again.main_score == 0.75  # the first one stays...
    assert again.from_store and not a.from_store  # ...and the caller is told its run was answered by it
    assert store.lookup("f" * 16, None, "SST-2", QUICK).id == a.id
    assert store.lookup("p" * 16, plan, "sst2", QUICK.to_dict()).id == b.id
    assert store.lookup("p" * 16, plan.to_dict(), "sst2", QUICK, head_fingerprint="h" * 16).id == b.id
    assert store.lookup("p" * 16, None, "sst2", QUICK) is None  # a plan is part of the key
    assert store.lookup("f" * 16, None, "sst2", QUICK.replace(seed=2)) is None
    assert store.lookup("f" * 16, None, "sst2", QUICK, protocol="finetuned") is None
    assert store.lookup("f" * 16, None, "sst2", QUICK, head_fingerprint="x" * 16) is None
    assert [r.id for r in store.get([b.id, a.id, 999])] == [b.id, a.id]

    # Independent check with raw SQL: two rows, WAL mode, JSON columns canonical.
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT plan, recipe, metrics FROM results ORDER BY id").fetchall()
    conn.close()
    assert len(rows) == 2 and rows[0][0] is None
    assert json.loads(rows[1][0]) == plan.to_dict() and json.loads(rows[0][1]) == {k: v for k, v in QUICK.to_dict().items() if k not in ("pooling", "group_by_length", "kd_temperature", "kd_alpha", "kd_teacher", "held_out_max", "kd_hidden", "eval_steps", "early_stopping_patience")}  # cls, random batches, no teacher, no early stopping, the usual reserve cap: the old key plus the reserve
    frame = store.all_results()
    assert list(frame["role"]) == ["original", "pruned"] and frame["plan"].iloc[0] is None
    assert store.integrity_check() == "ok"
    with pytest.raises(ValueError, match="without metrics"):
        store.add(_result(metrics={}))


def test_comparison_table_arithmetic():
    rs = [
        _result(task="sst2"),
        _result(task="sst2", role="pruned", metrics={"accuracy": 0.70, "main_score": 0.70}, main_score=0.70,
                params_total=500, params_encoder=100),
        _result(task="mrpc", metrics={"accuracy": 0.8, "f1": 0.9, "main_score": 0.85}, main_score=0.85),
        _result(task="mrpc", role="pruned", metrics={"accuracy": 0.6, "f1": 0.8, "main_score": 0.7}, main_score=0.7,
                params_total=500, params_encoder=100),
    ]
    t = comparison_table(rs).set_index(["task", "metric"])
    # sst2's main_score repeats its accuracy: one row, the headline; mrpc's averages two metrics: its own row
    assert list(t.index) == [("sst2", "accuracy"), ("mrpc", "accuracy"), ("mrpc", "f1"), ("mrpc", "main_score"),
                             ("glue_average", "main_score")]
    assert t["main"].tolist() == [True, False, False, True, True]
    assert t.loc[("sst2", "accuracy"), "difference"] == pytest.approx(-0.05)
    assert t.loc[("mrpc", "f1"), "pruned"] == 0.8
    assert t.loc[("mrpc", "main_score"), "params_total_pct"] == 50.0
    assert t.loc[("mrpc", "main_score"), "params_encoder_pct"] == 25.0
    avg = t.loc[("glue_average", "main_score")]
    assert avg["original"] == pytest.approx(0.8) and avg["pruned"] == pytest.approx(0.7)


# ---------------------------------------------------------------------------------------------
# Specs and bad inputs
# ---------------------------------------------------------------------------------------------
def test_job_spec_round_trip():
    spec = JobSpec(model="default", tasks="SST-2,mrpc", plan={"ffn": 30, "skip_layers": 2}, recipe=QUICK,
                   glue_dir=str(GLUE_DIR), score_n=64)
    assert spec.tasks == ["sst2", "mrpc"] and isinstance(spec.plan, PruningPlan)
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_dict(json.loads(spec.to_json())).recipe == QUICK


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"tasks": ["sst2", "glu"]}, ["Unknown GLUE task 'glu'", "cola"]),
        ({"tasks": []}, ["non-empty"]),
        ({"tasks": ["sst2", "SST-2"]}, ["more than once"]),
        ({"protocol": "distill"}, ["protocol", "'distill'", "paper"]),
        ({"recipe": {"learning_rate": -0.1}}, ["learning_rate", "-0.1"]),
        ({"recipe": {"batch_size": 0}}, ["batch_size", ">= 1"]),
        ({"plan": {"ffn": 120}}, ["ffn", "[0, 100)"]),
        ({"protocol": "finetuned", "tasks": ["sst2", "rte"]}, ["ONE task"]),
        ({"recover_steps": 5}, ["protocol 'finetuned' only"]),
        ({"scores": "/no/such/scores.parquet"}, ["does not exist"]),
        ({"score_token": "eos"}, ["score_token"]),
    ],
)
def test_job_spec_rejects_bad_inputs(changes, words):
    with pytest.raises(ValueError) as info:
        JobSpec(**{"tasks": ["sst2"], **changes})
    assert all(w in str(info.value) for w in words), str(info.value)


def test_missing_split_file_fails_before_starting(tmp_path):
    glue_dir = tmp_path / "glue"
    (glue_dir / "RTE").mkdir(parents=True)
    (glue_dir / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ValueError, match=r"needs split 'train': file .*RTE/train.tsv does not exist"):
        start_job(JobSpec(tasks=["rte"], glue_dir=str(glue_dir), recipe=QUICK), tmp_path / "ws")
    assert not (tmp_path / "ws" / "jobs").exists() or not any((tmp_path / "ws" / "jobs").iterdir())


# ---------------------------------------------------------------------------------------------
# Running jobs
# ---------------------------------------------------------------------------------------------
def test_run_job_in_process_then_answered_from_store(tiny_model_dir, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    spec = JobSpec(model=str(tiny_model_dir), tasks=["rte", "mrpc"], plan=PruningPlan(ffn=50, v=25), recipe=QUICK,
                   glue_dir=str(GLUE_DIR), score_n=32)
    first_dir = create_job(spec, ws)
    first = run_job(first_dir)
    st = job_status(first_dir)
    assert st.state == "done" and len(st.result_ids) == 4 and st.from_store_ids == []
    assert [r.id for r in job_results(first_dir)] == st.result_ids
    assert set(ResultsStore(ws / "results.sqlite").all_results()["job_id"]) == {first_dir.name}
    assert {(r.task, r.role) for r in first} == {(t, role) for t in ("rte", "mrpc") for role in ("original", "pruned")}

    def boom(*args, **kwargs):
        raise AssertionError("trained although the run is stored")

    monkeypatch.setattr(protocols, "fine_tune", boom)
    monkeypatch.setattr(protocols, "evaluate", boom)
    second_dir = create_job(spec, ws)
    second = run_job(second_dir)
    st2 = job_status(second_dir)
    assert st2.state == "done" and st2.from_store_ids == st2.result_ids == st.result_ids
    assert [r.metrics for r in second] == [r.metrics for r in first]
    assert {s.job_id for s in list_jobs(ws)} == {first_dir.name, second_dir.name}


def test_killed_worker_leaves_a_consistent_store(tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    # Original only, three tasks; enough steps per run that the kill lands inside a run.
    spec = JobSpec(model=str(tiny_model_dir), tasks=["sst2", "mrpc", "cola"],
                   recipe=QUICK.replace(max_steps=400, train_size=64), glue_dir=str(GLUE_DIR))
    job_id = start_job(spec, ws)
    job_dir = ws / "jobs" / job_id
    st = _wait(job_dir, lambda s: s.state in ("done", "failed") or (len(s.result_ids) >= 1 and (s.step or 0) >= 1))
    assert st.state == "running", st
    pid = json.loads((job_dir / "worker.pid").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    st = _wait(job_dir, lambda s: not s.active, timeout=30)
    assert st.state == "failed" and "worker died" in st.error, st
    seen = set(st.result_ids)
    store = ResultsStore(ws / "results.sqlite")
    assert store.integrity_check() == "ok"
    frame = store.all_results()
    # Every run the worker reported is stored; at most the one finished just before the kill is
    # stored without being reported yet; no row is partial.
    assert seen and seen <= set(frame["id"]) and len(frame) <= len(seen) + 1 < 3 + 1
    assert frame[["metrics", "main_score", "recipe", "params_total", "wall_s"]].notna().all().all()
    for text in frame["metrics"]:
        assert "main_score" in json.loads(text)
    assert list(frame["task"]) == ["sst2", "mrpc", "cola"][: len(frame)]
    # A listing reports it the same way.
    assert next(s for s in list_jobs(ws) if s.job_id == job_id).state == "failed"


def test_cancel_job_stops_the_worker(tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    spec = JobSpec(model=str(tiny_model_dir), tasks=["sst2"], recipe=QUICK.replace(max_steps=100_000, train_size=64),
                   glue_dir=str(GLUE_DIR))
    job_id = start_job(spec, ws)
    job_dir = ws / "jobs" / job_id
    _wait(job_dir, lambda s: (s.step or 0) >= 1 or not s.active)
    st = cancel_job(job_dir, grace_s=30)
    assert st.state == "cancelled" and "cancelled" in st.error.lower(), st
    pid = json.loads((job_dir / "worker.pid").read_text())["pid"]
    assert not pid_alive(pid)
    assert ResultsStore(ws / "results.sqlite").all_results().empty  # nothing half-done was stored


def test_cancel_escalates_to_sigterm_when_the_flag_is_ignored(tmp_path):
    job_dir = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), tmp_path / "ws")
    # A stand-in worker that never looks at the cancel flag, in its own session like start_job's.
    marker = tmp_path / "got-sigterm"
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.5)  # let it install its handler
    write_json_atomic(job_dir / "worker.pid", {"pid": proc.pid, "start": process_start_time(proc.pid),
                                                     "detached": True})
    write_status(job_dir, JobStatus(job_id=job_dir.name, state="running", pid=proc.pid, detached=True))
    start = time.monotonic()
    st = cancel_job(job_dir, grace_s=0.5)
    proc.wait(timeout=10)  # (cancel_job may already have reaped it)
    assert marker.exists() and time.monotonic() - start < 8
    assert st.state == "cancelled", st


def test_dead_process_is_reported_as_failed(tmp_path):
    job_dir = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), tmp_path / "ws")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_status(job_dir, JobStatus(job_id=job_dir.name, state="running", pid=proc.pid, phase="fine-tuning"))
    st = job_status(job_dir)
    assert st.state == "failed" and "worker died" in st.error and str(proc.pid) in st.error
    assert json.loads((job_dir / "status.json").read_text())["state"] == "failed"  # persisted
    assert job_status(job_dir).state == "failed"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_glue_prints_side_by_side_table(tiny_model_dir, tmp_path, capsys):
    args = ["glue", "--model", str(tiny_model_dir), "--tasks", "rte,wnli", "--glue-dir", str(GLUE_DIR), "--ffn", "50",
            "--qk", "50", "--v", "50", "--skip-layers", "1", "--score-n", "32", "--recipe", "smoke",
            "--max-steps", "3", "--train-size", "24", "--eval-size", "16", "--batch-size", "8", "--max-length", "32",
            "--workspace", str(tmp_path / "ws")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "params_total_pct" in out and "glue_average" in out
    store = ResultsStore(tmp_path / "ws" / "results.sqlite")
    frame = store.all_results()
    assert len(frame) == 4
    # The printed numbers are the stored ones (x100).
    rte = frame[(frame.task == "rte")].set_index("role")["main_score"]
    # rte's one metric is its main score: one row, not an accuracy row and a main_score row
    assert not any(line.split()[:2] == ["rte", "main_score"] for line in out.splitlines())
    line = next(line.split() for line in out.splitlines() if line.split()[:2] == ["rte", "accuracy"])
    assert float(line[2]) == pytest.approx(100 * rte["original"], abs=0.006)
    assert float(line[3]) == pytest.approx(100 * rte["pruned"], abs=0.006)
    # Run again: answered from the store.
    assert main(args) == 0
    assert "4 runs (4 answered from the store)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--tasks", "sst5"], ["Unknown GLUE task 'sst5'"]),
        (["--tasks", "sst2", "--lr", "-1"], ["learning_rate", "-1"]),
        (["--tasks", "sst2", "--max-length", "4"], ["max_length", "4"]),  # (--batch-size 0: tests/test_cli_edges.py)
        (["--tasks", "qnli", "--recipe", "bert-glue"], ["QNLI", "does not exist"]),
        # The generic CPU preset trains QNLI; the data is missing: the message names the file to put there.
        (["--tasks", "qnli"], ["QNLI/dev.tsv does not exist", "Copy the QNLI/dev.tsv file"]),
        (["--tasks", "sst2", "--plan", "p.json", "--ffn", "10"], ["--plan cannot be combined with --ffn"]),
    ],
)
def test_cli_glue_errors_exit_2_without_traceback(extra, words, tmp_path, capsys):
    rc = main(["glue", "--glue-dir", str(GLUE_DIR), "--workspace", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert all(w in err for w in words), err


def test_cli_glue_unknown_protocol_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["glue", "--tasks", "sst2", "--protocol", "distill"])
    assert info.value.code == 2 and "invalid choice: 'distill'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A damaged results store; identical jobs
# ---------------------------------------------------------------------------------------------
GARBAGE = bytes(range(256)) * 64  # 16 KiB that are no SQLite database (not even its header)


def test_corrupt_store_fails_the_job_with_its_reason_and_can_be_moved_aside(tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "results.sqlite").write_bytes(GARBAGE)
    with pytest.raises(ResultsStoreError, match="results.sqlite' cannot be read.*quarantine_store"):
        ResultsStore(ws / "results.sqlite")

    job_dir = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), ws)
    with pytest.raises(ResultsStoreError):
        run_job(job_dir)
    st = job_status(job_dir)  # failed, not queued forever, and the reason names the file
    assert st.state == "failed" and "results.sqlite" in st.error and "cannot be read" in st.error

    rc = main(["glue", "--tasks", "rte", "--glue-dir", str(GLUE_DIR), "--workspace", str(ws), "--recipe", "smoke"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1 and "results.sqlite" in lines[0]

    (ws / "results.sqlite-wal").write_bytes(b"wal")  # (SQLite itself drops a WAL it cannot use)
    moved = quarantine_store(ws / "results.sqlite")  # moved, never deleted: the bytes are all there
    assert moved.parent == ws and moved.name.startswith("results.sqlite.broken-")
    assert moved.read_bytes() == GARBAGE and (ws / (moved.name + "-wal")).read_bytes() == b"wal"
    assert not (ws / "results.sqlite").exists() and not (ws / "results.sqlite-wal").exists()
    assert ResultsStore(ws / "results.sqlite").all_results().empty  # a new store starts empty
    with pytest.raises(ResultsStoreError, match="not a file"):
        quarantine_store(ws / "missing.sqlite")


def test_identical_running_job_is_refused_with_its_id(tmp_path):
    ws = tmp_path / "ws"
    spec = JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK)
    first = create_job(spec, ws)
    # Not started yet (no worker): it blocks nothing, e.g. after its creator died.
    create_job(spec, ws)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_status(first, JobStatus(job_id=first.name, state="running", pid=proc.pid))
        with pytest.raises(JobError, match=f"identical job, {first.name}, is already running"):
            create_job(spec, ws)
        create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK.replace(seed=2)), ws)  # differs
    finally:
        proc.kill()
        proc.wait()
    create_job(spec, ws)  # the first is gone (reported failed): no longer blocks


def test_finetune_job_saves_a_task_model(tiny_model_dir, tmp_path):
    from obce_core.training import read_task_model_info

    ws, out = tmp_path / "ws", tmp_path / "ws" / "models" / "rte"
    spec = FinetuneJobSpec(task="RTE", out=str(out), model=str(tiny_model_dir), recipe=QUICK, glue_dir=str(GLUE_DIR))
    assert FinetuneJobSpec.from_json(spec.to_json()) == spec
    assert FinetuneJobSpec(task="mrpc", out="x").recipe == Recipe.for_task("mrpc")  # default: the CPU preset
    job_dir = create_job(spec, ws)
    steps = []
    info = run_job(job_dir, progress=lambda e: steps.append(getattr(e, "step", None)))
    st = job_status(job_dir)
    assert st.state == "done" and st.kind == "finetune" and st.output == str(out) and st.task == "rte"
    assert read_task_model_info(out) == info and info.train_steps == QUICK.max_steps
    assert [s for s in steps if s is not None] == list(range(1, QUICK.max_steps + 1))
    assert next(s for s in list_jobs(ws) if s.job_id == job_dir.name).kind == "finetune"
    with pytest.raises(ValueError, match="'out' parameter"):
        FinetuneJobSpec(task="rte", out="")
