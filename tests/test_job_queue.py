"""The job queue (one job at a time by default, first come first served) and whole-job progress.

Stand-in workers (sleeping processes with a written status) occupy the queue, so the waiting is
checked without training; the ETA is checked against a hand computation on a fake clock.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from obce_core.jobs import (
    JobClock,
    JobSpec,
    JobStatus,
    PlannedRun,
    create_job,
    job_status,
    max_parallel_jobs,
    overlapping_jobs,
    planned_runs,
    run_job,
)
from obce_core.jobs.queue import jobs_ahead, wait_for_turn
from obce_core.jobs.status import now, read_status, write_status
from obce_core.training import PhaseEvent, Recipe, ResultEvent, StepEvent, TrainingCancelled
from tests.conftest import GLUE_DIR, needs_glue

pytestmark = needs_glue

QUICK = Recipe(max_length=32, max_steps=3, learning_rate=1e-3, batch_size=8, eval_batch_size=16,
               train_size=24, eval_size=16, seed=1)


@pytest.fixture
def sleeper():
    procs = []

    def start():
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _running(folder, pid):
    status = read_status(folder)  # keeps created_at: the queue's order
    status.state, status.pid, status.started_at = "running", pid, now()
    write_status(folder, status)


def test_second_job_waits_for_the_first_then_starts(tmp_path, sleeper, monkeypatch):
    monkeypatch.delenv("OBCE_MAX_PARALLEL_JOBS", raising=False)
    ws = tmp_path / "ws"
    first = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), ws)
    time.sleep(1.1)  # created_at is kept to the second: the second job is strictly younger
    second = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK.replace(seed=2)), ws)
    proc = sleeper()
    _running(first, proc.pid)
    assert [s.job_id for s in jobs_ahead(second)] == [first.name] and jobs_ahead(first) == []
    status = read_status(second)
    seen = []

    def sleep(_):  # the worker's pause between looks at the queue: the first job ends meanwhile
        seen.append(read_status(second).phase)
        if len(seen) == 2:
            done = read_status(first)
            done.state, done.finished_at = "done", now()
            write_status(first, done)

    wait_for_turn(second, status, lambda: False, sleep=sleep)
    assert seen == [f"queued (waiting for job {first.name})"] * 2
    assert read_status(second).state == "queued"  # run_job marks it running once its turn came

    # Two may run together when the setting says so; a cancel while queued ends the wait.
    time.sleep(1.1)
    third = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK.replace(seed=3)), ws)
    _running(second, sleeper().pid)
    wait_for_turn(third, read_status(third), lambda: False, limit=2, sleep=lambda _: pytest.fail("waited"))
    with pytest.raises(TrainingCancelled, match="queued"):
        wait_for_turn(third, read_status(third), lambda: True, limit=1, sleep=lambda _: None)


def test_a_queued_job_cancelled_in_the_worker_is_cancelled(tiny_model_dir, tmp_path, sleeper):
    ws = tmp_path / "ws"
    first = create_job(JobSpec(model=str(tiny_model_dir), tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), ws)
    time.sleep(1.1)
    second = create_job(JobSpec(model=str(tiny_model_dir), tasks=["rte"], glue_dir=str(GLUE_DIR),
                                recipe=QUICK.replace(seed=2)), ws)
    _running(first, sleeper().pid)
    (second / "cancel").touch()
    with pytest.raises(TrainingCancelled):
        run_job(second)
    st = job_status(second)
    assert st.state == "cancelled" and st.started_at is None and st.result_ids == []


def test_max_parallel_jobs_setting(monkeypatch):
    monkeypatch.delenv("OBCE_MAX_PARALLEL_JOBS", raising=False)
    assert max_parallel_jobs() == 1
    monkeypatch.setenv("OBCE_MAX_PARALLEL_JOBS", "3")
    assert max_parallel_jobs() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("OBCE_MAX_PARALLEL_JOBS", bad)
        with pytest.raises(ValueError, match="OBCE_MAX_PARALLEL_JOBS"):
            max_parallel_jobs()


def test_overlapping_jobs_reads_the_run_windows(tmp_path):
    ws = tmp_path / "ws"
    me = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK), ws)
    other = create_job(JobSpec(tasks=["rte"], glue_dir=str(GLUE_DIR), recipe=QUICK.replace(seed=2)), ws)
    write_status(other, JobStatus(job_id=other.name, state="done", started_at="2024-01-01T10:00:00+00:00",
                                  finished_at="2024-01-01T10:05:00+00:00"))
    from datetime import datetime

    t = lambda hms: datetime.fromisoformat(f"2024-01-01T{hms}+00:00").timestamp()  # noqa: E731
    assert overlapping_jobs(me, t("10:04:00"), t("10:06:00")) == [other.name]
    assert overlapping_jobs(me, t("10:06:00"), t("10:07:00")) == []
    assert overlapping_jobs(me, t("09:50:00"), t("09:59:00")) == []


def test_planned_runs_of_a_comparison():
    spec = JobSpec(tasks=["rte", "mrpc"], plan={"ffn": 30}, recipe=QUICK, glue_dir=str(GLUE_DIR))
    assert [(r.label, r.steps) for r in planned_runs(spec)] == [
        ("original on rte", 3), ("pruned on rte", 3), ("original on mrpc", 3), ("pruned on mrpc", 3)]
    spec = JobSpec(model=str(GLUE_DIR), tasks=["rte"], plan={"ffn": 30}, recipe=QUICK, protocol="finetuned",
                   recover_steps=7, glue_dir=str(GLUE_DIR))
    assert [r.steps for r in planned_runs(spec)] == [0, 0, 7]


class _Result:
    def __init__(self, from_store=False):
        self.from_store, self.id = from_store, 1


def test_job_clock_counts_runs_and_estimates_from_measured_steps():
    t = [0.0]
    clock = JobClock([PlannedRun("a", 4), PlannedRun("b", 4), PlannedRun("c", 4)], clock=lambda: t[0])
    assert (clock.run, clock.runs, clock.eta_s()) == (1, 3, None)  # nothing measured yet
    t[0] = 5.0
    clock(PhaseEvent("fine-tuning"))
    for step in (1, 2):
        t[0] += 2.0
        clock(StepEvent(step, 4))
    # 2 s per step; 2 steps left here and 8 in the next runs; no run finished yet
    assert clock.seconds_per_step == pytest.approx(2.0) and clock.eta_s() == pytest.approx(2.0 * 10)
    t[0] += 4.0
    clock(StepEvent(4, 4))  # two steps in 4 s
    t[0] += 3.0
    clock(ResultEvent("a: done", _Result()))  # run a: 16 s, 8 s of it in steps: 8 s of other work
    assert (clock.run, clock.runs) == (2, 3)
    assert clock.eta_s() == pytest.approx(2.0 * 8 + 8.0 * 2)
    clock(ResultEvent("b: from the store", _Result(from_store=True)))
    assert clock.run == 3 and clock.eta_s() == pytest.approx(2.0 * 4 + 8.0 * 1)


def test_two_started_jobs_run_one_after_the_other(tiny_model_dir, tmp_path, monkeypatch):
    """Real workers: the second waits (queued, naming the first), starts after the first ends, and
    its results are not marked contended; the first reports its runs as 'run k of 2'."""
    from obce_core.jobs import list_jobs, start_job

    monkeypatch.delenv("OBCE_MAX_PARALLEL_JOBS", raising=False)
    ws = tmp_path / "ws"
    slow = QUICK.replace(max_steps=40, train_size=64)
    first = ws / "jobs" / start_job(JobSpec(model=str(tiny_model_dir), tasks=["rte", "mrpc"], glue_dir=str(GLUE_DIR),
                                            recipe=slow), ws)
    time.sleep(1.1)
    second = ws / "jobs" / start_job(JobSpec(model=str(tiny_model_dir), tasks=["rte"], glue_dir=str(GLUE_DIR),
                                             recipe=QUICK), ws)
    seen_queued, seen_runs = False, set()
    end = time.monotonic() + 240
    while time.monotonic() < end and any(s.active for s in list_jobs(ws)):
        b = job_status(second)
        a = job_status(first)  # read after b: had b started, a would have ended before
        if a.state == "running" and a.run:
            seen_runs.add((a.run, a.runs))
        seen_queued |= b.state == "queued" and b.phase == f"queued (waiting for job {first.name})"
        assert not (b.state == "running" and a.state == "running"), (a, b)
        time.sleep(0.05)
    a, b = job_status(first), job_status(second)
    assert a.state == b.state == "done", ((first / "worker.log").read_text(), (second / "worker.log").read_text())
    assert seen_queued and seen_runs <= {(1, 2), (2, 2)} and (2, 2) in seen_runs
    assert b.started_at >= a.finished_at and a.contended_ids == b.contended_ids == []
